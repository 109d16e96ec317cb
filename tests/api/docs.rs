//! The newcomer's docs hold. The README's walk-through pastes and runs as
//! written: its `sh` blocks between the `walkthrough` markers, run in order
//! in one bash (as one terminal would), against the real binary started
//! with the token and secret the README starts it with, answer what the
//! README shows under `# →` and never with an error. And `docs/API.md`'s
//! endpoint table names exactly the routes faka serves.

use crate::helpers::start_binary;
use std::process::Command;

const README: &str = include_str!("../../README.md");
const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";
/// Where the README's blocks expect the shop: `config.toml`'s `listen`.
const README_URL: &str = "http://127.0.0.1:8080";

/// The fenced `sh` blocks between the markers, in order.
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let begin = readme
        .find(BEGIN)
        .expect("README has the walkthrough:begin marker");
    let end = readme
        .find(END)
        .expect("README has the walkthrough:end marker");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[begin..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed block in the walk-through");
    blocks
}

/// The value of `NAME=value` on the README's start line, just before the
/// walk-through (`FAKA_ADMIN_TOKEN=… FAKA_PAYMENTS_HMAC_SECRET=… cargo run`).
fn start_setting(readme: &str, name: &str) -> String {
    let before = &readme[..readme.find(BEGIN).expect("walkthrough:begin marker")];
    let line = before
        .lines()
        .rev()
        .find(|l| l.contains("cargo run"))
        .expect("the README starts the shop before its walk-through");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the start line sets {name}: {line}"))
        .to_string()
}

/// The shipped `config.toml`, as the README's start uses it, but on a free
/// port, in `dir`, with the start line's token and secret.
fn config(dir: &std::path::Path, token: &str, secret: &str) -> String {
    let text = include_str!("../../config.toml");
    let mut t: toml::Table = toml::from_str(text).expect("config.toml parses");
    let mut set = |section: &str, key: &str, value: String| {
        let mut table = &mut t;
        for part in section.split('.') {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a config section");
        }
        table.insert(key.into(), toml::Value::String(value));
    };
    set("server", "listen", "127.0.0.1:0".into());
    set(
        "storage",
        "data_dir",
        dir.join("data").display().to_string(),
    );
    set(
        "storage",
        "key_file",
        dir.join("faka.key").display().to_string(),
    );
    set("log", "format", "json".into());
    set("admin", "token", token.into());
    set("payments.hmac", "secret", secret.into());
    toml::to_string(&t).expect("config renders")
}

/// Splits the inside of a JSON-like `{…}` or `[…]` at its top-level commas.
fn items(inner: &str) -> Vec<&str> {
    let (mut depth, mut in_str, mut start) = (0, false, 0);
    let mut out = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '{' | '[' if !in_str => depth += 1,
            '}' | ']' if !in_str => depth -= 1,
            ',' if !in_str && depth == 0 => {
                out.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(inner[start..].trim());
    out
}

/// The README's spacing removed, as faka writes JSON.
fn compact(s: &str) -> String {
    let (mut out, mut in_str, mut prev) = (String::new(), false, ' ');
    for c in s.chars() {
        if c == '"' {
            in_str = !in_str;
        }
        if in_str || !(c == ' ' && matches!(prev, ':' | ',')) {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// What a `# →` answer promises: each member (or element) written out in
/// full, compacted; members with a part elided by `…` are looked into, and
/// the elided parts skipped.
fn promised(shown: &str, out: &mut Vec<String>) {
    let shown = shown.trim();
    let container = (shown.starts_with('{') && shown.ends_with('}'))
        || (shown.starts_with('[') && shown.ends_with(']'));
    if !container {
        return;
    }
    for item in items(&shown[1..shown.len() - 1]) {
        if item.is_empty() {
            continue;
        }
        if !item.contains('…') {
            out.push(compact(item));
            continue;
        }
        match item.split_once("\": ") {
            Some((_, value)) if item.starts_with('"') => promised(value, out),
            _ => promised(item, out),
        }
    }
}

#[test]
fn the_readme_walkthrough_pastes_and_runs_in_order() {
    let blocks = walkthrough_blocks(README);
    assert!(blocks.len() >= 2, "the walk-through has blocks: {blocks:?}");
    assert!(blocks[0].contains(README_URL), "{}", blocks[0]);
    let token = start_setting(README, "FAKA_ADMIN_TOKEN");
    let secret = start_setting(README, "FAKA_PAYMENTS_HMAC_SECRET");
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(dir.path(), &token, &secret)).expect("write config");
    let server = start_binary(&config_path);

    // One bash, as one terminal: variables carry from block to block.
    // `-u` catches a variable that no block sets; `-e`/pipefail a failing
    // command; an answer with an error body is caught below.
    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&format!("printf '\\n@@block {i}\\n'\n"));
        script.push_str(&block.replace(README_URL, &server.base));
    }
    let work = tempfile::tempdir().expect("temp dir");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        // Nothing from the tester's environment (a proxy, a stray $NO).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(r#"{"error":"#),
        "an answer was an error:\n{stdout}"
    );

    let outputs: Vec<&str> = stdout.split("\n@@block ").skip(1).collect();
    assert_eq!(outputs.len(), blocks.len(), "{stdout}");
    let mut checked = 0;
    for (block, output) in blocks.iter().zip(&outputs) {
        for shown in block.lines().filter_map(|l| l.trim().strip_prefix("# →")) {
            let mut parts = Vec::new();
            promised(shown, &mut parts);
            for part in parts {
                assert!(
                    output.contains(&part),
                    "the README shows {part} but the block answered:\n{output}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} promised answers found");
}

#[test]
fn promised_answers_are_read_through_elisions() {
    let mut parts = Vec::new();
    promised(
        r#"{"products": [{"id": "steam-10", …, "keys": {"available": 0, "sold": 3}}], "x": "F…"}"#,
        &mut parts,
    );
    assert_eq!(
        parts,
        [r#""id":"steam-10""#, r#""keys":{"available":0,"sold":3}"#]
    );
    let mut parts = Vec::new();
    promised(r#"{"note": "a, b: c", "keys": ["A", "B"]}"#, &mut parts);
    assert_eq!(parts, [r#""note":"a, b: c""#, r#""keys":["A","B"]"#]);
}

/// `docs/API.md`'s endpoint table: a row per route, `` `METHOD /path` ``.
#[test]
fn api_md_lists_exactly_the_routes_faka_serves() {
    let api = include_str!("../../docs/API.md");
    let table = &api[api.find("## Endpoints").expect("API.md has ## Endpoints")..];
    let table = &table[..table[3..].find("\n## ").map_or(table.len(), |i| i + 3)];
    let mut documented: Vec<String> = table
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(r, _)| r.to_string())
        })
        .collect();
    let mut served: Vec<String> = faka::http::ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
}
