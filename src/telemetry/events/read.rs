//! What the reader sees: tenants it starts serving, entries read, and pending entries whose
//! data was deleted before they ran. Logged under the reader's target.

use crate::telemetry::names;
use crate::telemetry::recorder::{register_tenant, tenant_label};

/// The reader's module path, which log filters name.
const TARGET: &str = "redrive::fleet::reader";

/// This member starts serving `tenant`, found `via` its start (`connect`), a producer's
/// announcement (`signal`) or the periodic look (`poll`): logged, counted, and the tenant's
/// series registered at 0.
pub fn tenant_served(tenant: &str, via: &'static str) {
    tracing::info!(target: TARGET, tenant = %tenant, via = %via, "serving tenant");
    metrics::counter!(names::TENANTS_DISCOVERED, "via" => via).increment(1);
    register_tenant(tenant);
}

/// The tenant watch lost (or could not open) its subscription to tenant announcements
/// (`error`): new tenants are found by the periodic look until it is back.
pub fn tenant_watch_down(error: &dyn std::fmt::Display, retry_in_ms: u64) {
    tracing::warn!(target: "redrive::fleet::discovery", error = %error, retry_in_ms, "tenant announcements unavailable; new tenants are found by the periodic look meanwhile");
}

/// The tenant watch is subscribed to tenant announcements (again, `again`).
pub fn tenant_watch_up(again: bool) {
    if again {
        tracing::info!(target: "redrive::fleet::discovery", "tenant announcements subscribed again");
    } else {
        tracing::debug!(target: "redrive::fleet::discovery", "tenant announcements subscribed");
    }
}

/// `n` entries of `tenant` were read from its lane.
pub fn tasks_read(tenant: &str, n: usize) {
    metrics::counter!(names::TASKS_READ, "tenant" => tenant_label(tenant)).increment(n as u64);
}

/// A claim on `lane` (of `tenant`) found `n` pending entries whose data was deleted (n > 0).
pub fn tombstones_found(lane: &str, tenant: &str, n: usize) {
    tracing::error!(target: TARGET, lane = %lane, tombstones = n, "pending entries were deleted before they ran: payloads lost");
    metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(tenant)).increment(n as u64);
}
