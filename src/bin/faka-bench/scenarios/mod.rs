//! The scenarios, one module each, every one with a `run` that gives its
//! rows of the table. `read`, `pages`, `flow`, `flash` and `import` share one faka
//! (started by `main`); `mixed` and `scale` start their own.

pub mod flash;
pub mod flow;
pub mod import;
pub mod mixed;
pub mod pages;
pub mod read;
pub mod scale;
