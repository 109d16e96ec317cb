//! E-mail: the sender side of the e-mail outbox, built like the webhook
//! senders (`workers::webhooks`).
//!
//! The e-mails a change causes are written in the same durable batch as the
//! change (`shop::emails`). Here a dispatcher thread hands due e-mails to a
//! few sender threads, which render each one ([`compose`]) and send it over
//! SMTP with `lettre` (rustls; plain, STARTTLS or implicit TLS, with
//! optional auth). A failed send is retried with the webhooks' exponential
//! back-off and jitter; after `give_up_secs` the e-mail is dead until the
//! merchant retries it. Senders never touch the order path: an SMTP server
//! that is down or slow only delays e-mail. A crash between a send and its
//! record sends that e-mail once more after the restart (at-least-once).

mod compose;

use crate::config::{EmailConfig, ShopConfig};
use crate::crypto::Crypto;
use crate::domain::model::EmailEvent;
use crate::ops::metrics::MailMetrics;
use crate::shop::{self, WebhookOutcome};
use crate::store::{now_ms, Store};
use crossbeam_channel::{select, Receiver, Sender};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Message, SmtpTransport, Transport};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything a sender needs.
pub struct Context {
    pub store: Store,
    pub crypto: Arc<Crypto>,
    /// Makes each order's token again for its link.
    pub tokens: crate::crypto::OrderTokens,
    pub cfg: EmailConfig,
    pub shop: ShopConfig,
    /// The base of the order page's link.
    pub public_url: String,
    pub metrics: MailMetrics,
}

/// What the senders share: the SMTP transport and the sender's address.
struct Mailer {
    ctx: Context,
    transport: SmtpTransport,
    from: Mailbox,
}

/// E-mails being sent now, by seq; and e-mails whose attempt could not be
/// recorded, by seq: when they may go again (see `workers::webhooks`).
#[derive(Default)]
struct Busy {
    in_flight: HashSet<u64>,
    held_until: HashMap<u64, i64>,
}

/// [`Busy`], and whether every sender was busy when the dispatcher last
/// looked (then commits don't wake it; see `start`).
#[derive(Default)]
struct SharedBusy {
    busy: Mutex<Busy>,
    all_busy: AtomicBool,
}

impl SharedBusy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Shared = Arc<SharedBusy>;

/// How long an e-mail whose attempt could not be recorded waits.
const HOLD_OFF_MS: i64 = 5_000;

/// Starts the dispatcher and `cfg.workers` senders; refuses (leaving the
/// e-mails in the outbox) when the URL or the sender does not parse.
pub fn start(ctx: Context, workers: &mut super::Workers) -> Result<(), String> {
    let transport = SmtpTransport::from_url(&ctx.cfg.smtp_url)
        .map_err(|e| format!("email.smtp_url: {e}"))?
        .timeout(Some(Duration::from_secs(ctx.cfg.timeout_secs.max(1))))
        .build();
    let from: Mailbox = ctx
        .cfg
        .from
        .parse()
        .map_err(|e| format!("email.from: {e}"))?;
    let n = ctx.cfg.workers.max(1);
    let mailer = Arc::new(Mailer {
        ctx,
        transport,
        from,
    });
    let (job_tx, job_rx) = crossbeam_channel::bounded::<EmailEvent>(n);
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let busy: Shared = Arc::default();
    let (w, b) = (wake_tx.clone(), busy.clone());
    mailer.ctx.store.on_commit(move || {
        // While every sender is busy (a slow or hanging SMTP server, or
        // more e-mail than they send) a commit has nothing to hand out:
        // don't wake the dispatcher for each one, a sender does when it
        // is free.
        if !b.all_busy.load(Ordering::Relaxed) {
            let _ = w.try_send(());
        }
    });
    for i in 0..n {
        let (m, rx, wake, b) = (
            mailer.clone(),
            job_rx.clone(),
            wake_tx.clone(),
            busy.clone(),
        );
        workers.spawn(&format!("faka-email-{i}"), move || sender(m, rx, wake, b));
    }
    let stop = workers.stop_signal();
    workers.spawn("faka-email-dispatch", move || {
        dispatcher(mailer, job_tx, wake_rx, stop, busy)
    });
    Ok(())
}

/// Renders and sends one e-mail; never panics, never logs its text.
fn send(m: &Mailer, e: &EmailEvent) -> WebhookOutcome {
    let c = match compose::compose(&m.ctx, e) {
        Ok(c) => c,
        Err(reason) => return WebhookOutcome::Failed(reason),
    };
    let to: Mailbox = match c.to.parse() {
        Ok(to) => to,
        Err(_) => return WebhookOutcome::Failed("the recipient's address is not valid".into()),
    };
    // One id per e-mail, the same on every attempt: a receiver that got
    // a message whose acknowledgement was lost can drop the repeat.
    let message_id = format!("<{}.{}@{}>", e.id, e.created_at_ms, m.from.email.domain());
    let message = Message::builder()
        .from(m.from.clone())
        .to(to)
        .subject(c.subject)
        .message_id(Some(message_id))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(c.text, c.html));
    let message = match message {
        Ok(msg) => msg,
        Err(err) => return WebhookOutcome::Failed(format!("could not build the message: {err}")),
    };
    match m.transport.send(&message) {
        Ok(_) => WebhookOutcome::Delivered,
        Err(err) => WebhookOutcome::Failed(format!("smtp: {err}")),
    }
}

fn sender(m: Arc<Mailer>, jobs: Receiver<EmailEvent>, wake: Sender<()>, busy: Shared) {
    let base = m.ctx.cfg.retry_base_ms;
    let give_up = m.ctx.cfg.give_up_secs as i64 * 1000;
    for e in jobs {
        let started = Instant::now();
        let outcome = send(&m, &e);
        let metrics = &m.ctx.metrics;
        metrics
            .send_seconds
            .observe(started.elapsed().as_secs_f64());
        let result = match &outcome {
            WebhookOutcome::Delivered => "sent",
            WebhookOutcome::Failed(_) if now_ms() - e.retry_from_ms >= give_up => "dead",
            WebhookOutcome::Failed(_) => "failed",
        };
        metrics.attempts.with_label_values(&[result]).inc();
        if let WebhookOutcome::Failed(reason) = &outcome {
            tracing::warn!(email = %e.id, kind = e.kind.as_str(), attempt = e.attempts + 1,
                reason = %reason, "e-mail not sent; {}", if result == "dead" { "given up" } else { "will retry" });
        }
        let seq = e.seq;
        let recorded = m
            .ctx
            .store
            .write_blocking(move |tx| shop::record_email_attempt(tx, seq, outcome, base, give_up));
        let mut b = busy.lock();
        match recorded {
            Ok(()) => {
                b.held_until.remove(&seq);
            }
            Err(err) => {
                tracing::warn!(email = %e.id, error = %err, "could not record an e-mail attempt; it waits before it is sent again");
                b.held_until.insert(seq, now_ms() + HOLD_OFF_MS);
            }
        }
        b.in_flight.remove(&seq);
        drop(b);
        busy.all_busy.store(false, Ordering::Relaxed);
        let _ = wake.try_send(());
    }
}

fn dispatcher(
    m: Arc<Mailer>,
    jobs: Sender<EmailEvent>,
    wake: Receiver<()>,
    stop: Receiver<()>,
    busy: Shared,
) {
    let mut low = 0;
    loop {
        dispatch_due(&m, &jobs, &busy, &mut low);
        select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {},
            default(Duration::from_millis(500)) => {},
        }
    }
}

/// Hands due e-mails to the senders. `low` is the low-water mark: no e-mail
/// below it is pending, except ones the merchant re-queued (the store's
/// hint brings those back into view).
fn dispatch_due(m: &Mailer, jobs: &Sender<EmailEvent>, shared: &SharedBusy, low: &mut u64) {
    // Locked before the read: a sender leaves the in-flight set only after
    // its attempt is recorded, so a sent e-mail is never seen pending here.
    let mut b = shared.lock();
    if b.in_flight.len() >= jobs.capacity().unwrap_or(1) {
        // Every sender is busy (a slow SMTP server): don't scan the outbox
        // on every commit; a sender wakes the dispatcher when it is free.
        shared.all_busy.store(true, Ordering::Relaxed);
        return;
    }
    let from = (*low).min(m.ctx.store.take_email_hint());
    let pending = match m.ctx.store.pending_emails(from, 4096) {
        Ok((p, next_low)) => {
            *low = next_low;
            p
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the e-mail outbox");
            return;
        }
    };
    m.ctx.metrics.queue_depth.set(pending.len() as i64);
    let now = now_ms();
    for e in pending {
        let held = b.held_until.get(&e.seq).copied().unwrap_or(0);
        if b.in_flight.contains(&e.seq) || e.next_attempt_ms.max(held) > now {
            continue;
        }
        b.in_flight.insert(e.seq);
        let seq = e.seq;
        if jobs.try_send(e).is_err() {
            b.in_flight.remove(&seq);
            return;
        }
    }
}
