//! `faka-bench`: the load tool of issue 6, a second binary of this crate.
//!
//! It starts the real `faka` binary itself (a fresh temp dir and config,
//! `listen = 127.0.0.1:0`), sets up products and keys through the admin API,
//! drives it with a small keep-alive HTTP/1.1 client (fixed concurrency,
//! bounded duration, loopback only) and checks that every answer was right.
//! `read`, `flow` and `flash` run their connections as tasks on one client
//! thread (`--client-threads`; tokio, non-blocking), the other scenarios on
//! a std `TcpStream` per worker thread:
//!
//! - `read`   GET a product and the product list, against a ceiling: a trivial
//!   actix-web `GET /ping` server run in this process with the same client
//!   settings, so `read` is reported as the ratio faka_rps / trivial_rps
//!   (the three take turns in 1 s slices), with each server's CPU time per
//!   request;
//! - `flow`   the buyer's journey: create order (hmac) → signed payment → GET
//!   the order with its token and keys; no key may appear twice; faka's CPU
//!   time per order;
//! - `flash`  N buyers race for M keys: exactly M orders, the rest 409
//!   `out_of_stock`, then all M paid and M distinct keys delivered; the
//!   same burst (N requests on as many connections, all released at once)
//!   is first sent to the trivial `GET /ping`, and flash's p99 is reported
//!   as a ratio to that burst's p99;
//! - `import` 1,000,000 keys as text/plain in a few requests;
//! - `mixed`  reads + flow + unpaid orders expiring (a second faka with
//!   `hold_secs = 1`), late payments, and counts that add up at the end;
//! - `scale`  (only with `--scenario scale`, it is long) memory and start-up
//!   with 1M keys and 1M orders: RSS after the import and after the orders,
//!   start-up time (spawn → `GET /healthz` 200) after a clean stop and after
//!   `kill -9`, RSS after each start.
//!
//! Every faka instance is stopped with SIGTERM and its store verified with
//! `faka check`. The table at the end has throughput, p50/p99/p999 latency,
//! errors by status, the ratio to the ceiling and a correctness verdict; any
//! failed verdict (a fast wrong answer) makes the exit status non-zero.
//! `--smoke` runs every scenario for about a second with small sizes, for CI:
//! it checks correctness only, never timing.
//!
//! ```text
//! cargo build --release --bins
//! target/release/faka-bench                         # every scenario, 10 s each
//! target/release/faka-bench --scenario flow --duration 5
//! target/debug/faka-bench --smoke                   # correctness only, < 30 s
//! target/release/faka-bench --scenario scale        # 1M keys + 1M orders, ~12 min
//! ```

use anyhow::{anyhow, bail, Context, Result};

/// The same allocator as faka, for the load generator and the trivial
/// server alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, ValueEnum};
use faka::payments::hmac::HmacGateway;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ADMIN: &str = "bench-admin-token";
const SECRET: &str = "bench-hmac-secret";
const PRICE: u64 = 100;
/// Wrong answers kept per worker for the report (all are counted).
const MAX_SAMPLES: usize = 5;

// ---------------------------------------------------------------- options

#[derive(Parser)]
#[command(
    name = "faka-bench",
    about = "Load and correctness benchmark for faka: starts the faka binary, drives it over loopback, prints a table"
)]
struct Args {
    /// The faka binary [default: `faka` next to this executable]
    #[arg(long)]
    faka: Option<PathBuf>,
    /// Seconds per timed scenario [default: 10; smoke: 1]
    #[arg(long)]
    duration: Option<f64>,
    /// Client connections [default: 64; smoke: 8]
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Short runs with small sizes that check correctness only
    #[arg(long)]
    smoke: bool,
    /// Client threads that share the non-blocking connections of `read`,
    /// `flow`, `flash` and `mixed` (`import` and `scale` use a thread per connection)
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// `read` with a thread per connection, as its ratios were measured
    /// until 2026-11-26 (default: the non-blocking tasks of `flow`)
    #[arg(long)]
    read_threads: bool,
    /// flash: buyers racing [default: 5000; smoke: 300]
    #[arg(long)]
    flash_buyers: Option<usize>,
    /// flash: keys they race for [default: 100; smoke: 20]
    #[arg(long)]
    flash_keys: Option<usize>,
    /// flash: simultaneous connections [default: 1000; smoke: 100]
    #[arg(long)]
    flash_conns: Option<usize>,
    /// import: keys to import [default: 1000000; smoke: 10000]
    #[arg(long)]
    import_keys: Option<usize>,
    /// import: requests they are split into
    #[arg(long, default_value_t = 4)]
    import_requests: usize,
    /// flow: keys imported for the buyers [default: 200000; smoke: 5000]
    #[arg(long)]
    flow_keys: Option<usize>,
    /// flow and mixed setup: keys per import request (faka slows down
    /// for good after one very large import; see --scenario import)
    #[arg(long, default_value_t = 20_000)]
    setup_chunk: usize,
    /// Configure faka's outbound webhooks to a receiver that accepts
    /// connections and never answers (to show it does not slow orders)
    #[arg(long)]
    hanging_webhooks: bool,
    /// Configure faka's outbound webhooks to a receiver that answers 200
    /// to every event (so events end delivered)
    #[arg(long, conflicts_with = "hanging_webhooks")]
    accepting_webhooks: bool,
    /// Send an `Idempotency-Key` with every order (one key per order), as
    /// a careful client does
    #[arg(long)]
    idempotency_keys: bool,
    /// faka's `[retention]` idempotency_hours and delivered_events_hours
    /// for every faka started, with a sweep every 5 s [default: faka's,
    /// 168 and 720 hours, a sweep every 60 s]
    #[arg(long)]
    retention_hours: Option<u64>,
    /// scale: keys imported [default: 1000000; smoke: 2000]
    #[arg(long)]
    scale_keys: Option<usize>,
    /// scale: orders created and paid, one key each [default: 1000000; smoke: 1000]
    #[arg(long)]
    scale_orders: Option<usize>,
    /// faka's `storage.cache_mb` (sled's cache) for every faka started
    /// [default: faka's own default]; FAKA_* variables of this shell are
    /// not passed on to faka
    #[arg(long)]
    cache_mb: Option<u64>,
    /// faka's `server.worker_nice` for every faka started, and the nice
    /// value of the trivial server's workers, so that both sides of a ratio
    /// yield alike to the load generator [default: faka's default, 5]
    #[arg(long)]
    worker_nice: Option<i32>,
    /// faka's `server.workers` (HTTP worker threads) for every faka
    /// started, and the trivial server's worker count [default: actix's,
    /// one per core]
    #[arg(long)]
    workers: Option<usize>,
    /// Write one line per request of flash's `/ping` burst to FILE: the
    /// request, its connection, when it was sent, reached the handler and
    /// was answered (µs from the first), and the server thread that ran it
    #[arg(long, value_name = "FILE")]
    burst_trace: Option<PathBuf>,
}

/// `storage.cache_mb` written into faka's config, when `--cache-mb`.
static CACHE_MB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// `server.worker_nice` written into faka's config, when `--worker-nice`.
static WORKER_NICE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// `server.workers` written into faka's config, when `--workers`.
static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Gives the calling thread (a trivial-server worker) the same nice value
/// as faka's HTTP workers, with faka's own function and default.
fn match_faka_worker_priority() {
    let nice = WORKER_NICE
        .get()
        .copied()
        .unwrap_or_else(|| faka::config::ServerConfig::default().worker_nice);
    faka::startup::lower_thread_priority(nice);
}

/// `[retention]` hours written into faka's config, when `--retention-hours`.
static RETENTION_HOURS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Whether orders carry an `Idempotency-Key` (`--idempotency-keys`).
static IDEMPOTENCY_KEYS: AtomicBool = AtomicBool::new(false);

/// A webhook receiver that answers every request with an empty 200,
/// keeping the connection open; its URL.
fn start_accepting_receiver() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_ok(stream));
        }
    });
    Ok(url)
}

/// Reads requests (headers and a `Content-Length` body) off `stream` and
/// answers each 200, until the client closes it.
fn answer_ok(stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let (mut reader, mut out) = (BufReader::new(read_half), stream);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err()
            || out
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
        {
            return;
        }
    }
}

/// The webhook URL of the hanging receiver, when `--hanging-webhooks`.
static WEBHOOK_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Starts a receiver that accepts every connection and never answers.
fn start_hanging_receiver() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(url)
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Read,
    Flow,
    Flash,
    Import,
    Mixed,
    /// Not part of `all`: memory and start-up with 1M keys and 1M orders.
    Scale,
}

/// The options with the mode's defaults filled in.
struct Settings {
    faka: PathBuf,
    duration: Duration,
    concurrency: usize,
    client_threads: usize,
    read_threads: bool,
    smoke: bool,
    flash_buyers: usize,
    flash_keys: usize,
    flash_conns: usize,
    import_keys: usize,
    import_requests: usize,
    flow_keys: usize,
    setup_chunk: usize,
    scale_keys: usize,
    scale_orders: usize,
}

impl Settings {
    fn from_args(a: &Args) -> Result<Settings> {
        let pick = |v: Option<usize>, full: usize, smoke: usize| {
            v.unwrap_or(if a.smoke { smoke } else { full })
        };
        let secs = a.duration.unwrap_or(if a.smoke { 1.0 } else { 10.0 });
        if !(secs > 0.0 && secs < 86_400.0) {
            bail!("--duration must be a positive number of seconds");
        }
        let s = Settings {
            faka: match &a.faka {
                Some(p) => p.clone(),
                None => default_faka()?,
            },
            duration: Duration::from_secs_f64(secs),
            concurrency: pick(a.concurrency, 64, 8),
            client_threads: a.client_threads,
            read_threads: a.read_threads,
            smoke: a.smoke,
            flash_buyers: pick(a.flash_buyers, 5000, 300),
            flash_keys: pick(a.flash_keys, 100, 20),
            flash_conns: pick(a.flash_conns, 1000, 100),
            import_keys: pick(a.import_keys, 1_000_000, 10_000),
            import_requests: a.import_requests,
            flow_keys: pick(a.flow_keys, 200_000, 5_000),
            setup_chunk: a.setup_chunk,
            scale_keys: pick(a.scale_keys, 1_000_000, 2_000),
            scale_orders: pick(a.scale_orders, 1_000_000, 1_000),
        };
        if s.concurrency < 4
            || s.flash_conns == 0
            || s.import_requests == 0
            || s.setup_chunk == 0
            || s.client_threads == 0
        {
            bail!("--concurrency must be at least 4; --flash-conns, --import-requests, --setup-chunk and --client-threads at least 1");
        }
        if s.flash_keys == 0 || s.flash_keys > s.flash_buyers || s.import_keys == 0 {
            bail!("need 0 < --flash-keys <= --flash-buyers and --import-keys > 0");
        }
        if s.scale_orders == 0 || s.scale_orders > s.scale_keys {
            bail!("need 0 < --scale-orders <= --scale-keys (one key per order)");
        }
        if !s.faka.is_file() {
            bail!(
                "faka binary not found at {} (build it with `cargo build --release --bins`, or pass --faka PATH)",
                s.faka.display()
            );
        }
        Ok(s)
    }
}

fn default_faka() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    Ok(dir.join(format!("faka{}", std::env::consts::EXE_SUFFIX)))
}

// ---------------------------------------------------------------- HTTP client

/// A response: status and the whole body.
struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {} with a body that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// `"409 out_of_stock"`: the status and the contract's error code.
    fn label(&self) -> String {
        let code = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{} {code}", self.status).trim_end().to_string()
    }
}

/// How a request failed: `Stale` means nothing came back on a connection
/// the server may have closed while idle, so it is safe to send again.
enum Fail {
    Stale(io::Error),
    Other(io::Error),
}

/// One keep-alive HTTP/1.1 connection to a loopback address.
struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    head: Vec<u8>,
}

const MAX_LINE: u64 = 64 * 1024;
const MAX_BODY: usize = 512 * 1024 * 1024;

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        assert!(addr.ip().is_loopback(), "faka-bench only talks to loopback");
        Conn {
            addr,
            timeout,
            stream: None,
            head: Vec::with_capacity(512),
        }
    }

    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(BufReader::with_capacity(16 * 1024, s));
        }
        Ok(self.stream.as_mut().expect("connected just above"))
    }

    fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.send("GET", path, &[], b"")
    }

    /// Sends one request and reads its response; a request that found its
    /// reused connection closed is sent once more on a new one.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        self.head.clear();
        request_head(&mut self.head, self.addr, method, path, headers, body.len());
        let reused = self.stream.is_some();
        let first = self.exchange(body);
        let result = match first {
            Err(Fail::Stale(_)) if reused => {
                self.stream = None;
                self.exchange(body)
            }
            other => other,
        };
        result.map_err(|f| {
            self.stream = None;
            match f {
                Fail::Stale(e) | Fail::Other(e) => e,
            }
        })
    }

    fn exchange(&mut self, body: &[u8]) -> Result<Resp, Fail> {
        let head = std::mem::take(&mut self.head);
        let sent = self.write_request(&head, body);
        self.head = head;
        sent.map_err(Fail::Stale)?;
        let r = self.stream.as_mut().expect("connected by write_request");
        let mut line = String::new();
        match r.by_ref().take(MAX_LINE).read_line(&mut line) {
            Ok(0) => return Err(Fail::Stale(io::ErrorKind::UnexpectedEof.into())),
            Err(e)
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut =>
            {
                return Err(Fail::Stale(e))
            }
            Err(e) => return Err(Fail::Other(e)),
            Ok(_) => {}
        }
        let (resp, close) = read_response(r, &line).map_err(Fail::Other)?;
        if close {
            self.stream = None;
        }
        Ok(resp)
    }

    fn write_request(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let s = self.connect()?.get_mut();
        if body.len() <= 16 * 1024 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            s.write_all(&all)
        } else {
            s.write_all(head)?;
            s.write_all(body)
        }
    }
}

/// One request of a buyer step, for either client.
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Req {
    fn get(path: String) -> Req {
        Req {
            method: "GET",
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn post(path: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Req {
        Req {
            method: "POST",
            path: path.to_string(),
            headers,
            body,
        }
    }

    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// What the buyer steps send their requests through: the blocking `Conn`
/// (whose futures are ready at once, see `ready`) or the non-blocking
/// `AConn` that `run_tasks` drives.
trait Http {
    async fn call(&mut self, req: &Req) -> io::Result<Resp>;
}

impl Http for Conn {
    async fn call(&mut self, req: &Req) -> io::Result<Resp> {
        self.send(req.method, &req.path, &req.header_refs(), &req.body)
    }
}

/// The output of a future that never waits: a buyer step run on a
/// blocking `Conn`.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a step on a blocking Conn never waits"),
    }
}

/// One keep-alive HTTP/1.1 connection on tokio: many of them share one
/// client thread, so the load generator takes less of the two cores than
/// a thread per connection (`run_tasks`).
struct AConn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<tokio::net::TcpStream>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl AConn {
    fn new(addr: SocketAddr, timeout: Duration) -> AConn {
        assert!(addr.ip().is_loopback(), "faka-bench only talks to loopback");
        AConn {
            addr,
            timeout,
            stream: None,
            out: Vec::with_capacity(1024),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    async fn connect(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if self.stream.is_none() {
            let s = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("connected just above"))
    }

    /// Sends `self.out` and reads one response into a `Resp`; only
    /// responses with a `Content-Length` (all of faka's JSON answers).
    async fn exchange(&mut self) -> Result<Resp, Fail> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let out = std::mem::take(&mut self.out);
        let sent = match self.connect().await {
            Ok(s) => s.write_all(&out).await,
            Err(e) => Err(e),
        };
        self.out = out;
        sent.map_err(Fail::Stale)?;
        let s = self.stream.as_mut().expect("connected above");
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = std::str::from_utf8(&self.buf[..end])
                    .map_err(|_| Fail::Other(bad_data("response head is not UTF-8")))?;
                let head = Head::parse(text).map_err(Fail::Other)?;
                let n =
                    match head.length {
                        Some(n) if !head.chunked => n,
                        _ if head.bodiless() => 0,
                        _ => return Err(Fail::Other(bad_data(
                            "the non-blocking client reads only responses with a Content-Length",
                        ))),
                    };
                let start = end + 4;
                while self.buf.len() < start + n {
                    if s.read_buf(&mut self.buf).await.map_err(Fail::Other)? == 0 {
                        return Err(Fail::Other(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                let body = self.buf[start..start + n].to_vec();
                if head.close {
                    self.stream = None;
                }
                return Ok(Resp {
                    status: head.status,
                    body,
                });
            }
            if self.buf.len() as u64 > MAX_LINE {
                return Err(Fail::Other(bad_data("response head too long")));
            }
            match s.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => {
                    return Err(Fail::Stale(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => return Err(Fail::Other(io::ErrorKind::UnexpectedEof.into())),
                Err(e) if self.buf.is_empty() => return Err(Fail::Stale(e)),
                Err(e) => return Err(Fail::Other(e)),
                Ok(_) => {}
            }
        }
    }
}

impl Http for AConn {
    /// As `Conn::send`: a request that found its reused connection closed
    /// is sent once more on a new one.
    async fn call(&mut self, req: &Req) -> io::Result<Resp> {
        self.out.clear();
        request_head(
            &mut self.out,
            self.addr,
            req.method,
            &req.path,
            &req.header_refs(),
            req.body.len(),
        );
        self.out.extend_from_slice(&req.body);
        let reused = self.stream.is_some();
        let timeout = self.timeout;
        let mut result = tokio::time::timeout(timeout, self.exchange()).await;
        if reused && matches!(result, Ok(Err(Fail::Stale(_)))) {
            self.stream = None;
            result = tokio::time::timeout(timeout, self.exchange()).await;
        }
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(Fail::Stale(e) | Fail::Other(e))) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes a request's head: request line, `Host`, `headers`, `Content-Length`.
fn request_head(
    out: &mut Vec<u8>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {body_len}\r\n\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// A response's status line and headers, parsed.
struct Head {
    status: u16,
    /// `Content-Length`
    length: Option<usize>,
    chunked: bool,
    /// The server closes the connection after this response.
    close: bool,
}

impl Head {
    /// From the status line and header lines (without the blank line).
    fn parse(text: &str) -> io::Result<Head> {
        let mut lines = text.lines();
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| bad_data(format!("bad status line {:?}", status_line.trim_end())))?;
        let mut head = Head {
            status,
            length: None,
            chunked: false,
            close: version == "HTTP/1.0",
        };
        for l in lines.map(str::trim_end).filter(|l| !l.is_empty()) {
            let Some((name, value)) = l.split_once(':') else {
                return Err(bad_data(format!("bad header line {l:?}")));
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    let n = value
                        .parse::<usize>()
                        .map_err(|_| bad_data("bad Content-Length"))?;
                    if n > MAX_BODY {
                        return Err(bad_data(format!("body of {n} bytes is too large")));
                    }
                    head.length = Some(n);
                }
                "transfer-encoding" => {
                    head.chunked = value.to_ascii_lowercase().contains("chunked")
                }
                "connection" => head.close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        Ok(head)
    }

    /// A status that never has a body.
    fn bodiless(&self) -> bool {
        self.status == 204 || self.status == 304 || (100..200).contains(&self.status)
    }
}

/// Reads headers and body after the status line; also says whether the
/// server will close the connection.
fn read_response(r: &mut BufReader<TcpStream>, status_line: &str) -> io::Result<(Resp, bool)> {
    let mut text = status_line.to_string();
    loop {
        let before = text.len();
        if r.by_ref().take(MAX_LINE).read_line(&mut text)? == 0 {
            return Err(bad_data("connection closed inside the headers"));
        }
        if text[before..].trim_end().is_empty() {
            break;
        }
    }
    let head = Head::parse(&text)?;
    let mut close = head.close;
    let body = if head.chunked {
        read_chunked(r)?
    } else if let Some(n) = head.length {
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        b
    } else if head.bodiless() {
        Vec::new()
    } else {
        close = true;
        let mut b = Vec::new();
        r.by_ref().take(MAX_BODY as u64).read_to_end(&mut b)?;
        b
    };
    Ok((
        Resp {
            status: head.status,
            body,
        },
        close,
    ))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.by_ref().take(MAX_LINE).read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).map_err(|_| bad_data("bad chunk size"))?;
        if n == 0 {
            loop {
                line.clear();
                if r.by_ref().take(MAX_LINE).read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + n > MAX_BODY {
            return Err(bad_data("chunked body is too large"));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

// ---------------------------------------------------------------- measurements

/// Latencies and outcomes of one kind of request.
#[derive(Default)]
struct Series {
    lat_us: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Series {
    fn record(&mut self, since: Instant) {
        let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.lat_us.push(us);
    }

    fn error(&mut self, label: impl Into<String>) {
        *self.errors.entry(label.into()).or_default() += 1;
    }

    /// Counts the response as ok when its status is `want`.
    fn check(&mut self, r: &Resp, want: u16) -> bool {
        if r.status == want {
            self.ok += 1;
            true
        } else {
            self.error(r.label());
            false
        }
    }

    fn merge(&mut self, o: Series) {
        self.lat_us.extend(o.lat_us);
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn percentiles(&mut self) -> Option<[Duration; 3]> {
        if self.lat_us.is_empty() {
            return None;
        }
        self.lat_us.sort_unstable();
        let at = |p: f64| {
            let i = ((p * self.lat_us.len() as f64).ceil() as usize).clamp(1, self.lat_us.len());
            Duration::from_micros(self.lat_us[i - 1] as u64)
        };
        Some([at(0.50), at(0.99), at(0.999)])
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{v}×{k}"))
            .collect();
        parts.join(", ")
    }
}

/// Sends a request, timing it; an I/O failure is counted and gives `None`.
fn timed(series: &mut Series, f: impl FnOnce() -> io::Result<Resp>) -> Option<Resp> {
    let t0 = Instant::now();
    counted(series, t0, f())
}

/// `timed` for a buyer step's request.
async fn timed_call<H: Http>(series: &mut Series, conn: &mut H, req: &Req) -> Option<Resp> {
    let t0 = Instant::now();
    counted(series, t0, conn.call(req).await)
}

/// Records a request sent at `t0`: its latency, or its I/O failure.
fn counted(series: &mut Series, t0: Instant, r: io::Result<Resp>) -> Option<Resp> {
    match r {
        Ok(r) => {
            series.record(t0);
            Some(r)
        }
        Err(e) => {
            series.error(format!("io {:?}", e.kind()));
            None
        }
    }
}

/// Wrong answers of one worker: counted, with a few kept as examples.
#[derive(Default)]
struct Wrong {
    count: u64,
    samples: Vec<String>,
}

impl Wrong {
    fn add(&mut self, what: impl Into<String>) {
        self.count += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(what.into());
        }
    }

    fn merge(&mut self, o: Wrong) {
        self.count += o.count;
        for s in o.samples {
            if self.samples.len() < MAX_SAMPLES * 4 {
                self.samples.push(s);
            }
        }
    }

    fn into_failures(self, what: &str) -> Vec<String> {
        if self.count == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} wrong {what} answer(s), e.g.: {}",
            self.count,
            self.samples.join(" | ")
        )]
    }
}

/// Runs `conns` workers for `duration` (or until every worker's step says
/// stop); each has its own connection, opened before the clock starts.
fn run_timed<S: Send>(
    addr: SocketAddr,
    conns: usize,
    duration: Duration,
    init: impl Fn(usize) -> S + Sync,
    step: impl Fn(&mut S, &mut Conn) -> bool + Sync,
) -> (Vec<S>, Duration) {
    let stop = AtomicBool::new(false);
    let alive = AtomicUsize::new(conns);
    let barrier = Barrier::new(conns + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let (init, step, stop, alive, barrier) = (&init, &step, &stop, &alive, &barrier);
                spawn_worker(s, move || {
                    let mut state = init(i);
                    let mut conn = Conn::new(addr, Duration::from_secs(30));
                    let _ = conn.connect();
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) && step(&mut state, &mut conn) {}
                    alive.fetch_sub(1, Ordering::Relaxed);
                    state
                })
            })
            .collect();
        let start = run_clock(&barrier, &alive, &stop, duration);
        let states = handles.into_iter().map(join_worker).collect();
        (states, start.elapsed())
    })
}

/// The clock of a timed run: releases the workers waiting on `barrier`,
/// lets them run for `duration` or until none is left alive, then tells
/// them to stop. Gives the start.
fn run_clock(
    barrier: &Barrier,
    alive: &AtomicUsize,
    stop: &AtomicBool,
    duration: Duration,
) -> Instant {
    barrier.wait();
    let start = Instant::now();
    while start.elapsed() < duration && alive.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    start
}

/// `run_timed` on non-blocking connections: the `conns` workers are tasks
/// shared out over `threads` client threads, each a single-threaded tokio
/// runtime. A thread per connection costs the load generator a sleep and
/// a wake-up per request on the same two cores faka runs on.
fn run_tasks<S: Send>(
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    duration: Duration,
    init: impl Fn(usize) -> S + Sync,
    step: impl AsyncFn(&mut S, &mut AConn) -> bool + Sync,
) -> (Vec<S>, Duration) {
    let stop = AtomicBool::new(false);
    let alive = AtomicUsize::new(conns);
    let threads = threads.clamp(1, conns.max(1));
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (init, step, stop, alive, barrier) = (&init, &step, &stop, &alive, &barrier);
                spawn_worker(sc, move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("building a tokio runtime for a client thread");
                    // All of this thread's connections are futures of one task:
                    // tokio's per-task I/O budget would make a future that
                    // finds the budget spent go to the back of the queue
                    // without progress, and in a burst the connections
                    // already served were served again first (each
                    // connection's first request waited 35-88 ms at p50,
                    // later ones 6-15 ms). Unconstrained, they take turns.
                    rt.block_on(tokio::task::unconstrained(async {
                        let mut workers: Vec<(S, AConn)> = (t..conns)
                            .step_by(threads)
                            .map(|i| (init(i), AConn::new(addr, Duration::from_secs(30))))
                            .collect();
                        join_all(workers.iter_mut().map(|(_, c)| async {
                            let _ = c.connect().await;
                        }))
                        .await;
                        // Nothing else runs on this thread's runtime yet.
                        barrier.wait();
                        join_all(workers.iter_mut().map(|(state, c)| async {
                            while !stop.load(Ordering::Relaxed) && step(state, c).await {}
                            alive.fetch_sub(1, Ordering::Relaxed);
                        }))
                        .await;
                        workers
                            .into_iter()
                            .map(|(state, _)| state)
                            .collect::<Vec<S>>()
                    }))
                })
            })
            .collect();
        let start = run_clock(&barrier, &alive, &stop, duration);
        let states = handles.into_iter().flat_map(join_worker).collect();
        (states, start.elapsed())
    })
}

/// Runs items `0..n` on `conns` workers, all released at once.
fn run_batch<S: Send>(
    addr: SocketAddr,
    conns: usize,
    n: usize,
    init: impl Fn(usize) -> S + Sync,
    step: impl Fn(&mut S, &mut Conn, usize) + Sync,
) -> (Vec<S>, Duration) {
    let next = AtomicUsize::new(0);
    let conns = conns.min(n).max(1);
    let (states, elapsed) = run_timed(
        addr,
        conns,
        Duration::from_secs(86_400),
        init,
        |st, conn| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i < n {
                step(st, conn, i);
            }
            i + 1 < n
        },
    );
    (states, elapsed)
}

/// `run_batch` on `run_tasks`' non-blocking connections.
fn run_batch_tasks<S: Send>(
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    n: usize,
    init: impl Fn(usize) -> S + Sync,
    step: impl AsyncFn(&mut S, &mut AConn, usize) + Sync,
) -> (Vec<S>, Duration) {
    let next = AtomicUsize::new(0);
    let conns = conns.min(n).max(1);
    run_tasks(
        addr,
        conns,
        threads,
        Duration::from_secs(86_400),
        init,
        async |st, conn| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i < n {
                step(st, conn, i).await;
            }
            i + 1 < n
        },
    )
}

fn spawn_worker<'s, T: Send + 's>(
    s: &'s std::thread::Scope<'s, '_>,
    f: impl FnOnce() -> T + Send + 's,
) -> std::thread::ScopedJoinHandle<'s, T> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn_scoped(s, f)
        .expect("spawning a client thread (raise the thread limit or lower --concurrency)")
}

fn join_worker<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

// ---------------------------------------------------------------- the table

/// One line of the final table. `failures: None` is a sub-row without a
/// verdict of its own.
struct Row {
    name: String,
    throughput: String,
    lat: Option<[Duration; 3]>,
    errors: String,
    ratio: Option<f64>,
    failures: Option<Vec<String>>,
    /// Issue 6's targets this row's figures are held against.
    goals: Vec<Goal>,
}

/// One of issue 6's performance targets and what a run measured for it.
/// Reported after the table; never a verdict (timing on a shared machine
/// is not correctness).
#[derive(Debug, Clone, PartialEq)]
struct Goal {
    what: String,
    measured: f64,
    limit: f64,
    /// `measured >= limit` meets it; otherwise `measured < limit` does.
    at_least: bool,
    unit: &'static str,
}

impl Goal {
    fn at_least(what: impl Into<String>, measured: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what: what.into(),
            measured,
            limit,
            at_least: true,
            unit,
        }
    }

    fn below(what: impl Into<String>, measured: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what: what.into(),
            measured,
            limit,
            at_least: false,
            unit,
        }
    }

    fn met(&self) -> bool {
        if self.at_least {
            self.measured >= self.limit
        } else {
            self.measured < self.limit
        }
    }

    /// How far off a missed target is, as a factor (> 1).
    fn short_by(&self) -> f64 {
        let (a, b) = if self.at_least {
            (self.limit, self.measured)
        } else {
            (self.measured, self.limit)
        };
        a / b.max(1e-9)
    }

    fn figure(&self) -> String {
        let v = if self.measured >= 1000.0 {
            thousands(self.measured)
        } else if self.measured >= 10.0 {
            format!("{:.1}", self.measured)
        } else {
            format!("{:.2}", self.measured)
        };
        match self.unit {
            "" => v,
            u => format!("{v} {u}"),
        }
    }

    fn status(&self) -> String {
        if self.met() {
            "met".into()
        } else {
            format!("missed ({:.2}× off)", self.short_by())
        }
    }
}

/// Issue 6's targets against this run's figures, after the table. Not in
/// smoke runs: their sizes are not the targets' and their build is not
/// optimised.
fn print_goals(rows: &[Row], smoke: bool) {
    let goals: Vec<&Goal> = rows.iter().flat_map(|r| &r.goals).collect();
    if smoke || goals.is_empty() {
        return;
    }
    let cells: Vec<[String; 3]> = goals
        .iter()
        .map(|g| [g.what.clone(), g.figure(), g.status()])
        .collect();
    let w0 = cells
        .iter()
        .map(|c| c[0].chars().count())
        .max()
        .unwrap_or(0);
    let w1 = cells
        .iter()
        .map(|c| c[1].chars().count())
        .max()
        .unwrap_or(0);
    println!("\ntargets of issue 6 (timing on this machine; never a verdict):");
    for [what, figure, status] in cells {
        let pad0 = " ".repeat(w0 - what.chars().count());
        let pad1 = " ".repeat(w1 - figure.chars().count());
        println!("  {what}{pad0}  {pad1}{figure}  {status}");
    }
}

impl Row {
    fn goal(mut self, g: Goal) -> Row {
        self.goals.push(g);
        self
    }

    fn new(name: &str, throughput: String, series: &mut Series) -> Row {
        Row {
            name: name.into(),
            throughput,
            lat: series.percentiles(),
            errors: series.errors_text(),
            ratio: None,
            failures: None,
            goals: Vec::new(),
        }
    }

    fn verdict(mut self, failures: Vec<String>) -> Row {
        self.failures = Some(failures);
        self
    }

    /// A sub-row that only reports a value (in the throughput column).
    fn info(name: &str, text: String) -> Row {
        Row {
            name: name.into(),
            throughput: text,
            lat: None,
            errors: String::new(),
            ratio: None,
            failures: None,
            goals: Vec::new(),
        }
    }

    fn failed(name: &str, e: anyhow::Error) -> Row {
        Row {
            name: name.into(),
            throughput: "-".into(),
            lat: None,
            errors: "-".into(),
            ratio: None,
            failures: Some(vec![format!("{e:#}")]),
            goals: Vec::new(),
        }
    }
}

fn rate(n: f64, elapsed: Duration, unit: &str) -> String {
    format!(
        "{} {unit}/s",
        thousands(n / elapsed.as_secs_f64().max(1e-9))
    )
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row], smoke: bool) {
    let header = [
        "scenario",
        "throughput",
        "p50",
        "p99",
        "p999",
        "errors",
        "ratio",
        "verdict",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let lat = |i: usize| r.lat.map(|l| ms(l[i])).unwrap_or_else(|| "-".into());
            let verdict = match &r.failures {
                None => String::new(),
                Some(f) if f.is_empty() => "ok".into(),
                Some(_) => "FAIL".into(),
            };
            [
                r.name.clone(),
                r.throughput.clone(),
                lat(0),
                lat(1),
                lat(2),
                r.errors.clone(),
                r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
                verdict,
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let padded: Vec<String> = c
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (s, w))| {
                let pad = w - s.chars().count();
                if (1..=4).contains(&i) || i == 6 {
                    format!("{}{s}", " ".repeat(pad))
                } else {
                    format!("{s}{}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    println!();
    if smoke {
        println!("(smoke run: timings are not meaningful, only verdicts count)");
    }
    line(&header.map(String::from));
    line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        line(c);
    }
    for r in rows {
        for f in r.failures.iter().flatten() {
            println!("FAIL {}: {f}", r.name);
        }
    }
}

// ---------------------------------------------------------------- faka process

/// A running faka in its own temp dir; killed and removed on drop.
struct Faka {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    bin: PathBuf,
    addr: SocketAddr,
    warnings: Arc<Mutex<Vec<String>>>,
    /// Info log lines of the current process, with their arrival time
    /// since its spawn.
    events: Events,
}

type Events = Arc<Mutex<Vec<(Duration, String)>>>;

/// The `faka` command on a config, without this shell's `FAKA_*`
/// variables (they would override the config the tool wrote).
fn faka_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FAKA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Spawns `faka serve` with its log on a pipe; gives the child and the
/// reader of its log (see [`read_log`]).
fn spawn_serve(
    bin: &Path,
    config: &Path,
    warnings: &Arc<Mutex<Vec<String>>>,
    events: &Events,
) -> Result<(Child, LogReader)> {
    let t0 = Instant::now();
    let mut child = faka_command(bin, config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let log = read_log(stdout, warnings.clone(), events.clone(), t0);
    Ok((child, log))
}

impl Faka {
    fn start(bin: &Path, label: &str, hold_secs: u64) -> Result<Faka> {
        let dir = std::env::temp_dir().join(format!(
            "faka-bench-{}-{label}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(&dir, hold_secs))?;
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let events = Events::default();
        let (mut child, log) = spawn_serve(bin, &config, &warnings, &events)?;
        let port = wait_serving(&mut child, &log);
        let mut faka = Faka {
            child,
            dir,
            config,
            bin: bin.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            warnings,
            events,
        };
        faka.addr
            .set_port(port.with_context(|| format!("faka ({label}) did not start"))?);
        Ok(faka)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) of all its threads so far.
    fn cpu_time(&self) -> Duration {
        threads_cpu_time(&self.pid().to_string(), |_| true)
    }

    /// SIGTERM and wait up to `limit` (then SIGKILL): failures and how
    /// long the stop took.
    fn stop(&mut self, limit: Duration) -> Result<(Vec<String>, Duration)> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        let mut failures = Vec::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    failures.push(format!("faka exited with {status} after SIGTERM"));
                }
                break;
            }
            if t0.elapsed() > limit {
                failures.push(format!(
                    "faka did not stop within {} s of SIGTERM; killed",
                    limit.as_secs()
                ));
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((failures, t0.elapsed()))
    }

    /// SIGKILL (`kill -9`) and reap.
    fn kill9(&mut self) -> Result<()> {
        self.child.kill().context("kill -9 faka")?;
        self.child.wait().context("reaping faka")?;
        Ok(())
    }

    /// `faka check` on the (stopped) store: its failures and its report.
    fn check(&self) -> Result<(Vec<String>, String)> {
        let out = faka_command(&self.bin, &self.config)
            .arg("check")
            .output()
            .context("running faka check")?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let failures = if out.status.success() {
            Vec::new()
        } else {
            vec![format!("faka check: {report}")]
        };
        Ok((failures, report))
    }

    /// SIGTERM, wait, then `faka check` on its store: the check's failures.
    fn stop_and_check(mut self) -> Result<Vec<String>> {
        let (mut failures, _) = self.stop(Duration::from_secs(30))?;
        failures.extend(self.check()?.0);
        Ok(failures)
    }

    /// Starts faka again (the previous process must have exited) on the same
    /// data dir and config, pinned to the port it had, and times the
    /// start-up: from the spawn until `GET /healthz` answers 200.
    fn restart(&mut self, limit: Duration) -> Result<Duration> {
        let text = std::fs::read_to_string(&self.config)?;
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.addr),
        );
        std::fs::write(&self.config, pinned)?;
        self.events = Events::default();
        let t0 = Instant::now();
        let (child, log) = spawn_serve(&self.bin, &self.config, &self.warnings, &self.events)?;
        self.child = child;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "faka exited with {status} while starting; its log:\n{}",
                    log.early_text()
                );
            }
            if t0.elapsed() > limit {
                bail!(
                    "GET /healthz did not answer 200 within {} s",
                    limit.as_secs()
                );
            }
            // The port is bound before the store opens, so a connection may
            // wait in the backlog: it is answered the moment faka serves.
            let mut conn = Conn::new(self.addr, Duration::from_secs(1));
            match conn.get("/healthz") {
                Ok(r) if r.status == 200 => return Ok(t0.elapsed()),
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// A start that checks the store does it as the writer's first command
    /// while it already serves: waits (polling, up to `limit` from now) for
    /// the check's report in the log. Returns at once after a start without
    /// the check.
    fn wait_for_check(&self, limit: Duration) -> Result<()> {
        let logged = |msgs: &[&str]| {
            let (events, warnings) = (self.events(), self.warnings());
            let mut lines = events.iter().map(|(_, l)| l).chain(warnings.iter());
            lines.any(|l| msgs.iter().any(|m| l.contains(m)))
        };
        if !logged(&["invariant check queued"]) {
            return Ok(());
        }
        let deadline = Instant::now() + limit;
        // Its report: a clean store, violations, or a check that could not run.
        while !logged(&[
            "store opened and checked",
            "store invariants violated",
            "start-up invariant check",
        ]) {
            if Instant::now() > deadline {
                bail!(
                    "the start-up check did not report within {} s",
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The info log lines of the current process so far, with their times.
    fn events(&self) -> Vec<(Duration, String)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// VmRSS and VmHWM of the current process.
    fn memory(&self) -> Result<Mem> {
        Mem::of(self.pid())
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Drop for Faka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("FAKA_BENCH_KEEP_DATA").is_some() {
            eprintln!(
                "faka-bench: kept {} (FAKA_BENCH_KEEP_DATA)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, in bytes.
#[derive(Clone, Copy)]
struct Mem {
    /// VmRSS: resident now.
    rss: u64,
    /// VmHWM: the peak resident size of the process so far.
    hwm: u64,
}

impl Mem {
    fn of(pid: u32) -> Result<Mem> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow!("no {name} in {path}"))?;
            let kb: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("bad {line:?} in {path}"))?;
            Ok(kb * 1024)
        };
        Ok(Mem {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} (peak {})", mib(self.rss), mib(self.hwm))
    }
}

fn config_text(dir: &Path, hold_secs: u64) -> String {
    let cache = CACHE_MB
        .get()
        .map(|mb| format!("cache_mb = {mb}\n"))
        .unwrap_or_default();
    let nice = WORKER_NICE
        .get()
        .map(|n| format!("worker_nice = {n}\n"))
        .unwrap_or_default();
    let workers = WORKERS
        .get()
        .map(|n| format!("workers = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
{nice}{workers}[storage]
data_dir = "{data}"
key_file = "{key}"
{cache}[admin]
token = "{ADMIN}"
[payments.hmac]
secret = "{SECRET}"
[orders]
hold_secs = {hold_secs}
sweep_interval_ms = {sweep}
# Every buyer is 127.0.0.1 here: the per-address abuse limits are off.
[limits]
orders_per_minute = 0
max_pending_per_ip = 0
max_pending_per_email = 0
lookups_per_minute = 0
[log]
format = "json"
level = "warn,faka=info"
"#,
        data = dir.join("data").display(),
        key = dir.join("faka.key").display(),
        sweep = if hold_secs <= 5 { 100 } else { 500 },
    );
    let text = match RETENTION_HOURS.get() {
        Some(h) => format!(
            "{text}[retention]\nidempotency_hours = {h}\ndelivered_events_hours = {h}\nsweep_interval_secs = 5\n"
        ),
        None => text,
    };
    match WEBHOOK_URL.get() {
        Some(url) => format!(
            "{text}[webhooks]\nurl = \"{url}\"\nsecret = \"bench-hook\"\nworkers = 4\ntimeout_secs = 30\n"
        ),
        None => text,
    }
}

/// The thread draining one faka process's log: the ports of its
/// "faka is serving" lines, and its first lines for error reports.
struct LogReader {
    ports: std::sync::mpsc::Receiver<u64>,
    early: Arc<Mutex<Vec<String>>>,
}

impl LogReader {
    fn early_text(&self) -> String {
        self.early.lock().map(|e| e.join("\n")).unwrap_or_default()
    }
}

/// Reads faka's JSON log on a thread until it ends: keeps warnings and
/// errors, info lines with their arrival time since `t0`, and sends the port
/// of the "faka is serving" line.
fn read_log(
    stdout: std::process::ChildStdout,
    warnings: Arc<Mutex<Vec<String>>>,
    events: Events,
    t0: Instant,
) -> LogReader {
    let (tx, rx) = std::sync::mpsc::channel();
    let early = Arc::new(Mutex::new(Vec::new()));
    let early2 = early.clone();
    std::thread::spawn(move || {
        // After the first 1,000 lines (start-up, set-up: what is kept of
        // info lines), only warnings, errors and the serving line are
        // parsed: a loaded faka logs a line per payment, and this thread
        // shares the cores with it.
        let mut seen = 0usize;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen += 1;
            let wanted = seen <= 1000
                || line.contains("faka is serving")
                || line.contains("\"WARN\"")
                || line.contains("\"ERROR\"");
            if !wanted {
                continue;
            }
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let field = |k: &str| {
                v.get(k)
                    .or_else(|| v.get("fields").and_then(|f| f.get(k)))
                    .cloned()
            };
            let message = field("message")
                .and_then(|m| m.as_str().map(str::to_string))
                .unwrap_or_default();
            if message == "faka is serving" {
                let _ = tx.send(field("port").and_then(|p| p.as_u64()).unwrap_or(0));
            }
            let level = v["level"].as_str().unwrap_or("");
            if level == "WARN" || level == "ERROR" {
                if let Ok(mut w) = warnings.lock() {
                    if w.len() < 1000 {
                        w.push(line.clone());
                    }
                }
            }
            if level == "INFO" {
                if let Ok(mut e) = events.lock() {
                    if e.len() < 1000 {
                        e.push((t0.elapsed(), line.clone()));
                    }
                }
            }
            if let Ok(mut e) = early2.lock() {
                if e.len() < 50 {
                    e.push(line);
                }
            }
        }
    });
    LogReader { ports: rx, early }
}

/// Waits for the "faka is serving" line and returns its port.
fn wait_serving(child: &mut Child, log: &LogReader) -> Result<u16> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        match log.ports.recv_timeout(Duration::from_millis(100)) {
            Ok(port) if (1..=65535).contains(&port) => return Ok(port as u16),
            Ok(_) => bail!("the serving line has no port"),
            Err(_) => {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "faka exited with {status} before serving; its log:\n{}",
                        log.early_text()
                    );
                }
            }
        }
    }
    bail!("no \"faka is serving\" line within 120 s")
}

// ---------------------------------------------------------------- admin helpers

fn admin_call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> Result<Value> {
    let auth = format!("Bearer {ADMIN}");
    let r = conn
        .send(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", ctype)],
            body,
        )
        .with_context(|| format!("{method} {path}"))?;
    if !(200..300).contains(&r.status) {
        bail!(
            "{method} {path} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    r.json()
}

fn create_product(conn: &mut Conn, id: &str, max_quantity: u32) -> Result<()> {
    let body = json!({"id": id, "name": format!("bench {id}"), "price": PRICE, "max_quantity": max_quantity});
    admin_call(
        conn,
        "POST",
        "/api/v1/admin/products",
        "application/json",
        body.to_string().as_bytes(),
    )?;
    Ok(())
}

/// Imports keys `prefix-from .. prefix-to` in requests of `chunk` keys.
fn import_range(
    conn: &mut Conn,
    id: &str,
    prefix: &str,
    (from, to): (usize, usize),
    chunk: usize,
) -> Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + chunk.max(1)).min(to);
        let body = key_lines(prefix, i, end);
        let v = admin_call(
            conn,
            "POST",
            &format!("/api/v1/admin/products/{id}/keys"),
            "text/plain",
            &body,
        )?;
        if v["added"].as_u64() != Some((end - i) as u64) {
            bail!(
                "importing keys into {id}: expected {} added, got {v}",
                end - i
            );
        }
        i = end;
    }
    Ok(())
}

fn key_lines(prefix: &str, from: usize, to: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity((to - from) * (prefix.len() + 24));
    for i in from..to {
        // The tail makes keys look less like a counter (and not share a prefix).
        let tail = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let _ = writeln!(b, "{prefix}-{i:09}-{tail:08X}");
    }
    b
}

/// `(available, held, sold)` of a product, from the admin listing.
fn key_counts(conn: &mut Conn, id: &str) -> Result<(u64, u64, u64)> {
    let v = admin_call(
        conn,
        "GET",
        "/api/v1/admin/products",
        "application/json",
        b"",
    )?;
    let p = v["products"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == id))
        .ok_or_else(|| anyhow!("product {id} missing from the admin listing"))?;
    let n = |k: &str| {
        p["keys"][k]
            .as_u64()
            .ok_or_else(|| anyhow!("{id}: keys.{k} missing in {p}"))
    };
    Ok((n("available")?, n("held")?, n("sold")?))
}

/// Checks that a product's counts add up to what was imported and sold.
fn check_counts(
    conn: &mut Conn,
    id: &str,
    imported: u64,
    sold: u64,
    failures: &mut Vec<String>,
) -> Result<()> {
    let (a, h, s) = key_counts(conn, id)?;
    if a + h + s != imported {
        failures.push(format!(
            "{id}: available {a} + held {h} + sold {s} != imported {imported}"
        ));
    }
    if s != sold || h != 0 {
        failures.push(format!(
            "{id}: sold {s} (expected {sold}), held {h} (expected 0)"
        ));
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- buyer steps

/// An order as created: what its buyer keeps.
#[derive(Clone)]
struct Placed {
    order_no: String,
    token: String,
    quantity: u32,
    amount: u64,
}

/// What creating an order gave.
enum Created {
    Ok(Placed),
    OutOfStock,
    Failed,
}

async fn create_order<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    product: &str,
    quantity: u32,
) -> Created {
    // Every buyer has an e-mail of their own, as in a real shop: faka keeps
    // a pending-orders count per e-mail (and per IP), so one shared address
    // would make those rows look cheaper than they are.
    static BUYER: AtomicUsize = AtomicUsize::new(0);
    let email = format!("buyer{}@example.com", BUYER.fetch_add(1, Ordering::Relaxed));
    let body =
        json!({"product_id": product, "quantity": quantity, "email": email, "gateway": "hmac"});
    let mut headers = vec![("Content-Type", "application/json".into())];
    if IDEMPOTENCY_KEYS.load(Ordering::Relaxed) {
        headers.push(("Idempotency-Key", format!("bench-{email}")));
    }
    let req = Req::post("/api/v1/orders", headers, body.to_string().into_bytes());
    let Some(r) = timed_call(s, conn, &req).await else {
        return Created::Failed;
    };
    if r.status == 409 && r.label() == "409 out_of_stock" {
        return Created::OutOfStock;
    }
    if !s.check(&r, 201) {
        return Created::Failed;
    }
    match parse_created(&r, product, quantity) {
        Ok(p) => Created::Ok(p),
        Err(e) => {
            wrong.add(format!("create: {e:#}"));
            Created::Failed
        }
    }
}

fn parse_created(r: &Resp, product: &str, quantity: u32) -> Result<Placed> {
    let v = r.json()?;
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {k} in {v}"))
    };
    let p = Placed {
        order_no: text("order_no")?,
        token: text("token")?,
        quantity,
        amount: v["amount"].as_u64().unwrap_or(0),
    };
    if v["status"] != "pending" || v["product_id"] != product || v["quantity"] != quantity {
        bail!("unexpected order {v}");
    }
    if p.amount != PRICE * quantity as u64 {
        bail!("amount {} for {quantity} × {PRICE}", p.amount);
    }
    Ok(p)
}

/// Sends the gateway's signed hmac callback; the order's status after it.
async fn pay<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    o: &Placed,
) -> Option<String> {
    let body = json!({"order_no": o.order_no, "trade_no": format!("T-{}", o.order_no),
        "amount": o.amount, "status": "paid"})
    .to_string();
    let ts = now_secs().to_string();
    let sig = HmacGateway::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let headers = vec![
        ("Content-Type", "application/json".into()),
        ("X-Faka-Timestamp", ts),
        ("X-Faka-Signature", sig),
    ];
    let req = Req::post("/api/v1/payments/hmac/notify", headers, body.into_bytes());
    let r = timed_call(s, conn, &req).await?;
    if !s.check(&r, 200) {
        return None;
    }
    match r.json() {
        Ok(v) if v["ok"] == true && v["status"].is_string() => {
            v["status"].as_str().map(str::to_string)
        }
        Ok(v) => {
            wrong.add(format!("pay {}: {v}", o.order_no));
            None
        }
        Err(e) => {
            wrong.add(format!("pay {}: {e:#}", o.order_no));
            None
        }
    }
}

/// GETs the order with its token: its status and, if delivered, its keys.
async fn fetch_order<H: Http>(
    conn: &mut H,
    s: &mut Series,
    wrong: &mut Wrong,
    o: &Placed,
) -> Option<(String, Vec<String>)> {
    let req = Req::get(format!("/api/v1/orders/{}?token={}", o.order_no, o.token));
    let r = timed_call(s, conn, &req).await?;
    if !s.check(&r, 200) {
        return None;
    }
    let v = match r.json() {
        Ok(v) => v,
        Err(e) => {
            wrong.add(format!("get {}: {e:#}", o.order_no));
            return None;
        }
    };
    let status = v["status"].as_str().unwrap_or("").to_string();
    let keys: Vec<String> = v["keys"]
        .as_array()
        .map(|ks| {
            ks.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if v["order_no"] != o.order_no.as_str() || (status == "delivered") != v.get("keys").is_some() {
        wrong.add(format!("get {}: {v}", o.order_no));
        return None;
    }
    Some((status, keys))
}

/// Checks a delivered order's keys: `quantity` of them, distinct, from `prefix`.
fn check_delivered(o: &Placed, keys: &[String], prefix: &str, wrong: &mut Wrong) -> bool {
    let distinct: HashSet<&String> = keys.iter().collect();
    let ours = keys.iter().all(|k| k.starts_with(prefix));
    if keys.len() != o.quantity as usize || distinct.len() != keys.len() || !ours {
        wrong.add(format!(
            "order {} of {} delivered keys {keys:?}",
            o.order_no, o.quantity
        ));
        return false;
    }
    true
}

/// Every key delivered at most once across orders.
fn check_unique<'a>(keys: impl Iterator<Item = &'a String>, failures: &mut Vec<String>) -> usize {
    let mut seen = HashSet::new();
    let mut twice = Vec::new();
    for k in keys {
        if !seen.insert(k) && twice.len() < 5 {
            twice.push(k.clone());
        }
    }
    if !twice.is_empty() {
        failures.push(format!("keys delivered twice: {twice:?}"));
    }
    seen.len()
}

// ---------------------------------------------------------------- read

fn scenario_read(cfg: &Settings, faka: &Faka, trivial: SocketAddr) -> Result<Vec<Row>> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(60));
    create_product(&mut admin, "bench-read", 10)?;
    import_range(&mut admin, "bench-read", "READ", (0, 100), 100)?;
    let product = admin.get("/api/v1/products/bench-read")?;
    let v = product.json()?;
    if product.status != 200 || v["id"] != "bench-read" || v["stock"] != 100 {
        bail!("GET /api/v1/products/bench-read: {} {v}", product.status);
    }
    let list = admin.get("/api/v1/products")?;
    let lv = list.json()?;
    let listed = lv["products"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["id"] == "bench-read"));
    if list.status != 200 || !listed {
        bail!("GET /api/v1/products does not list bench-read: {lv}");
    }
    // The three targets take turns in slices of about a second, so a change
    // in the machine's background load hits all of them alike and the ratios
    // stay comparable (run one after the other, a 10 s run's ratio moved by
    // ±20 % from run to run on this shared machine).
    // Each target's server is also charged the CPU time its threads used
    // during its slices: the trivial server's actix threads in this process,
    // every thread of faka's. CPU per request does not depend on how much of
    // the two cores the load generator took meanwhile.
    let targets: [(&str, SocketAddr, &str, &[u8], ServerThreads); 3] = [
        (
            "ceiling /ping",
            trivial,
            "/ping",
            PING_BODY,
            ServerThreads::Trivial,
        ),
        (
            "read product",
            faka.addr,
            "/api/v1/products/bench-read",
            &product.body,
            ServerThreads::Faka(faka),
        ),
        (
            "read list",
            faka.addr,
            "/api/v1/products",
            &list.body,
            ServerThreads::Faka(faka),
        ),
    ];
    let slices = cfg.duration.as_secs().max(1) as u32;
    let slice = cfg.duration / slices;
    let mut runs: Vec<ReadRun> = targets.iter().map(|_| ReadRun::default()).collect();
    for _ in 0..slices {
        for (run, (_, addr, path, expected, server)) in runs.iter_mut().zip(&targets) {
            let cpu = server.cpu_time();
            run.add(read_slice(cfg, *addr, path, expected, slice));
            run.cpu += server.cpu_time().saturating_sub(cpu);
        }
    }
    let ceiling = runs[0].rps();
    let cpu_per_request: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.1}", r.cpu_us_per_request()))
        .collect();
    let mut rows = Vec::new();
    for (run, (name, _, path, _, server)) in runs.into_iter().zip(&targets) {
        let rps = run.rps();
        let mut fails = run.wrong.into_failures(&format!("GET {path}"));
        if run.series.error_count() > 0 {
            fails.push(format!("errors: {}", run.series.errors_text()));
        }
        let mut series = run.series;
        let mut row =
            Row::new(name, format!("{} req/s", thousands(rps)), &mut series).verdict(fails);
        let ratio = rps / ceiling.max(1e-9);
        row.ratio = Some(ratio);
        if let ServerThreads::Faka(_) = server {
            let what = format!("{name} ≥ 0.8 × trivial");
            row.goals.push(Goal::at_least(what, ratio, 0.8, "×"));
        }
        rows.push(row);
    }
    rows.push(Row::info(
        "  server CPU µs/req",
        format!("{} (/ping, product, list)", cpu_per_request.join(" / ")),
    ));
    Ok(rows)
}

/// Whose CPU time a `read` target is charged.
enum ServerThreads<'a> {
    /// The trivial server's threads in this process.
    Trivial,
    /// Every thread of this faka.
    Faka(&'a Faka),
}

impl ServerThreads<'_> {
    fn cpu_time(&self) -> Duration {
        match self {
            ServerThreads::Trivial => threads_cpu_time("self", |name| {
                name.starts_with("actix-rt|system")
                    || name.starts_with("actix-server")
                    || name == "trivial-actix"
            }),
            ServerThreads::Faka(faka) => faka.cpu_time(),
        }
    }
}

/// User + system CPU time of this process, threads that ended included
/// (the client threads of a scenario end with it).
fn own_cpu_time() -> Duration {
    // SAFETY: getrusage(2) fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Calls `f` with the `stat` line (after the name) and the `schedstat`
/// text (if the kernel keeps it) of each thread of process `pid` (a number,
/// or `self`) whose name `pick` accepts. Nothing where /proc cannot be read.
fn each_thread(pid: &str, pick: impl Fn(&str) -> bool, mut f: impl FnMut(&str, Option<&str>)) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        // Threads can exit between listing and reading: skip those.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !pick(&stat[open + 1..close]) {
            continue;
        }
        let sched = std::fs::read_to_string(task.path().join("schedstat")).ok();
        f(&stat[close + 1..], sched.as_deref());
    }
}

/// A thread's `schedstat`: time on a CPU, time runnable but waiting for a
/// CPU (both in ns), and how many times it was scheduled.
fn schedstat_times(text: &str) -> Option<(Duration, Duration)> {
    let mut f = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    let on_cpu = f.next()??;
    let waiting = f.next()??;
    Some((Duration::from_nanos(on_cpu), Duration::from_nanos(waiting)))
}

/// CPU time of a process's threads whose name `pick` accepts, from
/// `/proc/<pid>/task/*`: each thread's time on the CPU in ns (`schedstat`),
/// or, where the kernel does not keep that, its user + system time in
/// ticks of 10 ms (`stat`), too coarse for a burst of a fifth of a second.
/// Zero where /proc cannot be read.
fn threads_cpu_time(pid: &str, pick: impl Fn(&str) -> bool) -> Duration {
    let mut total = Duration::ZERO;
    each_thread(pid, pick, |stat, sched| {
        total += match sched.and_then(schedstat_times) {
            Some((on_cpu, _)) => on_cpu,
            None => stat_ticks(stat),
        };
    });
    total
}

/// Time on a CPU and time waiting for one (runnable, not running) of the
/// threads `pick` accepts; zero without schedstat.
fn threads_sched_times(pid: &str, pick: impl Fn(&str) -> bool) -> (Duration, Duration) {
    let (mut on_cpu, mut waiting) = (Duration::ZERO, Duration::ZERO);
    each_thread(pid, pick, |_, sched| {
        if let Some((c, w)) = sched.and_then(schedstat_times) {
            on_cpu += c;
            waiting += w;
        }
    });
    (on_cpu, waiting)
}

/// The machine's CPU time so far, in ticks, from the first line of
/// `/proc/stat`: all of it, and the idle part (idle + iowait).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct MachineCpu {
    total: u64,
    idle: u64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t))
            .unwrap_or_default()
    }

    /// How much of the machine's cores were idle from `self` to `later`.
    fn idle_text(self, later: MachineCpu) -> String {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return "-".into();
        }
        let idle = later.idle.saturating_sub(self.idle);
        format!("{:.0} % of the cores", idle as f64 * 100.0 / total as f64)
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal (guest time is already counted in user).
fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let mut fields = text.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 5 {
        return None;
    }
    Some(MachineCpu {
        total: ticks.iter().sum(),
        idle: ticks[3] + ticks[4],
    })
}

/// Share of a run's wall time a thread spent on a CPU and waiting for one.
fn sched_share_text((on_cpu, waiting): (Duration, Duration), elapsed: Duration) -> String {
    let pct = |d: Duration| d.as_secs_f64() * 100.0 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "{:.0} % on a CPU, {:.0} % waiting for one",
        pct(on_cpu),
        pct(waiting)
    )
}

/// User + system time from the part of a `stat` line after the name.
fn stat_ticks(after_name: &str) -> Duration {
    // /proc reports times in USER_HZ, 100 per second on Linux.
    const TICKS_PER_SEC: u64 = 100;
    // After the name: state, ppid, … utime is the 12th field, stime the 13th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((field(11) + field(12)) * 1000 / TICKS_PER_SEC)
}

/// One `read` target's slices added up.
#[derive(Default)]
struct ReadRun {
    series: Series,
    wrong: Wrong,
    elapsed: Duration,
    /// CPU time of its server's threads during its slices.
    cpu: Duration,
}

impl ReadRun {
    fn add(&mut self, (series, wrong, elapsed): (Series, Wrong, Duration)) {
        self.series.merge(series);
        self.wrong.merge(wrong);
        self.elapsed += elapsed;
    }

    fn rps(&self) -> f64 {
        self.series.lat_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.series.lat_us.len() as f64).max(1.0)
    }
}

/// GETs `path` for `duration`; every body must equal `expected` (nothing
/// writes meanwhile). Gives the series, the wrong answers and the time taken.
fn read_slice(
    cfg: &Settings,
    addr: SocketAddr,
    path: &str,
    expected: &[u8],
    duration: Duration,
) -> (Series, Wrong, Duration) {
    let check = |s: &mut Series, wrong: &mut Wrong, r: Option<Resp>| {
        if let Some(r) = r {
            if s.check(&r, 200) && r.body != expected {
                wrong.add(String::from_utf8_lossy(&r.body).into_owned());
            }
        }
    };
    let init = |_| (Series::default(), Wrong::default());
    let (states, elapsed) = if !cfg.read_threads {
        let req = Req::get(path.to_string());
        run_tasks(
            addr,
            cfg.concurrency,
            cfg.client_threads,
            duration,
            init,
            async |(s, wrong): &mut (Series, Wrong), conn: &mut AConn| {
                let r = timed_call(s, conn, &req).await;
                check(s, wrong, r);
                true
            },
        )
    } else {
        run_timed(addr, cfg.concurrency, duration, init, |(s, wrong), conn| {
            let r = timed(s, || conn.get(path));
            check(s, wrong, r);
            true
        })
    };
    let (mut series, mut wrong) = (Series::default(), Wrong::default());
    for (s, w) in states {
        series.merge(s);
        wrong.merge(w);
    }
    (series, wrong, elapsed)
}

// ---------------------------------------------------------------- flow

/// One buyer thread's record of complete journeys.
#[derive(Default)]
struct Buyer {
    create: Series,
    pay: Series,
    get: Series,
    journey: Series,
    wrong: Wrong,
    delivered: Vec<(Placed, Vec<String>)>,
    out_of_stock: bool,
    n: u64,
}

impl Buyer {
    fn merge(&mut self, o: Buyer) {
        self.create.merge(o.create);
        self.pay.merge(o.pay);
        self.get.merge(o.get);
        self.journey.merge(o.journey);
        self.wrong.merge(o.wrong);
        self.delivered.extend(o.delivered);
        self.out_of_stock |= o.out_of_stock;
        self.n += o.n;
    }

    /// One journey: create → pay → GET with keys. False once stock ran out.
    /// Every fourth order is for two keys.
    async fn journey<H: Http>(&mut self, conn: &mut H, product: &str, prefix: &str) -> bool {
        let quantity = if (self.n + 1).is_multiple_of(4) { 2 } else { 1 };
        self.journey_of(conn, product, prefix, quantity).await
    }

    /// One journey for `quantity` keys.
    async fn journey_of<H: Http>(
        &mut self,
        conn: &mut H,
        product: &str,
        prefix: &str,
        quantity: u32,
    ) -> bool {
        self.n += 1;
        let t0 = Instant::now();
        let o = match create_order(conn, &mut self.create, &mut self.wrong, product, quantity).await
        {
            Created::Ok(o) => o,
            Created::OutOfStock => {
                self.out_of_stock = true;
                return false;
            }
            Created::Failed => return true,
        };
        match pay(conn, &mut self.pay, &mut self.wrong, &o)
            .await
            .as_deref()
        {
            Some("delivered") => {}
            Some(other) => {
                self.wrong
                    .add(format!("payment of {} left it {other}", o.order_no));
                return true;
            }
            None => return true,
        }
        let Some((status, keys)) = fetch_order(conn, &mut self.get, &mut self.wrong, &o).await
        else {
            return true;
        };
        self.journey.record(t0);
        if status != "delivered" {
            self.wrong
                .add(format!("paid order {} shows {status}", o.order_no));
        } else if check_delivered(&o, &keys, prefix, &mut self.wrong) {
            self.delivered.push((o, keys));
        }
        true
    }
}

/// What one connection of the flow ceiling keeps: each `/ping`, each
/// three-request journey, wrong answers.
type PingJourneys = (Series, Series, Wrong);

/// The ceiling of `flow`: journeys of three `/ping` requests to the
/// trivial actix server, on flow's connections and client threads, run
/// right before flow. Gives the journeys/s this machine and client allow
/// at the moment, so flow's orders/s can be given as a ratio that moves
/// less with the machine's own speed (the client builds, signs and parses
/// less for `/ping`, so the ratio is a little below faka's share).
fn flow_ceiling(cfg: &Settings) -> Result<(f64, Row)> {
    let addr = trivial()?;
    let ping = Req::get("/ping".into());
    let (states, elapsed) = run_tasks(
        addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |_| PingJourneys::default(),
        async |(each, journeys, wrong): &mut PingJourneys, conn: &mut AConn| {
            let t0 = Instant::now();
            for _ in 0..3 {
                let Some(r) = timed_call(each, conn, &ping).await else {
                    return true;
                };
                if !each.check(&r, 200) {
                    return true;
                }
                if r.body != PING_BODY {
                    wrong.add(String::from_utf8_lossy(&r.body).into_owned());
                    return true;
                }
            }
            journeys.record(t0);
            true
        },
    );
    let (mut each, mut journeys, mut wrong) = PingJourneys::default();
    for (e, j, w) in states {
        each.merge(e);
        journeys.merge(j);
        wrong.merge(w);
    }
    let mut failures = wrong.into_failures("GET /ping");
    if each.error_count() > 0 {
        failures.push(format!("errors: {}", each.errors_text()));
    }
    let n = journeys.lat_us.len() as f64;
    let mut row = Row::new(
        "ceiling 3 × /ping journey",
        rate(n, elapsed, "journeys"),
        &mut journeys,
    )
    .verdict(failures);
    row.ratio = Some(1.0);
    Ok((n / elapsed.as_secs_f64().max(1e-9), row))
}

fn scenario_flow(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(300));
    create_product(&mut admin, "bench-flow", 10)?;
    import_range(
        &mut admin,
        "bench-flow",
        "FLOW",
        (0, cfg.flow_keys),
        cfg.setup_chunk,
    )?;
    let (ceiling, ceiling_row) = flow_ceiling(cfg)?;
    let writer_before = writer_totals(&mut admin)?;
    let cpu_before = faka.cpu_time();
    let client_before = own_cpu_time();
    let commit_thread = || threads_sched_times(&faka.pid().to_string(), |n| n == "faka-commit");
    let (machine_before, commit_before) = (MachineCpu::now(), commit_thread());
    let (states, elapsed) = run_tasks(
        faka.addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |_| Buyer::default(),
        async |b: &mut Buyer, conn: &mut AConn| b.journey(conn, "bench-flow", "FLOW-").await,
    );
    let idle = machine_before.idle_text(MachineCpu::now());
    let commit = commit_thread();
    let commit = (
        commit.0.saturating_sub(commit_before.0),
        commit.1.saturating_sub(commit_before.1),
    );
    let cpu = faka.cpu_time().saturating_sub(cpu_before);
    let writer = writer_totals(&mut admin)?.since(writer_before);
    let client_cpu = own_cpu_time().saturating_sub(client_before);
    let mut all = Buyer::default();
    states.into_iter().for_each(|b| all.merge(b));
    let mut failures = std::mem::take(&mut all.wrong).into_failures("flow");
    let sold: u64 = all.delivered.iter().map(|(o, _)| o.quantity as u64).sum();
    check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    check_counts(
        &mut admin,
        "bench-flow",
        cfg.flow_keys as u64,
        sold,
        &mut failures,
    )?;
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    if all.delivered.is_empty() {
        failures.push("no order was delivered".into());
    }
    if all.out_of_stock {
        println!(
            "note: flow ran out of its {} keys after {:.1} s; raise --flow-keys for a full run",
            cfg.flow_keys,
            elapsed.as_secs_f64()
        );
    }
    let orders = all.delivered.len() as f64;
    let orders_per_s = orders / elapsed.as_secs_f64().max(1e-9);
    let mut journey = Row::new(
        "flow (journey)",
        rate(orders, elapsed, "orders"),
        &mut all.journey,
    )
    .verdict(failures)
    .goal(Goal::at_least(
        "flow ≥ 10,000 orders/s",
        orders_per_s,
        10_000.0,
        "orders/s",
    ));
    if let Some([_, p99, _]) = journey.lat {
        journey = journey.goal(Goal::below(
            "flow p99 < 20 ms",
            p99.as_secs_f64() * 1e3,
            20.0,
            "ms",
        ));
    }
    journey.ratio = Some(orders_per_s / ceiling.max(1e-9));
    Ok(vec![
        ceiling_row,
        journey,
        Row::new(
            "  flow create",
            rate(all.create.lat_us.len() as f64, elapsed, "req"),
            &mut all.create,
        ),
        Row::new(
            "  flow pay",
            rate(all.pay.lat_us.len() as f64, elapsed, "req"),
            &mut all.pay,
        ),
        Row::new(
            "  flow get",
            rate(all.get.lat_us.len() as f64, elapsed, "req"),
            &mut all.get,
        ),
        // Stable where orders/s is not: it does not depend on how much of the
        // cores the load generator took.
        Row::info(
            "  faka CPU µs/order",
            format!("{:.0}", cpu.as_secs_f64() * 1e6 / orders.max(1.0)),
        ),
        // What the load generator took of the same two cores.
        Row::info(
            "  client CPU µs/order",
            format!("{:.0}", client_cpu.as_secs_f64() * 1e6 / orders.max(1.0)),
        ),
        // A slow p999 with a stall here is the disk's, not faka's.
        Row::info("  journal fdatasyncs", writer.syncs_text()),
        // Idle cores with a busy commit thread: the run is bound by the
        // batches' pace (latency), not by CPU.
        Row::info("  machine CPU idle", idle),
        Row::info("  commit thread", sched_share_text(commit, elapsed)),
    ])
}

fn flow_errors(series: &[&Series], failures: &mut Vec<String>) {
    let n: u64 = series.iter().map(|s| s.error_count()).sum();
    if n > 0 {
        let texts: Vec<String> = series.iter().map(|s| s.errors_text()).collect();
        failures.push(format!(
            "{n} unexpected status(es): create {} / pay {} / get {}",
            texts[0], texts[1], texts[2]
        ));
    }
}

// ---------------------------------------------------------------- flash

/// The flash burst against the trivial `GET /ping`: as many requests on as
/// many connections, all released at once, with the same client code; its
/// p99 is what this machine gives any server for such a burst.
fn ceiling_burst(cfg: &Settings) -> Row {
    let name = "ceiling burst /ping";
    let addr = match trivial() {
        Ok(a) => a,
        Err(e) => return Row::failed(name, e),
    };
    let n = cfg.flash_buyers;
    let ping = Req::get("/ping".into());
    let tracing = burst_trace::on();
    type Pinger = (Series, Wrong, Vec<burst_trace::Sent>);
    let (states, elapsed) = run_batch_tasks(
        addr,
        cfg.flash_conns,
        cfg.client_threads,
        n,
        |_| (Series::default(), Wrong::default(), Vec::new()),
        async |(s, wrong, sent): &mut Pinger, conn: &mut AConn, i| {
            let r = if tracing {
                let sent_us = burst_trace::now_us();
                let r = timed_call(s, conn, &Req::get(format!("/ping?i={i}"))).await;
                sent.push(burst_trace::Sent {
                    request: i as u64,
                    conn: conn as *const AConn as usize,
                    sent_us,
                    answered_us: burst_trace::now_us(),
                });
                r
            } else {
                timed_call(s, conn, &ping).await
            };
            if let Some(r) = r {
                if s.check(&r, 200) && r.body != PING_BODY {
                    wrong.add(String::from_utf8_lossy(&r.body).into_owned());
                }
            }
        },
    );
    let (mut series, mut wrong, mut sent) = (Series::default(), Wrong::default(), Vec::new());
    for (s, w, t) in states {
        series.merge(s);
        wrong.merge(w);
        sent.extend(t);
    }
    let mut failures = wrong.into_failures("GET /ping");
    if let Err(e) = burst_trace::write(sent) {
        failures.push(format!("writing --burst-trace: {e}"));
    }
    if series.error_count() > 0 || series.lat_us.len() != n {
        failures.push(format!(
            "{} of {n} answered; errors: {}",
            series.lat_us.len(),
            series.errors_text()
        ));
    }
    Row::new(name, rate(n as f64, elapsed, "req"), &mut series).verdict(failures)
}

fn scenario_flash(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let (n, m) = (cfg.flash_buyers, cfg.flash_keys);
    let mut admin = Conn::new(faka.addr, Duration::from_secs(60));
    create_product(&mut admin, "bench-flash", 1)?;
    import_range(&mut admin, "bench-flash", "FLASH", (0, m), m)?;
    let trivial_cpu = ServerThreads::Trivial.cpu_time();
    let ceiling = ceiling_burst(cfg);
    let trivial_cpu = ServerThreads::Trivial
        .cpu_time()
        .saturating_sub(trivial_cpu);
    let writer_before = writer_totals(&mut admin)?;
    let faka_cpu = faka.cpu_time();
    // The race: every buyer wants one key, all at once.
    type Racer = (Series, Wrong, Vec<Placed>, u64, (Series, Series));
    let (states, elapsed) = run_batch_tasks(
        faka.addr,
        cfg.flash_conns,
        cfg.client_threads,
        n,
        |_| {
            let by_outcome = (Series::default(), Series::default());
            (
                Series::default(),
                Wrong::default(),
                Vec::new(),
                0u64,
                by_outcome,
            )
        },
        async |(s, wrong, won, lost, (won_lat, lost_lat)): &mut Racer, conn: &mut AConn, _| {
            let t0 = Instant::now();
            match create_order(conn, s, wrong, "bench-flash", 1).await {
                Created::Ok(o) => {
                    won_lat.record(t0);
                    won.push(o)
                }
                Created::OutOfStock => {
                    lost_lat.record(t0);
                    *lost += 1
                }
                Created::Failed => {}
            }
        },
    );
    let faka_cpu = faka.cpu_time().saturating_sub(faka_cpu);
    let (mut race, mut wrong, mut won, mut lost) =
        (Series::default(), Wrong::default(), Vec::new(), 0);
    let (mut won_lat, mut lost_lat) = (Series::default(), Series::default());
    for (s, w, o, l, (wl, ll)) in states {
        race.merge(s);
        wrong.merge(w);
        won.extend(o);
        lost += l;
        won_lat.merge(wl);
        lost_lat.merge(ll);
    }
    let mut failures = wrong.into_failures("flash create");
    if won.len() != m || lost != (n - m) as u64 || race.error_count() > 0 {
        failures.push(format!(
            "expected {m} × 201 and {} × 409 out_of_stock; got {} × 201, {lost} × 409 out_of_stock, other: {}",
            n - m,
            won.len(),
            race.errors_text()
        ));
    }
    let errors_row = format!("{} (+{lost}×409 expected)", race.errors_text());
    // How many buyers the read-side refusal did not stop: they queued for
    // the writer, and a refused one waited for its batch to be durable.
    let writer = writer_totals(&mut admin)?.since(writer_before);
    let to_writer = writer.commands;
    let (mut paid, pay_failures, pay_elapsed) = flash_pay(cfg, faka, &won);
    failures.extend(pay_failures);
    check_counts(
        &mut admin,
        "bench-flash",
        m as u64,
        won.len() as u64,
        &mut failures,
    )?;
    let mut row = Row::new(
        &format!("flash {n}→{m}"),
        rate(n as f64, elapsed, "req"),
        &mut race,
    )
    .verdict(failures);
    if let Some([_, p99, _]) = row.lat {
        row.goals.push(Goal::below(
            "flash p99 < 50 ms",
            p99.as_secs_f64() * 1e3,
            50.0,
            "ms",
        ));
    }
    row.errors = errors_row;
    let mut ratio = Row::info("  flash p99 / burst p99", "-".into());
    if let (Some(f), Some(c)) = (row.lat, ceiling.lat) {
        ratio.throughput = format!("{} / {}", ms(f[1]), ms(c[1]));
        ratio.ratio = Some(f[1].as_secs_f64() / c[1].as_secs_f64().max(1e-9));
    }
    // Which side of the race is slow: the winners wait for a durable
    // commit, the losers are refused from a read.
    let won_row = Row::new(
        "  flash 201 (won)",
        format!("{} orders", won.len()),
        &mut won_lat,
    );
    let lost_row = Row::new(
        "  flash 409 (lost)",
        format!("{lost} refusals"),
        &mut lost_lat,
    );
    let writer_row = Row::info(
        "  buyers that reached the writer",
        format!(
            "{to_writer} of {n}, in {} batches of {:.1} ms on average",
            writer.batches,
            writer.commit_secs * 1e3 / writer.batches.max(1) as f64
        ),
    );
    let syncs_row = Row::info("  journal fdatasyncs", writer.syncs_text());
    // What a request of the burst costs the server, whatever share of the
    // two cores the client took meanwhile.
    let per_request = |cpu: Duration| format!("{:.1}", cpu.as_secs_f64() * 1e6 / n.max(1) as f64);
    let cpu_row = Row::info(
        "  server CPU µs/req",
        format!(
            "{} / {} (/ping, flash)",
            per_request(trivial_cpu),
            per_request(faka_cpu)
        ),
    );
    Ok(vec![
        ceiling,
        row,
        ratio,
        won_row,
        lost_row,
        writer_row,
        syncs_row,
        cpu_row,
        Row::new(
            "  flash pay+get",
            rate(won.len() as f64, pay_elapsed, "orders"),
            &mut paid,
        ),
    ])
}

/// Pays every order that won the race and checks the keys are distinct.
fn flash_pay(cfg: &Settings, faka: &Faka, won: &[Placed]) -> (Series, Vec<String>, Duration) {
    let (states, elapsed) = run_batch_tasks(
        faka.addr,
        cfg.concurrency,
        cfg.client_threads,
        won.len(),
        |_| (Buyer::default(), Series::default()),
        async |(b, both): &mut (Buyer, Series), conn: &mut AConn, i| {
            let o = &won[i];
            let t0 = Instant::now();
            if pay(conn, &mut b.pay, &mut b.wrong, o).await.as_deref() != Some("delivered") {
                b.wrong
                    .add(format!("payment of {} did not deliver", o.order_no));
                return;
            }
            if let Some((status, keys)) = fetch_order(conn, &mut b.get, &mut b.wrong, o).await {
                both.record(t0);
                if status == "delivered" && check_delivered(o, &keys, "FLASH-", &mut b.wrong) {
                    b.delivered.push((o.clone(), keys));
                }
            }
        },
    );
    let (mut all, mut both) = (Buyer::default(), Series::default());
    for (b, s) in states {
        all.merge(b);
        both.merge(s);
    }
    let mut failures = std::mem::take(&mut all.wrong).into_failures("flash pay");
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    let distinct = check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    if distinct != won.len() {
        failures.push(format!(
            "{} orders won but {distinct} distinct keys delivered",
            won.len()
        ));
    }
    (both, failures, elapsed)
}

// ---------------------------------------------------------------- import

fn scenario_import(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(600));
    create_product(&mut admin, "bench-import", 10)?;
    let (total, parts) = (cfg.import_keys, cfg.import_requests);
    let bodies: Vec<Vec<u8>> = (0..parts)
        .map(|p| key_lines("IMPORT", total * p / parts, total * (p + 1) / parts))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    let (mut series, mut failures, mut added) = (Series::default(), Vec::new(), 0u64);
    let t0 = Instant::now();
    for body in &bodies {
        let Some(r) = timed(&mut series, || {
            admin.send(
                "POST",
                "/api/v1/admin/products/bench-import/keys",
                &headers,
                body,
            )
        }) else {
            continue;
        };
        if series.check(&r, 200) {
            let v = r.json()?;
            added += v["added"].as_u64().unwrap_or(0);
            if v["duplicates"] != 0 {
                failures.push(format!("fresh keys reported as duplicates: {v}"));
            }
        }
    }
    let elapsed = t0.elapsed();
    if added != total as u64 || series.error_count() > 0 {
        failures.push(format!(
            "added {added} of {total} keys; errors: {}",
            series.errors_text()
        ));
    }
    let (available, held, sold) = key_counts(&mut admin, "bench-import")?;
    if (available, held, sold) != (total as u64, 0, 0) {
        failures.push(format!(
            "admin counts available {available}, held {held}, sold {sold}; expected {total}, 0, 0"
        ));
    }
    let throughput = format!(
        "{} in {:.2} s ({:.0} MB)",
        rate(total as f64, elapsed, "keys"),
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6
    );
    let mut row = Row::new(
        &format!("import {}×{}", parts, thousands((total / parts) as f64)),
        throughput,
        &mut series,
    )
    .verdict(failures);
    if total == 1_000_000 {
        row.goals.push(Goal::below(
            "import of 1M keys < 10 s",
            elapsed.as_secs_f64(),
            10.0,
            "s",
        ));
    }
    Ok(vec![row])
}

// ---------------------------------------------------------------- mixed

/// Products of the mixed scenario.
const MIX_READ: &str = "mix-read";
const MIX_FLOW: &str = "mix-flow";
const MIX_HOLD: &str = "mix-hold";

/// One mixed-scenario worker: a reader, a buyer, or a holder who never pays.
enum Mixer {
    Reader { s: Series, wrong: Wrong, n: u64 },
    Buyer(Buyer),
    Holder(Holder),
}

/// Creates orders it never pays, then watches them expire (and pays a few late).
#[derive(Default)]
struct Holder {
    create: Series,
    get: Series,
    pay: Series,
    wrong: Wrong,
    waiting: std::collections::VecDeque<(Instant, Placed)>,
    expired: u64,
    out_of_stock: u64,
    late: Vec<Placed>,
    /// Looks at orders still pending 1.5 s after their hold ran out.
    slow_expiries: u64,
}

/// How long after its hold an unpaid order may still be pending before the
/// mixed scenario calls it a failure.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

impl Holder {
    async fn step(&mut self, conn: &mut AConn, hold: Duration) -> bool {
        if let Some((at, _)) = self.waiting.front() {
            if at.elapsed() > hold + Duration::from_millis(1500) {
                let (at, o) = self.waiting.pop_front().expect("front exists");
                let final_look = at.elapsed() > hold + EXPIRY_GRACE;
                if let Some(o) = self.observe(conn, o, final_look).await {
                    // Not expired yet on a starved machine: look again later.
                    self.waiting.push_back((at, o));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return true;
            }
        }
        match create_order(conn, &mut self.create, &mut self.wrong, MIX_HOLD, 1).await {
            Created::Ok(o) => self.waiting.push_back((Instant::now(), o)),
            Created::OutOfStock => {
                self.out_of_stock += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Created::Failed => {}
        }
        true
    }

    /// GETs an order past its hold: it must be expired; the 1st, 11th, … are
    /// paid late. Gives the order back when it is still pending and `final_look`
    /// is false (the sweeper may lag on a machine starved of CPU: expiry is a
    /// correctness check here, its latency is not).
    async fn observe<H: Http>(
        &mut self,
        conn: &mut H,
        o: Placed,
        final_look: bool,
    ) -> Option<Placed> {
        let (status, _) = fetch_order(conn, &mut self.get, &mut self.wrong, &o).await?;
        if status == "pending" && !final_look {
            self.slow_expiries += 1;
            return Some(o);
        }
        if status != "expired" {
            self.wrong.add(format!(
                "order {} is {status} {} s after its hold ran out",
                o.order_no,
                EXPIRY_GRACE.as_secs()
            ));
            return None;
        }
        self.expired += 1;
        if self.expired % 10 == 1 {
            match pay(conn, &mut self.pay, &mut self.wrong, &o)
                .await
                .as_deref()
            {
                Some("delivered" | "awaiting_stock") => self.late.push(o),
                Some(other) => self
                    .wrong
                    .add(format!("late payment of {} left it {other}", o.order_no)),
                None => {}
            }
        }
        None
    }
}

struct MixTotals {
    read: Series,
    reads_wrong: Wrong,
    buyer: Buyer,
    holder: Holder,
}

fn scenario_mixed(cfg: &Settings) -> Result<Vec<Row>> {
    let hold = Duration::from_secs(1);
    let faka = Faka::start(&cfg.faka, "mixed", hold.as_secs())?;
    let mut admin = Conn::new(faka.addr, Duration::from_secs(300));
    // Buyers are a quarter of the connections; holders get little stock, so
    // it runs out and comes back as their orders expire.
    let flow_keys = (cfg.flow_keys / 2).max(1000);
    let hold_keys = (cfg.concurrency * 4).max(50);
    for (id, prefix, n) in [
        (MIX_READ, "MREAD", 100),
        (MIX_FLOW, "MFLOW", flow_keys),
        (MIX_HOLD, "MHOLD", hold_keys),
    ] {
        create_product(&mut admin, id, 10)?;
        import_range(&mut admin, id, prefix, (0, n), cfg.setup_chunk)?;
    }
    let (readers, buyers) = (cfg.concurrency / 2, cfg.concurrency / 4);
    let writer_before = writer_totals(&mut admin)?;
    let (states, elapsed) = run_tasks(
        faka.addr,
        cfg.concurrency,
        cfg.client_threads,
        cfg.duration,
        |i| {
            if i < readers {
                Mixer::Reader {
                    s: Series::default(),
                    wrong: Wrong::default(),
                    n: 0,
                }
            } else if i < readers + buyers {
                Mixer::Buyer(Buyer::default())
            } else {
                Mixer::Holder(Holder::default())
            }
        },
        async |m: &mut Mixer, conn: &mut AConn| match m {
            Mixer::Reader { s, wrong, n } => {
                *n += 1;
                mixed_read(conn, s, wrong, n.is_multiple_of(50)).await;
                true
            }
            Mixer::Buyer(b) => b.journey(conn, MIX_FLOW, "MFLOW-").await,
            Mixer::Holder(h) => h.step(conn, hold).await,
        },
    );
    let mut t = MixTotals {
        read: Series::default(),
        reads_wrong: Wrong::default(),
        buyer: Buyer::default(),
        holder: Holder::default(),
    };
    for m in states {
        match m {
            Mixer::Reader { s, wrong, .. } => {
                t.read.merge(s);
                t.reads_wrong.merge(wrong);
            }
            Mixer::Buyer(b) => t.buyer.merge(b),
            Mixer::Holder(h) => merge_holder(&mut t.holder, h),
        }
    }
    // Taken before the checks, whose own writes (late payments) come after.
    let writer = writer_totals(&mut admin)?.since(writer_before);
    let mut failures = mixed_verify(cfg, &faka, &mut admin, &mut t, hold, flow_keys, hold_keys)?;
    failures.extend(faka.stop_and_check()?);
    let h = &mut t.holder;
    let hold_row = format!(
        "{} (expired {}, late-paid {}, {}×409)",
        rate(h.create.lat_us.len() as f64, elapsed, "orders"),
        h.expired,
        h.late.len(),
        h.out_of_stock
    );
    Ok(vec![
        Row::new(
            "mixed (flow)",
            rate(t.buyer.delivered.len() as f64, elapsed, "orders"),
            &mut t.buyer.journey,
        )
        .verdict(failures),
        Row::new(
            "  mixed read",
            rate(t.read.lat_us.len() as f64, elapsed, "req"),
            &mut t.read,
        ),
        Row::new("  mixed hold", hold_row, &mut t.holder.create),
        Row::info("  journal fdatasyncs", writer.syncs_text()),
    ])
}

/// GETs the read product (or, with `list`, the list) and checks what it says.
async fn mixed_read<H: Http>(conn: &mut H, s: &mut Series, wrong: &mut Wrong, list: bool) {
    let path = if list {
        "/api/v1/products".to_string()
    } else {
        format!("/api/v1/products/{MIX_READ}")
    };
    let Some(r) = timed_call(s, conn, &Req::get(path.clone())).await else {
        return;
    };
    if !s.check(&r, 200) {
        return;
    }
    let ok = match r.json() {
        Ok(v) if list => v["products"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["id"] == MIX_READ)),
        Ok(v) => v["id"] == MIX_READ && v["stock"] == 100,
        Err(_) => false,
    };
    if !ok {
        wrong.add(format!("GET {path}: {}", String::from_utf8_lossy(&r.body)));
    }
}

fn merge_holder(into: &mut Holder, h: Holder) {
    into.create.merge(h.create);
    into.get.merge(h.get);
    into.pay.merge(h.pay);
    into.wrong.merge(h.wrong);
    into.waiting.extend(h.waiting);
    into.expired += h.expired;
    into.out_of_stock += h.out_of_stock;
    into.late.extend(h.late);
}

/// After the load: every unpaid order expires, late payments end delivered
/// (importing keys for any that wait for stock), and all counts add up.
fn mixed_verify(
    cfg: &Settings,
    faka: &Faka,
    admin: &mut Conn,
    t: &mut MixTotals,
    hold: Duration,
    flow_keys: usize,
    hold_keys: usize,
) -> Result<Vec<String>> {
    let mut failures = std::mem::take(&mut t.buyer.wrong).into_failures("mixed flow");
    failures.extend(std::mem::take(&mut t.reads_wrong).into_failures("mixed read"));
    if t.read.error_count() > 0 {
        failures.push(format!("read errors: {}", t.read.errors_text()));
    }
    flow_errors(
        &[&t.buyer.create, &t.buyer.pay, &t.buyer.get],
        &mut failures,
    );
    // Let the last holds run out, then look at every order still unchecked.
    std::thread::sleep(hold + Duration::from_millis(1600));
    let rest: Vec<Placed> = t.holder.waiting.drain(..).map(|(_, o)| o).collect();
    let (states, _) = run_batch(
        faka.addr,
        cfg.concurrency,
        rest.len(),
        |_| Holder::default(),
        |h, conn, i| {
            // Poll each until it is expired or the grace period is over.
            let deadline = Instant::now() + EXPIRY_GRACE;
            let mut o = rest[i].clone();
            while let Some(back) = ready(h.observe(conn, o, Instant::now() > deadline)) {
                o = back;
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    );
    states
        .into_iter()
        .for_each(|h| merge_holder(&mut t.holder, h));
    let h = &mut t.holder;
    failures.extend(std::mem::take(&mut h.wrong).into_failures("mixed hold"));
    let hold_errors: u64 = [&h.create, &h.get, &h.pay]
        .iter()
        .map(|s| s.error_count())
        .sum();
    if hold_errors > 0 {
        failures.push(format!(
            "holder errors: create {} / get {} / pay {}",
            h.create.errors_text(),
            h.get.errors_text(),
            h.pay.errors_text()
        ));
    }
    if h.expired == 0 {
        failures.push("no unpaid order was seen to expire".into());
    }
    let (late_keys, topped_up) = late_deliveries(admin, &h.late, &mut failures)?;
    let all_keys = t
        .buyer
        .delivered
        .iter()
        .flat_map(|(_, k)| k)
        .chain(late_keys.iter());
    check_unique(all_keys, &mut failures);
    let flow_sold: u64 = t
        .buyer
        .delivered
        .iter()
        .map(|(o, _)| o.quantity as u64)
        .sum();
    check_counts(admin, MIX_READ, 100, 0, &mut failures)?;
    check_counts(admin, MIX_FLOW, flow_keys as u64, flow_sold, &mut failures)?;
    check_counts(
        admin,
        MIX_HOLD,
        (hold_keys + topped_up) as u64,
        h.late.len() as u64,
        &mut failures,
    )?;
    Ok(failures)
}

/// Every late-paid order must end delivered; those awaiting stock are
/// delivered by an import of as many keys. Gives their keys and the import size.
fn late_deliveries(
    admin: &mut Conn,
    late: &[Placed],
    failures: &mut Vec<String>,
) -> Result<(Vec<String>, usize)> {
    let mut scratch = (Series::default(), Wrong::default());
    let mut statuses = Vec::new();
    for o in late {
        statuses.push(ready(fetch_order(admin, &mut scratch.0, &mut scratch.1, o)).map(|(s, _)| s));
    }
    let awaiting = statuses
        .iter()
        .filter(|s| s.as_deref() == Some("awaiting_stock"))
        .count();
    if awaiting > 0 {
        println!("note: mixed: {awaiting} late payment(s) found no stock (awaiting_stock); importing as many keys must deliver them");
        import_range(admin, MIX_HOLD, "MHOLD-LATE", (0, awaiting), awaiting)?;
    }
    let mut keys = Vec::new();
    for o in late {
        match ready(fetch_order(admin, &mut scratch.0, &mut scratch.1, o)) {
            Some((s, k))
                if s == "delivered" && check_delivered(o, &k, "MHOLD-", &mut scratch.1) =>
            {
                keys.extend(k)
            }
            other => failures.push(format!(
                "late-paid order {} ended {:?}",
                o.order_no,
                other.map(|(s, _)| s)
            )),
        }
    }
    failures.extend(scratch.1.into_failures("late payment"));
    if scratch.0.error_count() > 0 {
        failures.push(format!("late payment lookups: {}", scratch.0.errors_text()));
    }
    Ok((keys, awaiting))
}

// ---------------------------------------------------------------- scale

const SCALE: &str = "bench-scale";

/// How long a start-up may take (a rebuild after kill -9 replays the journal).
const START_LIMIT: Duration = Duration::from_secs(1800);
/// How long a clean stop may take (it flushes sled).
const STOP_LIMIT: Duration = Duration::from_secs(300);

/// Memory and start-up at scale, on one data dir: import the keys (RSS),
/// create and pay the orders (RSS), SIGTERM, start again (time to
/// `/healthz` 200, RSS, read every order back, RSS), kill -9, start again
/// (time, RSS, counts and a sample of orders), SIGTERM and `faka check`.
fn scenario_scale(cfg: &Settings) -> Result<Vec<Row>> {
    let mut rows = Shown(Vec::new());
    if let Err(e) = scale_run(cfg, &mut rows) {
        rows.0.push(Row::failed("scale", e));
    }
    Ok(rows.0)
}

/// Rows that are also printed the moment they are known: a long run that
/// fails (or is stopped) late still shows what it measured.
struct Shown(Vec<Row>);

impl Shown {
    fn push(&mut self, row: Row) {
        let lat = match row.lat {
            Some([p50, p99, _]) => format!(" (p50 {}, p99 {})", ms(p50), ms(p99)),
            None => String::new(),
        };
        eprintln!(
            "faka-bench: scale: {}: {}{lat}",
            row.name.trim(),
            row.throughput
        );
        self.0.push(row);
    }
}

fn scale_run(cfg: &Settings, rows: &mut Shown) -> Result<()> {
    let (nk, no) = (cfg.scale_keys, cfg.scale_orders);
    let mut shop = Faka::start(&cfg.faka, "scale", 900)?;
    let cache_mb = faka::config::Config::load(&shop.config, false, std::iter::empty())
        .map_err(|e| anyhow!("loading the config faka was given: {e}"))?
        .storage
        .cache_mb;
    let source = if CACHE_MB.get().is_some() {
        "--cache-mb"
    } else {
        "faka's default"
    };
    rows.push(Row::info(
        "scale: storage.cache_mb",
        format!("{cache_mb} MiB ({source})"),
    ));
    rows.push(Row::info("  RSS empty", shop.memory()?.to_string()));
    let mut admin = Conn::new(shop.addr, Duration::from_secs(600));
    create_product(&mut admin, SCALE, 10)?;

    progress(&format!("scale: import of {} keys", thousands(nk as f64)));
    let t0 = Instant::now();
    let step = (nk / 10).max(cfg.setup_chunk);
    let mut at = 0;
    while at < nk {
        let end = (at + step).min(nk);
        import_range(&mut admin, SCALE, "SCALE", (at, end), cfg.setup_chunk)?;
        at = end;
        eprintln!(
            "faka-bench: scale: {} keys imported in {:.1} s; faka {}",
            thousands(at as f64),
            t0.elapsed().as_secs_f64(),
            shop.memory()?
        );
    }
    let took = t0.elapsed();
    let mut failures = Vec::new();
    check_counts(&mut admin, SCALE, nk as u64, 0, &mut failures)?;
    rows.push(
        Row::info(
            &format!("scale import {}", thousands(nk as f64)),
            format!(
                "{} in {:.1} s ({} keys per request)",
                rate(nk as f64, took, "keys"),
                took.as_secs_f64(),
                thousands(cfg.setup_chunk as f64)
            ),
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after import", shop.memory()?.to_string()));

    progress(&format!(
        "scale: {} orders on {} connections",
        thousands(no as f64),
        cfg.concurrency
    ));
    let (mut all, elapsed) = scale_orders(cfg, &shop);
    let mut failures = std::mem::take(&mut all.wrong).into_failures("scale order");
    flow_errors(&[&all.create, &all.pay, &all.get], &mut failures);
    if all.delivered.len() != no {
        failures.push(format!("{} of {no} orders delivered", all.delivered.len()));
    }
    check_unique(all.delivered.iter().flat_map(|(_, k)| k), &mut failures);
    check_counts(&mut admin, SCALE, nk as u64, no as u64, &mut failures)?;
    check_statuses(&mut admin, no, &mut failures)?;
    rows.push(
        Row::new(
            &format!("scale orders {}", thousands(no as f64)),
            format!(
                "{} in {:.0} s",
                rate(all.delivered.len() as f64, elapsed, "orders"),
                elapsed.as_secs_f64()
            ),
            &mut all.journey,
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after orders", shop.memory()?.to_string()));
    drop(admin);

    progress("scale: SIGTERM, then start again on the same data");
    let (failures, took) = shop.stop(STOP_LIMIT)?;
    rows.push(
        Row::info("  stop (SIGTERM)", format!("{:.2} s", took.as_secs_f64())).verdict(failures),
    );
    let orders: Vec<&(Placed, Vec<String>)> = all.delivered.iter().collect();
    progress(&format!(
        "scale: reading all {} orders back",
        thousands(orders.len() as f64)
    ));
    restart_and_verify(
        cfg,
        &mut shop,
        "clean stop",
        &orders,
        "  GET every order",
        (nk, no),
        rows,
    )?;

    progress("scale: kill -9, then start again (resume sled + journal, or rebuild)");
    shop.kill9()?;
    let every = (orders.len() / 10_000).max(1);
    let sample: Vec<&(Placed, Vec<String>)> = orders.iter().step_by(every).copied().collect();
    let label = format!("  GET {} orders", thousands(sample.len() as f64));
    restart_and_verify(cfg, &mut shop, "kill -9", &sample, &label, (nk, no), rows)?;

    progress("scale: SIGTERM and faka check");
    let warnings = shop.warnings();
    let (mut failures, stop) = shop.stop(STOP_LIMIT)?;
    let t0 = Instant::now();
    let (check_failures, report) = shop.check()?;
    let check = t0.elapsed();
    failures.extend(check_failures);
    let expected = format!("{nk} keys, {no} orders: 0 violation");
    if !report.contains(&expected) {
        failures.push(format!("faka check said {report:?}; expected {expected:?}"));
    }
    rows.push(
        Row::info(
            "scale faka check",
            format!(
                "stop {:.1} s, check {:.1} s: {}",
                stop.as_secs_f64(),
                check.as_secs_f64(),
                report.lines().next().unwrap_or("")
            ),
        )
        .verdict(failures),
    );
    rows.push(Row::info(
        "  data dir",
        data_dir_text(&shop.dir.join("data"), no)?,
    ));
    rows.push(Row::info(
        "  faka log",
        format!("{} warn/error lines", warnings.len()),
    ));
    for w in warnings.iter().take(5) {
        println!("faka logged: {w}");
    }
    Ok(())
}

/// The data dir's size on disk (allocated blocks, as `du` counts them), by
/// top-level entry, and per order.
fn data_dir_text(data: &Path, orders: usize) -> Result<String> {
    let mut parts = BTreeMap::new();
    for entry in std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        let name = if entry.file_type()?.is_dir() {
            entry.file_name().to_string_lossy().into_owned()
        } else {
            "files".to_string()
        };
        *parts.entry(name).or_insert(0) += disk_bytes(&entry.path())?;
    }
    let total: u64 = parts.values().sum();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let shown: Vec<String> = parts
        .iter()
        .map(|(k, &b)| format!("{k} {}", mib(b)))
        .collect();
    Ok(format!(
        "{} ({}); {} bytes per order",
        mib(total),
        shown.join(", "),
        thousands((total / orders.max(1) as u64) as f64)
    ))
}

fn disk_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    if !m.is_dir() {
        return Ok(m.blocks() * 512);
    }
    let mut total = m.blocks() * 512;
    for entry in std::fs::read_dir(path)? {
        total += disk_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// Creates and pays `scale_orders` orders of one key on `concurrency`
/// connections as fast as they go (the flow journey), with progress.
/// Starts `shop` again on its data, then reports start-up time and RSS,
/// reads `orders` back (each must still be delivered with its keys), checks
/// the counts, and reports RSS after the reads.
fn restart_and_verify(
    cfg: &Settings,
    shop: &mut Faka,
    after: &str,
    orders: &[&(Placed, Vec<String>)],
    read_label: &str,
    (nk, no): (usize, usize),
    rows: &mut Shown,
) -> Result<()> {
    let up = shop.restart(START_LIMIT)?;
    // RSS once the check is done (its time is in the start-up row).
    shop.wait_for_check(START_LIMIT)?;
    let mem = shop.memory()?;
    let (mut start_row, mut rss_row) = (
        Row::info(
            &format!("start-up after {after}"),
            startup_text(up, &shop.events()),
        ),
        Row::info("  RSS after start", mem.to_string()),
    );
    if (nk, no) == (1_000_000, 1_000_000) {
        let start = format!("start-up after {after} < 2 s (1M + 1M)");
        start_row
            .goals
            .push(Goal::below(start, up.as_secs_f64(), 2.0, "s"));
        let mib = mem.rss as f64 / (1024.0 * 1024.0);
        let rss = format!("RSS after the start after {after} < 300 MiB");
        rss_row.goals.push(Goal::below(rss, mib, 300.0, "MiB"));
    }
    rows.push(start_row);
    rows.push(rss_row);
    print_events(after, &shop.events());
    let (mut reads, mut failures, elapsed) = read_orders(cfg, shop.addr, orders);
    let mut admin = Conn::new(shop.addr, Duration::from_secs(600));
    check_counts(&mut admin, SCALE, nk as u64, no as u64, &mut failures)?;
    check_statuses(&mut admin, no, &mut failures)?;
    rows.push(
        Row::new(
            read_label,
            rate(orders.len() as f64, elapsed, "req"),
            &mut reads,
        )
        .verdict(failures),
    );
    rows.push(Row::info("  RSS after reads", shop.memory()?.to_string()));
    Ok(())
}

fn scale_orders(cfg: &Settings, shop: &Faka) -> (Buyer, Duration) {
    let n = cfg.scale_orders;
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let pid = shop.pid();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (t0, mut shown) = (Instant::now(), Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if shown.elapsed() >= Duration::from_secs(15) {
                    shown = Instant::now();
                    let k = next.load(Ordering::Relaxed).min(n);
                    let mem = Mem::of(pid).map_or_else(|e| format!("{e:#}"), |m| m.to_string());
                    eprintln!(
                        "faka-bench: scale: {} of {} orders started in {:.0} s ({}); faka {mem}",
                        thousands(k as f64),
                        thousands(n as f64),
                        t0.elapsed().as_secs_f64(),
                        rate(k as f64, t0.elapsed(), "orders")
                    );
                }
            }
        });
        let (states, elapsed) = run_timed(
            shop.addr,
            cfg.concurrency,
            Duration::from_secs(86_400),
            |_| Buyer::default(),
            |b, conn| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return false;
                }
                ready(b.journey_of(conn, SCALE, "SCALE-", 1)) && i + 1 < n
            },
        );
        done.store(true, Ordering::Relaxed);
        let mut all = Buyer::default();
        states.into_iter().for_each(|b| all.merge(b));
        (all, elapsed)
    })
}

/// GETs each order with its token: it must be delivered, with the keys it
/// was delivered with. Gives the series, failures and the time taken.
fn read_orders(
    cfg: &Settings,
    addr: SocketAddr,
    orders: &[&(Placed, Vec<String>)],
) -> (Series, Vec<String>, Duration) {
    let (states, elapsed) = run_batch(
        addr,
        cfg.concurrency,
        orders.len(),
        |_| (Series::default(), Wrong::default()),
        |(s, wrong), conn, i| {
            let (o, keys) = orders[i];
            match ready(fetch_order(conn, s, wrong, o)) {
                Some((status, k)) if status == "delivered" && &k == keys => {}
                Some((status, k)) => wrong.add(format!(
                    "order {} is {status} with keys {k:?}; was delivered with {keys:?}",
                    o.order_no
                )),
                None => {}
            }
        },
    );
    let (mut series, mut wrong) = (Series::default(), Wrong::default());
    for (s, w) in states {
        series.merge(s);
        wrong.merge(w);
    }
    let mut failures = wrong.into_failures("order read");
    if series.error_count() > 0 {
        failures.push(format!("order reads: {}", series.errors_text()));
    }
    (series, failures, elapsed)
}

/// faka's `/metrics` text.
fn metrics_text(admin: &mut Conn) -> Result<String> {
    let auth = format!("Bearer {ADMIN}");
    let r = admin
        .send("GET", "/metrics", &[("Authorization", &auth)], b"")
        .context("GET /metrics")?;
    if r.status != 200 {
        bail!("GET /metrics answered {}", r.status);
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

/// The writer's totals so far, from `/metrics`: commands run, batches made
/// durable, the seconds those batches took (run, journal, fsync, apply), and
/// the journal's write + fdatasync calls, all and those over 50 ms (the
/// disk's stalls, which hold every request of their batch).
#[derive(Clone, Copy, Default)]
struct WriterTotals {
    commands: u64,
    batches: u64,
    commit_secs: f64,
    syncs: u64,
    slow_syncs: u64,
}

impl WriterTotals {
    fn since(self, before: WriterTotals) -> WriterTotals {
        WriterTotals {
            commands: self.commands.saturating_sub(before.commands),
            batches: self.batches.saturating_sub(before.batches),
            commit_secs: (self.commit_secs - before.commit_secs).max(0.0),
            syncs: self.syncs.saturating_sub(before.syncs),
            slow_syncs: self.slow_syncs.saturating_sub(before.slow_syncs),
        }
    }

    /// "N of M journal syncs over 50 ms".
    fn syncs_text(&self) -> String {
        format!("{} of {} over 50 ms", self.slow_syncs, self.syncs)
    }
}

fn writer_totals(admin: &mut Conn) -> Result<WriterTotals> {
    parse_writer_totals(&metrics_text(admin)?)
}

fn parse_writer_totals(text: &str) -> Result<WriterTotals> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no {name} in /metrics"))
    };
    let syncs = value("faka_writer_journal_sync_seconds_count")? as u64;
    let fast = value(r#"faka_writer_journal_sync_seconds_bucket{le="0.05"}"#)? as u64;
    Ok(WriterTotals {
        commands: value("faka_writer_batch_size_sum")? as u64,
        batches: value("faka_writer_batch_size_count")? as u64,
        commit_secs: value("faka_writer_commit_seconds_sum")?,
        syncs,
        slow_syncs: syncs.saturating_sub(fast),
    })
}

/// Orders by status, as the store counts them (`faka_orders` in `/metrics`).
fn order_statuses(admin: &mut Conn) -> Result<BTreeMap<String, u64>> {
    let mut by_status = BTreeMap::new();
    for line in metrics_text(admin)?.lines() {
        let Some(rest) = line.strip_prefix("faka_orders{status=\"") else {
            continue;
        };
        if let Some((status, n)) = rest.split_once("\"} ") {
            let n: u64 = n
                .trim()
                .parse()
                .with_context(|| format!("bad metrics line {line:?}"))?;
            by_status.insert(status.to_string(), n);
        }
    }
    if by_status.is_empty() {
        bail!("no faka_orders lines in /metrics");
    }
    Ok(by_status)
}

/// Every order is delivered: `delivered` of them, none in any other status.
fn check_statuses(admin: &mut Conn, delivered: usize, failures: &mut Vec<String>) -> Result<()> {
    let by_status = order_statuses(admin)?;
    let others: u64 = by_status
        .iter()
        .filter(|(s, _)| *s != "delivered")
        .map(|(_, n)| n)
        .sum();
    if by_status.get("delivered") != Some(&(delivered as u64)) || others != 0 {
        failures.push(format!(
            "orders by status {by_status:?}; expected {delivered} delivered and none else"
        ));
    }
    Ok(())
}

/// "1.53 s (store opened at 1.40 s)": the start-up time and, from faka's
/// log, when the store was open.
fn startup_text(up: Duration, events: &[(Duration, String)]) -> String {
    let at = |msg: &str| {
        events
            .iter()
            .find(|(_, l)| l.contains(msg))
            .map(|(t, _)| format!("{:.2} s", t.as_secs_f64()))
    };
    let mut text = format!("{:.2} s to /healthz 200", up.as_secs_f64());
    let parts: Vec<String> = [
        ("resumed", "store resumed from sled + journal"),
        ("rebuilt", "store rebuilt from snapshot + journal"),
        ("store checked", "store opened and checked"),
        ("serving", "faka is serving"),
    ]
    .iter()
    .filter_map(|(name, msg)| at(msg).map(|t| format!("{name} at {t}")))
    .collect();
    if !parts.is_empty() {
        text.push_str(&format!(" ({})", parts.join(", ")));
    }
    text
}

/// Prints faka's info log lines of a start-up with their times.
fn print_events(what: &str, events: &[(Duration, String)]) {
    for (t, line) in events.iter().take(20) {
        let mut v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        // Flattened events; older formats nest them under "fields".
        if let Some(f) = v.get("fields").filter(|f| f.is_object()).cloned() {
            v = f;
        }
        let message = v["message"].as_str().unwrap_or("").to_string();
        if let Some(o) = v.as_object_mut() {
            for k in ["message", "timestamp", "level", "target"] {
                o.remove(k);
            }
        }
        println!(
            "note: start-up after {what}: {:>8.3} s  {message} {v}",
            t.as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------- trivial server

const PING_BODY: &[u8] = br#"{"ok":true}"#;

async fn ping(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if burst_trace::on() {
        burst_trace::handled(req.query_string());
    }
    actix_web::HttpResponse::Ok().json(json!({"ok": true}))
}

/// `--burst-trace`: a stamp per request of the `/ping` burst, to show where
/// its slowest requests waited: before the handler ran, or after it.
mod burst_trace {
    use std::collections::HashMap;
    use std::io::{self, Write};
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    pub static FILE: OnceLock<PathBuf> = OnceLock::new();
    static START: OnceLock<Instant> = OnceLock::new();
    /// Request number, µs when the handler ran, the server thread.
    static HANDLED: Mutex<Vec<(u64, u64, String)>> = Mutex::new(Vec::new());

    /// One request as the client saw it.
    pub struct Sent {
        pub request: u64,
        /// Which connection: the address of its client state.
        pub conn: usize,
        pub sent_us: u64,
        pub answered_us: u64,
    }

    pub fn on() -> bool {
        FILE.get().is_some()
    }

    pub fn now_us() -> u64 {
        START.get_or_init(Instant::now).elapsed().as_micros() as u64
    }

    /// The trivial server's handler, given its request's query `i=N`.
    pub fn handled(query: &str) {
        if let Some(i) = query.strip_prefix("i=").and_then(|v| v.parse().ok()) {
            let t = now_us();
            let thread = format!("{:?}", std::thread::current().id());
            HANDLED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((i, t, thread));
        }
    }

    /// Writes the file: one line per request, in the order they were sent,
    /// times in µs from the first send; connections numbered from 0. Also
    /// prints where the slowest 1 % waited, and on which server threads.
    pub fn write(mut sent: Vec<Sent>) -> io::Result<()> {
        let Some(path) = FILE.get() else {
            return Ok(());
        };
        let handled: HashMap<u64, (u64, String)> =
            std::mem::take(&mut *HANDLED.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .map(|(i, t, th)| (i, (t, th)))
                .collect();
        sent.sort_by_key(|s| s.sent_us);
        let t0 = sent.first().map_or(0, |s| s.sent_us);
        let mut conns: HashMap<usize, usize> = HashMap::new();
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(
            out,
            "# request connection sent_us handled_us answered_us server_thread"
        )?;
        for s in &sent {
            let next = conns.len();
            let conn = *conns.entry(s.conn).or_insert(next);
            let (h, th) = match handled.get(&s.request) {
                Some((t, th)) => (t.saturating_sub(t0).to_string(), th.as_str()),
                None => ("-".to_string(), "-"),
            };
            writeln!(
                out,
                "{} {conn} {} {h} {} {th}",
                s.request,
                s.sent_us - t0,
                s.answered_us.saturating_sub(t0)
            )?;
        }
        out.flush()?;
        eprintln!("{}", slowest(&sent, &handled));
        Ok(())
    }

    /// The slowest 1 %: median µs before and after the handler, and how
    /// many of them each server thread ran.
    fn slowest(sent: &[Sent], handled: &HashMap<u64, (u64, String)>) -> String {
        let mut by_latency: Vec<&Sent> = sent.iter().collect();
        by_latency.sort_by_key(|s| std::cmp::Reverse(s.answered_us - s.sent_us));
        by_latency.truncate(sent.len().div_ceil(100));
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let mut threads: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in &by_latency {
            if let Some((t, th)) = handled.get(&s.request) {
                before.push(t.saturating_sub(s.sent_us));
                after.push(s.answered_us.saturating_sub(*t));
                *threads.entry(th.as_str()).or_default() += 1;
            }
        }
        let median = |v: &mut Vec<u64>| {
            v.sort_unstable();
            v.get(v.len() / 2).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        format!(
            "burst trace: the slowest {} requests waited a median {:.1} ms before the handler and {:.1} ms after it; server threads {threads:?}",
            by_latency.len(),
            median(&mut before),
            median(&mut after)
        )
    }
}

/// The trivial server, started on first use and shared by `read` and `flash`.
fn trivial() -> Result<SocketAddr> {
    static ADDR: Mutex<Option<SocketAddr>> = Mutex::new(None);
    let mut addr = ADDR
        .lock()
        .map_err(|_| anyhow!("the trivial server's lock is poisoned"))?;
    if let Some(a) = *addr {
        return Ok(a);
    }
    let a = start_trivial()?;
    *addr = Some(a);
    Ok(a)
}

/// The ceiling: a trivial actix-web JSON endpoint on its own thread, with
/// actix's default worker count (as faka's `workers = 0`) or `--workers`.
fn start_trivial() -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the trivial server")?;
    let addr = listener.local_addr()?;
    faka::startup::set_listen_backlog(&listener)?;
    let server = std::thread::Builder::new().name("trivial-actix".into());
    server.spawn(move || {
        let sys = actix_web::rt::System::new();
        let run = sys.block_on(async move {
            let mut s = actix_web::HttpServer::new(|| {
                match_faka_worker_priority();
                actix_web::App::new().route("/ping", actix_web::web::get().to(ping))
            })
            .disable_signals();
            if let Some(&n) = WORKERS.get() {
                s = s.workers(n);
            }
            let s = s.listen(listener)?.run();
            s.await
        });
        if let Err(e) = run {
            eprintln!("faka-bench: the trivial server failed: {e}");
        }
    })?;
    Ok(addr)
}

// ---------------------------------------------------------------- main

fn main() {
    let args = Args::parse();
    if args.hanging_webhooks {
        match start_hanging_receiver() {
            Ok(url) => {
                let _ = WEBHOOK_URL.set(url);
            }
            Err(e) => {
                eprintln!("faka-bench: cannot start the hanging receiver: {e:#}");
                std::process::exit(2);
            }
        }
    }
    if args.accepting_webhooks {
        match start_accepting_receiver() {
            Ok(url) => {
                let _ = WEBHOOK_URL.set(url);
            }
            Err(e) => {
                eprintln!("faka-bench: cannot start the webhook receiver: {e:#}");
                std::process::exit(2);
            }
        }
    }
    IDEMPOTENCY_KEYS.store(args.idempotency_keys, Ordering::Relaxed);
    if let Some(h) = args.retention_hours {
        let _ = RETENTION_HOURS.set(h);
    }
    if let Some(mb) = args.cache_mb {
        let _ = CACHE_MB.set(mb);
    }
    if let Some(n) = args.worker_nice {
        let _ = WORKER_NICE.set(n);
    }
    if let Some(n) = args.workers {
        let _ = WORKERS.set(n.max(1));
    }
    if let Some(path) = &args.burst_trace {
        let _ = burst_trace::FILE.set(path.clone());
    }
    let cfg = match Settings::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faka-bench: {e:#}");
            std::process::exit(2);
        }
    };
    let rows = run_all(&cfg, args.scenario);
    print_table(&rows, cfg.smoke);
    print_goals(&rows, cfg.smoke);
    let failed = rows
        .iter()
        .any(|r| r.failures.as_ref().is_some_and(|f| !f.is_empty()));
    println!(
        "\n{}",
        if failed {
            "faka-bench: FAILED"
        } else {
            "faka-bench: all verdicts ok"
        }
    );
    std::process::exit(if failed { 1 } else { 0 });
}

fn run_all(cfg: &Settings, which: Scenario) -> Vec<Row> {
    // `scale` is long: only when asked for by name.
    let wants = |s: Scenario| which == s || (which == Scenario::All && s != Scenario::Scale);
    eprintln!(
        "faka-bench: {} with {} connections, {:.1} s per scenario{}",
        cfg.faka.display(),
        cfg.concurrency,
        cfg.duration.as_secs_f64(),
        if cfg.smoke { " (smoke)" } else { "" }
    );
    let mut rows = Vec::new();
    let main_scenarios = [
        Scenario::Read,
        Scenario::Flow,
        Scenario::Flash,
        Scenario::Import,
    ];
    if main_scenarios.iter().any(|s| wants(*s)) {
        match Faka::start(&cfg.faka, "main", 900) {
            Ok(faka) => run_main(cfg, faka, &wants, &mut rows),
            Err(e) => rows.push(Row::failed("start faka", e)),
        }
    }
    if wants(Scenario::Mixed) {
        progress("mixed");
        rows.extend(scenario_mixed(cfg).unwrap_or_else(|e| vec![Row::failed("mixed", e)]));
    }
    if wants(Scenario::Scale) {
        progress("scale");
        rows.extend(scenario_scale(cfg).unwrap_or_else(|e| vec![Row::failed("scale", e)]));
    }
    rows
}

fn progress(name: &str) {
    eprintln!("faka-bench: running {name} …");
}

/// read, flow, flash and import on one faka, then its store check.
fn run_main(cfg: &Settings, faka: Faka, wants: &dyn Fn(Scenario) -> bool, rows: &mut Vec<Row>) {
    if wants(Scenario::Read) {
        progress("read (and the trivial ceiling)");
        let result = trivial().and_then(|addr| scenario_read(cfg, &faka, addr));
        rows.extend(result.unwrap_or_else(|e| vec![Row::failed("read", e)]));
    }
    type Run = fn(&Settings, &Faka) -> Result<Vec<Row>>;
    let others: [(Scenario, &str, Run); 3] = [
        (Scenario::Flow, "flow", scenario_flow),
        (Scenario::Flash, "flash", scenario_flash),
        (Scenario::Import, "import", scenario_import),
    ];
    for (s, name, run) in others {
        if wants(s) {
            progress(name);
            rows.extend(run(cfg, &faka).unwrap_or_else(|e| vec![Row::failed(name, e)]));
        }
    }
    let warnings = faka.warnings();
    let check = faka
        .stop_and_check()
        .unwrap_or_else(|e| vec![format!("{e:#}")]);
    rows.push(Row {
        name: "faka check (store)".into(),
        throughput: "-".into(),
        lat: None,
        errors: format!("{} warn/error log lines", warnings.len()),
        ratio: None,
        failures: Some(check),
        goals: Vec::new(),
    });
    for w in warnings.iter().take(5) {
        println!("faka logged: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_proc_stat, schedstat_times, threads_cpu_time, MachineCpu};
    use std::time::Duration;

    #[test]
    fn targets_are_met_or_missed_by_how_far_they_are_off() {
        use super::Goal;
        let flow = Goal::at_least("flow", 7_970.4, 10_000.0, "orders/s");
        assert!(!flow.met());
        assert_eq!(flow.figure(), "7,970 orders/s");
        assert_eq!(flow.status(), "missed (1.25× off)");
        let p99 = Goal::below("p99", 14.3, 20.0, "ms");
        assert!(p99.met());
        assert_eq!(
            (p99.figure(), p99.status()),
            ("14.3 ms".into(), "met".into())
        );
        let flash = Goal::below("flash", 75.0, 50.0, "ms");
        assert_eq!(flash.status(), "missed (1.50× off)");
        // The limit itself: at least meets, below does not.
        assert!(Goal::at_least("ratio", 0.8, 0.8, "×").met());
        assert!(!Goal::below("import", 10.0, 10.0, "s").met());
        assert_eq!(Goal::at_least("ratio", 0.934, 0.8, "×").figure(), "0.93 ×");
    }

    #[test]
    fn idle_cores_are_read_from_proc_stat_with_iowait_and_without_guest_time() {
        let before = "cpu  100 10 50 800 40 0 0 0 7 0\ncpu0 50 5 25 400 20 0 0 0 0 0\n";
        let after = "cpu  400 10 150 900 60 0 20 10 9 0\ncpu0 1 1 1 1 1 0 0 0 0 0\n";
        let (b, a) = (
            parse_proc_stat(before).unwrap(),
            parse_proc_stat(after).unwrap(),
        );
        assert_eq!(
            b,
            MachineCpu {
                total: 1000,
                idle: 840
            }
        );
        // 300 user + 100 system + 100 idle + 20 iowait + 20 softirq + 10 steal.
        assert_eq!(a.total - b.total, 550);
        assert_eq!(b.idle_text(a), "22 % of the cores");
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(b.idle_text(b), "-");
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_and_time_waiting_for_one() {
        assert_eq!(
            schedstat_times("37000000 12500000 42\n"),
            Some((Duration::from_millis(37), Duration::from_micros(12_500)))
        );
        assert_eq!(schedstat_times("37000000\n"), None);
        assert_eq!(schedstat_times("x y z"), None);
    }

    #[test]
    fn slow_journal_syncs_are_counted_from_faka_s_own_histogram() {
        let h = faka::ops::metrics::writer_histograms();
        for secs in [0.0004, 0.01, 0.05, 0.051, 0.3] {
            h.journal_sync_seconds.observe(secs);
        }
        h.batch_size.observe(7.0);
        h.commit_seconds.observe(0.02);
        let families: Vec<_> = [&h.batch_size, &h.commit_seconds, &h.journal_sync_seconds]
            .iter()
            .flat_map(|m| prometheus::core::Collector::collect(*m))
            .collect();
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut text).unwrap();
        let t = super::parse_writer_totals(&String::from_utf8(text).unwrap()).unwrap();
        // 50 ms itself is within its bucket; 51 ms and 300 ms are over.
        assert_eq!((t.syncs, t.slow_syncs), (5, 2));
        assert_eq!((t.commands, t.batches), (7, 1));
        assert!((t.commit_secs - 0.02).abs() < 1e-9);
        assert_eq!(t.syncs_text(), "2 of 5 over 50 ms");
    }

    /// This thread's CPU time, from the kernel's own clock for it.
    fn thread_cpu() -> Duration {
        // SAFETY: clock_gettime fills the zeroed timespec we own.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn a_threads_cpu_time_is_counted_to_well_under_a_tick() {
        let probe = std::thread::Builder::new()
            .name("faka-cpu-probe".into())
            .spawn(|| {
                let seen = || threads_cpu_time("self", |name| name == "faka-cpu-probe");
                let (before, t0) = (seen(), thread_cpu());
                // 3 ms of CPU: a tick of /proc's `stat` is 10 ms.
                while thread_cpu() - t0 < Duration::from_millis(3) {
                    std::hint::black_box(0u64);
                }
                let spun = thread_cpu() - t0;
                (seen() - before, spun)
            })
            .unwrap();
        let (counted, spun) = probe.join().unwrap();
        if std::path::Path::new("/proc/thread-self/schedstat").exists() {
            assert!(
                counted >= spun.mul_f64(0.9) && counted <= spun + Duration::from_millis(2),
                "counted {counted:?} for {spun:?} spent"
            );
        } else {
            // A kernel without schedstat: ticks, off by at most one each side.
            assert!(
                counted <= spun + Duration::from_millis(20),
                "counted {counted:?} for {spun:?} spent"
            );
        }
    }
}
