//! What the reader sees: tenants it starts serving, entries read, and pending entries whose
//! data was deleted before they ran. Logged under the reader's target.

use crate::telemetry::names;
use crate::telemetry::recorder::{register_tenant, tenant_label};

/// The reader's module path, which log filters name.
const TARGET: &str = "redrive::fleet::reader";

/// This member starts serving `tenant`: logged, and the tenant's series registered at 0.
pub fn tenant_served(tenant: &str) {
    tracing::info!(target: TARGET, tenant = %tenant, "serving tenant");
    register_tenant(tenant);
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
