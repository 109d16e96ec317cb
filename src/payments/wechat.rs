//! WeChat Pay API v3, Native payment (the buyer scans a QR code). Starting
//! a payment is a signed `POST /v3/pay/transactions/native` that answers a
//! `code_url` (read only if WeChat Pay signed the answer, as it signs its
//! notifications); the request's `Authorization` is `WECHATPAY2-SHA256-RSA2048`
//! with the merchant's RSA key over `METHOD\nPATH\nTIMESTAMP\nNONCE\nBODY\n`.
//! A notification is signed by WeChat Pay's key over
//! `TIMESTAMP\nNONCE\nBODY\n` (`Wechatpay-*` headers, ±300 s) and carries
//! the transaction encrypted with AEAD_AES_256_GCM under the APIv3 key.
//! Money is integer fen (`amount.total`), in CNY only.

use super::{CallbackRequest, PaymentGateway, SessionKind, SessionStarter, VerifiedPayment};
use crate::config::WechatConfig;
use crate::crypto::ct_eq;
use crate::domain::ids::Gateway;
use crate::domain::model::{Order, PaySession};
use crate::error::Error;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use sha2::Sha256;
use std::path::Path;
use std::time::Duration;

/// How far a notification's timestamp may be from the shop's clock.
pub const TOLERANCE_SECS: i64 = 300;
const NATIVE_PATH: &str = "/v3/pay/transactions/native";

pub struct WechatGateway {
    mchid: String,
    appid: String,
    serial_no: String,
    signer: SigningKey<Sha256>,
    api_v3_key: [u8; 32],
    platform_key: VerifyingKey<Sha256>,
    platform_key_id: Option<String>,
    api_base: String,
    public_url: String,
    timeout: Duration,
    agent: ureq::Agent,
}

/// Reads a PEM file, naming the config key and the file when it fails.
fn read_pem(key: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("payments.wechat.{key} {}: {e}", path.display()))
}

/// The merchant's private key: PKCS#8 (`apiclient_key.pem`) or PKCS#1.
pub fn parse_private_key(pem: &str) -> Option<RsaPrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    RsaPrivateKey::from_pkcs8_pem(pem)
        .ok()
        .or_else(|| RsaPrivateKey::from_pkcs1_pem(pem).ok())
}

/// WeChat Pay's public key: SubjectPublicKeyInfo (`pub_key.pem`) or PKCS#1.
pub fn parse_public_key(pem: &str) -> Option<RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    RsaPublicKey::from_public_key_pem(pem)
        .ok()
        .or_else(|| RsaPublicKey::from_pkcs1_pem(pem).ok())
}

/// The text a request's signature covers.
pub fn request_message(
    method: &str,
    path: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The text a notification's (or response's) signature covers.
pub fn notify_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// The `Authorization` header of a request, given its signature.
pub fn authorization(
    mchid: &str,
    nonce: &str,
    signature: &str,
    timestamp: i64,
    serial_no: &str,
) -> String {
    format!(
        "WECHATPAY2-SHA256-RSA2048 mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",\
         timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    )
}

/// Decrypts a notification's `resource` (AEAD_AES_256_GCM: the ciphertext
/// is base64 of the encrypted text followed by its 16-byte tag).
pub fn decrypt_resource(
    key: &[u8; 32],
    nonce: &str,
    associated_data: &str,
    ciphertext: &str,
) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    let sealed = B64.decode(ciphertext).ok()?;
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: &sealed,
                aad: associated_data.as_bytes(),
            },
        )
        .ok()
}

#[derive(Deserialize)]
struct Notification {
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: String,
    nonce: String,
}

/// The decrypted transaction: only the fields faka checks.
#[derive(Deserialize)]
struct Transaction {
    mchid: Option<String>,
    appid: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    trade_state: Option<String>,
    amount: Option<TransactionAmount>,
}

#[derive(Deserialize)]
struct TransactionAmount {
    total: Option<u64>,
    currency: Option<String>,
}

fn bad_signature(why: &str) -> Error {
    Error::InvalidSignature(why.to_string())
}

impl WechatGateway {
    pub fn new(cfg: &WechatConfig, public_url: &str) -> Result<Self, String> {
        let private = read_pem("private_key_file", &cfg.private_key_file)?;
        let private = parse_private_key(&private).ok_or_else(|| {
            format!(
                "payments.wechat.private_key_file {}: not an RSA private key in PEM",
                cfg.private_key_file.display()
            )
        })?;
        let public = read_pem("platform_public_key_file", &cfg.platform_public_key_file)?;
        let public = parse_public_key(&public).ok_or_else(|| {
            format!(
                "payments.wechat.platform_public_key_file {}: not an RSA public key in PEM",
                cfg.platform_public_key_file.display()
            )
        })?;
        let api_v3_key: [u8; 32] = cfg
            .api_v3_key
            .as_bytes()
            .try_into()
            .map_err(|_| "payments.wechat.api_v3_key: must be 32 characters".to_string())?;
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        Ok(WechatGateway {
            mchid: cfg.mchid.clone(),
            appid: cfg.appid.clone(),
            serial_no: cfg.serial_no.clone(),
            signer: SigningKey::new(private),
            api_v3_key,
            platform_key: VerifyingKey::new(public),
            platform_key_id: cfg.platform_key_id.clone().filter(|s| !s.is_empty()),
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
            timeout,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        })
    }

    /// The `Authorization` header of a request to the API.
    fn sign_request(&self, method: &str, path: &str, body: &str, timestamp: i64) -> String {
        let nonce = hex::encode_upper(rand::random::<[u8; 16]>());
        let message = request_message(method, path, timestamp, &nonce, body);
        let signature = B64.encode(self.signer.sign(message.as_bytes()).to_bytes());
        authorization(&self.mchid, &nonce, &signature, timestamp, &self.serial_no)
    }

    /// An answer of the API, read only if WeChat Pay signed it (as its
    /// notifications are: the same headers, over the answer's body).
    fn signed_answer<T: serde::de::DeserializeOwned>(&self, r: ureq::Response) -> Result<T, Error> {
        let names = [
            "Wechatpay-Timestamp",
            "Wechatpay-Nonce",
            "Wechatpay-Signature",
            "Wechatpay-Serial",
        ];
        let headers: Vec<(&str, String)> = names
            .iter()
            .filter_map(|&n| Some((n, r.header(n)?.to_string())))
            .collect();
        let body = r
            .into_string()
            .map_err(|_| Error::InvalidJson("the answer is not text".into()))?;
        self.check_signature(&CallbackRequest {
            headers: &headers,
            query: "",
            body: body.as_bytes(),
            now_secs: crate::store::now_ms() / 1000,
        })?;
        serde_json::from_str(&body)
            .map_err(|_| Error::InvalidJson("the answer has no code_url".into()))
    }

    /// The `Wechatpay-*` headers' signature, timestamp and key id.
    fn check_signature(&self, req: &CallbackRequest) -> Result<(), Error> {
        let header = |name: &str| {
            req.headers
                .header(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| bad_signature(&format!("{name} missing")))
        };
        let (timestamp, nonce) = (header("Wechatpay-Timestamp")?, header("Wechatpay-Nonce")?);
        let (signature, serial) = (header("Wechatpay-Signature")?, header("Wechatpay-Serial")?);
        let at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| bad_signature("Wechatpay-Timestamp is not a number"))?;
        if at.abs_diff(req.now_secs) > TOLERANCE_SECS as u64 {
            return Err(bad_signature("Wechatpay-Timestamp is too far from now"));
        }
        if let Some(id) = &self.platform_key_id {
            if !ct_eq(serial.as_bytes(), id.as_bytes()) {
                return Err(bad_signature("Wechatpay-Serial is not the configured key"));
            }
        }
        let signature = B64
            .decode(signature.trim())
            .ok()
            .and_then(|s| Signature::try_from(s.as_slice()).ok())
            .ok_or_else(|| bad_signature("Wechatpay-Signature is not base64"))?;
        self.platform_key
            .verify(&notify_message(timestamp, nonce, req.body), &signature)
            .map_err(|_| bad_signature("signature does not match"))
    }

    fn transaction(&self, body: &[u8]) -> Result<Transaction, Error> {
        let n: Notification = serde_json::from_slice(body)
            .map_err(|_| Error::InvalidJson("the notification is not the expected JSON".into()))?;
        let r = n.resource;
        if r.algorithm != "AEAD_AES_256_GCM" {
            return Err(Error::invalid(
                "resource.algorithm",
                "must be AEAD_AES_256_GCM",
            ));
        }
        let plain = decrypt_resource(
            &self.api_v3_key,
            &r.nonce,
            &r.associated_data,
            &r.ciphertext,
        )
        .ok_or_else(|| bad_signature("resource does not decrypt with the APIv3 key"))?;
        serde_json::from_slice(&plain)
            .map_err(|_| Error::InvalidJson("the resource is not a transaction".into()))
    }
}

impl PaymentGateway for WechatGateway {
    fn id(&self) -> Gateway {
        Gateway::Wechat
    }

    fn verify(&self, req: &CallbackRequest) -> Result<VerifiedPayment, Error> {
        self.check_signature(req)?;
        let t = self.transaction(req.body)?;
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| Error::invalid(name, "missing"))
        };
        if !ct_eq(need(t.mchid, "mchid")?.as_bytes(), self.mchid.as_bytes()) {
            return Err(bad_signature("mchid does not match this shop"));
        }
        if !ct_eq(need(t.appid, "appid")?.as_bytes(), self.appid.as_bytes()) {
            return Err(bad_signature("appid does not match this shop"));
        }
        let amount = t
            .amount
            .ok_or_else(|| Error::invalid("amount", "missing"))?;
        let total = amount
            .total
            .ok_or_else(|| Error::invalid("amount.total", "missing"))?;
        // Paid in another currency is not a payment of this (CNY) order:
        // refused like a failed one, after the order's checks.
        let currency = need(amount.currency, "amount.currency")?;
        let cny = currency == "CNY";
        Ok(VerifiedPayment {
            order_no: need(t.out_trade_no, "out_trade_no")?,
            trade_no: need(t.transaction_id, "transaction_id")?,
            amount: total,
            succeeded: need(t.trade_state, "trade_state")? == "SUCCESS" && cny,
        })
    }

    fn pay_url(&self, order: &Order, token: &str) -> Option<String> {
        Some(super::start_page_url(
            &self.public_url,
            &order.order_no,
            token,
        ))
    }

    fn session_starter(&self) -> Option<&dyn SessionStarter> {
        Some(self)
    }
}

#[derive(Deserialize)]
struct NativeAnswer {
    code_url: String,
}

impl SessionStarter for WechatGateway {
    fn kind(&self) -> SessionKind {
        SessionKind::QrCode
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn start(&self, order: &Order, _token: &str, title: &str) -> Result<PaySession, Error> {
        let body = serde_json::json!({
            "appid": self.appid,
            "mchid": self.mchid,
            // WeChat Pay takes at most 127 characters.
            "description": title.chars().take(127).collect::<String>(),
            "out_trade_no": order.order_no,
            "notify_url": format!("{}/api/v1/payments/wechat/notify", self.public_url),
            "amount": { "total": order.amount, "currency": "CNY" },
        })
        .to_string();
        let now = crate::store::now_ms() / 1000;
        let auth = self.sign_request("POST", NATIVE_PATH, &body, now);
        let answer = self
            .agent
            .post(&format!("{}{NATIVE_PATH}", self.api_base))
            .set("Authorization", &auth)
            .set("Accept", "application/json")
            .set("Content-Type", "application/json")
            .send_string(&body);
        let unavailable = |why: String| {
            tracing::warn!(order_no = %order.order_no, reason = %why, "WeChat Pay did not start a payment");
            Error::unavailable("WeChat Pay is not answering; try again in a moment")
        };
        let answer = match answer {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => return Err(unavailable(format!("status {code}"))),
            Err(ureq::Error::Transport(t)) => return Err(unavailable(t.kind().to_string())),
        };
        let answer: NativeAnswer = self
            .signed_answer(answer)
            .map_err(|e| unavailable(format!("answer: {e}")))?;
        Ok(PaySession {
            provider_ref: String::new(),
            url: answer.code_url,
            created_at_ms: crate::store::now_ms(),
        })
    }
}

#[cfg(test)]
mod tests;
