//! Start-up recovery after the store is open: check the invariants, and
//! deliver any order left `paid` without its keys. (Expired holds are
//! released by the expiry sweeper's first run.)

use crate::domain::order::OrderStatus;
use crate::domain::shop;
use crate::error::Result;
use crate::store::Store;

/// Re-drives paid-but-undelivered orders; returns how many were found.
pub fn redrive_paid(store: &Store) -> Result<usize> {
    let mut paid = Vec::new();
    store.for_each_order(|o| {
        if o.status == OrderStatus::Paid {
            paid.push(o.order_no);
        }
        Ok(())
    })?;
    for no in &paid {
        let no2 = no.clone();
        match store.write_blocking(move |tx| shop::redrive_paid(tx, &no2)) {
            Ok(status) => {
                tracing::warn!(order_no = %no, status = status.as_str(), "re-drove a paid order")
            }
            Err(e) => {
                tracing::error!(order_no = %no, error = %e, "could not re-drive a paid order")
            }
        }
    }
    Ok(paid.len())
}
