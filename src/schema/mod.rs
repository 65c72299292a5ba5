//! Payload schemas: JSON merge patch and the schema migrations a replay applies.

pub mod migrate;
pub mod patch;
