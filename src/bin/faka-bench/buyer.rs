//! The buyer's side of the shop, written once against `Http` so it runs
//! on either client: create an order (hmac; with an `Idempotency-Key`
//! under `--idempotency-keys`, with a coupon under `flow --coupon`), pay it with the gateway's signed callback,
//! GET it with its token and keys; the checks on what
//! came back (the right number of keys, distinct, from the product, none
//! delivered twice); and `Buyer`, one connection's record of complete
//! journeys, used by `flow`, `flash`, `mixed` and `scale`.

use crate::client::{Http, Req, Resp};
use crate::measure::{timed_call, Series, Wrong};
use crate::settings::Settings;
use crate::{PRICE, SECRET};
use anyhow::{anyhow, bail, Result};
use faka::payments::hmac::HmacGateway;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// An order as created: what its buyer keeps.
#[derive(Clone)]
pub struct Placed {
    pub order_no: String,
    token: String,
    pub quantity: u32,
    amount: u64,
}

/// What creating an order gave.
pub enum Created {
    Ok(Placed),
    OutOfStock,
    Failed,
}

/// The coupon `flow --coupon` puts on every order: 10 % off every product.
pub const COUPON: &str = "BENCH10";
pub const COUPON_PERCENT: u64 = 10;

/// What an order of `quantity` keys costs, with the bench's coupon or not.
fn expected_amount(quantity: u32, coupon: bool) -> u64 {
    let subtotal = PRICE * quantity as u64;
    if coupon {
        subtotal - subtotal * COUPON_PERCENT / 100
    } else {
        subtotal
    }
}

/// Creates an order for `quantity` keys of `product`; with
/// `idempotency_key`, it carries a key of its own, as a careful client's;
/// with `coupon`, the bench's [`COUPON`].
pub async fn create_order<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    product: &str,
    quantity: u32,
    (idempotency_key, coupon): (bool, bool),
) -> Created {
    // Every buyer has an e-mail of their own, as in a real shop: faka keeps
    // a pending-orders count per e-mail (and per IP), so one shared address
    // would make those rows look cheaper than they are.
    static BUYER: AtomicUsize = AtomicUsize::new(0);
    let email = format!("buyer{}@example.com", BUYER.fetch_add(1, Ordering::Relaxed));
    let mut body =
        json!({"product_id": product, "quantity": quantity, "email": email, "gateway": "hmac"});
    if coupon {
        body["coupon"] = json!(COUPON);
    }
    let mut headers = vec![("Content-Type", "application/json".into())];
    if idempotency_key {
        // The e-mail is new for every order, so the key is too.
        headers.push(("Idempotency-Key", format!("bench-{email}")));
    }
    let req = Req::post("/api/v1/orders", headers, body.to_string().into_bytes());
    let Some(r) = timed_call(s, conn, &req).await else {
        return Created::Failed;
    };
    if r.status == 409 && r.label() == "409 out_of_stock" {
        return Created::OutOfStock;
    }
    if !s.check(&r, 201) {
        return Created::Failed;
    }
    match parse_created(&r, product, quantity, coupon) {
        Ok(p) => Created::Ok(p),
        Err(e) => {
            wrong.add(format!("create: {e:#}"));
            Created::Failed
        }
    }
}

fn parse_created(r: &Resp, product: &str, quantity: u32, coupon: bool) -> Result<Placed> {
    let v = r.json()?;
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {k} in {v}"))
    };
    let p = Placed {
        order_no: text("order_no")?,
        token: text("token")?,
        quantity,
        amount: v["amount"].as_u64().unwrap_or(0),
    };
    if v["status"] != "pending" || v["product_id"] != product || v["quantity"] != quantity {
        bail!("unexpected order {v}");
    }
    if p.amount != expected_amount(quantity, coupon) {
        bail!(
            "amount {} for {quantity} × {PRICE} (coupon: {coupon})",
            p.amount
        );
    }
    Ok(p)
}

/// Sends the gateway's signed hmac callback; the order's status after it.
pub async fn pay<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    o: &Placed,
) -> Option<String> {
    let body = json!({"order_no": o.order_no, "trade_no": format!("T-{}", o.order_no),
        "amount": o.amount, "status": "paid"})
    .to_string();
    let ts = now_secs().to_string();
    let sig = HmacGateway::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let headers = vec![
        ("Content-Type", "application/json".into()),
        ("X-Faka-Timestamp", ts),
        ("X-Faka-Signature", sig),
    ];
    let req = Req::post("/api/v1/payments/hmac/notify", headers, body.into_bytes());
    let r = timed_call(s, conn, &req).await?;
    if !s.check(&r, 200) {
        return None;
    }
    match r.json() {
        Ok(v) if v["ok"] == true && v["status"].is_string() => {
            v["status"].as_str().map(str::to_string)
        }
        Ok(v) => {
            wrong.add(format!("pay {}: {v}", o.order_no));
            None
        }
        Err(e) => {
            wrong.add(format!("pay {}: {e:#}", o.order_no));
            None
        }
    }
}

/// GETs the order with its token: its status and, if delivered, its keys.
pub async fn fetch_order<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    o: &Placed,
) -> Option<(String, Vec<String>)> {
    let req = Req::get(format!("/api/v1/orders/{}?token={}", o.order_no, o.token));
    let r = timed_call(s, conn, &req).await?;
    if !s.check(&r, 200) {
        return None;
    }
    let v = match r.json() {
        Ok(v) => v,
        Err(e) => {
            wrong.add(format!("get {}: {e:#}", o.order_no));
            return None;
        }
    };
    let status = v["status"].as_str().unwrap_or("").to_string();
    let keys: Vec<String> = v["keys"]
        .as_array()
        .map(|ks| {
            ks.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if v["order_no"] != o.order_no.as_str() || (status == "delivered") != v.get("keys").is_some() {
        wrong.add(format!("get {}: {v}", o.order_no));
        return None;
    }
    Some((status, keys))
}

/// Checks a delivered order's keys: `quantity` of them, distinct, from `prefix`.
pub fn check_delivered(o: &Placed, keys: &[String], prefix: &str, wrong: &mut Wrong) -> bool {
    let distinct: HashSet<&String> = keys.iter().collect();
    let ours = keys.iter().all(|k| k.starts_with(prefix));
    if keys.len() != o.quantity as usize || distinct.len() != keys.len() || !ours {
        wrong.add(format!(
            "order {} of {} delivered keys {keys:?}",
            o.order_no, o.quantity
        ));
        return false;
    }
    true
}

/// Every key delivered at most once across orders.
pub fn check_unique<'a>(
    keys: impl Iterator<Item = &'a String>,
    failures: &mut Vec<String>,
) -> usize {
    let mut seen = HashSet::new();
    let mut twice = Vec::new();
    for k in keys {
        if !seen.insert(k) && twice.len() < 5 {
            twice.push(k.clone());
        }
    }
    if !twice.is_empty() {
        failures.push(format!("keys delivered twice: {twice:?}"));
    }
    seen.len()
}

/// One buyer thread's record of complete journeys.
#[derive(Default)]
pub struct Buyer {
    pub create: Series,
    pub pay: Series,
    pub get: Series,
    pub journey: Series,
    pub wrong: Wrong,
    pub delivered: Vec<(Placed, Vec<String>)>,
    pub out_of_stock: bool,
    n: u64,
    /// Whether its orders carry an `Idempotency-Key`.
    idempotency_keys: bool,
    /// Whether its orders carry the bench's [`COUPON`] (`flow --coupon`).
    coupon: bool,
}

impl Buyer {
    /// A buyer that orders as the run's settings say (`--idempotency-keys`);
    /// `Buyer::default()` is for the records merged from them.
    pub fn new(cfg: &Settings) -> Buyer {
        Buyer {
            idempotency_keys: cfg.idempotency_keys,
            ..Buyer::default()
        }
    }

    /// The same buyer with the bench's [`COUPON`] on every order.
    pub fn with_coupon(self, coupon: bool) -> Buyer {
        Buyer { coupon, ..self }
    }

    pub fn merge(&mut self, o: Buyer) {
        self.create.merge(o.create);
        self.pay.merge(o.pay);
        self.get.merge(o.get);
        self.journey.merge(o.journey);
        self.wrong.merge(o.wrong);
        self.delivered.extend(o.delivered);
        self.out_of_stock |= o.out_of_stock;
        self.n += o.n;
    }

    /// One journey: create → pay → GET with keys. False once stock ran out.
    /// Every fourth order is for two keys.
    pub async fn journey<H: Http>(&mut self, conn: &mut H, product: &str, prefix: &str) -> bool {
        let quantity = if (self.n + 1).is_multiple_of(4) { 2 } else { 1 };
        self.journey_of(conn, product, prefix, quantity).await
    }

    /// One journey for `quantity` keys.
    pub async fn journey_of<H: Http>(
        &mut self,
        conn: &mut H,
        product: &str,
        prefix: &str,
        quantity: u32,
    ) -> bool {
        self.n += 1;
        let t0 = Instant::now();
        let created = create_order(
            conn,
            &mut self.create,
            &mut self.wrong,
            product,
            quantity,
            (self.idempotency_keys, self.coupon),
        );
        let o = match created.await {
            Created::Ok(o) => o,
            Created::OutOfStock => {
                self.out_of_stock = true;
                return false;
            }
            Created::Failed => return true,
        };
        match pay(conn, &mut self.pay, &mut self.wrong, &o)
            .await
            .as_deref()
        {
            Some("delivered") => {}
            Some(other) => {
                self.wrong
                    .add(format!("payment of {} left it {other}", o.order_no));
                return true;
            }
            None => return true,
        }
        let Some((status, keys)) = fetch_order(conn, &mut self.get, &mut self.wrong, &o).await
        else {
            return true;
        };
        self.journey.record(t0);
        if status != "delivered" {
            self.wrong
                .add(format!("paid order {} shows {status}", o.order_no));
        } else if check_delivered(&o, &keys, prefix, &mut self.wrong) {
            self.delivered.push((o, keys));
        }
        true
    }
}

/// A failure for unexpected statuses of create / pay / get, if any.
pub fn flow_errors(series: &[&Series], failures: &mut Vec<String>) {
    let n: u64 = series.iter().map(|s| s.error_count()).sum();
    if n > 0 {
        let texts: Vec<String> = series.iter().map(|s| s.errors_text()).collect();
        failures.push(format!(
            "{n} unexpected status(es): create {} / pay {} / get {}",
            texts[0], texts[1], texts[2]
        ));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
