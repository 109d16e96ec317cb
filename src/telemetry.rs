//! Logging setup: human-readable on a terminal, JSON lines otherwise (or as
//! `[log] format` says). Nothing secret is ever logged: handlers log order
//! numbers and states, never key text, tokens or gateway secrets.
//!
//! A request's id reaches its log lines through a task-local
//! ([`with_request_id`]), not a tracing span: a span's fields are formatted
//! when the span is made, on every request, while the task-local costs
//! nothing until a line is actually written.

use crate::config::LogConfig;
use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use tracing::{Event, Subscriber};
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

pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format.as_str() {
        "json" => true,
        "human" => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
}
