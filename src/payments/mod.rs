//! Payment gateways. Each gateway is one file implementing [`PaymentGateway`]:
//! verify a callback into a typed [`VerifiedPayment`], and build the URL that
//! sends a buyer to pay. Everything after verification — order lookup,
//! gateway match, exact amount, state machine, delivery — is shared, in
//! `shop::apply_payment`. Gateways know nothing of the HTTP server: a
//! callback reaches them as a [`CallbackRequest`]. See `docs/GATEWAYS.md`
//! to add one.

pub mod alipay;
pub mod epay;
pub mod hmac;

use crate::config::{Config, ConfigError};
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
    /// The pay types a buyer may name on an order (`pay_type`), the
    /// default first; empty when the gateway has one way to pay.
    fn pay_types(&self) -> Vec<String> {
        Vec::new()
    }
    /// The pay type of an order whose buyer named none; `mobile` says
    /// whether the buyer's browser is a phone's.
    fn default_pay_type(&self, _mobile: bool) -> Option<String> {
        self.pay_types().into_iter().next()
    }
}

/// Whether a User-Agent is a phone's (or a tablet's, or Alipay's app):
/// such buyers get a gateway's phone cashier when they choose none.
pub fn is_mobile(user_agent: &str) -> bool {
    [
        "Mobile",
        "Android",
        "iPhone",
        "iPad",
        "iPod",
        "HarmonyOS",
        "AlipayClient",
    ]
    .iter()
    .any(|m| user_agent.contains(m))
}

/// The enabled gateways, built once from config.
pub struct Gateways {
    hmac: Option<hmac::HmacGateway>,
    epay: Option<epay::EpayGateway>,
    alipay: Option<alipay::AlipayGateway>,
}

impl Gateways {
    /// The gateways of `cfg`; reads their key files, so a missing or bad
    /// one stops the start with its path.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let public_url = &cfg.server.public_url;
        Ok(Gateways {
            hmac: cfg
                .hmac_secret()
                .map(|s| hmac::HmacGateway::new(s.as_bytes().to_vec())),
            epay: cfg.epay().map(|e| {
                epay::EpayGateway::new(
                    &e.pid,
                    &e.key,
                    &e.submit_url,
                    &cfg.server.public_url,
                    e.channels(),
                )
            }),
            alipay: cfg
                .alipay()
                .map(|a| alipay::AlipayGateway::from_config(a, public_url))
                .transpose()?,
        })
    }

    /// The gateway, if enabled. `manual` has no callback and is never here.
    pub fn get(&self, g: Gateway) -> Option<&dyn PaymentGateway> {
        match g {
            Gateway::Hmac => self.hmac.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Epay => self.epay.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Manual => None,
            Gateway::Alipay => self.alipay.as_ref().map(|g| g as &dyn PaymentGateway),
        }
    }

    /// Whether buyers may create orders for `g`.
    pub fn accepts_orders(&self, g: Gateway) -> bool {
        g == Gateway::Manual || self.get(g).is_some()
    }

    /// The gateways a buyer may choose, in the order they are offered:
    /// every enabled one, and `manual` last when `public`.
    pub fn offered(&self, manual_public: bool) -> Vec<Gateway> {
        let mut out: Vec<Gateway> = [Gateway::Epay, Gateway::Hmac, Gateway::Alipay]
            .into_iter()
            .filter(|g| self.get(*g).is_some())
            .collect();
        if manual_public {
            out.push(Gateway::Manual);
        }
        out
    }

    /// The pay types of `g` a buyer may name (see [`PaymentGateway::pay_types`]).
    pub fn pay_types(&self, g: Gateway) -> Vec<String> {
        self.get(g).map(|gw| gw.pay_types()).unwrap_or_default()
    }

    /// The pay type an order of `g` gets: the buyer's, if `g` has it, or
    /// the gateway's default for the buyer's device.
    pub fn pay_type(
        &self,
        g: Gateway,
        given: Option<&str>,
        mobile: bool,
    ) -> Result<Option<String>, Error> {
        let Some(given) = given else {
            return Ok(self.get(g).and_then(|gw| gw.default_pay_type(mobile)));
        };
        let types = self.pay_types(g);
        if types.iter().any(|t| t == given) {
            return Ok(Some(given.to_string()));
        }
        Err(Error::invalid(
            "pay_type",
            if types.is_empty() {
                format!("gateway {} has no pay types", g.as_str())
            } else {
                format!(
                    "must be one of {} for gateway {}",
                    types.join(", "),
                    g.as_str()
                )
            },
        ))
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
