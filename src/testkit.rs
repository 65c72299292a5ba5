//! What the integration tests in tests/ need from the crate's internals. Hidden from the
//! documentation, compiled only with the `testkit` feature, and imported by nothing in src/.

pub use crate::admin::time::format_time;
pub use crate::broker::reply::{entries, streams};
pub use crate::broker::{BreakerTransition, DeferItem, Deferred, Entry};
pub use crate::deadletter::DeadLetter;
pub use crate::embedded::RedisServer;
pub use crate::failpoint::POINTS;
pub use crate::task::Limits;
