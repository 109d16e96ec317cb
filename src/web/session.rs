//! Admin sessions of the panel. Signing in with the admin token gives a
//! random session id (128 bits) in an `HttpOnly; SameSite=Strict` cookie
//! (`Secure` on https); the shop keeps only its SHA-256 and the last time it
//! was used, in memory. A session unused for 12 hours is over, signing out
//! ends it at once, and a restart ends them all (the merchant signs in
//! again). Nothing here is stored, so nothing about sessions can leak from a
//! backup.

use crate::crypto::{new_token, sha256};
use actix_web::cookie::{time::Duration, Cookie, SameSite};
use std::collections::HashMap;
use std::sync::Mutex;

pub const COOKIE: &str = "faka_admin";
pub const IDLE_MS: i64 = 12 * 3600 * 1000;

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<[u8; 32], i64>>);

impl Sessions {
    /// A new session, used now; returns its id.
    pub fn start(&self, now_ms: i64) -> String {
        let id = new_token();
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, last| now_ms - *last < IDLE_MS);
            m.insert(sha256(id.as_bytes()), now_ms);
        }
        id
    }

    /// Whether `id` is a live session; using it restarts its idle clock.
    pub fn touch(&self, id: &str, now_ms: i64) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        let key = sha256(id.as_bytes());
        match m.get_mut(&key) {
            Some(last) if now_ms - *last < IDLE_MS => {
                *last = now_ms;
                true
            }
            Some(_) => {
                m.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn end(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&sha256(id.as_bytes()));
        }
    }
}

pub fn cookie(id: String, secure: bool) -> Cookie<'static> {
    Cookie::build(COOKIE, id)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(Duration::milliseconds(IDLE_MS))
        .finish()
}

/// The cookie that removes the session cookie.
pub fn removal(secure: bool) -> Cookie<'static> {
    let mut c = cookie(String::new(), secure);
    c.make_removal();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_after_twelve_idle_hours_or_when_signed_out() {
        let s = Sessions::default();
        let id = s.start(0);
        assert!(s.touch(&id, IDLE_MS - 1), "used within 12 h");
        assert!(s.touch(&id, 2 * IDLE_MS - 2), "each use restarts the clock");
        assert!(!s.touch(&id, 3 * IDLE_MS), "12 h idle: over");
        assert!(!s.touch(&id, 3 * IDLE_MS), "and stays over");
        let id = s.start(0);
        s.end(&id);
        assert!(!s.touch(&id, 1), "signed out");
        assert!(!s.touch("made-up", 1));
    }
}
