//! CI runs the load tool's smoke mode: every scenario for about a second
//! with small sizes, checking correctness only (never timing).

use std::process::Command;

#[test]
fn the_load_tool_smoke_run_gets_every_answer_right() {
    let out = Command::new(env!("CARGO_BIN_EXE_faka-bench"))
        .arg("--smoke")
        .arg("--faka")
        .arg(env!("CARGO_BIN_EXE_faka"))
        .output()
        .expect("run faka-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all verdicts ok"), "{stdout}");
}

#[test]
fn the_burst_trace_stamps_every_request_in_order_on_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("burst.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_faka-bench"))
        .args(["--smoke", "--scenario", "flash", "--workers", "1"])
        .arg("--burst-trace")
        .arg(&trace)
        .arg("--faka")
        .arg(env!("CARGO_BIN_EXE_faka"))
        .output()
        .expect("run faka-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("burst trace: the slowest 3 requests"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&trace).expect("the trace file is written");
    let mut requests = std::collections::BTreeSet::new();
    let mut threads = std::collections::BTreeSet::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 6, "{line}");
        let [sent, handled, answered]: [u64; 3] =
            [f[2], f[3], f[4]].map(|v| v.parse().expect("a stamp in µs"));
        assert!(sent <= handled && handled <= answered, "{line}");
        requests.insert(f[0].to_string());
        threads.insert(f[5].to_string());
    }
    assert_eq!(
        requests.len(),
        300,
        "one line per request of the smoke burst"
    );
    assert_eq!(
        threads.len(),
        1,
        "--workers 1 gives the trivial server one worker"
    );
}
