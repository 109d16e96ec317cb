//! The pages in a real headless Chromium, driven over W3C WebDriver by
//! `chromedriver`. The WebDriver protocol is plain JSON over HTTP, spoken
//! here with the blocking `reqwest` the tests already use, instead of a
//! driver crate (`fantoccini`, `thirtyfour`) that would bring an async
//! stack and a longer build for a few calls. Runs when `CI` is set or a
//! chromium is installed; otherwise says it was skipped. With
//! `FAKA_SCREENSHOTS=1` it also writes the README's screenshots to `docs/`.

use crate::helpers::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    base: String,
    http: Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser<'a> {
    d: &'a Driver,
    session: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        };
        eventually(Duration::from_secs(20), || {
            d.http
                .get(format!("{}/status", d.base))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
        });
        d
    }

    fn browser(&self, width: u32, height: u32, lang: &str) -> Browser<'_> {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={width},{height}"),
            &format!("--lang={lang}"),
        ];
        let mut options = json!({"binary": CHROMIUM, "args": args,
            "prefs": {"intl.accept_languages": lang}});
        if width < 500 {
            // Headless windows are at least 500 px wide; a phone is emulated.
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}});
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": options}}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .expect("new session")
            .json()
            .expect("json");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            d: self,
            session,
            _profile: profile,
        }
    }
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.d.base, self.session);
        let rb = match method {
            "GET" => self.d.http.get(url),
            "DELETE" => self.d.http.delete(url),
            _ => self.d.http.post(url).json(&body),
        };
        let v: Value = rb.send().expect("webdriver").json().expect("json");
        if v["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e.as_str())
            .expect("element")
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), json!({}))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn url(&self) -> String {
        self.call("GET", "/url", json!({}))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits for a navigation (a click returns before it ends).
    fn wait_url(&self, ok: impl Fn(&str) -> bool) -> String {
        eventually(Duration::from_secs(20), || {
            Some(self.url()).filter(|u| ok(u))
        })
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine;
        if std::env::var_os("FAKA_SCREENSHOTS").is_none() {
            return;
        }
        let b64 = self.call("GET", "/screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .expect("png");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write png");
    }

    /// Every resource the page loaded came from the shop itself.
    fn assert_same_origin(&self, base: &str) {
        let names = self.js("return performance.getEntriesByType('resource').map(e => e.name)");
        for n in names.as_array().expect("list") {
            let n = n.as_str().unwrap_or("");
            assert!(
                n.starts_with(base) || n.starts_with("data:"),
                "loaded from elsewhere: {n}"
            );
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .d
            .http
            .delete(format!("{}/session/{}", self.d.base, self.session))
            .send();
    }
}

fn available() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(DRIVER).exists();
    if !found && std::env::var_os("CI").is_some() {
        panic!("CI is set but {CHROMIUM} or {DRIVER} is missing (.ci/run installs them)");
    }
    if !found {
        println!("browser tests skipped: no {CHROMIUM} / {DRIVER}");
    }
    found
}

#[test]
fn a_buyer_orders_and_sees_the_key_appear_when_the_merchant_confirms_payment() {
    if !available() {
        return;
    }
    let app = spawn_with(|dir| {
        config_text(dir, "[shop]\nname = \"Steam 小店\"\n[payments.manual]\npublic = true\ninstructions = \"Alipay 138-0000-0000\"\n")
    });
    for (id, name, cat, price) in [
        ("steam-10", "Steam 10 USD", "Steam", 6900),
        ("steam-50", "Steam 50 USD", "Steam", 33900),
        ("netflix", "Netflix 1 month", "Video", 4500),
        ("office", "Office 365 key", "Software", 9900),
    ] {
        let r = app.admin_post("/api/v1/admin/products", json!({"id": id, "name": name, "category": cat, "price": price,
            "description": "**Instant delivery.** Redeem in the app.", "instructions": "Open the app → Redeem → paste the key."}));
        assert_eq!(r.status(), 201);
    }
    app.import(
        "steam-10",
        &["STEAM-AAAA-BBBB-CCCC".into(), "STEAM-DDDD-EEEE-FFFF".into()],
    );
    app.import("netflix", &["NFLX-1234-5678".into()]);
    let d = Driver::start();
    let buyer = d.browser(1280, 900, "en");
    buyer.go(&app.url("/"));
    buyer.find("[data-product-id=\"steam-10\"]");
    buyer.assert_same_origin(&app.base);
    buyer.screenshot("storefront-en");
    buyer.click("[data-product-id=\"steam-10\"]");
    buyer.wait_url(|u| u.ends_with("/products/steam-10"));
    buyer.type_into("input[name=email]", "buyer@example.com");
    buyer.click("button[type=submit]");
    buyer.wait_url(|u| u.contains("/orders/") && u.contains("token="));
    assert_eq!(buyer.text("[data-order-status]"), "pending");
    buyer.js("window.__notReloaded = true");
    let order_no = buyer
        .js("return document.querySelector('[data-order-no]').dataset.orderNo")
        .as_str()
        .expect("no")
        .to_string();

    let merchant = d.browser(1280, 900, "zh-CN");
    merchant.go(&app.url("/admin/login"));
    merchant.type_into("input[name=token]", ADMIN);
    merchant.click("button[type=submit]");
    merchant.wait_url(|u| u.ends_with("/admin"));
    merchant.go(&app.url(&format!("/admin/orders/{order_no}")));
    merchant.click("[data-manual-pay]");
    eventually(Duration::from_secs(20), || {
        (app.admin_order(&order_no)["status"] == "delivered").then_some(())
    });
    merchant.go(&app.url(&format!("/admin/orders/{order_no}")));
    assert_eq!(merchant.text("[data-order-status]"), "delivered");
    merchant.go(&app.url("/admin"));
    merchant.screenshot("admin-dashboard");

    // The merchant imports a key file through the upload form; the bar
    // shows (the XHR path) and the stock rises.
    let stock = || {
        app.get("/api/v1/products/steam-10")
            .json::<Value>()
            .unwrap()["stock"]
            .as_u64()
    };
    let before = stock().expect("stock");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, "UPLOAD-0001\nUPLOAD-0002\nUPLOAD-0003\n").expect("key file");
    merchant.go(&app.url("/admin/products/steam-10/keys"));
    merchant.js(
        "var bar = document.querySelector('[data-progress]');\
         new MutationObserver(function () { if (!bar.hidden) sessionStorage.setItem('bar', 'shown'); })\
           .observe(bar, { attributes: true })",
    );
    merchant.type_into("input[data-key-file]", &file.to_string_lossy());
    merchant.click("form[data-key-upload] button[type=submit]");
    eventually(Duration::from_secs(20), || {
        (stock() == Some(before + 3)).then_some(())
    });
    eventually(Duration::from_secs(20), || {
        let shown = merchant.js("return sessionStorage.getItem('bar')");
        (shown == json!("shown")).then_some(())
    });
    let now = (before + 3).to_string();
    eventually(Duration::from_secs(20), || {
        let a = merchant
            .js("var a = document.querySelector('[data-available]'); return a && a.textContent");
        (a == json!(now)).then_some(())
    });
    merchant.screenshot("admin-keys-zh");

    // The buyer's page shows the key by itself, without a reload.
    let key = eventually(Duration::from_secs(30), || {
        let k = buyer.js("var k = document.querySelector('[data-key]'); return k && k.offsetParent ? k.textContent : null");
        k.as_str().map(str::to_string)
    });
    assert!(key.starts_with("STEAM-"), "{key}");
    assert_eq!(
        buyer.js("return window.__notReloaded === true"),
        json!(true),
        "no reload"
    );
    assert_eq!(buyer.text("[data-order-status]"), "delivered");
    buyer.screenshot("order-delivered");
    buyer.assert_same_origin(&app.base);

    // The language switch.
    buyer.go(&app.url("/"));
    buyer.click("[data-lang-switch]");
    buyer.wait_url(|u| u.contains("lang=zh-CN"));
    assert_eq!(
        buyer.js("return document.documentElement.lang"),
        json!("zh-CN")
    );
    buyer.screenshot("storefront-zh");

    // A form post without its CSRF token is refused.
    buyer.go(&app.url("/products/steam-10"));
    buyer.type_into("input[name=email]", "buyer@example.com");
    buyer.js("document.querySelector('input[name=csrf]').remove()");
    buyer.click("button[type=submit]");
    buyer.wait_url(|u| u.ends_with("/checkout"));
    assert_eq!(buyer.text("h1"), "请求被拒绝");
}

#[test]
fn at_phone_width_no_page_scrolls_sideways() {
    if !available() {
        return;
    }
    let app = spawn_with(|dir| config_text(dir, "[payments.manual]\npublic = true\n"));
    let r = app.admin_post("/api/v1/admin/products", json!({"id": "p", "name": "A product with a rather long name that must wrap on a phone", "category": "Games", "price": 6900}));
    assert_eq!(r.status(), 201);
    app.import(
        "p",
        &[
            "PHONE-KEY-0001-WITH-A-LONG-TAIL-THAT-MUST-WRAP-0000".into(),
            "PHONE-KEY-0002".into(),
        ],
    );
    let o = app.order_ok("p", 1, "manual");
    let d = Driver::start();
    for lang in ["zh-CN", "en"] {
        let phone = d.browser(375, 812, lang);
        let order = format!(
            "/orders/{}?token={}",
            o["order_no"].as_str().unwrap(),
            o["token"].as_str().unwrap()
        );
        for path in ["/", "/products/p", order.as_str(), "/admin/login"] {
            phone.go(&app.url(path));
            let width = phone.js("return window.innerWidth").as_u64().unwrap_or(0);
            assert!(width <= 400, "a phone-sized viewport: {width}");
            let overflow =
                phone.js("return document.documentElement.scrollWidth - window.innerWidth");
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{lang} {path} scrolls sideways by {overflow}"
            );
            phone.assert_same_origin(&app.base);
        }
        phone.go(&app.url("/"));
        phone.screenshot(&format!("storefront-phone-{lang}"));
    }
}

/// A stand-in for epay's cashier on loopback: a buyer sent to its
/// `submit.php` "pays" (it sends faka the signed notify, server to server,
/// as the real one does) and is redirected to the order's `return_url`.
struct FakeCashier {
    url: String,
    /// faka's address, known once faka (configured with `url`) runs.
    faka: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl FakeCashier {
    fn start(key: &'static str) -> FakeCashier {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/submit.php", listener.local_addr().expect("addr"));
        let faka = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let base = faka.clone();
        std::thread::spawn(move || {
            let http = Client::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let target = line.split(' ').nth(1).unwrap_or("");
                let answer = match target.strip_prefix("/submit.php?") {
                    Some(q) => {
                        let asked: Vec<(String, String)> =
                            serde_urlencoded::from_str(q).unwrap_or_default();
                        let get = |k: &str| {
                            asked
                                .iter()
                                .find(|(a, _)| a == k)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let mut notify: Vec<(String, String)> = [
                            ("pid", get("pid")),
                            ("trade_no", format!("EP{}", get("out_trade_no"))),
                            ("out_trade_no", get("out_trade_no")),
                            ("type", get("type")),
                            ("name", get("name")),
                            ("money", get("money")),
                            ("trade_status", "TRADE_SUCCESS".into()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                        let sign = faka::payments::epay::sign(&notify, key);
                        notify.push(("sign".into(), sign));
                        notify.push(("sign_type".into(), "MD5".into()));
                        let faka = base.get().expect("faka runs");
                        let paid = http
                            .post(format!("{faka}/api/v1/payments/epay/notify"))
                            .form(&notify)
                            .send()
                            .ok()
                            .and_then(|r| r.text().ok());
                        assert_eq!(paid.as_deref(), Some("success"));
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            get("return_url")
                        )
                    }
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        FakeCashier { url, faka }
    }
}

/// Buyers paying online: through the generic hmac gateway (faka's order
/// page, which shows the keys by itself when the merchant's payment
/// backend sends the signed callback) and through epay (to the gateway's
/// cashier and back to the order page, keys shown).
#[test]
fn buyers_pay_through_hmac_and_epay_and_land_on_their_order_page() {
    if !available() {
        return;
    }
    const EPAY_KEY: &str = "89unJUB8HZ54Hj7x4nUj56HN4nUzUJ8i";
    let cashier = FakeCashier::start(EPAY_KEY);
    // The cashier sends the buyer to the `return_url` faka gave it, made
    // from `public_url`: the shop listens where that says.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let app = spawn_with(|dir| {
        config_text(
            dir,
            &format!(
                "[payments.epay]\npid = \"1001\"\nkey = \"{EPAY_KEY}\"\nsubmit_url = \"{}\"\n",
                cashier.url
            ),
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\""),
        )
    });
    cashier.faka.set(app.base.clone()).expect("set once");
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "vip", "name": "VIP 1 month", "price": 1990}),
    );
    assert_eq!(r.status(), 201);
    app.import("vip", &["VIP-HMAC-0001".into(), "VIP-EPAY-0002".into()]);
    let d = Driver::start();
    let buyer = d.browser(1280, 900, "en");

    // hmac: the order page waits, then shows the key without a reload.
    buyer.go(&app.url("/products/vip"));
    buyer.type_into("input[name=email]", "online@example.com");
    buyer.click("input[name=gateway][value=hmac]");
    buyer.click("button[type=submit]");
    buyer.wait_url(|u| u.contains("/orders/") && u.contains("token="));
    assert_eq!(buyer.text("[data-order-status]"), "pending");
    buyer.js("window.__notReloaded = true");
    let no = buyer
        .js("return document.querySelector('[data-order-no]').dataset.orderNo")
        .as_str()
        .expect("order no")
        .to_string();
    assert_eq!(
        pay_hmac(&app.client, &app.base, &no, "HM-1", 1990),
        Some(200)
    );
    let key = eventually(Duration::from_secs(30), || {
        let k = buyer.js("var k = document.querySelector('[data-key]'); return k && k.offsetParent ? k.textContent : null");
        k.as_str().map(str::to_string)
    });
    assert!(key.starts_with("VIP-"), "{key}");
    assert_eq!(
        buyer.js("return window.__notReloaded === true"),
        json!(true)
    );

    // epay: off to the cashier, back on the order page with the key.
    buyer.go(&app.url("/products/vip"));
    buyer.type_into("input[name=email]", "epay@example.com");
    buyer.click("input[name=gateway][value=epay]");
    buyer.click("button[type=submit]");
    let back = buyer.wait_url(|u| u.starts_with(&app.base) && u.contains("/orders/"));
    assert!(back.contains("token="), "{back}");
    let status = eventually(Duration::from_secs(20), || {
        Some(buyer.text("[data-order-status]")).filter(|s| s == "delivered")
    });
    assert_eq!(status, "delivered");
    let keys = buyer
        .js("return Array.from(document.querySelectorAll('[data-key]')).map(k => k.textContent)");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_ne!(keys[0].as_str(), Some(key.as_str()), "another key");
    buyer.assert_same_origin(&app.base);
}

/// The order form prices itself as the buyer types (tiers, then a coupon)
/// through the quote, under the pages' CSP.
#[test]
fn the_order_form_shows_the_price_with_tiers_and_coupon_as_the_buyer_types() {
    if !available() {
        return;
    }
    let app = spawn_with(|dir| config_text(dir, "[payments.manual]\npublic = true\n"));
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "bulk", "name": "Bulk", "price": 1000, "max_quantity": 50,
               "tiers": [{"min_quantity": 10, "price": 900}]}),
    );
    assert_eq!(r.status(), 201);
    let keys: Vec<String> = (0..20).map(|i| format!("BULK-{i}")).collect();
    app.import("bulk", &keys);
    let r = app.admin_post(
        "/api/v1/admin/coupons",
        json!({"code": "TEN", "kind": "percent", "value": 10}),
    );
    assert_eq!(r.status(), 201);
    let d = Driver::start();
    let buyer = d.browser(1280, 900, "en");
    buyer.go(&app.url("/products/bulk?lang=en"));
    let quote_is = |want: &str| {
        eventually(Duration::from_secs(20), || {
            Some(buyer.text("[data-quote]")).filter(|t| t == want)
        })
    };
    quote_is("To pay ¥10.00");
    buyer.js(
        "const q = document.querySelector('input[name=quantity]'); q.value = '10'; \
         q.dispatchEvent(new Event('input', {bubbles: true}));",
    );
    quote_is("To pay ¥90.00");
    buyer.type_into("input[name=coupon]", "ten");
    quote_is("To pay ¥81.00 (Discount ¥9.00)");
    buyer.type_into("input[name=coupon]", "x");
    quote_is("coupon tenx is unknown");
}
