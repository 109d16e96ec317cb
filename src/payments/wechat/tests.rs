use super::*;
use crate::payments::Headers;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use std::sync::OnceLock;

/// Test keys, made once: the merchant's, WeChat Pay's, and a stranger's.
fn keys() -> &'static [RsaPrivateKey; 3] {
    static KEYS: OnceLock<[RsaPrivateKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        [0, 1, 2].map(|_| RsaPrivateKey::new(&mut rng, 2048).expect("key"))
    })
}

const API_V3_KEY: &str = "0123456789abcdef0123456789ABCDEF";

fn gateway(platform_key_id: Option<&str>) -> (WechatGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("apiclient_key.pem");
    let public = dir.path().join("pub_key.pem");
    let [merchant, platform, _] = keys();
    std::fs::write(
        &private,
        merchant.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let platform_pem = platform
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&public, platform_pem).unwrap();
    let cfg = WechatConfig {
        mchid: "1900000001".into(),
        appid: "wx0000000000000001".into(),
        serial_no: "SERIAL1".into(),
        private_key_file: private,
        api_v3_key: API_V3_KEY.into(),
        platform_public_key_file: public,
        platform_key_id: platform_key_id.map(str::to_string),
        ..WechatConfig::default()
    };
    (
        WechatGateway::new(&cfg, "https://shop.example/").unwrap(),
        dir,
    )
}

/// The example of WeChat Pay's signing guide (签名生成), byte for byte: a
/// GET of `/v3/certificates` has an empty body and still ends in `\n`,
/// and the header lists the five fields in the guide's order.
#[test]
fn the_signing_guides_example_is_reproduced() {
    assert_eq!(
        request_message(
            "GET",
            "/v3/certificates",
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            ""
        ),
        "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    );
    assert_eq!(
        authorization(
            "1900009191",
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            "uOVRnA4qG/MNnYzdQxJanN+zU+lTgIcnU9BxGw5dKjK+VdEUz2FeIoC+D5sB/LN+nGzX3hfZg6r5wT1pl2ZobmIc6p0ldN7J6yDgUzbX8Uk3sD4a4eZVPTBvqNDoUqcYMlZ9uuDdCvNv4TM3c1WzsXUrExwVkI1XO5jCNbgDJ25nkT/c1gIFvqoogl7MdSFGc4W4xZsqCItnqbypR3RuGIlR9h9vlRsy7zJR9PBI83X8alLDIfR1ukt1P7tMnmogZ0cuDY8cZsd8ZlCgLadmvej58SLsIkVxFJ8XyUgx9FmutKSYTmYtWBZ0+tNvfGmbXU7cob8H/4nLBiCwIUFluw==",
            1554208460,
            "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
        ),
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",\
         signature=\"uOVRnA4qG/MNnYzdQxJanN+zU+lTgIcnU9BxGw5dKjK+VdEUz2FeIoC+D5sB/LN+nGzX3hfZg6r5wT1pl2ZobmIc6p0ldN7J6yDgUzbX8Uk3sD4a4eZVPTBvqNDoUqcYMlZ9uuDdCvNv4TM3c1WzsXUrExwVkI1XO5jCNbgDJ25nkT/c1gIFvqoogl7MdSFGc4W4xZsqCItnqbypR3RuGIlR9h9vlRsy7zJR9PBI83X8alLDIfR1ukt1P7tMnmogZ0cuDY8cZsd8ZlCgLadmvej58SLsIkVxFJ8XyUgx9FmutKSYTmYtWBZ0+tNvfGmbXU7cob8H/4nLBiCwIUFluw==\",\
         timestamp=\"1554208460\",serial_no=\"1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C\""
    );
    assert_eq!(
        notify_message("1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242", b"{}"),
        b"1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{}\n"
    );
}

/// A request signed by the gateway verifies with the merchant's public key
/// over exactly the message of the header's timestamp and nonce.
#[test]
fn requests_are_signed_with_the_merchant_key() {
    let (g, _dir) = gateway(None);
    let body = r#"{"a":1}"#;
    let auth = g.sign_request("POST", NATIVE_PATH, body, 1700000000);
    let field = |name: &str| {
        let start = auth.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        auth[start..].split('"').next().unwrap().to_string()
    };
    assert!(auth.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\","));
    assert_eq!(field("serial_no"), "SERIAL1");
    assert_eq!(field("timestamp"), "1700000000");
    let message = request_message("POST", NATIVE_PATH, 1700000000, &field("nonce_str"), body);
    let sig = Signature::try_from(B64.decode(field("signature")).unwrap().as_slice()).unwrap();
    let merchant = VerifyingKey::<Sha256>::new(keys()[0].to_public_key());
    assert!(merchant.verify(message.as_bytes(), &sig).is_ok());
}

fn encrypt(key: &[u8], nonce: &str, aad: &str, plain: &[u8]) -> String {
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    B64.encode(sealed)
}

/// The resource decrypts with the APIv3 key, nonce and associated data it
/// was sealed with, and with nothing else; a malformed one is refused, not
/// a panic.
#[test]
fn resources_decrypt_only_with_their_key_nonce_and_data() {
    let key: [u8; 32] = API_V3_KEY.as_bytes().try_into().unwrap();
    let sealed = encrypt(&key, "wCq51qZv4Yfg", "transaction", b"Hello World");
    assert_eq!(
        decrypt_resource(&key, "wCq51qZv4Yfg", "transaction", &sealed).unwrap(),
        b"Hello World"
    );
    let mut other = key;
    other[0] ^= 1;
    assert!(decrypt_resource(&other, "wCq51qZv4Yfg", "transaction", &sealed).is_none());
    assert!(decrypt_resource(&key, "wCq51qZv4Yfh", "transaction", &sealed).is_none());
    assert!(decrypt_resource(&key, "wCq51qZv4Yfg", "certificate", &sealed).is_none());
    for (nonce, text) in [
        ("short", sealed.as_str()),
        ("wCq51qZv4Yfg", "not base64!"),
        ("wCq51qZv4Yfg", ""),
    ] {
        assert!(decrypt_resource(&key, nonce, "transaction", text).is_none());
    }
}

struct Notice {
    headers: Vec<(String, String)>,
    body: String,
}

fn notice(tx: serde_json::Value, signer: &RsaPrivateKey, at: i64) -> Notice {
    let plain = tx.to_string();
    let body = serde_json::json!({
        "id": "EV-1",
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": encrypt(API_V3_KEY.as_bytes(), "fGhIjKlMnOpQ", "transaction", plain.as_bytes()),
            "associated_data": "transaction",
            "nonce": "fGhIjKlMnOpQ",
        },
    })
    .to_string();
    let ts = at.to_string();
    let sig = SigningKey::<Sha256>::new(signer.clone()).sign(&notify_message(
        &ts,
        "n0nce",
        body.as_bytes(),
    ));
    let headers = vec![
        ("Wechatpay-Timestamp".into(), ts),
        ("Wechatpay-Nonce".into(), "n0nce".into()),
        ("Wechatpay-Signature".into(), B64.encode(sig.to_bytes())),
        ("Wechatpay-Serial".into(), "PUB_KEY_ID_1".into()),
    ];
    Notice { headers, body }
}

fn paid() -> serde_json::Value {
    serde_json::json!({
        "mchid": "1900000001",
        "appid": "wx0000000000000001",
        "out_trade_no": "F0000000000000001",
        "transaction_id": "4200000000000000000000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "amount": {"total": 1380, "payer_total": 1380, "currency": "CNY", "payer_currency": "CNY"},
    })
}

fn check(g: &WechatGateway, n: &Notice, now: i64) -> Result<VerifiedPayment, Error> {
    g.verify(&CallbackRequest {
        headers: &n.headers,
        query: "",
        body: n.body.as_bytes(),
        now_secs: now,
    })
}

/// A genuine notification verifies into its transaction's fields.
#[test]
fn a_signed_notification_verifies_into_its_transaction() {
    let (g, _dir) = gateway(Some("PUB_KEY_ID_1"));
    let n = notice(paid(), &keys()[1], 1_700_000_000);
    assert!(n.headers.header("wechatpay-serial").is_some());
    assert_eq!(
        check(&g, &n, 1_700_000_100).unwrap(),
        VerifiedPayment {
            order_no: "F0000000000000001".into(),
            trade_no: "4200000000000000000000000001".into(),
            amount: 1380,
            succeeded: true,
        }
    );
}

/// Each forgery, and the error it gets; the ones that pass verification
/// (another currency, a failed trade) are not successes.
#[test]
fn forged_notifications_are_refused() {
    let (g, _dir) = gateway(Some("PUB_KEY_ID_1"));
    let now = 1_700_000_000;
    let [_, platform, stranger] = keys();
    let with = |k: &str, v: serde_json::Value| {
        let mut t = paid();
        t[k] = v;
        notice(t, platform, now)
    };
    let code = |n: &Notice| check(&g, n, now).map(|_| "ok").unwrap_or_else(|e| e.code());
    assert_eq!(code(&notice(paid(), stranger, now)), "invalid_signature");
    assert_eq!(
        check(&g, &notice(paid(), platform, now - 301), now)
            .unwrap_err()
            .code(),
        "invalid_signature"
    );
    assert_eq!(
        check(&g, &notice(paid(), platform, now + 301), now)
            .unwrap_err()
            .code(),
        "invalid_signature"
    );
    assert!(check(&g, &notice(paid(), platform, now - 300), now).is_ok());
    assert_eq!(
        code(&with("mchid", "1900000002".into())),
        "invalid_signature"
    );
    assert_eq!(
        code(&with("appid", "wx0000000000000002".into())),
        "invalid_signature"
    );
    assert_eq!(code(&with("out_trade_no", "".into())), "invalid_request");
    let mut tampered = notice(paid(), platform, now);
    tampered.body = tampered.body.replace("\"id\":\"EV-1\"", "\"id\":\"EV-2\"");
    assert_eq!(code(&tampered), "invalid_signature");
    let mut serial = notice(paid(), platform, now);
    serial.headers[3].1 = "PUB_KEY_ID_2".into();
    assert_eq!(code(&serial), "invalid_signature");
    for name in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
    ] {
        let mut n = notice(paid(), platform, now);
        n.headers.retain(|(k, _)| k != name);
        assert_eq!(code(&n), "invalid_signature", "{name}");
    }
    let unpaid = check(&g, &with("trade_state", "NOTPAY".into()), now).unwrap();
    assert!(!unpaid.succeeded);
    let usd = serde_json::json!({"total": 1380, "currency": "USD"});
    let foreign = check(&g, &with("amount", usd), now).unwrap();
    assert!(!foreign.succeeded, "another currency is not a payment");
}

/// A key file that is missing or not a key stops the start, naming it.
#[test]
fn bad_key_files_are_named() {
    let (_, dir) = gateway(None);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let mut cfg = WechatConfig {
        mchid: "1".into(),
        private_key_file: dir.path().join("missing.pem"),
        platform_public_key_file: dir.path().join("pub_key.pem"),
        api_v3_key: API_V3_KEY.into(),
        ..WechatConfig::default()
    };
    let e = WechatGateway::new(&cfg, "http://x").err().unwrap();
    assert!(
        e.contains("private_key_file") && e.contains("missing.pem"),
        "{e}"
    );
    cfg.private_key_file = dir.path().join("apiclient_key.pem");
    cfg.platform_public_key_file = junk;
    let e = WechatGateway::new(&cfg, "http://x").err().unwrap();
    assert!(
        e.contains("platform_public_key_file") && e.contains("junk.pem"),
        "{e}"
    );
}

/// The buyer pays through faka's `/pay` page, which shows a QR code of the
/// session WeChat Pay makes within the configured time.
#[test]
fn payment_starts_at_faka_and_is_shown_as_a_qr_code() {
    let (g, _dir) = gateway(None);
    let order = Order::pending_for_test("F1", "b@x.com", "1", 0);
    assert_eq!(
        g.pay_url(&order, "t0ken").as_deref(),
        Some("https://shop.example/pay/F1?token=t0ken")
    );
    let starter = g.session_starter().expect("wechat starts sessions");
    assert_eq!(starter.kind(), SessionKind::QrCode);
    assert_eq!(starter.timeout(), Duration::from_millis(5000));
    assert_eq!(g.id(), Gateway::Wechat);
}

/// A timestamp exactly 300 s away is accepted, 301 s is not.
#[test]
fn the_tolerance_is_inclusive() {
    let (g, _dir) = gateway(None);
    let now = 1_700_000_000;
    for at in [now - 300, now + 300] {
        assert!(
            check(&g, &notice(paid(), &keys()[1], at), now).is_ok(),
            "{at}"
        );
    }
    for at in [now - 301, now + 301] {
        assert!(
            check(&g, &notice(paid(), &keys()[1], at), now).is_err(),
            "{at}"
        );
    }
}
