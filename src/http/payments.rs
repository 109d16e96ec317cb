//! Gateway callbacks. Checks run in the contract's order — gateway enabled,
//! signature, order exists for this gateway, exact amount, success status —
//! and a failing check changes nothing. Success is answered only after the
//! payment's batch is durable.

use super::body::read_body;
use super::{HttpResult, State};
use crate::domain::ids::printable;
use crate::domain::ids::{Gateway, OrderNo};
use crate::domain::order::{PaymentSource, PaymentStep};
use crate::error::Error;
use crate::payments::stripe::Notice;
use crate::payments::{CallbackRequest, Headers, VerifiedPayment};
use crate::shop::{self, Payment, PaymentApplied};
use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};

/// What a gateway sees of a callback's headers.
impl Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Validates a gateway's trade number.
pub fn trade_no(raw: &str) -> Result<String, Error> {
    if raw.is_empty() || raw.len() > 128 || raw.chars().any(char::is_control) {
        return Err(Error::invalid(
            "trade_no",
            "must be 1 to 128 printable characters",
        ));
    }
    Ok(raw.to_string())
}

/// Applies a verified callback of `gateway` through the shared payment path.
pub async fn apply_verified(
    state: &State,
    gateway: Gateway,
    v: VerifiedPayment,
) -> Result<PaymentApplied, Error> {
    let order_no = OrderNo::parse(&v.order_no)?;
    let payment = Payment {
        order_no: order_no.as_str().to_string(),
        gateway,
        trade_no: trade_no(&v.trade_no)?,
        amount: Some(v.amount),
        source: PaymentSource::Callback,
        note: None,
    };
    if !v.succeeded {
        // Run the earlier checks for their errors, then refuse: only a
        // successful payment changes anything.
        let order = state
            .store
            .order(order_no.as_str())?
            .ok_or_else(|| Error::not_found(format!("order {order_no} not found")))?;
        shop::payment_matches(&order, &payment)?;
        return Err(Error::invalid(
            "status",
            "only successful payments are applied",
        ));
    }
    let applied = state
        .store
        .write(move |tx| shop::apply_payment(tx, payment))
        .await?;
    tracing::info!(order_no = %applied.order.order_no, gateway = gateway.as_str(),
        step = ?applied.step, status = applied.order.status.as_str(), "payment callback applied");
    Ok(applied)
}

/// The whole of a callback: gateway enabled, body, verification, the shared
/// payment path; counted in the metrics whatever the outcome.
async fn receive(
    state: &State,
    gateway: Gateway,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<PaymentApplied, Error> {
    let result = async {
        let body = read_body(req, payload, state.config.limits.body_kb * 1024).await?;
        verify_and_apply(state, gateway, req, &body).await
    }
    .await;
    settle(state, gateway, &result);
    result
}

/// Counts a callback's outcome and logs a refusal.
fn settle(state: &State, gateway: Gateway, result: &Result<PaymentApplied, Error>) {
    count(state, gateway, result);
    if let Err(e) = result {
        tracing::warn!(gateway = gateway.as_str(), code = e.code(), reason = %e, "payment callback refused");
    }
}

/// A callback's body through its gateway's verification and the shared
/// payment path, recording a verified callback that changed nothing.
async fn verify_and_apply(
    state: &State,
    gateway: Gateway,
    req: &HttpRequest,
    body: &[u8],
) -> Result<PaymentApplied, Error> {
    let gw = state.gateways.get(gateway).ok_or_else(|| {
        Error::InvalidSignature(format!("the {} gateway is not enabled", gateway.as_str()))
    })?;
    let verified = gw.verify(&callback(req, body))?;
    apply_and_audit(state, gateway, verified).await
}

/// A verified callback through the shared payment path; one that changed
/// nothing is recorded beside its order.
async fn apply_and_audit(
    state: &State,
    gateway: Gateway,
    verified: VerifiedPayment,
) -> Result<PaymentApplied, Error> {
    let result = apply_verified(state, gateway, verified.clone()).await;
    audit(state, gateway, &verified, &result);
    result
}

fn callback<'a>(req: &'a HttpRequest, body: &'a [u8]) -> CallbackRequest<'a> {
    CallbackRequest {
        headers: req.headers(),
        query: req.query_string(),
        body,
        now_secs: crate::store::now_ms() / 1000,
    }
}

/// Records a verified callback that changed nothing (a repeat, or a refusal
/// by a later check) beside its order, for the merchant's order detail. It
/// is written after the answer is decided and never changes it; callbacks
/// whose signature failed are not recorded (their order number is unproven).
fn audit(
    state: &State,
    gateway: Gateway,
    v: &VerifiedPayment,
    result: &Result<PaymentApplied, Error>,
) {
    let Ok(order_no) = OrderNo::parse(&v.order_no) else {
        return;
    };
    // Where the attempt stands among the order's events: it was decided
    // with these in place (a refusal changed nothing, so the order as it is
    // now, before this callback is answered, is what it was checked
    // against). The time alone cannot order it against an event of the
    // same millisecond.
    let (outcome, reason, seen) = match result {
        Ok(a) if a.step == PaymentStep::Repeat => ("repeated", None, a.order.events.len()),
        Ok(_) => return,
        Err(Error::Unavailable { .. } | Error::NotFound(_)) => return,
        Err(e) => match state.store.order(order_no.as_str()) {
            Ok(Some(o)) => ("refused", Some(e.code().to_string()), o.events.len()),
            _ => return,
        },
    };
    let seen = u32::try_from(seen).unwrap_or(u32::MAX);
    let attempt = crate::domain::model::PaymentAttempt {
        at_ms: crate::store::now_ms(),
        gateway: gateway.as_str().to_string(),
        trade_no: crate::domain::ids::printable(&v.trade_no, 128),
        amount: v.amount,
        result: outcome.to_string(),
        reason,
    };
    let store = state.store.clone();
    actix_web::rt::spawn(async move {
        let no = order_no.as_str().to_string();
        let r = store
            .write(move |tx| shop::record_callback_attempt(tx, &no, &attempt, seen))
            .await;
        match r {
            Ok(true) => {}
            Ok(false) => tracing::debug!(order_no = %order_no,
                "payment attempt not recorded: the order already has as many as are kept"),
            Err(e) => {
                tracing::warn!(order_no = %order_no, error = %e, "could not record a payment attempt")
            }
        }
    });
}

/// Counts a payment outcome in the metrics.
pub fn count(state: &State, gateway: Gateway, result: &Result<PaymentApplied, Error>) {
    match result {
        Ok(a) => {
            let step = match a.step {
                PaymentStep::Repeat => "repeated",
                PaymentStep::SecondPayment => "second_payment",
                PaymentStep::DeliverHeld | PaymentStep::ClaimOrAwait => "applied",
            };
            state.metrics.payment(gateway.as_str(), step, "");
        }
        Err(e) => state.metrics.payment(gateway.as_str(), "refused", e.code()),
    }
}

pub async fn hmac_notify(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let applied = receive(&state, Gateway::Hmac, &req, payload).await?;
    Ok(HttpResponse::Ok().json(crate::views::CallbackAck {
        ok: true,
        status: applied.order.status.as_str(),
    }))
}

/// epay notify (GET query or POST form). The answer is plain text: `success`
/// when applied or already applied, `fail` otherwise (with a 4xx/503 status).
pub async fn epay_notify(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    plain_answer(receive(&state, Gateway::Epay, &req, payload).await)
}

/// Alipay's asynchronous notify (POST form), answered as Alipay expects:
/// `success` stops its retries, anything else makes it try again later.
pub async fn alipay_notify(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    plain_answer(receive(&state, Gateway::Alipay, &req, payload).await)
}

/// `GET /api/v1/gateways`: the gateways a buyer may choose and their pay
/// types; `manual` only when the merchant made it public.
pub async fn list_gateways(state: State) -> HttpResponse {
    let manual = &state.config.payments.manual;
    let gateways = state
        .gateways
        .offered(manual.public)
        .into_iter()
        .map(|g| crate::views::GatewayView {
            id: g.as_str(),
            name: crate::views::gateway_name(g),
            pay_types: state.gateways.pay_types(g),
            instructions: (g == Gateway::Manual).then_some(manual.instructions.as_str()),
        })
        .collect();
    HttpResponse::Ok().json(crate::views::GatewayList { gateways })
}

/// The plain-text answer epay and Alipay expect: `success`, or `fail`
/// with the error's status.
fn plain_answer(result: Result<PaymentApplied, Error>) -> HttpResponse {
    match result {
        Ok(_) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("success"),
        Err(e) => {
            let mut res = HttpResponse::build(actix_web::ResponseError::status_code(&e));
            if let Some(secs) = e.retry_after() {
                res.insert_header(("Retry-After", secs.to_string()));
            }
            res.content_type("text/plain").body("fail")
        }
    }
}

/// WeChat Pay notify: `204` once applied or already applied; otherwise the
/// error's status with `{"code":"FAIL","message":…}`, which WeChat Pay
/// retries (a refusal changes nothing, so its retries change nothing either).
pub async fn wechat_notify(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    match receive(&state, Gateway::Wechat, &req, payload).await {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(e) => {
            let mut res = HttpResponse::build(actix_web::ResponseError::status_code(&e));
            if let Some(secs) = e.retry_after() {
                res.insert_header(("Retry-After", secs.to_string()));
            }
            res.json(serde_json::json!({"code": "FAIL", "message": e.to_string()}))
        }
    }
}

/// Stripe webhook: `200` once applied or already applied, and for the
/// events faka does not act on (after their signature: Stripe sends every
/// type the endpoint subscribes to); `400` for a bad signature or a
/// refused payment, with the contract's error body.
pub async fn stripe_notify(state: State, req: HttpRequest, payload: web::Payload) -> HttpResult {
    let result = async {
        let body = read_body(&req, payload, state.config.limits.body_kb * 1024).await?;
        let gw = state.gateways.stripe().ok_or_else(|| {
            Error::InvalidSignature("the stripe gateway is not enabled".into())
        })?;
        match gw.notice(&callback(&req, &body))? {
            Notice::Other(kind) => {
                tracing::debug!(event = %printable(&kind, 64), "stripe event acknowledged, not acted on");
                Ok(None)
            }
            Notice::Payment(verified) => apply_and_audit(&state, Gateway::Stripe, verified)
                .await
                .map(Some),
        }
    }
    .await;
    let outcome = match result {
        Ok(None) => "ignored",
        Ok(Some(applied)) => {
            settle(&state, Gateway::Stripe, &Ok(applied));
            "applied"
        }
        Err(e) => {
            settle(&state, Gateway::Stripe, &Err(e.clone()));
            return Err(e);
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "received": outcome })))
}
