//! One attempt of a task: how long it waited, how long it ran and how many run at once, the
//! executor's failures to record starts, and the tasks it does not run (past their deadline,
//! inside a side-effecting step, without a handler, taken over meanwhile). Logged under the
//! executor's target; the lines a storm repeats go through [`storm::admit`].

use std::time::Duration;

use super::storm::{self, StormEvent};
use crate::deadletter::Fingerprint;
use crate::handler::FailureClass;
use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::redis_op::RedisOp;
use crate::telemetry::storm::Print;
use crate::telemetry::tasklog::{task_event, TaskLog};

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
    if !storm::admit(StormEvent::StepsFenced, Print::Plain, tenant, None, 1) {
        return;
    }
    tracing::warn!(target: TARGET, tenant = %tenant, entry_id = %entry_id, steps = n, "step records refused: another member owns the entry now; this attempt records no more steps");
}

/// Recording `n` step changes of entry `entry_id` of `tenant` failed; they stay in the
/// attempt's memory (and reach its retry or dead letter), not in Redis.
pub fn steps_failed(tenant: &str, entry_id: &str, n: u64, error: &crate::Error) {
    redis_calls::failed(RedisOp::RecordSteps);
    metrics::counter!(names::STEP_RECORDS, "result" => "failed").increment(n);
    if !storm::admit(StormEvent::StepsFailed, Print::Plain, tenant, None, 1) {
        return;
    }
    tracing::warn!(target: TARGET, tenant = %tenant, entry_id = %entry_id, steps = n, error = %error, "cannot record step checkpoints in Redis; a crash now would lose them");
}

/// The fingerprint of a task not run: the one its dead letter gets.
fn not_run_print(log: &TaskLog, class: FailureClass, why: &str) -> Print {
    Print::Of(Fingerprint::of_error(&log.kind, class, why))
}

/// `log`'s task (entry `entry_id`) is past its deadline `deadline_ms` (`why`): not run, it is
/// dead-lettered as `expired`.
pub fn expired(log: &TaskLog, entry_id: &str, deadline_ms: u64, why: &str) {
    let print = not_run_print(log, FailureClass::Expired, why);
    if storm::admit(
        StormEvent::Expired,
        print,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, deadline = deadline_ms, error = %why, "task past its deadline; not run");
    }
}

/// `log`'s task (entry `entry_id`) arrived inside the side-effecting step `step` (`why`): not
/// run, it is dead-lettered as `partial_execution`.
pub fn inside_side_effect(log: &TaskLog, entry_id: &str, step: &str, why: &str) {
    let print = not_run_print(log, FailureClass::PartialExecution, why);
    if storm::admit(
        StormEvent::PartialExecution,
        print,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, step = %step, "task arrived inside a side-effecting step; not run");
    }
}

/// No handler matches the kind of `log`'s task (entry `entry_id`; `why`): not run, it is
/// dead-lettered as `no_handler`.
pub fn no_handler(log: &TaskLog, entry_id: &str, why: &str) {
    let print = not_run_print(log, FailureClass::NoHandler, why);
    if storm::admit(
        StormEvent::NoHandler,
        print,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, error = %why, "no handler for the task's kind; not run");
    }
}

/// `log`'s task (entry `entry_id`) was not started: another member took the entry over while
/// it waited here.
pub fn start_lost(log: &TaskLog, entry_id: &str) {
    if storm::admit(
        StormEvent::StartLost,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, "not started: another member took the entry over while it waited here");
    }
}

/// The start of `log`'s task (entry `entry_id`) could not be recorded: not run here, the entry
/// stays pending for a reclaim.
pub fn start_failed(log: &TaskLog, entry_id: &str) {
    if storm::admit(
        StormEvent::StartFailed,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, "cannot record the start; not run here, the entry stays pending for a reclaim");
    }
}

/// A taken-over entry `entry_id` (`log`'s task, started `starts` times, `steps` steps recorded)
/// runs here, `alone` when it started before (a suspect runs with nothing else).
pub fn takeover_running(log: &TaskLog, entry_id: &str, starts: u64, alone: bool, steps: usize) {
    if storm::admit(
        StormEvent::TakeoverRunning,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(info, target: TARGET, log, entry_id = %entry_id, starts, alone, steps, "running a taken-over entry");
    }
}

/// The attempt of `log`'s task (entry `entry_id`) stopped: another member took the entry over.
pub fn attempt_lost(log: &TaskLog, entry_id: &str) {
    if storm::admit(
        StormEvent::AttemptLost,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, "attempt stopped: another member took the entry over");
    }
}
