//! What requests the fuzz run makes: paths with odd segments, bodies
//! broken by construction, forged or missing credentials, then header,
//! protocol, framing and size noise on top — all from one seeded `StdRng`,
//! so a seed names a run.

use super::*;
use faka::payments::epay::{format_money, parse_money, sign as epay_sign};
use faka::payments::hmac::HmacGateway;
use rand::seq::SliceRandom;
use rand::Rng;
// ------------------------------------------------------------------ helpers

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.gen_range(0..items.len())]
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn to_bytes(m: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(m).expect("json")
}

// ------------------------------------------------------------------ paths

/// An odd path segment. The bool says whether it is broken at the
/// protocol level (raw bytes a request line may not hold).
fn odd_segment(rng: &mut StdRng) -> (Vec<u8>, bool) {
    let s = match rng.gen_range(0..34) {
        0 => "a".repeat(300),
        1 => "a".repeat(5000),
        2 => "x".repeat(20_000),
        3 => "..".into(),
        4 => ".".into(),
        5 => "%2e%2e".into(),
        6 => "..%2f..%2f..%2fetc%2fpasswd".into(),
        7 => "%2F".into(),
        8 => "p%2Fkeys".into(),
        9 => "%00".into(),
        10 => "p%00".into(),
        11 => "%ZZ".into(),
        12 => "%".into(),
        13 => "%E2%82%AC".into(),
        14 => "%F0%9F%92%A3%F0%9F%92%A3".into(),
        15 => "%C0%AF".into(),
        16 => "%FF%FE".into(),
        17 => "p;jsessionid=1".into(),
        18 => "p%20".into(),
        19 => "+".into(),
        20 => "%70".into(),
        21 => "P".into(),
        22 => "F%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30".into(),
        23 => "%252e%252e".into(),
        24 => "-1".into(),
        25 => "18446744073709551616".into(),
        26 => "{id}".into(),
        27 => "%7Bid%7D".into(),
        28 => "null".into(),
        29 => "evt_0000000000000001_F0000000000000000".into(),
        // Raw bytes that a request target may not carry.
        30 => return (vec![b'p', 0, b'x'], true),
        31 => return (bytes("ü€💣"), true),
        32 => return (vec![b'p', 0xff, 0xfe], true),
        _ => return (bytes("p q"), true),
    };
    (s.into_bytes(), false)
}

/// A path parameter: (bytes, broken at the protocol level, odd).
type Segment = (Vec<u8>, bool, bool);

fn odd(rng: &mut StdRng) -> Segment {
    let (s, proto) = odd_segment(rng);
    (s, proto, true)
}

fn product_segment(rng: &mut StdRng) -> Segment {
    match rng.gen_range(0..10) {
        0..=3 => (bytes("p"), false, false),
        4 => (bytes("off"), false, false),
        5 => (bytes("nope"), false, false),
        6 => (bytes(&"z".repeat(64)), false, false),
        _ => odd(rng),
    }
}

fn order_segment(rng: &mut StdRng, shop: &Shop) -> Segment {
    match rng.gen_range(0..10) {
        0..=4 => (bytes(pick(rng, &shop.orders())), false, false),
        5 => (bytes("F0000000000000000"), false, false),
        6 => (bytes(&shop.pending_hmac.to_lowercase()), false, false),
        7 => (bytes(&format!("{}0", shop.pending_epay)), false, false),
        _ => odd(rng),
    }
}

fn webhook_segment(rng: &mut StdRng, shop: &Shop) -> Segment {
    match rng.gen_range(0..6) {
        0 => (
            bytes(&format!("evt_0000000000000001_{}", shop.delivered_hmac)),
            false,
            false,
        ),
        1 => (bytes("evt_0000000000000000_"), false, false),
        2 => (bytes("evt_"), false, false),
        3 => (bytes("evt_99999999999999999999"), false, false),
        _ => odd(rng),
    }
}

/// The path of `route`, with its parameter possibly odd. Returns the path,
/// whether it is broken at the protocol level, and whether it is odd (may
/// not match the route any more).
fn path(rng: &mut StdRng, shop: &Shop, route: Route) -> Segment {
    let mut proto = false;
    let mut odd = false;
    let mut seg = |rng: &mut StdRng, f: &dyn Fn(&mut StdRng) -> Segment| {
        let (s, p, o) = f(rng);
        proto |= p;
        odd |= o;
        s
    };
    let join = |a: &str, s: Vec<u8>, b: &str| {
        let mut v = bytes(a);
        v.extend(s);
        v.extend_from_slice(b.as_bytes());
        v
    };
    let p = match route {
        Route::Healthz => bytes("/healthz"),
        Route::Metrics => bytes("/metrics"),
        Route::Products => bytes("/api/v1/products"),
        Route::Product => join("/api/v1/products/", seg(rng, &product_segment), ""),
        Route::CreateOrder => bytes("/api/v1/orders"),
        Route::Order => join(
            "/api/v1/orders/",
            seg(rng, &|r: &mut StdRng| order_segment(r, shop)),
            "",
        ),
        Route::HmacNotify => bytes("/api/v1/payments/hmac/notify"),
        Route::EpayNotify => bytes("/api/v1/payments/epay/notify"),
        Route::AdminProducts => bytes("/api/v1/admin/products"),
        Route::AdminProduct => join("/api/v1/admin/products/", seg(rng, &product_segment), ""),
        Route::Keys => join(
            "/api/v1/admin/products/",
            seg(rng, &product_segment),
            "/keys",
        ),
        Route::AdminOrders => bytes("/api/v1/admin/orders"),
        Route::AdminOrder => join(
            "/api/v1/admin/orders/",
            seg(rng, &|r: &mut StdRng| order_segment(r, shop)),
            "",
        ),
        Route::Pay => join(
            "/api/v1/admin/orders/",
            seg(rng, &|r: &mut StdRng| order_segment(r, shop)),
            "/pay",
        ),
        Route::Refund => join(
            "/api/v1/admin/orders/",
            seg(rng, &|r: &mut StdRng| order_segment(r, shop)),
            "/refund",
        ),
        Route::Webhooks => bytes("/api/v1/admin/webhooks"),
        Route::WebhookRetry => join(
            "/api/v1/admin/webhooks/",
            seg(rng, &|r: &mut StdRng| webhook_segment(r, shop)),
            "/retry",
        ),
        Route::Backup => bytes("/api/v1/admin/backup"),
        Route::Unknown => {
            let s = pick(
                rng,
                &[
                    "/api",
                    "/api/v1",
                    "/api/v1/",
                    "/api/v2/products",
                    "/API/V1/PRODUCTS",
                    "/api/v1/products/p/keys",
                    "/api/v1/admin",
                    "/api/v1/admin/",
                    "/api/v1/admin/keys",
                    "/api/v1/orders/",
                    "/api/v1/payments/paypal/notify",
                    "/api/v1/payments/hmac/notify/",
                    "/api/v1/payments//epay/notify",
                    "/.env",
                    "/../../etc/passwd",
                    "/%2e%2e/%2e%2e/etc/passwd",
                    "/healthz/",
                    "/healthz/x",
                    "/metrics.json",
                    "/favicon.ico",
                    "//api//v1//products",
                    "/api/v1/products%2Fp",
                    "/api/v1/admin/orders/F0000000000000000/pay/again",
                    "/api/v1/admin/products/p/keys/1",
                    "/api/v1/admin/webhooks/x",
                    "/api/v1/admin/backup/latest",
                ],
            );
            match rng.gen_range(0..8) {
                0 => {
                    let (seg, p) = odd_segment(rng);
                    proto |= p;
                    join("/", seg, "")
                }
                1 => bytes(&format!("/api/v1/{}", "a/".repeat(rng.gen_range(10..2000)))),
                _ => bytes(s),
            }
        }
    };
    (p, proto, odd)
}

fn odd_query(rng: &mut StdRng, shop: &Shop) -> String {
    let token = shop.tokens.choose(rng).cloned().unwrap_or_default();
    match rng.gen_range(0..34) {
        0 => "?".into(),
        1 => "?&&&".into(),
        2 => "?=".into(),
        3 => "?a".into(),
        4 => "?token=".into(),
        5 => "?token=%ZZ".into(),
        6 => format!("?token={}", "x".repeat(4000)),
        7 => "?limit=-1".into(),
        8 => "?limit=0".into(),
        9 => "?limit=99999999999999999999999".into(),
        10 => "?limit=1e3".into(),
        11 => "?cursor=abc".into(),
        12 => "?cursor=-1".into(),
        13 => "?cursor=18446744073709551616".into(),
        14 => "?state=nope".into(),
        15 => "?state=sold&state=held".into(),
        16 => "?status=pending&status=paid".into(),
        17 => "?email=%00".into(),
        18 => "?x[]=1&x[]=2".into(),
        19 => "?a=1;b=2".into(),
        20 => "?%FF=%FE".into(),
        21 => format!("?{}", "a=1&".repeat(500)),
        22 => "?state=%E2%82%AC".into(),
        23 => "?limit=%31%30&limit=5".into(),
        24 => format!("?token={token}&token=wrong"),
        25 => format!("?token={}", token.to_uppercase()),
        26 => "?status=PENDING".into(),
        27 => "?limit=1001&state=available".into(),
        28 => "?cursor=".into(),
        29 => "?unknown=1".into(),
        30 => "?%".into(),
        31 => "?token=%00".into(),
        32 => "?pid=1001&sign=x".into(),
        _ => "??".into(),
    }
}

// ------------------------------------------------------------------ bodies

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    List,
}

/// (field, type, required) of each JSON body.
fn schema(route: Route) -> &'static [(&'static str, Ty, bool)] {
    match route {
        Route::CreateOrder => &[
            ("product_id", Ty::Str, true),
            ("quantity", Ty::Int, true),
            ("email", Ty::Str, true),
            ("gateway", Ty::Str, true),
            ("query_password", Ty::Str, false),
        ],
        Route::AdminProducts => &[
            ("id", Ty::Str, false),
            ("name", Ty::Str, true),
            ("description", Ty::Str, false),
            ("price", Ty::Int, true),
            ("min_quantity", Ty::Int, false),
            ("max_quantity", Ty::Int, false),
            ("active", Ty::Bool, false),
        ],
        Route::AdminProduct => &[
            ("name", Ty::Str, false),
            ("description", Ty::Str, false),
            ("price", Ty::Int, false),
            ("min_quantity", Ty::Int, false),
            ("max_quantity", Ty::Int, false),
            ("active", Ty::Bool, false),
        ],
        Route::Keys => &[("ids", Ty::List, true)],
        Route::Pay => &[("trade_no", Ty::Str, false), ("note", Ty::Str, false)],
        Route::Refund => &[("note", Ty::Str, false)],
        Route::HmacNotify => &[
            ("order_no", Ty::Str, true),
            ("trade_no", Ty::Str, true),
            ("amount", Ty::Int, true),
            ("status", Ty::Str, true),
        ],
        _ => &[],
    }
}

/// A body that the route would accept, on the seeded shop's real targets.
fn valid_body(rng: &mut StdRng, shop: &Shop, route: Route, n: usize) -> Map<String, Value> {
    obj(match route {
        Route::CreateOrder => json!({
            "product_id": "p", "quantity": 1, "email": "buyer@example.com",
            "gateway": pick(rng, &["manual", "hmac", "epay"]),
        }),
        Route::AdminProducts => json!({"id": format!("fz-{n}"), "name": "Fuzz", "price": 100}),
        Route::AdminProduct => match rng.gen_range(0..3) {
            0 => json!({"price": 200}),
            1 => json!({"active": false}),
            _ => json!({"name": "Renamed", "max_quantity": 3}),
        },
        Route::Keys => json!({"ids": ["1"]}),
        Route::Pay => json!({"trade_no": format!("fuzz-{n}")}),
        Route::Refund => json!({"note": "fuzz"}),
        Route::HmacNotify => json!({
            "order_no": shop.pending_hmac, "trade_no": format!("FZ-{n}"),
            "amount": PRICE, "status": "paid",
        }),
        _ => json!({}),
    })
}

/// Values that the route refuses for a field (never a valid spelling).
fn invalid_values(route: Route) -> Vec<(&'static str, Value)> {
    let long = |n: usize| Value::String("y".repeat(n));
    match route {
        Route::CreateOrder => vec![
            ("quantity", json!(0)),
            ("quantity", json!(11)),
            ("quantity", json!(4_294_967_295u64)),
            ("email", json!("")),
            ("email", json!("no-at-sign")),
            ("email", json!("a@b")),
            ("email", json!("a b@c.de")),
            ("email", json!("a@@b.co")),
            ("email", long(300)),
            ("gateway", json!("")),
            ("gateway", json!("paypal")),
            ("gateway", json!("EPAY")),
            ("gateway", json!(" manual")),
            ("product_id", json!("nope")),
            ("product_id", json!("off")),
            ("product_id", json!("")),
            ("product_id", json!("P")),
            ("product_id", json!("../p")),
            ("query_password", json!("")),
            ("query_password", long(65)),
        ],
        Route::AdminProducts => vec![
            ("id", json!("p")),
            ("id", json!("off")),
            ("id", json!("Bad Id")),
            ("id", json!("-x")),
            ("id", json!("")),
            ("id", long(65)),
            ("name", json!("")),
            ("name", json!("   ")),
            ("name", long(201)),
            ("price", json!(0)),
            ("price", json!(1_000_000_000_001u64)),
            ("min_quantity", json!(0)),
            ("min_quantity", json!(100_001)),
            ("max_quantity", json!(0)),
            ("max_quantity", json!(100_001)),
            ("description", long(10_001)),
        ],
        Route::AdminProduct => vec![
            ("name", json!("")),
            ("name", long(201)),
            ("price", json!(0)),
            ("price", json!(1_000_000_000_001u64)),
            ("min_quantity", json!(0)),
            ("max_quantity", json!(100_001)),
            ("description", long(10_001)),
        ],
        Route::Keys => vec![
            ("ids", json!(["abc"])),
            ("ids", json!(["-1"])),
            ("ids", json!(["1.5"])),
            ("ids", json!([""])),
            ("ids", json!(["1", "18446744073709551616"])),
            ("ids", json!([" 1"])),
        ],
        Route::Pay => vec![
            ("trade_no", json!("")),
            ("trade_no", long(129)),
            ("trade_no", json!("a\u{1}b")),
            ("note", long(501)),
        ],
        Route::Refund => vec![("note", long(501)), ("note", long(5000))],
        _ => vec![],
    }
}

fn wrong_type(ty: Ty, rng: &mut StdRng) -> Value {
    let choices: Vec<Value> = match ty {
        Ty::Str => vec![
            json!(1),
            json!(true),
            json!([]),
            json!({}),
            json!(["x"]),
            json!(1.5),
        ],
        Ty::Int => vec![
            json!("1"),
            json!(1.5),
            json!(-1),
            json!(true),
            json!([]),
            json!({}),
            json!(1e300),
            json!(-0.0),
            json!("0x10"),
        ],
        Ty::Bool => vec![json!("true"), json!(1), json!(0), json!([]), json!("yes")],
        Ty::List => vec![
            json!("1"),
            json!(1),
            json!([1]),
            json!([true]),
            json!({}),
            json!([["1"]]),
            json!([null]),
        ],
    };
    choices[rng.gen_range(0..choices.len())].clone()
}

/// JSON that no route accepts: syntax errors, non-UTF-8, nesting too deep.
/// Whitespace-only bodies only when `blank` (an empty manual pay or refund
/// body is valid).
fn garbage(rng: &mut StdRng, blank: bool) -> (String, Vec<u8>) {
    let fixed: &[&[u8]] = &[
        b"{",
        b"}",
        b"{\"a\":",
        b"[",
        b"nul",
        b"tru",
        b"{'name': 'x'}",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{} trailing",
        b"{}{}",
        b"\x00",
        b"\xff\xfe{\x00}",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\\uD800\"",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":01}",
        b"{\"a\":+1}",
        b"{\"a\":.5}",
        b"{\"a\":NaN}",
        b"{\"a\":Infinity}",
        b"{\"a\":1e999}",
        b"{\"a\":-1e999}",
        b"<xml/>",
        b"a=1&b=2",
        b"{\"a\":\"\n\"}",
        b"/* c */ {}",
        b"\"unterminated",
    ];
    let blanks: &[&[u8]] = &[b"", b"   ", b"\r\n\t", b"\n\n\n"];
    let which = rng.gen_range(0..(fixed.len() + 8));
    if which < fixed.len() {
        return ("garbage".into(), fixed[which].to_vec());
    }
    match which - fixed.len() {
        0 if blank => (
            "blank".into(),
            blanks[rng.gen_range(0..blanks.len())].to_vec(),
        ),
        0 | 1 => {
            let n = rng.gen_range(1..200);
            let mut b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            // Never whitespace-only, never a valid document by chance.
            b.insert(0, b'{');
            b.push(0xff);
            ("random bytes".into(), b)
        }
        2 => {
            let d = *[200usize, 5000, 20_000].choose(rng).expect("depth");
            (
                "deep arrays".into(),
                format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes(),
            )
        }
        3 => {
            let d = *[129usize, 300, 3000].choose(rng).expect("depth");
            (
                "deep objects".into(),
                format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d)).into_bytes(),
            )
        }
        4 => {
            let d = *[200usize, 10_000].choose(rng).expect("depth");
            (
                "deep unclosed".into(),
                format!("{{\"a\":{}", "[".repeat(d)).into_bytes(),
            )
        }
        5 => (
            "huge number".into(),
            format!("{{\"a\":1{}}}", "0".repeat(rng.gen_range(400..60_000))).into_bytes(),
        ),
        _ => (
            "unterminated string".into(),
            format!("{{\"a\":\"{}", "s".repeat(rng.gen_range(1..3000))).into_bytes(),
        ),
    }
}

/// A body that `route` refuses whatever the target: never valid.
fn broken_json(rng: &mut StdRng, shop: &Shop, route: Route, n: usize) -> (String, Vec<u8>) {
    let blank_ok = !matches!(route, Route::Pay | Route::Refund);
    let schema = schema(route);
    let valid = valid_body(rng, shop, route, n);
    match rng.gen_range(0..11) {
        0 | 1 => garbage(rng, blank_ok),
        2 => {
            let b = to_bytes(&valid);
            let cut = rng.gen_range(1..b.len());
            ("truncated".into(), b[..cut].to_vec())
        }
        3 => {
            let v = match rng.gen_range(0..6) {
                0 => Value::Array(valid.values().cloned().collect()),
                1 => json!([Value::Object(valid.clone())]),
                2 => json!(null),
                3 => json!(1),
                4 => json!("{\"name\":\"x\"}"),
                _ => json!(true),
            };
            ("not an object".into(), v.to_string().into_bytes())
        }
        4 => {
            let mut m = valid;
            match rng.gen_range(0..3) {
                0 => {
                    m.insert("zz9_unknown".into(), json!(1));
                }
                1 => {
                    m.insert("__proto__".into(), json!({}));
                }
                _ => {
                    // A known field, spelt with a capital.
                    let (f, _, _) = schema
                        .choose(rng)
                        .copied()
                        .unwrap_or(("name", Ty::Str, false));
                    let mut cap = f.to_string();
                    cap[..1].make_ascii_uppercase();
                    m.insert(cap, json!(1));
                }
            }
            ("unknown field".into(), to_bytes(&m))
        }
        5 | 6 => {
            let mut m = valid;
            match schema.choose(rng) {
                Some((f, ty, _)) => {
                    m.insert(f.to_string(), wrong_type(*ty, rng));
                }
                None => {
                    m.insert("a".into(), json!(1));
                }
            }
            ("wrong type".into(), to_bytes(&m))
        }
        7 => {
            let required: Vec<&str> = schema
                .iter()
                .filter(|(_, _, r)| *r)
                .map(|(f, _, _)| *f)
                .collect();
            let mut m = valid;
            match required.choose(rng) {
                Some(f) => {
                    m.remove(*f);
                }
                None => {
                    m.insert("bogus".into(), json!(null));
                }
            }
            ("missing field".into(), to_bytes(&m))
        }
        8 | 9 => {
            let bad = invalid_values(route);
            let mut m = valid;
            match bad.choose(rng) {
                Some((f, v)) => {
                    m.insert(f.to_string(), v.clone());
                }
                None => {
                    m.insert("zz".into(), json!(0));
                }
            }
            ("invalid value".into(), to_bytes(&m))
        }
        _ => {
            // Non-UTF-8 inside a string value of an otherwise valid body.
            let mut b = to_bytes(&valid);
            match b.iter().rposition(|c| *c == b'"') {
                Some(i) if i > 0 => {
                    b.insert(i, 0xc3);
                    b.insert(i, 0xff);
                }
                _ => b = b"{\"a\":\"\xff\"}".to_vec(),
            }
            ("non-UTF-8 string".into(), b)
        }
    }
}

/// A key upload that is refused both as text and as JSON, whatever the
/// Content-Type says: blank, over-long lines, or not UTF-8.
fn broken_upload(rng: &mut StdRng) -> (String, Vec<u8>) {
    let long = "K".repeat(rng.gen_range(4097..9000));
    let b: Vec<u8> = match rng.gen_range(0..7) {
        0 => Vec::new(),
        1 => b"\n\n   \r\n\t\n".to_vec(),
        2 => format!("{{\"keys\": [\"{long}").into_bytes(),
        3 => format!("{{\"keys\": [\"{long}\"]}}").into_bytes(),
        4 => b"{\"keys\": [\"a\xffb\"]}".to_vec(),
        5 => {
            let mut v = b"GOOD-KEY-1\nGOOD-KEY-2\n".to_vec();
            v.extend_from_slice(b"bad \xfe\xff key\n");
            v
        }
        _ => format!("KEY-A\n{long}\nKEY-B\n").into_bytes(),
    };
    ("broken upload".into(), b)
}

// ------------------------------------------------------------------ auth

/// An Authorization header, and whether it could pass as the admin token.
fn auth(rng: &mut StdRng) -> (Option<Vec<u8>>, bool) {
    let (v, ok): (Option<Vec<u8>>, bool) = match rng.gen_range(0..20) {
        0..=4 => (Some(bytes(&format!("Bearer {ADMIN}"))), true),
        5 => (Some(bytes(&format!("Bearer   {ADMIN}  "))), true),
        // A lenient server might take a lower-case scheme or a list.
        6 => (Some(bytes(&format!("bearer {ADMIN}"))), true),
        7 => (Some(bytes(&format!("Bearer {ADMIN}, Bearer x"))), true),
        8 => (None, false),
        9 => (Some(bytes("Bearer wrong-token")), false),
        10 => (Some(bytes("Bearer ")), false),
        11 => (Some(bytes("Bearer")), false),
        12 => (Some(bytes("Basic dGVzdDp0ZXN0")), false),
        13 => (Some(bytes(&format!("Token {ADMIN}"))), false),
        14 => (Some(bytes(&format!("Bearer {ADMIN}x"))), false),
        15 => (
            Some(bytes(&format!("Bearer {}", ADMIN.to_uppercase()))),
            false,
        ),
        16 => (Some(bytes(&format!("Bearer {}", "a".repeat(8000)))), false),
        17 => (Some(b"Bearer \xff\xfe\xfd".to_vec()), false),
        18 => (
            Some(bytes(&format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]))),
            false,
        ),
        _ => (Some(bytes(&format!("Bearer\t{ADMIN}"))), true),
    };
    (v, ok)
}

// ------------------------------------------------------------------ builders

fn new_req(route: Route, method: &str, target: Vec<u8>) -> Req {
    Req {
        route,
        family: String::new(),
        method: method.to_string(),
        target,
        version: "HTTP/1.1",
        host: Some("127.0.0.1"),
        headers: Vec::new(),
        body: Vec::new(),
        framing: Framing::Exact,
        answer: Answer::Json,
        guarded: false,
        expect: None,
    }
}

fn wrong_method(rng: &mut StdRng, allowed: &[&str]) -> String {
    let all = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "PoSt",
        "M-SEARCH", "PROPFIND", "PURGE",
    ];
    loop {
        let m = if rng.gen_range(0..20) == 0 {
            "X".repeat(rng.gen_range(30..300))
        } else {
            all[rng.gen_range(0..all.len())].to_string()
        };
        if !allowed.contains(&m.as_str()) {
            return m;
        }
    }
}

/// Any route but the two callbacks.
fn ordinary(rng: &mut StdRng, shop: &Shop, route: Route, n: usize) -> Req {
    let allowed = route.methods();
    let wrong = allowed.is_empty() || rng.gen_range(0..7) == 0;
    let method = if wrong {
        if route == Route::Unknown && rng.gen_bool(0.6) {
            pick(rng, &["GET", "POST", "DELETE"]).to_string()
        } else {
            wrong_method(rng, allowed)
        }
    } else {
        allowed[rng.gen_range(0..allowed.len())].to_string()
    };
    let (mut target, proto_path, odd_path) = path(rng, shop, route);
    let mut families = vec![match (route, wrong) {
        (Route::Unknown, _) => "unknown path",
        (_, true) => "wrong method",
        _ => "",
    }
    .to_string()];
    if proto_path {
        families.push("raw path bytes".into());
    }
    if rng.gen_range(0..4) == 0 {
        target.extend_from_slice(odd_query(rng, shop).as_bytes());
        families.push("odd query".into());
    } else if route == Route::Order && rng.gen_bool(0.5) {
        let t = shop.tokens.choose(rng).cloned().unwrap_or_default();
        // The real token of another order, or a near miss.
        let token = match rng.gen_range(0..3) {
            0 => t,
            1 => format!("{}A", &t[..t.len().saturating_sub(1)]),
            _ => "0".repeat(43),
        };
        target.extend_from_slice(format!("?token={token}").as_bytes());
    }
    let mut req = new_req(route, &method, target);
    if proto_path {
        req.answer = Answer::Protocol;
    }
    let mut authorized = false;
    if route.admin() || rng.gen_range(0..8) == 0 {
        let (h, ok) = auth(rng);
        if let Some(h) = h {
            req.headers.push(("Authorization".into(), h));
        }
        authorized = ok && route.admin();
        if !ok {
            families.push("bad auth".into());
        }
    }
    // A backup has no body to break: with the token it would succeed.
    if route == Route::Backup && authorized && !wrong {
        req.headers.retain(|(k, _)| k != "Authorization");
        req.headers
            .push(("Authorization".into(), bytes("Bearer not-the-token")));
        authorized = false;
        families.push("bad auth".into());
    }
    let changes = !wrong
        && matches!(
            (route, method.as_str()),
            (Route::CreateOrder, _)
                | (Route::AdminProducts, "POST")
                | (Route::AdminProduct, _)
                | (Route::Keys, "POST" | "DELETE")
                | (Route::Pay, _)
                | (Route::Refund, _)
                | (Route::WebhookRetry, _)
        );
    req.guarded = changes && (authorized || route == Route::CreateOrder);
    let token_ok = req.headers.iter().any(|(k, v)| {
        k == "Authorization" && {
            let v = String::from_utf8_lossy(v);
            v.contains(ADMIN) && !v.contains(&format!("{ADMIN}x"))
        }
    });
    req.expect = if route == Route::Unknown {
        Some((404, "not_found"))
    } else if odd_path {
        None
    } else if wrong {
        Some((405, "method_not_allowed"))
    } else if route.admin() && !token_ok {
        // The admin check comes before anything the request could learn.
        Some((401, "unauthorized"))
    } else {
        None
    };
    let json_ct = ("Content-Type".to_string(), bytes("application/json"));
    if changes {
        let (family, body) = if route == Route::Keys && method == "POST" {
            if req.guarded || rng.gen_bool(0.5) {
                broken_upload(rng)
            } else {
                (
                    "valid upload, no auth".into(),
                    b"FUZZ-KEY-1\nFUZZ-KEY-2\n".to_vec(),
                )
            }
        } else if req.guarded || rng.gen_bool(0.4) {
            broken_json(rng, shop, route, n)
        } else {
            let v = valid_body(rng, shop, route, n);
            ("valid body, no auth".into(), to_bytes(&v))
        };
        families.push(family);
        if route == Route::Keys && method == "POST" && rng.gen_bool(0.5) {
            req.headers
                .push(("Content-Type".into(), bytes("text/plain")));
        } else {
            req.headers.push(json_ct);
        }
        req.body = body;
    } else if rng.gen_range(0..4) == 0 {
        // A body where none belongs, or on a wrong method.
        let (family, body) = if rng.gen_bool(0.5) && !schema(route).is_empty() {
            let v = valid_body(rng, shop, route, n);
            ("stray valid body".into(), to_bytes(&v))
        } else {
            garbage(rng, true)
        };
        families.push(format!("stray {family}"));
        req.headers.push(json_ct);
        req.body = body;
    }
    req.family = families
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    req
}

/// The generic signed JSON callback: forged, or signed but broken.
fn hmac(rng: &mut StdRng, shop: &Shop, n: usize) -> Req {
    let mut req = new_req(
        Route::HmacNotify,
        "POST",
        bytes("/api/v1/payments/hmac/notify"),
    );
    req.headers
        .push(("Content-Type".into(), bytes("application/json")));
    let valid_content = rng.gen_bool(0.5);
    let (content_family, body) = if valid_content {
        let mut m = valid_body(rng, shop, Route::HmacNotify, n);
        if rng.gen_bool(0.3) {
            // The delivered order: a second payment would be recorded.
            m.insert("order_no".into(), json!(shop.delivered_hmac));
        }
        ("payable content".to_string(), to_bytes(&m))
    } else {
        let mut bad: Vec<(&str, Value)> = vec![
            ("amount", json!(PRICE - 1)),
            ("amount", json!(PRICE + 1)),
            ("amount", json!(0)),
            ("amount", json!(PRICE * 100)),
            ("amount", json!(u64::MAX)),
            ("status", json!("failed")),
            ("status", json!("PAID")),
            ("status", json!("")),
            ("status", json!("paid ")),
            ("order_no", json!("F0000000000000000")),
            ("order_no", json!(shop.pending_epay)),
            ("order_no", json!(shop.pending_manual)),
            ("order_no", json!("not-an-order")),
            ("order_no", json!(shop.pending_hmac.to_lowercase())),
            ("order_no", json!("")),
            ("trade_no", json!("")),
            ("trade_no", json!("t".repeat(200))),
            ("trade_no", json!("a\u{0}b")),
        ];
        if rng.gen_bool(0.6) {
            let (f, v) = bad.swap_remove(rng.gen_range(0..bad.len()));
            let mut m = valid_body(rng, shop, Route::HmacNotify, n);
            m.insert(f.into(), v);
            (format!("bad {f}"), to_bytes(&m))
        } else {
            broken_json(rng, shop, Route::HmacNotify, n)
        }
    };
    let ts = now_secs();
    let sign = |secret: &str, ts: &str, body: &[u8]| HmacGateway::sign(secret.as_bytes(), ts, body);
    // (timestamp header, signature header, family); None = header absent.
    let forged: Vec<(Option<String>, Option<String>, &str)> = vec![
        (None, None, "no signature"),
        (Some(ts.to_string()), None, "no signature header"),
        (
            None,
            Some(sign(HMAC_SECRET, &ts.to_string(), &body)),
            "no timestamp header",
        ),
        (
            Some(ts.to_string()),
            Some(sign("wrong-secret", &ts.to_string(), &body)),
            "wrong secret",
        ),
        (
            Some(ts.to_string()),
            Some(sign(&HMAC_SECRET.to_uppercase(), &ts.to_string(), &body)),
            "secret in other case",
        ),
        (
            Some(ts.to_string()),
            Some(sign(HMAC_SECRET, &ts.to_string(), b"{}")),
            "signature of another body",
        ),
        (
            Some(ts.to_string()),
            Some(sign(
                HMAC_SECRET,
                &ts.to_string(),
                &[&body[..], b" "].concat(),
            )),
            "signature of a padded body",
        ),
        (
            Some((ts + 1).to_string()),
            Some(sign(HMAC_SECRET, &ts.to_string(), &body)),
            "timestamp not signed",
        ),
        (
            Some((ts - 1000).to_string()),
            Some(sign(HMAC_SECRET, &(ts - 1000).to_string(), &body)),
            "stale timestamp",
        ),
        (
            Some((ts + 1000).to_string()),
            Some(sign(HMAC_SECRET, &(ts + 1000).to_string(), &body)),
            "future timestamp",
        ),
        (
            Some((ts * 1000).to_string()),
            Some(sign(HMAC_SECRET, &(ts * 1000).to_string(), &body)),
            "timestamp in ms",
        ),
        (
            Some(format!("-{ts}")),
            Some(sign(HMAC_SECRET, &format!("-{ts}"), &body)),
            "negative timestamp",
        ),
        (
            Some(format!("{ts}.0")),
            Some(sign(HMAC_SECRET, &format!("{ts}.0"), &body)),
            "fractional timestamp",
        ),
        (
            Some("99999999999999999999999".into()),
            Some(sign(HMAC_SECRET, "99999999999999999999999", &body)),
            "huge timestamp",
        ),
        (
            Some(ts.to_string()),
            Some(sign(HMAC_SECRET, &ts.to_string(), &body)[..32].to_string()),
            "truncated signature",
        ),
        (
            Some(ts.to_string()),
            Some(format!(
                "sha256={}",
                sign(HMAC_SECRET, &ts.to_string(), &body)
            )),
            "prefixed signature",
        ),
        (Some(ts.to_string()), Some(String::new()), "empty signature"),
        (Some(ts.to_string()), Some("0".repeat(64)), "zero signature"),
        (
            Some(ts.to_string()),
            Some("g".repeat(5000)),
            "huge signature",
        ),
    ];
    let (ts_h, sig_h, sig_family) = if valid_content || rng.gen_bool(0.5) {
        forged[rng.gen_range(0..forged.len())].clone()
    } else {
        // Signed with the real secret: only the content is wrong.
        let s = sign(HMAC_SECRET, &ts.to_string(), &body);
        if rng.gen_bool(0.5) {
            (Some(ts.to_string()), Some(s), "signed")
        } else {
            (
                Some(ts.to_string()),
                Some(s.to_uppercase()),
                "signed, upper case",
            )
        }
    };
    req.guarded = matches!(sig_family, "signed" | "signed, upper case");
    if !req.guarded {
        // The signature is checked before anything else is looked at.
        req.expect = Some((400, "invalid_signature"));
    }
    if let Some(t) = ts_h {
        req.headers
            .push(("X-Faka-Timestamp".into(), t.into_bytes()));
    }
    if let Some(s) = sig_h {
        req.headers
            .push(("X-Faka-Signature".into(), s.into_bytes()));
    }
    req.body = body;
    req.family = format!("hmac: {sig_family}, {content_family}");
    req
}

/// epay notify: forged, or signed but broken; by GET query or POST form.
fn epay(rng: &mut StdRng, shop: &Shop, n: usize) -> Req {
    let good = |n: usize| -> Vec<(String, String)> {
        [
            ("pid", EPAY_PID.to_string()),
            ("trade_no", format!("2026{n:012}")),
            ("out_trade_no", shop.pending_epay.clone()),
            ("type", "alipay".into()),
            ("name", "p x1".into()),
            ("money", format_money(PRICE)),
            ("trade_status", "TRADE_SUCCESS".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let mut params = good(n);
    let set = |params: &mut Vec<(String, String)>, k: &str, v: String| match params
        .iter_mut()
        .find(|(f, _)| f == k)
    {
        Some(p) => p.1 = v,
        None => params.push((k.to_string(), v)),
    };
    let valid_content = rng.gen_bool(0.5);
    let content_family = if valid_content {
        "payable content".to_string()
    } else {
        let money_bad: Vec<String> = [
            "1.01",
            "0.99",
            "100",
            "1.001",
            "-1.00",
            "1e2",
            "0x64",
            " 1.00",
            "1,00",
            "",
            "01.0.0",
            "99999999999999999999",
            "NaN",
            "1.00 ",
        ]
        .iter()
        .map(|s| s.to_string())
        .filter(|m| parse_money(m) != Some(PRICE))
        .collect();
        match rng.gen_range(0..8) {
            0 => {
                let m = money_bad.choose(rng).cloned().unwrap_or_default();
                set(&mut params, "money", m);
                "bad money".into()
            }
            1 => {
                let p = pick(rng, &["1002", "", "01001", "1001 "]);
                set(&mut params, "pid", p.into());
                "bad pid".into()
            }
            2 => {
                let s = pick(
                    rng,
                    &[
                        "TRADE_CLOSED",
                        "WAIT_BUYER_PAY",
                        "trade_success",
                        "",
                        "TRADE_FINISHED",
                    ],
                );
                set(&mut params, "trade_status", s.into());
                "bad trade_status".into()
            }
            3 => {
                let o = match rng.gen_range(0..5) {
                    0 => "F0000000000000000".to_string(),
                    1 => shop.pending_hmac.clone(),
                    2 => shop.pending_manual.clone(),
                    3 => String::new(),
                    _ => "../../etc".into(),
                };
                set(&mut params, "out_trade_no", o);
                "bad out_trade_no".into()
            }
            4 => {
                let t = match rng.gen_range(0..3) {
                    0 => String::new(),
                    1 => "9".repeat(300),
                    _ => "a\u{1}b".into(),
                };
                set(&mut params, "trade_no", t);
                "bad trade_no".into()
            }
            5 => {
                let f = pick(
                    rng,
                    &["money", "trade_no", "out_trade_no", "trade_status", "pid"],
                );
                params.retain(|(k, _)| k != f);
                format!("missing {f}")
            }
            6 => {
                // The same field twice, with different values.
                params.push(("money".into(), "0.01".into()));
                "duplicate field".into()
            }
            _ => {
                set(
                    &mut params,
                    "sign_type",
                    pick(rng, &["RSA", "SHA256"]).into(),
                );
                "bad sign_type".into()
            }
        }
    };
    let real = epay_sign(&params, EPAY_KEY);
    let forged: Vec<(Option<String>, &str)> = vec![
        (None, "no sign"),
        (Some(String::new()), "empty sign"),
        (Some(epay_sign(&params, "wrong-key")), "wrong key"),
        (Some(epay_sign(&params, "")), "empty key"),
        (
            Some(epay_sign(&good(n + 1), EPAY_KEY)),
            "sign of another form",
        ),
        (Some("0".repeat(32)), "zero sign"),
        (Some(real[..31].to_string()), "truncated sign"),
        (Some(format!("{real}0")), "long sign"),
        (
            Some({
                let mut with = params.clone();
                with.push(("sign_type".into(), "MD5".into()));
                let text: Vec<String> = with.iter().map(|(k, v)| format!("{k}={v}")).collect();
                // The epay signer over no fields is MD5(key): MD5 of our own text.
                epay_sign(&[], &format!("{}{EPAY_KEY}", text.join("&")))
            }),
            "unsorted, with sign_type",
        ),
    ];
    let (sign, sig_family) = if valid_content || rng.gen_bool(0.5) {
        forged[rng.gen_range(0..forged.len())].clone()
    } else if rng.gen_bool(0.7) {
        (Some(real), "signed")
    } else {
        (Some(real.to_uppercase()), "signed, upper case")
    };
    let guarded = matches!(sig_family, "signed" | "signed, upper case");
    if let Some(s) = sign {
        params.push(("sign".into(), s));
    }
    if !params.iter().any(|(k, _)| k == "sign_type") {
        params.push(("sign_type".into(), "MD5".into()));
    }
    if rng.gen_bool(0.3) {
        params.shuffle(rng);
    }
    let form = serde_urlencoded::to_string(&params).expect("form");
    // Raw values, not URL-encoded: only in a body (a request line cannot
    // carry the spaces).
    let raw_form = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut req = match rng.gen_range(0..4) {
        0 | 1 => {
            let mut r = new_req(
                Route::EpayNotify,
                "GET",
                bytes(&format!("/api/v1/payments/epay/notify?{form}")),
            );
            r.family = "GET".into();
            r
        }
        2 => {
            let mut r = new_req(
                Route::EpayNotify,
                "POST",
                bytes("/api/v1/payments/epay/notify"),
            );
            r.headers.push((
                "Content-Type".into(),
                bytes("application/x-www-form-urlencoded"),
            ));
            if rng.gen_bool(0.25) {
                r.body = raw_form.into_bytes();
                r.family = "POST raw form".into();
            } else {
                r.body = form.into_bytes();
                r.family = "POST form".into();
            }
            r
        }
        _ => {
            // The form in the query, and a different body.
            let mut r = new_req(
                Route::EpayNotify,
                "POST",
                bytes(&format!("/api/v1/payments/epay/notify?{form}")),
            );
            r.headers
                .push(("Content-Type".into(), bytes("application/json")));
            r.body = to_bytes(&obj(json!({"money": "1.00", "pid": EPAY_PID})));
            r.family = "POST query + JSON body".into();
            r
        }
    };
    req.answer = Answer::Epay;
    req.guarded = guarded;
    if !guarded {
        req.expect = Some((400, "fail"));
    }
    req.family = format!("epay {}: {sig_family}, {content_family}", req.family);
    req
}

// ------------------------------------------------------------------ mutations

fn header_noise(rng: &mut StdRng, req: &mut Req, shop: &Shop) {
    for _ in 0..rng.gen_range(0..4) {
        let (name, value): (&str, Vec<u8>) = match rng.gen_range(0..26) {
            0 => ("Content-Type", bytes("text/plain")),
            1 => ("Content-Type", bytes("application/x-www-form-urlencoded")),
            2 => ("Content-Type", bytes("multipart/form-data; boundary=xyz")),
            3 => ("Content-Type", bytes("application/JSON; charset=latin1")),
            4 => ("Content-Type", b"application/\xff\xfe".to_vec()),
            5 => ("Content-Type", bytes(&"a".repeat(3000))),
            6 => ("Idempotency-Key", bytes("")),
            7 => ("Idempotency-Key", bytes(&"k".repeat(65))),
            8 => ("Idempotency-Key", bytes(&"k".repeat(10_000))),
            9 => ("Idempotency-Key", b"\xe2\x82\xac-key".to_vec()),
            10 => ("Idempotency-Key", bytes("has space")),
            11 => ("Idempotency-Key", bytes("fuzz-key-1")),
            12 => ("X-Request-Id", bytes(&"r".repeat(500))),
            13 => ("X-Request-Id", b"\xff\xfe".to_vec()),
            14 => ("X-Forwarded-For", bytes("1.2.3.4, garbage, ::1")),
            15 => ("X-Forwarded-For", bytes(&"9.9.9.9,".repeat(300))),
            16 => (
                "X-Order-Token",
                bytes(&shop.tokens.choose(rng).cloned().unwrap_or_default()),
            ),
            17 => ("X-Order-Token", bytes(&"t".repeat(5000))),
            18 => ("X-Faka-Signature", bytes(&"f".repeat(64))),
            19 => ("X-Faka-Timestamp", bytes("-1")),
            20 => ("Accept", bytes("*/*;q=x, text/html;;")),
            21 => ("Accept-Encoding", bytes("gzip, br, zstd, garbage;q=2")),
            22 => ("Cookie", bytes(&format!("session={}", "c".repeat(2000)))),
            23 => ("Expect", bytes("100-continue")),
            24 => (
                "X-Fuzz-Pad",
                bytes(&"p".repeat(rng.gen_range(1000..16_000))),
            ),
            _ => ("Range", bytes("bytes=0-1,5-")),
        };
        req.headers.push((name.to_string(), value));
        req.family.push_str(&format!(", header {name}"));
    }
}

/// Mutations that break the request at the HTTP level (answered by the HTTP
/// server itself, possibly without the JSON body).
fn protocol_noise(rng: &mut StdRng, req: &mut Req) {
    let what = match rng.gen_range(0..9) {
        0 => {
            req.version = pick(
                rng,
                &["HTTP/1.2", "HTTP/2.0", "HTTX/1.1", "HTTP/1", "http/1.1"],
            );
            "bad version"
        }
        1 => {
            req.framing = Framing::BadLength(pick(
                rng,
                &["abc", "-1", "1 1", "99999999999999999999", "0x10", ""],
            ));
            "bad Content-Length"
        }
        2 => {
            req.framing = Framing::TwoLengths;
            "two Content-Lengths"
        }
        3 => {
            req.framing = Framing::LengthAndChunked;
            "Content-Length and chunked"
        }
        4 => {
            req.headers.push((
                "X-Huge".into(),
                bytes(&"h".repeat(rng.gen_range(200_000..300_000))),
            ));
            "header over the limit"
        }
        5 => {
            for i in 0..120 {
                req.headers.push((format!("X-Many-{i}"), bytes("1")));
            }
            "too many headers"
        }
        6 => {
            req.headers.push(("Bad Name".into(), bytes("x")));
            "bad header name"
        }
        7 => {
            req.headers.push(("X-Ctl".into(), b"a\x01b".to_vec()));
            "control byte in header"
        }
        _ => {
            req.host = None;
            req.version = "HTTP/1.1";
            "no Host"
        }
    };
    req.answer = Answer::Protocol;
    req.family.push_str(&format!(", protocol: {what}"));
}

fn framing_noise(rng: &mut StdRng, req: &mut Req) {
    let len = req.body.len();
    let f = match rng.gen_range(0..4) {
        // A shorter length could leave a broken body valid (a prefix of it,
        // or nothing): only where the body is not what keeps it refused.
        0 if !req.guarded && len > 0 => Framing::Short(rng.gen_range(0..len)),
        0 | 1 => Framing::Long(rng.gen_range(1..1_000_000)),
        2 => Framing::Chunked,
        _ => Framing::BadChunked(rng.gen_range(0..4)),
    };
    req.family.push_str(&format!(", framing {f:?}"));
    req.framing = f;
}

fn oversize(rng: &mut StdRng, req: &mut Req) {
    // Over the 64 KiB limit of every route but key import (which is 256 MB).
    if req.route == Route::Keys {
        return;
    }
    let n = rng.gen_range(65 * 1024..200 * 1024);
    if req.guarded {
        // Still broken when the limit is not enforced: an unterminated
        // string.
        req.body = format!("{{\"name\":\"{}", "x".repeat(n)).into_bytes();
    } else {
        let mut v = obj(json!({}));
        v.insert("padding".into(), Value::String("x".repeat(n)));
        req.body = to_bytes(&v);
    }
    req.family.push_str(", oversized body");
}

pub(super) fn generate(rng: &mut StdRng, shop: &Shop, n: usize) -> Req {
    let route = ROUTES[rng.gen_range(0..ROUTES.len())];
    let mut req = match route {
        Route::HmacNotify => hmac(rng, shop, n),
        Route::EpayNotify => epay(rng, shop, n),
        _ => ordinary(rng, shop, route, n),
    };
    // Callbacks on the wrong method.
    if matches!(route, Route::HmacNotify | Route::EpayNotify) && rng.gen_range(0..10) == 0 {
        req.method = wrong_method(rng, route.methods());
        req.answer = Answer::Json;
        req.expect = Some((405, "method_not_allowed"));
        req.family = format!("wrong method, {}", req.family);
    }
    if rng.gen_range(0..3) == 0 {
        header_noise(rng, &mut req, shop);
    }
    let callback = matches!(req.expect, Some((400, "invalid_signature" | "fail")));
    if rng.gen_range(0..8) == 0 && !req.body.is_empty() {
        framing_noise(rng, &mut req);
        // A body that cannot be read is refused before its signature.
        if callback && matches!(req.framing, Framing::Long(_) | Framing::BadChunked(_)) {
            req.expect = None;
        }
    }
    if rng.gen_range(0..25) == 0 && req.method != "GET" {
        oversize(rng, &mut req);
        if callback {
            req.expect = None;
        }
    }
    if rng.gen_range(0..14) == 0 {
        protocol_noise(rng, &mut req);
    }
    if req.family.is_empty() {
        req.family = "plain".into();
    }
    req
}
