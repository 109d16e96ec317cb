//! Payment gateways. Each gateway is one file implementing [`PaymentGateway`]:
//! verify a callback into a typed [`VerifiedPayment`], and build the URL that
//! sends a buyer to pay. Everything after verification — order lookup,
//! gateway match, exact amount, state machine, delivery — is shared, in
//! `shop::apply_payment`. Gateways know nothing of the HTTP server: a
//! callback reaches them as a [`CallbackRequest`]. See `docs/GATEWAYS.md`
//! to add one.

pub mod epay;
pub mod hmac;
pub mod stripe;
pub mod wechat;

use crate::config::Config;
use crate::domain::ids::Gateway;
use crate::domain::model::{Order, PaySession};
use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A callback's headers, looked up by name in any letter case. Gateways see
/// only this, not the HTTP server's types; `http::payments` implements it
/// for the request's header map.
pub trait Headers {
    /// The value of header `name`, if present and text.
    fn header(&self, name: &str) -> Option<&str>;
}

/// Headers as name–value pairs (for callers outside the HTTP server, and
/// tests).
impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// A callback as received, before any trust.
pub struct CallbackRequest<'a> {
    pub headers: &'a dyn Headers,
    pub query: &'a str,
    pub body: &'a [u8],
    pub now_secs: i64,
}

/// What a verified callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    pub order_no: String,
    pub trade_no: String,
    /// Minor units, parsed exactly.
    pub amount: u64,
    /// Whether the gateway reports the payment as successful.
    pub succeeded: bool,
}

pub trait PaymentGateway: Send + Sync {
    fn id(&self) -> Gateway;
    /// Checks the signature (constant time) and parses the fields. Any
    /// failure is `invalid_signature` or a 4xx naming the field.
    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error>;
    /// Where the buyer goes to pay, if this gateway has a payment page.
    /// `token` is the buyer's order token: a gateway's return address is
    /// the order page, which needs it to show the keys.
    fn pay_url(&self, order: &Order, token: &str) -> Option<String>;
    /// For gateways whose payment is started by calling their provider
    /// (wechat, stripe): the call. Their `pay_url` is faka's `/pay` page.
    fn session_starter(&self) -> Option<&dyn SessionStarter> {
        None
    }
}

/// How the buyer uses a provider's payment session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A page at the provider to send the buyer to (Stripe Checkout).
    Redirect,
    /// A payment code shown as a QR code for the buyer's phone (WeChat).
    QrCode,
}

/// Starts a payment at a provider. `start` blocks on the network (bounded
/// by `timeout`), so it runs on the blocking pool, never in the writer.
pub trait SessionStarter: Send + Sync {
    fn kind(&self) -> SessionKind;
    fn timeout(&self) -> Duration;
    /// Asks the provider for a payment session for `order`; `title` names
    /// what is bought. A failure is `unavailable` and says nothing secret.
    fn start(&self, order: &Order, token: &str, title: &str) -> Result<PaySession, Error>;
}

/// One payment start at a time per order, so that buyers opening `/pay`
/// twice at once cause one provider call: the second waits for the first
/// and finds its session stored.
#[derive(Default)]
pub struct PayStarts(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PayStarts {
    /// Runs `start` while holding `order_no`'s turn.
    pub async fn one_at_a_time<T>(
        &self,
        order_no: &str,
        start: impl std::future::Future<Output = T>,
    ) -> T {
        let turn = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(order_no.to_string()).or_default().clone()
        };
        let out = {
            let _held = turn.lock().await;
            start.await
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else waits, so the entry can go.
        if Arc::strong_count(&turn) <= 2 {
            map.remove(order_no);
        }
        out
    }
}

/// The enabled gateways, built once from config.
pub struct Gateways {
    hmac: Option<hmac::HmacGateway>,
    epay: Option<epay::EpayGateway>,
    wechat: Option<wechat::WechatGateway>,
    stripe: Option<stripe::StripeGateway>,
    /// Payment starts in flight, per order (see `/pay/{order_no}`).
    pub starts: PayStarts,
}

impl Gateways {
    /// Builds the enabled gateways; reads their key files, and a file that
    /// cannot be read or parsed is an error naming it.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let public_url = &cfg.server.public_url;
        Ok(Gateways {
            wechat: cfg
                .wechat()
                .map(|w| wechat::WechatGateway::new(w, public_url))
                .transpose()?,
            stripe: cfg
                .stripe()
                .map(|s| stripe::StripeGateway::new(s, public_url, &cfg.shop.currency)),
            starts: PayStarts::default(),
            hmac: cfg
                .hmac_secret()
                .map(|s| hmac::HmacGateway::new(s.as_bytes().to_vec())),
            epay: cfg.epay().map(|e| {
                epay::EpayGateway::new(
                    &e.pid,
                    &e.key,
                    &e.submit_url,
                    &cfg.server.public_url,
                    &e.pay_type,
                )
            }),
        })
    }

    /// The gateway, if enabled. `manual` has no callback and is never here.
    pub fn get(&self, g: Gateway) -> Option<&dyn PaymentGateway> {
        match g {
            Gateway::Hmac => self.hmac.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Epay => self.epay.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Manual => None,
            Gateway::Wechat => self.wechat.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Stripe => self.stripe.as_ref().map(|g| g as &dyn PaymentGateway),
        }
    }

    /// The stripe gateway, if enabled: its notify route acknowledges other
    /// events before the shared payment path.
    pub fn stripe(&self) -> Option<&stripe::StripeGateway> {
        self.stripe.as_ref()
    }

    /// The starter of `order`'s gateway, if it must call its provider.
    pub fn starter(&self, order: &Order) -> Option<&dyn SessionStarter> {
        let g = Gateway::parse(&order.gateway).ok()?;
        self.get(g)?.session_starter()
    }

    /// Whether buyers may create orders for `g`.
    pub fn accepts_orders(&self, g: Gateway) -> bool {
        g == Gateway::Manual || self.get(g).is_some()
    }

    pub fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        let g = Gateway::parse(&order.gateway).ok()?;
        self.get(g)?.pay_url(order, token)
    }
}

/// faka's page that starts a payment at the provider on the buyer's visit.
pub fn start_page_url(public_url: &str, order_no: &str, token: &str) -> String {
    format!(
        "{}/pay/{order_no}?token={token}",
        public_url.trim_end_matches('/')
    )
}

/// The buyer's order page, where every gateway's return address points.
pub fn order_page_url(public_url: &str, order_no: &str, token: &str) -> String {
    format!(
        "{}/orders/{order_no}?token={token}",
        public_url.trim_end_matches('/')
    )
}
