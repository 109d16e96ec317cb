//! The in-process shop: start it on port 0 with a temp data dir, talk to it
//! with a blocking HTTP client, sign callbacks like a gateway would.

use faka::config::Config;
use faka::startup::Application;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token";
pub const HMAC_SECRET: &str = "test-hmac-secret";

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub generated_admin_token: Option<String>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub store: faka::store::Store,
}

/// Config text for a test shop in `dir`; `extra` is appended TOML.
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
key_file = "{key}"
[admin]
token = "{ADMIN}"
[payments.hmac]
secret = "{HMAC_SECRET}"
[orders]
hold_secs = 900
sweep_interval_ms = 50
[limits]
orders_per_minute = 0
max_pending_per_ip = 0
max_pending_per_email = 0
lookups_per_minute = 0
admin_failures_per_minute = 0
{extra}
"#,
        data = dir.join("data").display(),
        key = dir.join("faka.key").display(),
    )
}

/// Merges extra TOML over the defaults: later sections must not repeat
/// earlier ones, so callers pass whole replacement text via `spawn_with`.
pub fn spawn() -> TestApp {
    spawn_with(|dir| config_text(dir, ""))
}

pub fn spawn_with(make_config: impl FnOnce(&Path) -> String) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = make_config(dir.path());
    start(dir, &text)
}

/// Starts (or restarts) the shop on `dir` with config `text`.
pub fn start(dir: tempfile::TempDir, text: &str) -> TestApp {
    let cfg = Config::from_toml(text, "test", Path::new(""), Vec::new()).expect("test config");
    // Port 0 unless a test needs a known address (its `public_url`).
    let listen = cfg.server.listen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = TcpListener::bind(&listen).expect("bind");
            let app = Application::build_with_listener(cfg, listener).expect("app starts");
            let handle = app.handle();
            tx.send((
                app.port(),
                app.generated_admin_token.clone(),
                app.store().clone(),
            ))
            .expect("report port");
            actix_web::rt::spawn(async move {
                let _ = actix_web::rt::task::spawn_blocking(move || stop_rx.recv()).await;
                handle.stop(true).await;
            });
            let _ = app.run_until_stopped().await;
        })
    });
    let (port, generated_admin_token, store) = rx.recv().expect("app started");
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        // A pooled connection idle longer than the server's keep-alive
        // (5 s) may be closed by it just as the client reuses it: a test
        // that paused (a browser step, a poll under load) then saw a
        // request error. Idle connections are dropped well before.
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("client"),
        dir,
        generated_admin_token,
        stop: Some(stop_tx),
        thread: Some(thread),
        store,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().expect("request")
    }

    pub fn admin(&self, rb: RequestBuilder) -> RequestBuilder {
        rb.bearer_auth(ADMIN)
    }

    pub fn admin_get(&self, path: &str) -> Response {
        self.admin(self.client.get(self.url(path)))
            .send()
            .expect("request")
    }

    pub fn admin_post(&self, path: &str, body: Value) -> Response {
        self.admin(self.client.post(self.url(path)))
            .json(&body)
            .send()
            .expect("request")
    }

    pub fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .expect("request")
    }

    /// Creates a product and imports `keys` keys named `{id}-KEY-n`.
    pub fn product_with_keys(&self, id: &str, price: u64, keys: usize) -> Vec<String> {
        let r = self.admin_post(
            "/api/v1/admin/products",
            json!({"id": id, "name": format!("Product {id}"), "price": price, "max_quantity": 10}),
        );
        assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
        let texts: Vec<String> = (0..keys).map(|i| format!("{id}-KEY-{i:05}")).collect();
        if keys > 0 {
            self.import(id, &texts);
        }
        texts
    }

    pub fn import(&self, id: &str, keys: &[String]) -> Value {
        let r = self
            .admin(
                self.client
                    .post(self.url(&format!("/api/v1/admin/products/{id}/keys"))),
            )
            .header("Content-Type", "text/plain")
            .body(keys.join("\n"))
            // Big imports in a debug build on a busy machine take a while.
            .timeout(Duration::from_secs(300))
            .send()
            .expect("import");
        assert_eq!(r.status(), 200);
        r.json().expect("json")
    }

    /// Places an order; returns the response (status checked by caller).
    pub fn order(&self, product: &str, quantity: u32, gateway: &str) -> Response {
        self.post(
            "/api/v1/orders",
            json!({"product_id": product, "quantity": quantity, "email": "buyer@example.com", "gateway": gateway}),
        )
    }

    /// Places an order that must succeed; returns its JSON.
    pub fn order_ok(&self, product: &str, quantity: u32, gateway: &str) -> Value {
        let r = self.order(product, quantity, gateway);
        assert_eq!(r.status(), 201);
        r.json().expect("json")
    }

    /// Sends a signed hmac callback.
    pub fn hmac_notify(&self, order_no: &str, trade_no: &str, amount: u64) -> Response {
        self.hmac_notify_raw(
            &json!({"order_no": order_no, "trade_no": trade_no, "amount": amount, "status": "paid"}).to_string(),
            now_secs(),
            HMAC_SECRET,
        )
    }

    pub fn hmac_notify_raw(&self, body: &str, ts: i64, secret: &str) -> Response {
        let ts = ts.to_string();
        let sig = faka::payments::hmac::HmacGateway::sign(secret.as_bytes(), &ts, body.as_bytes());
        self.client
            .post(self.url("/api/v1/payments/hmac/notify"))
            .header("X-Faka-Timestamp", ts)
            .header("X-Faka-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .expect("notify")
    }

    pub fn buyer_view(&self, order_no: &str, token: &str) -> Response {
        self.get(&format!("/api/v1/orders/{order_no}?token={token}"))
    }

    pub fn admin_order(&self, order_no: &str) -> Value {
        let r = self.admin_get(&format!("/api/v1/admin/orders/{order_no}"));
        assert_eq!(r.status(), 200);
        r.json().expect("json")
    }

    pub fn admin_product(&self, id: &str) -> Value {
        let list: Value = self
            .admin_get("/api/v1/admin/products")
            .json()
            .expect("json");
        list["products"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == id).cloned())
            .expect("product listed")
    }

    /// Every stored record, to prove a rejected request changed nothing.
    pub fn dump(&self) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
        self.store.dump().expect("dump")
    }

    /// Stops gracefully and hands back the data dir for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.dir, dir)
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            // actix's worker threads drop their copies of the store as they
            // wind down, which can be after the server has returned; until
            // the last one goes, sled keeps its own lock on the directory
            // and a restart on it would have to rebuild.
            eventually(Duration::from_secs(30), || {
                (self.store.open_handles() == 1).then_some(())
            });
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn eventually<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn error_code(r: Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"]
            .as_str()
            .unwrap_or("<no error body>")
            .to_string(),
    )
}
