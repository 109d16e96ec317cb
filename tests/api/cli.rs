//! The `faka` command line: version and help, check, import, admin-token.

use crate::helpers::*;
use serde_json::json;

#[test]
fn version_and_help_speak_to_a_merchant() {
    let v = faka_bare(&["--version"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    let h = String::from_utf8_lossy(&faka_bare(&["--help"]).stdout).to_string();
    for cmd in [
        "serve",
        "check",
        "backup",
        "restore",
        "import",
        "admin-token",
    ] {
        assert!(h.contains(cmd), "{h}");
    }
}

#[test]
fn check_passes_on_a_healthy_store_and_reports_a_broken_one() {
    let app = spawn();
    app.product_with_keys("p", 100, 3);
    app.order_ok("p", 1, "manual");
    let dir = app.stop();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    let ok = assert_check_passes(&config);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("0 violation"));

    // Break an invariant behind the shop's back: a held key whose order does not list it.
    let store =
        faka::store::Store::open(&faka::store::StoreOptions::new(dir.path().join("data"))).unwrap();
    store
        .write_blocking(|tx| {
            let ids = tx.available_keys("p", 1)?.unwrap();
            tx.swap_key_state(
                ids[0],
                &faka::domain::model::KeyState::Available,
                faka::domain::model::KeyState::Held {
                    order_no: "F0000000000000000".into(),
                },
            )
        })
        .unwrap();
    store.close();
    drop(store);
    let bad = faka_cli(&config, &["check"]);
    assert!(!bad.status.success());
    let report = String::from_utf8_lossy(&bad.stdout);
    assert!(report.contains("F0000000000000000"), "{report}");
    assert!(report.contains("counts"), "{report}");
}

#[test]
fn import_reads_a_key_file_offline_and_through_a_running_shop() {
    let app = spawn();
    app.product_with_keys("p", 100, 0);
    let dir = app.stop();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, "A-1\nA-2\n\n  A-3  \nA-1\n").unwrap();
    let out = faka_cli_ok(
        &config,
        &["import", "--product", "p", file.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 keys added, 1 duplicates"));

    let mut server = start_binary(&config);
    std::fs::write(&file, "A-3\nB-1\nB-2\n").unwrap();
    let out = faka_cli_ok(
        &config,
        &["import", "--product", "p", file.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 keys added, 1 duplicates"));
    let list: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/products/p", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["stock"], 5);
    let missing = faka_cli(
        &config,
        &["import", "--product", "nope", file.to_str().unwrap()],
    );
    assert!(!missing.status.success());
    server.child.kill().unwrap();
    let _ = server.child.wait();
}

#[test]
fn rotating_the_admin_token_replaces_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = config_text(dir.path(), "[log]\nformat = \"json\"\n")
        .replace(&format!("token = \"{ADMIN}\""), "");
    std::fs::write(&config, text).unwrap();
    let first = faka_cli_ok(&config, &["admin-token", "--rotate"]);
    let old = String::from_utf8_lossy(&first.stdout).trim().to_string();
    let mut server = start_binary(&config);
    let c = reqwest::blocking::Client::new();
    let get = |t: &str| {
        c.get(format!("{}/api/v1/admin/products", server.base))
            .bearer_auth(t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get(&old), 200);
    let second = faka_cli(&config, &["admin-token", "--rotate"]);
    let new = String::from_utf8_lossy(&second.stdout).trim().to_string();
    assert_ne!(old, new);
    assert_eq!(get(&new), 200);
    assert_eq!(
        get(&old),
        401,
        "the old token stops working without a restart"
    );
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let with_config_token = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[admin]\n", "[admin]\ntoken = \"x\"\n");
    std::fs::write(&config, with_config_token).unwrap();
    assert!(!faka_cli(&config, &["admin-token", "--rotate"])
        .status
        .success());
    let _ = json!({});
}

/// A wrong `--config` or `data_dir` is an error that says so: `check` and
/// `backup` do not report on (or copy) an empty shop, nor create the
/// directory they were pointed at.
#[test]
fn check_and_backup_refuse_a_directory_without_a_shop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    let check = faka_cli(&config, &["check"]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("holds no shop"));
    let out = dir.path().join("backup");
    let backup = faka_cli(&config, &["backup", "--out", out.to_str().unwrap()]);
    assert!(!backup.status.success());
    assert!(String::from_utf8_lossy(&backup.stderr).contains("holds no shop"));
    assert!(!dir.path().join("data").exists(), "nothing created");
    assert!(!out.join("MANIFEST.json").exists(), "no backup written");
}

/// A variable that is not UTF-8 is no reason to panic unless it is one of
/// faka's, which is then named.
#[test]
fn environment_variables_that_are_not_utf8_are_handled() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    let theirs = faka_command(&config, &["check"])
        .env("SOMEONE_ELSES", bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&theirs.stderr);
    assert!(err.contains("holds no shop"), "the config loaded: {err}");
    let ours = faka_command(&config, &["check"])
        .env("SOMEONE_ELSES", bad)
        .env("FAKA_LOG_LEVEL", bad)
        .output()
        .unwrap();
    assert!(!ours.status.success());
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(
        err.contains("FAKA_LOG_LEVEL") && err.contains("UTF-8"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A merchant's first start says it made a new shop, not that it recovers
/// from a crash; human logs into a file or pipe carry no colour codes; a
/// CLI error is its message, not a stack trace, even with RUST_BACKTRACE=1.
#[test]
fn a_first_start_and_its_errors_read_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |t| {
        t.replace("format = \"json\"", "format = \"human\"")
    });
    let mut child = faka_command(&config, &["serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    while !log.contains("faka is serving") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
    }
    // A SIGTERM sent the moment the shop says it serves drains it cleanly.
    unsafe_sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("a new shop"), "{log}");
    for crash_words in ["rebuil", "invariant check queued", "not clean"] {
        assert!(!log.contains(crash_words), "{crash_words}: {log}");
    }
    assert!(!log.contains('\x1b'), "no colour codes: {log}");

    let empty = tempfile::tempdir().unwrap();
    let config = empty.path().join("config.toml");
    std::fs::write(&config, config_text(empty.path(), "")).unwrap();
    let out = faka_command(&config, &["check"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("holds no shop"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains("  0:"), "{err}");
}
