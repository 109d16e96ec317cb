//! The JSON shapes of the contract, built from stored records. Times become
//! RFC 3339 UTC; key text appears only where the contract puts it. Every
//! shape a handler answers with is a type here deriving `ToSchema`: the
//! OpenAPI document (`http::openapi`) takes its schemas from these same
//! types, so a field cannot reach a client undocumented.

use crate::crypto::Crypto;
use crate::domain::model::{Order, OrderEvent, Product};
use crate::domain::order::OrderStatus;
use crate::error::Error;
use crate::store::Store;
use serde::Serialize;
use utoipa::ToSchema;

/// An order's `status` in the document: one of [`OrderStatus::ALL`], so a
/// generated client gets an enum that grows with the code.
fn order_status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(OrderStatus::ALL.map(OrderStatus::as_str)))
        .build()
}

pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Serialize, ToSchema)]
pub struct ProductView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub price: u64,
    pub currency: &'a str,
    pub stock: u64,
    pub min_quantity: u32,
    pub max_quantity: u32,
    pub active: bool,
    #[schema(required = true)]
    pub category: Option<&'a str>,
    pub sort: i64,
    #[schema(required = true)]
    pub image_url: Option<&'a str>,
    #[schema(required = true)]
    pub instructions: Option<&'a str>,
    pub low_stock: u64,
    /// Wholesale prices, sorted by `min_quantity`.
    pub tiers: Vec<TierView>,
}

#[derive(Serialize, ToSchema)]
pub struct TierView {
    pub min_quantity: u32,
    pub price: u64,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCountsView {
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

#[derive(Serialize, ToSchema)]
pub struct AdminProductView<'a> {
    #[serde(flatten)]
    pub product: ProductView<'a>,
    pub keys: KeyCountsView,
}

/// A product as buyers see it; `stock` from `Store::stock` (none while paid
/// orders wait for its keys).
pub fn product<'a>(p: &'a Product, stock: u64, currency: &'a str) -> ProductView<'a> {
    ProductView {
        id: &p.id,
        name: &p.name,
        description: &p.description,
        price: p.price,
        currency,
        stock,
        min_quantity: p.min_quantity,
        max_quantity: p.max_quantity,
        active: p.active,
        category: p.presentation.category.as_deref(),
        sort: p.presentation.sort,
        image_url: p.presentation.image_url.as_deref(),
        instructions: p.presentation.instructions.as_deref(),
        low_stock: p.presentation.low_stock,
        tiers: p
            .presentation
            .tiers
            .iter()
            .map(|t| TierView {
                min_quantity: t.min_quantity,
                price: t.price,
            })
            .collect(),
    }
}

pub fn admin_product<'a>(p: &'a Product, stock: u64, currency: &'a str) -> AdminProductView<'a> {
    AdminProductView {
        product: product(p, stock, currency),
        keys: KeyCountsView {
            available: p.counts.available,
            held: p.counts.held,
            sold: p.counts.sold,
        },
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrderView<'a> {
    pub order_no: &'a str,
    #[schema(schema_with = order_status_schema)]
    pub status: &'a str,
    pub product_id: &'a str,
    pub quantity: u32,
    pub unit_price: u64,
    pub subtotal: u64,
    #[schema(required = true)]
    pub coupon: Option<&'a str>,
    pub discount: u64,
    pub amount: u64,
    pub currency: &'a str,
    pub created_at: String,
    pub expires_at: String,
    #[schema(required = true)]
    pub paid_at: Option<String>,
    #[schema(required = true)]
    pub delivered_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

pub fn order<'a>(o: &'a Order, currency: &'a str, keys: Option<Vec<String>>) -> OrderView<'a> {
    OrderView {
        order_no: &o.order_no,
        status: o.status.as_str(),
        product_id: &o.product_id,
        quantity: o.quantity,
        unit_price: o.pricing.unit_price,
        subtotal: o.pricing.subtotal,
        coupon: o.pricing.coupon.as_deref(),
        discount: o.pricing.discount,
        amount: o.amount,
        currency,
        created_at: rfc3339(o.created_at_ms),
        expires_at: rfc3339(o.expires_at_ms),
        paid_at: o.paid_at_ms.map(rfc3339),
        delivered_at: o.delivered_at_ms.map(rfc3339),
        refunded_at: o.refunded_at_ms.map(rfc3339),
        keys,
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventView<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
}

fn event(e: &OrderEvent) -> EventView<'_> {
    EventView {
        kind: e.kind.as_str(),
        at: rfc3339(e.at_ms),
        gateway: e.gateway.as_deref(),
        trade_no: e.trade_no.as_deref(),
        amount: e.amount,
        note: e.note.as_deref(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminOrderView<'a> {
    #[serde(flatten)]
    pub order: OrderView<'a>,
    pub email: &'a str,
    pub gateway: &'a str,
    #[schema(required = true)]
    pub trade_no: Option<&'a str>,
    pub events: Vec<EventView<'a>>,
}

pub fn admin_order<'a>(
    o: &'a Order,
    currency: &'a str,
    keys: Option<Vec<String>>,
) -> AdminOrderView<'a> {
    AdminOrderView {
        order: order(o, currency, keys),
        email: &o.email,
        gateway: &o.gateway,
        trade_no: o.trade_no.as_deref(),
        events: o.events.iter().map(event).collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedOrderView<'a> {
    pub order_no: &'a str,
    pub token: &'a str,
    #[schema(schema_with = order_status_schema)]
    pub status: &'a str,
    pub product_id: &'a str,
    pub quantity: u32,
    pub unit_price: u64,
    pub subtotal: u64,
    #[schema(required = true)]
    pub coupon: Option<&'a str>,
    pub discount: u64,
    pub amount: u64,
    pub currency: &'a str,
    pub email: &'a str,
    pub gateway: &'a str,
    pub created_at: String,
    pub expires_at: String,
    #[schema(required = true)]
    pub pay_url: Option<String>,
}

pub fn created_order<'a>(
    o: &'a Order,
    token: &'a str,
    currency: &'a str,
    pay_url: Option<String>,
) -> CreatedOrderView<'a> {
    CreatedOrderView {
        order_no: &o.order_no,
        token,
        status: o.status.as_str(),
        product_id: &o.product_id,
        quantity: o.quantity,
        unit_price: o.pricing.unit_price,
        subtotal: o.pricing.subtotal,
        coupon: o.pricing.coupon.as_deref(),
        discount: o.pricing.discount,
        amount: o.amount,
        currency,
        email: &o.email,
        gateway: &o.gateway,
        created_at: rfc3339(o.created_at_ms),
        expires_at: rfc3339(o.expires_at_ms),
        pay_url,
    }
}

/// `GET /api/v1/products`.
#[derive(Serialize, ToSchema)]
pub struct ProductList<'a> {
    pub products: Vec<ProductView<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminProductList<'a> {
    pub products: Vec<AdminProductView<'a>>,
}

/// One entry of `GET /api/v1/categories`.
#[derive(Serialize, ToSchema)]
pub struct CategoryView<'a> {
    pub name: &'a str,
    /// Active products in this category.
    pub products: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryList<'a> {
    pub categories: Vec<CategoryView<'a>>,
}

/// `GET /api/v1/admin/orders`: a page, newest first.
#[derive(Serialize, ToSchema)]
pub struct AdminOrderList<'a> {
    pub orders: Vec<AdminOrderView<'a>>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One key of the masked listing: its text never leaves unmasked here.
#[derive(Serialize, ToSchema)]
pub struct KeyView<'a> {
    pub id: String,
    /// `available`, `held` or `sold`.
    pub state: &'a str,
    pub masked: String,
    #[schema(required = true)]
    pub order_no: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList<'a> {
    pub keys: Vec<KeyView<'a>>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The answer to a key import.
#[derive(Serialize, ToSchema)]
pub struct ImportedView {
    pub added: u64,
    /// Keys already in the product (or repeated in the upload), skipped.
    pub duplicates: u64,
    pub stock: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RemovedView {
    pub removed: u64,
}

/// An outbound webhook event as the merchant sees it.
#[derive(Serialize, ToSchema)]
pub struct WebhookView<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    #[schema(required = true)]
    pub kind: Option<&'a str>,
    pub order_no: &'a str,
    /// `pending`, `delivered` or `dead`.
    pub state: &'a str,
    pub attempts: u32,
    #[schema(required = true)]
    pub last_error: Option<&'a str>,
    pub created_at: String,
    /// Set while pending.
    #[schema(required = true)]
    pub next_attempt_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList<'a> {
    pub webhooks: Vec<WebhookView<'a>>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BackupView {
    /// The backup's directory on the server.
    pub path: String,
    pub bytes: u64,
    /// The last journal batch the backup holds.
    pub last_batch: u64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthView {
    pub status: &'static str,
}

/// `GET /api/v1/gateways`: what a buyer may choose, in the order offered.
#[derive(Serialize, ToSchema)]
pub struct GatewayList<'a> {
    pub gateways: Vec<GatewayView<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct GatewayView<'a> {
    /// The order's `gateway`.
    pub id: &'static str,
    pub name: &'static str,
    /// The order's possible `pay_type`s, the default first (empty: none).
    pub pay_types: Vec<String>,
    /// `manual` only: how to pay the merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<&'a str>,
}

/// A gateway's name for buyers.
pub fn gateway_name(g: crate::domain::ids::Gateway) -> &'static str {
    use crate::domain::ids::Gateway;
    match g {
        Gateway::Manual => "Manual payment",
        Gateway::Hmac => "Online payment",
        Gateway::Epay => "易支付 (epay)",
        Gateway::Alipay => "支付宝 (Alipay)",
        Gateway::Wechat => "微信支付 (WeChat Pay)",
        Gateway::Stripe => "Card (Stripe)",
    }
}

/// The hmac gateway's acknowledgement of an applied callback.
#[derive(Serialize, ToSchema)]
pub struct CallbackAck<'a> {
    pub ok: bool,
    #[schema(schema_with = order_status_schema)]
    pub status: &'a str,
}

/// The body of every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: String,
}

/// The text of an order's keys, unsealed, for the buyer or the merchant.
pub fn key_texts(store: &Store, crypto: &Crypto, order: &Order) -> Result<Vec<String>, Error> {
    order
        .key_ids
        .iter()
        .map(|&id| {
            let rec = store
                .key(id)?
                .ok_or_else(|| Error::unavailable("a delivered key is missing; run faka check"))?;
            let plain = crypto
                .open(&rec.sealed, rec.product_id.as_bytes())
                .map_err(|_| {
                    Error::unavailable("a key could not be unsealed; is this the shop's key file?")
                })?;
            Ok(String::from_utf8_lossy(&plain).into_owned())
        })
        .collect()
}

/// The orders a buyer's e-mail and query password found.
#[derive(Serialize, ToSchema)]
pub struct LookupList<'a> {
    pub orders: Vec<OrderView<'a>>,
}

/// An answer that says only that the request was taken.
#[derive(Serialize, ToSchema)]
pub struct OkView {
    pub ok: bool,
}

/// An outgoing e-mail as the merchant sees it (never its text).
#[derive(Serialize, ToSchema)]
pub struct EmailView<'a> {
    pub id: &'a str,
    /// `order.delivered`, `order.awaiting_stock`, `stock.low` or `webhook.dead`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// `buyer` or `merchant`.
    pub to: &'a str,
    #[schema(required = true)]
    pub order_no: Option<&'a str>,
    #[schema(required = true)]
    pub product_id: Option<&'a str>,
    /// `pending`, `sent` or `dead`.
    pub state: &'a str,
    pub attempts: u32,
    #[schema(required = true)]
    pub last_error: Option<&'a str>,
    pub created_at: String,
    /// Set while pending.
    #[schema(required = true)]
    pub next_attempt_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmailList<'a> {
    pub emails: Vec<EmailView<'a>>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A coupon as the merchant sees it, with its use counts.
#[derive(Serialize, ToSchema)]
pub struct CouponView<'a> {
    pub code: &'a str,
    /// `percent` or `fixed`.
    pub kind: &'a str,
    pub value: u64,
    /// Empty: every product.
    pub product_ids: &'a [String],
    pub min_amount: u64,
    #[schema(required = true)]
    pub max_uses: Option<u64>,
    #[schema(required = true)]
    pub max_uses_per_email: Option<u64>,
    #[schema(required = true)]
    pub starts_at: Option<String>,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    pub active: bool,
    /// Paid orders that carry it.
    pub uses: u64,
    /// Pending orders that carry it.
    pub held: u64,
    pub created_at: String,
    pub updated_at: String,
}

pub fn coupon(c: &crate::domain::pricing::Coupon) -> CouponView<'_> {
    CouponView {
        code: &c.code,
        kind: c.kind.as_str(),
        value: c.value,
        product_ids: &c.product_ids,
        min_amount: c.min_amount,
        max_uses: c.max_uses,
        max_uses_per_email: c.max_uses_per_email,
        starts_at: c.starts_at_ms.map(rfc3339),
        expires_at: c.expires_at_ms.map(rfc3339),
        active: c.active,
        uses: c.uses,
        held: c.held,
        created_at: rfc3339(c.created_at_ms),
        updated_at: rfc3339(c.updated_at_ms),
    }
}

/// `GET /api/v1/admin/coupons`.
#[derive(Serialize, ToSchema)]
pub struct CouponList<'a> {
    pub coupons: Vec<CouponView<'a>>,
}

/// `POST /api/v1/orders/quote`: what the order would cost now.
#[derive(Serialize, ToSchema)]
pub struct QuoteView<'a> {
    pub unit_price: u64,
    pub subtotal: u64,
    pub discount: u64,
    pub amount: u64,
    pub currency: &'a str,
    pub stock: u64,
}
