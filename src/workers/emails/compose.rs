//! What each e-mail says: subject, plain text and HTML, in the shop's
//! language, rendered at send time from the store (the order, its keys and
//! its product as they are then). Key text goes only into the message, never
//! into a log or an error.

use super::Context;
use crate::crypto::{ct_eq, sha256, ORDER_LINK_CONTEXT};
use crate::domain::model::{EmailEvent, EmailKind, EmailTo, Order, Product};
use crate::views;
use maud::{html, Markup};

/// A message ready for the envelope.
pub struct Composed {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// One paragraph of a message: plain lines, or a block kept as it is
/// (keys, instructions).
enum Part {
    Line(String),
    Block(String),
    Link(String),
}

fn zh(ctx: &Context) -> bool {
    ctx.shop.language != "en"
}

/// Renders `e`, or says why it cannot be (the reason is kept on the e-mail).
pub fn compose(ctx: &Context, e: &EmailEvent) -> Result<Composed, String> {
    let order = match &e.order_no {
        Some(no) => Some(
            ctx.store
                .order(no)
                .map_err(|err| format!("could not read the order: {}", err.code()))?
                .ok_or("the order is gone")?,
        ),
        None => None,
    };
    let product_id = e
        .product_id
        .as_deref()
        .or(order.as_ref().map(|o| o.product_id.as_str()));
    let product = match product_id {
        Some(id) => ctx.store.product(id).ok().flatten(),
        None => None,
    };
    let to = match e.to {
        EmailTo::Buyer => order.as_ref().map(|o| o.email.clone()),
        EmailTo::Merchant => ctx.cfg.merchant.clone(),
    }
    .ok_or("no recipient")?;
    let name = product.as_ref().map_or("", |p| p.name.as_str());
    let (subject, parts) = match (e.kind, e.to, order.as_ref()) {
        (EmailKind::OrderDelivered, _, Some(o)) => delivered(ctx, o, name, product.as_ref())?,
        (EmailKind::OrderAwaitingStock, EmailTo::Buyer, Some(o)) => awaiting_buyer(ctx, o, name),
        (EmailKind::OrderAwaitingStock, EmailTo::Merchant, Some(o)) => {
            awaiting_merchant(ctx, o, name)
        }
        (EmailKind::StockLow, _, _) => {
            stock_low(ctx, product.as_ref().ok_or("the product is gone")?)
        }
        (EmailKind::WebhookDead, _, _) => webhook_dead(ctx, e),
        _ => return Err("nothing to say".into()),
    };
    Ok(Composed {
        to,
        subject: format!("[{}] {subject}", ctx.shop.name),
        text: text(&parts),
        html: html_of(&ctx.shop.name, &parts).into_string(),
    })
}

/// The order page's link with the buyer's token: made again from the
/// order number, or, for an order from before derived tokens, the sealed
/// one its shop kept then; none when neither is the order's token.
fn order_link(ctx: &Context, o: &Order) -> Option<String> {
    let derived = ctx.tokens.token(&o.order_no);
    let token = if ct_eq(&sha256(derived.as_bytes()), &o.token_hash) {
        derived
    } else {
        let sealed = ctx.store.order_link(&o.order_no).ok()??;
        let token = ctx.crypto.open(&sealed, ORDER_LINK_CONTEXT).ok()?;
        String::from_utf8(token).ok()?
    };
    let base = ctx.public_url.trim_end_matches('/');
    Some(format!("{base}/orders/{}?token={token}", o.order_no))
}

type Message = (String, Vec<Part>);

fn delivered(
    ctx: &Context,
    o: &Order,
    name: &str,
    product: Option<&Product>,
) -> Result<Message, String> {
    let zh = zh(ctx);
    let no = &o.order_no;
    let mut parts = vec![Part::Line(if zh {
        format!("您的订单 {no} 已发货：{name} × {}", o.quantity)
    } else {
        format!("Your order {no} is delivered: {name} × {}", o.quantity)
    })];
    if ctx.cfg.send_keys {
        let keys = views::key_texts(&ctx.store, &ctx.crypto, o)
            .map_err(|err| format!("could not read the keys: {}", err.code()))?;
        parts.push(Part::Line(if zh { "卡密：" } else { "Your keys:" }.into()));
        parts.push(Part::Block(keys.join("\n")));
    } else {
        parts.push(Part::Line(
            if zh {
                "请打开订单页面查看卡密。"
            } else {
                "Open the order page to see your keys."
            }
            .into(),
        ));
    }
    if let Some(text) = product.and_then(|p| p.presentation.instructions.clone()) {
        parts.push(Part::Line(
            if zh {
                "使用说明："
            } else {
                "Instructions:"
            }
            .into(),
        ));
        parts.push(Part::Block(text));
    }
    if let Some(link) = order_link(ctx, o) {
        parts.push(Part::Link(link));
    }
    let subject = if zh {
        format!("订单 {no} 已发货")
    } else {
        format!("Order {no} delivered")
    };
    Ok((subject, parts))
}

fn awaiting_buyer(ctx: &Context, o: &Order, name: &str) -> Message {
    let no = &o.order_no;
    let (subject, line) = if zh(ctx) {
        (
            format!("订单 {no} 已付款，等待补货"),
            format!("您的订单 {no}（{name} × {}）已付款，正在等待补货；到货后自动发货，届时会再发邮件给您。", o.quantity),
        )
    } else {
        (
            format!("Order {no} paid, waiting for stock"),
            format!("Your order {no} ({name} × {}) is paid and waits for stock; it is delivered automatically when keys arrive, and you will get another e-mail then.", o.quantity),
        )
    };
    let mut parts = vec![Part::Line(line)];
    if let Some(link) = order_link(ctx, o) {
        parts.push(Part::Link(link));
    }
    (subject, parts)
}

fn awaiting_merchant(ctx: &Context, o: &Order, name: &str) -> Message {
    let no = &o.order_no;
    if zh(ctx) {
        (
            format!("已付款订单 {no} 等待「{name}」的卡密"),
            vec![Part::Line(format!(
                "订单 {no} 已付款，但「{name}」库存不足（需要 {} 个）。导入卡密后将自动发货。",
                o.quantity
            ))],
        )
    } else {
        (
            format!("Paid order {no} waits for keys of {name}"),
            vec![Part::Line(format!("Order {no} is paid but {name} is out of stock ({} needed). Import keys and it is delivered automatically.", o.quantity))],
        )
    }
}

fn stock_low(ctx: &Context, p: &Product) -> Message {
    let (left, at) = (p.counts.available, p.presentation.low_stock);
    if zh(ctx) {
        (
            format!("「{}」库存不足", p.name),
            vec![Part::Line(format!(
                "商品「{}」（{}）的可用卡密已低于 {at}：剩余 {left}。",
                p.name, p.id
            ))],
        )
    } else {
        (
            format!("{} is low on stock", p.name),
            vec![Part::Line(format!(
                "Product {} ({}) fell below {at} available keys: {left} left.",
                p.name, p.id
            ))],
        )
    }
}

fn webhook_dead(ctx: &Context, e: &EmailEvent) -> Message {
    let id = e.detail.as_deref().unwrap_or("");
    let no = e.order_no.as_deref().unwrap_or("");
    if zh(ctx) {
        (
            format!("Webhook 事件 {id} 投递失败"),
            vec![Part::Line(format!("订单 {no} 的 webhook 事件 {id} 已放弃重试。可在管理后台重试：POST /api/v1/admin/webhooks/{id}/retry"))],
        )
    } else {
        (
            format!("Webhook event {id} gave up"),
            vec![Part::Line(format!("Webhook event {id} of order {no} could not be delivered and was given up. Retry it from the admin: POST /api/v1/admin/webhooks/{id}/retry"))],
        )
    }
}

fn text(parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        let (Part::Line(s) | Part::Block(s) | Part::Link(s)) = p;
        out.push_str(s);
        out.push_str("\n\n");
    }
    out
}

fn html_of(shop: &str, parts: &[Part]) -> Markup {
    html! {
        (maud::DOCTYPE)
        html {
            head { meta charset="utf-8"; title { (shop) } }
            body {
                @for p in parts {
                    @match p {
                        Part::Line(s) => p { (s) },
                        Part::Block(s) => pre style="white-space:pre-wrap" { (s) },
                        Part::Link(s) => p { a href=(s) { (s) } },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmailConfig, ShopConfig};
    use crate::crypto::{Crypto, OrderTokens};
    use crate::store::{Store, StoreOptions};
    use std::sync::Arc;

    fn context(store: &Store) -> Context {
        let crypto = Crypto::from_master(&[3; 32]);
        Context {
            store: store.clone(),
            tokens: OrderTokens::new(&crypto, &[9; 32]),
            crypto: Arc::new(crypto),
            cfg: EmailConfig::default(),
            shop: ShopConfig::default(),
            public_url: "https://shop.example.com/".into(),
            metrics: crate::ops::metrics::Metrics::new(store).emails.clone(),
        }
    }

    fn order_with_token(no: &str, token: &str) -> Order {
        let mut o = Order::pending_for_test(no, "b@example.com", "1.2.3.4", 0);
        o.token_hash = sha256(token.as_bytes());
        o
    }

    /// The link carries the order's own token: made again for an order of
    /// today, the sealed one for an order from before derived tokens, and
    /// no link when neither is the order's token.
    #[test]
    fn the_order_link_carries_the_buyers_own_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::for_test(dir.path())).unwrap();
        let ctx = context(&store);

        let derived = ctx.tokens.token("FK1");
        assert_eq!(
            order_link(&ctx, &order_with_token("FK1", &derived)).as_deref(),
            Some(format!("https://shop.example.com/orders/FK1?token={derived}").as_str())
        );

        let sealed = ctx
            .crypto
            .seal(b"an-older-random-token", ORDER_LINK_CONTEXT);
        store
            .write_blocking(move |tx| {
                tx.put_order_link("FK2", sealed);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            order_link(&ctx, &order_with_token("FK2", "an-older-random-token")).as_deref(),
            Some("https://shop.example.com/orders/FK2?token=an-older-random-token")
        );

        assert_eq!(
            order_link(&ctx, &order_with_token("FK3", "not-derived")),
            None
        );
        store.close();
    }
}
