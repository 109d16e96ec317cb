//! Start-up recovery after the store is open: check the invariants, and
//! deliver any order left `paid` without its keys. (Expired holds are
//! released by the expiry sweeper's first run.)

use crate::domain::order::OrderStatus;
use crate::error::Result;
use crate::shop;
use crate::store::Store;

/// Finds and re-drives orders left `paid` without their keys, reading the
/// orders only when the store's per-status counts say there are any. `paid`
/// lives only inside one command (a payment delivers or queues for stock in
/// the same transaction), so the count is 0 unless something went wrong.
/// Returns how many were re-driven.
pub fn redrive_left_paid(store: &Store) -> Result<usize> {
    let counted = store
        .stats()
        .orders_by_status
        .lock()
        .map(|c| c[OrderStatus::Paid.index()])
        .unwrap_or(1);
    if counted == 0 {
        return Ok(0);
    }
    let mut paid = Vec::new();
    store.for_each_order(|o| {
        if o.status == OrderStatus::Paid {
            paid.push(o.order_no);
        }
        Ok(())
    })?;
    redrive_paid(store, &paid);
    Ok(paid.len())
}

/// Re-drives the paid-but-undelivered orders the start-up check found.
pub fn redrive_paid(store: &Store, paid: &[String]) {
    for no in paid {
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
}
