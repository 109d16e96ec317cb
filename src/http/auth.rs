//! Admin authentication: `Authorization: Bearer <token>`, compared in
//! constant time. The token is either set in config (`[admin] token`) or was
//! generated on first start and only its argon2 hash kept in the data dir.
//! A verified token is remembered as its SHA-256 so later requests do not pay
//! for argon2 again.

use super::State;
use crate::crypto::{ct_eq, sha256};
use crate::error::Error;
use crate::ops::admin_token::HASH_FILE;
use actix_web::dev::Payload;
use actix_web::{http::header, web, FromRequest, HttpRequest};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use futures_util::future::LocalBoxFuture;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub struct AdminAuth {
    configured: Option<[u8; 32]>,
    hash_file: PathBuf,
    verified: RwLock<Option<([u8; 32], String)>>,
    /// One check at a time: a failure is counted before the next check
    /// from that address is let through (concurrent guesses cannot pass
    /// the per-minute cap together), and at most one argon2 (~19 MiB, tens
    /// of ms) runs whatever the number of wrong tokens sent at once.
    gate: std::sync::Mutex<()>,
}

impl AdminAuth {
    pub fn new(config_token: Option<&str>, data_dir: &Path) -> Self {
        AdminAuth {
            configured: config_token
                .filter(|t| !t.is_empty())
                .map(|t| sha256(t.as_bytes())),
            hash_file: data_dir.join(HASH_FILE),
            verified: RwLock::new(None),
            gate: std::sync::Mutex::new(()),
        }
    }

    /// Checks one request's token from `client` against the per-minute cap
    /// of failures and counts a failure, one request at a time. Blocks
    /// (argon2, the gate): call off the async workers.
    pub fn check(
        &self,
        limits: &super::limits::Limits,
        client: &str,
        token: Option<&str>,
    ) -> Result<bool, Error> {
        let _one_at_a_time = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        limits.admin_blocked(client)?;
        let ok = token.is_some_and(|t| self.verify(t));
        if !ok {
            limits.admin_failed(client);
        }
        Ok(ok)
    }

    /// Whether `token` is the admin token. May run argon2: call off the
    /// async workers.
    pub fn verify(&self, token: &str) -> bool {
        let digest = sha256(token.as_bytes());
        if let Some(expected) = &self.configured {
            return ct_eq(&digest, expected);
        }
        let stored = std::fs::read_to_string(&self.hash_file).unwrap_or_default();
        if let Ok(cache) = self.verified.read() {
            if let Some((d, h)) = cache.as_ref() {
                // The cache is only good for the hash it was verified against:
                // `faka admin-token --rotate` replaces the file.
                if *h == stored {
                    return ct_eq(&digest, d);
                }
            }
        }
        let ok = PasswordHash::new(stored.trim())
            .map(|h| {
                Argon2::default()
                    .verify_password(token.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        if ok {
            if let Ok(mut cache) = self.verified.write() {
                *cache = Some((digest, stored));
            }
        }
        ok
    }
}

/// Extractor: present in a handler's arguments, the request is admin-only.
pub struct Admin;

impl FromRequest for Admin {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<State>().cloned();
        let trusted = state
            .as_ref()
            .map(|s| s.config.server.trusted_proxies.clone())
            .unwrap_or_default();
        let ip = super::orders::client_ip(req, &trusted).unwrap_or_else(|| "unknown".into());
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110).
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .map(|t| t.trim().to_string());
        Box::pin(async move {
            let unauthorized = || Error::Unauthorized("admin token missing or wrong".into());
            let Some(state) = state else {
                return Err(unauthorized());
            };
            // Refused at once while blocked; the authoritative check and
            // count run one at a time in `AdminAuth::check`.
            state.limits.admin_blocked(&ip)?;
            let token = token.filter(|t| !t.is_empty() && t.len() <= 512);
            let (st, client) = (state.clone(), ip.clone());
            let ok = web::block(move || st.admin.check(&st.limits, &client, token.as_deref()))
                .await
                .map_err(|_| Error::unavailable("server busy"))??;
            if ok {
                Ok(Admin)
            } else {
                tracing::warn!(client = %ip, "admin authentication failed");
                Err(unauthorized())
            }
        })
    }
}
