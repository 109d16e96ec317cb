//! The writer's early stock counts: what `refuse_early` answers a buyer
//! with while the batch that claimed the last key is still on its way to
//! the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Each product's available count as the writer last computed it: after
/// commands it has run, before their batch is durable. `refuse_early`
/// reads it, so that in a flash sale the buyers who come after the last
/// key was claimed are refused at once instead of queueing behind the
/// batch that claimed it. A count from a batch that failed is ignored from
/// the moment the committer marks its epoch failed, and all counts are
/// dropped when the writer starts again after a failure; then the stored
/// counts answer until the writer has run a command for the product.
pub(crate) struct EarlyStock {
    /// product id → (epoch, available)
    counts: std::sync::RwLock<std::collections::HashMap<String, (u64, u64)>>,
    /// Set by the committer to the epoch of a batch that failed.
    pub(super) failed_epoch: Arc<AtomicU64>,
}

impl Default for EarlyStock {
    fn default() -> Self {
        EarlyStock {
            counts: Default::default(),
            failed_epoch: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

impl EarlyStock {
    pub(crate) fn available(&self, product_id: &str) -> Option<u64> {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        let &(epoch, available) = counts.get(product_id)?;
        (epoch != self.failed_epoch.load(Ordering::SeqCst)).then_some(available)
    }

    pub(super) fn publish(&self, epoch: u64, stock: Vec<(String, u64)>) {
        if stock.is_empty() {
            return;
        }
        let mut counts = self.counts.write().unwrap_or_else(|p| p.into_inner());
        for (id, available) in stock {
            counts.insert(id, (epoch, available));
        }
    }

    pub(super) fn clear(&self) {
        self.counts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
