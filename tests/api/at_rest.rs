//! Card keys are encrypted at rest: a copy of the data directory alone (a
//! leaked backup) reveals no key text and no buyer token, and without the
//! master key file faka refuses to start rather than make a new key.

use crate::helpers::*;
use serde_json::Value;
use std::path::Path;

fn all_bytes(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_bytes(&p, out);
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_raw_data_dir_holds_no_key_text_and_no_token() {
    let app = spawn();
    let keys = app.product_with_keys("p", 100, 50);
    let o = app.order_ok("p", 2, "hmac");
    let no = o["order_no"].as_str().unwrap();
    let token = o["token"].as_str().unwrap().to_string();
    assert_eq!(app.hmac_notify(no, "T-1", 200).status(), 200);
    let view: Value = app.buyer_view(no, &token).json().unwrap();
    assert_eq!(
        view["keys"].as_array().unwrap().len(),
        2,
        "the keys are readable through the shop"
    );
    let backup: Value = app
        .admin_post("/api/v1/admin/backup", serde_json::json!({}))
        .json()
        .unwrap();
    let dir = app.stop();
    let mut raw = Vec::new();
    all_bytes(&dir.path().join("data"), &mut raw);
    assert!(raw.len() > 10_000, "the store and its backup are there");
    assert!(Path::new(backup["path"].as_str().unwrap()).starts_with(dir.path()));
    for k in &keys {
        assert!(!contains(&raw, k), "key text {k} found in the raw data dir");
    }
    assert!(
        !contains(&raw, &token),
        "a buyer token found in the raw data dir"
    );
    // The sanity check that the search works: the order number is stored in clear.
    assert!(contains(&raw, no));
}

#[test]
fn a_missing_master_key_stops_the_start_instead_of_losing_every_key() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    let dir = app.stop();
    std::fs::rename(
        dir.path().join("faka.key"),
        dir.path().join("faka.key.away"),
    )
    .unwrap();
    let text = config_text(dir.path(), "");
    let cfg = faka::config::Config::from_toml(&text, "t", Path::new(""), Vec::new()).unwrap();
    let err = faka::startup::load_crypto(&cfg).expect_err("refused");
    assert!(err.to_string().contains("master key file"), "{err}");
    assert!(!dir.path().join("faka.key").exists(), "no new key was made");
}
