//! The admin panel's dead e-mails: listed on the webhooks page beside the
//! dead webhooks, counted on the dashboard, and re-queued by a button that
//! runs the same `shop::requeue_email` command as
//! `POST /api/v1/admin/emails/{id}/retry`.

use super::admin::admin_form;
use super::admin_pages::tr;
use super::layout;
use super::{csrf, see_other, Ctx, Web};
use crate::domain::model::{DeliveryState, EmailEvent};
use crate::error::Error;
use crate::http::State;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

/// At most this many dead e-mails are listed (and counted: "100" reads as
/// "at least 100" on the dashboard).
pub const SHOWN: usize = 100;

/// The dead e-mails, oldest first.
pub fn dead(state: &State) -> Result<Vec<EmailEvent>, Error> {
    Ok(state
        .store
        .emails_page(Some(DeliveryState::Dead), SHOWN, None)?
        .0)
}

/// The webhooks page's e-mail section.
pub fn section(ctx: &Ctx, dead: &[EmailEvent]) -> Markup {
    html! {
        section.card #emails data-dead-emails {
            h1 { (tr(ctx, "发送失败的邮件", "Dead e-mails")) }
            @if dead.is_empty() { p { "—" } }
            ul { @for e in dead {
                li data-email-id=(e.id) {
                    code { (e.id) } " " (e.kind.as_str()) " "
                    @if let Some(no) = &e.order_no { a href={ "/admin/orders/" (no) } { (no) } " " }
                    small { (e.last_error.clone().unwrap_or_default()) }
                    form.inline method="post" action="/admin/emails" {
                        input type="hidden" name=(csrf::FIELD) value=(ctx.csrf.token);
                        input type="hidden" name="seq" value=(e.seq);
                        button type="submit" { (tr(ctx, "重试", "Retry")) }
                    }
                }
            } }
        }
    }
}

/// The retry button's post: the dead e-mail goes back to pending.
pub async fn retry(
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
    match state.store.email_event(seq) {
        Ok(Some(_)) => {}
        Ok(None) => return layout::not_found(&req, &state, &web),
        Err(e) => return layout::error(&req, &state, &web, &e),
    }
    let r = state
        .store
        .write(move |tx| crate::shop::requeue_email(tx, seq))
        .await;
    if let Err(e) = r {
        return layout::error(&req, &state, &web, &e);
    }
    state.store.email_rescan_from(seq);
    see_other("/admin/webhooks#emails")
}
