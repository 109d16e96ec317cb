//! Stripe Checkout. Starting a payment creates a Checkout Session
//! (`POST /v1/checkout/sessions`, form-encoded, the secret key as Bearer, the
//! order number as `Idempotency-Key` so a retry cannot make a second one);
//! the buyer is sent to its `url`. The webhook is signed in
//! `Stripe-Signature: t=…,v1=…` (HMAC-SHA256 of `t.body` with the endpoint's
//! secret; any `v1` may match, so secrets can roll; ±300 s), and
//! `checkout.session.completed` with `payment_status = paid`, the order's
//! `amount_total` in minor units and the shop's currency pays.

use super::{CallbackRequest, PaymentGateway, SessionKind, SessionStarter, VerifiedPayment};
use crate::config::StripeConfig;
use crate::crypto::ct_eq;
use crate::domain::ids::Gateway;
use crate::domain::model::{Order, PaySession};
use crate::error::Error;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;

/// How far a signature's `t` may be from the shop's clock.
pub const TOLERANCE_SECS: i64 = 300;
/// The one event type that pays.
pub const PAYING_EVENT: &str = "checkout.session.completed";

pub struct StripeGateway {
    secret_key: String,
    webhook_secret: String,
    api_base: String,
    public_url: String,
    /// The shop's currency as Stripe writes it (lower case).
    currency: String,
    timeout: Duration,
    agent: ureq::Agent,
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// The `v1` signatures (other schemes are ignored, as Stripe's SDKs do).
    pub v1: Vec<Vec<u8>>,
}

/// Parses `t=…,v1=…[,v1=…]`: `t` once and a number; `v1` hex.
pub fn parse_signature_header(header: &str) -> Result<SignatureHeader, Error> {
    let bad = |why: &str| Error::InvalidSignature(format!("Stripe-Signature {why}"));
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            return Err(bad("is not t=…,v1=…"));
        };
        match k {
            "t" if timestamp.is_none() => {
                timestamp = Some(v.parse::<i64>().map_err(|_| bad("t is not a number"))?);
            }
            "t" => return Err(bad("has t twice")),
            "v1" => v1.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| bad("has no t"))?;
    if v1.is_empty() {
        return Err(bad("has no v1 signature"));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// The `v1` signature of `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return [0; 32];
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: CheckoutSession,
}

#[derive(Deserialize)]
struct CheckoutSession {
    id: Option<String>,
    client_reference_id: Option<String>,
    amount_total: Option<u64>,
    currency: Option<String>,
    payment_status: Option<String>,
}

/// What a signed webhook is about.
pub enum Notice {
    /// A completed Checkout Session: the payment to apply.
    Payment(VerifiedPayment),
    /// Any other event: acknowledged, changes nothing.
    Other(String),
}

impl StripeGateway {
    pub fn new(cfg: &StripeConfig, public_url: &str, currency: &str) -> Self {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        StripeGateway {
            secret_key: cfg.secret_key.clone(),
            webhook_secret: cfg.webhook_secret.clone(),
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
            currency: currency.to_ascii_lowercase(),
            timeout,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }

    /// Checks the signature and tolerance, then reads the event.
    pub fn notice(&self, req: &CallbackRequest) -> Result<Notice, Error> {
        let header = req
            .headers
            .header("Stripe-Signature")
            .ok_or_else(|| Error::InvalidSignature("Stripe-Signature missing".into()))?;
        let sig = parse_signature_header(header)?;
        if sig.timestamp.abs_diff(req.now_secs) > TOLERANCE_SECS as u64 {
            return Err(Error::InvalidSignature(
                "Stripe-Signature t is too far from now".into(),
            ));
        }
        let expected = sign(&self.webhook_secret, sig.timestamp, req.body);
        // Every candidate is compared, so the time taken says nothing.
        let matched = sig
            .v1
            .iter()
            .fold(false, |m, given| ct_eq(given, &expected) | m);
        if !matched {
            return Err(Error::InvalidSignature("signature does not match".into()));
        }
        let event: Event = serde_json::from_slice(req.body)
            .map_err(|_| Error::InvalidJson("the event is not the expected JSON".into()))?;
        if event.kind != PAYING_EVENT {
            return Ok(Notice::Other(event.kind));
        }
        let s = event.data.object;
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| Error::invalid(name, "missing"))
        };
        let currency = need(s.currency, "currency")?;
        Ok(Notice::Payment(VerifiedPayment {
            order_no: need(s.client_reference_id, "client_reference_id")?,
            trade_no: need(s.id, "id")?,
            amount: s
                .amount_total
                .ok_or_else(|| Error::invalid("amount_total", "missing"))?,
            // Paid in another currency is not a payment of this order:
            // refused like an unpaid one, after the order's checks.
            succeeded: need(s.payment_status, "payment_status")? == "paid"
                && currency == self.currency,
        }))
    }

    /// The Checkout Session's fields, for a session started at `now_secs`.
    fn session_form(
        &self,
        order: &Order,
        token: &str,
        title: &str,
        now_secs: i64,
    ) -> Vec<(&'static str, String)> {
        let back = super::order_page_url(&self.public_url, &order.order_no, token);
        vec![
            ("mode", "payment".into()),
            ("client_reference_id", order.order_no.clone()),
            ("line_items[0][quantity]", "1".into()),
            ("line_items[0][price_data][currency]", self.currency.clone()),
            (
                "line_items[0][price_data][unit_amount]",
                order.amount.to_string(),
            ),
            (
                "line_items[0][price_data][product_data][name]",
                title.into(),
            ),
            ("success_url", back.clone()),
            ("cancel_url", back),
            ("metadata[order_no]", order.order_no.clone()),
            (
                "expires_at",
                session_expiry(order.expires_at_ms / 1000, now_secs).to_string(),
            ),
        ]
    }
}

/// When a Checkout Session started at `now_secs` stops taking payments:
/// when the order's hold ends, within what Stripe allows (30 minutes to 24
/// hours after the session's creation; a minute's margin each side for
/// clocks). Without it a session stays open 24 hours, long after the hold
/// gave the keys back; with it a payment after the hold is possible only in
/// the minutes up to Stripe's 30-minute floor, and goes the late-payment
/// way (delivered if stock remains, else awaiting stock).
fn session_expiry(hold_ends_secs: i64, now_secs: i64) -> i64 {
    hold_ends_secs.clamp(now_secs + 31 * 60, now_secs + 24 * 3600 - 60)
}

impl PaymentGateway for StripeGateway {
    fn id(&self) -> Gateway {
        Gateway::Stripe
    }

    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error> {
        match self.notice(req)? {
            Notice::Payment(p) => Ok(p),
            Notice::Other(_) => Err(Error::invalid("type", "not a payment event")),
        }
    }

    fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        Some(super::start_page_url(
            &self.public_url,
            &order.order_no,
            token,
        ))
    }

    fn session_starter(&self) -> Option<&dyn SessionStarter> {
        Some(self)
    }
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    url: String,
}

impl SessionStarter for StripeGateway {
    fn kind(&self) -> SessionKind {
        SessionKind::Redirect
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn start(&self, order: &Order, token: &str, title: &str) -> Result<PaySession, Error> {
        let answer = self
            .agent
            .post(&format!("{}/v1/checkout/sessions", self.api_base))
            .set("Authorization", &format!("Bearer {}", self.secret_key))
            .set("Idempotency-Key", &order.order_no)
            .send_form(
                &self
                    .session_form(order, token, title, crate::store::now_ms() / 1000)
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            );
        let unavailable = |why: String| {
            tracing::warn!(order_no = %order.order_no, reason = %why, "Stripe did not start a payment");
            Error::unavailable("Stripe is not answering; try again in a moment")
        };
        let answer: SessionAnswer = match answer {
            Ok(r) => r
                .into_string()
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| unavailable("an answer without a session".into()))?,
            Err(ureq::Error::Status(code, _)) => return Err(unavailable(format!("status {code}"))),
            Err(ureq::Error::Transport(t)) => return Err(unavailable(t.kind().to_string())),
        };
        Ok(PaySession {
            provider_ref: answer.id,
            url: answer.url,
            created_at_ms: crate::store::now_ms(),
        })
    }
}

#[cfg(test)]
mod tests;
