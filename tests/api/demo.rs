//! The README's walk-through (`scripts/demo.sh`) works as written.

use crate::helpers::bin_path;
use std::process::Command;

#[test]
fn the_readme_walkthrough_delivers_keys() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("DEMO_BIN", bin_path())
        .output()
        .expect("run demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#""keys":["STEAM-AAAA-0001"]"#), "{stdout}");
    assert!(
        stdout.contains(r#""keys":["STEAM-BBBB-0002","STEAM-CCCC-0003"]"#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""sold":3"#), "{stdout}");
}
