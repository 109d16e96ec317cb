//! The web pages through HTTP: every page route answers HTML with the
//! security headers, merchant text is escaped, unknown products and orders
//! get the HTML 404 (the API keeps JSON), forms without a CSRF token are
//! refused, and the storefront → order → 补单 → keys story works without
//! JavaScript.

use crate::helpers::*;
use reqwest::blocking::{Client, Response};
use serde_json::json;

pub(crate) fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn page(c: &Client, app: &TestApp, path: &str) -> Response {
    c.get(app.url(path))
        .header("Accept", "text/html")
        .send()
        .expect("page")
}

fn assert_page_headers(r: &Response, what: &str) {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(h("content-type").starts_with("text/html"), "{what}");
    let csp = h("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("referrer-policy"), "same-origin", "{what}");
}

/// The hidden CSRF field of a page.
pub(crate) fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + html[at..].find('"').expect("end")].to_string()
}

pub(crate) fn manual_shop() -> TestApp {
    spawn_with(|dir| {
        config_text(
            dir,
            "[payments.manual]\npublic = true\ninstructions = \"Pay to 6222\"\n",
        )
    })
}

#[test]
fn every_page_answers_html_with_the_security_headers() {
    let app = manual_shop();
    app.product_with_keys("p", 500, 2);
    let c = browser();
    let o = app.order_ok("p", 1, "manual");
    let order_page = format!(
        "/orders/{}?token={}",
        o["order_no"].as_str().unwrap(),
        o["token"].as_str().unwrap()
    );
    for path in [
        "/",
        "/?category=x",
        "/products/p",
        order_page.as_str(),
        "/admin/login",
        "/lookup",
    ] {
        let r = page(&c, &app, path);
        assert_eq!(r.status(), 200, "{path}");
        assert_page_headers(&r, path);
    }
    for path in [
        "/products/nope",
        "/products/NOT%20ID",
        "/orders/F0000000000000000?token=x",
        order_page.replace("token=", "token=x").as_str(),
        "/no-such-page",
    ] {
        let r = page(&c, &app, path);
        assert_eq!(r.status(), 404, "{path}");
        assert_page_headers(&r, path);
        assert!(
            r.text().unwrap().contains("<h1>"),
            "{path}: the HTML 404 page"
        );
    }
    let r = page(&c, &app, "/api/v1/products/nope");
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let r = app.get("/no-such-page");
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "no Accept: text/html, the API's 404"
    );
    let r = page(&c, &app, "/admin");
    assert_eq!(r.status(), 303, "signed out: to the sign-in page");
    assert_eq!(r.headers()["location"], "/admin/login");
}

#[test]
fn merchant_text_is_escaped_and_markdown_cannot_run() {
    let app = spawn();
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "x", "name": "<script>alert(1)</script>", "price": 1,
               "description": "<img src=x onerror=alert(2)> [a](javascript:alert(3)) **ok**",
               "category": "<b>c</b>"}),
    );
    assert_eq!(r.status(), 201);
    app.import("x", &["K-1".into()]);
    let c = browser();
    for path in ["/", "/products/x"] {
        let body = page(&c, &app, path).text().unwrap();
        assert!(!body.contains("<script>alert(1)"), "{path}");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(!body.contains("<b>c</b>"), "{path}");
        assert!(
            !body.contains("onerror") || !body.contains("<img src=\"x\""),
            "{path}"
        );
        assert!(!body.to_lowercase().contains("javascript:"), "{path}");
    }
    assert!(page(&c, &app, "/products/x")
        .text()
        .unwrap()
        .contains("<strong>ok</strong>"));
}

#[test]
fn a_form_post_without_its_csrf_token_is_refused_and_changes_nothing() {
    let app = manual_shop();
    app.product_with_keys("p", 500, 1);
    let c = browser();
    let html = page(&c, &app, "/products/p").text().unwrap();
    let token = csrf_of(&html);
    let before = app.dump();
    for csrf in [None, Some("wrong-but-long-enough-0123456789abcdef")] {
        let mut form = vec![
            ("product_id", "p"),
            ("quantity", "1"),
            ("email", "b@example.com"),
            ("gateway", "manual"),
        ];
        if let Some(t) = csrf {
            form.push(("csrf", t));
        }
        let r = c.post(app.url("/checkout")).form(&form).send().unwrap();
        assert_eq!(r.status(), 403);
        assert_page_headers(&r, "refused");
    }
    // The token without its cookie (another browser) is refused too.
    let r = browser()
        .post(app.url("/checkout"))
        .form(&[
            ("csrf", token.as_str()),
            ("product_id", "p"),
            ("quantity", "1"),
            ("email", "b@example.com"),
            ("gateway", "manual"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(app.url("/admin/login"))
        .form(&[("token", ADMIN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "sign-in is a form too");
    crate::errors::assert_unchanged(&app, &before, "refused forms");
}

#[test]
fn a_buyer_orders_on_the_storefront_and_gets_the_key_once_the_merchant_confirms() {
    let app = manual_shop();
    app.product_with_keys("p", 500, 1);
    let buyer = browser();
    let home = page(&buyer, &app, "/").text().unwrap();
    assert!(home.contains("data-product-id=\"p\""));
    let html = page(&buyer, &app, "/products/p").text().unwrap();
    let r = buyer
        .post(app.url("/checkout"))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("product_id", "p"),
            ("quantity", "1"),
            ("email", "b@example.com"),
            ("gateway", "manual"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let order_page = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        order_page.starts_with("/orders/F") && order_page.contains("?token="),
        "{order_page}"
    );
    let body = page(&buyer, &app, &order_page).text().unwrap();
    assert!(body.contains("data-order-status>pending<"), "{body}");
    assert!(
        body.contains("Pay to 6222"),
        "the manual gateway's instructions"
    );
    assert!(!body.contains("p-KEY-00000"));

    // The merchant signs in and confirms the payment (补单).
    let merchant = browser();
    let login = page(&merchant, &app, "/admin/login").text().unwrap();
    let r = merchant
        .post(app.url("/admin/login"))
        .form(&[("csrf", csrf_of(&login).as_str()), ("token", "wrong")])
        .send()
        .unwrap();
    let st = r.status();
    assert_eq!(st, 401, "{}", r.text().unwrap());
    let r = merchant
        .post(app.url("/admin/login"))
        .form(&[("csrf", csrf_of(&login).as_str()), ("token", ADMIN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("faka_admin="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "http shop: no Secure");
    let dash = page(&merchant, &app, "/admin");
    assert_eq!(dash.status(), 200);
    assert_page_headers(&dash, "dashboard");
    let no = order_page
        .trim_start_matches("/orders/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let detail = page(&merchant, &app, &format!("/admin/orders/{no}"))
        .text()
        .unwrap();
    let r = merchant
        .post(app.url(&format!("/admin/orders/{no}")))
        .form(&[("csrf", csrf_of(&detail).as_str()), ("action", "pay")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(app.admin_order(&no)["status"], "delivered");

    let body = page(&buyer, &app, &order_page).text().unwrap();
    assert!(body.contains("data-order-status>delivered<"));
    assert!(body.contains("<code data-key>p-KEY-00000</code>"), "{body}");

    // Signing out ends the session.
    let r = merchant
        .post(app.url("/admin/logout"))
        .form(&[("csrf", csrf_of(&detail).as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(page(&merchant, &app, "/admin").status(), 303);
}

#[test]
fn the_storefront_shows_every_change_to_products_and_stock_at_once() {
    let app = manual_shop();
    app.product_with_keys("p", 500, 2);
    let c = browser();
    let stock_on_home = |c: &Client| {
        let home = page(c, &app, "/").text().unwrap();
        let at = home.find("data-product-id=\"p\"").expect("card");
        let card = &home[at..at + home[at..].find("</a>").expect("card end")];
        card.to_string()
    };
    assert!(stock_on_home(&c).contains(" 2<"), "{}", stock_on_home(&c));
    app.order_ok("p", 1, "manual");
    assert!(
        stock_on_home(&c).contains(" 1<"),
        "a held key leaves the stock"
    );
    app.product_with_keys("q", 700, 1);
    assert!(page(&c, &app, "/")
        .text()
        .unwrap()
        .contains("data-product-id=\"q\""));
    let en = page(&c, &app, "/?lang=en").text().unwrap();
    assert!(en.contains("lang=\"en\"") && en.contains("data-product-id=\"q\""));
    let other = page(&c, &app, "/?lang=en&ref=x").text().unwrap();
    assert!(
        other.contains("ref=x"),
        "the switch keeps an unknown parameter"
    );
}

/// Product pages are kept rendered between product changes: each buyer
/// still gets a form with their own CSRF token, and a change to the
/// product or its stock shows on the next load.
#[test]
fn a_kept_product_page_carries_each_buyers_own_token_and_every_change() {
    let app = manual_shop();
    app.product_with_keys("p", 500, 3);
    let (a, b) = (browser(), browser());
    let first = |c: &Client| {
        let r = page(c, &app, "/products/p");
        let cookie = set_cookie(&r, "faka_csrf");
        let html = r.text().unwrap();
        (cookie, html)
    };
    let (cookie_a, html_a) = first(&a);
    let (cookie_b, html_b) = first(&b);
    let (token_a, token_b) = (csrf_of(&html_a), csrf_of(&html_b));
    assert_ne!(token_a, token_b, "two buyers, two tokens");
    assert!(
        cookie_a.starts_with(&format!("faka_csrf={token_a};")),
        "{cookie_a}"
    );
    assert!(
        cookie_b.starts_with(&format!("faka_csrf={token_b};")),
        "{cookie_b}"
    );
    // A's second load (a kept page) still carries A's token, and A's order
    // through it is accepted.
    let again = page(&a, &app, "/products/p").text().unwrap();
    assert_eq!(csrf_of(&again), token_a);
    let r = a
        .post(app.url("/checkout"))
        .form(&[
            ("csrf", token_a.as_str()),
            ("product_id", "p"),
            ("quantity", "1"),
            ("email", "a@example.com"),
            ("gateway", "manual"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let stock = |html: &str| html.contains(" 2<") && !html.contains(" 3<");
    assert!(stock(&page(&b, &app, "/products/p").text().unwrap()));
    let r = app
        .admin(app.client.patch(app.url("/api/v1/admin/products/p")))
        .json(&json!({"name": "Renamed"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let renamed = page(&b, &app, "/products/p?lang=en").text().unwrap();
    assert!(renamed.contains("Renamed") && renamed.contains("lang=\"en\""));
    assert_eq!(csrf_of(&renamed), token_b);
}

/// A browser signed in to the admin panel.
pub(crate) fn signed_in_admin(app: &TestApp) -> Client {
    let merchant = browser();
    let login = page(&merchant, app, "/admin/login").text().unwrap();
    let r = merchant
        .post(app.url("/admin/login"))
        .form(&[("csrf", csrf_of(&login).as_str()), ("token", ADMIN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    merchant
}

/// A `multipart/form-data` body as a browser's form sends it: the CSRF
/// field (when given) and the file.
fn key_file_form(csrf: Option<&str>, file: &str) -> (String, String) {
    let b = "----fakaTestBoundary7MA4YWxk";
    let mut body = String::new();
    if let Some(t) = csrf {
        body += &format!("--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{t}\r\n");
    }
    body += &format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"keys.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{file}\r\n--{b}--\r\n"
    );
    (format!("multipart/form-data; boundary={b}"), body)
}

fn available(app: &TestApp, id: &str) -> u64 {
    let v: serde_json::Value = reqwest::blocking::get(app.url(&format!("/api/v1/products/{id}")))
        .unwrap()
        .json()
        .unwrap();
    v["stock"].as_u64().expect("stock")
}

#[test]
fn the_admin_uploads_a_key_file_all_or_nothing_behind_csrf() {
    let app = spawn();
    app.product_with_keys("p", 500, 1);
    let merchant = signed_in_admin(&app);
    let keys_page = page(&merchant, &app, "/admin/products/p/keys")
        .text()
        .unwrap();
    assert!(
        keys_page.contains("enctype=\"multipart/form-data\""),
        "a plain form"
    );
    let token = csrf_of(&keys_page);
    let post = |c: &Client, csrf: Option<&str>, file: &str| {
        let (ct, body) = key_file_form(csrf, file);
        c.post(app.url("/admin/products/p/keys/file"))
            .header("Content-Type", ct)
            .header("Accept", "text/html")
            .body(body)
            .send()
            .unwrap()
    };
    let r = post(&merchant, Some(&token), "FILE-1\nFILE-2\r\nFILE-3\n");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/products/p/keys");
    assert_eq!(available(&app, "p"), 4, "three keys from the file");

    let before = app.dump();
    // No CSRF field, a wrong one, or no session: refused, nothing stored.
    assert_eq!(post(&merchant, None, "FILE-4\n").status(), 403);
    let wrong = "wrong-but-long-enough-0123456789abcdef";
    assert_eq!(post(&merchant, Some(wrong), "FILE-4\n").status(), 403);
    let r = post(&browser(), Some(&token), "FILE-4\n");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/login");
    // A file the API would refuse (a key too long) adds no key at all.
    let long = "x".repeat(10_000);
    let r = post(&merchant, Some(&token), &format!("FILE-5\n{long}\n"));
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_page_headers(&r, "a refused file");
    // Not multipart at all: a clear 4xx.
    let r = merchant
        .post(app.url("/admin/products/p/keys/file"))
        .header("Content-Type", "text/plain")
        .body("FILE-6\n")
        .send()
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    crate::errors::assert_unchanged(&app, &before, "refused key files");
}

fn set_cookie(r: &Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

#[test]
fn an_https_shop_marks_its_cookies_secure() {
    let app = spawn_with(|dir| {
        config_text(dir, "").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://shop.example\"",
        )
    });
    let c = browser();
    let login = page(&c, &app, "/admin/login");
    let csrf_cookie = set_cookie(&login, "faka_csrf");
    assert!(csrf_cookie.contains("Secure"), "{csrf_cookie}");
    let r = c
        .post(app.url("/admin/login"))
        .form(&[
            ("csrf", csrf_of(&login.text().unwrap()).as_str()),
            ("token", ADMIN),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r, "faka_admin");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(session.contains(attr), "{attr}: {session}");
    }
}

#[test]
fn failed_sign_ins_share_the_apis_admin_throttle() {
    let app = spawn_with(|dir| {
        config_text(dir, "").replace(
            "admin_failures_per_minute = 0",
            "admin_failures_per_minute = 3",
        )
    });
    let c = browser();
    let token = csrf_of(&page(&c, &app, "/admin/login").text().unwrap());
    let sign_in = |t: &str| {
        c.post(app.url("/admin/login"))
            .form(&[("csrf", token.as_str()), ("token", t)])
            .send()
            .unwrap()
            .status()
    };
    for _ in 0..3 {
        assert_eq!(sign_in("wrong"), 401);
    }
    assert_eq!(sign_in(ADMIN), 429, "the right token too, for the minute");
    let api = app
        .admin(app.client.get(app.url("/api/v1/admin/orders")))
        .send()
        .unwrap();
    assert_eq!(api.status(), 429, "the API's admin routes share the count");
}

#[test]
fn assets_are_content_hashed_and_cached_for_a_year() {
    let app = spawn();
    let c = browser();
    let home = page(&c, &app, "/").text().unwrap();
    for ext in ["css", "js"] {
        let at = home.find(&format!(".{ext}\"")).expect("asset link");
        let start = home[..at].rfind("/assets/").expect("path");
        let path = &home[start..at + ext.len() + 1];
        let r = c.get(app.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000"));
    }
    assert_eq!(
        c.get(app.url("/assets/app.0000.css"))
            .send()
            .unwrap()
            .status(),
        404
    );
}

/// Issue 25's budget: a buyer's first visit to a storefront of 50 products
/// (the page, its CSS and its JS, gzip-compressed as a browser gets them)
/// is under 60 KB.
#[test]
fn a_storefront_first_load_is_under_60_kb_compressed() {
    let app = spawn();
    for i in 0..50 {
        app.product_with_keys(&format!("p{i:02}"), 500 + i, 1);
    }
    let c = browser();
    let get = |path: &str| {
        // reqwest is built without gzip: the bytes are the wire's.
        let r = c
            .get(app.url(path))
            .header("Accept", "text/html")
            .header("Accept-Encoding", "gzip")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-encoding"], "gzip", "{path}");
        r.bytes().unwrap().len()
    };
    let html = page(&c, &app, "/").text().unwrap();
    assert_eq!(html.matches("data-product-id=").count(), 50);
    let mut total = get("/");
    for ext in ["css", "js"] {
        let at = html.find(&format!(".{ext}\"")).expect("asset link");
        let start = html[..at].rfind("/assets/").expect("path");
        total += get(&html[start..at + ext.len() + 1]);
    }
    assert!(total < 60_000, "first load: {total} bytes compressed");
    eprintln!("storefront first load, 50 products: {total} bytes gzip");
}

#[test]
fn the_language_follows_the_switch_then_accept_language_then_config() {
    let app = spawn();
    let c = browser();
    let zh = page(&c, &app, "/").text().unwrap();
    assert!(zh.contains("lang=\"zh-CN\""), "the default");
    let en = c
        .get(app.url("/"))
        .header("Accept-Language", "en-US,en;q=0.9")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(en.contains("lang=\"en\""));
    let switched = page(&c, &app, "/?lang=en").text().unwrap();
    assert!(switched.contains("lang=\"en\""));
    assert!(
        page(&c, &app, "/").text().unwrap().contains("lang=\"en\""),
        "kept by a cookie"
    );
}
