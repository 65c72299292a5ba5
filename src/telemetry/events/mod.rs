//! Telemetry as events: one function per observable event, which both logs the event and
//! records its metrics, so the two cannot drift. Grouped by area. An event keeps the log
//! target of the code that used to log it (`target: "redrive::fleet::settler"` and so on),
//! because log filters name those targets.

pub mod admin;
pub mod attempt;
pub mod claims;
pub mod health;
pub mod isolation;
pub mod read;
pub mod redis_calls;
pub mod settle;
