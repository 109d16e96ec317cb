//! Operating the shop: the invariant checker (`faka check`, also run at
//! start-up) and start-up recovery.

pub mod check;
pub mod recovery;
