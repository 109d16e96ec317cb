//! Property tests for every parser that hostile input reaches: epay money
//! strings and signatures, product ids, e-mails, order numbers, key uploads,
//! JSON bodies, the config file, and hmac/epay/alipay callback verification.
//!
//! Case counts are kept moderate so the whole binary runs in seconds in a
//! debug build; failures are not persisted to files (the shrunk case is in
//! the failure message).

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use faka::config::Config;
use faka::domain::ids::{Email, Gateway, OrderNo, ProductId};
use faka::json::parse_json;
use faka::payments::alipay::{self, AlipayGateway};
use faka::payments::epay::{format_money, parse_money, sign, EpayGateway};
use faka::payments::hmac::HmacGateway;
use faka::payments::{CallbackRequest, PaymentGateway};
use faka::shop::key_parse::parse_upload;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::path::Path;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- money

/// The contract's money grammar `\d{1,15}(\.\d{1,2})?`, written as a plain
/// state machine (independent of the implementation), with its value.
fn money_oracle(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut whole: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        whole = whole * 10 + u64::from(b[i] - b'0');
        i += 1;
        if i > 15 {
            return None;
        }
    }
    if i == 0 {
        return None;
    }
    if i == b.len() {
        return Some(whole * 100);
    }
    if b[i] != b'.' {
        return None;
    }
    let frac = &b[i + 1..];
    if frac.is_empty() || frac.len() > 2 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut cents = u64::from(frac[0] - b'0') * 10;
    if frac.len() == 2 {
        cents += u64::from(frac[1] - b'0');
    }
    Some(whole * 100 + cents)
}

/// Strings near the money grammar: digits, dots, signs, exponents, spaces.
fn moneyish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,17}(\\.[0-9]{0,4})?",
        "[0-9.+\\-eExX, _\t]{0,20}",
        "[0-9]{0,3}[.][0-9]{0,3}[.]?[0-9]{0,2}",
        any::<String>(),
        "\\PC{0,12}",
    ]
}

/// A canonical money string as an epay gateway sends it.
fn canonical_money() -> impl Strategy<Value = String> {
    "(0|[1-9][0-9]{0,14})\\.[0-9]{2}"
}

/// A valid money string in any accepted spelling (leading zeros, 0-2 decimals).
fn valid_money() -> impl Strategy<Value = String> {
    "[0-9]{1,15}(\\.[0-9]{1,2})?"
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn parse_money_accepts_exactly_the_grammar(s in moneyish()) {
        prop_assert_eq!(parse_money(&s), money_oracle(&s), "input {:?}", s);
    }

    #[test]
    fn parse_money_takes_every_valid_spelling(s in valid_money()) {
        let v = parse_money(&s);
        prop_assert!(v.is_some(), "refused {:?}", s);
        prop_assert_eq!(v, money_oracle(&s));
    }

    #[test]
    fn canonical_money_round_trips(s in canonical_money()) {
        let v = parse_money(&s).expect("canonical money parses");
        prop_assert_eq!(format_money(v), s);
    }

    #[test]
    fn formatted_amounts_parse_back(m in 0u64..100_000_000_000_000_000) {
        let s = format_money(m);
        prop_assert_eq!(parse_money(&s), Some(m), "{}", s);
    }

    #[test]
    fn signs_exponents_whitespace_hex_and_extra_decimals_are_refused(
        v in valid_money(),
        kind in 0usize..7,
        pick in any::<prop::sample::Index>(),
        digits in "[0-9]{3,6}",
        hex in "[0-9a-fA-F]{1,8}",
    ) {
        const WS: [&str; 8] = [" ", "\t", "\n", "\r", "\u{a0}", "\u{3000}", "\u{feff}", "\u{2009}"];
        const EXP: [&str; 6] = ["e2", "E2", "e-1", "E+3", "e0", "e"];
        let s = match kind {
            0 => format!("{}{v}", ["+", "-", "\u{2212}"][pick.index(3)]),
            1 => format!("{v}{}", EXP[pick.index(EXP.len())]),
            2 => {
                let ws = WS[pick.index(WS.len())];
                let at = pick.index(v.len() + 1);
                format!("{}{ws}{}", &v[..at], &v[at..])
            }
            3 => format!("{}{hex}", ["0x", "0X"][pick.index(2)]),
            4 => {
                let int = v.split('.').next().unwrap_or("0");
                format!("{int}.{digits}")
            }
            5 => format!("{v}{}", [",00", "_0", "%", "元", ".", ".0.0"][pick.index(6)]),
            _ => [".5", "5.", "", ".", "NaN", "inf", "１", "1 000", "1e2", "0x1A", "1,5"]
                [pick.index(11)]
                .to_string(),
        };
        prop_assert_eq!(parse_money(&s), None, "accepted {:?}", s);
    }
}

// ---------------------------------------------------------------- epay sign

fn epay_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-z_]{1,12}", "\\PC{1,12}", 1..9).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| k != "sign" && k != "sign_type")
            .collect()
    })
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn epay_sign_ignores_field_order(
        (fields, shuffled) in epay_fields()
            .prop_flat_map(|f| (Just(f.clone()), Just(f).prop_shuffle())),
        key in "\\PC{0,40}",
    ) {
        let s = sign(&fields, &key);
        prop_assert_eq!(s.len(), 32);
        prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", s);
        prop_assert_eq!(sign(&shuffled, &key), s);
    }

    #[test]
    fn epay_sign_ignores_empty_values_and_its_own_fields(
        fields in epay_fields(),
        empties in prop::collection::vec("[a-z_]{1,12}", 0..4),
        sig in "\\PC{0,40}",
        sig_type in "\\PC{0,8}",
        at in any::<prop::sample::Index>(),
        key in "\\PC{0,40}",
    ) {
        let base = sign(&fields, &key);
        let mut more = fields.clone();
        for k in empties {
            if !fields.iter().any(|(f, _)| *f == k) {
                let i = at.index(more.len() + 1);
                more.insert(i, (k, String::new()));
            }
        }
        more.insert(at.index(more.len() + 1), ("sign".into(), sig));
        more.push(("sign_type".into(), sig_type));
        prop_assert_eq!(sign(&more, &key), base);
    }

    #[test]
    fn epay_sign_changes_when_any_value_or_the_key_changes(
        fields in epay_fields().prop_filter("some field", |f| !f.is_empty()),
        which in any::<prop::sample::Index>(),
        new_value in "\\PC{1,12}",
        key in "\\PC{0,40}",
        other_key in "\\PC{0,40}",
    ) {
        let base = sign(&fields, &key);
        let i = which.index(fields.len());
        if fields[i].1 != new_value {
            let mut changed = fields.clone();
            changed[i].1 = new_value;
            prop_assert_ne!(sign(&changed, &key), base.clone());
        }
        if other_key != key {
            prop_assert_ne!(sign(&fields, &other_key), base);
        }
    }
}

// ---------------------------------------------------------------- ids

fn product_id_oracle(s: &str) -> bool {
    let b = s.as_bytes();
    let first = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let rest = |c: u8| first(c) || c == b'_' || c == b'-';
    (1..=64).contains(&b.len()) && first(b[0]) && b[1..].iter().all(|c| rest(*c))
}

fn idish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9_-]{0,70}",
        "[a-zA-Z0-9_\\- ./%]{0,70}",
        any::<String>(),
        "[a-z0-9]{60,66}",
    ]
}

fn emailish() -> impl Strategy<Value = String> {
    // Domain characters include some whose lower case is longer, or is not
    // alphanumeric (İ, ẞ, ǅ, ﬃ).
    prop_oneof![
        "[a-zA-Z0-9._+\\-]{0,70}@[a-zA-Z0-9.\\-İẞΣΩÅǅﬃ]{0,80}",
        "[a-z]{1,64}@[a-z]{1,60}\\.[a-zA-Z0-9.\\-İẞΣΩÅǅﬃ]{1,190}",
        "[a-z@. \\-]{0,20}",
        any::<String>(),
        "\\PC{0,30}@\\PC{0,30}",
    ]
}

/// Found by `emails_that_are_accepted_reparse_identically`: the domain is
/// lower-cased after it was checked, and Unicode lower-casing can make it
/// longer or bring in characters the check refuses (İ → i + U+0307), so the
/// stored address is one the shop would itself reject.
#[test]
fn an_accepted_email_is_stored_in_a_form_that_parses_again() {
    let long = format!("a@b.{}", "İ".repeat(125));
    for s in ["a@ǅ.İ", "buyer@EXAMPLE.İO", long.as_str()] {
        let Ok(e) = Email::parse(s) else { continue };
        assert!(
            e.as_str().len() <= 254,
            "{s:?} is stored as {} bytes",
            e.as_str().len()
        );
        assert_eq!(
            Email::parse(e.as_str()).ok(),
            Some(e.clone()),
            "{s:?} was accepted and stored as {:?}, which does not parse",
            e.as_str()
        );
    }
}

fn order_noish() -> impl Strategy<Value = String> {
    prop_oneof![
        "F[0-9A-HJKMNP-TV-Z]{16}",
        "F[0-9A-Z]{14,18}",
        "[A-Za-z0-9]{15,19}",
        any::<String>(),
        "f[0-9a-z]{16}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn product_ids_accept_exactly_the_pattern_and_reparse(s in idish()) {
        let parsed = ProductId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), product_id_oracle(&s), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(ProductId::parse(id.as_str()).ok(), Some(id));
        }
    }

    #[test]
    fn emails_that_are_accepted_reparse_identically(s in emailish()) {
        if let Ok(e) = Email::parse(&s) {
            let text = e.as_str();
            prop_assert!(text.len() <= 254, "stored form of {:?} is {} bytes", s, text.len());
            prop_assert_eq!(text.matches('@').count(), 1, "{:?}", text);
            prop_assert!(!text.chars().any(|c| c.is_whitespace() || c.is_control()), "{:?}", text);
            let again = Email::parse(text);
            prop_assert_eq!(again.as_ref().ok(), Some(&e),
                "{:?} was accepted as {:?}, which parses as {:?}", s, text, again);
        }
    }

    #[test]
    fn order_numbers_that_are_accepted_reparse_identically(s in order_noish()) {
        match OrderNo::parse(&s) {
            Ok(no) => {
                prop_assert_eq!(no.as_str(), s.as_str());
                prop_assert_eq!(s.len(), 17);
                prop_assert_eq!(OrderNo::parse(no.as_str()).ok(), Some(no));
            }
            // An impossible order number is simply not found.
            Err(e) => prop_assert_eq!(faka::error::Error::from(e).code(), "not_found"),
        }
    }

    #[test]
    fn generated_order_numbers_always_parse(ms in any::<i64>()) {
        let no = OrderNo::generate(ms);
        prop_assert_eq!(OrderNo::parse(no.as_str()).ok(), Some(no));
    }

    #[test]
    fn only_the_known_gateways_parse(s in prop_oneof![
        any::<String>(),
        "(manual|hmac|epay|alipay|wechat|stripe|Manual|HMAC|EPAY| epay|epay |Stripe|wxpay|Alipay)",
    ]) {
        match Gateway::parse(&s) {
            Ok(g) => prop_assert_eq!(g.as_str(), s.as_str()),
            Err(e) => {
                prop_assert!(!["manual", "hmac", "epay", "alipay", "wechat", "stripe"].contains(&s.as_str()));
                prop_assert_eq!(faka::error::Error::from(e).code(), "invalid_request");
            }
        }
    }
}

// ---------------------------------------------------------------- key uploads

const MAX_KEY: usize = 4096;

fn upload_line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z0-9-]{1,24}",
        2 => "[ \t]{0,3}[A-Z0-9]{1,10}[ \t\r]{0,3}",
        1 => Just(String::new()),
        1 => "[ \t\u{a0}\u{3000}]{1,4}",
        1 => "\\PC{1,16}",
        1 => (4090usize..=4096).prop_map(|n| "k".repeat(n)),
        1 => (1usize..8).prop_map(|n| format!("  {}\t", "é".repeat(2048 - n))),
    ]
}

fn text_oracle(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn check_keys(keys: &[String]) -> Result<(), TestCaseError> {
    for k in keys {
        prop_assert!((1..=MAX_KEY).contains(&k.len()), "key of {} bytes", k.len());
        prop_assert_eq!(k.as_str(), k.trim(), "key not trimmed");
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn parse_upload_never_panics(
        ct in prop_oneof![
            Just(String::new()),
            Just("text/plain".to_string()),
            Just("application/json".to_string()),
            Just("text/plain; charset=utf-8".to_string()),
            "\\PC{0,30}",
        ],
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "\\PC{0,300}".prop_map(String::into_bytes),
            "\\{\"keys\": ?\\[(\"[^\"]{0,8}\", ?){0,4}\\]\\}".prop_map(String::into_bytes),
        ],
    ) {
        if let Ok(keys) = parse_upload(&ct, &body) {
            prop_assert!(!keys.is_empty());
            check_keys(&keys)?;
        }
    }

    #[test]
    fn text_uploads_keep_trimmed_keys_in_input_order(
        lines in prop::collection::vec(upload_line(), 0..40),
        crlf in any::<bool>(),
        ct in prop_oneof![Just(""), Just("text/plain"), Just("text/plain; charset=utf-8")],
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let expected = text_oracle(&text);
        match parse_upload(ct, text.as_bytes()) {
            Ok(keys) => {
                check_keys(&keys)?;
                prop_assert_eq!(keys, expected);
            }
            Err(e) => {
                prop_assert_eq!(e.code(), "invalid_request");
                prop_assert!(
                    expected.is_empty() || expected.iter().any(|k| k.len() > MAX_KEY),
                    "a good upload was refused: {}", e
                );
            }
        }
    }

    #[test]
    fn json_uploads_keep_trimmed_keys_in_input_order(
        keys in prop::collection::vec(upload_line(), 0..30),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("json");
        let trimmed: Vec<String> = keys.iter().map(|k| k.trim().to_string()).collect();
        let ok = !trimmed.is_empty() && trimmed.iter().all(|k| (1..=MAX_KEY).contains(&k.len()));
        match parse_upload("application/json", &body) {
            Ok(got) => {
                prop_assert!(ok, "accepted a bad upload: {:?}", got.len());
                check_keys(&got)?;
                prop_assert_eq!(got, trimmed);
            }
            Err(e) => {
                prop_assert_eq!(e.code(), "invalid_request");
                prop_assert!(!ok, "a good upload was refused: {}", e);
            }
        }
    }

    #[test]
    fn an_over_long_key_rejects_the_whole_upload(
        lines in prop::collection::vec("[A-Za-z0-9-]{1,24}", 0..30),
        at in any::<prop::sample::Index>(),
        long in (MAX_KEY + 1..MAX_KEY + 600),
        pad in "[ \t]{0,3}",
        json in any::<bool>(),
    ) {
        let mut lines = lines;
        let i = at.index(lines.len() + 1);
        lines.insert(i, format!("{pad}{}{pad}", "x".repeat(long)));
        let (ct, body) = if json {
            ("application/json", serde_json::to_vec(&serde_json::json!({ "keys": lines })).expect("json"))
        } else {
            ("text/plain", lines.join("\n").into_bytes())
        };
        let e = parse_upload(ct, &body).expect_err("an over-long key is refused");
        prop_assert_eq!(e.code(), "invalid_request");
    }
}

// ---------------------------------------------------------------- JSON bodies

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Body {
    quantity: u32,
    email: String,
    note: Option<String>,
}

/// Valid-ish JSON documents, then mangled at one byte.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let docs = prop_oneof![
        Just(r#"{"quantity": 1, "email": "a@b.co"}"#.to_string()),
        Just(r#"{"quantity": 1, "email": "a@b.co", "note": null}"#.to_string()),
        Just(r#"{"quantity": "1", "email": "a@b.co"}"#.to_string()),
        Just(r#"{"quantity": 1e400, "email": "a@b.co"}"#.to_string()),
        Just(r#"{"quantity": 99999999999999999999999, "email": 1}"#.to_string()),
        Just(r#"{"quantity": 1, "email": "a@b.co", "extra": [1, {"x": []}]}"#.to_string()),
        Just(r#"[1, "a@b.co", null]"#.to_string()),
        Just(r#""just a string""#.to_string()),
        (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..300).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
    ];
    (docs, any::<prop::sample::Index>(), any::<u8>(), 0usize..4).prop_map(|(doc, at, byte, how)| {
        let mut b = doc.into_bytes();
        let i = at.index(b.len() + 1);
        match how {
            0 => {}
            1 => b.truncate(i),
            2 => b.insert(i, byte),
            _ => {
                if i < b.len() {
                    b[i] = byte;
                }
            }
        }
        b
    })
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn parse_json_only_answers_the_two_contract_codes(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..200), jsonish()],
    ) {
        let syntax_ok = !bytes.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
        match parse_json::<Body>(&bytes) {
            Ok(_) => prop_assert!(syntax_ok),
            Err(e) => {
                let code = e.code();
                let expected = if syntax_ok { "invalid_request" } else { "invalid_json" };
                prop_assert_eq!(code, expected, "{}", e);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------- config

/// Every key of every section today (from `src/config.rs`), so that the
/// generated "unknown" keys really are unknown.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "server", "storage", "admin", "orders", "payments", "webhooks", "shop", "log", "limits",
        ],
    ),
    (
        "server",
        &[
            "listen",
            "public_url",
            "workers",
            "trusted_proxies",
            "request_timeout_secs",
        ],
    ),
    (
        "storage",
        &[
            "data_dir",
            "key_file",
            "master_key",
            "cache_mb",
            "queue_capacity",
            "max_batch",
            "snapshot_mb",
            "backup_dir",
        ],
    ),
    ("admin", &["token"]),
    ("orders", &["hold_secs", "sweep_interval_ms"]),
    ("payments", &["hmac", "epay"]),
    ("payments.hmac", &["secret"]),
    ("payments.epay", &["pid", "key", "submit_url", "pay_type"]),
    (
        "webhooks",
        &[
            "url",
            "secret",
            "include_keys",
            "workers",
            "timeout_secs",
            "retry_base_ms",
            "give_up_secs",
        ],
    ),
    ("shop", &["name", "currency"]),
    ("log", &["level", "format"]),
    ("limits", &["import_body_mb", "body_kb"]),
];

/// Names that are not settings now and will not become ones: a digit in the
/// middle, or a typo of a real key.
fn unknown_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{2,8}[0-9][a-z0-9_]{0,6}",
        prop::sample::select(vec![
            "listen_on",
            "secert",
            "hold_sec",
            "tokn",
            "data-dir",
            "publicurl",
            "Listen",
            "include_key",
            "sumbit_url",
            "currancy",
            "levels",
            "body_kib",
        ])
        .prop_map(str::to_string),
    ]
}

fn load(text: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    Config::from_toml(text, "props.toml", Path::new(""), env).map_err(|e| e.to_string())
}

fn tomlish() -> impl Strategy<Value = String> {
    let section = prop::sample::select(
        KNOWN
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
    )
    .prop_map(|s| format!("[{s}]"));
    let key = prop::sample::select(
        KNOWN
            .iter()
            .flat_map(|(_, ks)| ks.iter().copied())
            .collect::<Vec<_>>(),
    );
    let value = prop_oneof![
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"\"".to_string()),
        "-?[0-9]{1,20}",
        Just("true".to_string()),
        Just("[\"1.2.3.4\", 5]".to_string()),
        Just("{ a = 1 }".to_string()),
        "\"\\PC{0,10}\"",
        "\\PC{0,10}",
    ];
    let line = prop_oneof![
        section,
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,20}",
        Just("[[server]]".to_string()),
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_never_panics(text in prop_oneof![any::<String>(), tomlish()]) {
        let _ = load(&text, Vec::new());
    }

    #[test]
    fn an_unknown_key_in_any_section_is_an_error_naming_it(
        section in prop::sample::select(KNOWN.iter().map(|(s, _)| *s).collect::<Vec<_>>()),
        key in unknown_key(),
        value in prop_oneof![Just("1"), Just("\"x\""), Just("true"), Just("[]"), Just("{}")],
        before in any::<bool>(),
    ) {
        let known = KNOWN.iter().find(|(s, _)| *s == section).map(|(_, k)| *k).unwrap_or(&[]);
        prop_assume!(!known.contains(&key.as_str()));
        // A valid setting beside the typo, before or after it.
        let good = match section {
            "server" => "listen = \"127.0.0.1:0\"",
            "orders" => "hold_secs = 60",
            "shop" => "currency = \"USD\"",
            _ => "",
        };
        let typo = format!("{key} = {value}");
        let lines = if before {
            format!("{good}\n{typo}")
        } else {
            format!("{typo}\n{good}")
        };
        let text = if section.is_empty() {
            format!("{key} = {value}\n[server]\nlisten = \"127.0.0.1:0\"\n")
        } else {
            format!("[{section}]\n{lines}\n")
        };
        let e = load(&text, Vec::new()).expect_err("an unknown key is an error");
        prop_assert!(e.contains(&key), "error for {:?} does not name it: {}", text, e);
    }

    #[test]
    fn an_unknown_environment_setting_is_an_error_naming_it(name in "FAKA_[A-Z]{2,8}[0-9][A-Z0-9_]{0,8}") {
        let e = load("", vec![(name.clone(), "1".into())]).expect_err("unknown FAKA_ variable");
        prop_assert!(e.contains(&name), "{}", e);
    }
}

// ---------------------------------------------------------------- callbacks

const NOW: i64 = 1_800_000_000;

fn hmac_headers(ts: &str, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(ts) {
        h.insert(HeaderName::from_static("x-faka-timestamp"), v);
    }
    if let Ok(v) = HeaderValue::from_str(sig) {
        h.insert(HeaderName::from_static("x-faka-signature"), v);
    }
    h
}

fn hmac_verify(secret: &[u8], h: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let req = CallbackRequest {
        headers: h,
        query: "",
        body,
        now_secs: NOW,
    };
    HmacGateway::new(secret.to_vec())
        .verify(&req)
        .map(|_| ())
        .map_err(|e| e.code().to_string())
}

fn notification() -> impl Strategy<Value = Vec<u8>> {
    (
        "F[0-9A-HJKMNP-TV-Z]{16}",
        "[A-Za-z0-9-]{1,20}",
        any::<u64>(),
    )
        .prop_map(|(o, t, a)| {
            serde_json::to_vec(
                &serde_json::json!({"order_no": o, "trade_no": t, "amount": a, "status": "paid"}),
            )
            .expect("json")
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn hmac_accepts_its_own_signature(
        secret in prop::collection::vec(any::<u8>(), 1..40),
        body in notification(),
        skew in -300i64..=300,
    ) {
        let ts = (NOW + skew).to_string();
        let h = hmac_headers(&ts, &HmacGateway::sign(&secret, &ts, &body));
        prop_assert_eq!(hmac_verify(&secret, &h, &body), Ok(()));
    }

    #[test]
    fn hmac_never_accepts_another_secret_or_body(
        secret in prop::collection::vec(any::<u8>(), 1..40),
        other in prop::collection::vec(any::<u8>(), 0..40),
        body in notification(),
        other_body in prop_oneof![notification(), prop::collection::vec(any::<u8>(), 0..80)],
        other_ts in 0i64..4_000_000_000,
        skew in -300i64..=300,
    ) {
        let ts = (NOW + skew).to_string();
        if other != secret {
            let h = hmac_headers(&ts, &HmacGateway::sign(&other, &ts, &body));
            prop_assert_eq!(hmac_verify(&secret, &h, &body), Err("invalid_signature".into()));
        }
        if other_body != body {
            let h = hmac_headers(&ts, &HmacGateway::sign(&secret, &ts, &other_body));
            prop_assert_eq!(hmac_verify(&secret, &h, &body), Err("invalid_signature".into()));
        }
        // Signed for one timestamp, sent with another.
        let other_ts = other_ts.to_string();
        if other_ts != ts {
            let h = hmac_headers(&other_ts, &HmacGateway::sign(&secret, &ts, &body));
            prop_assert_eq!(hmac_verify(&secret, &h, &body), Err("invalid_signature".into()));
        }
    }

    #[test]
    fn hmac_verification_never_panics_on_odd_headers(
        ts in prop_oneof!["[0-9]{0,20}", "[ -~]{0,20}", "-[0-9]{1,5}"],
        sig in prop_oneof!["[0-9a-f]{64}", "[ -~]{0,80}"],
        body in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        let h = hmac_headers(&ts, &sig);
        prop_assert_eq!(hmac_verify(b"secret", &h, &body), Err("invalid_signature".into()));
    }
}

const EPAY_KEY: &str = "epay-merchant-key";

fn epay() -> EpayGateway {
    EpayGateway::new(
        "1001",
        EPAY_KEY,
        "https://pay.example.com/submit.php",
        "http://127.0.0.1:8080",
        vec!["alipay".into()],
    )
}

fn epay_verify(query: &str, body: &[u8]) -> Result<u64, String> {
    let h = HeaderMap::new();
    let req = CallbackRequest {
        headers: &h,
        query,
        body,
        now_secs: NOW,
    };
    epay()
        .verify(&req)
        .map(|p| p.amount)
        .map_err(|e| e.code().to_string())
}

fn epay_form() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        "F[0-9A-HJKMNP-TV-Z]{16}",
        "[0-9]{8,20}",
        canonical_money(),
        "\\PC{0,12}",
    )
        .prop_map(|(order, trade, money, name)| {
            vec![
                ("pid".into(), "1001".into()),
                ("trade_no".into(), trade),
                ("out_trade_no".into(), order),
                ("type".into(), "alipay".into()),
                ("name".into(), name),
                ("money".into(), money),
                ("trade_status".into(), "TRADE_SUCCESS".into()),
            ]
        })
}

fn signed(mut form: Vec<(String, String)>, key: &str) -> String {
    let s = sign(&form, key);
    form.push(("sign".into(), s));
    form.push(("sign_type".into(), "MD5".into()));
    serde_urlencoded::to_string(&form).expect("form")
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn epay_accepts_its_own_signature_with_exact_money(form in epay_form(), by_post in any::<bool>()) {
        let money = parse_money(&form[5].1).expect("money");
        let q = signed(form, EPAY_KEY);
        let got = if by_post { epay_verify("", q.as_bytes()) } else { epay_verify(&q, b"") };
        prop_assert_eq!(got, Ok(money));
    }

    #[test]
    fn epay_never_accepts_another_key_or_a_changed_field(
        form in epay_form(),
        other_key in "\\PC{0,30}",
        which in any::<prop::sample::Index>(),
        new_value in "[0-9A-Za-z.]{1,12}",
    ) {
        if other_key != EPAY_KEY {
            let q = signed(form.clone(), &other_key);
            prop_assert_eq!(epay_verify(&q, b""), Err("invalid_signature".into()));
        }
        // Signed, then one field changed in transit.
        let i = which.index(form.len());
        if form[i].1 != new_value {
            let s = sign(&form, EPAY_KEY);
            let mut forged = form.clone();
            forged[i].1 = new_value;
            forged.push(("sign".into(), s));
            let q = serde_urlencoded::to_string(&forged).expect("form");
            prop_assert_eq!(epay_verify("", q.as_bytes()), Err("invalid_signature".into()));
        }
    }

    #[test]
    fn epay_verification_never_panics_and_refuses_garbage(
        query in prop_oneof!["\\PC{0,120}", "([a-z_]{1,12}=[^&]{0,12}&){0,9}"],
        body in prop::collection::vec(any::<u8>(), 0..160),
    ) {
        prop_assert!(epay_verify(&query, &body).is_err());
    }
}

// ------------------------------------------------------ tiers and coupons

use faka::domain::model::Tier;
use faka::domain::pricing::{
    coupon_key, discount, parse_tiers, unit_price, valid_code, CouponKind, MAX_TIERS,
};

fn code_oracle(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn tiers() -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec(
        (0u32..60, 0u64..2_000).prop_map(|(min_quantity, price)| Tier {
            min_quantity,
            price,
        }),
        0..20,
    )
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn coupon_codes_are_accepted_exactly_by_their_grammar(
        s in prop_oneof!["[A-Za-z0-9_\\-]{0,40}", "[A-Za-z0-9_\\- .!ü]{0,40}", any::<String>()]
    ) {
        prop_assert_eq!(valid_code(&s), code_oracle(&s));
        if valid_code(&s) {
            prop_assert_eq!(coupon_key(&s), coupon_key(&s.to_ascii_uppercase()));
            prop_assert!(valid_code(&coupon_key(&s)));
        }
    }

    #[test]
    fn tiers_are_accepted_exactly_when_valid_and_come_back_sorted(t in tiers(), max in 0u64..2_500) {
        let mut mins: Vec<u32> = t.iter().map(|t| t.min_quantity).collect();
        mins.sort();
        let unique = mins.windows(2).all(|w| w[0] != w[1]);
        let valid = t.len() <= MAX_TIERS
            && unique
            && t.iter().all(|t| t.min_quantity >= 2 && t.price <= max);
        let parsed = parse_tiers(t.clone(), max);
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", t);
        if let Ok(sorted) = parsed {
            prop_assert!(sorted.windows(2).all(|w| w[0].min_quantity < w[1].min_quantity));
            let mut reversed = t.clone();
            reversed.reverse();
            prop_assert_eq!(parse_tiers(reversed, max).unwrap(), sorted);
        }
    }

    #[test]
    fn the_unit_price_is_the_highest_tier_reached(
        t in tiers(), price in 0u64..5_000, q in 0u32..80
    ) {
        let Ok(sorted) = parse_tiers(t, u64::MAX) else { return Ok(()) };
        let want = sorted
            .iter()
            .filter(|t| t.min_quantity <= q)
            .max_by_key(|t| t.min_quantity)
            .map_or(price, |t| t.price);
        prop_assert_eq!(unit_price(price, &sorted, q), want);
    }

    #[test]
    fn a_discount_is_never_more_than_the_subtotal(
        subtotal in any::<u64>(), value in 0u64..200, fixed in any::<u64>()
    ) {
        let pct = discount(CouponKind::Percent, value, subtotal);
        prop_assert!(pct <= subtotal);
        if value <= 100 {
            prop_assert_eq!(pct as u128, subtotal as u128 * value as u128 / 100);
        }
        prop_assert_eq!(discount(CouponKind::Fixed, fixed, subtotal), fixed.min(subtotal));
    }
}

// ---------------------------------------------------------------- alipay

/// Two key pairs, made once: [0] stands for Alipay's, [1] for another's.
fn alipay_keys() -> &'static [rsa::RsaPrivateKey; 2] {
    static KEYS: std::sync::OnceLock<[rsa::RsaPrivateKey; 2]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        let mut make = || rsa::RsaPrivateKey::new(&mut rng, 2048).expect("key pair");
        [make(), make()]
    })
}

const ALIPAY_APP_ID: &str = "2021000000000001";

fn alipay_verify(body: &[u8]) -> Result<u64, String> {
    let gateway = AlipayGateway::new(
        ALIPAY_APP_ID,
        alipay_keys()[1].clone(),
        alipay_keys()[0].to_public_key(),
        "https://openapi.alipay.com/gateway.do",
        "http://127.0.0.1:8080",
    );
    let h = HeaderMap::new();
    let req = CallbackRequest {
        headers: &h,
        query: "",
        body,
        now_secs: NOW,
    };
    gateway
        .verify(&req)
        .map(|p| p.amount)
        .map_err(|e| e.code().to_string())
}

/// A paid notify's fields, with arbitrary text where Alipay puts its own.
fn alipay_form() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        "F[0-9A-HJKMNP-TV-Z]{16}",
        "[0-9]{28}",
        canonical_money(),
        "\\PC{0,12}",
    )
        .prop_map(|(order, trade, amount, subject)| {
            vec![
                ("app_id".into(), ALIPAY_APP_ID.into()),
                ("trade_no".into(), trade),
                ("out_trade_no".into(), order),
                ("subject".into(), subject),
                ("total_amount".into(), amount),
                ("trade_status".into(), "TRADE_SUCCESS".into()),
                ("charset".into(), "utf-8".into()),
            ]
        })
}

fn alipay_signed(mut form: Vec<(String, String)>, key: &rsa::RsaPrivateKey) -> String {
    let s = alipay::rsa2_sign(key, &alipay::sign_content(&form, true)).expect("sign");
    form.push(("sign".into(), s));
    form.push(("sign_type".into(), "RSA2".into()));
    serde_urlencoded::to_string(&form).expect("form")
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn total_amount_accepts_exactly_the_grammar(s in moneyish()) {
        prop_assert_eq!(alipay::parse_total_amount(&s), money_oracle(&s), "input {:?}", s);
    }

    #[test]
    fn alipay_verification_never_panics_and_refuses_garbage(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200).boxed(),
            "([a-z_]{1,12}=[^&]{0,12}&){0,9}(sign=[A-Za-z0-9+/=]{0,344})?"
                .prop_map(String::into_bytes)
                .boxed(),
        ],
    ) {
        prop_assert!(alipay_verify(&body).is_err());
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn alipay_accepts_its_signature_with_exact_money(form in alipay_form()) {
        let amount = alipay::parse_total_amount(&form[4].1).expect("amount");
        let body = alipay_signed(form, &alipay_keys()[0]);
        prop_assert_eq!(alipay_verify(body.as_bytes()), Ok(amount));
    }

    #[test]
    fn alipay_never_accepts_another_key_or_a_changed_field(
        form in alipay_form(),
        which in any::<prop::sample::Index>(),
        new_value in "[0-9A-Za-z.]{1,12}",
    ) {
        let body = alipay_signed(form.clone(), &alipay_keys()[1]);
        prop_assert_eq!(alipay_verify(body.as_bytes()), Err("invalid_signature".into()));
        // Signed, then one field changed in transit.
        let i = which.index(form.len());
        if form[i].1 != new_value {
            let body = alipay_signed(form.clone(), &alipay_keys()[0]);
            let encoded = serde_urlencoded::to_string([(&form[i].0, &form[i].1)]).expect("pair");
            let changed = serde_urlencoded::to_string([(&form[i].0, &new_value)]).expect("pair");
            let forged = body.replacen(&encoded, &changed, 1);
            prop_assert_eq!(alipay_verify(forged.as_bytes()), Err("invalid_signature".into()));
        }
    }
}

// ------------------------------------------------ wechat and stripe notify

fn stripe() -> faka::payments::stripe::StripeGateway {
    let cfg = faka::config::StripeConfig {
        secret_key: "sk_test".into(),
        webhook_secret: "whsec_test".into(),
        ..Default::default()
    };
    faka::payments::stripe::StripeGateway::new(&cfg, "http://127.0.0.1:8080", "CNY")
}

/// A Stripe-Signature-like header: pieces of the real grammar and noise.
fn stripe_header() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        "t=-?[0-9]{0,20}",
        "v1=[0-9a-f]{0,70}",
        "v0=[0-9a-f]{64}",
        "[ -~]{0,20}",
        Just("t=".to_string()),
        Just("=".to_string()),
    ];
    prop::collection::vec(item, 0..6).prop_map(|items| items.join(","))
}

/// A webhook body: a Checkout Session event with odd fields, or noise.
fn stripe_body() -> impl Strategy<Value = Vec<u8>> {
    let odd = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (odd.clone(), odd.clone(), odd.clone(), odd).prop_map(|(a, b, c, d)| {
            serde_json::to_vec(&serde_json::json!({
                "type": "checkout.session.completed",
                "data": {"object": {"id": a, "client_reference_id": b, "amount_total": c,
                    "currency": "cny", "payment_status": d}},
            }))
            .expect("json")
        }),
    ]
}

fn stripe_verify(header: &str, body: &[u8]) -> Result<(), faka::error::Error> {
    let h = vec![("Stripe-Signature", header)];
    let req = CallbackRequest {
        headers: &h,
        query: "",
        body,
        now_secs: NOW,
    };
    stripe().notice(&req).map(|_| ())
}

/// A wechat gateway with test keys (made once): [merchant, platform].
fn wechat() -> &'static (faka::payments::wechat::WechatGateway, rsa::RsaPrivateKey) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    static G: std::sync::OnceLock<(faka::payments::wechat::WechatGateway, rsa::RsaPrivateKey)> =
        std::sync::OnceLock::new();
    G.get_or_init(|| {
        let mut rng = rand::thread_rng();
        let merchant = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("key");
        let platform = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("p.pem"));
        let pem = merchant.to_pkcs8_pem(LineEnding::LF).expect("pem");
        std::fs::write(&private, pem.as_bytes()).expect("write");
        let pem = platform
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        std::fs::write(&public, pem).expect("write");
        let cfg = faka::config::WechatConfig {
            mchid: "1900000109".into(),
            appid: "wxd678efh567hg6787".into(),
            serial_no: "S".into(),
            private_key_file: private,
            api_v3_key: "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb".into(),
            platform_public_key_file: public,
            ..Default::default()
        };
        let g = faka::payments::wechat::WechatGateway::new(&cfg, "http://127.0.0.1:8080")
            .expect("gateway");
        (g, platform)
    })
}

fn wechat_verify(headers: &[(String, String)], body: &[u8]) -> Result<(), faka::error::Error> {
    let h = headers.to_vec();
    let req = CallbackRequest {
        headers: &h,
        query: "",
        body,
        now_secs: NOW,
    };
    wechat().0.verify(&req).map(|_| ())
}

/// A notification body: noise, or JSON with an odd resource.
fn wechat_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        ("[ -~]{0,16}", "[ -~]{0,40}", "[ -~]{0,16}", "[ -~]{0,20}").prop_map(
            |(alg, ct, ad, n)| {
                serde_json::to_vec(&serde_json::json!({
                "resource": {"algorithm": alg, "ciphertext": ct, "associated_data": ad, "nonce": n},
            }))
            .expect("json")
            }
        ),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn stripe_signature_headers_never_panic_and_refuse_with_400(h in stripe_header()) {
        if let Err(e) = faka::payments::stripe::parse_signature_header(&h) {
            prop_assert_eq!(e.code(), "invalid_signature");
        }
    }

    /// Odd headers and bodies: a 4xx, never a panic or a 5xx; signed
    /// properly, an odd body is read without panicking either.
    #[test]
    fn stripe_webhooks_never_panic_or_answer_5xx(h in stripe_header(), body in stripe_body()) {
        if let Err(e) = stripe_verify(&h, &body) {
            prop_assert!(e.status() < 500, "{:?}", e);
        }
        let sig = hex::encode(faka::payments::stripe::sign("whsec_test", NOW, &body));
        match stripe_verify(&format!("t={NOW},v1={sig}"), &body) {
            Ok(()) => {}
            Err(e) => prop_assert!(e.status() < 500 && e.code() != "invalid_signature", "{:?}", e),
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn wechat_notifications_never_panic_or_answer_5xx(
        ts in prop_oneof!["[0-9]{0,12}", "[ -~]{0,12}", Just(NOW.to_string())],
        nonce in "[ -~]{0,32}",
        sig in prop_oneof!["[A-Za-z0-9+/=]{0,400}", "[ -~]{0,40}"],
        serial in "[ -~]{0,20}",
        body in wechat_body(),
    ) {
        let headers = vec![
            ("Wechatpay-Timestamp".to_string(), ts),
            ("Wechatpay-Nonce".to_string(), nonce.clone()),
            ("Wechatpay-Signature".to_string(), sig),
            ("Wechatpay-Serial".to_string(), serial.clone()),
        ];
        let e = wechat_verify(&headers, &body).expect_err("unsigned");
        prop_assert_eq!(e.code(), "invalid_signature");
        // Signed with the platform key: what remains is the body's shape.
        use rsa::signature::{SignatureEncoding, Signer};
        let message = faka::payments::wechat::notify_message(&NOW.to_string(), &nonce, &body);
        let signed = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(wechat().1.clone()).sign(&message);
        let headers = vec![
            ("Wechatpay-Timestamp".to_string(), NOW.to_string()),
            ("Wechatpay-Nonce".to_string(), if nonce.trim().is_empty() { "n".into() } else { nonce }),
            ("Wechatpay-Signature".to_string(), base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD, signed.to_bytes())),
            ("Wechatpay-Serial".to_string(), if serial.trim().is_empty() { "s".into() } else { serial }),
        ];
        if let Err(e) = wechat_verify(&headers, &body) {
            prop_assert!(e.status() < 500, "{:?}", e);
        }
    }
}
