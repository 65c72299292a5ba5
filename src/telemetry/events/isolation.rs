//! Tenant isolation: breaker transitions and states, slot caps, attempt counts, in-flight
//! gauges and the breaker's Redis failures. Logged under `redrive::fleet::isolation`, the
//! target tests/isolation.rs filters on.

use crate::isolation::BreakerState;
use crate::telemetry::events::redis_calls;
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::redis_op::RedisOp;

/// The isolation module's path, which log filters name.
const TARGET: &str = "redrive::fleet::isolation";

/// This member moved `tenant`'s breaker from `from` to `to` for `reason`.
pub fn breaker_transition(tenant: &str, from: &str, to: &str, reason: &str, detail: &str) {
    tracing::warn!(target: TARGET, tenant = %tenant, from, to, reason, detail, "breaker transition");
    metrics::counter!(
        names::BREAKER_TRANSITIONS,
        "tenant" => tenant_label(tenant),
        "from" => from.to_owned(),
        "to" => to.to_owned(),
        "reason" => reason.to_owned()
    )
    .increment(1);
}

/// Publishes whether `tenant`'s breaker is in `state` (1) or not (0).
pub fn breaker_state(tenant: &str, state: BreakerState, on: bool) {
    metrics::gauge!(names::BREAKER_STATE, "tenant" => tenant_label(tenant), "state" => state.as_str())
        .set(if on { 1.0 } else { 0.0 });
}

/// `tenant` was refused some of the slots it asked for (at its in-flight cap).
pub fn tenant_capped(tenant: &str) {
    metrics::counter!(names::TENANT_CAPPED, "tenant" => tenant_label(tenant)).increment(1);
}

/// `n` attempts of `tenant`'s tasks ran since the last report.
pub fn tenant_attempts(tenant: &str, n: u64) {
    metrics::counter!(names::TENANT_ATTEMPTS, "tenant" => tenant_label(tenant)).increment(n);
}

/// `tenant` holds `n` entries in flight on this member.
pub fn tenant_in_flight(tenant: &str, n: usize) {
    metrics::gauge!(names::TENANT_IN_FLIGHT, "tenant" => tenant_label(tenant)).set(n as f64);
}

/// Asking for a probe of `tenant`'s breaker failed; the task is held back.
pub fn probe_ask_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::BreakerProbe);
    tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "cannot ask for a probe; holding the task back");
}

/// Reporting a probe's outcome for `tenant` failed; `gave_up` after the last try.
pub fn probe_report_failed(tenant: &str, error: &crate::Error, gave_up: bool) {
    redis_calls::failed(RedisOp::BreakerProbeDone);
    if gave_up {
        // The probe token expires by itself and another probe decides.
        tracing::error!(target: TARGET, tenant = %tenant, error = %error, "gave up reporting the probe's outcome; the probe token will expire and another probe decide");
    } else {
        tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "cannot report the probe's outcome; retrying");
    }
}

/// Reserving slots for `tenant` failed; the reader reads within the earlier reservation.
pub fn slots_reserve_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Slots);
    tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "cannot reserve slots; reading within the earlier reservation");
}

/// Renewing `tenant`'s in-flight reservation failed.
pub fn slots_renew_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::Slots);
    tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "cannot renew the in-flight reservation");
}

/// Reporting attempt outcomes of `tenant` to its breaker failed (the counts are dropped).
pub fn outcomes_report_failed(tenant: &str, error: &crate::Error) {
    redis_calls::failed(RedisOp::BreakerRecord);
    tracing::warn!(target: TARGET, tenant = %tenant, error = %error, "cannot report attempt outcomes to the breaker");
}

/// Reading the breakers failed; the last view is kept.
pub fn breakers_read_failed(error: &crate::Error) {
    redis_calls::failed(RedisOp::BreakerRead);
    tracing::warn!(target: TARGET, error = %error, "cannot read the breakers; keeping the last view");
}
