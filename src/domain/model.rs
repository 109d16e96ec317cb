//! The shop's records as they are stored. Each is a plain serde struct encoded
//! by `store::codec` (version byte + bincode); no `flatten`, `skip`, `tag` or
//! `untagged` here, because bincode cannot round-trip them. Adding a field
//! means a new format version and a migration in the codec.

use super::order::OrderStatus;
use serde::{Deserialize, Serialize};

/// Key counts of a product. `available + held + sold == imported - deleted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub imported: u64,
    pub deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Price of one key in minor units (fen).
    pub price: u64,
    pub min_quantity: u32,
    pub max_quantity: u32,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub counts: KeyCounts,
    /// How the storefront shows it (stored since product format 2).
    pub presentation: Presentation,
}

/// The fields that only change how a product is shown and announced: the
/// storefront's grouping and order, its picture, the text delivered with
/// its keys, and the merchant's low-stock threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presentation {
    pub category: Option<String>,
    /// Ascending; ties are ordered by id.
    pub sort: i64,
    /// `https://…` or a path under `/`.
    pub image_url: Option<String>,
    /// Shown with the delivered keys.
    pub instructions: Option<String>,
    /// Alert when available keys fall below this; 0 = never.
    pub low_stock: u64,
    /// Wholesale prices, sorted by `min_quantity`. Stored from format 2 on
    /// so that pricing by tiers needs no new product format; nothing sets
    /// them yet.
    pub tiers: Vec<Tier>,
}

/// A wholesale price: from `min_quantity` keys on, each costs `price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub min_quantity: u32,
    pub price: u64,
}

/// The state of one card key. A key moves `Available → Held → Sold`, or back
/// from `Held` to `Available` when its order expires; it is never owned by two
/// orders because every move is a compare-and-swap on this state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Available,
    Held { order_no: String },
    Sold { order_no: String },
}

impl KeyState {
    pub fn name(&self) -> &'static str {
        match self {
            KeyState::Available => "available",
            KeyState::Held { .. } => "held",
            KeyState::Sold { .. } => "sold",
        }
    }

    pub fn order_no(&self) -> Option<&str> {
        match self {
            KeyState::Available => None,
            KeyState::Held { order_no } | KeyState::Sold { order_no } => Some(order_no),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub product_id: String,
    pub state: KeyState,
    /// The key text, sealed with the shop's master key (see `crypto`).
    /// Bytes in bulk, not a sequence of u8: the same encoding, decoded with
    /// one copy instead of a visitor call per byte.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    pub imported_at_ms: i64,
}

/// What happened to an order, newest last. Shown to the merchant in admin
/// order detail; payments carry gateway, trade_no and amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Created,
    Paid,
    Delivered,
    AwaitingStock,
    Expired,
    Refunded,
    /// A different payment arrived for an order that was already paid.
    SecondPayment,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Paid => "paid",
            EventKind::Delivered => "delivered",
            EventKind::AwaitingStock => "awaiting_stock",
            EventKind::Expired => "expired",
            EventKind::Refunded => "refunded",
            EventKind::SecondPayment => "second_payment",
        }
    }

    /// The outbound webhook type for this event, if merchants are notified.
    pub fn webhook_type(self) -> Option<&'static str> {
        match self {
            EventKind::Paid => Some("order.paid"),
            EventKind::Delivered => Some("order.delivered"),
            EventKind::AwaitingStock => Some("order.awaiting_stock"),
            EventKind::Expired => Some("order.expired"),
            EventKind::Refunded => Some("order.refunded"),
            EventKind::Created | EventKind::SecondPayment => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub at_ms: i64,
    pub kind: EventKind,
    pub gateway: Option<String>,
    pub trade_no: Option<String>,
    pub amount: Option<u64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_no: String,
    /// Creation sequence number: orders list newest first by it.
    pub seq: u64,
    pub product_id: String,
    pub quantity: u32,
    pub amount: u64,
    pub email: String,
    pub gateway: String,
    /// SHA-256 of the buyer's token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub query_password_hash: Option<[u8; 32]>,
    pub status: OrderStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub refunded_at_ms: Option<i64>,
    /// Held keys while pending/paid, sold keys once delivered.
    pub key_ids: Vec<u64>,
    /// The applied payment: gateway and trade_no.
    pub paid_gateway: Option<String>,
    pub trade_no: Option<String>,
    pub client_ip: Option<String>,
    pub events: Vec<OrderEvent>,
    // ---- order format 2 (contract v1.1) ----
    /// The price as fixed when the order was made; `amount` is its total.
    pub pricing: Pricing,
    /// The buyer's choice among the gateway's pay types (epay `alipay`,
    /// `wxpay`…; alipay `wap`), when it has several.
    pub pay_type: Option<String>,
    /// Slow salted hash (argon2 PHC string) of the buyer's query password.
    /// Format-1 orders kept only a fast hash in `query_password_hash`; lookup
    /// never finds them.
    pub query_password_phc: Option<String>,
    /// The provider's payment session, for gateways whose payment is started
    /// by calling them (wechat, stripe): made once per order on the first
    /// visit of `/pay/{order_no}` and reused after.
    pub pay_session: Option<PaySession>,
}

/// An order's price, fixed at creation: `amount = subtotal - discount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    pub unit_price: u64,
    /// `unit_price × quantity`.
    pub subtotal: u64,
    pub discount: u64,
    /// The coupon's code as the merchant wrote it, when one was used.
    pub coupon: Option<String>,
}

impl Pricing {
    /// The price of an order without tiers or coupon.
    pub fn plain(unit_price: u64, quantity: u32) -> Pricing {
        Pricing {
            unit_price,
            subtotal: unit_price.saturating_mul(quantity as u64),
            discount: 0,
            coupon: None,
        }
    }
}

/// A payment session at a provider (wechat `code_url`, stripe Checkout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaySession {
    /// The provider's id for it (stripe `cs_…`; wechat: the prepay's id or
    /// empty when it gives none).
    pub provider_ref: String,
    /// Where the buyer pays: a URL to open, or (wechat) the `code_url` shown
    /// as a QR code.
    pub url: String,
    pub created_at_ms: i64,
}

#[cfg(test)]
impl Order {
    /// A pending order for `email` from `ip`, expiring at `expires_at_ms`.
    pub(crate) fn pending_for_test(no: &str, email: &str, ip: &str, expires_at_ms: i64) -> Order {
        Order {
            order_no: no.into(),
            seq: 0,
            product_id: "p".into(),
            quantity: 1,
            amount: 1,
            email: email.into(),
            gateway: "manual".into(),
            token_hash: [0; 32],
            query_password_hash: None,
            status: OrderStatus::Pending,
            created_at_ms: 0,
            expires_at_ms,
            paid_at_ms: None,
            delivered_at_ms: None,
            refunded_at_ms: None,
            key_ids: Vec::new(),
            paid_gateway: None,
            trade_no: None,
            client_ip: Some(ip.into()),
            events: Vec::new(),
            pricing: Pricing::plain(1, 1),
            pay_type: None,
            query_password_phc: None,
            pay_session: None,
        }
    }
}

impl Order {
    pub fn record(&mut self, at_ms: i64, kind: EventKind) -> &mut OrderEvent {
        self.events.push(OrderEvent {
            at_ms,
            kind,
            gateway: None,
            trade_no: None,
            amount: None,
            note: None,
        });
        let last = self.events.len() - 1;
        &mut self.events[last]
    }
}

/// A remembered `Idempotency-Key`: the request's fingerprint and the sealed
/// first response (it holds the buyer's token, so it is sealed like keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: [u8; 32],
    pub order_no: String,
    #[serde(with = "serde_bytes")]
    pub sealed_response: Vec<u8>,
    pub created_at_ms: i64,
}

/// A webhook waiting to be (or already) sent: the transactional outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub id: String,
    pub seq: u64,
    pub order_no: String,
    pub kind: EventKind,
    pub created_at_ms: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// Retries give up this long after this moment (creation, or an admin
    /// re-queue).
    pub retry_from_ms: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// A verified gateway callback that changed nothing: a repeat of an applied
/// payment, or one refused by a later check (amount, gateway, status). Kept
/// as an audit trail beside the order, not as part of its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAttempt {
    pub at_ms: i64,
    pub gateway: String,
    pub trade_no: String,
    pub amount: u64,
    /// `repeated` or `refused`.
    pub result: String,
    /// The error code of a refusal.
    pub reason: Option<String>,
}

/// What an e-mail says (the contract's event names, `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailKind {
    /// To the buyer: the keys (or the link to them) are ready.
    OrderDelivered,
    /// To the buyer and to the merchant: paid, waiting for keys.
    OrderAwaitingStock,
    /// To the merchant: a product's available keys fell below `low_stock`.
    StockLow,
    /// To the merchant: a webhook event was given up on.
    WebhookDead,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::OrderDelivered => "order.delivered",
            EmailKind::OrderAwaitingStock => "order.awaiting_stock",
            EmailKind::StockLow => "stock.low",
            EmailKind::WebhookDead => "webhook.dead",
        }
    }
}

/// Whom an e-mail goes to; the address is looked up when it is sent (the
/// order's e-mail, or `[email] merchant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailTo {
    Buyer,
    Merchant,
}

impl EmailTo {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailTo::Buyer => "buyer",
            EmailTo::Merchant => "merchant",
        }
    }
}

/// One e-mail in the outbox, written in the batch of the change it reports
/// and sent by the e-mail workers (retried like a webhook event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailEvent {
    pub id: String,
    pub seq: u64,
    pub kind: EmailKind,
    pub to: EmailTo,
    /// The order it is about (order events; a dead webhook's order).
    pub order_no: Option<String>,
    /// The product it is about (`stock.low`).
    pub product_id: Option<String>,
    /// The dead webhook event's id (`webhook.dead`).
    pub detail: Option<String>,
    pub created_at_ms: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// Retries give up this long after this moment.
    pub retry_from_ms: i64,
    pub last_error: Option<String>,
}
