//! The web edge: the storefront buyers use and the admin panel the merchant
//! uses, server-rendered HTML from the same binary. Pages read through the
//! same store reads and write through the same `shop` commands as
//! the JSON API (often through the API's own checks in `crate::http`); there
//! is no second write path. Templates are `maud` (compiled in, escaping by
//! default); CSS and JS are embedded and served under content-hashed names.
//! Every page sends a strict Content-Security-Policy, and every form that
//! changes something carries a CSRF token (`csrf.rs`).

mod admin;
mod admin_coupons;
mod admin_emails;
mod admin_pages;
mod assets;
mod csrf;
mod i18n;
mod key_file;
mod layout;
mod lookup_pages;
mod markdown;
mod page_cache;
mod pay_page;
mod session;
mod shop_pages;

pub use i18n::Lang;

use crate::http::State;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::Markup;

/// What the pages keep beside the API's state: admin sessions and the
/// Content-Security-Policy built once from config.
pub struct WebState {
    pub sessions: session::Sessions,
    /// The rendered `/` and product pages, per products version.
    pages: page_cache::PageCache,
    /// Stands for the buyer's CSRF token in a kept page: random per
    /// process, so no merchant text can contain it.
    csrf_slot: String,
    csp: String,
    /// Cookies get `Secure` when the shop is served over https.
    secure_cookies: bool,
}

impl WebState {
    pub fn new(cfg: &crate::config::Config) -> WebState {
        // A form may lead (by redirect) to the epay or Alipay gateway's
        // payment page; nothing else leaves the shop's origin.
        let gateway: String = [
            cfg.epay().map(|e| e.submit_url.as_str()),
            cfg.alipay().map(|a| a.gateway_url.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(origin)
        .chain(
            cfg.stripe()
                .map(|_| "https://checkout.stripe.com".to_string()),
        )
        .map(|o| format!(" {o}"))
        .collect();
        WebState {
            sessions: session::Sessions::default(),
            pages: page_cache::PageCache::default(),
            csrf_slot: crate::crypto::new_token(),
            csp: format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
                 connect-src 'self'; form-action 'self'{gateway}; base-uri 'none'; frame-ancestors 'none'"
            ),
            secure_cookies: cfg.server.public_url.starts_with("https://"),
        }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

pub type Web = web::Data<WebState>;

/// The request's language: `?lang=`, then the `lang` cookie, then
/// `Accept-Language`, then `[shop] language`.
pub fn lang(req: &HttpRequest, state: &State) -> Lang {
    query(req, "lang")
        .and_then(|l| Lang::parse(&l))
        .or_else(|| req.cookie("lang").and_then(|c| Lang::parse(c.value())))
        .or_else(|| {
            req.headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Lang::from_accept)
        })
        .or_else(|| Lang::parse(&state.config.shop.language))
        .unwrap_or(Lang::Zh)
}

/// One query parameter.
pub fn query(req: &HttpRequest, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// An HTML answer with the pages' security headers. Pages may show keys or
/// tokens, so none is stored by caches.
pub fn html(status: StatusCode, web: &WebState, body: Markup) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, web.csp.as_str()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    res.body(body.into_string())
}

/// A `303 See Other` to `location` (after a form post).
pub fn see_other(location: &str) -> HttpResponse {
    let mut res = HttpResponse::SeeOther().finish();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Whether the client asked for HTML (a browser navigating).
fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Unmatched paths: the API's JSON 404 under `/api/` and for clients that
/// do not ask for HTML; the HTML 404 page for browsers.
async fn not_found(req: HttpRequest, state: State, web: Web) -> HttpResponse {
    if req.path().starts_with("/api/") || !wants_html(&req) {
        return actix_web::ResponseError::error_response(&crate::error::Error::not_found(format!(
            "no route for {} {}",
            req.method(),
            crate::domain::ids::printable(req.path(), 100)
        )));
    }
    layout::not_found(&req, &state, &web)
}

/// A page resource with its routes, gzip-compressed when the client
/// accepts it (pages and assets only: the API's answers stay as they are).
fn page(
    path: &'static str,
    routes: Vec<actix_web::Route>,
) -> impl actix_web::dev::HttpServiceFactory {
    let mut res = web::resource(path).app_data(crate::http::RouteTemplate(path));
    for r in routes {
        res = res.route(r);
    }
    res.wrap(actix_web::middleware::Compress::default())
}

/// Registers the pages; call after `http::routes` (this sets the default
/// service, which decides between the JSON and the HTML 404).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(page("/", vec![web::get().to(shop_pages::home)]))
        .service(page(
            "/products/{id}",
            vec![web::get().to(shop_pages::product)],
        ))
        .service(page(
            "/checkout",
            vec![web::post().to(shop_pages::checkout)],
        ))
        .service(page(
            "/orders/{order_no}",
            vec![web::get().to(shop_pages::order)],
        ))
        .service(page("/assets/{name}", vec![web::get().to(assets::serve)]))
        .service(page("/pay/{order_no}", vec![web::get().to(pay_page::pay)]))
        .service(page(
            "/lookup",
            vec![
                web::get().to(lookup_pages::form),
                web::post().to(lookup_pages::find),
            ],
        ))
        .service(page(
            "/orders/{order_no}/resend",
            vec![web::post().to(lookup_pages::resend)],
        ));
    admin::routes(cfg);
    cfg.default_service(web::to(not_found));
}

/// A posted `application/x-www-form-urlencoded` form.
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Reads a form of at most `limit` bytes; anything unparsable is an
    /// empty form (which no CSRF check passes).
    pub async fn read(
        req: &HttpRequest,
        payload: web::Payload,
        limit: usize,
    ) -> Result<Form, crate::error::Error> {
        let bytes = crate::http::read_body(req, payload, limit).await?;
        Ok(Form(
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field, trimmed; empty is none.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

/// A page context: what every page's frame needs.
pub struct Ctx {
    pub lang: Lang,
    pub shop: String,
    pub csrf: csrf::Csrf,
    /// The request's path and query, for the language switch.
    path: String,
    query: Vec<(String, String)>,
    secure: bool,
}

impl Ctx {
    pub fn new(req: &HttpRequest, state: &State, web: &WebState) -> Ctx {
        Ctx {
            lang: lang(req, state),
            shop: state.config.shop.name.clone(),
            csrf: csrf::Csrf::for_page(req),
            path: req.path().to_string(),
            query: serde_urlencoded::from_str(req.query_string()).unwrap_or_default(),
            secure: web.secure_cookies,
        }
    }

    pub fn t(&self) -> &'static i18n::Texts {
        self.lang.texts()
    }

    /// Whether the query has no parameter but `names`.
    pub fn query_only(&self, names: &[&str]) -> bool {
        self.query.iter().all(|(k, _)| names.contains(&k.as_str()))
    }

    /// This page in the other language.
    pub fn switch_href(&self) -> String {
        let mut q: Vec<(&str, &str)> = self
            .query
            .iter()
            .filter(|(k, _)| k != "lang")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        q.push(("lang", self.lang.other().code()));
        format!(
            "{}?{}",
            self.path,
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    }

    /// The page as an answer: security headers, and the cookies that keep
    /// the language chosen by `?lang=` and the CSRF token.
    pub fn respond(&self, status: StatusCode, web: &WebState, body: Markup) -> HttpResponse {
        let mut res = html(status, web, body);
        if let Some(c) = self.csrf.cookie(self.secure) {
            let _ = res.add_cookie(&c);
        }
        if self.query.iter().any(|(k, _)| k == "lang") {
            let c = actix_web::cookie::Cookie::build("lang", self.lang.code())
                .path("/")
                .same_site(actix_web::cookie::SameSite::Lax)
                .secure(self.secure)
                .max_age(actix_web::cookie::time::Duration::days(365))
                .finish();
            let _ = res.add_cookie(&c);
        }
        res
    }
}

/// Money in minor units as the buyer reads it.
pub fn money(minor: u64, currency: &str) -> String {
    let amount = format!("{}.{:02}", minor / 100, minor % 100);
    match currency {
        "CNY" => format!("¥{amount}"),
        "USD" => format!("${amount}"),
        "EUR" => format!("€{amount}"),
        other => format!("{amount} {other}"),
    }
}
