//! faka — an automatic card-key shop (发卡网) in one binary.
//!
//! Data flows one way: [`http`] (and the pages of [`web`]) parses requests into [`domain`] types,
//! a [`shop`] command carries out what the domain decides, the [`store`] makes it durable. See `docs/` and
//! `../shared/DESIGN.md` for the architecture.

pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod http;
pub mod json;
pub mod ops;
pub mod payments;
pub mod shop;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod web;
pub mod workers;
