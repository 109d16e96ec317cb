//! Abuse limits: a reservation flood from one address or one e-mail cannot
//! hold more than its cap; order creation, lookups and failed admin logins
//! are throttled with 429 and Retry-After.

use crate::helpers::*;
use serde_json::json;

fn limited_app(limits: &str) -> TestApp {
    spawn_with(|dir| {
        let text = config_text(dir, "");
        let start = text.find("[limits]").unwrap();
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        let mut out = text.clone();
        out.replace_range(start..end, &format!("[limits]\n{limits}"));
        out
    })
}

fn order_as(app: &TestApp, email: &str) -> reqwest::blocking::Response {
    app.post(
        "/api/v1/orders",
        json!({"product_id": "p", "quantity": 1, "email": email, "gateway": "manual"}),
    )
}

#[test]
fn a_reservation_flood_from_one_address_cannot_hold_more_than_its_cap() {
    let app =
        limited_app("max_pending_per_ip = 3\nmax_pending_per_email = 0\norders_per_minute = 0");
    app.product_with_keys("p", 100, 50);
    let mut created = Vec::new();
    for i in 0..20 {
        let r = order_as(&app, &format!("buyer{i}@example.com"));
        if r.status() == 201 {
            created.push(r.json::<serde_json::Value>().unwrap());
        } else {
            assert_eq!(r.status(), 429);
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(error_code(r).1, "rate_limited");
        }
    }
    assert_eq!(created.len(), 3, "three holds, the rest refused");
    assert_eq!(app.admin_product("p")["keys"]["held"], 3);
    // Paying one frees a slot.
    let no = created[0]["order_no"].as_str().unwrap();
    app.admin_post(&format!("/api/v1/admin/orders/{no}/pay"), json!({}));
    assert_eq!(order_as(&app, "late@example.com").status(), 201);
    assert_eq!(order_as(&app, "later@example.com").status(), 429);
}

#[test]
fn one_email_cannot_hold_more_than_its_cap_in_any_letter_case() {
    let app =
        limited_app("max_pending_per_ip = 0\nmax_pending_per_email = 2\norders_per_minute = 0");
    app.product_with_keys("p", 100, 10);
    assert_eq!(order_as(&app, "Flood@example.com").status(), 201);
    assert_eq!(order_as(&app, "flood@Example.com").status(), 201);
    assert_eq!(
        error_code(order_as(&app, "FLOOD@example.com")),
        (429, "rate_limited".into())
    );
    assert_eq!(order_as(&app, "someone@example.com").status(), 201);
}

#[test]
fn order_creation_is_rate_limited_per_address() {
    let app =
        limited_app("orders_per_minute = 5\nmax_pending_per_ip = 0\nmax_pending_per_email = 0");
    app.product_with_keys("p", 100, 20);
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            order_as(&app, &format!("b{i}@example.com"))
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
}

#[test]
fn order_lookups_are_rate_limited_so_tokens_cannot_be_guessed() {
    let app = limited_app("lookups_per_minute = 10\norders_per_minute = 0\nmax_pending_per_ip = 0\nmax_pending_per_email = 0");
    app.product_with_keys("p", 100, 1);
    let o = app.order_ok("p", 1, "manual");
    let no = o["order_no"].as_str().unwrap();
    let mut codes = Vec::new();
    for i in 0..15 {
        codes.push(
            app.buyer_view(no, &format!("guess-{i:026}"))
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 404).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 5, "{codes:?}");
    assert_eq!(
        app.buyer_view(no, o["token"].as_str().unwrap()).status(),
        429,
        "even the right token waits"
    );
}

#[test]
fn repeated_admin_failures_are_throttled() {
    let app = limited_app("admin_failures_per_minute = 3\norders_per_minute = 0\nmax_pending_per_ip = 0\nmax_pending_per_email = 0\nlookups_per_minute = 0");
    for _ in 0..3 {
        let r = app
            .client
            .get(app.url("/api/v1/admin/products"))
            .bearer_auth("nope")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = app
        .client
        .get(app.url("/api/v1/admin/products"))
        .bearer_auth("nope")
        .send()
        .unwrap();
    assert_eq!(error_code(r), (429, "rate_limited".into()));
    let r = app.admin_get("/api/v1/admin/products");
    assert_eq!(
        r.status(),
        429,
        "the address is throttled, even with the right token"
    );
}

/// Guesses sent all at once pass the cap no better than one by one: of 40
/// concurrent wrong tokens from one address, exactly the cap are checked.
#[test]
fn concurrent_admin_guesses_are_throttled_like_sequential_ones() {
    let app = limited_app("admin_failures_per_minute = 5\norders_per_minute = 0\nmax_pending_per_ip = 0\nmax_pending_per_email = 0\nlookups_per_minute = 0");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let app = &app;
                s.spawn(move || {
                    app.client
                        .get(app.url("/api/v1/admin/products"))
                        .bearer_auth(format!("guess-{i}"))
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let count = |code| statuses.iter().filter(|&&s| s == code).count();
    assert_eq!((count(401), count(429)), (5, 35), "{statuses:?}");
}
