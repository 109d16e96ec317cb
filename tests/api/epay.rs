//! 易支付 (epay) callbacks by GET and POST, exact money, and the forgeries
//! that robbed earlier PHP shops.

use crate::helpers::*;
use faka::payments::epay::sign;
use serde_json::Value;

const PID: &str = "1001";
const KEY: &str = "89unJUB8HZ54Hj7x4nUj56HN4nUzUJ8i";

fn epay_app() -> TestApp {
    spawn_with(|dir| {
        config_text(
            dir,
            &format!("[payments.epay]\npid = \"{PID}\"\nkey = \"{KEY}\"\nsubmit_url = \"https://pay.example.com/submit.php\"\n"),
        )
    })
}

fn fields(no: &str, trade: &str, money: &str, status: &str) -> Vec<(String, String)> {
    [
        ("pid", PID),
        ("trade_no", trade),
        ("out_trade_no", no),
        ("type", "alipay"),
        ("name", "VIP会员"),
        ("money", money),
        ("trade_status", status),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn signed(mut f: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    let s = sign(&f, key);
    f.push(("sign".into(), s));
    f.push(("sign_type".into(), "MD5".into()));
    f
}

fn notify_get(app: &TestApp, f: &[(String, String)]) -> (u16, String) {
    let q = serde_urlencoded::to_string(f).unwrap();
    let r = app.get(&format!("/api/v1/payments/epay/notify?{q}"));
    (r.status().as_u16(), r.text().unwrap())
}

fn notify_post(app: &TestApp, f: &[(String, String)]) -> (u16, String) {
    let r = app
        .client
        .post(app.url("/api/v1/payments/epay/notify"))
        .form(f)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn an_epay_order_carries_a_signed_pay_url() {
    let app = epay_app();
    app.product_with_keys("vip", 13800, 2);
    let o = app.order_ok("vip", 1, "epay");
    let url = o["pay_url"].as_str().unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, "https://pay.example.com/submit.php");
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("pid"), PID);
    assert_eq!(get("out_trade_no"), o["order_no"].as_str().unwrap());
    assert_eq!(get("money"), "138.00");
    assert_eq!(get("sign_type"), "MD5");
    assert!(get("notify_url").ends_with("/api/v1/payments/epay/notify"));
    assert_eq!(
        get("return_url"),
        format!(
            "http://127.0.0.1:8080/orders/{}?token={}",
            o["order_no"].as_str().expect("order_no"),
            o["token"].as_str().expect("token")
        ),
        "the buyer comes back to the order page, which shows the keys"
    );
    assert!(!get("type").is_empty() && !get("name").is_empty());
    assert_eq!(get("sign"), sign(&params, KEY));
}

#[test]
fn a_signed_epay_notify_by_get_or_post_delivers() {
    let app = epay_app();
    app.product_with_keys("vip", 100, 4);
    for (i, post) in [false, true].into_iter().enumerate() {
        let o = app.order_ok("vip", 1, "epay");
        let no = o["order_no"].as_str().unwrap();
        let money = ["1.00", "1"][i];
        let f = signed(fields(no, &format!("EP-{i}"), money, "TRADE_SUCCESS"), KEY);
        let answer = if post {
            notify_post(&app, &f)
        } else {
            notify_get(&app, &f)
        };
        assert_eq!(answer, (200, "success".to_string()));
        let view: Value = app
            .buyer_view(no, o["token"].as_str().unwrap())
            .json()
            .unwrap();
        assert_eq!(view["status"], "delivered");
        // The gateway retries: same answer, nothing changes.
        let before = app.dump();
        let again = if post {
            notify_post(&app, &f)
        } else {
            notify_get(&app, &f)
        };
        assert_eq!(again, (200, "success".to_string()));
        assert_eq!(app.dump(), before);
    }
}

#[test]
fn forged_and_inexact_epay_callbacks_are_refused() {
    let app = epay_app();
    app.product_with_keys("vip", 100, 2);
    let o = app.order_ok("vip", 1, "epay");
    let hmac_order = app.order_ok("vip", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    let before = app.dump();
    let with_sign = |s: &str| {
        let mut f = fields(no, "EP-1", "1.00", "TRADE_SUCCESS");
        f.push(("sign".into(), s.into()));
        f
    };
    let mut wrong_pid = fields(no, "EP-1", "1.00", "TRADE_SUCCESS");
    wrong_pid[0].1 = "9999".into();
    let mut cases: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "wrong key",
            signed(fields(no, "EP-1", "1.00", "TRADE_SUCCESS"), "not-the-key"),
        ),
        ("no sign", fields(no, "EP-1", "1.00", "TRADE_SUCCESS")),
        ("sign true", with_sign("true")),
        (
            "sign 0e magic hash",
            with_sign("0e462097431906509019562988736854"),
        ),
        ("sign 0", with_sign("0")),
        ("empty sign", with_sign("")),
        ("wrong pid", signed(wrong_pid, KEY)),
        (
            "money short",
            signed(fields(no, "EP-1", "0.99", "TRADE_SUCCESS"), KEY),
        ),
        (
            "money three decimals",
            signed(fields(no, "EP-1", "1.001", "TRADE_SUCCESS"), KEY),
        ),
        (
            "money exponent",
            signed(fields(no, "EP-1", "1e2", "TRADE_SUCCESS"), KEY),
        ),
        (
            "money hex",
            signed(fields(no, "EP-1", "0x10", "TRADE_SUCCESS"), KEY),
        ),
        (
            "money negative",
            signed(fields(no, "EP-1", "-1", "TRADE_SUCCESS"), KEY),
        ),
        (
            "money space",
            signed(fields(no, "EP-1", " 1", "TRADE_SUCCESS"), KEY),
        ),
        (
            "not paid",
            signed(fields(no, "EP-1", "1.00", "WAIT_BUYER_PAY"), KEY),
        ),
        (
            "other gateway's order",
            signed(
                fields(
                    hmac_order["order_no"].as_str().unwrap(),
                    "EP-1",
                    "1.00",
                    "TRADE_SUCCESS",
                ),
                KEY,
            ),
        ),
        (
            "unknown order",
            signed(
                fields("F0000000000000000", "EP-1", "1.00", "TRADE_SUCCESS"),
                KEY,
            ),
        ),
    ];
    let mut tampered = signed(fields(no, "EP-1", "0.01", "TRADE_SUCCESS"), KEY);
    tampered[5].1 = "1.00".into();
    cases.push(("money changed after signing", tampered));
    for (what, f) in &cases {
        let (status, body) = notify_get(&app, f);
        assert_eq!(body, "fail", "{what}");
        assert!((400..500).contains(&status), "{what}: {status}");
        assert_eq!(notify_post(&app, f).1, "fail", "{what} (POST)");
    }
    // A JSON body with a boolean sign (PHP's `true == "abc"`) is not a form.
    let json = app
        .client
        .post(app.url("/api/v1/payments/epay/notify"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"pid":"{PID}","out_trade_no":"{no}","money":"1.00","trade_status":"TRADE_SUCCESS","trade_no":"X","sign":true}}"#))
        .send()
        .unwrap();
    assert_eq!(json.text().unwrap(), "fail");
    assert_eq!(app.dump(), before, "no refused callback changed anything");
}

#[test]
fn epay_callbacks_are_refused_when_the_gateway_is_disabled() {
    // A real epay order, then the merchant turns epay off (its key removed).
    let app = epay_app();
    app.product_with_keys("vip", 100, 1);
    let o = app.order_ok("vip", 1, "epay");
    let no = o["order_no"].as_str().unwrap().to_string();
    let dir = app.stop();
    let text = config_text(dir.path(), "");
    let app = start(dir, &text);
    assert_eq!(error_code(app.order("vip", 1, "epay")).0, 422);
    let before = app.dump();
    // A callback signed with the key the gateway had: refused all the same.
    let f = signed(fields(&no, "EP-1", "1.00", "TRADE_SUCCESS"), KEY);
    assert_eq!(notify_get(&app, &f).1, "fail");
    assert_eq!(notify_post(&app, &f).1, "fail");
    assert_eq!(app.dump(), before, "the refused callbacks changed nothing");
    assert_eq!(app.admin_order(&no)["status"], "pending");
}
