//! Operating the shop: the invariant checker (`faka check`, also run at
//! start-up), start-up recovery, key uploads as a whole (the admin API's
//! and `faka import`'s), backups, metrics and the admin token's storage.

pub mod admin_token;
pub mod backup;
pub mod check;
pub mod import;
pub mod metrics;
pub mod offline;
pub mod recovery;
pub mod upload;
