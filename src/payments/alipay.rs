//! Alipay open platform (支付宝开放平台), RSA2 keys mode: the buyer pays on
//! Alipay's desktop cashier (`alipay.trade.page.pay`) or its phone cashier
//! (`alipay.trade.wap.pay`), and Alipay posts the result to
//! `/api/v1/payments/alipay/notify` as a form.
//!
//! Signing follows Alipay's SDK (`AlipaySignature` of alipay-sdk-java) to
//! the byte, since any difference is a refused request or a refused notify:
//! the content is every parameter with a non-empty value, sorted by name,
//! joined `k=v&k=v` with the values as they are (not URL-encoded). A
//! request signs all its parameters but `sign` (so `sign_type` too); a
//! notify is checked over all its parameters but `sign` and `sign_type`
//! (`getSignCheckContentV1`). The signature is SHA256withRSA (PKCS#1 v1.5)
//! in standard base64. `total_amount` is yuan as a decimal string, parsed
//! exactly into fen — never through a float.

use super::{CallbackRequest, PaymentGateway, VerifiedPayment};
use crate::config::{AlipayConfig, ConfigError};
use crate::crypto::ct_eq;
use crate::domain::ids::Gateway;
use crate::domain::model::Order;
use crate::error::Error;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The pay type of the phone cashier; every other order gets the desktop one.
pub const WAP: &str = "wap";
/// The pay type of the desktop cashier.
pub const PAGE: &str = "page";

/// Alipay's RSA2 keys are 2048 bits; a shorter one is a mistake (or a
/// key of the older RSA1 mode).
const MIN_KEY_BITS: usize = 2048;

pub struct AlipayGateway {
    app_id: String,
    private_key: RsaPrivateKey,
    alipay_public_key: RsaPublicKey,
    gateway_url: String,
    public_url: String,
}

/// The sign content of `params`: non-empty values, sorted by name,
/// `k=v` joined with `&`, skipping `sign` and, when `skip_sign_type`
/// (checking a notify), `sign_type`.
pub fn sign_content(params: &[(String, String)], skip_sign_type: bool) -> String {
    // Java sorts the names as UTF-16 code units; for the ASCII names Alipay
    // uses that is byte order.
    super::sorted_pairs(params.iter().filter(|(k, v)| {
        let left_out = k == "sign" || (skip_sign_type && k == "sign_type");
        !(k.is_empty() || v.is_empty() || left_out)
    }))
}

/// SHA256withRSA of `content` in standard base64.
pub fn rsa2_sign(key: &RsaPrivateKey, content: &str) -> Result<String, rsa::Error> {
    let digest = Sha256::digest(content.as_bytes());
    let sig = key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest)?;
    Ok(BASE64.encode(sig))
}

/// Whether `sign` (standard base64) is `key`'s SHA256withRSA of `content`.
pub fn rsa2_verify(key: &RsaPublicKey, content: &str, sign: &str) -> bool {
    let Ok(sig) = BASE64.decode(sign.as_bytes()) else {
        return false;
    };
    let digest = Sha256::digest(content.as_bytes());
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .is_ok()
}

/// `total_amount`: yuan with at most two decimals (`0.01`, `100.00`), into
/// fen, exactly; anything else (`1e2`, `-1`, ` 1.00`, `0.001`) is `None`.
/// The rules are epay's money rules: both are the same decimal yuan.
pub fn parse_total_amount(s: &str) -> Option<u64> {
    super::epay::parse_money(s)
}

/// A form body's fields, each name at most once (a repeated name would let
/// the signed value and the used value differ).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, Error> {
    super::unique_form(body)
}

use super::form_field as field;

/// The text of a key file: PEM, or the bare base64 of its DER that
/// Alipay's key tool and console give (decoded here).
enum KeyText {
    Pem(String),
    Der(Vec<u8>),
}

fn read_key(path: &Path, key: &str) -> Result<KeyText, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| not_a_key(key, path, &format!("cannot be read: {e}")))?;
    if text.contains("-----BEGIN") {
        return Ok(KeyText::Pem(text));
    }
    let bare: String = text.split_whitespace().collect();
    BASE64
        .decode(bare.as_bytes())
        .map(KeyText::Der)
        .map_err(|_| not_a_key(key, path, "is neither PEM nor base64"))
}

/// The error for a key file that cannot be used; never the key's text.
fn not_a_key(key: &str, path: &Path, why: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: format!("{} {why}", path.display()),
    }
}

/// The application's private key from `path`: PKCS#8 or PKCS#1, either as
/// PEM or as bare base64 (Alipay's key tool writes either).
pub fn load_private_key(path: &Path) -> Result<RsaPrivateKey, ConfigError> {
    const KEY: &str = "payments.alipay.private_key_file";
    let key = match read_key(path, KEY)? {
        KeyText::Pem(pem) => RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .ok(),
        KeyText::Der(der) => RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .ok(),
    }
    .ok_or_else(|| not_a_key(KEY, path, "is not an RSA private key (PKCS#8 or PKCS#1)"))?;
    if key.size() * 8 < MIN_KEY_BITS {
        return Err(not_a_key(KEY, path, "is shorter than 2048 bits"));
    }
    Ok(key)
}

/// Alipay's public key from `path`: SubjectPublicKeyInfo (what the console
/// shows) or PKCS#1, either as PEM or as bare base64.
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey, ConfigError> {
    const KEY: &str = "payments.alipay.alipay_public_key_file";
    let key = match read_key(path, KEY)? {
        KeyText::Pem(pem) => RsaPublicKey::from_public_key_pem(&pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(&pem))
            .ok(),
        KeyText::Der(der) => RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .ok(),
    }
    .ok_or_else(|| not_a_key(KEY, path, "is not an RSA public key"))?;
    if key.size() * 8 < MIN_KEY_BITS {
        return Err(not_a_key(KEY, path, "is shorter than 2048 bits"));
    }
    Ok(key)
}

/// `ms` as Alipay writes times: `yyyy-MM-dd HH:mm:ss`, Beijing time.
fn beijing_time(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    at.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_default()
}

/// `biz_content` of the page and wap pay requests.
#[derive(serde::Serialize)]
struct BizContent<'a> {
    out_trade_no: &'a str,
    total_amount: String,
    subject: String,
    product_code: &'a str,
    /// The hold's end: Alipay closes the payment then, so a buyer cannot
    /// pay for keys the shop has released.
    time_expire: String,
    /// Where the phone cashier's "back" goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    quit_url: Option<String>,
}

impl AlipayGateway {
    pub fn new(
        app_id: &str,
        private_key: RsaPrivateKey,
        alipay_public_key: RsaPublicKey,
        gateway_url: &str,
        public_url: &str,
    ) -> Self {
        AlipayGateway {
            app_id: app_id.to_string(),
            private_key,
            alipay_public_key,
            gateway_url: gateway_url.to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    /// The gateway of `[payments.alipay]`, its key files read now.
    pub fn from_config(cfg: &AlipayConfig, public_url: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(
            &cfg.app_id,
            load_private_key(&cfg.private_key_file)?,
            load_public_key(&cfg.alipay_public_key_file)?,
            &cfg.gateway_url,
            public_url,
        ))
    }

    /// The signed parameters of `order`'s pay request at `now_ms`.
    fn pay_params(&self, order: &Order, token: &str, now_ms: i64) -> Option<Vec<(String, String)>> {
        let order_page = super::order_page_url(&self.public_url, &order.order_no, token);
        let wap = order.pay_type.as_deref() == Some(WAP);
        let (method, product_code) = if wap {
            ("alipay.trade.wap.pay", "QUICK_WAP_WAY")
        } else {
            ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY")
        };
        let biz = BizContent {
            out_trade_no: &order.order_no,
            total_amount: super::epay::format_money(order.amount),
            subject: format!("{} x{}", order.product_id, order.quantity),
            product_code,
            time_expire: beijing_time(order.expires_at_ms),
            quit_url: wap.then(|| order_page.clone()),
        };
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.app_id.clone()),
            ("method".into(), method.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), beijing_time(now_ms)),
            ("version".into(), "1.0".into()),
            (
                "notify_url".into(),
                format!("{}/api/v1/payments/alipay/notify", self.public_url),
            ),
            ("return_url".into(), order_page),
            ("biz_content".into(), serde_json::to_string(&biz).ok()?),
        ];
        let sign = rsa2_sign(&self.private_key, &sign_content(&params, false)).ok()?;
        params.push(("sign".into(), sign));
        Some(params)
    }
}

impl PaymentGateway for AlipayGateway {
    fn id(&self) -> Gateway {
        Gateway::Alipay
    }

    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error> {
        let params = parse_form(req.body)?;
        let sign =
            field(&params, "sign").ok_or_else(|| Error::InvalidSignature("sign missing".into()))?;
        if let Some(t) = field(&params, "sign_type") {
            if t != "RSA2" {
                return Err(Error::InvalidSignature("sign_type must be RSA2".into()));
            }
        }
        if !rsa2_verify(&self.alipay_public_key, &sign_content(&params, true), sign) {
            return Err(Error::InvalidSignature("signature does not match".into()));
        }
        let need = |name: &str| {
            field(&params, name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::invalid(name, "missing"))
        };
        if !ct_eq(need("app_id")?.as_bytes(), self.app_id.as_bytes()) {
            return Err(Error::InvalidSignature(
                "app_id does not match this shop".into(),
            ));
        }
        let amount = parse_total_amount(need("total_amount")?).ok_or_else(|| {
            Error::invalid("total_amount", "must be yuan with at most two decimals")
        })?;
        let status = need("trade_status")?;
        Ok(VerifiedPayment {
            order_no: need("out_trade_no")?.to_string(),
            trade_no: need("trade_no")?.to_string(),
            amount,
            succeeded: status == "TRADE_SUCCESS" || status == "TRADE_FINISHED",
        })
    }

    fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        let params = self.pay_params(order, token, crate::store::now_ms())?;
        let query = serde_urlencoded::to_string(&params).ok()?;
        let sep = if self.gateway_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Some(format!("{}{sep}{query}", self.gateway_url))
    }

    fn pay_types(&self) -> Vec<String> {
        vec![PAGE.into(), WAP.into()]
    }

    fn default_pay_type(&self, mobile: bool) -> Option<String> {
        Some(if mobile { WAP } else { PAGE }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use std::sync::OnceLock;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Two key pairs, made once: [0] stands for Alipay's, [1] for the shop's.
    fn keys() -> &'static [RsaPrivateKey; 2] {
        static KEYS: OnceLock<[RsaPrivateKey; 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let mut rng = rand::thread_rng();
            let mut make = || RsaPrivateKey::new(&mut rng, 2048).unwrap();
            [make(), make()]
        })
    }

    fn gateway() -> AlipayGateway {
        AlipayGateway::new(
            "2021000000000001",
            keys()[1].clone(),
            keys()[0].to_public_key(),
            "https://openapi.alipay.com/gateway.do",
            "https://shop.example/",
        )
    }

    /// Alipay's documentation ("异步通知验签") shows this notify and the
    /// content to check. Its published string lacks `gmt_create`, which
    /// the notify carries and which the SDK's `getSignCheckContentV1` (the
    /// code Alipay's own merchants run) includes like every other
    /// non-empty parameter: the documentation's string is reproduced byte
    /// for byte with that one parameter in its sorted place.
    #[test]
    fn the_published_notify_gives_the_published_check_content() {
        let notify = "total_amount=2.00&buyer_id=2088102116773037&body=大乐透2.1\
            &trade_no=2016071921001003030200089909&refund_fee=0.00\
            &notify_time=2016-07-19 14:10:49&subject=大乐透2.1&sign_type=RSA2\
            &charset=utf-8&notify_type=trade_status_sync&out_trade_no=0719141034-6418\
            &gmt_close=2016-07-19 14:10:46&gmt_payment=2016-07-19 14:10:47\
            &trade_status=TRADE_SUCCESS&version=1.0\
            &sign=kPbQIjX+xQc8F0/A6/AocELIjhhZnGbcBN6G4MM/HmfWL4ZiHM6fWl5NQhzXJusaklZ1LFuMo+lHQUELAYeugH8LYFvxnNajOvZhuxNFbN2LhF0l/KL8ANtj8oyPM4NN7Qft2kWJTDJUpQOzCzNnV9hDxh5AaT9FPqRS6ZKxnzM=\
            &gmt_create=2016-07-19 14:10:44&app_id=2015102700040153\
            &seller_id=2088102119685838&notify_id=4a91b7a78a503640467525113fb7d8bg8e";
        // The notify as the documentation prints it: values not encoded,
        // so split by hand rather than form-decoded (`+` would be a space).
        let params: Vec<(String, String)> = notify
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let published = "app_id=2015102700040153&body=大乐透2.1&buyer_id=2088102116773037\
            &charset=utf-8&gmt_close=2016-07-19 14:10:46&gmt_payment=2016-07-19 14:10:47\
            &notify_id=4a91b7a78a503640467525113fb7d8bg8e&notify_time=2016-07-19 14:10:49\
            &notify_type=trade_status_sync&out_trade_no=0719141034-6418&refund_fee=0.00\
            &seller_id=2088102119685838&subject=大乐透2.1&total_amount=2.00\
            &trade_no=2016071921001003030200089909&trade_status=TRADE_SUCCESS&version=1.0";
        let expected = published.replace(
            "&gmt_payment=",
            "&gmt_create=2016-07-19 14:10:44&gmt_payment=",
        );
        assert_eq!(sign_content(&params, true), expected);
    }

    /// A request signs `sign_type` too (only `sign` is left out); a notify
    /// leaves out both. Empty values are never signed.
    #[test]
    fn request_and_notify_contents_differ_only_in_sign_type() {
        let params = p(&[
            ("method", "alipay.trade.page.pay"),
            ("app_id", "1"),
            ("sign_type", "RSA2"),
            ("sign", "x"),
            ("notify_url", ""),
            ("biz_content", "{\"a\":\"b=c&d\"}"),
        ]);
        assert_eq!(
            sign_content(&params, false),
            "app_id=1&biz_content={\"a\":\"b=c&d\"}&method=alipay.trade.page.pay&sign_type=RSA2"
        );
        assert_eq!(
            sign_content(&params, true),
            "app_id=1&biz_content={\"a\":\"b=c&d\"}&method=alipay.trade.page.pay"
        );
    }

    #[test]
    fn signatures_verify_only_with_the_signers_key_and_content() {
        let sig = rsa2_sign(&keys()[0], "a=1&b=2").unwrap();
        assert!(rsa2_verify(&keys()[0].to_public_key(), "a=1&b=2", &sig));
        assert!(!rsa2_verify(&keys()[1].to_public_key(), "a=1&b=2", &sig));
        assert!(!rsa2_verify(&keys()[0].to_public_key(), "a=1&b=3", &sig));
        assert!(!rsa2_verify(
            &keys()[0].to_public_key(),
            "a=1&b=2",
            "not base64!"
        ));
        assert!(!rsa2_verify(&keys()[0].to_public_key(), "a=1&b=2", ""));
    }

    /// A notify as Alipay sends it: `fields`, signed by `signer`, as a form.
    fn notify(fields: &[(&str, &str)], signer: &RsaPrivateKey) -> String {
        let mut params = p(fields);
        let sign = rsa2_sign(signer, &sign_content(&params, true)).unwrap();
        params.push(("sign".into(), sign));
        params.push(("sign_type".into(), "RSA2".into()));
        serde_urlencoded::to_string(&params).unwrap()
    }

    const PAID: &[(&str, &str)] = &[
        ("app_id", "2021000000000001"),
        ("out_trade_no", "F0000000000000001"),
        ("trade_no", "2024010122001400000000000001"),
        ("total_amount", "138.00"),
        ("trade_status", "TRADE_SUCCESS"),
        ("notify_time", "2024-01-01 12:00:00"),
        ("subject", "p x2"),
        ("charset", "utf-8"),
    ];

    fn verify(body: &str) -> Result<VerifiedPayment, Error> {
        let headers: Vec<(&str, &str)> = Vec::new();
        gateway().verify(&CallbackRequest {
            headers: &headers,
            query: "",
            body: body.as_bytes(),
            now_secs: 0,
        })
    }

    fn with(name: &str, value: &str) -> Vec<(&'static str, String)> {
        PAID.iter()
            .map(|(k, v)| {
                (
                    *k,
                    if *k == name {
                        value.to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect()
    }

    fn signed_with(name: &str, value: &str) -> String {
        let f = with(name, value);
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        notify(&f, &keys()[0])
    }

    #[test]
    fn a_signed_notify_verifies_into_its_fields() {
        let v = verify(&notify(PAID, &keys()[0])).unwrap();
        assert_eq!(
            v,
            VerifiedPayment {
                order_no: "F0000000000000001".into(),
                trade_no: "2024010122001400000000000001".into(),
                amount: 13800,
                succeeded: true,
            }
        );
        assert!(
            verify(&signed_with("trade_status", "TRADE_FINISHED"))
                .unwrap()
                .succeeded
        );
        for status in ["WAIT_BUYER_PAY", "TRADE_CLOSED", "trade_success"] {
            assert!(
                !verify(&signed_with("trade_status", status))
                    .unwrap()
                    .succeeded
            );
        }
    }

    #[test]
    fn wrong_notifies_are_refused_with_their_reason() {
        let good = notify(PAID, &keys()[0]);
        let tampered = good.replace("total_amount=138.00", "total_amount=0.01");
        let by_shop_key = notify(PAID, &keys()[1]);
        let unsigned: String = good
            .split('&')
            .filter(|kv| !kv.starts_with("sign="))
            .collect::<Vec<_>>()
            .join("&");
        let twice = format!("{good}&total_amount=0.01");
        let rsa1 = good.replace("sign_type=RSA2", "sign_type=RSA");
        for (body, code) in [
            ("%", "invalid_signature"),
            ("", "invalid_signature"),
            (unsigned.as_str(), "invalid_signature"),
            (tampered.as_str(), "invalid_signature"),
            (by_shop_key.as_str(), "invalid_signature"),
            (twice.as_str(), "invalid_signature"),
            (rsa1.as_str(), "invalid_signature"),
            (
                &signed_with("app_id", "2021000000000002"),
                "invalid_signature",
            ),
            (&signed_with("app_id", ""), "invalid_request"),
            (&signed_with("total_amount", "1e2"), "invalid_request"),
            (&signed_with("total_amount", "0.001"), "invalid_request"),
            (&signed_with("total_amount", ""), "invalid_request"),
            (&signed_with("out_trade_no", ""), "invalid_request"),
            (&signed_with("trade_no", ""), "invalid_request"),
            (&signed_with("trade_status", ""), "invalid_request"),
        ] {
            assert_eq!(verify(body).unwrap_err().code(), code, "{body}");
        }
    }

    #[test]
    fn total_amount_is_parsed_exactly() {
        for (s, v) in [("0.01", 1), ("100.00", 10000), ("100.0", 10000), ("2", 200)] {
            assert_eq!(parse_total_amount(s), Some(v), "{s}");
        }
        for s in [
            "1e2", "-1", " 1.00", "1.00 ", "0.001", "1.", ".5", "", "+1", "1,00", "0x10",
        ] {
            assert_eq!(parse_total_amount(s), None, "{s:?}");
        }
    }

    fn pay_params(pay_type: Option<&str>) -> Vec<(String, String)> {
        let mut order = Order::pending_for_test("F1", "b@x.com", "1", 1_700_000_900_000);
        order.quantity = 2;
        order.amount = 13800;
        order.pay_type = pay_type.map(str::to_string);
        gateway()
            .pay_params(&order, "t0ken", 1_700_000_000_000)
            .unwrap()
    }

    /// The pay request is signed over exactly what Alipay checks, with the
    /// shop's key, and names the order, its amount, the notify and return
    /// addresses and the hold's end.
    #[test]
    fn the_pay_request_is_signed_and_describes_the_order() {
        let params = pay_params(None);
        let sign = field(&params, "sign").unwrap();
        let shop_public = keys()[1].to_public_key();
        assert!(rsa2_verify(
            &shop_public,
            &sign_content(&params, false),
            sign
        ));
        for (name, value) in [
            ("app_id", "2021000000000001"),
            ("method", "alipay.trade.page.pay"),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
            ("timestamp", "2023-11-15 06:13:20"),
            (
                "notify_url",
                "https://shop.example/api/v1/payments/alipay/notify",
            ),
            ("return_url", "https://shop.example/orders/F1?token=t0ken"),
        ] {
            assert_eq!(field(&params, name), Some(value), "{name}");
        }
        assert_eq!(
            field(&params, "biz_content"),
            Some(
                "{\"out_trade_no\":\"F1\",\"total_amount\":\"138.00\",\"subject\":\"p x2\",\
                 \"product_code\":\"FAST_INSTANT_TRADE_PAY\",\"time_expire\":\"2023-11-15 06:28:20\"}"
            )
        );
        let wap = pay_params(Some(WAP));
        assert_eq!(field(&wap, "method"), Some("alipay.trade.wap.pay"));
        let biz: serde_json::Value =
            serde_json::from_str(field(&wap, "biz_content").unwrap()).unwrap();
        assert_eq!(biz["product_code"], "QUICK_WAP_WAY");
        assert_eq!(
            biz["quit_url"],
            "https://shop.example/orders/F1?token=t0ken"
        );
    }

    /// The URL carries the same parameters, form-encoded, after the
    /// configured gateway (the sandbox's, say).
    #[test]
    fn the_pay_url_extends_the_gateway_url() {
        let mut order = Order::pending_for_test("F1", "b@x.com", "1", 0);
        order.amount = 1;
        let url = gateway().pay_url(&order, "t").unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://openapi.alipay.com/gateway.do");
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let sign = field(&params, "sign").unwrap();
        assert!(rsa2_verify(
            &keys()[1].to_public_key(),
            &sign_content(&params, false),
            sign
        ));
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Both key encodings Alipay's tools emit load, as PEM or bare base64.
    #[test]
    fn keys_load_from_pkcs8_pkcs1_pem_and_bare_base64() {
        let dir = tempfile::tempdir().unwrap();
        let k = &keys()[1];
        let pkcs8 = k.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pkcs1 = k.to_pkcs1_pem(LineEnding::LF).unwrap();
        let bare8 = BASE64.encode(k.to_pkcs8_der().unwrap().as_bytes());
        let bare1 = BASE64.encode(k.to_pkcs1_der().unwrap().as_bytes());
        for (name, text) in [("a", &*pkcs8), ("b", &*pkcs1), ("c", &bare8), ("d", &bare1)] {
            assert_eq!(
                &load_private_key(&write(dir.path(), name, text)).unwrap(),
                k
            );
        }
        let public = k.to_public_key();
        let spki = public.to_public_key_pem(LineEnding::LF).unwrap();
        let rsa_pub = public.to_pkcs1_pem(LineEnding::LF).unwrap();
        let bare = BASE64.encode(public.to_public_key_der().unwrap().as_bytes());
        for (name, text) in [("e", spki.as_str()), ("f", &rsa_pub), ("g", &bare)] {
            assert_eq!(
                load_public_key(&write(dir.path(), name, text)).unwrap(),
                public
            );
        }
    }

    /// A bad key file stops the start naming the file, never echoing it.
    #[test]
    fn bad_key_files_are_named_and_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let public_pem = keys()[1]
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let garbage = write(dir.path(), "garbage.pem", "secret-looking text");
        let swapped = write(dir.path(), "public.pem", &public_pem);
        let missing = dir.path().join("missing.pem");
        let short = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let short = write(
            dir.path(),
            "short.pem",
            &short.to_pkcs8_pem(LineEnding::LF).unwrap(),
        );
        for path in [&garbage, &swapped, &missing, &short] {
            let e = load_private_key(path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(!e.contains("secret-looking") && !e.contains("MII"), "{e}");
        }
        let e = load_public_key(&garbage).unwrap_err().to_string();
        assert!(e.contains("payments.alipay.alipay_public_key_file"), "{e}");
        let short_public = RsaPrivateKey::new(&mut rand::thread_rng(), 1024)
            .unwrap()
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let short_public = write(dir.path(), "short_public.pem", &short_public);
        let e = load_public_key(&short_public).unwrap_err().to_string();
        assert!(e.contains("shorter than 2048 bits"), "{e}");
    }

    /// The buyer's device picks the cashier unless the buyer names one.
    #[test]
    fn the_pay_types_are_the_two_cashiers_chosen_by_device() {
        let g = gateway();
        assert_eq!(g.pay_types(), [PAGE, WAP]);
        assert_eq!(g.default_pay_type(true).as_deref(), Some(WAP));
        assert_eq!(g.default_pay_type(false).as_deref(), Some(PAGE));
    }
}
