//! Outbound webhooks: the sender side of the transactional outbox.
//!
//! Order events are written to the outbox in the same durable batch as the
//! change they report (`shop::emit`), so there is no event without its
//! change and no change without its event. Here a dispatcher thread hands due
//! events to a pool of sender threads: at most one event per order is in
//! flight, and an order's next event waits until the previous one is
//! delivered (per-order ordering). A failed send is retried with exponential
//! back-off and jitter; after `give_up_secs` the event is dead until an admin
//! retries it. Senders never touch the order path: a slow or dead receiver
//! only delays webhooks, never orders or payments. On restart, pending events
//! are simply picked up again (at-least-once; receivers dedupe by `id`).

use crate::config::WebhooksConfig;
use crate::crypto::{hmac_sha256_hex, Crypto};
use crate::domain::model::OutboxEvent;
use crate::error::{Error, Result};
use crate::shop::{self, WebhookOutcome};
use crate::store::{now_ms, Store};
use crate::views;
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything a sender needs.
pub struct Context {
    pub store: Store,
    pub crypto: Arc<Crypto>,
    pub cfg: WebhooksConfig,
    pub currency: String,
}

/// Events whose last attempt could not be recorded (the store refused the
/// write: a full disk, a failed store), by seq: how many times in a row, and
/// when the event may go again. The outbox still shows them due, so without
/// this they would be sent again at once, in a loop.
type Held = Mutex<HashMap<u64, (u32, i64)>>;
type HeldOff = Arc<Held>;

/// How long an event waits after its attempt could not be recorded for the
/// `n`th time in a row: 1 s, doubling, at most a minute.
fn hold_off_ms(n: u32) -> i64 {
    (1000i64 << n.saturating_sub(1).min(6)).min(60_000)
}

/// The JSON body of an event: `{id, type, created_at, data: AdminOrder}`.
pub fn payload(ctx: &Context, e: &OutboxEvent) -> Result<Vec<u8>> {
    let order = ctx
        .store
        .order(&e.order_no)?
        .ok_or_else(|| Error::not_found(format!("order {} not found", e.order_no)))?;
    let keys =
        if ctx.cfg.include_keys && !order.key_ids.is_empty() && order.delivered_at_ms.is_some() {
            Some(views::key_texts(&ctx.store, &ctx.crypto, &order)?)
        } else {
            None
        };
    let body = serde_json::json!({
        "id": e.id,
        "type": e.kind.webhook_type().unwrap_or("order.updated"),
        "created_at": views::rfc3339(e.created_at_ms),
        "data": views::admin_order(&order, &ctx.currency, keys),
    });
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

/// Sends one event; never panics, never logs the body or the secret.
fn send(ctx: &Context, agent: &ureq::Agent, e: &OutboxEvent) -> WebhookOutcome {
    let body = match payload(ctx, e) {
        Ok(b) => b,
        Err(err) => return WebhookOutcome::Failed(format!("could not render: {}", err.code())),
    };
    let ts = (now_ms() / 1000).to_string();
    let sig = hmac_sha256_hex(ctx.cfg.secret.as_bytes(), &[ts.as_bytes(), b".", &body]);
    let result = agent
        .post(&ctx.cfg.url)
        .set("Content-Type", "application/json")
        .set("X-Faka-Timestamp", &ts)
        .set("X-Faka-Signature", &sig)
        .set("X-Faka-Event-Id", &e.id)
        .send_bytes(&body);
    match result {
        Ok(r) if (200..300).contains(&r.status()) => WebhookOutcome::Delivered,
        Ok(r) => WebhookOutcome::Failed(format!("receiver answered {}", r.status())),
        Err(ureq::Error::Status(code, _)) => {
            WebhookOutcome::Failed(format!("receiver answered {code}"))
        }
        Err(ureq::Error::Transport(t)) => {
            WebhookOutcome::Failed(format!("transport error: {}", t.kind()))
        }
    }
}

/// Starts the dispatcher and `cfg.workers` senders on `workers`.
pub fn start(ctx: Context, workers: &mut super::Workers) {
    let ctx = Arc::new(ctx);
    let n = ctx.cfg.workers.max(1);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<OutboxEvent>(n);
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let held_off: HeldOff = Arc::default();
    let w = wake_tx.clone();
    ctx.store.on_commit(move || {
        let _ = w.try_send(());
    });
    for i in 0..n {
        let (ctx, rx, wake, fl, held) = (
            ctx.clone(),
            job_rx.clone(),
            wake_tx.clone(),
            in_flight.clone(),
            held_off.clone(),
        );
        workers.spawn(&format!("faka-webhook-{i}"), move || {
            sender(ctx, rx, wake, fl, held)
        });
    }
    let stop = workers.stop_signal();
    workers.spawn("faka-webhook-dispatch", move || {
        dispatcher(ctx, job_tx, wake_rx, stop, in_flight, held_off)
    });
}

fn sender(
    ctx: Arc<Context>,
    jobs: Receiver<OutboxEvent>,
    wake: Sender<()>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    held_off: HeldOff,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(ctx.cfg.timeout_secs.max(1)))
        .redirects(0)
        .build();
    let base = ctx.cfg.retry_base_ms;
    let give_up = ctx.cfg.give_up_secs as i64 * 1000;
    for e in jobs {
        let outcome = send(&ctx, &agent, &e);
        if let WebhookOutcome::Failed(reason) = &outcome {
            tracing::warn!(event = %e.id, attempt = e.attempts + 1, reason = %reason, "webhook not delivered; will retry");
        }
        let seq = e.seq;
        let recorded = ctx.store.write_blocking(move |tx| {
            shop::record_webhook_attempt(tx, seq, outcome, base, give_up)
        });
        if let Ok(mut held) = held_off.lock() {
            match &recorded {
                Ok(()) => {
                    held.remove(&seq);
                }
                Err(err) => {
                    let n = held.get(&seq).map_or(1, |&(n, _)| n + 1);
                    let wait = hold_off_ms(n);
                    held.insert(seq, (n, now_ms() + wait));
                    tracing::warn!(event = %e.id, error = %err, retry_in_ms = wait,
                        "could not record a webhook attempt; the event waits before it is sent again");
                }
            }
        }
        if let Ok(mut f) = in_flight.lock() {
            f.remove(&e.order_no);
        }
        let _ = wake.try_send(());
    }
}

fn dispatcher(
    ctx: Arc<Context>,
    jobs: Sender<OutboxEvent>,
    wake: Receiver<()>,
    stop: Receiver<()>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    held_off: HeldOff,
) {
    let mut low = 0;
    loop {
        dispatch_due(&ctx, &jobs, &in_flight, &held_off, &mut low);
        select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {},
            default(Duration::from_millis(500)) => {},
        }
    }
}

/// Hands due events to the senders. `low` is the low-water mark: no event
/// below it is pending (except ones an admin re-queued, which the store's
/// hint brings back into view).
fn dispatch_due(
    ctx: &Context,
    jobs: &Sender<OutboxEvent>,
    in_flight: &Mutex<HashSet<String>>,
    held_off: &Held,
    low: &mut u64,
) {
    // Lock before reading the outbox: a sender clears its order from the
    // in-flight set only after its attempt is recorded, so under the lock
    // the outbox never shows an attempt that is still being recorded (which
    // would send a delivered event twice).
    let Ok(mut busy) = in_flight.lock() else {
        return;
    };
    if busy.len() >= jobs.capacity().unwrap_or(1) {
        // Every sender is busy (a slow receiver): don't scan the outbox on
        // every commit; a sender wakes the dispatcher when it is free.
        return;
    }
    let from = (*low).min(ctx.store.take_outbox_hint());
    let pending = match ctx.store.pending_outbox(from, 4096) {
        Ok((p, next_low)) => {
            *low = next_low;
            p
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the webhook outbox");
            return;
        }
    };
    let now = now_ms();
    let held = held_off.lock().unwrap_or_else(|p| p.into_inner());
    // Only the oldest pending event of each order may go: per-order order.
    let mut seen: HashSet<String> = busy.clone();
    for e in pending {
        let not_before = held.get(&e.seq).map_or(e.next_attempt_ms, |&(_, until)| {
            until.max(e.next_attempt_ms)
        });
        if !seen.insert(e.order_no.clone()) || not_before > now {
            continue;
        }
        busy.insert(e.order_no.clone());
        if jobs.try_send(e.clone()).is_err() {
            busy.remove(&e.order_no);
            return;
        }
    }
}
