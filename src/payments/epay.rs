//! 易支付 (epay) v1 with MD5 signatures, the gateway most merchants in this
//! field use. Notify by GET query or POST form; the signature is MD5 over the
//! sorted, non-empty fields except `sign`/`sign_type`, joined `k=v&k=v` with
//! raw values, with the merchant key appended. Money is a decimal string
//! compared exactly — never a float — and compared in constant time is the
//! signature: earlier PHP shops were robbed through loose `==` comparisons.

use super::{CallbackRequest, PaymentGateway, VerifiedPayment};
use crate::crypto::ct_eq;
use crate::domain::ids::Gateway;
use crate::domain::model::Order;
use crate::error::Error;
use md5::{Digest, Md5};

pub struct EpayGateway {
    pid: String,
    key: String,
    submit_url: String,
    public_url: String,
    /// The channels buyers may choose, the default first.
    pay_types: Vec<String>,
}

/// The epay signature of `params`.
pub fn sign(params: &[(String, String)], key: &str) -> String {
    let mut text = super::sorted_pairs(
        params
            .iter()
            .filter(|(k, v)| k != "sign" && k != "sign_type" && !v.is_empty()),
    );
    text.push_str(key);
    hex::encode(Md5::digest(text.as_bytes()))
}

/// Parses an epay money string into minor units (fen), exactly: `1`, `1.0`
/// and `1.00` are 100; anything else that is not plain decimal digits with
/// at most two decimals (`1.001`, `-1`, `1e2`, `0x10`, ` 1`, `.5`) is refused.
pub fn parse_money(s: &str) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    // An empty integer part (`.5`) passes here and fails `int.parse()` below.
    if int.len() > 15 || !digits(int) || frac.len() > 2 || !digits(frac) {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    let cents: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    whole.checked_mul(100)?.checked_add(cents)
}

/// Minor units as an epay money string: 13800 → "138.00".
pub fn format_money(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

impl EpayGateway {
    pub fn new(
        pid: &str,
        key: &str,
        submit_url: &str,
        public_url: &str,
        pay_types: Vec<String>,
    ) -> Self {
        EpayGateway {
            pid: pid.to_string(),
            key: key.to_string(),
            submit_url: submit_url.to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
            pay_types,
        }
    }

    fn params(req: &CallbackRequest) -> Result<Vec<(String, String)>, Error> {
        let raw: &[u8] = if req.body.is_empty() {
            req.query.as_bytes()
        } else {
            req.body
        };
        super::unique_form(raw)
    }
}

use super::form_field as field;

impl PaymentGateway for EpayGateway {
    fn id(&self) -> Gateway {
        Gateway::Epay
    }

    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error> {
        let params = Self::params(req)?;
        let given =
            field(&params, "sign").ok_or_else(|| Error::InvalidSignature("sign missing".into()))?;
        if let Some(t) = field(&params, "sign_type") {
            if !t.eq_ignore_ascii_case("MD5") {
                return Err(Error::InvalidSignature("sign_type must be MD5".into()));
            }
        }
        let expected = sign(&params, &self.key);
        if !ct_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(Error::InvalidSignature("signature does not match".into()));
        }
        let need = |name: &str| {
            field(&params, name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::invalid(name, "missing"))
        };
        if !ct_eq(need("pid")?.as_bytes(), self.pid.as_bytes()) {
            return Err(Error::InvalidSignature(
                "pid does not match this shop".into(),
            ));
        }
        let money = need("money")?;
        let amount = parse_money(money)
            .ok_or_else(|| Error::invalid("money", "must be a decimal amount like 138.00"))?;
        Ok(VerifiedPayment {
            order_no: need("out_trade_no")?.to_string(),
            trade_no: need("trade_no")?.to_string(),
            amount,
            succeeded: need("trade_status")? == "TRADE_SUCCESS",
        })
    }

    fn pay_types(&self) -> Vec<String> {
        self.pay_types.clone()
    }

    fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        let mut params: Vec<(String, String)> = vec![
            ("pid".into(), self.pid.clone()),
            (
                "type".into(),
                order
                    .pay_type
                    .clone()
                    .or_else(|| self.pay_types.first().cloned())?,
            ),
            ("out_trade_no".into(), order.order_no.clone()),
            (
                "notify_url".into(),
                format!("{}/api/v1/payments/epay/notify", self.public_url),
            ),
            (
                "return_url".into(),
                super::order_page_url(&self.public_url, &order.order_no, token),
            ),
            (
                "name".into(),
                format!("{} x{}", order.product_id, order.quantity),
            ),
            ("money".into(), format_money(order.amount)),
        ];
        let s = sign(&params, &self.key);
        params.push(("sign".into(), s));
        params.push(("sign_type".into(), "MD5".into()));
        let query = serde_urlencoded::to_string(&params).ok()?;
        let sep = if self.submit_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Some(format!("{}{sep}{query}", self.submit_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn signer_matches_the_published_vectors() {
        assert_eq!(
            sign(
                &p(&[("timestamp", "1548047628"), ("uid", "1000")]),
                "58b31d465652be856d7ed80977aa4ce4"
            ),
            "15540d3398e5ed2a37533e3fc032e1a0"
        );
        let mut fields = p(&[
            ("pid", "1001"),
            ("trade_no", "20240101123456789"),
            ("out_trade_no", "FK20240101ABCDEF"),
            ("type", "alipay"),
            ("name", "VIP会员"),
            ("money", "1.00"),
            ("trade_status", "TRADE_SUCCESS"),
        ]);
        let key = "89unJUB8HZ54Hj7x4nUj56HN4nUzUJ8i";
        assert_eq!(sign(&fields, key), "16edf21dec43cb4c1031b5a2d3e185b6");
        fields[5].1 = "1".into();
        assert_eq!(sign(&fields, key), "425673a9fc5cdd654e13299730e64d64");
    }

    #[test]
    fn sign_ignores_sign_fields_empty_values_and_order() {
        let a = p(&[
            ("b", "2"),
            ("a", "1"),
            ("sign", "x"),
            ("sign_type", "MD5"),
            ("param", ""),
        ]);
        let b = p(&[("a", "1"), ("b", "2")]);
        assert_eq!(sign(&a, "k"), sign(&b, "k"));
    }

    const KEY: &str = "merchant-key";

    fn gateway(submit_url: &str) -> EpayGateway {
        EpayGateway::new(
            "1001",
            KEY,
            submit_url,
            "https://shop.example/",
            vec!["alipay".into(), "wxpay".into()],
        )
    }

    /// A notification as the gateway sends it: `fields` plus their `sign`.
    fn signed(fields: &[(&str, &str)]) -> String {
        let mut params = p(fields);
        params.push(("sign".into(), sign(&params, KEY)));
        serde_urlencoded::to_string(&params).unwrap()
    }

    const PAID: &[(&str, &str)] = &[
        ("pid", "1001"),
        ("trade_no", "T-1"),
        ("out_trade_no", "F0000000000000001"),
        ("type", "alipay"),
        ("money", "1.5"),
        ("trade_status", "TRADE_SUCCESS"),
        ("sign_type", "md5"),
    ];

    fn verify(query: &str, body: &str) -> Result<VerifiedPayment, Error> {
        let headers: Vec<(&str, &str)> = Vec::new();
        gateway("https://pay.example/submit.php").verify(&CallbackRequest {
            headers: &headers,
            query,
            body: body.as_bytes(),
            now_secs: 0,
        })
    }

    /// The same signed notification verifies as a GET query or a POST form,
    /// into exactly its fields.
    #[test]
    fn a_signed_notification_verifies_from_query_or_form() {
        let expected = VerifiedPayment {
            order_no: "F0000000000000001".into(),
            trade_no: "T-1".into(),
            amount: 150,
            succeeded: true,
        };
        let text = signed(PAID);
        assert_eq!(verify(&text, "").unwrap(), expected);
        assert_eq!(verify("ignored=1", &text).unwrap(), expected);
        let mut waiting = PAID.to_vec();
        waiting[5].1 = "WAIT_BUYER_PAY";
        assert!(!verify(&signed(&waiting), "").unwrap().succeeded);
    }

    /// Each way a notification can be wrong, signed correctly otherwise,
    /// and the error it gets.
    #[test]
    fn wrong_notifications_are_refused_with_their_reason() {
        let with = |name: &str, value: &str| {
            let mut f: Vec<(&str, &str)> =
                PAID.iter().filter(|(k, _)| *k != name).cloned().collect();
            if !value.is_empty() {
                f.push((name, value));
            }
            signed(&f)
        };
        let unsigned: String = signed(PAID).split("&sign=").next().unwrap().into();
        let forged = signed(PAID).replace("money=1.5", "money=0.01");
        let twice = format!("{}&money=0.01", signed(PAID));
        for (query, code) in [
            ("not a form%", "invalid_signature"),
            (unsigned.as_str(), "invalid_signature"),
            (forged.as_str(), "invalid_signature"),
            (twice.as_str(), "invalid_signature"),
            (&with("sign_type", "SHA256"), "invalid_signature"),
            (&with("pid", "1002"), "invalid_signature"),
            (&with("pid", ""), "invalid_request"),
            (&with("money", "1.001"), "invalid_request"),
            (&with("money", ""), "invalid_request"),
            (&with("trade_no", ""), "invalid_request"),
            (&with("out_trade_no", ""), "invalid_request"),
            (&with("trade_status", ""), "invalid_request"),
        ] {
            assert_eq!(verify(query, "").unwrap_err().code(), code, "{query}");
        }
    }

    /// The buyer's pay link carries the order, the shop's notify and return
    /// URLs and a signature the gateway can check; it extends a submit URL
    /// that already has a query.
    #[test]
    fn the_pay_url_is_signed_and_names_the_order() {
        let mut order = crate::domain::model::Order::pending_for_test("F1", "b@x.com", "1", 0);
        order.quantity = 2;
        order.amount = 13800;
        let url = gateway("https://pay.example/submit.php")
            .pay_url(&order, "t0ken")
            .unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://pay.example/submit.php");
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let given = field(&params, "sign").unwrap();
        assert_eq!(given, sign(&params, KEY));
        for (name, value) in [
            ("pid", "1001"),
            ("type", "alipay"),
            ("out_trade_no", "F1"),
            (
                "notify_url",
                "https://shop.example/api/v1/payments/epay/notify",
            ),
            ("return_url", "https://shop.example/orders/F1?token=t0ken"),
            ("name", "p x2"),
            ("money", "138.00"),
            ("sign_type", "MD5"),
        ] {
            assert_eq!(field(&params, name), Some(value), "{name}");
        }
        let url = gateway("https://pay.example/submit.php?v=1")
            .pay_url(&order, "t0ken")
            .unwrap();
        assert!(
            url.starts_with("https://pay.example/submit.php?v=1&pid=1001&"),
            "{url}"
        );
    }

    #[test]
    fn money_is_parsed_exactly() {
        for (s, v) in [
            ("1.00", 100),
            ("1.0", 100),
            ("1", 100),
            ("138.00", 13800),
            ("0.01", 1),
            ("0", 0),
        ] {
            assert_eq!(parse_money(s), Some(v), "{s}");
        }
        for s in [
            "1.001", "-1", "1e2", "0x10", " 1", "1 ", ".5", "1.", "", "1,00", "+1", "NaN", "１",
        ] {
            assert_eq!(parse_money(s), None, "{s:?}");
        }
        assert_eq!(parse_money("99999999999999999999"), None);
        // At most 15 integer digits, though 16 would still fit in fen.
        assert_eq!(parse_money("999999999999999"), Some(99_999_999_999_999_900));
        assert_eq!(parse_money("1000000000000000"), None);
        assert_eq!(format_money(13800), "138.00");
        assert_eq!(format_money(5), "0.05");
    }
}
