//! The generic signed JSON callback (`POST /api/v1/payments/hmac/notify`):
//! `X-Faka-Signature` = lowercase hex HMAC-SHA256(secret, timestamp + "." +
//! raw body), `X-Faka-Timestamp` within ±300 s of now.

use super::{CallbackRequest, PaymentGateway, VerifiedPayment};
use crate::crypto::{ct_eq, hmac_sha256_hex};
use crate::domain::ids::Gateway;
use crate::domain::model::Order;
use crate::error::Error;
use serde::Deserialize;

pub const MAX_SKEW_SECS: i64 = 300;

pub struct HmacGateway {
    secret: Vec<u8>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HmacNotification)]
pub struct Notification {
    order_no: String,
    trade_no: String,
    amount: u64,
    status: String,
}

impl HmacGateway {
    pub fn new(secret: Vec<u8>) -> Self {
        HmacGateway { secret }
    }

    /// The signature a sender computes, for tests, scripts and webhooks.
    pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
        hmac_sha256_hex(secret, &[timestamp.as_bytes(), b".", body])
    }
}

impl PaymentGateway for HmacGateway {
    fn id(&self) -> Gateway {
        Gateway::Hmac
    }

    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error> {
        let bad = |m: &str| Error::InvalidSignature(m.to_string());
        let ts = req
            .headers
            .header("x-faka-timestamp")
            .ok_or_else(|| bad("X-Faka-Timestamp header missing"))?;
        let sig = req
            .headers
            .header("x-faka-signature")
            .ok_or_else(|| bad("X-Faka-Signature header missing"))?;
        let ts_num: i64 =
            if !ts.is_empty() && ts.len() <= 12 && ts.bytes().all(|b| b.is_ascii_digit()) {
                ts.parse()
                    .map_err(|_| bad("X-Faka-Timestamp must be unix seconds"))?
            } else {
                return Err(bad("X-Faka-Timestamp must be unix seconds"));
            };
        let expected = Self::sign(&self.secret, ts, req.body);
        if !ct_eq(expected.as_bytes(), sig.as_bytes()) {
            return Err(bad("signature does not match"));
        }
        if (req.now_secs - ts_num).abs() > MAX_SKEW_SECS {
            return Err(bad("timestamp is more than 300 s away from now"));
        }
        let n: Notification = crate::json::parse_json(req.body)?;
        Ok(VerifiedPayment {
            order_no: n.order_no,
            trade_no: n.trade_no,
            amount: n.amount,
            succeeded: n.status == "paid",
        })
    }

    fn pay_url(&self, _: &Order, _: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type HeaderList = Vec<(&'static str, String)>;

    fn req<'a>(h: &'a HeaderList, body: &'a [u8], now: i64) -> CallbackRequest<'a> {
        CallbackRequest {
            headers: h,
            query: "",
            body,
            now_secs: now,
        }
    }

    fn headers(ts: &str, sig: &str) -> HeaderList {
        vec![
            ("X-Faka-Timestamp", ts.to_string()),
            ("X-Faka-Signature", sig.to_string()),
        ]
    }

    const BODY: &[u8] = br#"{"order_no":"F1","trade_no":"T1","amount":100,"status":"paid"}"#;

    #[test]
    fn a_signed_fresh_callback_verifies() {
        let g = HmacGateway::new(b"s".to_vec());
        let h = headers("1000", &HmacGateway::sign(b"s", "1000", BODY));
        let p = g.verify(&req(&h, BODY, 1100)).unwrap();
        assert_eq!(p.amount, 100);
        assert!(p.succeeded);
    }

    /// A timestamp must be plain unix seconds (at most 12 digits) even when
    /// the sender signed it as given: `+1000` and zero-padded forms that Rust
    /// would parse as 1000 are refused.
    #[test]
    fn signed_timestamps_that_are_not_plain_seconds_are_refused() {
        let g = HmacGateway::new(b"s".to_vec());
        for ts in ["+1000", "0000000001000", "1e3", ""] {
            let h = headers(ts, &HmacGateway::sign(b"s", ts, BODY));
            let e = g.verify(&req(&h, BODY, 1000)).unwrap_err();
            assert_eq!(e.code(), "invalid_signature", "{ts:?}");
        }
        let h = headers(
            "000000001000",
            &HmacGateway::sign(b"s", "000000001000", BODY),
        );
        assert!(g.verify(&req(&h, BODY, 1000)).is_ok());
    }

    /// hmac orders have no payment page: `pay_url` is null, not "".
    #[test]
    fn there_is_no_pay_url() {
        let g = HmacGateway::new(b"s".to_vec());
        let order = Order::pending_for_test("F1", "b@x.com", "10.0.0.1", 1);
        assert_eq!(g.pay_url(&order, "t0ken"), None);
    }

    #[test]
    fn forged_stale_and_malformed_signatures_are_refused() {
        let g = HmacGateway::new(b"s".to_vec());
        let good = HmacGateway::sign(b"s", "1000", BODY);
        let cases = [
            headers("1000", &HmacGateway::sign(b"wrong", "1000", BODY)),
            headers("1000", &good.to_uppercase()),
            headers("1001", &good),
            headers("-1000", &good),
            headers("1000", ""),
        ];
        for h in &cases {
            assert_eq!(
                g.verify(&req(h, BODY, 1000)).unwrap_err().code(),
                "invalid_signature"
            );
        }
        let h = headers("1000", &good);
        assert_eq!(
            g.verify(&req(&h, BODY, 1301)).unwrap_err().code(),
            "invalid_signature"
        );
        assert_eq!(
            g.verify(&req(&h, BODY, 699)).unwrap_err().code(),
            "invalid_signature"
        );
        assert!(g.verify(&req(&h, BODY, 1300)).is_ok());
    }
}
