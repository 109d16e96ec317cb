//! The shop's domain, pure: input newtypes, stored records and the order
//! state machine. It imports nothing of the store or the edges; the
//! commands that carry its decisions out live in [`crate::shop`].

pub mod ids;
pub mod model;
pub mod order;
pub mod pricing;
