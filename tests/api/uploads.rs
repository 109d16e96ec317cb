//! A big key upload is published as a whole or not at all: kill -9 while
//! it is being stored leaves none of its keys or all of them, and the
//! store checks clean after the restart.

use crate::helpers::*;
use rand::Rng;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::time::Duration;

/// The seq of the last durable batch, from the metrics.
fn applied_batch(c: &Client, base: &str) -> Option<u64> {
    let text = c
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("faka_writer_applied_batch "))
        .and_then(|v| v.trim().parse().ok())
}

fn available(c: &Client, base: &str) -> u64 {
    key_counts(c, base)["available"].as_u64().unwrap()
}

#[test]
fn kill_9_during_a_300k_key_upload_leaves_none_or_all_of_it() {
    const N: u64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), |text| text);
    let mut server = start_binary(&config);
    seed(
        &server.base,
        json!({"id": "big", "name": "Big", "price": 100}),
        &[],
    );
    let c = Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let keys: String = (0..N).map(|i| format!("UP-{i:07}-QRSTUVWX\n")).collect();
    let base_seq = applied_batch(&c, &server.base).unwrap();
    let upload = {
        let (c, url, body) = (
            c.clone(),
            format!("{}/api/v1/admin/products/big/keys", server.base),
            keys.clone(),
        );
        std::thread::spawn(move || {
            c.post(url)
                .bearer_auth(ADMIN)
                .header("Content-Type", "text/plain")
                .body(body)
                .send()
                .map(|r| r.status().as_u16())
                .ok()
        })
    };
    // The upload is being stored once batches commit after it began: kill
    // at a random one of its first ~20 (of ~30 chunks).
    let wait_for = base_seq + rand::thread_rng().gen_range(2..20);
    eventually(Duration::from_secs(300), || {
        let seq = applied_batch(&c, &server.base)?;
        (seq >= wait_for || upload.is_finished()).then_some(())
    });
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    let answered = upload.join().unwrap();
    let server = start_binary(&config);
    let stored = available(&c, &server.base);
    eprintln!("kill -9 at batch {wait_for}: {stored} keys stored, upload answered {answered:?}");
    assert!(
        stored == 0 || stored == N,
        "a killed upload left {stored} of its {N} keys"
    );
    if answered == Some(200) {
        assert_eq!(stored, N, "an acknowledged upload was lost");
    }
    // Sent again, it adds exactly what is missing: nothing of the killed
    // upload is left to count as a duplicate.
    let r = c
        .post(format!("{}/api/v1/admin/products/big/keys", server.base))
        .bearer_auth(ADMIN)
        .header("Content-Type", "text/plain")
        .body(keys)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().unwrap();
    assert_eq!(
        r,
        json!({"added": N - stored, "duplicates": stored, "stock": N})
    );
    server.stop_gracefully();
    assert_check_passes(&config);
}
