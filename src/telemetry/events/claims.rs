//! Entries that change hands: the heartbeat's lost leases, the reclaimer's claims of idle
//! entries and the recoverer's promotion of due retries. Each event keeps the log target of
//! the loop that reports it.

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;

/// The heartbeat's module path, which log filters name.
const HEARTBEAT: &str = "redrive::fleet::heartbeat";
/// The reclaimer's module path, which log filters name.
const RECLAIMER: &str = "redrive::fleet::reclaimer";
/// The recoverer's module path, which log filters name.
const RECOVERER: &str = "redrive::fleet::recoverer";

/// A heartbeat found `lost` of `tenant`'s entries taken over by another member.
pub fn ownership_lost(tenant: &str, lost: usize) {
    tracing::warn!(target: HEARTBEAT, tenant = %tenant, lost, "entries were taken over by another member; dropping them here");
    metrics::counter!(names::OWNERSHIP_LOST, "tenant" => tenant_label(tenant))
        .increment(lost as u64);
}

/// A heartbeat's lease renewal for `tenant` failed.
pub fn heartbeat_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Heartbeat);
    tracing::warn!(target: HEARTBEAT, tenant = %tenant, error = %error, "heartbeat failed");
}

/// The reclaimer claimed `n` stale entries of `tenant` (n > 0).
pub fn reclaimed(tenant: &str, n: usize) {
    tracing::info!(target: RECLAIMER, tenant = %tenant, entries = n, "reclaimed stale entries");
    metrics::counter!(names::RECLAIMED, "tenant" => tenant_label(tenant)).increment(n as u64);
}

/// A reclaim step for `tenant` failed.
pub fn reclaim_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Reclaim);
    tracing::warn!(target: RECLAIMER, tenant = %tenant, error = %error, "reclaim step failed");
}

/// The reclaimer's look for stale entries over `lanes` lanes failed (they are scanned anyway).
pub fn reclaim_probe_failed(lanes: usize, error: &crate::Error) {
    redis_calls::failed(RedisOp::Reclaim);
    tracing::warn!(target: RECLAIMER, lanes, error = %error, "the look for stale entries failed; scanning every lane of the turn");
}

/// The recoverer moved `n` due retries of `tenant` back to its lane (n > 0).
pub fn retries_promoted(tenant: &str, n: u64) {
    metrics::counter!(names::RETRIES_PROMOTED, "tenant" => tenant_label(tenant)).increment(n);
}

/// The recoverer's promotion of `tenant`'s due retries failed.
pub fn promote_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Promote);
    tracing::warn!(target: RECOVERER, tenant = %tenant, error = %error, "promoting due retries failed");
}
