//! Start-up recovery after the store is open: check the invariants, and
//! deliver any order left `paid` without its keys. (Expired holds are
//! released by the expiry sweeper's first run.)

use crate::domain::shop;
use crate::store::Store;

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
