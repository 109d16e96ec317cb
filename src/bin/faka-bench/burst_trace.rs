//! `--burst-trace`: a stamp per request of flash's `/ping` burst, to show
//! where its slowest requests waited: before the handler ran, or after it.
//! The client records when it sent and got each answer, the trivial
//! server's handler (in this process) when it ran and on which thread.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Where the trace is written; set once, from `--burst-trace`.
static FILE: OnceLock<PathBuf> = OnceLock::new();
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

/// Turns the trace on: the burst's stamps go to `path`.
pub fn record_to(path: PathBuf) {
    let _ = FILE.set(path);
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
