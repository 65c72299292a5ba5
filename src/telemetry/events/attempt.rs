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

/// Counts the attempts of one route (`<index>:<type>`); its series exists from the member's
/// start (registered at 0), so `increase()` sees the first attempts.
#[derive(Clone)]
pub struct RouteMeter {
    /// Attempts started on the route.
    attempts: metrics::Counter,
}

impl RouteMeter {
    /// The meter of the route labelled `route`, its series registered at 0.
    pub fn new(route: &str) -> RouteMeter {
        let attempts = metrics::counter!(names::ROUTE_ATTEMPTS, "route" => route.to_owned());
        attempts.increment(0);
        RouteMeter { attempts }
    }

    /// An attempt of the route starts.
    pub fn attempt(&self) {
        self.attempts.increment(1);
    }
}

/// `n` step changes of an attempt were stored in Redis.
pub fn steps_recorded(n: u64) {
    metrics::counter!(names::STEP_RECORDS, "result" => "recorded").increment(n);
}

/// The fence refused `n` step changes of entry `entry_id` of `tenant`: another member owns
/// the entry now. Logged once per attempt (the recording ends).
pub fn steps_fenced(tenant: &str, entry_id: &str, n: u64) {
    metrics::counter!(names::STEP_RECORDS, "result" => "fenced").increment(n);
    tracing::warn!(target: TARGET, tenant = %tenant, entry_id = %entry_id, steps = n, "step records refused: another member owns the entry now; this attempt records no more steps");
}

/// Recording `n` step changes of entry `entry_id` of `tenant` failed; they stay in the
/// attempt's memory (and reach its retry or dead letter), not in Redis.
pub fn steps_failed(tenant: &str, entry_id: &str, n: u64, error: &crate::Error) {
    redis_calls::failed(RedisOp::RecordSteps);
    metrics::counter!(names::STEP_RECORDS, "result" => "failed").increment(n);
    tracing::warn!(target: TARGET, tenant = %tenant, entry_id = %entry_id, steps = n, error = %error, "cannot record step checkpoints in Redis; a crash now would lose them");
}
