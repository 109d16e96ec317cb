//! Logging setup: human-readable on a terminal, JSON lines otherwise (or as
//! `[log] format` says). Nothing secret is ever logged: handlers log order
//! numbers and states, never key text, tokens or gateway secrets.

use crate::config::LogConfig;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format.as_str() {
        "json" => true,
        "human" => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        // The request's span as `span` only: `spans` would repeat it, and
        // each copy re-parses the span's fields on every line.
        builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
