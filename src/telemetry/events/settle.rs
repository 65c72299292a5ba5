//! What the settler reports: acks, entries no longer pending, failed attempts, retries,
//! deferrals, dead letters and the dead-letter cap, and its Redis calls' retries. Logged under
//! the settler's target; lines about one task carry its fields (a [`TaskLog`]). The lines a
//! storm repeats go through [`storm::admit`]: the first of each cause per interval in full,
//! the rest summarised; their metrics count every event.

use std::time::Duration;

use super::storm::{self, StormEvent};
use crate::deadletter::Fingerprint;
use crate::handler::FailureClass;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;
use crate::telemetry::storm::Print;
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
    /// The failure's fingerprint (kind, class, error pattern): the one its dead letter gets.
    pub fingerprint: Fingerprint,
}

/// An attempt of `log`'s task (of `tenant`) failed.
pub fn attempt_failed(tenant: &str, log: &TaskLog, f: &AttemptFailure<'_>) {
    let (class, deliveries, poison, reason) = (f.class, f.deliveries, f.poison, f.reason);
    metrics::counter!(names::TASKS_FAILED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    let print = Print::Of(f.fingerprint);
    if !storm::admit(
        StormEvent::AttemptFailed,
        print,
        tenant,
        Some(&log.task_id),
        1,
    ) {
        return;
    }
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

/// A retry of `log`'s task (of `tenant`), failed with `class` (fingerprint `fingerprint`),
/// was scheduled after `delay`, due at `due_ms`.
pub fn retry_scheduled(
    tenant: &str,
    log: &TaskLog,
    class: FailureClass,
    fingerprint: Fingerprint,
    delay: Duration,
    due_ms: u64,
) {
    metrics::counter!(names::TASKS_RETRIED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    let print = Print::Of(fingerprint);
    if !storm::admit(
        StormEvent::RetryScheduled,
        print,
        tenant,
        Some(&log.task_id),
        1,
    ) {
        return;
    }
    task_event!(info, target: TARGET, log, class = %class, delay_ms = delay.as_millis() as u64, due_ms, "retry scheduled");
}

/// `n` of `tenant`'s tasks held back by its breaker were deferred unattempted (n > 0).
pub fn tasks_deferred(tenant: &str, n: u64) {
    metrics::counter!(names::TASKS_DEFERRED, "tenant" => tenant_label(tenant)).increment(n);
    if !storm::admit(StormEvent::TasksDeferred, Print::Plain, tenant, None, n) {
        return;
    }
    tracing::info!(target: TARGET, tenant = %tenant, deferred = n, "tasks held back by the tenant's breaker, deferred unattempted");
}

/// Entry `entry_id` of `tenant` (`log`'s task), failed with `class`, was moved to the
/// dead-letter stream as `dead_letter_id` with `fingerprint`; `action` says what an operator
/// may do with it.
pub fn dead_lettered(
    tenant: &str,
    log: &TaskLog,
    entry_id: &str,
    (class, fingerprint): (FailureClass, Fingerprint),
    dead_letter_id: &str,
    action: &str,
) {
    metrics::counter!(names::DEAD_LETTERED, "tenant" => tenant_label(tenant), "class" => class.as_str())
        .increment(1);
    let print = Print::Of(fingerprint);
    if !storm::admit(
        StormEvent::DeadLettered,
        print,
        tenant,
        Some(&log.task_id),
        1,
    ) {
        return;
    }
    task_event!(
        warn, target: TARGET, log, entry_id = %entry_id,
        class = %class, dead_letter_id = %dead_letter_id, action, "task dead-lettered"
    );
}

/// The hard ceiling (`dead_letter.hard_max_len`) deleted `n` of `tenant`'s oldest dead letters
/// WITHOUT an archive (n > 0): their content is gone. It only happens while the archive has
/// been unreachable long enough for the stream to grow that far past its cap.
pub fn dlq_trimmed(tenant: &str, n: u64) {
    metrics::counter!(names::DLQ_TRIMMED, "tenant" => tenant_label(tenant)).increment(n);
    if !storm::admit(StormEvent::DlqTrimmed, Print::Plain, tenant, None, n) {
        return;
    }
    tracing::warn!(
        target: TARGET, tenant = %tenant, trimmed = n,
        "dead-letter stream past its hard ceiling: the oldest dead letters were deleted WITHOUT an archive (is the archive unreachable?)"
    );
}

/// Entry `entry_id` of `tenant` could not be read as a task (`error`, the task fields of its
/// dead letter in `log`); it is set aside as a dead letter with `fingerprint`.
pub fn malformed_set_aside(
    tenant: &str,
    log: &TaskLog,
    entry_id: &str,
    error: &str,
    fingerprint: Fingerprint,
) {
    let print = Print::Of(fingerprint);
    if storm::admit(
        StormEvent::MalformedEntry,
        print,
        tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, class = "malformed_entry", error = %error, "malformed entry set aside");
    }
}

/// The retry of entry `entry_id` (`log`'s task, failed with `class`) found it no longer
/// pending after a try whose reply was lost: most likely that try scheduled it.
pub fn retry_reply_lost(log: &TaskLog, entry_id: &str, class: FailureClass) {
    if storm::admit(
        StormEvent::ReplyLost,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(warn, target: TARGET, log, entry_id = %entry_id, class = %class, "settled by an earlier try whose reply was lost (most likely its retry was scheduled then)");
    }
}

/// The dead letter of entry `entry_id` (`log`'s task, failed with `class`) found it no longer
/// pending after a try whose reply was lost: most likely that try dead-lettered it.
pub fn dead_letter_reply_lost(log: &TaskLog, entry_id: &str, class: FailureClass, action: &str) {
    if storm::admit(
        StormEvent::ReplyLost,
        Print::Plain,
        &log.tenant,
        Some(&log.task_id),
        1,
    ) {
        task_event!(
            warn, target: TARGET, log, entry_id = %entry_id, class = %class, action,
            "settled by an earlier try whose reply was lost (most likely dead-lettered then)"
        );
    }
}

/// An ack of `tenant`'s completed entries found `n` no longer pending after a try whose reply
/// was lost: that try acked them (n > 0).
pub fn acks_reply_lost(tenant: &str, n: u64) {
    if storm::admit(StormEvent::EntriesReplyLost, Print::Plain, tenant, None, n) {
        tracing::warn!(target: TARGET, tenant = %tenant, entries = n, "completed entries settled by an earlier try whose reply was lost");
    }
}

/// A deferral of `tenant`'s held-back entries found `n` no longer pending after a try whose
/// reply was lost: most likely that try deferred them (n > 0).
pub fn defers_reply_lost(tenant: &str, n: u64) {
    if storm::admit(StormEvent::EntriesReplyLost, Print::Plain, tenant, None, n) {
        tracing::warn!(target: TARGET, tenant = %tenant, entries = n, "held-back entries settled by an earlier try whose reply was lost (most likely deferred then)");
    }
}

/// An ack of `tenant`'s completed entries found `n` no longer this member's: settled or
/// reclaimed elsewhere (n > 0).
pub fn acks_lost(tenant: &str, n: u64) {
    if storm::admit(StormEvent::AcksLost, Print::Plain, tenant, None, n) {
        tracing::warn!(target: TARGET, tenant = %tenant, lost = n, "completed entries were no longer ours to ack (settled or reclaimed elsewhere)");
    }
}
