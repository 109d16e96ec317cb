//! Payment gateways. Each gateway is one file implementing [`PaymentGateway`]:
//! verify a callback into a typed [`VerifiedPayment`], and build the URL that
//! sends a buyer to pay. Everything after verification — order lookup,
//! gateway match, exact amount, state machine, delivery — is shared, in
//! `shop::apply_payment`. Gateways know nothing of the HTTP server: a
//! callback reaches them as a [`CallbackRequest`]. See `docs/GATEWAYS.md`
//! to add one.

pub mod epay;
pub mod hmac;

use crate::config::Config;
use crate::domain::ids::Gateway;
use crate::domain::model::Order;
use crate::error::Error;

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
}

/// The enabled gateways, built once from config.
pub struct Gateways {
    hmac: Option<hmac::HmacGateway>,
    epay: Option<epay::EpayGateway>,
}

impl Gateways {
    pub fn from_config(cfg: &Config) -> Self {
        Gateways {
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
        }
    }

    /// The gateway, if enabled. `manual` has no callback and is never here.
    pub fn get(&self, g: Gateway) -> Option<&dyn PaymentGateway> {
        match g {
            Gateway::Hmac => self.hmac.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Epay => self.epay.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Manual => None,
        }
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

/// The buyer's order page, where every gateway's return address points.
pub fn order_page_url(public_url: &str, order_no: &str, token: &str) -> String {
    format!(
        "{}/orders/{order_no}?token={token}",
        public_url.trim_end_matches('/')
    )
}
