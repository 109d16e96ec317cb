//! The shop's domain: input newtypes, stored records, the order state
//! machine and the workflows the writer runs.

pub mod ids;
pub mod model;
pub mod order;
pub mod shop;
