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
