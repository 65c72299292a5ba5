//! What the settler reports: acks, entries no longer pending, failed attempts, retries,
//! deferrals, dead letters and the dead-letter cap, and its Redis calls' retries. Logged under
//! the settler's target; lines about one task carry its fields (a [`TaskLog`]).

use std::time::Duration;

use crate::handler::FailureClass;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;
use crate::telemetry::tasklog::{task_event, TaskLog};

/// The settler's module path, which log filters name.
const TARGET: &str = "redrive::fleet::settler";

/// One ack call of `tenant` acked `acked` entries, `recovered` of them recovered (counted
/// only when > 0).
pub fn tasks_completed(tenant: &str, acked: u64, recovered: u64) {
    let label = tenant_label(tenant);
    metrics::counter!(names::TASKS_COMPLETED, "tenant" => label.clone()).increment(acked);
    if recovered > 0 {
        metrics::counter!(names::TASKS_RECOVERED, "tenant" => label).increment(recovered);
    }
}

/// `n` of `tenant`'s entries were no longer pending for this member when settled: lost to
/// another member.
pub fn settle_lost(tenant: &str, n: u64) {
    metrics::counter!(names::SETTLE_LOST, "tenant" => tenant_label(tenant)).increment(n);
}

/// `n` of `tenant`'s entries were already settled by an earlier try whose reply was lost.
pub fn settle_reply_lost(tenant: &str, n: u64) {
    metrics::counter!(names::SETTLE_REPLY_LOST, "tenant" => tenant_label(tenant)).increment(n);
}

/// A settling Redis call `op` is abandoned at shutdown (the failure itself is counted by
/// [`redis_calls::failed`](super::redis_calls::failed)).
pub fn redis_gave_up(op: RedisOp, error: &crate::Error) {
    tracing::error!(target: TARGET, op = op.as_str(), error = %error, "giving up at shutdown; the entries stay pending and will be redelivered");
}

/// A settling Redis call `op` failed and is tried again after `delay`.
pub fn redis_retrying(op: RedisOp, error: &crate::Error, delay: Duration) {
    tracing::warn!(target: TARGET, op = op.as_str(), error = %error, retry_in_ms = delay.as_millis() as u64, "redis call failed; retrying");
}

/// A pending entry of `tenant` was deleted before it ran (found by the settler).
pub fn entry_gone_before_run(tenant: &str, entry_id: &str) {
    tracing::error!(target: TARGET, tenant = %tenant, entry_id = %entry_id, "pending entry was deleted before it ran: payload lost");
    metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(tenant)).increment(1);
}

/// An entry of `tenant` was deleted while the settler re-read it; its tombstone was acked.
pub fn entry_deleted_meanwhile(tenant: &str) {
    metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(tenant)).increment(1);
}

/// `n` pending entries of `tenant` were deleted before they ran (found by a deferral; n > 0).
pub fn entries_gone_before_run(tenant: &str, n: u64) {
    tracing::error!(target: TARGET, tenant = %tenant, tombstones = n, "pending entries were deleted before they ran: payloads lost");
    metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(tenant)).increment(n);
}

/// How an attempt failed, as its log line shows it.
pub struct AttemptFailure<'a> {
    /// The failure's class.
    pub class: FailureClass,
    /// Deliveries of the entry so far.
    pub deliveries: u64,
    /// How long the attempt ran.
    pub duration: Duration,
    /// Whether the entry counts as poison (delivered too often).
    pub poison: bool,
    /// The failure's reason.
    pub reason: &'a str,
    /// The task's payload, when payloads may be logged.
    pub payload: Option<&'a dyn std::fmt::Display>,
}

/// An attempt of `log`'s task (of `tenant`) failed.
pub fn attempt_failed(tenant: &str, log: &TaskLog, f: &AttemptFailure<'_>) {
    let (class, deliveries, poison, reason) = (f.class, f.deliveries, f.poison, f.reason);
    metrics::counter!(names::TASKS_FAILED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    let duration_ms = f.duration.as_millis() as u64;
    if let Some(payload) = f.payload {
        task_event!(
            warn, target: TARGET, log, class = %class, deliveries, duration_ms,
            poison, error = %reason, payload = %payload, "task attempt failed"
        );
    } else {
        task_event!(
            warn, target: TARGET, log, class = %class, deliveries, duration_ms,
            poison, error = %reason, "task attempt failed"
        );
    }
}

/// A retry of `log`'s task (of `tenant`), failed with `class`, was scheduled after `delay`,
/// due at `due_ms`.
pub fn retry_scheduled(
    tenant: &str,
    log: &TaskLog,
    class: FailureClass,
    delay: Duration,
    due_ms: u64,
) {
    metrics::counter!(names::TASKS_RETRIED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    task_event!(info, target: TARGET, log, class = %class, delay_ms = delay.as_millis() as u64, due_ms, "retry scheduled");
}

/// `n` of `tenant`'s tasks held back by its breaker were deferred unattempted (n > 0).
pub fn tasks_deferred(tenant: &str, n: u64) {
    metrics::counter!(names::TASKS_DEFERRED, "tenant" => tenant_label(tenant)).increment(n);
    tracing::info!(target: TARGET, tenant = %tenant, deferred = n, "tasks held back by the tenant's breaker, deferred unattempted");
}

/// Entry `entry_id` of `tenant` (`log`'s task), failed with `class`, was moved to the
/// dead-letter stream as `dead_letter_id`; `action` says what an operator may do with it.
pub fn dead_lettered(
    tenant: &str,
    log: &TaskLog,
    entry_id: &str,
    class: FailureClass,
    dead_letter_id: &str,
    action: &str,
) {
    metrics::counter!(names::DEAD_LETTERED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    task_event!(
        warn, target: TARGET, log, entry_id = %entry_id,
        class = %class, dead_letter_id = %dead_letter_id, action, "task dead-lettered"
    );
}

/// The dead-letter cap trimmed `n` of `tenant`'s oldest dead letters (n > 0).
pub fn dlq_trimmed(tenant: &str, n: u64) {
    metrics::counter!(names::DLQ_TRIMMED, "tenant" => tenant_label(tenant)).increment(n);
    tracing::warn!(target: TARGET, tenant = %tenant, trimmed = n, "dead-letter cap trimmed the oldest dead letters");
}
