//! The README's walk-through as one script (`scripts/demo.sh`) works, with
//! the binary cargo built where `CARGO_TARGET_DIR` says.

use crate::helpers::bin_path;
use std::process::Command;

#[test]
fn the_readme_walkthrough_delivers_keys() {
    // A target dir holding only `release/faka`, and a `cargo` that refuses
    // to run: the script must find the binary there rather than build one.
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("release")).expect("target dir");
    std::os::unix::fs::symlink(bin_path(), target.join("release/faka")).expect("symlink");
    let fake_bin = dir.path().join("bin");
    std::fs::create_dir(&fake_bin).expect("bin dir");
    let cargo = fake_bin.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho \"demo.sh ran cargo $*\" >&2\nexit 1\n",
    )
    .expect("cargo");
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env_remove("DEMO_BIN")
        .env("CARGO_TARGET_DIR", &target)
        .env("PATH", path)
        .output()
        .expect("run demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("faka: {}", target.join("release/faka").display())),
        "{stdout}"
    );
    assert!(stdout.contains(r#""keys":["STEAM-AAAA-0001"]"#), "{stdout}");
    assert!(
        stdout.contains(r#""keys":["STEAM-BBBB-0002","STEAM-CCCC-0003"]"#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""sold":3"#), "{stdout}");
}
