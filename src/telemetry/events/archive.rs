//! The dead-letter archive: batches archived and removed from Redis, failures (the archive
//! unreachable, a write not confirmed), the backlog, dead letters deleted without an archive
//! past the hard ceiling, and restores. Lines use the archiver's target
//! (`redrive::fleet::archiver`), an admin move's the admin executor's.

use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;

/// The archiver's module path, which log filters name.
const ARCHIVER: &str = "redrive::fleet::archiver";
/// The admin executor's module path (restores, removals past the ceiling).
const ADMIN: &str = "redrive::admin::exec";

/// A batch of `entries` dead letters of `tenant` (`class`) was written to `object` (`bytes`
/// compressed), confirmed, and removed from Redis (`removed` of them were still there).
pub fn archived(tenant: &str, class: &str, object: &str, bytes: u64, entries: u64, removed: u64) {
    let t = tenant_label(tenant);
    metrics::counter!(names::DLQ_ARCHIVED, "tenant" => t.clone(), "class" => class.to_owned())
        .increment(removed);
    metrics::counter!(names::DLQ_ARCHIVED_BYTES, "tenant" => t).increment(bytes);
    tracing::info!(
        target: ARCHIVER, tenant = %tenant, class, object, bytes, entries, removed,
        "dead letters archived and removed from redis"
    );
}

/// A batch that a member left recorded (it crashed or failed between the upload and the
/// removal) is uploaded again under the same object name.
pub fn resumed(tenant: &str, object: &str, entries: usize) {
    tracing::info!(
        target: ARCHIVER, tenant = %tenant, object, entries,
        "resuming a recorded archive batch: uploading the same object again"
    );
}

/// The removal of `tenant`'s batch `object` was refused: `n` of its dead letters' review
/// records changed after they were read (a move while it was archived); the object is written
/// again with the records as they are now.
pub fn review_changed(tenant: &str, object: &str, n: usize) {
    tracing::info!(
        target: ARCHIVER, tenant = %tenant, object, changed = n,
        "review records changed while archiving: writing the object again before the removal"
    );
}

/// An archive step of `tenant` failed (`op`: one of `recorder::ARCHIVE_OPS`); nothing left Redis and the batch
/// is tried again on the archiver's next turn. One line per failure: at most one per tenant
/// per `archive.interval_ms`.
pub fn failed(tenant: &str, op: &'static str, error: &crate::Error) {
    metrics::counter!(names::DLQ_ARCHIVE_ERRORS, "tenant" => tenant_label(tenant), "op" => op)
        .increment(1);
    tracing::warn!(
        target: ARCHIVER, tenant = %tenant, op, error = %error,
        "archiving dead letters failed; nothing was removed from redis, the batch is tried again"
    );
}

/// The archiver's view of `tenant`'s backlog: `entries` due and still in Redis, due for
/// `age_secs` seconds (0 while nothing is due).
pub fn backlog(tenant: &str, entries: u64, age_secs: f64) {
    let t = tenant_label(tenant);
    metrics::gauge!(names::DLQ_ARCHIVE_BACKLOG, "tenant" => t.clone()).set(entries as f64);
    metrics::gauge!(names::DLQ_ARCHIVE_BACKLOG_AGE, "tenant" => t).set(age_secs);
}

/// The hard ceiling deleted `n` removed (resolved / discarded) dead letters of `tenant` from
/// the stream of removed ones WITHOUT an archive: counted like the dead-letter stream's
/// (`redrive_dlq_trimmed_total`), logged loudly.
pub fn dropped(tenant: &str, stream: &'static str, n: u64) {
    metrics::counter!(names::DLQ_TRIMMED, "tenant" => tenant_label(tenant)).increment(n);
    tracing::warn!(
        target: ADMIN, tenant = %tenant, stream, dropped = n,
        "stream past its hard ceiling: the oldest entries were deleted WITHOUT an archive (is the archive unreachable?)"
    );
}

/// An admin command restored `restored` archived dead letters of `tenant` (`already`: restored
/// before, left alone).
pub fn restored(tenant: &str, restored: u64, already: u64) {
    tracing::info!(
        target: ADMIN, tenant = %tenant, restored, already,
        "archived dead letters restored"
    );
}
