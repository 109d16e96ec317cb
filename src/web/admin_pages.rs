//! The admin panel's pages and forms. Reads are the store's typed reads;
//! every change is the same `shop` command (through the same checks) the
//! JSON admin API runs: `http::products::new_product`/`product_patch`,
//! `shop::key_parse::check` and `ops::upload`, `shop::delete_keys`,
//! `shop::apply_payment` (补单), `shop::refund_order`,
//! `shop::requeue_webhook`, and `ops::backup`.

use super::admin::{admin_form, signed_in};
use super::layout::{self, page};
use super::{csrf, money, query, see_other, Ctx, Form, Lang, Web};
use crate::domain::ids::{Gateway, OrderNo, ProductId};
use crate::domain::model::{DeliveryState, Order, Product};
use crate::domain::order::{OrderStatus, PaymentSource};
use crate::error::Error;
use crate::http::{products, State};
use crate::shop::{self, Payment};
use crate::store::OrderFilter;
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

pub(super) fn tr(ctx: &Ctx, zh: &'static str, en: &'static str) -> &'static str {
    if ctx.lang == Lang::Zh {
        zh
    } else {
        en
    }
}

/// The admin frame: navigation and the sign-out button.
pub(super) fn frame(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let nav = html! {
        nav.admin {
            a href="/admin" { (tr(ctx, "概览", "Dashboard")) }
            a href="/admin/products" { (tr(ctx, "商品", "Products")) }
            a href="/admin/orders" { (tr(ctx, "订单", "Orders")) }
            a href="/admin/webhooks" { (tr(ctx, "回调与邮件", "Webhooks & e-mails")) }
            a href="/admin/coupons" { (tr(ctx, "优惠券", "Coupons")) }
            form.inline method="post" action="/admin/logout" {
                input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                button.link type="submit" data-sign-out { (tr(ctx, "退出", "Sign out")) }
            }
        }
        (body)
    };
    page(ctx, title, nav)
}

macro_rules! guard {
    ($req:expr, $web:expr) => {
        if !signed_in(&$req, &$web) {
            return see_other("/admin/login");
        }
    };
}

macro_rules! tried {
    ($e:expr, $req:expr, $state:expr, $web:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return layout::error(&$req, &$state, &$web, &e),
        }
    };
}

/// Sales since `since_ms`: (paid orders, their amount). Orders come newest
/// first, so the walk stops at the first older than a week.
fn sales(state: &State, now: i64) -> Result<[(u64, u64); 2], Error> {
    let day_start = now - now.rem_euclid(86_400_000);
    let week_start = now - 7 * 86_400_000;
    let mut out = [(0u64, 0u64); 2];
    let mut cursor: Option<OrderNo> = None;
    'pages: for _ in 0..100 {
        let page = state
            .store
            .orders_page(&OrderFilter::default(), 500, cursor.as_ref())?;
        for o in &page.orders {
            if o.created_at_ms < week_start - 86_400_000 {
                break 'pages;
            }
            let Some(paid) = o.paid_at_ms.filter(|_| o.status != OrderStatus::Refunded) else {
                continue;
            };
            for (i, since) in [day_start, week_start].into_iter().enumerate() {
                if paid >= since {
                    out[i].0 += 1;
                    out[i].1 += o.amount;
                }
            }
        }
        match page.next_cursor.and_then(|c| OrderNo::parse(&c).ok()) {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}

pub async fn dashboard(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let st = state.clone();
    let sold = tried!(
        crate::http::off_worker(move || sales(&st, crate::store::now_ms())).await,
        req,
        state,
        web
    );
    let all = tried!(state.store.products(), req, state, web);
    let low: Vec<&Product> = all
        .iter()
        .filter(|p| p.presentation.low_stock > 0 && p.counts.available < p.presentation.low_stock)
        .collect();
    let counts = state.store.order_counts();
    let (_, dead) = state.store.outbox_counts();
    let dead_emails = tried!(super::admin_emails::dead(&state), req, state, web).len();
    let ctx = Ctx::new(&req, &state, &web);
    let cur = &state.config.shop.currency;
    let body = html! {
        section.stats data-dashboard {
            div.card { h2 { (tr(&ctx, "今日销售", "Sales today")) } p.big data-sales-today { (money(sold[0].1, cur)) } small { (sold[0].0) " " (tr(&ctx, "单", "orders")) } }
            div.card { h2 { (tr(&ctx, "近 7 天", "Last 7 days")) } p.big { (money(sold[1].1, cur)) } small { (sold[1].0) " " (tr(&ctx, "单", "orders")) } }
            div.card { h2 { (tr(&ctx, "失败的回调", "Dead webhooks")) } p.big { a href="/admin/webhooks" { (dead) } } }
            div.card { h2 { (tr(&ctx, "发送失败的邮件", "Dead e-mails")) } p.big data-dead-emails { a href="/admin/webhooks#emails" { (dead_emails) } } }
        }
        section.card {
            h2 { (tr(&ctx, "订单状态", "Orders by status")) }
            ul.counts {
                @for s in OrderStatus::ALL {
                    li { a href={ "/admin/orders?status=" (s.as_str()) } { (ctx.t().status(s.as_str())) } " " b { (counts[s.index()]) } }
                }
            }
        }
        section.card {
            h2 { (tr(&ctx, "库存不足", "Low stock")) }
            @if low.is_empty() { p { "—" } }
            ul { @for p in &low {
                li { a href={ "/admin/products/" (p.id) "/keys" } { (p.name) } " " (p.counts.available) " / " (p.presentation.low_stock) }
            } }
        }
    };
    ctx.respond(
        StatusCode::OK,
        &web,
        frame(&ctx, tr(&ctx, "概览", "Dashboard"), body),
    )
}

fn product_form(ctx: &Ctx, p: Option<&Product>) -> Markup {
    let v = |f: fn(&Product) -> String| p.map(f).unwrap_or_default();
    html! {
        form.card.product-form method="post" action="/admin/products" {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            @if let Some(p) = p {
                input type="hidden" name="id" value=(p.id);
                input type="hidden" name="edit" value="1";
                h3 { (p.id) }
            } @else {
                h3 { (tr(ctx, "新商品", "New product")) }
                label { "ID" input name="id" pattern="[a-z0-9][a-z0-9_-]{0,63}"; }
            }
            label { (tr(ctx, "名称", "Name")) input name="name" required value=(v(|p| p.name.clone())); }
            label { (tr(ctx, "价格（分）", "Price (minor units)")) input name="price" type="number" min="1" required value=(v(|p| p.price.to_string())); }
            label { (tr(ctx, "分类", "Category")) input name="category" value=(v(|p| p.presentation.category.clone().unwrap_or_default())); }
            label { (tr(ctx, "排序", "Sort")) input name="sort" type="number" value=(v(|p| p.presentation.sort.to_string())); }
            label { (tr(ctx, "图片地址", "Image URL")) input name="image_url" value=(v(|p| p.presentation.image_url.clone().unwrap_or_default())); }
            label { (tr(ctx, "批发价（数量:价格，逗号分隔）", "Wholesale (quantity:price, comma-separated)")) input name="tiers" placeholder="10:900, 50:850" value=(v(|p| tiers_text(&p.presentation.tiers))); }
            label { (tr(ctx, "库存预警", "Low-stock alert")) input name="low_stock" type="number" min="0" value=(v(|p| p.presentation.low_stock.to_string())); }
            label { (tr(ctx, "描述（Markdown）", "Description (Markdown)")) textarea name="description" rows="4" { (v(|p| p.description.clone())) } }
            label { (tr(ctx, "使用说明", "Instructions")) textarea name="instructions" rows="3" { (v(|p| p.presentation.instructions.clone().unwrap_or_default())) } }
            label.choice { input type="checkbox" name="active" value="1" checked[p.is_none_or(|p| p.active)]; (tr(ctx, "上架", "Active")) }
            button type="submit" { (tr(ctx, "保存", "Save")) }
        }
    }
}

pub async fn products(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let all = tried!(state.store.products(), req, state, web);
    let ctx = Ctx::new(&req, &state, &web);
    let editing = query(&req, "edit");
    let cur = &state.config.shop.currency;
    let body = html! {
        @if let Some(p) = editing.as_ref().and_then(|id| all.iter().find(|p| &p.id == id)) {
            (product_form(&ctx, Some(p)))
        } @else {
            (product_form(&ctx, None))
        }
        table.card {
            thead { tr { th { "ID" } th { (tr(&ctx, "名称", "Name")) } th { (tr(&ctx, "价格", "Price")) } th { (tr(&ctx, "可售/锁定/已售", "Avail/held/sold")) } th {} } }
            tbody { @for p in &all {
                tr data-admin-product=(p.id) {
                    td { (p.id) @if !p.active { " " small.off { (tr(&ctx, "已下架", "inactive")) } } }
                    td { (p.name) }
                    td { (money(p.price, cur)) }
                    td { (p.counts.available) " / " (p.counts.held) " / " (p.counts.sold) }
                    td { a href={ "/admin/products?edit=" (p.id) } { (tr(&ctx, "编辑", "Edit")) } " · " a href={ "/admin/products/" (p.id) "/keys" } { (tr(&ctx, "卡密", "Keys")) } }
                }
            } }
        }
    };
    ctx.respond(
        StatusCode::OK,
        &web,
        frame(&ctx, tr(&ctx, "商品", "Products"), body),
    )
}

pub(super) fn number<T: std::str::FromStr>(form: &Form, field: &str) -> Result<Option<T>, Error> {
    form.text(field)
        .map(|v| {
            v.parse()
                .map_err(|_| Error::invalid(field, "must be a whole number"))
        })
        .transpose()
}

/// Tiers as the product form shows them: `10:900, 50:850`.
fn tiers_text(tiers: &[crate::domain::model::Tier]) -> String {
    tiers
        .iter()
        .map(|t| format!("{}:{}", t.min_quantity, t.price))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The form's tiers field (`quantity:price, …`; empty: none), for the
/// API's checks.
fn tiers_field(form: &Form) -> Result<Vec<products::TierBody>, Error> {
    let bad = || Error::invalid("tiers", "write each tier as quantity:price, e.g. 10:900");
    form.text("tiers")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (q, p) = t.split_once(':').ok_or_else(bad)?;
            Ok(products::TierBody {
                min_quantity: q.trim().parse().map_err(|_| bad())?,
                price: p.trim().parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// The product form: a new product, or an edit of every field it shows.
pub async fn save_product(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let form = match admin_form(
        &req,
        &state,
        &web,
        payload,
        state.config.limits.body_kb * 1024,
    )
    .await
    {
        Ok(f) => f,
        Err(res) => return res,
    };
    let saved = async {
        let active = Some(form.get("active").is_some());
        if form.get("edit").is_some() {
            let id = ProductId::parse(form.get("id").unwrap_or_default())?;
            let patch = products::product_patch(products::PatchBody {
                name: form.text("name"),
                description: Some(form.get("description").unwrap_or_default().to_string()),
                price: number(&form, "price")?,
                active,
                category: Some(form.text("category")),
                sort: Some(number(&form, "sort")?.unwrap_or(0)),
                image_url: Some(form.text("image_url")),
                instructions: Some(form.text("instructions")),
                low_stock: Some(number(&form, "low_stock")?.unwrap_or(0)),
                tiers: Some(tiers_field(&form)?),
                ..Default::default()
            })?;
            state
                .store
                .write(move |tx| shop::update_product(tx, id.as_str(), patch))
                .await
        } else {
            let new = products::new_product(products::CreateBody {
                id: form.text("id"),
                name: form.text("name").unwrap_or_default(),
                description: form.text("description"),
                price: number(&form, "price")?.unwrap_or(0),
                active,
                category: form.text("category"),
                sort: number(&form, "sort")?,
                image_url: form.text("image_url"),
                instructions: form.text("instructions"),
                low_stock: number(&form, "low_stock")?,
                tiers: Some(tiers_field(&form)?),
                ..Default::default()
            })?;
            state
                .store
                .write(move |tx| shop::create_product(tx, new))
                .await
        }
    };
    match saved.await {
        Ok(_) => see_other("/admin/products"),
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}

fn product_param(req: &HttpRequest) -> Result<ProductId, Error> {
    ProductId::parse(req.match_info().get("id").unwrap_or(""))
        .map_err(|_| Error::not_found("product not found"))
}

pub async fn keys(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let id = tried!(product_param(&req), req, state, web);
    let p = match tried!(state.store.product(id.as_str()), req, state, web) {
        Some(p) => p,
        None => return layout::not_found(&req, &state, &web),
    };
    let st = state.clone();
    let pid = p.id.clone();
    let listed = crate::http::off_worker(move || {
        let page = st.store.keys_page(&pid, Some("available"), 200, None)?;
        Ok(page
            .keys
            .into_iter()
            .map(|(id, rec)| {
                let masked = st
                    .crypto
                    .open(&rec.sealed, rec.product_id.as_bytes())
                    .map(|k| crate::crypto::mask_key(&String::from_utf8_lossy(&k)))
                    .unwrap_or_else(|_| "<sealed>".into());
                (id, masked)
            })
            .collect::<Vec<_>>())
    })
    .await;
    let listed = tried!(listed, req, state, web);
    let ctx = Ctx::new(&req, &state, &web);
    let body = html! {
        h1 { (p.name) " — " (tr(&ctx, "卡密", "Keys")) }
        p { (tr(&ctx, "可售", "Available")) " " b data-available { (p.counts.available) } " · " (tr(&ctx, "锁定", "held")) " " (p.counts.held) " · " (tr(&ctx, "已售", "sold")) " " (p.counts.sold) }
        form.card.upload method="post" action={ "/admin/products/" (p.id) "/keys/file" }
            enctype="multipart/form-data" data-key-upload {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            label { (tr(&ctx, "上传卡密文件（文本，每行一个）", "Upload a key file (text, one key per line)"))
                input type="file" name="file" accept=".txt,.csv,text/plain" required data-key-file;
            }
            progress hidden max="100" value="0" data-progress {}
            p.error hidden data-upload-error {}
            button type="submit" { (tr(&ctx, "上传", "Upload")) }
        }
        form.card method="post" {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            input type="hidden" name="action" value="import";
            label { (tr(&ctx, "或粘贴，每行一个卡密", "Or paste, one key per line"))
                textarea name="keys" rows="6" required {}
            }
            button type="submit" data-paste-import { (tr(&ctx, "导入", "Import")) }
        }
        form.card method="post" {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            input type="hidden" name="action" value="delete";
            table {
                thead { tr { th {} th { "ID" } th { (tr(&ctx, "卡密", "Key")) } } }
                tbody { @for (id, masked) in &listed {
                    tr { td { input type="checkbox" name="id" value=(id); } td { (id) } td { code { (masked) } } }
                } }
            }
            button type="submit" { (tr(&ctx, "删除所选", "Delete selected")) }
        }
    };
    ctx.respond(StatusCode::OK, &web, frame(&ctx, &p.name, body))
}

/// Import pasted keys, or delete chosen available ones.
pub async fn key_action(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let limit = state.config.limits.import_body_mb * 1024 * 1024;
    let form = match admin_form(&req, &state, &web, payload, limit).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let id = tried!(product_param(&req), req, state, web);
    let done = async {
        if form.get("action") == Some("delete") {
            let ids: Vec<u64> = form
                .0
                .iter()
                .filter(|(k, _)| k == "id")
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            let pid = id.as_str().to_string();
            state
                .store
                .write(move |tx| shop::delete_keys(tx, &pid, &ids))
                .await?;
        } else {
            let text = form.get("keys").unwrap_or_default().as_bytes().to_vec();
            super::key_file::import_text(&state, id.clone(), text).await?;
        }
        Ok::<_, Error>(())
    };
    match done.await {
        Ok(()) => see_other(&format!("/admin/products/{}/keys", id.as_str())),
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}

pub async fn orders(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let filter = OrderFilter {
        status: query(&req, "status").and_then(|s| OrderStatus::parse(&s)),
        email: query(&req, "email").filter(|e| !e.is_empty()),
    };
    let cursor = query(&req, "cursor").and_then(|c| OrderNo::parse(&c).ok());
    let st = state.clone();
    let f = filter.clone();
    let page_of =
        crate::http::off_worker(move || st.store.orders_page(&f, 50, cursor.as_ref())).await;
    let page_of = tried!(page_of, req, state, web);
    let ctx = Ctx::new(&req, &state, &web);
    let cur = &state.config.shop.currency;
    let body = html! {
        form.card.filters method="get" {
            select name="status" {
                option value="" { (tr(&ctx, "全部状态", "Any status")) }
                @for s in OrderStatus::ALL {
                    option value=(s.as_str()) selected[filter.status == Some(s)] { (ctx.t().status(s.as_str())) }
                }
            }
            input type="email" name="email" placeholder="email" value=(filter.email.clone().unwrap_or_default());
            button type="submit" { (tr(&ctx, "筛选", "Filter")) }
        }
        table.card {
            thead { tr { th { "#" } th { (tr(&ctx, "状态", "Status")) } th { (tr(&ctx, "金额", "Amount")) } th { "Email" } } }
            tbody { @for o in &page_of.orders {
                tr data-admin-order=(o.order_no) {
                    td { a href={ "/admin/orders/" (o.order_no) } { (o.order_no) } }
                    td { (ctx.t().status(o.status.as_str())) }
                    td { (money(o.amount, cur)) }
                    td { (o.email) }
                }
            } }
        }
        @if let Some(next) = &page_of.next_cursor {
            p { a href={ "/admin/orders?cursor=" (next) } { (tr(&ctx, "更早的订单 →", "Older →")) } }
        }
    };
    ctx.respond(
        StatusCode::OK,
        &web,
        frame(&ctx, tr(&ctx, "订单", "Orders"), body),
    )
}

fn order_param(req: &HttpRequest) -> Result<OrderNo, Error> {
    OrderNo::parse(req.match_info().get("order_no").unwrap_or(""))
        .map_err(|_| Error::not_found("order not found"))
}

pub async fn order(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let no = tried!(order_param(&req), req, state, web);
    let o: Order = match tried!(state.store.order(no.as_str()), req, state, web) {
        Some(o) => o,
        None => return layout::not_found(&req, &state, &web),
    };
    let ctx = Ctx::new(&req, &state, &web);
    let cur = &state.config.shop.currency;
    let can_pay = matches!(o.status, OrderStatus::Pending | OrderStatus::Expired);
    let can_refund = matches!(
        o.status,
        OrderStatus::Delivered | OrderStatus::AwaitingStock
    );
    let body = html! {
        section.card {
            h1 { (o.order_no) }
            p { span data-order-status { (o.status.as_str()) } " · " (money(o.amount, cur)) " · " (o.product_id) " × " (o.quantity) " · " (o.email) " · " (o.gateway) }
            p data-order-pricing {
                (tr(&ctx, "单价", "Unit price")) " " (money(o.pricing.unit_price, cur))
                " · " (tr(&ctx, "小计", "Subtotal")) " " (money(o.pricing.subtotal, cur))
                @if let Some(code) = &o.pricing.coupon {
                    " · " (tr(&ctx, "优惠券", "Coupon")) " " code { (code) } " −" (money(o.pricing.discount, cur))
                }
            }
            @if o.pay_type.is_some() || o.pay_session.is_some() {
                p data-pay-session {
                    @if let Some(t) = &o.pay_type { (tr(&ctx, "支付方式", "Pay type")) " " code { (t) } }
                    @if let Some(s) = &o.pay_session {
                        @if o.pay_type.is_some() { " · " }
                        (tr(&ctx, "支付会话", "Payment session")) " "
                        @if !s.provider_ref.is_empty() { code { (s.provider_ref) } " " }
                        time { (views::rfc3339(s.created_at_ms)) }
                    }
                }
            }
            @if can_pay {
                form.inline method="post" {
                    input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                    input type="hidden" name="action" value="pay";
                    input name="note" placeholder=(tr(&ctx, "备注（可选）", "Note (optional)")) maxlength="500";
                    button type="submit" data-manual-pay { (tr(&ctx, "补单（确认收款）", "Mark paid (补单)")) }
                }
            }
            @if can_refund {
                form.inline method="post" {
                    input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                    input type="hidden" name="action" value="refund";
                    button type="submit" data-refund { (tr(&ctx, "标记退款", "Mark refunded")) }
                }
            }
            h2 { (tr(&ctx, "事件", "Events")) }
            ol.events { @for e in &o.events {
                li { time { (views::rfc3339(e.at_ms)) } " " b { (e.kind.as_str()) }
                    @if let Some(g) = &e.gateway { " " (g) }
                    @if let Some(t) = &e.trade_no { " " code { (t) } }
                    @if let Some(a) = e.amount { " " (money(a, cur)) }
                    @if let Some(n) = &e.note { " — " (n) } }
            } }
        }
    };
    ctx.respond(StatusCode::OK, &web, frame(&ctx, &o.order_no, body))
}

/// 补单 or refund, as the admin API does them.
pub async fn order_action(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let form = match admin_form(&req, &state, &web, payload, 16 * 1024).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let no = tried!(order_param(&req), req, state, web);
    let note = form
        .text("note")
        .map(|n| n.chars().take(500).collect::<String>());
    let n = no.as_str().to_string();
    let result = if form.get("action") == Some("refund") {
        state
            .store
            .write(move |tx| shop::refund_order(tx, &n, note))
            .await
            .map(drop)
    } else {
        let payment = Payment {
            order_no: n.clone(),
            gateway: Gateway::Manual,
            trade_no: format!("manual-{n}"),
            amount: None,
            source: PaymentSource::Manual,
            note,
        };
        let r = state
            .store
            .write(move |tx| shop::apply_payment(tx, payment))
            .await;
        crate::http::payments::count(&state, Gateway::Manual, &r);
        r.map(drop)
    };
    match result {
        Ok(()) => see_other(&format!("/admin/orders/{}", no.as_str())),
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}

pub async fn webhooks(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    guard!(req, web);
    let (dead, _) = tried!(
        state
            .store
            .outbox_page(Some(DeliveryState::Dead), 100, None),
        req,
        state,
        web
    );
    let emails = tried!(super::admin_emails::dead(&state), req, state, web);
    let ctx = Ctx::new(&req, &state, &web);
    let body = html! {
        section.card {
            h1 { (tr(&ctx, "失败的回调", "Dead webhooks")) }
            @if dead.is_empty() { p { "—" } }
            ul { @for e in &dead {
                li {
                    code { (e.id) } " " (e.kind.webhook_type().unwrap_or("")) " " small { (e.last_error.clone().unwrap_or_default()) }
                    form.inline method="post" {
                        input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                        input type="hidden" name="seq" value=(e.seq);
                        button type="submit" { (tr(&ctx, "重试", "Retry")) }
                    }
                }
            } }
        }
        (super::admin_emails::section(&ctx, &emails))
        form.card method="post" action="/admin/backup" {
            input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
            button type="submit" data-backup { (tr(&ctx, "立即备份", "Back up now")) }
        }
    };
    ctx.respond(StatusCode::OK, &web, frame(&ctx, "Webhooks", body))
}

pub async fn webhook_retry(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    let form = match admin_form(&req, &state, &web, payload, 8 * 1024).await {
        Ok(f) => f,
        Err(res) => return res,
    };
    let Some(seq) = form.text("seq").and_then(|s| s.parse::<u64>().ok()) else {
        return layout::error(&req, &state, &web, &Error::invalid("seq", "is missing"));
    };
    let r = state
        .store
        .write(move |tx| crate::shop::requeue_webhook(tx, seq))
        .await;
    tried!(r, req, state, web);
    state.store.outbox_rescan_from(seq);
    see_other("/admin/webhooks")
}

pub async fn backup(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    if let Err(res) = admin_form(&req, &state, &web, payload, 8 * 1024).await {
        return res;
    }
    let written = tried!(
        crate::http::ops::write_backup(&state).await,
        req,
        state,
        web
    );
    let ctx = Ctx::new(&req, &state, &web);
    let body = html! {
        section.card {
            h1 { (tr(&ctx, "备份完成", "Backup written")) }
            p { code data-backup-path { (written.0) } " · " (written.1) " bytes" }
        }
    };
    ctx.respond(StatusCode::OK, &web, frame(&ctx, "Backup", body))
}
