//! Alipay (RSA2) through HTTP, with two key pairs made here: one stands for
//! Alipay's (it signs notifies), one for the shop's (it signs pay
//! requests). Also the buyer's choice of gateway and pay type: `GET
//! /api/v1/gateways`, `pay_type` on orders, epay's `pay_types`.

use crate::helpers::*;
use faka::payments::alipay::{rsa2_sign, rsa2_verify, sign_content};
use reqwest::blocking::Response;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

const APP_ID: &str = "2021000000000001";
const EPAY_KEY: &str = "epay-test-key";
const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";

/// [0] stands for Alipay's key pair, [1] for the shop's; made once.
fn keys() -> &'static [RsaPrivateKey; 2] {
    static KEYS: OnceLock<[RsaPrivateKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        let mut make = || RsaPrivateKey::new(&mut rng, 2048).expect("key pair");
        [make(), make()]
    })
}

/// `[payments.alipay]` with its key files written into `dir`: Alipay's
/// public key as the console gives it (SubjectPublicKeyInfo), the shop's
/// private key as PKCS#1 (what Alipay's tool writes for non-Java use).
fn alipay_section(dir: &Path) -> String {
    let public = dir.join("alipay_public.pem");
    let private = dir.join("app_private.pem");
    let spki = keys()[0].to_public_key().to_public_key_pem(LineEnding::LF);
    std::fs::write(&public, spki.unwrap()).unwrap();
    let pkcs1 = keys()[1].to_pkcs1_pem(LineEnding::LF).unwrap();
    std::fs::write(&private, pkcs1.as_bytes()).unwrap();
    format!(
        "[payments.alipay]\napp_id = \"{APP_ID}\"\nprivate_key_file = \"{}\"\nalipay_public_key_file = \"{}\"\n",
        private.display(),
        public.display()
    )
}

fn epay_section(types: &str) -> String {
    format!("[payments.epay]\npid = \"1001\"\nkey = \"{EPAY_KEY}\"\nsubmit_url = \"https://pay.example.com/submit.php\"\n{types}")
}

fn alipay_app() -> TestApp {
    alipay_app_with("")
}

/// Alipay and epay, with `epay_types` in epay's section.
fn alipay_app_with(epay_types: &str) -> TestApp {
    spawn_with(|dir| {
        let extra = alipay_section(dir) + &epay_section(epay_types);
        config_text(dir, &extra)
    })
}

/// A notify as Alipay posts it for order `no`.
fn fields(no: &str, trade: &str, amount: &str, status: &str) -> Vec<(String, String)> {
    [
        ("gmt_create", "2024-01-01 12:00:00"),
        ("charset", "utf-8"),
        ("gmt_payment", "2024-01-01 12:00:05"),
        ("notify_time", "2024-01-01 12:00:06"),
        ("subject", "vip x1"),
        ("buyer_id", "2088102116773037"),
        ("invoice_amount", amount),
        ("version", "1.0"),
        ("notify_id", "2024010100222120006012345678901234"),
        (
            "fund_bill_list",
            "[{\"amount\":\"1.00\",\"fundChannel\":\"ALIPAYACCOUNT\"}]",
        ),
        ("notify_type", "trade_status_sync"),
        ("out_trade_no", no),
        ("total_amount", amount),
        ("trade_status", status),
        ("trade_no", trade),
        ("auth_app_id", APP_ID),
        ("receipt_amount", amount),
        ("point_amount", "0.00"),
        ("app_id", APP_ID),
        ("buyer_pay_amount", amount),
        ("seller_id", "2088102119685838"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// `f` signed by `key` the way Alipay signs a notify.
fn signed(mut f: Vec<(String, String)>, key: &RsaPrivateKey) -> Vec<(String, String)> {
    let sign = rsa2_sign(key, &sign_content(&f, true)).unwrap();
    f.push(("sign".into(), sign));
    f.push(("sign_type".into(), "RSA2".into()));
    f
}

fn notify(app: &TestApp, f: &[(String, String)]) -> (u16, String) {
    let r = app
        .client
        .post(app.url("/api/v1/payments/alipay/notify"))
        .form(f)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn order_as(app: &TestApp, body: Value, user_agent: &str) -> Response {
    app.client
        .post(app.url("/api/v1/orders"))
        .header("User-Agent", user_agent)
        .json(&body)
        .send()
        .unwrap()
}

fn order_ok(app: &TestApp, gateway: &str, pay_type: Option<&str>, user_agent: &str) -> Value {
    let mut body =
        json!({"product_id": "vip", "quantity": 1, "email": "b@example.com", "gateway": gateway});
    if let Some(t) = pay_type {
        body["pay_type"] = json!(t);
    }
    let r = order_as(app, body, user_agent);
    assert_eq!(r.status(), 201);
    r.json().unwrap()
}

/// The pay URL's parameters, after checking its base.
fn pay_params(o: &Value, base: &str) -> Vec<(String, String)> {
    let url = o["pay_url"].as_str().expect("a pay_url");
    let (b, query) = url.split_once('?').unwrap();
    assert_eq!(b, base);
    serde_urlencoded::from_str(query).unwrap()
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} in the pay URL"))
}

fn status(app: &TestApp, o: &Value) -> String {
    let v: Value = app
        .buyer_view(
            o["order_no"].as_str().unwrap(),
            o["token"].as_str().unwrap(),
        )
        .json()
        .unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// The buyer goes to Alipay with a request the shop signed (Alipay checks
/// it with the shop's public key): the desktop cashier, or the phone's
/// by User-Agent or by `pay_type: "wap"`.
#[test]
fn an_alipay_order_carries_a_signed_pay_url_for_the_buyers_device() {
    let app = alipay_app();
    app.product_with_keys("vip", 13800, 4);
    let shop_public = keys()[1].to_public_key();
    for (pay_type, agent, method) in [
        (None, DESKTOP, "alipay.trade.page.pay"),
        (None, PHONE, "alipay.trade.wap.pay"),
        (Some("wap"), DESKTOP, "alipay.trade.wap.pay"),
        (Some("page"), PHONE, "alipay.trade.page.pay"),
    ] {
        let o = order_ok(&app, "alipay", pay_type, agent);
        let params = pay_params(&o, "https://openapi.alipay.com/gateway.do");
        let content = sign_content(&params, false);
        assert!(rsa2_verify(&shop_public, &content, get(&params, "sign")));
        assert_eq!(get(&params, "method"), method, "{pay_type:?} {agent}");
        assert_eq!(get(&params, "app_id"), APP_ID);
        assert_eq!(get(&params, "sign_type"), "RSA2");
        assert_eq!(
            get(&params, "notify_url"),
            "http://127.0.0.1:8080/api/v1/payments/alipay/notify"
        );
        let no = o["order_no"].as_str().unwrap();
        let token = o["token"].as_str().unwrap();
        assert_eq!(
            get(&params, "return_url"),
            format!("http://127.0.0.1:8080/orders/{no}?token={token}")
        );
        let biz: Value = serde_json::from_str(get(&params, "biz_content")).unwrap();
        assert_eq!(biz["out_trade_no"], no);
        assert_eq!(biz["total_amount"], "138.00");
        // Signed with another key, Alipay would refuse it.
        assert!(!rsa2_verify(
            &keys()[0].to_public_key(),
            &content,
            get(&params, "sign")
        ));
    }
}

#[test]
fn a_signed_alipay_notify_delivers_and_its_repeat_changes_nothing() {
    let app = alipay_app();
    app.product_with_keys("vip", 10000, 3);
    for (i, (amount, status_text)) in [("100.00", "TRADE_SUCCESS"), ("100.0", "TRADE_FINISHED")]
        .into_iter()
        .enumerate()
    {
        let o = order_ok(&app, "alipay", None, DESKTOP);
        let no = o["order_no"].as_str().unwrap();
        let f = signed(
            fields(no, &format!("2024-{i}"), amount, status_text),
            &keys()[0],
        );
        assert_eq!(notify(&app, &f), (200, "success".into()), "{amount}");
        assert_eq!(status(&app, &o), "delivered");
        let before = app.dump();
        assert_eq!(notify(&app, &f), (200, "success".into()), "Alipay retries");
        assert_eq!(app.dump(), before, "the repeat changed nothing");
    }
}

/// Every forgery and every inexact amount: answered `fail` with a 4xx,
/// and nothing changes.
#[test]
fn forged_and_inexact_alipay_notifies_are_refused_and_change_nothing() {
    let app = alipay_app();
    app.product_with_keys("vip", 10000, 4);
    let o = order_ok(&app, "alipay", None, DESKTOP);
    let no = o["order_no"].as_str().unwrap();
    let epay_order = order_ok(&app, "epay", None, DESKTOP);
    let hmac_order = order_ok(&app, "hmac", None, DESKTOP);
    let good = |amount: &str| fields(no, "2024-1", amount, "TRADE_SUCCESS");
    let by_alipay = |f| signed(f, &keys()[0]);
    let mut bad_sign = by_alipay(good("100.00"));
    let at = bad_sign.iter().position(|(k, _)| k == "sign").unwrap();
    bad_sign[at].1 = "AAAA".repeat(86) + "AA==";
    let mut tampered = by_alipay(good("0.01"));
    for (k, v) in tampered.iter_mut() {
        if k == "total_amount" {
            *v = "100.00".into();
        }
    }
    let mut other_app = good("100.00");
    for (k, v) in other_app.iter_mut() {
        if k == "app_id" {
            *v = "2021000000000002".into();
        }
    }
    let unsigned = good("100.00");
    let other = |order: &Value| {
        by_alipay(fields(
            order["order_no"].as_str().unwrap(),
            "2024-1",
            "100.00",
            "TRADE_SUCCESS",
        ))
    };
    let mut cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("bad signature", bad_sign),
        ("signed by another key", signed(good("100.00"), &keys()[1])),
        ("amount changed after signing", tampered),
        ("another app_id", by_alipay(other_app)),
        ("unsigned", unsigned),
        ("epay order", other(&epay_order)),
        ("hmac order", other(&hmac_order)),
        (
            "unknown order",
            other(&json!({"order_no": "F0000000000000000"})),
        ),
    ];
    for status_text in ["WAIT_BUYER_PAY", "TRADE_CLOSED"] {
        cases.push((
            status_text,
            by_alipay(fields(no, "2024-1", "100.00", status_text)),
        ));
    }
    for amount in [
        "0.01", "99.99", "100.01", "1e2", "-1", " 100.00", "100.000", "100.", "",
    ] {
        cases.push(("amount", by_alipay(good(amount))));
    }
    let before = app.dump();
    for (what, f) in &cases {
        let (code, body) = notify(&app, f);
        assert_eq!(body, "fail", "{what} {f:?}");
        assert!((400..500).contains(&code), "{what}: {code}");
    }
    let raw = app
        .client
        .post(app.url("/api/v1/payments/alipay/notify"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("sign=%ZZ&&=&total_amount")
        .send()
        .unwrap();
    assert_eq!(raw.text().unwrap(), "fail");
    assert_eq!(app.dump(), before, "no refused notify changed anything");
    assert_eq!(status(&app, &o), "pending");
    // A verified refusal is recorded on the order for the merchant.
    let events = eventually(std::time::Duration::from_secs(10), || {
        let v = app.admin_order(no);
        let e = v["events"].as_array().unwrap().clone();
        e.iter()
            .any(|e| e["type"] == "payment_refused" && e["note"] == "amount_mismatch")
            .then_some(e)
    });
    let refused = events
        .iter()
        .find(|e| e["note"] == "amount_mismatch")
        .unwrap();
    assert_eq!(refused["gateway"], "alipay");
}

/// A key file that is missing or not a key stops the start, naming the
/// file and never showing its text.
#[test]
fn a_bad_alipay_key_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let section = alipay_section(dir.path());
    let private = dir.path().join("app_private.pem");
    for (what, text) in [
        (
            "garbage",
            Some("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"),
        ),
        ("missing", None),
    ] {
        match text {
            Some(t) => std::fs::write(&private, t).unwrap(),
            None => std::fs::remove_file(&private).unwrap(),
        }
        let text = config_text(dir.path(), &section);
        let cfg = faka::config::Config::from_toml(&text, "t", Path::new(""), Vec::new()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = actix_web::rt::System::new().block_on(async move {
            faka::startup::Application::build_with_listener(cfg, listener)
                .err()
                .expect("the start fails")
                .to_string()
        });
        assert!(
            err.contains(&private.display().to_string()),
            "{what}: {err}"
        );
        assert!(!err.contains("c2VjcmV0"), "{what}: {err}");
    }
    // The PKCS#8 form Alipay's tool writes for Java loads as well.
    let pkcs8 = keys()[1].to_pkcs8_pem(LineEnding::LF).unwrap();
    std::fs::write(&private, pkcs8.as_bytes()).unwrap();
    let text = config_text(dir.path(), &section);
    let app = start(dir, &text);
    assert_eq!(app.get("/api/v1/gateways").status(), 200);
}

fn gateways(app: &TestApp) -> Value {
    let r = app.get("/api/v1/gateways");
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

#[test]
fn the_gateway_list_shows_what_a_buyer_may_choose() {
    // The test shop: hmac only; manual is not public.
    let app = spawn();
    assert_eq!(
        gateways(&app),
        json!({"gateways": [{"id": "hmac", "name": "Online payment", "pay_types": []}]})
    );
    drop(app);
    let app = spawn_with(|dir| {
        let extra = alipay_section(dir)
            + &epay_section(
                "pay_type = \"wxpay\"\npay_types = [\"alipay\", \"wxpay\", \"qqpay\"]\n",
            )
            + "[payments.manual]\npublic = true\ninstructions = \"Pay to 6222\"\n";
        config_text(dir, &extra)
    });
    assert_eq!(
        gateways(&app),
        json!({"gateways": [
            {"id": "epay", "name": "易支付 (epay)", "pay_types": ["wxpay", "alipay", "qqpay"]},
            {"id": "hmac", "name": "Online payment", "pay_types": []},
            {"id": "alipay", "name": "支付宝 (Alipay)", "pay_types": ["page", "wap"]},
            {"id": "manual", "name": "Manual payment", "pay_types": [], "instructions": "Pay to 6222"},
        ]})
    );
    drop(app);
    // The old single key: one channel.
    let app = spawn_with(|dir| config_text(dir, &epay_section("pay_type = \"qqpay\"\n")));
    assert_eq!(gateways(&app)["gateways"][0]["pay_types"], json!(["qqpay"]));
}

/// A pay type is one of the gateway's, or the order is refused (422) and
/// nothing changes; epay's goes into the pay URL's signed `type`.
#[test]
fn pay_types_are_checked_and_reach_the_epay_pay_url_signed() {
    let app = alipay_app_with("pay_types = [\"alipay\", \"wxpay\"]\n");
    app.product_with_keys("vip", 100, 4);
    let before = app.dump();
    for (gateway, pay_type) in [
        ("epay", "qqpay"),
        ("epay", "ALIPAY"),
        ("epay", ""),
        ("alipay", "wxpay"),
        ("hmac", "alipay"),
        ("manual", "wap"),
    ] {
        let body = json!({"product_id": "vip", "quantity": 1, "email": "b@example.com",
                          "gateway": gateway, "pay_type": pay_type});
        let (code, error) = error_code(order_as(&app, body, DESKTOP));
        assert_eq!(
            (code, error.as_str()),
            (422, "invalid_request"),
            "{gateway} {pay_type}"
        );
    }
    crate::errors::assert_unchanged(&app, &before, "refused pay types");
    for (pay_type, expected) in [(Some("wxpay"), "wxpay"), (None, "alipay")] {
        let o = order_ok(&app, "epay", pay_type, DESKTOP);
        let params = pay_params(&o, "https://pay.example.com/submit.php");
        assert_eq!(get(&params, "type"), expected);
        assert_eq!(
            get(&params, "sign"),
            faka::payments::epay::sign(&params, EPAY_KEY)
        );
    }
}

/// The storefront offers each epay channel and Alipay; the chosen channel
/// is the one the buyer is sent to pay with.
#[test]
fn the_product_page_offers_the_gateways_and_uses_the_chosen_pay_type() {
    let app = alipay_app_with("pay_types = [\"alipay\", \"wxpay\"]\n");
    app.product_with_keys("vip", 100, 2);
    let c = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = c.get(app.url("/products/vip?lang=en")).send().unwrap();
    // The form may be redirected to either gateway's page; the browser
    // allows only the origins the policy names.
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self' https://pay.example.com https://openapi.alipay.com;"),
        "{csp}"
    );
    let html = page.text().unwrap();
    for value in ["epay:alipay", "epay:wxpay", "alipay", "hmac"] {
        assert!(
            html.contains(&format!("value=\"{value}\"")),
            "{value}: {html}"
        );
    }
    assert!(html.contains("WeChat Pay (epay)"), "{html}");
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let checkout = |choice: &str| {
        let r = c
            .post(app.url("/checkout"))
            .header("User-Agent", PHONE)
            .form(&[
                ("csrf", csrf),
                ("product_id", "vip"),
                ("quantity", "1"),
                ("email", "b@example.com"),
                ("gateway", choice),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{choice}");
        r.headers()["location"].to_str().unwrap().to_string()
    };
    let to = checkout("epay:wxpay");
    assert!(
        to.starts_with("https://pay.example.com/submit.php?"),
        "{to}"
    );
    assert!(to.contains("type=wxpay"), "{to}");
    let to = checkout("alipay");
    assert!(
        to.contains("method=alipay.trade.wap.pay"),
        "a phone's buyer: {to}"
    );
}

/// What a notify's signature vouches for: the checked content and the
/// signature itself.
fn signed_part(body: &[u8]) -> Option<(String, String)> {
    let p: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let sign = p.iter().find(|(k, _)| k == "sign")?.1.clone();
    Some((sign_content(&p, true), sign))
}

/// Whatever body reaches the notify URL (bytes, form-like text, a real
/// notify with one field broken), under any content type, the answer is
/// `fail` with a 4xx, never a server error, and nothing changes.
#[test]
fn the_notify_never_answers_a_server_error_whatever_the_body() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let app = alipay_app();
    app.product_with_keys("vip", 10000, 1);
    let o = order_ok(&app, "alipay", None, DESKTOP);
    let no = o["order_no"].as_str().unwrap().to_string();
    let real = serde_urlencoded::to_string(signed(
        fields(&no, "2024-1", "100.00", "TRADE_SUCCESS"),
        &keys()[0],
    ))
    .unwrap();
    let genuine = signed_part(real.as_bytes());
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "([a-z_]{1,14}=[^&]{0,16}&){0,12}".prop_map(String::into_bytes),
        // The real notify with a stretch of it replaced by anything, unless
        // that leaves it genuine: the same signed content and signature
        // spelled differently (`sign_type` dropped, an empty field added),
        // which Alipay's SDK accepts too.
        (0..real.len(), 0..40usize, "\\PC{0,20}")
            .prop_map(move |(at, len, with)| {
                let mut b = real.as_bytes().to_vec();
                let end = (at + len).min(b.len());
                b.splice(at..end, with.into_bytes());
                b
            })
            .prop_filter("still genuine", move |b| signed_part(b) != genuine),
    ];
    let types = prop_oneof![
        Just("application/x-www-form-urlencoded"),
        Just("application/x-www-form-urlencoded; charset=GBK"),
        Just("application/json"),
        Just("text/plain"),
    ];
    let before = app.dump();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(bodies, types), |(body, content_type)| {
            let r = app
                .client
                .post(app.url("/api/v1/payments/alipay/notify"))
                .header("Content-Type", content_type)
                .body(body.clone())
                .send()
                .unwrap();
            let code = r.status().as_u16();
            let text = r.text().unwrap();
            prop_assert!((400..500).contains(&code), "{code} for {body:?}");
            prop_assert_eq!(text, "fail");
            Ok(())
        })
        .unwrap();
    assert_eq!(app.dump(), before, "no body changed anything");
    assert_eq!(status(&app, &o), "pending");
}

/// The pay type is part of what an `Idempotency-Key` repeat must match:
/// the same request gets the first answer, another pay type is a conflict.
/// The repeat's pay URL is made afresh (the kept answer is made on the
/// writer thread, where an RSA signature would hold up every write): the
/// same for epay, newly signed for Alipay.
#[test]
fn an_idempotent_repeat_must_name_the_same_pay_type() {
    let app = alipay_app_with("pay_types = [\"alipay\", \"wxpay\"]\n");
    app.product_with_keys("vip", 100, 2);
    let send = |key: &str, gateway: &str, pay_type: &str| {
        app.client
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", key)
            .json(
                &json!({"product_id": "vip", "quantity": 1, "email": "b@example.com",
                          "gateway": gateway, "pay_type": pay_type}),
            )
            .send()
            .unwrap()
    };
    let first: Value = send("k-1", "epay", "wxpay").json().unwrap();
    let again: Value = send("k-1", "epay", "wxpay").json().unwrap();
    assert_eq!(again, first);
    assert!(first["pay_url"].as_str().unwrap().contains("type=wxpay"));
    assert_eq!(
        error_code(send("k-1", "epay", "alipay")),
        (409, "conflict".into())
    );
    let first: Value = send("k-2", "alipay", "wap").json().unwrap();
    let again: Value = send("k-2", "alipay", "wap").json().unwrap();
    assert_eq!(again["order_no"], first["order_no"]);
    assert_eq!(again["token"], first["token"]);
    for answer in [&first, &again] {
        let params = pay_params(answer, "https://openapi.alipay.com/gateway.do");
        let content = sign_content(&params, false);
        assert!(rsa2_verify(
            &keys()[1].to_public_key(),
            &content,
            get(&params, "sign")
        ));
        assert_eq!(get(&params, "method"), "alipay.trade.wap.pay");
    }
}
