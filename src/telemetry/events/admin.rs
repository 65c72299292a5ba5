//! Admin commands: each command's outcome (counted by command and outcome), the admin loop's
//! failures, and dead letters replayed. Lines keep the targets of the code that reports them:
//! `redrive::admin::exec` for a command's execution, `redrive::fleet::admin` for the loop.

use std::fmt::Display;

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;

/// The admin execution module's path, which log filters name.
const EXEC: &str = "redrive::admin::exec";
/// The admin loop's module path, which log filters name.
const LOOP: &str = "redrive::fleet::admin";

/// Counts one admin command `command` that ended with `outcome`.
fn counted(command: &str, outcome: &str) {
    metrics::counter!(names::ADMIN_COMMANDS, "command" => command.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
}

/// An admin command ran here and its result was recorded.
pub fn command_ran(
    command_id: &str,
    operator: &str,
    command: &str,
    outcome: &str,
    member: &dyn Display,
) {
    counted(command, outcome);
    tracing::info!(
        target: EXEC,
        command_id = %command_id, operator = %operator, command = command,
        outcome = %outcome, member = %member, "admin command"
    );
}

/// An admin command id was seen again; the command is not executed twice.
pub fn command_duplicate(command_id: &str, operator: &str, command: &str) {
    counted(command, "duplicate");
    tracing::info!(target: EXEC, command_id = %command_id, operator = %operator, command = command, outcome = "duplicate", "admin command id seen again; not executed twice");
}

/// An admin command expired before it started; it is not executed.
pub fn command_expired(command_id: &str, operator: &str, command: &str) {
    counted(command, "expired");
    tracing::info!(target: EXEC, command_id = %command_id, operator = %operator, command = command, outcome = "expired", "admin command expired before it started; not executed");
}

/// The admin loop recorded the result of a command that ended with `outcome`.
pub fn command_finished(command: &str, outcome: &str) {
    counted(command, outcome);
}

/// An admin entry could not be read as a command; it is dropped with a note in the audit trail.
pub fn command_unreadable(entry_id: &str, why: &dyn Display) {
    tracing::warn!(target: LOOP, entry = %entry_id, error = %why, "unreadable admin command; dropped with a note in the audit trail");
    counted("unknown", "invalid");
}

/// Reading the admin stream failed.
pub fn read_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::AdminRead);
    tracing::warn!(target: LOOP, error = %error, "reading admin commands failed");
}

/// The admin loop's beat on the commands it runs failed.
pub fn beat_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::AdminBeat);
    tracing::warn!(target: LOOP, error = %error, "admin beat failed");
}

/// An admin command could not be run or recorded; it stays pending.
pub fn command_failed(command_id: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::AdminCommand);
    tracing::warn!(target: LOOP, command_id = %command_id, error = %error, "admin command could not be run or recorded; it stays pending");
}

/// A replay moved `n` of `tenant`'s dead letters back to its lane (n > 0).
pub fn dlq_replayed(tenant: &str, n: u64) {
    metrics::counter!(names::DLQ_REPLAYED, "tenant" => tenant_label(tenant)).increment(n);
}
