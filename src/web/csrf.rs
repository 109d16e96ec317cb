//! CSRF protection for every form that changes something: a double-submit
//! token. The page sets a random token in a `SameSite=Strict`, `HttpOnly`
//! cookie and repeats it in a hidden field; a post is accepted only when the
//! two match (constant time). Another site can make a browser post, but it
//! can neither read the cookie nor, with `SameSite=Strict`, have it sent.

use crate::crypto::{ct_eq, new_token};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;

pub const COOKIE: &str = "faka_csrf";
pub const FIELD: &str = "csrf";

/// The token a page's forms carry.
pub struct Csrf {
    pub token: String,
    /// A new token: the answer must set the cookie.
    fresh: bool,
}

fn sane(t: &str) -> bool {
    (32..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Csrf {
    pub fn for_page(req: &HttpRequest) -> Csrf {
        match req.cookie(COOKIE).filter(|c| sane(c.value())) {
            Some(c) => Csrf {
                token: c.value().to_string(),
                fresh: false,
            },
            None => Csrf {
                token: new_token(),
                fresh: true,
            },
        }
    }

    /// The cookie to set, if the token is new.
    pub fn cookie(&self, secure: bool) -> Option<Cookie<'static>> {
        self.fresh.then(|| {
            Cookie::build(COOKIE, self.token.clone())
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(secure)
                .finish()
        })
    }
}

/// Whether a posted form carries the token of the request's cookie.
pub fn valid(req: &HttpRequest, form: &super::Form) -> bool {
    let (Some(cookie), Some(field)) = (req.cookie(COOKIE), form.get(FIELD)) else {
        return false;
    };
    sane(cookie.value()) && ct_eq(cookie.value().as_bytes(), field.as_bytes())
}
