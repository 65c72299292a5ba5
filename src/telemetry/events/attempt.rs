//! One attempt of a task: how long it waited, how long it ran and how many run at once, and
//! the executor's failures to record starts. Logged under the executor's target.

use std::time::Duration;

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::redis_op::RedisOp;

/// The executor's module path, which log filters name.
const TARGET: &str = "redrive::fleet::executor";

/// The attempt metrics' handles, resolved once per member rather than per attempt.
#[derive(Clone)]
pub struct AttemptMeters {
    /// Seconds from enqueue to start.
    queue_wait: metrics::Histogram,
    /// Seconds an attempt ran.
    duration: metrics::Histogram,
    /// Attempts running now.
    in_flight: metrics::Gauge,
}

impl AttemptMeters {
    /// Resolves the handles of the attempt metrics.
    pub fn new() -> AttemptMeters {
        AttemptMeters {
            queue_wait: metrics::histogram!(names::QUEUE_WAIT),
            duration: metrics::histogram!(names::TASK_DURATION),
            in_flight: metrics::gauge!(names::IN_FLIGHT),
        }
    }

    /// An attempt starts after its task waited `wait_ms` since it was enqueued.
    pub fn started(&self, wait_ms: u64) {
        self.queue_wait.record(wait_ms as f64 / 1000.0);
        self.in_flight.increment(1.0);
    }

    /// An attempt that ran for `duration` is over.
    pub fn finished(&self, duration: Duration) {
        self.in_flight.decrement(1.0);
        self.duration.record(duration.as_secs_f64());
    }
}

impl Default for AttemptMeters {
    fn default() -> Self {
        AttemptMeters::new()
    }
}

/// Recording the starts of `entries` of `tenant`'s entries failed; they stay pending.
pub fn starts_failed(tenant: &str, entries: usize, error: &crate::Error) {
    redis_calls::failed(RedisOp::Start);
    tracing::warn!(target: TARGET, tenant = %tenant, entries, error = %error, "cannot record starts; the entries stay pending for a reclaim");
}

/// Starting a taken-over entry of `tenant` failed; it is not run here and stays pending.
pub fn takeover_start_failed(tenant: &str, entry_id: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Start);
    tracing::warn!(target: TARGET, tenant = %tenant, entry_id = %entry_id, error = %error, "cannot start a taken-over entry; not run here, the entry stays pending for a reclaim");
}
