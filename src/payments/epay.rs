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
    pay_type: String,
}

/// The epay signature of `params`.
pub fn sign(params: &[(String, String)], key: &str) -> String {
    let mut fields: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "sign" && k != "sign_type" && !v.is_empty())
        .collect();
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut text = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            text.push('&');
        }
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
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
    if int.is_empty() || int.len() > 15 || !digits(int) || frac.len() > 2 || !digits(frac) {
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
    pub fn new(pid: &str, key: &str, submit_url: &str, public_url: &str, pay_type: &str) -> Self {
        EpayGateway {
            pid: pid.to_string(),
            key: key.to_string(),
            submit_url: submit_url.to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
            pay_type: pay_type.to_string(),
        }
    }

    fn params(req: &CallbackRequest) -> Result<Vec<(String, String)>, Error> {
        let raw: &[u8] = if req.body.is_empty() {
            req.query.as_bytes()
        } else {
            req.body
        };
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
            .map_err(|_| Error::InvalidSignature("callback is not a form".into()))?;
        let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidSignature("a field appears twice".into()));
        }
        Ok(params)
    }
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

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

    fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        let mut params: Vec<(String, String)> = vec![
            ("pid".into(), self.pid.clone()),
            ("type".into(), self.pay_type.clone()),
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
        assert_eq!(format_money(13800), "138.00");
        assert_eq!(format_money(5), "0.05");
    }
}
