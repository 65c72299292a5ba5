//! Task records: records the admin moves wrote, the index sweep (expired records' entries
//! removed, trimmed dead letters' records given a retention) and lookups by id. Lines keep the
//! targets of the code that reports them: `redrive::fleet::recoverer` for the sweep,
//! `redrive::admin::exec` for the admin moves.

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;

/// The recovery loop's module path, which log filters name.
const RECOVERER: &str = "redrive::fleet::recoverer";

/// An admin move (replay, resolve, discard, purge) wrote `n` records of `tenant` in `state`.
pub fn written(tenant: &str, state: &str, n: u64) {
    if n > 0 {
        metrics::counter!(names::RECORDS_WRITTEN, "tenant" => tenant_label(tenant), "state" => state.to_owned())
            .increment(n);
    }
}

/// A step of `tenant`'s index sweep removed `removed` entries of expired records and gave
/// `retained` records of trimmed dead letters their retention.
pub fn swept(tenant: &str, removed: u64, retained: u64) {
    if removed > 0 {
        metrics::counter!(names::TASK_RECORDS_EXPIRED, "tenant" => tenant_label(tenant))
            .increment(removed);
    }
    if retained > 0 {
        tracing::info!(
            target: RECOVERER, tenant = %tenant, records = retained,
            "records of dead letters the cap trimmed now expire after the retention"
        );
    }
}

/// A step of `tenant`'s index sweep failed (the next one tries again).
pub fn sweep_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::RecordsSweep);
    tracing::warn!(target: RECOVERER, tenant = %tenant, error = %error, "sweeping the task record index failed");
}

/// A lookup of a task by id ended: `found` is `record`, `located` or `none`.
pub fn lookup(found: &'static str) {
    metrics::counter!(names::TASK_LOOKUPS, "found" => found).increment(1);
}

/// The recoverer began counting `tenant`'s dead letters again: its counts were missing (dead
/// letters older than the counts) or disagreed with its stream (someone changed it by hand).
/// Until the rebuild completes, `health` and `dlq stats` scan that tenant instead.
pub fn dlq_counts_rebuilding(tenant: &str) {
    tracing::info!(
        target: RECOVERER, tenant = %tenant,
        "counting the tenant's dead letters again (counts missing or disagreeing with the stream)"
    );
}

/// The recoverer finished counting `tenant`'s dead letters.
pub fn dlq_counts_rebuilt(tenant: &str) {
    tracing::info!(target: RECOVERER, tenant = %tenant, "the tenant's dead letters are counted");
}

/// A step of the upkeep of `tenant`'s dead-letter counts failed (the next one tries again).
pub fn dlq_counts_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::DlqCounts);
    tracing::warn!(target: RECOVERER, tenant = %tenant, error = %error, "keeping the dead-letter counts failed");
}
