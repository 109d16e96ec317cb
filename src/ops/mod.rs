//! Operating the shop: the invariant checker (`faka check`, also run at
//! start-up), start-up recovery, and key uploads as a whole (the admin
//! API's and `faka import`'s).

pub mod backup;
pub mod check;
pub mod import;
pub mod metrics;
pub mod offline;
pub mod recovery;
pub mod upload;
