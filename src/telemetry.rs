//! Logging setup: human-readable on a terminal, JSON lines otherwise (or as
//! `[log] format` says). Nothing secret is ever logged: handlers log order
//! numbers and states, never key text, tokens or gateway secrets.
//!
//! A request's id reaches its log lines through a task-local
//! ([`with_request_id`]), not a tracing span: a span's fields are formatted
//! when the span is made, on every request, while the task-local costs
//! nothing until a line is actually written.
//!
//! `faka serve` gathers the info and debug lines logged while answering a
//! request ([`Gather`]): one thread writes them within [`GATHER_FOR`], many
//! lines in one write, so a payment's line costs the request a copy instead
//! of a write to a pipe that wakes the log's reader on the request's core.
//! Warnings, errors and every line logged outside a request (start-up,
//! recovery, workers) are written at once, after the lines gathered before
//! them.

use crate::config::LogConfig;
use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

tokio::task_local! {
    static REQUEST_ID: Box<str>;
}

/// Runs `fut` with `id` as the request id of every line it logs.
pub async fn with_request_id<F: Future>(id: &str, fut: F) -> F::Output {
    REQUEST_ID.scope(id.into(), fut).await
}

/// Runs `f` with `id` as the request id of every line it logs.
pub fn in_request<R>(id: &str, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id.into(), f)
}

/// Wraps a line format: adds `request_id` to the lines logged inside
/// [`with_request_id`] — as the first field of a JSON object, or as a
/// `request_id=…` prefix of a human line.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Ids are 1–64 letters, digits, `-` or `_` (see the middleware), so
        // they need no escaping in JSON.
        let id = REQUEST_ID.try_with(|id| id.clone()).ok();
        match (id, self.json) {
            (None, _) => self.inner.format_event(ctx, writer, event),
            (Some(id), false) => {
                write!(writer, "request_id={id} ")?;
                self.inner.format_event(ctx, writer, event)
            }
            (Some(id), true) => {
                let mut line = String::with_capacity(256);
                self.inner
                    .format_event(ctx, Writer::new(&mut line), event)?;
                match line.strip_prefix('{') {
                    Some(rest) => write!(writer, "{{\"request_id\":\"{id}\",{rest}"),
                    None => writer.write_str(&line),
                }
            }
        }
    }
}

/// Sets up logging to stdout; `gather` (for `faka serve`) gathers the info
/// and debug lines of requests as [`Gather`] says. Keep the guard until the
/// end of `main`: dropping it writes what is still gathered.
pub fn init(cfg: &LogConfig, gather: bool) -> LogGuard {
    // ureq's own debug lines carry the webhook URL whole (a receiver's
    // `?apikey=` with it): kept at warn unless the filter names ureq.
    let level = if cfg.level.contains("ureq") {
        cfg.level.clone()
    } else {
        format!("{},ureq=warn", cfg.level)
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format.as_str() {
        "json" => true,
        "human" => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let gathered = gather
        .then(|| Gather::start(Box::new(std::io::stdout()), GATHER_FOR))
        .flatten();
    let writer = StdoutLines(gathered.clone());
    // Colour codes only on a terminal: `format = "human"` into a file or
    // journald must read as plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(writer);
    let format = tracing_subscriber::fmt::format().with_target(false);
    let _ = if json {
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithRequestId {
                inner: format
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
                json: true,
            })
            .try_init()
    } else {
        builder
            .event_format(WithRequestId {
                inner: format,
                json: false,
            })
            .try_init()
    };
    LogGuard(gathered)
}

/// How long a gathered line may wait before it is written.
pub const GATHER_FOR: Duration = Duration::from_millis(10);
/// Gathered bytes past which the line that goes over writes them itself.
const GATHER_MAX: usize = 256 * 1024;

/// Log lines on their way to one output. Gathered lines (a request's info
/// and debug lines) are appended to `lines`; one thread (`faka-log`) writes
/// them `every` ([`GATHER_FOR`]) after the first of them came, in one write.
/// Other lines are written at once by the thread that logs them, after
/// whatever was gathered before them.
/// `out` is also the order lock: whoever writes holds it from taking the
/// gathered lines until they and its own line are written, so lines reach
/// the output in the order they were logged. A kill -9 can lose the info
/// lines of the last [`GATHER_FOR`]; what faka did is in the store, not in
/// the log.
pub struct Gather {
    /// How long the first gathered line waits ([`GATHER_FOR`] when serving).
    every: Duration,
    lines: Mutex<Vec<u8>>,
    came: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Gather {
    /// Gathers for `out` and starts the thread that writes; `None` when the
    /// thread cannot be started (every line is then written at once).
    pub fn start(out: Box<dyn Write + Send>, every: Duration) -> Option<Arc<Gather>> {
        let g = Arc::new(Gather {
            every,
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            came: Condvar::new(),
            out: Mutex::new(out),
        });
        let writer = g.clone();
        std::thread::Builder::new()
            .name("faka-log".into())
            .spawn(move || writer.run())
            .ok()?;
        Some(g)
    }

    fn lines_lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn out_lock(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut lines = self.lines_lock();
                while lines.is_empty() {
                    lines = self
                        .came
                        .wait(lines)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            std::thread::sleep(self.every);
            let mut out = self.out_lock();
            std::mem::swap(&mut *self.lines_lock(), &mut spare);
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            drop(out);
            spare.clear();
        }
    }

    /// Adds an info or debug line.
    fn gather(&self, line: &[u8]) {
        let mut lines = self.lines_lock();
        let first = lines.is_empty();
        lines.extend_from_slice(line);
        let over = lines.len() > GATHER_MAX;
        drop(lines);
        if over {
            self.write_now(&[]);
        } else if first {
            self.came.notify_one();
        }
    }

    /// Writes what was gathered, then `line`, at once.
    pub fn write_now(&self, line: &[u8]) {
        let mut out = self.out_lock();
        let gathered = std::mem::take(&mut *self.lines_lock());
        let _ = out
            .write_all(&gathered)
            .and_then(|()| out.write_all(line))
            .and_then(|()| out.flush());
    }
}

/// What `init` hands tracing: stdout, gathered or not.
#[derive(Clone)]
struct StdoutLines(Option<Arc<Gather>>);

/// One log line's writer (tracing writes a line with one `write_all`).
enum LineWriter {
    Gathered(Arc<Gather>),
    Now(Arc<Gather>),
    Stdout(std::io::Stdout),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StdoutLines {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        match &self.0 {
            Some(g) => LineWriter::Now(g.clone()),
            None => LineWriter::Stdout(std::io::stdout()),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        match &self.0 {
            Some(g) if *meta.level() > Level::WARN && REQUEST_ID.try_with(|_| ()).is_ok() => {
                LineWriter::Gathered(g.clone())
            }
            _ => self.make_writer(),
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Gathered(g) => g.gather(buf),
            LineWriter::Now(g) => g.write_now(buf),
            LineWriter::Stdout(s) => return s.write(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LineWriter::Stdout(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// Returned by [`init`]: dropping it writes the lines still gathered.
pub struct LogGuard(Option<Arc<Gather>>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.write_now(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output that keeps what was written, one entry per `write`.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !buf.is_empty() {
                self.0.lock().unwrap().push(buf.to_vec());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn gathered_lines_are_written_together_by_the_log_thread() {
        let sink = Sink::default();
        let g = Gather::start(Box::new(sink.clone()), Duration::from_millis(200)).unwrap();
        g.gather(b"a\n");
        g.gather(b"b\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "a\nb\n");
        assert_eq!(sink.writes(), 1, "two lines, one write");
    }

    #[test]
    fn a_line_written_at_once_comes_after_the_gathered_ones() {
        let sink = Sink::default();
        let g = Gather::start(Box::new(sink.clone()), HOUR).unwrap();
        g.gather(b"a\n");
        g.gather(b"b\n");
        assert_eq!(sink.text(), "", "gathered lines wait");
        g.write_now(b"warn\n");
        assert_eq!(sink.text(), "a\nb\nwarn\n");
        g.write_now(b"");
        assert_eq!(sink.text(), "a\nb\nwarn\n", "nothing is written twice");
    }

    #[test]
    fn past_the_limit_the_line_that_goes_over_writes_them() {
        let sink = Sink::default();
        let g = Gather::start(Box::new(sink.clone()), HOUR).unwrap();
        let line = [b'x'; 1024];
        for _ in 0..GATHER_MAX / line.len() {
            g.gather(&line);
        }
        assert_eq!(sink.writes(), 0);
        g.gather(b"over\n");
        assert_eq!(sink.text().len(), GATHER_MAX + 5);
        assert!(sink.text().ends_with("over\n"));
    }

    #[test]
    fn request_lines_are_gathered_other_lines_written_at_once_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let g = Gather::start(Box::new(sink.clone()), HOUR).unwrap();
        let sub = tracing_subscriber::fmt()
            .with_writer(StdoutLines(Some(g.clone())))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!("outside");
            assert!(
                sink.text().contains("outside"),
                "a line outside a request is written at once"
            );
            in_request("r1", || tracing::info!("inside-1"));
            assert!(
                !sink.text().contains("inside-1"),
                "a request's info line is gathered"
            );
            in_request("r2", || tracing::warn!("refused"));
            let text = sink.text();
            let (at_1, at_refused) = (text.find("inside-1"), text.find("refused"));
            assert!(at_1.is_some() && at_1 < at_refused, "{text}");
            in_request("r3", || tracing::info!("inside-2"));
        });
        assert!(!sink.text().contains("inside-2"));
        drop(LogGuard(Some(g)));
        assert!(
            sink.text().contains("inside-2"),
            "the guard writes what is gathered"
        );
    }
}
