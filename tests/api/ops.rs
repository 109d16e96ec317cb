//! What an operator relies on: Prometheus metrics that move, JSON logs that
//! parse and never hold a secret, request ids, and a graceful stop on SIGTERM
//! that loses no acknowledged write.

use crate::helpers::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// Parses Prometheus text into `name{labels}` → value, failing on any line
/// that is not a comment or a sample.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_string(), v);
    }
    out
}

fn find(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_after_a_flow() {
    let app = spawn();
    assert_eq!(
        error_code(app.get("/metrics")),
        (401, "unauthorized".into())
    );
    let before = parse_prometheus(&app.admin_get("/metrics").text().unwrap());
    app.product_with_keys("p", 100, 3);
    let o = app.order_ok("p", 1, "hmac");
    let no = o["order_no"].as_str().unwrap();
    app.hmac_notify(no, "T-1", 100);
    app.hmac_notify(no, "T-1", 100);
    app.hmac_notify_raw("{}", now_secs(), "forged");
    let r = app.admin_get("/metrics");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = parse_prometheus(&r.text().unwrap());
    let created = r#"route="/api/v1/orders""#;
    assert_eq!(
        find(
            &m,
            "faka_http_requests_total",
            &[created, r#"status="201""#]
        ),
        1.0
    );
    assert_eq!(find(&before, "faka_http_requests_total", &[created]), 0.0);
    assert_eq!(
        find(
            &m,
            "faka_payments_total",
            &[r#"gateway="hmac""#, r#"result="applied""#]
        ),
        1.0
    );
    assert_eq!(
        find(&m, "faka_payments_total", &[r#"result="repeated""#]),
        1.0
    );
    assert_eq!(
        find(
            &m,
            "faka_payments_total",
            &[r#"reason="invalid_signature""#]
        ),
        1.0
    );
    assert_eq!(find(&m, "faka_orders", &[r#"status="delivered""#]), 1.0);
    assert_eq!(
        find(&m, "faka_keys", &[r#"product="p""#, r#"state="sold""#]),
        1.0
    );
    assert_eq!(
        find(&m, "faka_keys", &[r#"product="p""#, r#"state="available""#]),
        2.0
    );
    assert!(find(&m, "faka_writer_batch_size_count", &[]) >= 3.0);
    assert!(find(&m, "faka_writer_commit_seconds_bucket", &[r#"le="+Inf""#]) >= 3.0);
    // Every durable batch went through one journal write + fdatasync (a
    // batch can be between its sync and its count while the page renders).
    let (batches, syncs) = (
        find(&m, "faka_writer_batch_size_count", &[]),
        find(&m, "faka_writer_journal_sync_seconds_count", &[]),
    );
    assert!(
        syncs >= batches && syncs <= batches + 1.0,
        "{syncs} journal syncs for {batches} batches"
    );
    assert!(find(&m, "faka_http_request_seconds_count", &[]) >= 5.0);
    assert!(m.contains_key("faka_writer_queue_depth"));
    assert!(find(&m, "faka_store_bytes", &[]) > 0.0);
    assert!(m.keys().any(|k| k.starts_with("faka_webhooks")));
}

#[test]
fn every_response_carries_a_request_id() {
    let app = spawn();
    let r = app.get("/healthz");
    assert_eq!(r.headers()["x-request-id"].to_str().unwrap().len(), 16);
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "from-the-proxy-42")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "from-the-proxy-42");
    let r = app
        .client
        .get(app.url("/nope"))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id with spaces");
}

#[test]
fn json_logs_parse_carry_request_ids_and_never_hold_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(
            dir.path(),
            "[log]\nformat = \"json\"\nlevel = \"info,faka=debug\"\n",
        ),
    )
    .unwrap();
    let mut child = faka_command(&config, &["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("faka logs its start");
        let v: Value = serde_json::from_str(&line).unwrap();
        lines.push(line);
        if v["message"] == "faka is serving" {
            break v["port"].as_u64().unwrap();
        }
    };
    let base = format!("http://127.0.0.1:{port}");
    let c = Client::new();
    let key_text = "SECRET-CARD-KEY-0001";
    seed(
        &base,
        json!({"id": "p", "name": "P", "price": 100}),
        &[key_text.to_string()],
    );
    let o: Value = c
        .post(format!("{base}/api/v1/orders"))
        .json(&json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "hmac"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let no = o["order_no"].as_str().unwrap();
    let token = o["token"].as_str().unwrap();
    let body =
        json!({"order_no": no, "trade_no": "T-1", "amount": 100, "status": "paid"}).to_string();
    let ts = now_secs().to_string();
    let sig = faka::payments::hmac::HmacGateway::sign(HMAC_SECRET.as_bytes(), &ts, body.as_bytes());
    let paid = c
        .post(format!("{base}/api/v1/payments/hmac/notify"))
        .header("X-Faka-Timestamp", &ts)
        .header("X-Faka-Signature", &sig)
        .body(body.clone())
        .send()
        .unwrap();
    assert!(paid.status().is_success());
    let paid_id = paid.headers()["x-request-id"].to_str().unwrap().to_string();
    // A forged one, and a wrong admin token, which get logged as refusals.
    c.post(format!("{base}/api/v1/payments/hmac/notify"))
        .header("X-Faka-Timestamp", &ts)
        .header("X-Faka-Signature", "0".repeat(64))
        .body(body)
        .send()
        .unwrap();
    c.get(format!("{base}/api/v1/admin/orders"))
        .bearer_auth("wrong-token")
        .send()
        .unwrap();
    let view: Value = c
        .get(format!("{base}/api/v1/orders/{no}?token={token}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(view["keys"], json!([key_text]));
    unsafe_sigterm(&child);
    assert!(child.wait().unwrap().success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let all = lines.join("\n") + &stderr;
    for secret in [key_text, token, ADMIN, HMAC_SECRET, &sig, "wrong-token"] {
        assert!(!all.contains(secret), "a secret reached the logs: {secret}");
    }
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    // The callback's own line carries the id its response echoed.
    let applied: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "payment callback applied")
        .collect();
    assert_eq!(applied.len(), 1, "{lines:?}");
    assert_eq!(applied[0]["request_id"], json!(paid_id));
    // Lines not logged for a request carry no request id.
    let serving: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("faka is serving"))
        .map(String::as_str)
        .collect();
    assert!(serving.iter().all(|l| !l.contains("request_id")));
    assert!(lines.iter().any(|l| l.contains("payment callback refused")));
    assert!(lines.len() > 5);
}

#[test]
fn sigterm_drains_in_flight_writes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let server = start_binary(&config);
    let keys: Vec<String> = (0..2000).map(|i| format!("K{i}")).collect();
    seed(
        &server.base,
        json!({"id": "p", "name": "P", "price": 100, "max_quantity": 1}),
        &keys,
    );
    let base = server.base.clone();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let buyers: Vec<_> = (0..6)
        .map(|_| {
            let base = base.clone();
            let acks = acks.clone();
            std::thread::spawn(move || {
                let c = Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
                let mut acked = Vec::new();
                loop {
                    let r = c
                        .post(format!("{base}/api/v1/orders"))
                        .json(&json!({"product_id": "p", "quantity": 1, "email": "a@b.co", "gateway": "manual"}))
                        .send();
                    match r {
                        Ok(r) if r.status() == 201 => {
                            acked.push(r.json::<Value>().unwrap()["order_no"].as_str().unwrap().to_string());
                            acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(r) if r.status() == 503 => {} // shutting down: refused, not lost
                        _ => return acked,
                    }
                }
            })
        })
        .collect();
    // SIGTERM lands while the buyers are well under way.
    eventually(Duration::from_secs(20), || {
        (acks.load(std::sync::atomic::Ordering::SeqCst) >= 50).then_some(())
    });
    server.stop_gracefully();
    let acked: Vec<String> = buyers.into_iter().flat_map(|b| b.join().unwrap()).collect();
    assert!(!acked.is_empty());
    assert!(
        dir.path().join("data/CLEAN").exists(),
        "a clean stop leaves the clean marker"
    );
    let store =
        faka::store::Store::open(&faka::store::StoreOptions::new(dir.path().join("data"))).unwrap();
    assert_eq!(
        store.recovery(),
        faka::store::recovery::Recovery::Clean,
        "a clean stop needs no recovery"
    );
    for no in &acked {
        assert!(
            store.order(no).unwrap().is_some(),
            "acknowledged order {no} was lost"
        );
    }
    assert!(faka::ops::check::run(&store).unwrap().ok());
    store.close();
}

/// A shop with two keys of `product` and one hmac order for one of them,
/// left `paid` without its keys, as only a fault would leave it.
fn shop_with_an_order_left_paid(product: &str) -> (TestApp, Vec<String>, Value) {
    let app = spawn();
    let keys = app.product_with_keys(product, 100, 2);
    let order = app.order_ok(product, 1, "hmac");
    let no = order["order_no"].as_str().unwrap().to_string();
    app.store
        .write_blocking(move |tx| {
            let mut o = tx.order(&no)?.expect("the order exists");
            o.status = faka::domain::order::OrderStatus::Paid;
            o.paid_at_ms = Some(tx.now_ms());
            o.paid_gateway = Some("hmac".into());
            o.trade_no = Some(format!("T-{no}"));
            tx.unschedule_expiry(&o);
            tx.put_order(&o);
            Ok(())
        })
        .unwrap();
    (app, keys, order)
}

/// The buyer sees `order` delivered with one of `keys`, and the store
/// checks clean.
fn assert_delivered_one_of(app: &TestApp, order: &Value, keys: &[String]) {
    let no = order["order_no"].as_str().unwrap();
    let token = order["token"].as_str().unwrap();
    let view: Value = app.buyer_view(no, token).json().unwrap();
    let delivered = view["keys"].as_array().expect("keys delivered");
    assert_eq!(delivered.len(), 1);
    assert!(keys.contains(&delivered[0].as_str().unwrap().to_string()));
    assert!(faka::ops::check::run(&app.store).unwrap().ok());
}

/// An order left `paid` without its keys (a state that lives only inside one
/// command, so only a fault leaves it) is delivered by the next start, also
/// after a clean stop when the full invariant check is skipped.
#[test]
fn an_order_left_paid_is_delivered_by_the_next_start_after_a_clean_stop() {
    let (app, keys, order) = shop_with_an_order_left_paid("left-paid");
    let no = order["order_no"].as_str().unwrap().to_string();
    assert_eq!(app.admin_order(&no)["status"], "paid");
    let text = config_text(app.dir.path(), "");
    let dir = app.stop();
    assert!(dir.path().join("data/CLEAN").exists());

    let app = start(dir, &text);
    assert_eq!(app.store.recovery(), faka::store::recovery::Recovery::Clean);
    let o = app.admin_order(&no);
    assert_eq!(o["status"], "delivered", "{o}");
    assert_delivered_one_of(&app, &order, &keys);
}

/// With the start-up check on, the check runs as the writer's first command
/// while the shop already serves, and the order it finds left `paid` is
/// delivered after it (polled: the re-drive follows the check).
#[test]
fn an_order_left_paid_is_delivered_after_the_start_up_check_that_found_it() {
    let (app, keys, order) = shop_with_an_order_left_paid("checked-paid");
    let no = order["order_no"].as_str().unwrap().to_string();
    let text = config_text(app.dir.path(), "")
        .replace("[storage]\n", "[storage]\ncheck_on_start = true\n");
    let dir = app.stop();

    let app = start(dir, &text);
    eventually(Duration::from_secs(60), || {
        let o = app.admin_order(&no);
        if o["status"] == "delivered" {
            return Some(());
        }
        assert_eq!(o["status"], "paid", "{o}");
        None
    });
    assert_delivered_one_of(&app, &order, &keys);
}

/// The nice value of a thread of this process, from /proc (Linux).
fn thread_nices(name_prefix: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(name_prefix) {
            continue;
        }
        // After the name: state is field 3; nice is field 19.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        nices.push(fields[16].parse().unwrap());
    }
    nices
}

/// `[server] worker_nice` lowers the HTTP workers' priority, so that under
/// saturation the writer (every order and payment waits for it) is served
/// first; the writer threads keep the process's own priority.
#[test]
#[cfg(target_os = "linux")]
fn http_workers_run_at_the_configured_nice_value() {
    let app = spawn_with(|dir| {
        config_text(dir, "").replace(
            "[server]\nlisten = \"127.0.0.1:0\"",
            "[server]\nlisten = \"127.0.0.1:0\"\nworker_nice = 7",
        )
    });
    assert_eq!(app.get("/healthz").status(), 200);
    let workers = thread_nices("actix-rt|system");
    assert!(workers.contains(&7), "actix workers at nice {workers:?}");
    let writers = thread_nices("faka-writer");
    assert!(!writers.is_empty() && !writers.contains(&7), "{writers:?}");
}

/// `[server] writer_nice` raises the writer and its commit thread above
/// everything else (the HTTP workers stay where `worker_nice` puts them);
/// without CAP_SYS_NICE the shop still serves, its writer left at 0.
#[test]
#[cfg(target_os = "linux")]
fn the_writer_runs_at_the_configured_negative_nice_value_when_allowed() {
    // Whether this process may lower a nice value: try on a scratch thread.
    let allowed = std::thread::spawn(|| {
        // SAFETY: plain syscall on the calling (scratch) thread.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -1) == 0 }
    })
    .join()
    .unwrap();
    let app = spawn_with(|dir| {
        config_text(dir, "").replace(
            "[server]\nlisten = \"127.0.0.1:0\"",
            "[server]\nlisten = \"127.0.0.1:0\"\nworker_nice = 0\nwriter_nice = -4",
        )
    });
    assert_eq!(app.get("/healthz").status(), 200);
    let (writers, commits) = (thread_nices("faka-writer"), thread_nices("faka-commit"));
    assert!(!writers.is_empty() && !commits.is_empty());
    assert_eq!(writers.contains(&-4), allowed, "writers at {writers:?}");
    assert_eq!(
        commits.contains(&-4),
        allowed,
        "commit threads at {commits:?}"
    );
    let workers = thread_nices("actix-rt|system");
    assert!(!workers.contains(&-4), "actix workers at nice {workers:?}");
}

/// The shop turns transparent huge pages off for itself unless told to keep
/// them (`storage.huge_pages`): with them, a 2 MiB page stays resident while
/// any of it is in use, and a crash start's check of 1M orders left 40-50
/// MiB more resident (docs/BENCHMARKS.md).
#[test]
fn the_shop_runs_without_transparent_huge_pages_unless_configured() {
    let thp_of = |edit: fn(String) -> String| {
        let dir = tempfile::tempdir().unwrap();
        let server = start_binary(&write_config_with(dir.path(), edit));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(thp_of(|text| text).as_deref(), Some("0"));
    let kept = thp_of(|text| text.replace("[storage]\n", "[storage]\nhuge_pages = true\n"));
    assert_eq!(kept.as_deref(), Some("1"));
}

/// A request's method becomes a metrics label only when it is a standard
/// one: any other token counts as `other`, so nobody can add series (and
/// memory) by inventing methods.
#[test]
fn invented_http_methods_do_not_add_metric_series() {
    let app = spawn();
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("ZZ{i}").as_bytes()).unwrap();
        let r = app
            .client
            .request(method, app.url("/api/v1/products"))
            .send()
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = app.admin_get("/metrics").text().unwrap();
    assert!(!text.contains("ZZ"), "invented methods are not labels");
    let m = parse_prometheus(&text);
    assert_eq!(
        find(&m, "faka_http_requests_total", &[r#"method="other""#]),
        20.0
    );
}
