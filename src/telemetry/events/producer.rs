//! What a producer reports: task_ids refused as duplicates at enqueue (their live record's
//! state and entry), and waits retrying while Redis is unreachable. Logged under the
//! producer's target.

use crate::records::TaskState;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;

/// The producer's module path, which log filters name.
const TARGET: &str = "redrive::producer";

/// An enqueue of `task_id` in `tenant` was refused: the task_id has a live record in `state`
/// (its entry `entry`); nothing was appended. Counted, and logged at debug only: the caller gets
/// each duplicate back (`Enqueued::duplicate`, `redrive enqueue` prints it), and a producer
/// retrying a batch must not flood the log with one line per task.
pub fn duplicate_refused(tenant: &str, task_id: &str, state: TaskState, entry: &str) {
    tracing::debug!(target: TARGET, tenant = %tenant, task_id = %task_id, state = state.as_str(), entry_id = %entry, "duplicate task_id not enqueued: it has a live record");
    metrics::counter!(names::DUPLICATES, "tenant" => tenant_label(tenant), "side" => "producer")
        .increment(1);
}

/// A wait for `task_id` of `tenant` could not read Redis (`error`) and tries again until its
/// deadline (debug: a wait across a restart logs one line per try).
pub fn wait_retrying(tenant: &str, task_id: &str, error: &dyn std::fmt::Display) {
    tracing::debug!(target: TARGET, tenant = %tenant, task_id = %task_id, error = %error, "wait: Redis unreachable; trying again until the deadline");
}

/// The announcement of `tenants`, newly registered by an enqueue, could not be published
/// (`error`): the tasks are written, and members find the tenants at their next periodic look
/// (`fleet.discovery_interval_ms`) instead of at once.
pub fn announce_failed(tenants: &[&str], error: &dyn std::fmt::Display) {
    tracing::warn!(target: TARGET, tenants = %tenants.join(","), error = %error, "new tenants enqueued but not announced to members; they are found by the periodic look");
}

pub use super::replication::wait_short;
