//! HTTP fuzz run: a seeded generator sends well over 500 malformed requests
//! across every route of the contract — public, admin with and without the
//! token, both payment callbacks, health, metrics and unknown paths — over a
//! raw TCP socket, so that nothing (a client library, URL normalisation)
//! tidies them up on the way. Then:
//!
//! - no answer is a 5xx other than 503;
//! - every non-2xx answer of a JSON route is the contract's error body
//!   `{"error": {"code", "message"}}`, with the code that belongs to the
//!   status; the epay notify URL answers the plain text `fail`;
//! - where the contract fixes the answer, it is that one: 404 for an unknown
//!   path, 405 for a wrong method, 401 for an admin route without the token
//!   (before anything else is looked at), `invalid_signature` / `fail` for a
//!   forged callback;
//! - no answer shows a secret (admin token, gateway keys) or, as an error,
//!   an order token;
//! - no request that changes things (anything but GET/HEAD) is accepted;
//! - the store is byte-for-byte what it was before (`app.dump()`).
//!
//! Requests broken at the HTTP protocol level (raw bytes in the request
//! line, bad framing headers, header limits) may be refused by the HTTP
//! server before any route runs, with a bare status or a closed connection:
//! for them only "no 5xx, no change" is required.
//!
//! The generator never sends a legitimately valid change: a request that
//! carries the admin token (or a real gateway signature, or is an order) has
//! a body that is broken by construction, whatever else is mutated; a
//! well-formed change is only ever sent unauthenticated or forged.
//!
//! Reproduce a run with `FUZZ_SEED=<seed>`; `FUZZ_REQUESTS=<n>`
//! sends more. Run with `--nocapture` to see the histogram.
//!
//! `generator` says what requests are made, `wire` sends them as raw bytes
//! and reads the answers, `judge` says which answers are allowed; this file
//! holds the model they share and the run.

use crate::helpers::*;
use generator::generate;
use judge::judge;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;
use wire::send;

mod generator;
mod judge;
mod wire;

const DEFAULT_SEED: u64 = 0x00FA_CAF0_22ED;
const DEFAULT_REQUESTS: usize = 2000;
const EPAY_PID: &str = "1001";
const EPAY_KEY: &str = "fuzz-epay-merchant-key";
const PRICE: u64 = 100;

// ------------------------------------------------------------------ model

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Healthz,
    Metrics,
    Products,
    Product,
    CreateOrder,
    Order,
    HmacNotify,
    EpayNotify,
    AdminProducts,
    AdminProduct,
    Keys,
    AdminOrders,
    AdminOrder,
    Pay,
    Refund,
    Webhooks,
    WebhookRetry,
    Backup,
    Unknown,
}

const ROUTES: [Route; 19] = [
    Route::Healthz,
    Route::Metrics,
    Route::Products,
    Route::Product,
    Route::CreateOrder,
    Route::Order,
    Route::HmacNotify,
    Route::EpayNotify,
    Route::AdminProducts,
    Route::AdminProduct,
    Route::Keys,
    Route::AdminOrders,
    Route::AdminOrder,
    Route::Pay,
    Route::Refund,
    Route::Webhooks,
    Route::WebhookRetry,
    Route::Backup,
    Route::Unknown,
];

impl Route {
    /// The methods the contract defines on this path.
    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Healthz
            | Route::Metrics
            | Route::Products
            | Route::Product
            | Route::Order
            | Route::AdminOrders
            | Route::AdminOrder
            | Route::Webhooks => &["GET"],
            Route::CreateOrder
            | Route::HmacNotify
            | Route::Pay
            | Route::Refund
            | Route::WebhookRetry
            | Route::Backup => &["POST"],
            Route::EpayNotify | Route::AdminProducts => &["GET", "POST"],
            Route::AdminProduct => &["PATCH"],
            Route::Keys => &["POST", "GET", "DELETE"],
            Route::Unknown => &[],
        }
    }

    fn admin(self) -> bool {
        matches!(
            self,
            Route::Metrics
                | Route::AdminProducts
                | Route::AdminProduct
                | Route::Keys
                | Route::AdminOrders
                | Route::AdminOrder
                | Route::Pay
                | Route::Refund
                | Route::Webhooks
                | Route::WebhookRetry
                | Route::Backup
        )
    }
}

/// What a non-2xx answer must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The contract's JSON error body.
    Json,
    /// epay notify: plain `fail`.
    Epay,
    /// Broken at the HTTP protocol level (request line, framing headers,
    /// header limits): the HTTP server may refuse it before any route runs,
    /// so only "no 5xx, no change" is required.
    Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` matching the body (none for an empty GET/HEAD).
    Exact,
    /// `Content-Length` smaller than the body sent.
    Short(usize),
    /// `Content-Length` larger than the body; the client then half-closes.
    Long(usize),
    /// Correct chunked encoding.
    Chunked,
    /// Malformed chunked encoding; the client then half-closes.
    BadChunked(usize),
    /// A `Content-Length` value that is not a length (protocol level).
    BadLength(&'static str),
    /// Two different `Content-Length` headers (protocol level).
    TwoLengths,
    /// Both `Content-Length` and `Transfer-Encoding` (protocol level).
    LengthAndChunked,
}

struct Req {
    route: Route,
    family: String,
    method: String,
    target: Vec<u8>,
    version: &'static str,
    host: Option<&'static str>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
    answer: Answer,
    /// Carries what could authorize a change (admin token, gateway
    /// signature) or is an order: its body must stay broken.
    guarded: bool,
    /// The one answer the contract allows, where it fixes it: status and
    /// code (`fail` for epay). 429 and 503 are always allowed.
    expect: Option<(u16, &'static str)>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The seeded shop's real targets.
struct Shop {
    pending_hmac: String,
    delivered_hmac: String,
    pending_epay: String,
    pending_manual: String,
    tokens: Vec<String>,
}

impl Shop {
    fn orders(&self) -> [&str; 4] {
        [
            &self.pending_hmac,
            &self.delivered_hmac,
            &self.pending_epay,
            &self.pending_manual,
        ]
    }
}

// ------------------------------------------------------------------ helpers

fn lossy(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push_str(&format!("…({} bytes)", b.len()));
    }
    out.escape_debug().to_string()
}

fn describe(i: usize, req: &Req, answer: &Result<Resp, String>) -> String {
    let headers: Vec<String> = req
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", lossy(v, 80)))
        .collect();
    let got = match answer {
        Ok(r) => format!(
            "{} {:?} {}",
            r.status,
            r.header("content-type").unwrap_or(""),
            lossy(&r.body, 300)
        ),
        Err(e) => e.clone(),
    };
    format!(
        "#{i} [{:?}{}; {}]\n    {} {} {} framing {:?}\n    headers: {}\n    body ({} bytes): {}\n    -> {got}",
        req.route,
        if req.guarded { ", guarded" } else { "" },
        req.family,
        lossy(req.method.as_bytes(), 40),
        lossy(&req.target, 200),
        req.version,
        req.framing,
        headers.join(" | "),
        req.body.len(),
        lossy(&req.body, 300),
    )
}

// ------------------------------------------------------------------ the run

fn seeded_shop() -> (TestApp, Shop) {
    let app = spawn_with(|dir| {
        let epay = format!(
            "[payments.epay]\npid = \"{EPAY_PID}\"\nkey = \"{EPAY_KEY}\"\nsubmit_url = \"https://pay.example.com/submit.php\"\n"
        );
        let text = config_text(dir, &epay);
        // Wrong admin tokens are the point here: do not let the throttle
        // turn the rest of the run into 429s.
        if text.contains("[limits]\n") && !text.contains("admin_failures_per_minute") {
            text.replacen("[limits]\n", "[limits]\nadmin_failures_per_minute = 0\n", 1)
        } else {
            text
        }
    });
    app.product_with_keys("p", PRICE, 20);
    let r = app.admin_post(
        "/api/v1/admin/products",
        json!({"id": "off", "name": "Inactive", "price": 5, "active": false}),
    );
    assert_eq!(r.status(), 201);
    let created = |gateway: &str| app.order_ok("p", 1, gateway);
    let a = created("hmac");
    let b = created("hmac");
    let c = created("epay");
    let d = created("manual");
    let no = |v: &Value| v["order_no"].as_str().expect("order_no").to_string();
    let token = |v: &Value| v["token"].as_str().expect("token").to_string();
    let r = app.hmac_notify(&no(&b), "T-DELIVERED", PRICE);
    assert_eq!(r.status(), 200);
    assert_eq!(app.admin_order(&no(&b))["status"], "delivered");
    let shop = Shop {
        pending_hmac: no(&a),
        delivered_hmac: no(&b),
        pending_epay: no(&c),
        pending_manual: no(&d),
        tokens: vec![token(&a), token(&b), token(&c), token(&d)],
    };
    (app, shop)
}

#[test]
fn fuzzed_malformed_requests_get_contract_errors_and_change_nothing() {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let count = std::env::var("FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    let (app, shop) = seeded_shop();
    let addr = app.base.trim_start_matches("http://").to_string();
    let before = app.dump();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let verbose = std::env::var_os("FUZZ_VERBOSE").is_some();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_route: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut server_errors = 0;
    let mut guarded = 0;
    let mut protocol = 0;
    for i in 0..count {
        let req = generate(&mut rng, &shop, i);
        guarded += usize::from(req.guarded);
        protocol += usize::from(req.answer == Answer::Protocol);
        let answer = send(&addr, &req);
        let key = match &answer {
            Ok(r) => r.status.to_string(),
            Err(_) => "no answer".to_string(),
        };
        let code = match &answer {
            Ok(r) if r.body == b"fail" || r.body == b"success" => {
                format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
            }
            Ok(r) => match serde_json::from_slice::<Value>(&r.body) {
                Ok(v) if v["error"]["code"].is_string() => {
                    format!("{} {}", r.status, v["error"]["code"].as_str().unwrap_or(""))
                }
                Ok(_) => format!("{} json", r.status),
                Err(_) if r.body.is_empty() => format!("{} (empty)", r.status),
                Err(_) => format!("{} (other)", r.status),
            },
            Err(_) => "no answer".to_string(),
        };
        *codes.entry(code).or_default() += 1;
        if verbose {
            println!("{}", describe(i, &req, &answer));
        }
        if matches!(&answer, Ok(r) if r.status >= 500 && r.status != 503) {
            server_errors += 1;
        }
        *statuses.entry(key.clone()).or_default() += 1;
        *by_route
            .entry(format!("{:?}", req.route))
            .or_default()
            .entry(key)
            .or_default() += 1;
        let found = judge(&req, &answer, &shop.tokens);
        if !found.is_empty() {
            problems.push(format!(
                "{}\n    !! {}",
                describe(i, &req, &answer),
                found.join("; ")
            ));
        }
    }
    let elapsed = started.elapsed();

    println!(
        "fuzz: seed {seed}, {count} requests in {:.1} s ({guarded} carrying a token or real signature, {protocol} broken at the protocol level)",
        elapsed.as_secs_f64()
    );
    println!(
        "fuzz: statuses {}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "fuzz: answers {}",
        codes
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (route, h) in &by_route {
        println!(
            "fuzz:   {route:<14} {}",
            h.iter()
                .map(|(s, n)| format!("{s}×{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("fuzz: {server_errors} answers 5xx other than 503");

    // The shop still serves, and nothing changed.
    let health = app.get("/healthz");
    assert_eq!(health.status(), 200, "healthz after the run");
    let after = app.dump();
    let changed = after != before;
    if changed {
        println!(
            "fuzz: the store changed ({} records before, {} after)",
            before.len(),
            after.len()
        );
    }
    for p in problems.iter().take(40) {
        println!("{p}");
    }
    assert!(count >= 500, "the run sends at least 500 requests");
    assert!(
        problems.is_empty(),
        "{} of {count} fuzzed requests were answered against the contract (seed {seed}); first:\n{}",
        problems.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !changed,
        "a rejected request changed the store (seed {seed})"
    );
}
