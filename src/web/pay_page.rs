//! `GET /pay/{order_no}?token=…`: where `pay_url` points for gateways that
//! must call their provider to start a payment (wechat, stripe). The first
//! visit calls the provider on the blocking pool with the gateway's timeout
//! — never in the writer — and keeps the session on the order through a
//! writer command that keeps only the first; later visits reuse it. Opens
//! of one order are taken one at a time (`payments::PayStarts`), so twenty
//! buyers' tabs opening at once call the provider once. A provider that is
//! down or slow answers this buyer 503 and holds up nobody else: the HTTP
//! worker only awaits, and other orders take other turns.

use super::layout;
use super::shop_pages::render_order;
use super::{query, see_other, wants_html, Ctx, Web};
use crate::domain::model::{Order, PaySession};
use crate::domain::order::OrderStatus;
use crate::error::Error;
use crate::http::limits::Limit;
use crate::http::orders::{client_ip, order_with_token};
use crate::http::State;
use crate::payments::SessionKind;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped};
use std::time::Duration;

pub async fn pay(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    let fail = |e: &Error| {
        if wants_html(&req) {
            layout::error(&req, &state, &web, e)
        } else {
            e.error_response()
        }
    };
    let ip = client_ip(&req, &state.config.server.trusted_proxies);
    if let Err(e) = state
        .limits
        .take(Limit::Lookups, ip.as_deref().unwrap_or("unknown"))
    {
        return fail(&e);
    }
    let no = req.match_info().get("order_no").unwrap_or("");
    let token = query(&req, "token").unwrap_or_default();
    let order = match order_with_token(&state, no, &token) {
        Ok(Some(o)) => o,
        Ok(None) => {
            return fail(&Error::not_found(format!(
                "order {} not found",
                crate::domain::ids::printable(no, 40)
            )))
        }
        Err(e) => return fail(&e),
    };
    let order_page = || see_other(&format!("/orders/{}?token={token}", order.order_no));
    let Some(kind) = state.gateways.starter(&order).map(|s| s.kind()) else {
        return order_page();
    };
    if order.status != OrderStatus::Pending {
        return order_page();
    }
    let session = match session_of(&state, &order, &token).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match kind {
        SessionKind::Redirect => see_other(&session.url),
        SessionKind::QrCode => {
            let mut order = order;
            order.pay_session = Some(session);
            render_order(&req, &state, &web, &order, &token)
        }
    }
}

/// The order's payment session: the one kept, or a new one from the
/// provider, kept now. One start per order at a time.
async fn session_of(state: &State, order: &Order, token: &str) -> Result<PaySession, Error> {
    if let Some(s) = &order.pay_session {
        return Ok(s.clone());
    }
    let no = order.order_no.clone();
    state
        .gateways
        .starts
        .one_at_a_time(&no, async {
            // The turn before ours may have kept one.
            if let Some(s) = state.store.order(&no)?.and_then(|o| o.pay_session) {
                return Ok(s);
            }
            let session = call_provider(state, order, token).await?;
            let no = no.clone();
            state
                .store
                .write(move |tx| crate::shop::payments::keep_pay_session(tx, &no, session))
                .await
        })
        .await
}

/// The provider call, on the blocking pool, bounded by the gateway's
/// timeout (and a little more, should the client's own timer slip).
async fn call_provider(state: &State, order: &Order, token: &str) -> Result<PaySession, Error> {
    let limit = state
        .gateways
        .starter(order)
        .map(|s| s.timeout())
        .unwrap_or(Duration::from_secs(5));
    let title = state
        .store
        .product(&order.product_id)?
        .map(|p| p.name)
        .unwrap_or_else(|| order.product_id.clone());
    let (st, o, token) = (state.clone(), order.clone(), token.to_string());
    let call = web::block(move || match st.gateways.starter(&o) {
        Some(s) => s.start(&o, &token, &title),
        None => Err(Error::unavailable("the gateway is no longer enabled")),
    });
    let slow =
        || Error::unavailable("the payment provider is not answering; try again in a moment");
    match tokio::time::timeout(limit + Duration::from_secs(1), call).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(slow()),
    }
}

/// The QR code of a pending order whose gateway is paid by scanning (an
/// SVG drawn here: the pages load nothing from other hosts), with the
/// provider's link beside it for a buyer already on their phone.
pub fn qr_code(ctx: &Ctx, state: &State, order: &Order) -> Option<Markup> {
    let session = order.pay_session.as_ref()?;
    let kind = state.gateways.starter(order)?.kind();
    if order.status != OrderStatus::Pending || kind != SessionKind::QrCode {
        return None;
    }
    let svg = qr_svg(&session.url)?;
    Some(html! {
        div.qr.pay data-pay-qr {
            (PreEscaped(svg))
            p { (ctx.t().scan_to_pay) }
        }
    })
}

/// `text` as an inline SVG QR code, without the XML declaration.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The QR code is an inline SVG with dark modules, and nothing of it
    /// comes from elsewhere.
    #[test]
    fn a_code_url_becomes_an_inline_svg() {
        let svg = qr_svg("weixin://wxpay/bizpayurl?pr=abc123").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("<path"));
        assert!(!svg.contains("href"));
    }
}
