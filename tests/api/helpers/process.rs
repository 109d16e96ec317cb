//! The real binary as a merchant runs it: `faka serve` started as a child
//! process on port 0, read from its JSON log until it serves, seeded and paid
//! over HTTP, and stopped with SIGTERM or kill -9.

use super::app::{config_text, eventually, now_secs, ADMIN, HMAC_SECRET};
use super::cli::faka_command;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub base: String,
    /// How the start opened the store, from its log: "clean", "resumed"
    /// (sled + the journal after its last flush) or "rebuilt".
    pub recovery: &'static str,
    /// Set once the start's invariant check has logged a clean report
    /// (it runs as the writer's first command while the shop serves).
    pub checked: Arc<AtomicBool>,
    /// Whether the start said, before serving, that it skips the check
    /// after a crash (`check_after_crash = false`).
    pub check_skipped: bool,
    /// Whether the start counted the unpaid orders before serving.
    pub holds_counted: bool,
}

impl Drop for Server {
    /// A failing test must not leave a server running (it would hold the
    /// test's output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGTERM, then the exit, which must come within 60 s and be 0: a
    /// graceful stop that drained its writes.
    pub fn stop_gracefully(mut self) {
        unsafe_sigterm(&self.child);
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "faka did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "graceful stop exits 0");
    }
}

/// Starts the real binary with `config`; returns once it serves.
pub fn start_binary(config: &Path) -> Server {
    start_command(faka_command(config, &["serve"]))
}

/// Starts the real binary as `cmd` says (arguments, directory,
/// environment); returns once it serves.
pub fn start_command(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start faka");
    let stdout = child.stdout.take().unwrap();
    // Owned from here, so a failed start kills the child instead of leaking it.
    let mut server = Server {
        child,
        base: String::new(),
        recovery: "clean",
        checked: Arc::new(AtomicBool::new(false)),
        check_skipped: false,
        holds_counted: false,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let checked = server.checked.clone();
    std::thread::spawn(move || {
        let (mut recovery, mut skipped, mut holds) = ("clean", false, false);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                match v["message"].as_str() {
                    Some("store resumed from sled + journal") => recovery = "resumed",
                    Some("store rebuilt from snapshot + journal") => recovery = "rebuilt",
                    Some("store opened and checked") => checked.store(true, Ordering::SeqCst),
                    Some(m)
                        if m.starts_with(
                            "store opened after a crash without the invariant check",
                        ) =>
                    {
                        skipped = true
                    }
                    Some("hold counts counted from the pending orders") => holds = true,
                    Some("faka is serving") => {
                        let _ =
                            tx.send((v["port"].as_u64().unwrap_or(0), recovery, skipped, holds));
                    }
                    _ => {}
                }
            }
        }
    });
    let (port, recovery, skipped, holds_counted) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("faka started serving");
    server.base = format!("http://127.0.0.1:{port}");
    // "faka is serving" is logged before actix installs its SIGTERM handler
    // (when the server first runs): until the shop answers, a SIGTERM would
    // kill it instead of draining it.
    eventually(Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{}/healthz", server.base))
            .ok()
            .map(|_| ())
    });
    server.recovery = recovery;
    server.check_skipped = skipped;
    server.holds_counted = holds_counted;
    server
}

/// Creates a product on a running binary and imports `keys` into it.
pub fn seed(base: &str, product: Value, keys: &[String]) {
    // Big imports in a debug build on a busy machine take a while.
    let c = Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let r = c
        .post(format!("{base}/api/v1/admin/products"))
        .bearer_auth(ADMIN)
        .json(&product)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    if keys.is_empty() {
        return;
    }
    let id = product["id"].as_str().unwrap();
    let r = c
        .post(format!("{base}/api/v1/admin/products/{id}/keys"))
        .bearer_auth(ADMIN)
        .header("Content-Type", "text/plain")
        .body(keys.join("\n"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The first product's key counts (`available`, `held`, `sold`, …) from
/// the admin listing of a running binary.
pub fn key_counts(c: &Client, base: &str) -> Value {
    let list: Value = c
        .get(format!("{base}/api/v1/admin/products"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["products"][0]["keys"].clone()
}

/// Sends a signed hmac callback as the gateway would; the answer's status,
/// or `None` when the server could not be reached.
pub fn pay_hmac(c: &Client, base: &str, no: &str, trade: &str, amount: u64) -> Option<u16> {
    let body =
        json!({"order_no": no, "trade_no": trade, "amount": amount, "status": "paid"}).to_string();
    let ts = now_secs().to_string();
    let sig = faka::payments::hmac::HmacGateway::sign(HMAC_SECRET.as_bytes(), &ts, body.as_bytes());
    c.post(format!("{base}/api/v1/payments/hmac/notify"))
        .header("X-Faka-Timestamp", ts)
        .header("X-Faka-Signature", sig)
        .body(body)
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

/// Writes `dir/config.toml` for the binary: the test defaults with JSON
/// info logs (what `start_binary` reads), changed by `edit`.
pub fn write_config_with(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let path = dir.join("config.toml");
    let text = config_text(
        dir,
        "[log]\nformat = \"json\"\nlevel = \"warn,faka=info\"\n",
    );
    std::fs::write(&path, edit(text)).unwrap();
    path
}

pub fn unsafe_sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}
