//! The admin panel's coupons page: the list with each coupon's use counts,
//! a form to create one, and a button to switch one on or off. Both go
//! through the JSON API's own checks (`http::coupons`) and the same `shop`
//! commands.

use super::admin::{admin_form, signed_in};
use super::admin_pages::{frame, number, tr};
use super::layout;
use super::{csrf, money, see_other, Ctx, Form, Web};
use crate::domain::pricing::{Coupon, CouponKind};
use crate::error::Error;
use crate::http::{coupons, State};
use crate::shop;
use crate::views::rfc3339;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

fn create_form(ctx: &Ctx) -> Markup {
    html! {
        form.card method="post" data-coupon-form {
            h2 { (tr(ctx, "新建优惠券", "New coupon")) }
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            input type="hidden" name="action" value="create";
            label { (tr(ctx, "优惠码", "Code")) input name="code" required maxlength="32" placeholder="SPRING-10"; }
            label { (tr(ctx, "类型", "Kind"))
                select name="kind" {
                    option value="percent" { (tr(ctx, "百分比", "Percent")) }
                    option value="fixed" { (tr(ctx, "固定金额（分）", "Fixed (minor units)")) }
                }
            }
            label { (tr(ctx, "数值", "Value")) input name="value" type="number" min="1" required; }
            label { (tr(ctx, "限定商品（ID，逗号分隔；空为全部）", "Products (ids, comma-separated; empty: all)")) input name="product_ids"; }
            label { (tr(ctx, "最低金额（分）", "Minimum amount (minor units)")) input name="min_amount" type="number" min="0"; }
            label { (tr(ctx, "总次数上限", "Total uses")) input name="max_uses" type="number" min="0"; }
            label { (tr(ctx, "每个邮箱上限", "Uses per e-mail")) input name="max_uses_per_email" type="number" min="0"; }
            label { (tr(ctx, "开始时间（RFC 3339）", "Starts (RFC 3339)")) input name="starts_at" placeholder="2026-12-01T00:00:00Z"; }
            label { (tr(ctx, "结束时间（RFC 3339）", "Expires (RFC 3339)")) input name="expires_at" placeholder="2026-12-31T23:59:59Z"; }
            button type="submit" { (tr(ctx, "创建", "Create")) }
        }
    }
}

fn value_text(c: &Coupon, currency: &str) -> String {
    match c.kind {
        CouponKind::Percent => format!("{}%", c.value),
        CouponKind::Fixed => money(c.value, currency),
    }
}

fn row(ctx: &Ctx, c: &Coupon, currency: &str) -> Markup {
    let cap = |n: Option<u64>| n.map_or("∞".to_string(), |n| n.to_string());
    html! {
        tr data-admin-coupon=(c.code) {
            td { code { (c.code) } @if !c.active { " " small.off { (tr(ctx, "已停用", "inactive")) } } }
            td { (value_text(c, currency)) }
            td { @if c.product_ids.is_empty() { (tr(ctx, "全部", "all")) } @else { (c.product_ids.join(", ")) } }
            td data-uses { (c.uses) " / " (c.held) " / " (cap(c.max_uses)) " · " (cap(c.max_uses_per_email)) }
            td { (c.starts_at_ms.map(rfc3339).unwrap_or_default()) " → " (c.expires_at_ms.map(rfc3339).unwrap_or_default()) }
            td {
                form.inline method="post" {
                    input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                    input type="hidden" name="action" value="toggle";
                    input type="hidden" name="code" value=(c.code);
                    input type="hidden" name="active" value=(if c.active { "0" } else { "1" });
                    button.link type="submit" data-toggle-coupon {
                        @if c.active { (tr(ctx, "停用", "Deactivate")) } @else { (tr(ctx, "启用", "Activate")) }
                    }
                }
            }
        }
    }
}

pub async fn coupons(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    if !signed_in(&req, &web) {
        return see_other("/admin/login");
    }
    let all = match state.store.coupons() {
        Ok(c) => c,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    let ctx = Ctx::new(&req, &state, &web);
    let cur = &state.config.shop.currency;
    let body = html! {
        (create_form(&ctx))
        table.card {
            thead { tr {
                th { (tr(&ctx, "优惠码", "Code")) }
                th { (tr(&ctx, "优惠", "Discount")) }
                th { (tr(&ctx, "商品", "Products")) }
                th { (tr(&ctx, "已用/占用/上限 · 每邮箱", "Used/held/max · per e-mail")) }
                th { (tr(&ctx, "有效期", "Valid")) }
                th {}
            } }
            tbody { @for c in &all { (row(&ctx, c, cur)) } }
        }
    };
    ctx.respond(
        StatusCode::OK,
        &web,
        frame(&ctx, tr(&ctx, "优惠券", "Coupons"), body),
    )
}

/// A new coupon from the form, through the API's checks.
fn new_coupon(form: &Form) -> Result<shop::NewCoupon, Error> {
    let product_ids = form.text("product_ids").map(|ids| {
        ids.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    coupons::new_coupon(coupons::CreateBody {
        code: form.text("code").unwrap_or_default(),
        kind: form.text("kind").unwrap_or_default(),
        value: number(form, "value")?.unwrap_or(0),
        product_ids,
        min_amount: number(form, "min_amount")?,
        max_uses: number(form, "max_uses")?,
        max_uses_per_email: number(form, "max_uses_per_email")?,
        starts_at: form.text("starts_at"),
        expires_at: form.text("expires_at"),
        active: Some(true),
    })
}

/// Create a coupon, or switch one on or off.
pub async fn coupon_action(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let form = match admin_form(&req, &state, &web, payload, 64 * 1024).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let done = async {
        if form.get("action") == Some("toggle") {
            let code = form.text("code").unwrap_or_default();
            let patch = shop::CouponPatch {
                active: Some(form.get("active") == Some("1")),
                ..Default::default()
            };
            state
                .store
                .write(move |tx| shop::update_coupon(tx, &code, patch))
                .await?;
        } else {
            let new = new_coupon(&form)?;
            state
                .store
                .write(move |tx| shop::create_coupon(tx, new))
                .await?;
        }
        Ok::<_, Error>(())
    };
    match done.await {
        Ok(()) => see_other("/admin/coupons"),
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}
