//! WeChat Pay (API v3, Native) against a local fake of its API that checks
//! each request's `WECHATPAY2-SHA256-RSA2048` signature with the merchant's
//! public key: `/pay` shows the `code_url` as a QR code; a notification
//! signed with the platform key and sealed with the APIv3 key delivers;
//! every forgery is refused with `{"code":"FAIL"}` and changes nothing.

use crate::helpers::*;
use crate::providers::{keys, private_pem, public_pem, FakeProvider, Seen};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use faka::payments::wechat::{notify_message, request_message};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

const MCHID: &str = "1900000109";
const APPID: &str = "wxd678efh567hg6787";
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const API_V3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const PLATFORM_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const CODE_URL: &str = "weixin://wxpay/bizpayurl?pr=p4lpSuKzz";

/// Whether a request carries a valid merchant signature: the header's
/// fields, and the signature over the message they name.
fn signed_by_merchant(req: &Seen) -> bool {
    let Some(auth) = req.header("Authorization") else {
        return false;
    };
    let Some(fields) = auth.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let field = |name: &str| {
        fields.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
    };
    let (Some(mchid), Some(nonce), Some(sig), Some(ts), Some(serial)) = (
        field("mchid"),
        field("nonce_str"),
        field("signature"),
        field("timestamp"),
        field("serial_no"),
    ) else {
        return false;
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return false;
    };
    let message = request_message(&req.method, &req.path, ts, &nonce, &req.body);
    let merchant = VerifyingKey::<Sha256>::new(keys()[0].to_public_key());
    let valid = B64
        .decode(sig)
        .ok()
        .and_then(|s| Signature::try_from(s.as_slice()).ok())
        .is_some_and(|s| merchant.verify(message.as_bytes(), &s).is_ok());
    valid && mchid == MCHID && serial == SERIAL && (ts - now_secs()).abs() < 300
}

/// A fake WeChat Pay that checks the merchant's signature and signs its
/// answers with `signer` (keys()[1] is the key the shop trusts).
fn fake_wechat(signer: &'static RsaPrivateKey) -> FakeProvider {
    FakeProvider::start(move |req| {
        if !signed_by_merchant(req) {
            let body = json!({"code": "SIGN_ERROR", "message": "签名错误"}).to_string();
            return (401, vec![], body);
        }
        if req.method != "POST" || req.path != "/v3/pay/transactions/native" {
            return (404, vec![], json!({"code": "NOT_FOUND"}).to_string());
        }
        let body = json!({"code_url": CODE_URL}).to_string();
        (200, signed_headers(&body, signer, now_secs()), body)
    })
}

/// The `Wechatpay-*` headers of `body` signed by `signer` at `at`.
fn signed_headers(body: &str, signer: &RsaPrivateKey, at: i64) -> Vec<(String, String)> {
    let (ts, nonce) = (at.to_string(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
    let sig = SigningKey::<Sha256>::new(signer.clone()).sign(&notify_message(
        &ts,
        nonce,
        body.as_bytes(),
    ));
    vec![
        ("Wechatpay-Timestamp".to_string(), ts),
        ("Wechatpay-Nonce".to_string(), nonce.to_string()),
        (
            "Wechatpay-Signature".to_string(),
            B64.encode(sig.to_bytes()),
        ),
        ("Wechatpay-Serial".to_string(), PLATFORM_KEY_ID.to_string()),
    ]
}

/// A shop whose merchant key is `merchant` (keys()[0] is the one the fake
/// knows) and which trusts keys()[1] as WeChat Pay's.
fn wechat_app(api_base: &str, merchant: &RsaPrivateKey) -> TestApp {
    spawn_with(|dir| {
        let private = dir.join("apiclient_key.pem");
        let public = dir.join("pub_key.pem");
        std::fs::write(&private, private_pem(merchant)).unwrap();
        std::fs::write(&public, public_pem(&keys()[1])).unwrap();
        config_text(
            dir,
            &format!(
                "[payments.wechat]\nmchid = \"{MCHID}\"\nappid = \"{APPID}\"\nserial_no = \"{SERIAL}\"\n\
                 private_key_file = \"{}\"\napi_v3_key = \"{API_V3_KEY}\"\n\
                 platform_public_key_file = \"{}\"\nplatform_key_id = \"{PLATFORM_KEY_ID}\"\n\
                 api_base = \"{api_base}\"\ntimeout_ms = 2000\n",
                private.display(),
                public.display()
            ),
        )
    })
}

fn transaction(no: &str, total: u64) -> Value {
    json!({
        "mchid": MCHID,
        "appid": APPID,
        "out_trade_no": no,
        "transaction_id": format!("42000{no}"),
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "success_time": "2026-12-07T12:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    })
}

/// A notification as WeChat Pay sends it: the transaction sealed with the
/// APIv3 key, the whole body signed by `signer` at `at`.
fn notification(tx: &Value, signer: &RsaPrivateKey, at: i64) -> (Vec<(String, String)>, String) {
    let nonce = "9mV2qLb7sXkA";
    let cipher = Aes256Gcm::new_from_slice(API_V3_KEY.as_bytes()).unwrap();
    let plain = tx.to_string();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plain.as_bytes(),
                aad: b"transaction",
            },
        )
        .unwrap();
    let body = json!({
        "id": "EV-2018022511223320873",
        "create_time": "2026-12-07T12:00:01+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": B64.encode(sealed),
            "associated_data": "transaction",
            "nonce": nonce,
        },
    })
    .to_string();
    let headers = signed_headers(&body, signer, at);
    (headers, body)
}

fn notify(app: &TestApp, (headers, body): &(Vec<(String, String)>, String)) -> (u16, Value) {
    let mut rb = app
        .client
        .post(app.url("/api/v1/payments/wechat/notify"))
        .header("Content-Type", "application/json")
        .body(body.clone());
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let r = rb.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn path_of(url: &str) -> String {
    url.split_once("/pay/")
        .map(|(_, p)| format!("/pay/{p}"))
        .unwrap()
}

#[test]
fn a_wechat_order_shows_its_code_and_a_signed_notification_delivers() {
    let fake = fake_wechat(&keys()[1]);
    let app = wechat_app(&fake.base, &keys()[0]);
    app.product_with_keys("vip", 1380, 2);
    let o = app.order_ok("vip", 1, "wechat");
    let (no, token) = (
        o["order_no"].as_str().unwrap(),
        o["token"].as_str().unwrap(),
    );
    let pay = app.get(&path_of(o["pay_url"].as_str().unwrap()));
    assert_eq!(pay.status(), 200);
    let page = pay.text().unwrap();
    assert!(
        page.contains("data-pay-qr") && page.contains("<svg"),
        "{page}"
    );
    assert!(
        page.contains("data-order-status>pending<"),
        "the page follows the order"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(sent["mchid"], MCHID);
    assert_eq!(sent["appid"], APPID);
    assert_eq!(sent["out_trade_no"], no);
    assert_eq!(sent["amount"], json!({"total": 1380, "currency": "CNY"}));
    assert_eq!(
        sent["notify_url"],
        "http://127.0.0.1:8080/api/v1/payments/wechat/notify"
    );
    let order_page = app
        .get(&format!("/orders/{no}?token={token}"))
        .text()
        .unwrap();
    assert!(
        order_page.contains("data-pay-qr"),
        "the order page shows the code too"
    );
    assert!(!order_page.contains("/pay/"), "and no link back to /pay");
    assert_eq!(fake.seen().len(), 1);

    let (status, body) = notify(
        &app,
        &notification(&transaction(no, 1380), &keys()[1], now_secs()),
    );
    assert_eq!((status, body), (204, Value::Null));
    let view: Value = app.buyer_view(no, token).json().unwrap();
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn forged_wechat_notifications_are_refused_and_change_nothing() {
    let fake = fake_wechat(&keys()[1]);
    let app = wechat_app(&fake.base, &keys()[0]);
    app.product_with_keys("vip", 1380, 3);
    let no = app.order_ok("vip", 1, "wechat")["order_no"]
        .as_str()
        .unwrap()
        .to_string();
    let hmac_no = app.order_ok("vip", 1, "hmac")["order_no"]
        .as_str()
        .unwrap()
        .to_string();
    let [_, platform, stranger] = keys();
    let now = now_secs();
    let with = |k: &str, v: Value| {
        let mut t = transaction(&no, 1380);
        t[k] = v;
        notification(&t, platform, now)
    };
    let mut bad_signature = notification(&transaction(&no, 1380), platform, now);
    bad_signature.0[2].1 = B64.encode([7u8; 256]);
    let mut wrong_serial = notification(&transaction(&no, 1380), platform, now);
    wrong_serial.0[3].1 = "PUB_KEY_ID_SOMEONE_ELSE".into();
    let mut tampered = notification(&transaction(&no, 1380), platform, now);
    tampered.1 = tampered.1.replace("支付成功", "paid");
    let before = app.dump();
    for (n, want, why) in [
        (bad_signature, 400, "bad signature"),
        (
            notification(&transaction(&no, 1380), stranger, now),
            400,
            "another key",
        ),
        (wrong_serial, 400, "another key id"),
        (tampered, 400, "body changed after signing"),
        (
            notification(&transaction(&no, 1380), platform, now - 301),
            400,
            "stale",
        ),
        (with("mchid", json!("1900000110")), 400, "another merchant"),
        (
            with("appid", json!("wx0000000000000000")),
            400,
            "another app",
        ),
        (
            notification(&transaction(&no, 1379), platform, now),
            400,
            "tampered amount",
        ),
        (
            with("amount", json!({"total": 1380, "currency": "USD"})),
            422,
            "another currency",
        ),
        (with("trade_state", json!("NOTPAY")), 422, "not paid"),
        (
            notification(&transaction(&hmac_no, 1380), platform, now),
            400,
            "another gateway's order",
        ),
    ] {
        let (status, body) = notify(&app, &n);
        assert_eq!(status, want, "{why}: {body}");
        assert_eq!(body["code"], "FAIL", "{why}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{why}"
        );
    }
    assert_eq!(
        app.dump(),
        before,
        "no refused notification changed anything"
    );
    let good = notification(&transaction(&no, 1380), platform, now);
    assert_eq!(notify(&app, &good).0, 204);
    let paid = app.dump();
    assert_eq!(notify(&app, &good).0, 204, "WeChat Pay retries");
    assert_eq!(app.dump(), paid, "the repeat changed nothing");
    let events = eventually(Duration::from_secs(10), || {
        let e = app.admin_order(&no)["events"].as_array().unwrap().clone();
        e.iter()
            .any(|e| e["type"] == "payment_repeated")
            .then_some(e)
    });
    let refused = events
        .iter()
        .filter(|e| e["type"] == "payment_refused")
        .count();
    assert_eq!(
        refused, 3,
        "amount, currency and status refusals are recorded: {events:?}"
    );
}

/// A shop whose merchant key WeChat Pay does not know: the fake refuses
/// the signature, and the buyer gets 503, not a broken page.
#[test]
fn a_request_wechat_pay_refuses_answers_503() {
    let fake = fake_wechat(&keys()[1]);
    let app = wechat_app(&fake.base, &keys()[2]);
    app.product_with_keys("vip", 1380, 1);
    let o = app.order_ok("vip", 1, "wechat");
    let r = app.get(&path_of(o["pay_url"].as_str().unwrap()));
    assert_eq!(error_code(r), (503, "unavailable".into()));
    assert_eq!(fake.seen().len(), 1);
    let order = app.admin_order(o["order_no"].as_str().unwrap());
    assert!(order.get("pay_session").is_none_or(Value::is_null));
}

/// An answer not signed by WeChat Pay's key (someone between faka and
/// WeChat Pay, or a wrong `api_base`) is not shown to the buyer.
#[test]
fn an_answer_not_signed_by_wechat_pay_is_not_shown() {
    let fake = fake_wechat(&keys()[2]);
    let app = wechat_app(&fake.base, &keys()[0]);
    app.product_with_keys("vip", 1380, 1);
    let o = app.order_ok("vip", 1, "wechat");
    let r = app.get(&path_of(o["pay_url"].as_str().unwrap()));
    assert_eq!(error_code(r), (503, "unavailable".into()));
    assert_eq!(fake.seen().len(), 1, "the request itself was accepted");
}

/// A key file that is not a key stops the start, naming the file.
#[test]
fn a_bad_key_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("apiclient_key.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let public = dir.path().join("pub_key.pem");
    std::fs::write(&public, public_pem(&keys()[1])).unwrap();
    let text = config_text(
        dir.path(),
        &format!(
            "[payments.wechat]\nmchid = \"{MCHID}\"\nappid = \"{APPID}\"\nserial_no = \"{SERIAL}\"\n\
             private_key_file = \"{}\"\napi_v3_key = \"{API_V3_KEY}\"\nplatform_public_key_file = \"{}\"\n",
            junk.display(),
            public.display()
        ),
    );
    let cfg = faka::config::Config::from_toml(&text, "test", std::path::Path::new(""), Vec::new())
        .expect("the config itself is valid");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let said = actix_web::rt::System::new()
        .block_on(
            async move { faka::startup::Application::build_with_listener(cfg, listener).err() },
        )
        .expect("the start fails")
        .0;
    assert!(
        said.contains("private_key_file") && said.contains("apiclient_key.pem"),
        "{said}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
