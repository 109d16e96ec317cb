//! Stripe Checkout against a local fake of Stripe's API: `/pay` makes one
//! Checkout Session per order (even opened twenty times at once) and sends
//! the buyer to it; the signed webhook delivers; every forgery is refused
//! and changes nothing; a Stripe that does not answer costs that buyer a
//! quick 503 and nobody else anything.

use crate::helpers::*;
use crate::providers::{no_redirects, FakeProvider};
use faka::payments::stripe::sign;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET_KEY: &str = "sk_test_faka";
const WEBHOOK_SECRET: &str = "whsec_faka";

/// A fake Stripe that checks the secret key and makes numbered sessions,
/// each after `delay`.
fn fake_stripe(delay: Duration) -> FakeProvider {
    let made = AtomicUsize::new(0);
    FakeProvider::start(move |req| {
        if req.header("Authorization") != Some(&format!("Bearer {SECRET_KEY}")) {
            return (
                401,
                vec![],
                json!({"error": {"type": "invalid_request_error"}}).to_string(),
            );
        }
        if req.method != "POST" || req.path != "/v1/checkout/sessions" {
            return (404, vec![], "{}".into());
        }
        std::thread::sleep(delay);
        let n = made.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("cs_test_{n}");
        let url = format!("https://checkout.stripe.test/c/pay/{id}");
        (
            200,
            vec![],
            json!({"id": id, "object": "checkout.session", "url": url}).to_string(),
        )
    })
}

fn stripe_app(api_base: &str, timeout_ms: u64) -> TestApp {
    spawn_with(|dir| {
        config_text(
            dir,
            &format!(
                "[shop]\ncurrency = \"USD\"\n[payments.stripe]\nsecret_key = \"{SECRET_KEY}\"\n\
                 webhook_secret = \"{WEBHOOK_SECRET}\"\napi_base = \"{api_base}\"\ntimeout_ms = {timeout_ms}\n"
            ),
        )
    })
}

/// A webhook event for a Checkout Session of `order_no`.
fn completed(order_no: &str, amount: u64, currency: &str, status: &str) -> String {
    json!({
        "id": "evt_1",
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": format!("cs_test_for_{order_no}"),
            "object": "checkout.session",
            "client_reference_id": order_no,
            "amount_total": amount,
            "currency": currency,
            "payment_status": status,
        }},
    })
    .to_string()
}

fn webhook(app: &TestApp, body: &str, t: i64, secret: &str) -> (u16, Value) {
    let sig = hex::encode(sign(secret, t, body.as_bytes()));
    let r = app
        .client
        .post(app.url("/api/v1/payments/stripe/notify"))
        .header("Stripe-Signature", format!("t={t},v1={sig}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn path_of(pay_url: &str) -> String {
    pay_url
        .split_once("/pay/")
        .map(|(_, p)| format!("/pay/{p}"))
        .unwrap()
}

fn open_pay(app: &TestApp, pay_url: &str) -> reqwest::blocking::Response {
    no_redirects()
        .get(app.url(&path_of(pay_url)))
        .header("Accept", "text/html")
        .send()
        .unwrap()
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

#[test]
fn a_stripe_order_pays_through_one_checkout_session() {
    let fake = fake_stripe(Duration::ZERO);
    let app = stripe_app(&fake.base, 5000);
    app.product_with_keys("card", 1380, 2);
    let o = app.order_ok("card", 1, "stripe");
    let (no, token) = (
        o["order_no"].as_str().unwrap(),
        o["token"].as_str().unwrap(),
    );
    let pay_url = o["pay_url"].as_str().unwrap();
    assert!(
        pay_url.ends_with(&format!("/pay/{no}?token={token}")),
        "{pay_url}"
    );
    assert!(
        fake.seen().is_empty(),
        "creating the order does not call Stripe"
    );

    let r = open_pay(&app, pay_url);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "https://checkout.stripe.test/c/pay/cs_test_1");
    let again = open_pay(&app, pay_url);
    assert_eq!(
        location(&again),
        "https://checkout.stripe.test/c/pay/cs_test_1"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "the second visit reuses the session");
    // The merchant sees which session the order is paying through.
    let merchant = crate::web::signed_in_admin(&app);
    let admin_page = crate::web::page(&merchant, &app, &format!("/admin/orders/{no}"))
        .text()
        .unwrap();
    let line = admin_page
        .split("data-pay-session")
        .nth(1)
        .expect("a payment session line");
    assert!(
        line[..line.find("</p>").unwrap()].contains("cs_test_1"),
        "{line}"
    );
    assert_eq!(seen[0].header("Idempotency-Key"), Some(no));
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&seen[0].body).unwrap();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("mode"), Some("payment"));
    assert_eq!(field("client_reference_id"), Some(no));
    assert_eq!(
        field("line_items[0][price_data][unit_amount]"),
        Some("1380")
    );
    assert_eq!(field("line_items[0][price_data][currency]"), Some("usd"));
    assert_eq!(field("line_items[0][quantity]"), Some("1"));
    let back = format!("{}/orders/{no}?token={token}", "http://127.0.0.1:8080");
    assert_eq!(field("success_url"), Some(back.as_str()));
    // The session closes with the hold, within Stripe's 30 min – 24 h.
    let expires: i64 = field("expires_at").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 30 * 60..now + 24 * 3600).contains(&expires),
        "{expires} vs {now}"
    );

    let (status, body) = webhook(
        &app,
        &completed(no, 1380, "usd", "paid"),
        now_secs(),
        WEBHOOK_SECRET,
    );
    assert_eq!((status, &body["received"]), (200, &json!("applied")));
    let view: Value = app.buyer_view(no, token).json().unwrap();
    assert_eq!(view["status"], "delivered");
    let after = open_pay(&app, pay_url);
    assert_eq!(after.status(), 303);
    assert_eq!(location(&after), format!("/orders/{no}?token={token}"));
}

#[test]
fn forged_stripe_webhooks_are_refused_and_change_nothing() {
    let fake = fake_stripe(Duration::ZERO);
    let app = stripe_app(&fake.base, 5000);
    app.product_with_keys("card", 1380, 3);
    let o = app.order_ok("card", 1, "stripe");
    let no = o["order_no"].as_str().unwrap();
    let other = app.order_ok("card", 1, "hmac");
    let other_no = other["order_no"].as_str().unwrap();
    let now = now_secs();
    let before = app.dump();
    let good = completed(no, 1380, "usd", "paid");
    for (body, t, secret, want, why) in [
        (
            good.clone(),
            now,
            "whsec_other",
            400,
            "signed with another secret",
        ),
        (good.clone(), now - 301, WEBHOOK_SECRET, 400, "stale"),
        (
            good.clone(),
            now + 301,
            WEBHOOK_SECRET,
            400,
            "from the future",
        ),
        (
            completed(no, 1379, "usd", "paid"),
            now,
            WEBHOOK_SECRET,
            400,
            "tampered amount",
        ),
        (
            completed(no, 1380, "eur", "paid"),
            now,
            WEBHOOK_SECRET,
            422,
            "another currency",
        ),
        (
            completed(no, 1380, "usd", "unpaid"),
            now,
            WEBHOOK_SECRET,
            422,
            "not paid",
        ),
        (
            completed(other_no, 1380, "usd", "paid"),
            now,
            WEBHOOK_SECRET,
            400,
            "another gateway's order",
        ),
    ] {
        assert_eq!(webhook(&app, &body, t, secret).0, want, "{why}");
    }
    let tampered = app
        .client
        .post(app.url("/api/v1/payments/stripe/notify"))
        .header(
            "Stripe-Signature",
            format!(
                "t={now},v1={}",
                hex::encode(sign(WEBHOOK_SECRET, now, good.as_bytes()))
            ),
        )
        .body(good.replace("1380", "1"))
        .send()
        .unwrap();
    assert_eq!(error_code(tampered), (400, "invalid_signature".into()));
    let unsigned = app
        .client
        .post(app.url("/api/v1/payments/stripe/notify"))
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(error_code(unsigned), (400, "invalid_signature".into()));
    let ignored =
        r#"{"id":"evt_2","type":"payment_intent.created","data":{"object":{"id":"pi_1"}}}"#;
    assert_eq!(
        webhook(&app, ignored, now, WEBHOOK_SECRET),
        (200, json!({"received": "ignored"}))
    );
    assert_eq!(
        app.dump(),
        before,
        "no refused or ignored webhook changed anything"
    );

    assert_eq!(webhook(&app, &good, now, WEBHOOK_SECRET).0, 200);
    let paid = app.dump();
    assert_eq!(
        webhook(&app, &good, now, WEBHOOK_SECRET).0,
        200,
        "Stripe retries"
    );
    assert_eq!(app.dump(), paid, "the repeat changed nothing");
    let events = eventually(Duration::from_secs(10), || {
        let e = app.admin_order(no)["events"].as_array().unwrap().clone();
        (e.iter().any(|e| e["type"] == "payment_repeated")).then_some(e)
    });
    let mut notes: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "payment_refused")
        .map(|e| e["note"].as_str().unwrap())
        .collect();
    notes.sort_unstable();
    assert_eq!(
        notes,
        ["amount_mismatch", "invalid_request", "invalid_request"]
    );
    let other_events = app.admin_order(other_no)["events"].clone();
    assert!(
        other_events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["note"] == "gateway_mismatch"),
        "the refusal is recorded on the order it named: {other_events}"
    );
}

/// Twenty tabs opening `/pay` at once: Stripe is asked once, and all
/// twenty go to the same session.
#[test]
fn concurrent_opens_make_one_session() {
    let fake = fake_stripe(Duration::from_millis(300));
    let app = Arc::new(stripe_app(&fake.base, 5000));
    app.product_with_keys("card", 1380, 1);
    let o = app.order_ok("card", 1, "stripe");
    let pay_url = o["pay_url"].as_str().unwrap().to_string();
    let opens: Vec<_> = (0..20)
        .map(|_| {
            let (app, url) = (app.clone(), pay_url.clone());
            std::thread::spawn(move || {
                let r = open_pay(&app, &url);
                (r.status().as_u16(), location(&r))
            })
        })
        .collect();
    for open in opens {
        assert_eq!(
            open.join().unwrap(),
            (
                303,
                "https://checkout.stripe.test/c/pay/cs_test_1".to_string()
            )
        );
    }
    assert_eq!(fake.seen().len(), 1);
}

/// A Stripe that does not answer: the buyer gets 503 `unavailable` once
/// the gateway's timeout passes (an HTML page for a browser), nothing is
/// kept, and a later visit tries again.
#[test]
fn a_silent_stripe_answers_503_at_its_timeout() {
    let fake = fake_stripe(Duration::from_secs(5));
    let app = stripe_app(&fake.base, 300);
    app.product_with_keys("card", 1380, 1);
    let o = app.order_ok("card", 1, "stripe");
    let pay_url = o["pay_url"].as_str().unwrap();
    let started = Instant::now();
    let r = open_pay(&app, pay_url);
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r
        .text()
        .unwrap()
        .contains("data-error-code=\"unavailable\""));
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let json = no_redirects()
        .get(app.url(&path_of(pay_url)))
        .send()
        .unwrap();
    assert_eq!(error_code(json), (503, "unavailable".into()));
    let order = app.admin_order(o["order_no"].as_str().unwrap());
    assert_eq!(order["status"], "pending", "the order still holds its key");
}

/// Orders and payments (hmac) by 4 buyers at once, 50 each: how long they
/// take.
fn order_flow(app: &Arc<TestApp>) -> Duration {
    let started = Instant::now();
    let buyers: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let o = app.order_ok("flow", 1, "hmac");
                    let no = o["order_no"].as_str().unwrap();
                    assert_eq!(
                        app.hmac_notify(no, &format!("T-{no}-{i}"), 100).status(),
                        200
                    );
                }
            })
        })
        .collect();
    for b in buyers {
        b.join().unwrap();
    }
    started.elapsed()
}

/// A Stripe that never answers, opened over and over by twenty buyers,
/// beside the order flow of everyone else: measured, in alternating
/// pairs, and printed (docs/BENCHMARKS.md has the numbers). Each stuck
/// buyer gets 503.
#[test]
fn a_silent_provider_slows_no_other_order() {
    use std::sync::atomic::AtomicBool;
    let fake = fake_stripe(Duration::from_secs(3));
    let app = Arc::new(stripe_app(&fake.base, 1000));
    app.product_with_keys("card", 1380, 20);
    app.product_with_keys("flow", 100, 1300);
    let stuck: Vec<String> = (0..20)
        .map(|_| {
            app.order_ok("card", 1, "stripe")["pay_url"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let (mut quiet, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        quiet.push(order_flow(&app));
        let stop = Arc::new(AtomicBool::new(false));
        let asked = fake.seen().len();
        let openers: Vec<_> = stuck
            .iter()
            .map(|url| {
                let (app, url, stop) = (app.clone(), url.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (client, path) = (no_redirects(), path_of(&url));
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let r = client.get(app.url(&path)).send().unwrap();
                        answers.push(r.status().as_u16());
                    }
                    answers
                })
            })
            .collect();
        // Every opener is waiting on the silent Stripe before the flow runs.
        eventually(Duration::from_secs(10), || {
            (fake.seen().len() >= asked + 20).then_some(())
        });
        busy.push(order_flow(&app));
        stop.store(true, Ordering::SeqCst);
        for o in openers {
            let answers = o.join().unwrap();
            assert!(answers.iter().all(|&s| s == 503), "{answers:?}");
        }
    }
    let ms = |d: &[Duration]| d.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    eprintln!(
        "200 orders+payments by 4 buyers, ms: quiet {:?}, beside 20 buyers stuck on a silent provider {:?}",
        ms(&quiet),
        ms(&busy)
    );
}

/// Twenty tabs opening `/pay` at once while Stripe is silent: one call,
/// and every tab gets its 503 when that call times out, not one timeout
/// after another.
#[test]
fn concurrent_opens_against_a_silent_stripe_share_one_timeout() {
    let fake = fake_stripe(Duration::from_secs(5));
    // Long enough that all twenty are waiting before the call gives up.
    let app = Arc::new(stripe_app(&fake.base, 1500));
    app.product_with_keys("card", 1380, 1);
    let pay_url = app.order_ok("card", 1, "stripe")["pay_url"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let opens: Vec<_> = (0..20)
        .map(|_| {
            let (app, url) = (app.clone(), pay_url.clone());
            std::thread::spawn(move || open_pay(&app, &url).status().as_u16())
        })
        .collect();
    for open in opens {
        assert_eq!(open.join().unwrap(), 503);
    }
    let took = started.elapsed();
    assert_eq!(fake.seen().len(), 1, "one call for all twenty");
    // One after another they would take 30 s.
    assert!(took < Duration::from_secs(8), "twenty answers in {took:?}");
}

/// The storefront offers Stripe, its order form goes on to `/pay`, and
/// `/pay` to Checkout; the pages allow that last hop in `form-action`.
#[test]
fn a_storefront_order_goes_on_to_stripe_checkout() {
    let fake = fake_stripe(Duration::ZERO);
    let app = stripe_app(&fake.base, 5000);
    app.product_with_keys("card", 1380, 1);
    let buyer = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = buyer
        .get(app.url("/products/card"))
        .header("Accept", "text/html")
        .send()
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("form-action 'self' https://checkout.stripe.com"),
        "{csp}"
    );
    let html = r.text().unwrap();
    assert!(html.contains("value=\"stripe\""), "Stripe is offered");
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let r = buyer
        .post(app.url("/checkout"))
        .form(&[
            ("csrf", csrf),
            ("product_id", "card"),
            ("quantity", "1"),
            ("email", "b@example.com"),
            ("gateway", "stripe"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let next = location(&r);
    assert!(
        next.contains("/pay/F") && next.contains("?token="),
        "{next}"
    );
    let r = open_pay(&app, &next);
    assert_eq!(location(&r), "https://checkout.stripe.test/c/pay/cs_test_1");
}
