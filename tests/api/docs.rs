//! The newcomer's docs hold. The README's walk-through pastes and runs as
//! written: its `sh` blocks between the `walkthrough` markers, run in order
//! in one bash (as one terminal would), against the real binary started
//! with the token and secret the README starts it with, answer what the
//! README shows under `# →` and never with an error. `docs/API.md`'s
//! endpoint table names exactly the routes faka serves. And every relative
//! link in the README and `docs/` leads to a file of the repository and, with
//! an `#anchor`, to a heading of that file (a clone has nothing else).

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

/// The anchor GitHub gives a heading: lower case, punctuation dropped,
/// spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A Markdown file's text outside its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors of a Markdown file's headings (a repeated one gets `-1`, …).
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for line in prose(text) {
        let Some(heading) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        if !line.starts_with('#') {
            continue;
        }
        let s = slug(&heading.replace('`', ""));
        let n = seen.entry(s.clone()).or_default();
        out.push(if *n == 0 { s } else { format!("{s}-{n}") });
        *n += 1;
    }
    out
}

/// The `](target)` link targets of a line that are not URLs.
fn relative_links(line: &str) -> Vec<&str> {
    line.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(t, _)| t))
        .filter(|t| !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn relative_links_in_the_docs_lead_to_files_and_headings_of_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = root.canonicalize().expect("the repository's root");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a Markdown file");
        for link in prose(&text).into_iter().flat_map(relative_links) {
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                Ok(file.clone())
            } else {
                file.parent()
                    .expect("a directory")
                    .join(path)
                    .canonicalize()
            };
            let name = file.strip_prefix(&root).unwrap_or(file).display();
            match target {
                Ok(t) if !t.starts_with(&root) => {
                    broken.push(format!("{name}: {link} leaves the repository"))
                }
                Ok(t) if !anchor.is_empty() && t.extension().is_some_and(|e| e == "md") => {
                    let text = std::fs::read_to_string(&t).expect("a linked Markdown file");
                    if !anchors(&text).iter().any(|a| a == anchor) {
                        broken.push(format!("{name}: {link} names no heading"));
                    }
                }
                Ok(_) => {}
                Err(_) => broken.push(format!("{name}: {link} is no file")),
            }
        }
    }
    assert!(files.len() > 5, "README.md and docs/*.md were read");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_the_ones_github_gives() {
    let text = "# Benchmarks\n```sh\n# not a heading\n```\n## Data dir per order, and retention\n\
                ## Why the defaults are what they are\n## `scale` at 1M\n## Method\n## Method\n";
    assert_eq!(
        anchors(text),
        [
            "benchmarks",
            "data-dir-per-order-and-retention",
            "why-the-defaults-are-what-they-are",
            "scale-at-1m",
            "method",
            "method-1"
        ]
    );
    assert_eq!(
        relative_links("see [a](A.md#x), [b](https://e.org) and [c](../c.md)"),
        ["A.md#x", "../c.md"]
    );
}
