//! Prometheus metrics (`GET /metrics`, admin token). Counters and histograms
//! are updated where things happen (HTTP middleware, payment handlers, the
//! writer); gauges that describe the store are read when scraped. Each
//! running shop has its own registry, so tests in one process don't mix.

use crate::domain::order::OrderStatus;
use crate::store::Store;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::time::Duration;

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    payments: IntCounterVec,
    orders: IntGaugeVec,
    keys: IntGaugeVec,
    queue_depth: IntGauge,
    applied_batch: IntGauge,
    outbox: IntGaugeVec,
    store_bytes: IntGauge,
    /// Updated by the e-mail senders.
    pub emails: MailMetrics,
}

/// The e-mail senders' metrics: attempts by result (`sent`, `failed`,
/// `dead`), e-mails waiting, and how long an SMTP session took.
#[derive(Clone)]
pub struct MailMetrics {
    pub attempts: IntCounterVec,
    pub queue_depth: IntGauge,
    pub send_seconds: Histogram,
}

/// Buckets (seconds) for HTTP latency: the writer's scale (its histograms
/// are the store's own, registered here).
const LATENCY: &[f64] = crate::store::LATENCY_BUCKETS;

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are fixed and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    pub fn new(store: &Store) -> Self {
        let r = Registry::new();
        let stats = store.stats();
        register(&r, stats.batch_size.clone());
        register(&r, stats.commit_seconds.clone());
        register(&r, stats.journal_sync_seconds.clone());
        Metrics {
            http_requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new("faka_http_requests_total", "HTTP requests by route, method and status"),
                    &["route", "method", "status"],
                )
                .expect("valid"),
            ),
            http_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("faka_http_request_seconds", "HTTP latency by route").buckets(LATENCY.to_vec()),
                    &["route"],
                )
                .expect("valid"),
            ),
            payments: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "faka_payments_total",
                        "Payment callbacks and manual payments by gateway, result and refusal reason",
                    ),
                    &["gateway", "result", "reason"],
                )
                .expect("valid"),
            ),
            orders: register(
                &r,
                IntGaugeVec::new(Opts::new("faka_orders", "Orders by status"), &["status"]).expect("valid"),
            ),
            keys: register(
                &r,
                IntGaugeVec::new(Opts::new("faka_keys", "Card keys by product and state"), &["product", "state"])
                    .expect("valid"),
            ),
            queue_depth: register(
                &r,
                IntGauge::new("faka_writer_queue_depth", "Commands waiting for the writer").expect("valid"),
            ),
            applied_batch: register(
                &r,
                IntGauge::new("faka_writer_applied_batch", "Sequence number of the last durable batch").expect("valid"),
            ),
            outbox: register(
                &r,
                IntGaugeVec::new(Opts::new("faka_webhooks", "Outbound webhook events by state"), &["state"])
                    .expect("valid"),
            ),
            store_bytes: register(
                &r,
                IntGauge::new("faka_store_bytes", "Size of the data directory on disk").expect("valid"),
            ),
            emails: MailMetrics {
                attempts: register(
                    &r,
                    IntCounterVec::new(
                        Opts::new("faka_emails_total", "E-mail send attempts by result (sent, failed, dead)"),
                        &["result"],
                    )
                    .expect("valid"),
                ),
                queue_depth: register(
                    &r,
                    IntGauge::new("faka_email_queue_depth", "E-mails waiting to be sent").expect("valid"),
                ),
                send_seconds: register(
                    &r,
                    Histogram::with_opts(
                        HistogramOpts::new("faka_email_send_seconds", "Time of one SMTP send")
                            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                    )
                    .expect("valid"),
                ),
            },
            registry: r,
        }
    }

    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // Any token is a valid HTTP method to actix: a label taken from the
        // request as it is would let anyone add series without end.
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "other",
        };
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a payment: result `applied`, `repeated`, `second_payment` or
    /// `refused` (with the error code as reason).
    pub fn payment(&self, gateway: &str, result: &str, reason: &str) {
        self.payments
            .with_label_values(&[gateway, result, reason])
            .inc();
    }

    /// Renders the Prometheus text format, refreshing the store gauges.
    pub fn render(&self, store: &Store) -> String {
        let counts = store.order_counts();
        for (status, n) in OrderStatus::ALL.iter().zip(counts) {
            self.orders
                .with_label_values(&[status.as_str()])
                .set(n as i64);
        }
        if let Ok(products) = store.products() {
            for p in products {
                for (state, n) in [
                    ("available", p.counts.available),
                    ("held", p.counts.held),
                    ("sold", p.counts.sold),
                ] {
                    self.keys.with_label_values(&[&p.id, state]).set(n as i64);
                }
            }
        }
        self.queue_depth.set(store.queue_len() as i64);
        self.applied_batch.set(
            store
                .stats()
                .applied_seq
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        );
        let (pending, dead) = store.outbox_counts();
        self.outbox
            .with_label_values(&["pending"])
            .set(pending as i64);
        self.outbox.with_label_values(&["dead"]).set(dead as i64);
        self.store_bytes.set(dir_size(store.data_dir()) as i64);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name() != "backups")
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
