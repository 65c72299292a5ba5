//! Tenant notifications: deliveries, retries, give-ups and the outbox as the delivering member
//! sees it. Lines keep the notifier's target, `redrive::fleet::notifier`; none carries a URL
//! or a secret (the target is named by its name, the receiver by its endpoint).

use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;

/// The notifier's module path, which log filters name.
const TARGET: &str = "redrive::fleet::notifier";

/// The event types a tenant's series are registered for at 0.
const KINDS: [&str; 4] = [
    "dead_lettered",
    "escalated",
    "breaker_opened",
    "breaker_closed",
];

/// A tenant's notification series at 0, so `increase()` sees their first events.
pub fn registered(tenant: &str) {
    let t = tenant_label(tenant);
    for k in KINDS {
        metrics::counter!(names::NOTIFY_SENT, "tenant" => t.clone(), "event" => k).increment(0);
        metrics::counter!(names::NOTIFY_FAILED, "tenant" => t.clone(), "event" => k).increment(0);
    }
    metrics::counter!(names::NOTIFY_RETRIES, "tenant" => t.clone()).increment(0);
    metrics::counter!(names::NOTIFY_RATE_LIMITED, "tenant" => t).increment(0);
}

/// An event reached a target (2xx).
pub fn sent(tenant: &str, target: &str, kind: &str, event: &str, status: u16) {
    metrics::counter!(names::NOTIFY_SENT, "tenant" => tenant_label(tenant), "event" => kind.to_owned())
        .increment(1);
    tracing::debug!(target: TARGET, tenant = %tenant, notify_target = %target, event = %event, kind = %kind, status, "notification delivered");
}

/// An attempt failed; it is tried again after `delay_ms`.
pub fn retry(
    tenant: &str,
    target: &str,
    endpoint: &str,
    kind: &str,
    attempt: u32,
    delay_ms: u64,
    why: &str,
) {
    metrics::counter!(names::NOTIFY_RETRIES, "tenant" => tenant_label(tenant)).increment(1);
    tracing::info!(target: TARGET, tenant = %tenant, notify_target = %target, endpoint = %endpoint, kind = %kind, attempt, retry_in_ms = delay_ms, error = %why, "notification attempt failed; tried again later");
}

/// An event was given up after its last attempt (the delivery log says `failed`).
pub fn failed(tenant: &str, target: &str, endpoint: &str, kind: &str, event: &str, why: &str) {
    metrics::counter!(names::NOTIFY_FAILED, "tenant" => tenant_label(tenant), "event" => kind.to_owned())
        .increment(1);
    tracing::warn!(target: TARGET, tenant = %tenant, notify_target = %target, endpoint = %endpoint, event = %event, kind = %kind, error = %why, "notification given up after its last attempt (see `redrive notify log`)");
}

/// Events waited because the tenant's rate was used up.
pub fn rate_limited(tenant: &str) {
    metrics::counter!(names::NOTIFY_RATE_LIMITED, "tenant" => tenant_label(tenant)).increment(1);
}

/// The tenant's outbox as its delivering member saw it: events waiting, the oldest's age.
pub fn outbox(tenant: &str, depth: u64, oldest_age_secs: u64) {
    let t = tenant_label(tenant);
    metrics::gauge!(names::NOTIFY_OUTBOX_DEPTH, "tenant" => t.clone()).set(depth as f64);
    metrics::gauge!(names::NOTIFY_OUTBOX_AGE, "tenant" => t).set(oldest_age_secs as f64);
}

/// A tick or an ack on a tenant's outbox failed; the next tick tries again.
pub fn redis_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Notify);
    tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "notification delivery step failed; retried next tick");
}

/// The notifier started: which tenants it delivers for.
pub fn started(tenants: usize, targets: usize) {
    tracing::info!(target: TARGET, tenants, targets, "tenant notifications: delivering");
}

/// A stopping member gave up `n` tenants' delivery leases.
pub fn released(n: usize) {
    if n > 0 {
        tracing::info!(target: TARGET, tenants = n, "notification delivery leases given up");
    }
}
