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
pub mod stripe;
pub mod wechat;

use crate::config::Config;
use crate::domain::ids::Gateway;
use crate::domain::model::{Order, PaySession};
use crate::error::Error;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// and finds its session stored, or, if that call failed, gets its error
/// at once instead of trying again in turn (twenty tabs against a provider
/// that is down would otherwise wait twenty timeouts).
#[derive(Default)]
pub struct PayStarts(Mutex<HashMap<String, Arc<Turn>>>);

/// An order's turn: the calls finished in it, and how the last one failed.
#[derive(Default)]
struct Turn {
    finished: AtomicU64,
    last_error: tokio::sync::Mutex<Option<Error>>,
}

impl PayStarts {
    /// Runs `start` while holding `order_no`'s turn, unless a start that
    /// finished while this one waited failed: then its error.
    pub async fn one_at_a_time<T>(
        &self,
        order_no: &str,
        start: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let turn = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(order_no.to_string()).or_default().clone()
        };
        let before = turn.finished.load(Ordering::SeqCst);
        let out = {
            let mut last_error = turn.last_error.lock().await;
            match &*last_error {
                Some(e) if turn.finished.load(Ordering::SeqCst) != before => Err(e.clone()),
                _ => {
                    let out = start.await;
                    *last_error = out.as_ref().err().cloned();
                    turn.finished.fetch_add(1, Ordering::SeqCst);
                    out
                }
            }
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else waits, so the entry can go.
        if Arc::strong_count(&turn) <= 2 {
            map.remove(order_no);
        }
        out
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
                    e.channels(),
                )
            }),
            alipay: cfg
                .alipay()
                .map(|a| alipay::AlipayGateway::from_config(a, public_url))
                .transpose()
                .map_err(|e| e.to_string())?,
        })
    }

    /// The gateway, if enabled. `manual` has no callback and is never here.
    pub fn get(&self, g: Gateway) -> Option<&dyn PaymentGateway> {
        match g {
            Gateway::Hmac => self.hmac.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Epay => self.epay.as_ref().map(|g| g as &dyn PaymentGateway),
            Gateway::Manual => None,
            Gateway::Alipay => self.alipay.as_ref().map(|g| g as &dyn PaymentGateway),
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

    /// The gateways a buyer may choose, in the order they are offered:
    /// every enabled one, and `manual` last when `public`.
    pub fn offered(&self, manual_public: bool) -> Vec<Gateway> {
        let mut out: Vec<Gateway> = [
            Gateway::Epay,
            Gateway::Hmac,
            Gateway::Alipay,
            Gateway::Wechat,
            Gateway::Stripe,
        ]
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

/// `k=v&k=v` of `fields` sorted by name in byte order: the text epay and
/// Alipay sign (each filters its own fields first).
pub fn sorted_pairs<'a>(fields: impl Iterator<Item = &'a (String, String)>) -> String {
    let mut fields: Vec<&(String, String)> = fields.collect();
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut text = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            text.push('&');
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    text
}

/// A form's fields (a callback's body or query), each name at most once: a
/// repeated name would let the signed value and the used value differ.
pub fn unique_form(raw: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
        .map_err(|_| Error::InvalidSignature("callback is not a form".into()))?;
    let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidSignature("a field appears twice".into()));
    }
    Ok(params)
}

/// A form field's value.
pub fn form_field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Five starts of one order at once: they run one at a time; when the
    /// first fails, those that waited for it get its error without a call.
    #[test]
    fn starts_of_one_order_take_turns_and_share_a_failure() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let starts = Arc::new(PayStarts::default());
        let (calls, running) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let outcomes: Vec<Result<(), Error>> = rt.block_on(async {
            let tasks: Vec<_> = (0..5)
                .map(|_| {
                    let (starts, calls, running) = (starts.clone(), calls.clone(), running.clone());
                    tokio::spawn(async move {
                        starts
                            .one_at_a_time("F1", async {
                                assert_eq!(
                                    running.fetch_add(1, Ordering::SeqCst),
                                    0,
                                    "one at a time"
                                );
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                running.fetch_sub(1, Ordering::SeqCst);
                                Err::<(), _>(Error::unavailable("down"))
                            })
                            .await
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(outcomes
            .iter()
            .all(|o| o.as_ref().unwrap_err().code() == "unavailable"));
        assert!(starts.0.lock().unwrap().is_empty(), "the turn is dropped");
        // A later start, after the failed one finished, calls again.
        let again = rt.block_on(starts.one_at_a_time("F1", async { Ok::<_, Error>(7) }));
        assert_eq!(again.unwrap(), 7);
    }
}
