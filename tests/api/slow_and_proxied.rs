//! Slow clients are cut off, and the client address comes from the socket,
//! or from `X-Forwarded-For` only when the peer is a trusted proxy.

use crate::helpers::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_client_trickling_its_body_gets_408_and_the_worker_back() {
    // One HTTP worker: if the trickler kept it, /healthz would not answer.
    let app = spawn_with(|d| {
        config_text(d, "").replace(
            "[server]\n",
            "[server]\nrequest_timeout_secs = 1\nworkers = 1\n",
        )
    });
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    write!(s, "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").unwrap();
    // A byte every 200 ms: never idle, so only a deadline on the whole body
    // (not an idle timeout) cuts it off.
    let mut w = s.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            if w.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let took = started.elapsed();
    drop(s);
    let _ = trickler.join();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(app.get("/healthz").status(), 200);
}

fn order_from(app: &TestApp, forwarded: Option<&str>, email: &str) -> u16 {
    let mut rb = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&json!({"product_id": "p", "quantity": 1, "email": email, "gateway": "manual"}));
    if let Some(f) = forwarded {
        rb = rb.header("X-Forwarded-For", f);
    }
    rb.send().unwrap().status().as_u16()
}

fn capped(trusted: &str) -> TestApp {
    spawn_with(|d| {
        config_text(d, "")
            .replace("max_pending_per_ip = 0", "max_pending_per_ip = 1")
            .replace(
                "[server]\n",
                &format!("[server]\ntrusted_proxies = [{trusted}]\n"),
            )
    })
}

#[test]
fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let app = capped("\"127.0.0.1\"");
    app.product_with_keys("p", 100, 10);
    assert_eq!(order_from(&app, Some("203.0.113.7"), "a@example.com"), 201);
    assert_eq!(
        order_from(&app, Some("203.0.113.8"), "b@example.com"),
        201,
        "another buyer behind the proxy"
    );
    assert_eq!(
        order_from(&app, Some("203.0.113.7"), "c@example.com"),
        429,
        "the first buyer's cap"
    );
    // A client-supplied chain: the right-most untrusted address is the buyer,
    // so a capped buyer cannot get round the cap with a left-most address
    // of its choice, and one who is not capped is not held to someone else's.
    assert_eq!(
        order_from(&app, Some("198.51.100.3, 203.0.113.7"), "e@example.com"),
        429,
        "the left-most address is the client's own claim"
    );
    assert_eq!(
        order_from(&app, Some("203.0.113.7, 203.0.113.9"), "d@example.com"),
        201
    );
    // A proxy that adds a header line of its own instead of appending: the
    // client's line comes first and does not count.
    let two_lines = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("X-Forwarded-For", "198.51.100.4")
        .header("X-Forwarded-For", "203.0.113.7")
        .json(&json!({"product_id": "p", "quantity": 1, "email": "f@example.com", "gateway": "manual"}))
        .send()
        .unwrap();
    assert_eq!(two_lines.status(), 429, "the proxy's line names the buyer");
    // Bytes that are not text in the client's own entry change nothing.
    let garbled = app
        .client
        .post(app.url("/api/v1/orders"))
        .header(
            "X-Forwarded-For",
            reqwest::header::HeaderValue::from_bytes(b"\xe4\xb8\xad, 203.0.113.7").unwrap(),
        )
        .json(&json!({"product_id": "p", "quantity": 1, "email": "g@example.com", "gateway": "manual"}))
        .send()
        .unwrap();
    assert_eq!(
        garbled.status(),
        429,
        "still the capped buyer, not the proxy"
    );

    let untrusted = capped("");
    untrusted.product_with_keys("p", 100, 10);
    assert_eq!(
        order_from(&untrusted, Some("203.0.113.7"), "a@example.com"),
        201
    );
    assert_eq!(
        order_from(&untrusted, Some("203.0.113.8"), "b@example.com"),
        429,
        "without a trusted proxy the header is ignored: both are 127.0.0.1"
    );
}
