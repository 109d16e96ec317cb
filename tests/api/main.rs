//! API tests through HTTP: each test starts the real application on port 0
//! with its own temporary data directory, so tests run in parallel.

mod helpers;

mod alipay;
mod at_rest;
mod backup;
mod bench_smoke;
mod browser;
mod chaos;
mod cli;
mod concurrency;
mod crash;
mod demo;
mod diskfull;
mod docs;
mod email;
mod epay;
mod errors;
mod first_start;
mod fuzz;
mod integrity;
mod keys;
mod limits;
mod openapi;
mod ops;
mod orders;
mod payments;
mod presentation;
mod pricing;
mod products;
mod providers;
mod slow_and_proxied;
mod stripe;
mod uploads;
mod web;
mod webhooks;
mod wechat;
