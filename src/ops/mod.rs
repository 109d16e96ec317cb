//! Operating the shop: the invariant checker (`faka check`, also run at
//! start-up) and start-up recovery.

pub mod backup;
pub mod check;
pub mod import;
pub mod metrics;
pub mod offline;
pub mod recovery;
