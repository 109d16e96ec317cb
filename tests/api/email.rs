//! E-mail through a real SMTP conversation on loopback (an in-test sink),
//! buyers finding their orders by e-mail and query password, and resends.

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An SMTP server that speaks enough of the protocol for a client to hand
/// it a message. Each session answers `MAIL FROM` with the next scripted
/// code (the last one repeats); `None` never answers at all (a hung server).
pub struct Sink {
    pub url: String,
    pub sessions: Arc<Mutex<usize>>,
    pub got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for at least `n` messages and returns them.
    pub fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        eventually(Duration::from_secs(30), || {
            let got = self.messages();
            (got.len() >= n).then_some(got)
        })
    }
}

pub fn sink(script: Vec<Option<u16>>) -> Sink {
    sink_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
}

pub fn sink_on(listener: TcpListener, script: Vec<Option<u16>>) -> Sink {
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let sessions: Arc<Mutex<usize>> = Arc::default();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (s, g) = (sessions.clone(), got.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let n = {
                let mut s = s.lock().unwrap();
                *s += 1;
                *s - 1
            };
            let answer = script.get(n).or(script.last()).copied().flatten();
            let g = g.clone();
            std::thread::spawn(move || match answer {
                Some(code) => session(stream, code, &g),
                None => hang(stream),
            });
        }
    });
    Sink { url, sessions, got }
}

/// Holds the connection open without a word until the client gives up.
fn hang(stream: TcpStream) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
    }
}

fn session(mut stream: TcpStream, mail_code: u16, got: &Mutex<Vec<Vec<u8>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let _ = stream.write_all(b"220 sink ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250-sink\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n",
            "MAIL" if mail_code == 250 => b"250 2.1.0 OK\r\n",
            "MAIL" => b"451 4.3.0 try again later\r\n",
            "RCPT" | "RSET" | "NOOP" => b"250 2.1.5 OK\r\n",
            "DATA" => {
                let _ = stream.write_all(b"354 go ahead\r\n");
                got.lock().unwrap().push(read_data(&mut reader));
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                let _ = stream.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"502 5.5.2 what\r\n",
        };
        if stream.write_all(reply).is_err() {
            return;
        }
    }
}

/// The message up to the lone dot, dot-unstuffed.
fn read_data(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut msg = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 || line == b".\r\n" {
            return msg;
        }
        let body = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        msg.extend_from_slice(body);
    }
}

/// The test shop's config with e-mail to `smtp_url` (`email_extra` goes
/// into `[email]`), a shop name in Chinese and a public URL for links.
pub fn email_config(dir: &std::path::Path, smtp_url: &str, email_extra: &str) -> String {
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\n";
    config_text(
        dir,
        &format!(
            "[email]\nsmtp_url = \"{smtp_url}\"\nfrom = \"卡密小店 <shop@example.com>\"\n\
             retry_base_ms = 100\ntimeout_secs = 5\n{email_extra}\n[shop]\nname = \"卡密小店\"\n"
        ),
    )
    .replacen(
        listen,
        &format!("{listen}public_url = \"https://shop.example.com\"\n"),
        1,
    )
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a valid MIME message")
}

/// Creates product `p` with keys and instructions, orders `quantity` with
/// `body` extras, pays it; the create response.
fn bought(app: &TestApp, extra: Value) -> Value {
    let mut body =
        json!({"product_id": "p", "quantity": 1, "email": "Buyer@Example.com", "gateway": "hmac"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = app.post("/api/v1/orders", body);
    assert_eq!(r.status(), 201);
    let o: Value = r.json().unwrap();
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(
        app.hmac_notify(no, &format!("T-{no}"), o["amount"].as_u64().unwrap())
            .status(),
        200
    );
    o
}

fn product(app: &TestApp, keys: &[&str], low_stock: u64) {
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "p", "name": "Steam 充值卡", "price": 100, "max_quantity": 10,
               "instructions": "Redeem at store.example.com", "low_stock": low_stock}),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    if !keys.is_empty() {
        app.import("p", &keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
    }
}

fn emails(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.admin_get(&format!("/api/v1/admin/emails?{query}"));
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["emails"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_delivery_email_carries_the_key_in_text_and_html_with_a_utf8_subject() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, ""));
    product(&app, &["KEY-ALPHA-1"], 0);
    let o = bought(&app, json!({}));
    let no = o["order_no"].as_str().unwrap();
    let token = o["token"].as_str().unwrap();
    let raw = s.wait_for(1).remove(0);
    let m = parse(&raw);
    assert_eq!(
        m.subject(),
        Some(format!("[卡密小店] 订单 {no} 已发货").as_str())
    );
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(
        !raw_text.contains("卡密小店]"),
        "the subject is encoded, not raw UTF-8"
    );
    assert!(m.message_id().is_some_and(|id| id.contains("eml_")));
    assert!(m.date().is_some());
    assert_eq!(
        m.to().and_then(|t| t.first()).and_then(|a| a.address()),
        Some("Buyer@example.com")
    );
    assert_eq!((m.text_body_count(), m.html_body_count()), (1, 1));
    let text = m.body_text(0).unwrap();
    let html = m.body_html(0).unwrap();
    let link = format!("https://shop.example.com/orders/{no}?token={token}");
    for part in [&text, &html] {
        assert!(part.contains("KEY-ALPHA-1"), "{part}");
        assert!(part.contains("Steam 充值卡"), "{part}");
        assert!(part.contains("Redeem at store.example.com"), "{part}");
        assert!(part.contains(&link), "{part}");
    }
    let sent = eventually(Duration::from_secs(10), || {
        let sent = emails(&app, "state=sent");
        (!sent.is_empty()).then_some(sent)
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["type"], "order.delivered");
    assert_eq!(sent[0]["attempts"], 1);
}

#[test]
fn send_keys_false_keeps_the_key_text_out_of_the_email() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, "send_keys = false\n"));
    product(&app, &["KEY-SECRET-9"], 0);
    bought(&app, json!({}));
    let raw = s.wait_for(1).remove(0);
    assert!(!String::from_utf8_lossy(&raw).contains("KEY-SECRET-9"));
    let m = parse(&raw);
    assert!(!m.body_text(0).unwrap().contains("KEY-SECRET-9"));
    assert!(m.body_text(0).unwrap().contains("/orders/"));
}

#[test]
fn a_server_answering_451_twice_gets_the_message_on_the_third_try() {
    let s = sink(vec![Some(451), Some(451), Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, ""));
    product(&app, &["K-1"], 0);
    bought(&app, json!({}));
    s.wait_for(1);
    let sent = eventually(Duration::from_secs(10), || {
        let sent = emails(&app, "state=sent");
        (!sent.is_empty()).then_some(sent)
    });
    assert_eq!(sent[0]["attempts"], 3);
    assert_eq!(*s.sessions.lock().unwrap(), 3);
    assert_eq!(s.messages().len(), 1);
}

#[test]
fn a_dead_email_is_sent_once_the_admin_retries_it() {
    let s = sink(vec![Some(451), Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, "give_up_secs = 0\n"));
    product(&app, &["K-1"], 0);
    bought(&app, json!({}));
    let dead = eventually(Duration::from_secs(10), || {
        let dead = emails(&app, "state=dead");
        (!dead.is_empty()).then_some(dead)
    });
    assert!(s.messages().is_empty());
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("451"),
        "{}",
        dead[0]
    );
    let id = dead[0]["id"].as_str().unwrap();
    let r = app.admin_post(&format!("/api/v1/admin/emails/{id}/retry"), json!({}));
    assert_eq!(r.status(), 200);
    s.wait_for(1);
    let r = app.admin_post(&format!("/api/v1/admin/emails/{id}/retry"), json!({}));
    assert_eq!(r.status(), 409, "only dead e-mails are retried");
    let r = app.admin_post("/api/v1/admin/emails/eml_0000000000009999/retry", json!({}));
    assert_eq!(r.status(), 404);
    let m = app.get("/metrics");
    assert_eq!(m.status(), 401, "metrics are admin-only");
    let text = app.admin_get("/metrics").text().unwrap();
    assert!(
        text.contains("faka_emails_total{result=\"dead\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("faka_emails_total{result=\"sent\"} 1"),
        "{text}"
    );
    assert!(text.contains("faka_email_send_seconds_count 2"), "{text}");
}

#[test]
fn emails_committed_before_a_kill_9_are_sent_after_restart() {
    // Nothing listens while the order is paid and faka is killed.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    drop(holder);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |text| {
        text + &format!("[email]\nsmtp_url = \"smtp://{addr}\"\nfrom = \"shop@example.com\"\nretry_base_ms = 100\n")
    });
    let mut server = start_binary(&config);
    let c = reqwest::blocking::Client::new();
    seed(
        &server.base,
        json!({"id": "p", "name": "P", "price": 100}),
        &["K-CRASH".to_string()],
    );
    let o: Value = c
        .post(format!("{}/api/v1/orders", server.base))
        .json(&json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "hmac"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let no = o["order_no"].as_str().unwrap();
    assert_eq!(pay_hmac(&c, &server.base, no, "T-1", 100), Some(200));
    server.child.kill().unwrap();
    let _ = server.child.wait();

    let s = sink_on(TcpListener::bind(addr).unwrap(), vec![Some(250)]);
    let mut server = start_binary(&config);
    let raw = s.wait_for(1).remove(0);
    assert!(String::from_utf8_lossy(&raw).contains("K-CRASH"));
    server.child.kill().unwrap();
    let _ = server.child.wait();
}

fn lookup(app: &TestApp, email: &str, password: &str) -> reqwest::blocking::Response {
    app.post(
        "/api/v1/orders/lookup",
        json!({"email": email, "query_password": password}),
    )
}

#[test]
fn lookup_finds_password_orders_with_keys_and_nothing_else() {
    let app = spawn();
    product(&app, &["K-1", "K-2", "K-3"], 0);
    let first = bought(&app, json!({"query_password": "秘密pass"}));
    let second = bought(&app, json!({"query_password": "秘密pass"}));
    bought(&app, json!({}));
    let r = lookup(&app, "buyer@EXAMPLE.com", "秘密pass");
    assert_eq!(r.status(), 200);
    let found: Value = r.json().unwrap();
    let nos: Vec<&str> = found["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_no"].as_str().unwrap())
        .collect();
    assert_eq!(
        nos,
        [
            second["order_no"].as_str().unwrap(),
            first["order_no"].as_str().unwrap()
        ],
        "newest first, no password-less order"
    );
    assert_eq!(found["orders"][0]["status"], "delivered");
    assert_eq!(found["orders"][0]["keys"].as_array().unwrap().len(), 1);

    let wrong = lookup(&app, "buyer@example.com", "wrong-pass");
    let unknown = lookup(&app, "nobody@example.com", "秘密pass");
    for r in [wrong, unknown] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), r#"{"orders":[]}"#);
    }
    // Nothing about a password is stored but its argon2id hash.
    let stored = app
        .store
        .order(first["order_no"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert!(stored.query_password_phc.unwrap().starts_with("$argon2id$"));
    assert!(stored.query_password_hash.is_none());
}

#[test]
fn a_query_password_is_4_to_64_characters() {
    let app = spawn();
    product(&app, &["K-1"], 0);
    for pw in ["abc".to_string(), "x".repeat(65)] {
        let r = app.post(
            "/api/v1/orders",
            json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "hmac", "query_password": pw}),
        );
        assert_eq!(error_code(r), (422, "invalid_request".into()));
        assert_eq!(
            error_code(lookup(&app, "a@b.co", &pw)),
            (422, "invalid_request".into())
        );
    }
    let r = app.post(
        "/api/v1/orders",
        json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "hmac", "query_password": "密码密码"}),
    );
    assert_eq!(r.status(), 201, "four characters, whatever their bytes");
}

#[test]
fn lookups_are_rate_limited_per_email_and_per_address() {
    let app = spawn_with(|d| {
        config_text(d, "").replace(
            "lookups_per_minute = 0\n",
            "lookups_per_minute = 0\npassword_lookups_per_minute = 5\nlookups_per_email_per_hour = 2\n",
        )
    });
    for _ in 0..2 {
        assert_eq!(lookup(&app, "a@b.co", "pass-1").status(), 200);
    }
    let (status, code) = error_code(lookup(&app, "A@b.co", "pass-1"));
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "per e-mail, any case"
    );
    assert_eq!(
        lookup(&app, "c@d.co", "pass-1").status(),
        200,
        "another e-mail"
    );
    // Five from this address in the minute are spent now.
    assert_eq!(lookup(&app, "e@f.co", "pass-1").status(), 200);
    assert_eq!(error_code(lookup(&app, "g@h.co", "pass-1")).0, 429);
}

#[test]
fn resend_answers_the_same_and_sends_at_most_three_times_an_hour() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, ""));
    product(&app, &["K-1"], 0);
    let o = bought(&app, json!({}));
    let no = o["order_no"].as_str().unwrap();
    s.wait_for(1);
    let resend = |email: &str| {
        let r = app.post(
            &format!("/api/v1/orders/{no}/resend"),
            json!({"email": email}),
        );
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<Value>().unwrap(), json!({"ok": true}));
    };
    resend("someone@else.com");
    let r = app.post(
        "/api/v1/orders/FNOSUCHORDER00000/resend",
        json!({"email": "a@b.co"}),
    );
    assert_eq!(r.status(), 202);
    for _ in 0..5 {
        resend("buyer@example.com");
    }
    let all = s.wait_for(4);
    let delivered = emails(&app, "")
        .iter()
        .filter(|e| e["type"] == "order.delivered")
        .count();
    assert_eq!(delivered, 4, "the first e-mail and three resends");
    assert_eq!(all.len(), 4);
    assert!(all
        .iter()
        .all(|m| String::from_utf8_lossy(m).contains("K-1")));
}

#[test]
fn stock_low_alerts_once_per_crossing() {
    let app = spawn_with(|d| {
        email_config(
            d,
            "smtp://127.0.0.1:1",
            "merchant = \"owner@example.com\"\n",
        )
    });
    product(&app, &["K-1", "K-2", "K-3", "K-4", "K-5"], 3);
    let low = || {
        emails(&app, "")
            .iter()
            .filter(|e| e["type"] == "stock.low" && e["to"] == "merchant")
            .count()
    };
    bought(&app, json!({}));
    bought(&app, json!({}));
    assert_eq!(low(), 0, "3 left is not below 3");
    bought(&app, json!({}));
    assert_eq!(low(), 1);
    bought(&app, json!({}));
    assert_eq!(low(), 1, "still below: no second alert");
    app.import("p", &["K-6".to_string(), "K-7".to_string()]);
    assert_eq!(low(), 1);
    bought(&app, json!({"quantity": 2}));
    assert_eq!(low(), 2, "back at 3, then below again");
}

fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The hidden CSRF field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[test]
fn the_lookup_page_finds_orders_and_the_order_page_sends_the_email_again() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| email_config(d, &s.url, ""));
    product(&app, &["KEY-PAGE-1"], 0);
    let o = bought(&app, json!({"query_password": "pass-page"}));
    let no = o["order_no"].as_str().unwrap();
    s.wait_for(1);
    let c = browser();
    let form = c.get(app.url("/lookup")).send().unwrap().text().unwrap();
    assert!(form.contains("minlength=\"4\""));
    let post = |fields: &[(&str, &str)]| c.post(app.url("/lookup")).form(fields).send().unwrap();
    let r = post(&[
        ("email", "buyer@example.com"),
        ("query_password", "pass-page"),
    ]);
    assert_eq!(r.status(), 403, "no CSRF token");
    let token = csrf_of(&form);
    let fields = [("csrf", token.as_str()), ("email", "buyer@example.com")];
    let found = post(&[fields[0], fields[1], ("query_password", "pass-page")])
        .text()
        .unwrap();
    assert!(
        found.contains(no) && found.contains("KEY-PAGE-1"),
        "{found}"
    );
    let none = post(&[fields[0], fields[1], ("query_password", "wrong-pass")])
        .text()
        .unwrap();
    assert!(none.contains("data-lookup-empty") && !none.contains(no));

    let page = c
        .get(app.url(&format!(
            "/orders/{no}?token={}",
            o["token"].as_str().unwrap()
        )))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains(&format!("action=\"/orders/{no}/resend\"")));
    let r = c
        .post(app.url(&format!("/orders/{no}/resend")))
        .form(&[
            ("csrf", csrf_of(&page).as_str()),
            ("email", "BUYER@example.com"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.text().unwrap().contains("data-resend-done"));
    s.wait_for(2);
}

#[test]
fn a_paid_order_waiting_for_stock_tells_the_buyer_and_the_merchant() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| {
        email_config(d, &s.url, "merchant = \"owner@example.com\"\n")
            .replace("hold_secs = 900", "hold_secs = 1")
    });
    product(&app, &["K-ONLY"], 0);
    let late = app.order_ok("p", 1, "hmac");
    let no = late["order_no"].as_str().unwrap();
    eventually(Duration::from_secs(10), || {
        (app.admin_order(no)["status"] == "expired").then_some(())
    });
    app.order_ok("p", 1, "hmac"); // holds the only key
    assert_eq!(app.hmac_notify(no, "T-LATE", 100).status(), 200);
    assert_eq!(app.admin_order(no)["status"], "awaiting_stock");
    let got = s.wait_for(2);
    let mut to: Vec<String> = got
        .iter()
        .map(|raw| {
            let m = parse(raw);
            assert!(m.subject().unwrap().contains(no), "{:?}", m.subject());
            m.to()
                .unwrap()
                .first()
                .unwrap()
                .address()
                .unwrap()
                .to_string()
        })
        .collect();
    to.sort();
    assert_eq!(to, ["buyer@example.com", "owner@example.com"]);
}

#[test]
fn a_dead_webhook_is_reported_to_the_merchant() {
    let s = sink(vec![Some(250)]);
    let app = spawn_with(|d| {
        email_config(d, &s.url, "merchant = \"owner@example.com\"\n")
            + "[webhooks]\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"s\"\nretry_base_ms = 50\ngive_up_secs = 0\n"
    });
    product(&app, &["K-1"], 0);
    let o = bought(&app, json!({}));
    let no = o["order_no"].as_str().unwrap();
    let dead: Vec<Value> = eventually(Duration::from_secs(20), || {
        let dead: Vec<Value> = emails(&app, "")
            .into_iter()
            .filter(|e| e["type"] == "webhook.dead")
            .collect();
        (dead.len() == 2).then_some(dead)
    });
    assert!(dead
        .iter()
        .all(|e| e["to"] == "merchant" && e["order_no"] == no));
    let merchant_mail = eventually(Duration::from_secs(20), || {
        s.messages().into_iter().find(|raw| {
            parse(raw).to().unwrap().first().unwrap().address() == Some("owner@example.com")
        })
    });
    let text = parse(&merchant_mail).body_text(0).unwrap().into_owned();
    assert!(
        text.contains(no) && text.contains("/api/v1/admin/webhooks/evt_"),
        "{text}"
    );
}

#[test]
fn a_hanging_smtp_server_does_not_hold_up_orders_or_payments() {
    let s = sink(vec![None]);
    let app = spawn_with(|d| {
        email_config(d, &s.url, "workers = 1\n").replace("timeout_secs = 5", "timeout_secs = 2")
    });
    product(&app, &[], 0);
    app.import("p", &(0..30).map(|i| format!("K-{i}")).collect::<Vec<_>>());
    // Each session waits 2 s for the hanging server: were e-mails sent on
    // the payment's path, these 30 payments would take a minute at least.
    let started = std::time::Instant::now();
    for i in 0..30 {
        let o = app.order_ok("p", 1, "hmac");
        let r = app.hmac_notify(o["order_no"].as_str().unwrap(), &format!("T-{i}"), 100);
        assert_eq!(r.json::<Value>().unwrap()["status"], "delivered");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "payments waited for e-mail: {:?}",
        started.elapsed()
    );
    assert!(
        emails(&app, "state=pending").len() >= 29,
        "e-mails wait in the outbox"
    );
    assert!(s.messages().is_empty());
}

/// The merchant sees a dead e-mail on the dashboard and the webhooks page
/// and sends it again with the page's button (behind CSRF).
#[test]
fn the_admin_panel_counts_dead_emails_and_retries_them() {
    use crate::web::{csrf_of, page, signed_in_admin};
    let s = sink(vec![Some(451), Some(250)]);
    let app = spawn_with(|d| {
        config_text(
            d,
            &format!(
                "[email]\nsmtp_url = \"{}\"\nfrom = \"shop@example.com\"\n\
                 retry_base_ms = 100\ntimeout_secs = 5\ngive_up_secs = 0\n",
                s.url
            ),
        )
    });
    product(&app, &["K-ADMIN-1"], 0);
    bought(&app, json!({}));
    let dead = eventually(Duration::from_secs(10), || {
        let dead = emails(&app, "state=dead");
        (!dead.is_empty()).then_some(dead)
    });
    let id = dead[0]["id"].as_str().unwrap().to_string();
    let merchant = signed_in_admin(&app);
    let dashboard = page(&merchant, &app, "/admin").text().unwrap();
    let at = dashboard
        .find("data-dead-emails")
        .expect("dead e-mails card");
    assert!(
        dashboard[at..].contains("#emails\">1<"),
        "{}",
        &dashboard[at..at + 120]
    );
    let list = page(&merchant, &app, "/admin/webhooks").text().unwrap();
    assert!(list.contains(&format!("data-email-id=\"{id}\"")), "{list}");
    let seq = id
        .trim_start_matches("eml_")
        .trim_start_matches('0')
        .to_string();
    let post = |csrf: &str| {
        merchant
            .post(app.url("/admin/emails"))
            .form(&[("csrf", csrf), ("seq", seq.as_str())])
            .send()
            .unwrap()
    };
    assert_eq!(
        post("wrong-token-that-is-long-enough-0123456789").status(),
        403
    );
    assert!(s.messages().is_empty(), "a refused post sends nothing");
    let r = post(&csrf_of(&list));
    assert_eq!(r.status(), 303);
    s.wait_for(1);
    let after = page(&merchant, &app, "/admin/webhooks").text().unwrap();
    assert!(!after.contains(&format!("data-email-id=\"{id}\"")));
}
