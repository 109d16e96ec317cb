//! The `faka` command line as a merchant types it: one way to run a command
//! to completion, and one way to say "`faka check` finds nothing wrong".

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary cargo built for this test run.
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_faka"))
}

/// `faka --config <config> <args>`, not yet started, for a test that sets
/// the environment, the working directory or the pipes first.
pub fn faka_command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin_path());
    cmd.arg("--config").arg(config).args(args);
    cmd
}

/// Runs `faka --config <config> <args>` to completion.
pub fn faka_cli(config: &Path, args: &[&str]) -> Output {
    faka_command(config, args).output().expect("run faka")
}

/// Runs `faka <args>` with no `--config` (`--version`, `--help`).
pub fn faka_bare(args: &[&str]) -> Output {
    Command::new(bin_path())
        .args(args)
        .output()
        .expect("run faka")
}

/// What a command printed, stdout then stderr, for messages and asserts.
pub fn cli_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `faka --config <config> <args>`, which must exit 0; its output.
pub fn faka_cli_ok(config: &Path, args: &[&str]) -> Output {
    let out = faka_cli(config, args);
    assert!(out.status.success(), "faka {args:?}: {}", cli_text(&out));
    out
}

/// `faka check` on the (stopped) shop of `config` exits 0; its output.
pub fn assert_check_passes(config: &Path) -> Output {
    faka_cli_ok(config, &["check"])
}
