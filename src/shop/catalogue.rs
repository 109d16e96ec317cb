//! Catalogue commands: create and edit products, import keys (at once or as
//! an upload staged chunk by chunk and published whole), delete keys. New
//! stock back-fills paid orders that wait for it, oldest first.

use super::load_product;
use super::orders::backfill;
use crate::domain::model::{KeyCounts, Presentation, Product};
use crate::error::{Error, Result};
use crate::store::Tx;

/// A validated new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price: u64,
    pub min_quantity: u32,
    pub max_quantity: u32,
    pub active: bool,
    pub presentation: Presentation,
}

/// A validated product edit: `None` leaves a field as it is; for the
/// optional presentation fields `Some(None)` clears one.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<u64>,
    pub min_quantity: Option<u32>,
    pub max_quantity: Option<u32>,
    pub active: Option<bool>,
    pub category: Option<Option<String>>,
    pub sort: Option<i64>,
    pub image_url: Option<Option<String>>,
    pub instructions: Option<Option<String>>,
    pub low_stock: Option<u64>,
    pub tiers: Option<Vec<crate::domain::model::Tier>>,
}

pub fn create_product(tx: &mut Tx, p: NewProduct) -> Result<Product> {
    if tx.product(&p.id)?.is_some() {
        return Err(Error::Conflict(format!("product {} already exists", p.id)));
    }
    check_quantities(p.min_quantity, p.max_quantity)?;
    let now = tx.now_ms();
    let product = Product {
        id: p.id,
        name: p.name,
        description: p.description,
        price: p.price,
        min_quantity: p.min_quantity,
        max_quantity: p.max_quantity,
        active: p.active,
        created_at_ms: now,
        updated_at_ms: now,
        counts: KeyCounts::default(),
        presentation: p.presentation,
    };
    tx.put_product(&product);
    Ok(product)
}

pub fn update_product(tx: &mut Tx, id: &str, patch: ProductPatch) -> Result<Product> {
    let mut p = load_product(tx, id)?;
    patch_presentation(&mut p.presentation, &patch);
    if let Some(v) = patch.name {
        p.name = v;
    }
    if let Some(v) = patch.description {
        p.description = v;
    }
    if let Some(v) = patch.price {
        p.price = v;
    }
    if let Some(v) = patch.min_quantity {
        p.min_quantity = v;
    }
    if let Some(v) = patch.max_quantity {
        p.max_quantity = v;
    }
    if let Some(v) = patch.active {
        p.active = v;
    }
    if patch.max_quantity.is_none() && p.min_quantity > p.max_quantity {
        // Only min_quantity was sent: name the field the caller set.
        return Err(Error::invalid(
            "min_quantity",
            format!("must be at most max_quantity ({})", p.max_quantity),
        ));
    }
    check_quantities(p.min_quantity, p.max_quantity)?;
    p.updated_at_ms = tx.now_ms();
    tx.put_product(&p);
    // A new threshold may put the stock below it (or above it) at once.
    super::emails::watch_stock(tx, &p)?;
    Ok(p)
}

fn patch_presentation(look: &mut Presentation, patch: &ProductPatch) {
    if let Some(v) = &patch.category {
        look.category.clone_from(v);
    }
    if let Some(v) = patch.sort {
        look.sort = v;
    }
    if let Some(v) = &patch.image_url {
        look.image_url.clone_from(v);
    }
    if let Some(v) = &patch.instructions {
        look.instructions.clone_from(v);
    }
    if let Some(v) = patch.low_stock {
        look.low_stock = v;
    }
    if let Some(v) = &patch.tiers {
        look.tiers.clone_from(v);
    }
}

fn check_quantities(min: u32, max: u32) -> Result<()> {
    if min > max {
        return Err(Error::invalid(
            "max_quantity",
            format!("must be at least min_quantity ({min})"),
        ));
    }
    Ok(())
}

/// A card key ready to store: sealed text and its keyed fingerprint.
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub sealed: Vec<u8>,
    pub fingerprint: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportResult {
    pub added: u64,
    pub duplicates: u64,
    pub stock: u64,
}

/// Adds keys the product never had; counts the rest as duplicates. Waiting
/// orders are back-filled from the new stock at once, oldest first.
pub fn import_keys(tx: &mut Tx, product_id: &str, keys: Vec<SealedKey>) -> Result<ImportResult> {
    let product = load_product(tx, product_id)?;
    let mut duplicates = 0u64;
    let mut seen = crate::store::FingerprintSet::default();
    seen.reserve(keys.len());
    let mut new = Vec::with_capacity(keys.len());
    for k in keys {
        if !seen.insert(k.fingerprint) || tx.key_fingerprint_known(product_id, &k.fingerprint)? {
            duplicates += 1;
            continue;
        }
        new.push((k.sealed, k.fingerprint));
    }
    let added = new.len() as u64;
    tx.insert_available_keys(product_id, new);
    put_on_sale(tx, product, added, duplicates)
}

/// Counts `added` new available keys into `product` and back-fills waiting
/// orders from them.
fn put_on_sale(
    tx: &mut Tx,
    mut product: Product,
    added: u64,
    duplicates: u64,
) -> Result<ImportResult> {
    product.counts.available += added;
    product.counts.imported += added;
    tx.put_product(&product);
    backfill(tx, &product.id)?;
    let after = load_product(tx, &product.id)?;
    super::emails::watch_stock(tx, &after)?;
    let stock = if tx.stock_is_spoken_for(&product.id)? {
        0
    } else {
        after.counts.available
    };
    Ok(ImportResult {
        added,
        duplicates,
        stock,
    })
}

/// Opens upload `upload_id` of keys for `product_id`, staged chunk by chunk
/// and published as a whole (see `ops::upload`). First discards what
/// uploads no longer running (`is_live` names those that are) left staged.
pub fn begin_upload(
    tx: &mut Tx,
    upload_id: u64,
    product_id: &str,
    is_live: &dyn Fn(u64) -> bool,
) -> Result<()> {
    load_product(tx, product_id)?;
    discard_abandoned_uploads(tx, is_live)?;
    tx.begin_upload(upload_id, product_id)
}

/// Discards every staged upload `is_live` does not name (at a start: all);
/// returns how many.
pub fn discard_abandoned_uploads(tx: &mut Tx, is_live: &dyn Fn(u64) -> bool) -> Result<u64> {
    let mut discarded = 0;
    for id in tx.staged_uploads()? {
        if !is_live(id) && tx.discard_upload(id)? {
            discarded += 1;
        }
    }
    Ok(discarded)
}

/// Discards upload `upload_id` and what it staged; false if it is gone.
pub fn discard_upload(tx: &mut Tx, upload_id: u64) -> Result<bool> {
    tx.discard_upload(upload_id)
}

/// Stages a chunk of upload `upload_id`: keys the product does not have
/// are stored, not yet available; the rest are duplicates. (A key repeated
/// in another chunk is found at the publish.)
pub fn stage_keys(tx: &mut Tx, upload_id: u64, keys: Vec<SealedKey>) -> Result<()> {
    let product_id = tx.upload_product(upload_id)?;
    let mut duplicates = 0u64;
    let mut seen = crate::store::FingerprintSet::default();
    seen.reserve(keys.len());
    let mut new = Vec::with_capacity(keys.len());
    for k in keys {
        if !seen.insert(k.fingerprint) || tx.key_fingerprint_known(&product_id, &k.fingerprint)? {
            duplicates += 1;
            continue;
        }
        new.push((k.sealed, k.fingerprint));
    }
    tx.stage_keys(upload_id, new, duplicates)
}

/// Publishes upload `upload_id`: all its keys become available at once,
/// as one import, and waiting orders are back-filled from them.
pub fn publish_upload(tx: &mut Tx, upload_id: u64) -> Result<ImportResult> {
    let p = tx.publish_upload(upload_id)?;
    let product = load_product(tx, &p.product_id)?;
    put_on_sale(tx, product, p.added, p.duplicates)
}

/// Removes available keys by id; ids that are unknown, of another product or
/// not available are skipped. Returns how many were removed.
pub fn delete_keys(tx: &mut Tx, product_id: &str, ids: &[u64]) -> Result<u64> {
    let mut product = load_product(tx, product_id)?;
    let mut removed = 0;
    for &id in ids {
        if tx.delete_available_key(id, product_id)? {
            removed += 1;
        }
    }
    product.counts.available -= removed;
    product.counts.deleted += removed;
    tx.put_product(&product);
    super::emails::watch_stock(tx, &product)?;
    Ok(removed)
}
