//! Set-up and bookkeeping through faka's admin API, on a blocking `Conn`:
//! products, key imports (generated key lines that never repeat), and the
//! per-product counts a scenario checks at its end (available + held +
//! sold adds up to what was imported).

use crate::client::Conn;
use crate::{ADMIN, PRICE};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;

fn admin_call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> Result<Value> {
    let auth = format!("Bearer {ADMIN}");
    let r = conn
        .send(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", ctype)],
            body,
        )
        .with_context(|| format!("{method} {path}"))?;
    if !(200..300).contains(&r.status) {
        bail!(
            "{method} {path} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    r.json()
}

pub fn create_product(conn: &mut Conn, id: &str, max_quantity: u32) -> Result<()> {
    let body = json!({"id": id, "name": format!("bench {id}"), "price": PRICE, "max_quantity": max_quantity});
    admin_call(
        conn,
        "POST",
        "/api/v1/admin/products",
        "application/json",
        body.to_string().as_bytes(),
    )?;
    Ok(())
}

/// A shop-wide percent coupon with a total cap no run reaches: every
/// order claims a use (and its buyer's count) in the writer.
pub fn create_coupon(conn: &mut Conn, code: &str, percent: u64) -> Result<()> {
    let body =
        json!({"code": code, "kind": "percent", "value": percent, "max_uses": 1_000_000_000u64});
    admin_call(
        conn,
        "POST",
        "/api/v1/admin/coupons",
        "application/json",
        body.to_string().as_bytes(),
    )?;
    Ok(())
}

/// Imports keys `prefix-from .. prefix-to` in requests of `chunk` keys.
pub fn import_range(
    conn: &mut Conn,
    id: &str,
    prefix: &str,
    (from, to): (usize, usize),
    chunk: usize,
) -> Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + chunk.max(1)).min(to);
        let body = key_lines(prefix, i, end);
        let v = admin_call(
            conn,
            "POST",
            &format!("/api/v1/admin/products/{id}/keys"),
            "text/plain",
            &body,
        )?;
        if v["added"].as_u64() != Some((end - i) as u64) {
            bail!(
                "importing keys into {id}: expected {} added, got {v}",
                end - i
            );
        }
        i = end;
    }
    Ok(())
}

pub fn key_lines(prefix: &str, from: usize, to: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity((to - from) * (prefix.len() + 24));
    for i in from..to {
        // The tail makes keys look less like a counter (and not share a prefix).
        let tail = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let _ = writeln!(b, "{prefix}-{i:09}-{tail:08X}");
    }
    b
}

/// `(available, held, sold)` of a product, from the admin listing.
pub fn key_counts(conn: &mut Conn, id: &str) -> Result<(u64, u64, u64)> {
    let v = admin_call(
        conn,
        "GET",
        "/api/v1/admin/products",
        "application/json",
        b"",
    )?;
    let p = v["products"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == id))
        .ok_or_else(|| anyhow!("product {id} missing from the admin listing"))?;
    let n = |k: &str| {
        p["keys"][k]
            .as_u64()
            .ok_or_else(|| anyhow!("{id}: keys.{k} missing in {p}"))
    };
    Ok((n("available")?, n("held")?, n("sold")?))
}

/// Checks that a product's counts add up to what was imported and sold.
pub fn check_counts(
    conn: &mut Conn,
    id: &str,
    imported: u64,
    sold: u64,
    failures: &mut Vec<String>,
) -> Result<()> {
    let (a, h, s) = key_counts(conn, id)?;
    if a + h + s != imported {
        failures.push(format!(
            "{id}: available {a} + held {h} + sold {s} != imported {imported}"
        ));
    }
    if s != sold || h != 0 {
        failures.push(format!(
            "{id}: sold {s} (expected {sold}), held {h} (expected 0)"
        ));
    }
    Ok(())
}
