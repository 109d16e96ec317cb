//! The first start as the README describes it: `faka` with no arguments in a
//! folder holding the shipped `config.toml`, whose `key_file = "faka.key"` is
//! a bare relative name. The master key must be created there (and its
//! directory synced, which for a bare name is the working directory), and a
//! second start must open what the first sealed.

use crate::helpers::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// `faka` in `dir` with nothing but the port and admin token overridden
/// through the environment, as a merchant might.
fn start_in(dir: &Path) -> Server {
    let mut cmd = Command::new(bin_path());
    cmd.current_dir(dir)
        .env("FAKA_SERVER_LISTEN", "127.0.0.1:0")
        .env("FAKA_ADMIN_TOKEN", ADMIN);
    start_command(cmd)
}

#[test]
fn the_readme_first_start_creates_faka_key_beside_config_toml() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    std::fs::copy(shipped, dir.path().join("config.toml")).unwrap();
    let key_file = dir.path().join("faka.key");

    let server = start_in(dir.path());
    let key = std::fs::read_to_string(&key_file).expect("faka.key created on first start");
    assert_eq!(key.trim_end().len(), 64, "64 hex characters");
    assert!(key.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(dir.path().join("data").is_dir(), "data/ beside config.toml");

    let c = Client::new();
    let admin = |rb: reqwest::blocking::RequestBuilder| rb.bearer_auth(ADMIN);
    let base = server.base.clone();
    let r = admin(c.post(format!("{base}/api/v1/admin/products")))
        .json(&json!({"id": "steam-10", "name": "Steam 10 USD", "price": 6900, "max_quantity": 5}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = admin(c.post(format!("{base}/api/v1/admin/products/steam-10/keys")))
        .header("Content-Type", "text/plain")
        .body("STEAM-AAAA-0001\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let order: Value = c
        .post(format!("{base}/api/v1/orders"))
        .json(&json!({"product_id": "steam-10", "quantity": 1, "email": "buyer@example.com", "gateway": "manual"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let no = order["order_no"].as_str().expect("order_no").to_string();
    let token = order["token"].as_str().expect("token").to_string();
    let r = admin(c.post(format!("{base}/api/v1/admin/orders/{no}/pay")))
        .json(&json!({"trade_no": "BANK-1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop_gracefully();

    // The second start loads the same key file and opens the sealed key.
    let server = start_in(dir.path());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    let seen: Value = c
        .get(format!("{}/api/v1/orders/{no}?token={token}", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(seen["status"], "delivered", "{seen}");
    assert_eq!(seen["keys"], json!(["STEAM-AAAA-0001"]), "{seen}");
    server.stop_gracefully();
}
