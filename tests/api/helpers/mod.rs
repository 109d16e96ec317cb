//! Test harness shared by every API test: the shop in-process (`app`), the
//! real binary as a child process (`process`) and the `faka` command line
//! (`cli`). Tests take all three with `use crate::helpers::*`.

// Each test module uses a different part of the harness.
#![allow(dead_code)]

mod app;
mod cli;
mod process;

pub use app::*;
pub use cli::*;
pub use process::*;
