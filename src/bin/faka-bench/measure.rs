//! What a run records: `Series`, the latencies and outcomes of one kind of
//! request, and `Wrong`, the wrong answers of one worker (all counted, a
//! few kept as examples for the report). A worker keeps its own and the
//! runner merges them when the clock stops, so recording takes no lock.

use crate::client::{Http, Req, Resp};
use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

/// Wrong answers kept per worker for the report (all are counted).
const MAX_SAMPLES: usize = 5;

/// Latencies and outcomes of one kind of request.
#[derive(Default)]
pub struct Series {
    pub lat_us: Vec<u32>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Series {
    pub fn record(&mut self, since: Instant) {
        let us = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.lat_us.push(us);
    }

    pub fn error(&mut self, label: impl Into<String>) {
        *self.errors.entry(label.into()).or_default() += 1;
    }

    /// Counts the response as ok when its status is `want`.
    pub fn check(&mut self, r: &Resp, want: u16) -> bool {
        if r.status == want {
            self.ok += 1;
            true
        } else {
            self.error(r.label());
            false
        }
    }

    pub fn merge(&mut self, o: Series) {
        self.lat_us.extend(o.lat_us);
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn percentiles(&mut self) -> Option<[Duration; 3]> {
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

    pub fn errors_text(&self) -> String {
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
pub fn timed(series: &mut Series, f: impl FnOnce() -> io::Result<Resp>) -> Option<Resp> {
    let t0 = Instant::now();
    counted(series, t0, f())
}

/// `timed` for a buyer step's request.
pub async fn timed_call<H: Http>(series: &mut Series, conn: &mut H, req: &Req) -> Option<Resp> {
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
pub struct Wrong {
    count: u64,
    samples: Vec<String>,
}

impl Wrong {
    pub fn add(&mut self, what: impl Into<String>) {
        self.count += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(what.into());
        }
    }

    pub fn merge(&mut self, o: Wrong) {
        self.count += o.count;
        for s in o.samples {
            if self.samples.len() < MAX_SAMPLES * 4 {
                self.samples.push(s);
            }
        }
    }

    pub fn into_failures(self, what: &str) -> Vec<String> {
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
