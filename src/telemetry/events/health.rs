//! The health loop's reports: readiness, memory refusals, stream depths and its Redis
//! failures. Logged under the health loop's target.

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::redis_op::RedisOp;

/// The health loop's module path, which log filters name.
const TARGET: &str = "redrive::fleet::health";

/// Reading the tenant depths failed.
pub fn depths_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::Depths);
    tracing::warn!(target: TARGET, error = %error, "cannot read tenant depths");
}

/// Probing whether Redis accepts writes failed.
pub fn oom_probe_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::OomProbe);
    tracing::debug!(target: TARGET, error = %error, "cannot probe whether redis accepts writes");
}

/// The member's state after a health step: whether Redis refuses writes for memory and
/// whether the member is ready. Also keeps the build-info, in-flight and agent-processes
/// series present.
pub fn readiness(redis_oom: bool, ready: bool) {
    metrics::gauge!(names::REDIS_OOM).set(if redis_oom { 1.0 } else { 0.0 });
    metrics::gauge!(names::READY).set(if ready { 1.0 } else { 0.0 });
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!(names::IN_FLIGHT).increment(0.0);
    super::agent_process::publish_process_counts();
}

/// One depth gauge (`name`, one of the per-tenant depth metrics of [`names`]) for the label
/// value `tenant` (a tenant among the top ones, or `__other__` for the rest).
pub fn tenant_depth(name: &'static str, tenant: String, value: u64) {
    metrics::gauge!(name, "tenant" => tenant).set(value as f64);
}

/// The age (seconds) of `tenant`'s oldest dead letter nobody owns (0 when none), or of the
/// oldest among the tenants past the label cap for `__other__`.
pub fn unowned_age(tenant: String, secs: u64) {
    metrics::gauge!(names::DLQ_UNOWNED_AGE, "tenant" => tenant).set(secs as f64);
}

/// Looking for the oldest unowned dead letters failed.
pub fn unowned_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::Depths);
    tracing::warn!(target: TARGET, error = %error, "cannot look for the oldest unowned dead letters");
}
