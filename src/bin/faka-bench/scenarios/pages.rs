//! `pages`: the storefront's two busiest pages against the same two
//! ceilings as `read`, with the same client: `GET /` listing (at least) 50
//! products and `GET /products/{id}`, as a returning browser asks for them
//! (with its CSRF cookie, so the order form's token and every body stay the
//! same). The goal is half the trivial endpoint's rate (issue 25).

use super::read::{measure, Target};
use crate::admin::{create_product, import_range};
use crate::client::{Conn, Resp};
use crate::process::Faka;
use crate::report::Row;
use crate::servers::{outside, trivial, ServerThreads, PING_BODY};
use crate::settings::Settings;
use anyhow::{bail, Result};
use std::time::Duration;

/// The products the storefront lists while it is measured.
const PRODUCTS: usize = 50;
const PAGE_PRODUCT: &str = "bench-page-00";
/// A CSRF cookie as the shop sets it (32–128 URL-safe characters).
const COOKIE: &str = "faka_csrf=benchbenchbenchbenchbenchbenchbench0";

pub fn run(cfg: &Settings, faka: &Faka) -> Result<Vec<Row>> {
    let (trivial, outside) = (trivial(cfg)?, outside(cfg)?);
    let (home, product) = expected_pages(faka)?;
    let product_path = format!("/products/{PAGE_PRODUCT}");
    let targets = [
        Target::new(
            "ceiling /ping",
            trivial,
            "/ping",
            PING_BODY,
            ServerThreads::Trivial,
        ),
        Target::new(
            "outside /ping",
            outside.addr,
            "/ping",
            PING_BODY,
            ServerThreads::Outside(outside.pid),
        ),
        Target::new(
            "page / (50 products)",
            faka.addr,
            "/",
            &home.body,
            ServerThreads::Faka(faka),
        )
        .header("Cookie", COOKIE.into()),
        Target::new(
            "page product",
            faka.addr,
            &product_path,
            &product.body,
            ServerThreads::Faka(faka),
        )
        .header("Cookie", COOKIE.into()),
    ];
    Ok(measure(cfg, &targets, 0.5, outside.nice))
}

/// Fills the storefront up to 50 products, one with keys, and reads both
/// pages once: the bodies every later answer must equal.
fn expected_pages(faka: &Faka) -> Result<(Resp, Resp)> {
    let mut admin = Conn::new(faka.addr, Duration::from_secs(60));
    let listed = admin.get("/api/v1/products")?.json()?["products"]
        .as_array()
        .map_or(0, Vec::len);
    for i in 0..PRODUCTS.saturating_sub(listed).max(1) {
        create_product(&mut admin, &format!("bench-page-{i:02}"), 10)?;
    }
    import_range(&mut admin, PAGE_PRODUCT, "PAGE", (0, 100), 100)?;
    let headers = [("Cookie", COOKIE)];
    let home = admin.send("GET", "/", &headers, b"")?;
    let cards = String::from_utf8_lossy(&home.body)
        .matches("data-product-id=")
        .count();
    if home.status != 200 || cards < PRODUCTS {
        bail!(
            "GET / lists {cards} products ({}), not {PRODUCTS}",
            home.status
        );
    }
    let path = format!("/products/{PAGE_PRODUCT}");
    let product = admin.send("GET", &path, &headers, b"")?;
    if product.status != 200 || !String::from_utf8_lossy(&product.body).contains("bench-page-00") {
        bail!("GET {path}: {}", product.status);
    }
    Ok((home, product))
}
