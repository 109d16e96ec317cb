//! Stored values: one format-version byte, then bincode 2 (pinned `=2.0.1`) of
//! a serde struct. Decoding has a size limit and refuses trailing bytes, so a
//! torn or foreign value is an error, never a silently wrong record.

use crate::domain::model::{
    EmailEvent, KeyCounts, Order, OrderEvent, Presentation, Pricing, Product,
};
use crate::domain::order::OrderStatus;
use serde::{de::DeserializeOwned, Serialize};

/// The format version written today. Readers reject other versions loudly
/// instead of guessing.
pub const FORMAT_VERSION: u8 = 1;

/// No stored value is bigger than this (a 100k-key import is many values).
const LIMIT: usize = 16 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("bincode: {0}")]
    Decode(String),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding a plain struct into a Vec cannot fail except past the limit,
    // which no record reaches (they are bounded at the edge).
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(body) => out.extend_from_slice(&body),
        Err(e) => panic!("encoding a stored record failed: {e}"),
    }
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    decode_body(body)
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Products are written in format 2, which added [`Presentation`]; format 1
/// products, written by earlier builds, still read (with default
/// presentation), so an upgrade needs no migration pass.
pub const PRODUCT_FORMAT: u8 = 2;

/// A product as format 1 stored it.
#[derive(serde::Deserialize)]
struct ProductV1 {
    id: String,
    name: String,
    description: String,
    price: u64,
    min_quantity: u32,
    max_quantity: u32,
    active: bool,
    created_at_ms: i64,
    updated_at_ms: i64,
    counts: KeyCounts,
}

impl From<ProductV1> for Product {
    fn from(p: ProductV1) -> Product {
        Product {
            id: p.id,
            name: p.name,
            description: p.description,
            price: p.price,
            min_quantity: p.min_quantity,
            max_quantity: p.max_quantity,
            active: p.active,
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
            counts: p.counts,
            presentation: Presentation::default(),
        }
    }
}

pub fn encode_product(p: &Product) -> Vec<u8> {
    let mut out = encode(p);
    out[0] = PRODUCT_FORMAT;
    out
}

pub fn decode_product(bytes: &[u8]) -> Result<Product, CodecError> {
    match bytes.first() {
        Some(&PRODUCT_FORMAT) => decode_body(&bytes[1..]),
        Some(&FORMAT_VERSION) => decode_body::<ProductV1>(&bytes[1..]).map(Product::from),
        Some(&v) => Err(CodecError::Version(v)),
        None => Err(CodecError::Empty),
    }
}

/// Orders are written in format 2, which added pricing, the pay type, the
/// query password's slow hash and the provider's payment session; format 1
/// orders still read: their price is their amount, with no discount.
pub const ORDER_FORMAT: u8 = 2;

/// An order as format 1 stored it.
#[derive(serde::Deserialize)]
struct OrderV1 {
    order_no: String,
    seq: u64,
    product_id: String,
    quantity: u32,
    amount: u64,
    email: String,
    gateway: String,
    token_hash: [u8; 32],
    query_password_hash: Option<[u8; 32]>,
    status: OrderStatus,
    created_at_ms: i64,
    expires_at_ms: i64,
    paid_at_ms: Option<i64>,
    delivered_at_ms: Option<i64>,
    refunded_at_ms: Option<i64>,
    key_ids: Vec<u64>,
    paid_gateway: Option<String>,
    trade_no: Option<String>,
    client_ip: Option<String>,
    events: Vec<OrderEvent>,
}

impl From<OrderV1> for Order {
    fn from(o: OrderV1) -> Order {
        let pricing = Pricing {
            unit_price: o.amount / (o.quantity.max(1) as u64),
            subtotal: o.amount,
            discount: 0,
            coupon: None,
        };
        Order {
            order_no: o.order_no,
            seq: o.seq,
            product_id: o.product_id,
            quantity: o.quantity,
            amount: o.amount,
            email: o.email,
            gateway: o.gateway,
            token_hash: o.token_hash,
            query_password_hash: o.query_password_hash,
            status: o.status,
            created_at_ms: o.created_at_ms,
            expires_at_ms: o.expires_at_ms,
            paid_at_ms: o.paid_at_ms,
            delivered_at_ms: o.delivered_at_ms,
            refunded_at_ms: o.refunded_at_ms,
            key_ids: o.key_ids,
            paid_gateway: o.paid_gateway,
            trade_no: o.trade_no,
            client_ip: o.client_ip,
            events: o.events,
            pricing,
            pay_type: None,
            query_password_phc: None,
            pay_session: None,
        }
    }
}

pub fn encode_order(o: &Order) -> Vec<u8> {
    let mut out = encode(o);
    out[0] = ORDER_FORMAT;
    out
}

pub fn decode_order(bytes: &[u8]) -> Result<Order, CodecError> {
    match bytes.first() {
        Some(&ORDER_FORMAT) => decode_body(&bytes[1..]),
        Some(&FORMAT_VERSION) => decode_body::<OrderV1>(&bytes[1..]).map(Order::from),
        Some(&v) => Err(CodecError::Version(v)),
        None => Err(CodecError::Empty),
    }
}

/// The e-mail outbox's rows are written in format 2: a *group*, the
/// e-mails one batch queued in one block of seqs (see
/// `store::tx::emails`); format 1 rows, one e-mail each, were written by
/// the builds before groups and still read, as a group of one.
pub const EMAIL_GROUP_FORMAT: u8 = 2;

pub fn encode_email_group(group: &[EmailEvent]) -> Vec<u8> {
    let mut out = encode(&group);
    out[0] = EMAIL_GROUP_FORMAT;
    out
}

pub fn decode_email_group(bytes: &[u8]) -> Result<Vec<EmailEvent>, CodecError> {
    match bytes.first() {
        Some(&EMAIL_GROUP_FORMAT) => decode_body(&bytes[1..]),
        Some(&FORMAT_VERSION) => decode_body::<EmailEvent>(&bytes[1..]).map(|e| vec![e]),
        Some(&v) => Err(CodecError::Version(v)),
        None => Err(CodecError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{KeyRecord, KeyState};

    #[test]
    fn records_round_trip() {
        let k = KeyRecord {
            product_id: "p".into(),
            state: KeyState::Held {
                order_no: "F1".into(),
            },
            sealed: vec![1, 2, 3],
            imported_at_ms: 42,
        };
        assert_eq!(decode::<KeyRecord>(&encode(&k)).unwrap(), k);
    }

    #[test]
    fn foreign_versions_torn_values_and_trailing_bytes_are_refused() {
        let k = KeyRecord {
            product_id: "p".into(),
            state: KeyState::Available,
            sealed: vec![9; 10],
            imported_at_ms: 1,
        };
        let mut bytes = encode(&k);
        assert!(decode::<KeyRecord>(&[]).is_err());
        assert!(decode::<KeyRecord>(&bytes[..bytes.len() - 3]).is_err());
        bytes.push(0);
        assert!(matches!(
            decode::<KeyRecord>(&bytes),
            Err(CodecError::Trailing(1))
        ));
        bytes[0] = 9;
        assert!(matches!(
            decode::<KeyRecord>(&bytes),
            Err(CodecError::Version(9))
        ));
    }

    /// The bytes an earlier build wrote for a product (format 1), kept
    /// verbatim so a change to today's types cannot quietly fix the test.
    fn product_v1_bytes() -> Vec<u8> {
        #[derive(Serialize)]
        struct Old<'a>(
            &'a str,
            &'a str,
            &'a str,
            u64,
            u32,
            u32,
            bool,
            i64,
            i64,
            KeyCounts,
        );
        let counts = KeyCounts {
            available: 3,
            held: 1,
            sold: 2,
            imported: 6,
            deleted: 0,
        };
        let mut out = vec![1];
        let old = Old(
            "steam-10", "Steam 10", "desc", 6900, 1, 10, true, 5, 7, counts,
        );
        out.extend(bincode::serde::encode_to_vec(old, config()).unwrap());
        out
    }

    #[test]
    fn products_stored_by_format_1_still_read_with_default_presentation() {
        let bytes = product_v1_bytes();
        assert_eq!(bytes[0], 1);
        let p = decode_product(&bytes).unwrap();
        assert_eq!((p.id.as_str(), p.name.as_str()), ("steam-10", "Steam 10"));
        assert_eq!((p.price, p.min_quantity, p.max_quantity), (6900, 1, 10));
        assert_eq!((p.created_at_ms, p.updated_at_ms, p.counts.sold), (5, 7, 2));
        assert_eq!(p.presentation, Presentation::default());
        // Written back, it is format 2 and keeps everything.
        let again = encode_product(&p);
        assert_eq!(again[0], PRODUCT_FORMAT);
        assert_eq!(decode_product(&again).unwrap(), p);
    }

    #[test]
    fn products_round_trip_with_presentation_and_refuse_other_formats() {
        let mut p = decode_product(&product_v1_bytes()).unwrap();
        p.presentation = Presentation {
            category: Some("游戏".into()),
            sort: -3,
            image_url: Some("/img/a.png".into()),
            instructions: Some("Redeem at store".into()),
            low_stock: 5,
            tiers: vec![crate::domain::model::Tier {
                min_quantity: 10,
                price: 6500,
            }],
        };
        let mut bytes = encode_product(&p);
        assert_eq!(decode_product(&bytes).unwrap(), p);
        assert!(decode_product(&[]).is_err());
        assert!(decode_product(&bytes[..bytes.len() - 1]).is_err());
        bytes[0] = 9;
        assert!(matches!(
            decode_product(&bytes),
            Err(CodecError::Version(9))
        ));
    }

    #[test]
    fn orders_stored_by_format_1_still_read_priced_at_their_amount() {
        let mut o = Order::pending_for_test("F1", "b@example.com", "1.2.3.4", 99);
        o.quantity = 3;
        o.amount = 2100;
        // Format 1 is today's order without the format-2 fields at the end:
        // the old bytes are today's minus the encoding of those fields.
        let tail = bincode::serde::encode_to_vec(
            (
                &o.pricing,
                &o.pay_type,
                &o.query_password_phc,
                &o.pay_session,
            ),
            config(),
        )
        .unwrap();
        let now = encode_order(&o);
        let mut v1 = vec![FORMAT_VERSION];
        v1.extend_from_slice(&now[1..now.len() - tail.len()]);
        let back = decode_order(&v1).unwrap();
        assert_eq!(back.pricing, Pricing::plain(700, 3));
        assert_eq!(back.amount, 2100);
        assert_eq!((back.pay_type, back.query_password_phc), (None, None));
        assert_eq!(back.events, o.events);
    }

    #[test]
    fn orders_round_trip_in_format_2_and_refuse_other_formats() {
        let mut o = Order::pending_for_test("F2", "b@example.com", "1.2.3.4", 99);
        o.pricing = Pricing {
            unit_price: 500,
            subtotal: 1500,
            discount: 150,
            coupon: Some("Spring10".into()),
        };
        o.pay_type = Some("wxpay".into());
        o.query_password_phc = Some("$argon2id$v=19$…".into());
        o.pay_session = Some(crate::domain::model::PaySession {
            provider_ref: "cs_1".into(),
            url: "https://checkout.example/cs_1".into(),
            created_at_ms: 5,
        });
        let mut bytes = encode_order(&o);
        assert_eq!(bytes[0], ORDER_FORMAT);
        assert_eq!(decode_order(&bytes).unwrap(), o);
        assert!(decode_order(&bytes[..bytes.len() - 1]).is_err());
        bytes[0] = 7;
        assert!(matches!(decode_order(&bytes), Err(CodecError::Version(7))));
    }
}
