//! `[retry]`: the retry policies and the recovery loop's pace.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};
use crate::policy::{Backoff, Jitter, Policies, PolicyOverride, RetryPolicy};

/// The `[retry]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all.
    pub max_attempts: u32,
    /// "tiered" or "exponential".
    pub backoff: Backoff,
    /// Tier delays.
    pub delays_ms: Vec<u64>,
    /// Exponential base.
    pub base_ms: u64,
    /// Exponential factor.
    pub factor: f64,
    /// Delay cap.
    pub max_delay_ms: u64,
    /// Jitter mode.
    pub jitter: Jitter,
    /// Recovery loop period.
    pub poll_interval_ms: u64,
    /// How often a tenant's schedule is looked at when nothing there is known to be due.
    pub idle_look_ms: u64,
    /// Retries per atomic move.
    pub promote_batch: usize,
    /// Per-kind overrides.
    pub kinds: BTreeMap<String, PolicyOverride>,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, PolicyOverride>,
}

/// Validated `[retry]`.
#[derive(Debug, Clone)]
pub(crate) struct RetrySettings {
    /// The policies (default, per kind, per tenant).
    pub(crate) policies: Policies,
    /// Recovery loop period.
    pub(crate) poll_interval: Duration,
    /// The periodic look at a tenant's schedule when nothing there is known to be due.
    pub(crate) idle_look: Duration,
    /// Retries per atomic move.
    pub(crate) promote_batch: usize,
}

/// Validates `[retry]`.
pub(crate) fn validate(rt: &RawRetry) -> Result<RetrySettings> {
    let default_policy = RetryPolicy {
        max_attempts: rt.max_attempts,
        backoff: rt.backoff.clone(),
        delays: rt
            .delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        base: Duration::from_millis(rt.base_ms),
        factor: rt.factor,
        max_delay: Duration::from_millis(rt.max_delay_ms),
        jitter: rt.jitter,
    };
    let policies = Policies::new(
        default_policy,
        rt.kinds.clone().into_iter().collect(),
        rt.tenants.clone().into_iter().collect(),
    )
    .map_err(Error::Config)?;
    check_range("retry.poll_interval_ms", rt.poll_interval_ms, 10, 3_600_000)?;
    check_range("retry.promote_batch", rt.promote_batch, 1, 1_000)?;
    check_range("retry.idle_look_ms", rt.idle_look_ms, 10, 3_600_000)?;
    if rt.idle_look_ms < rt.poll_interval_ms {
        return Err(Error::Config(format!(
            "retry.idle_look_ms = {} is shorter than retry.poll_interval_ms = {}: the loop \
             cannot look more often than it runs",
            rt.idle_look_ms, rt.poll_interval_ms
        )));
    }
    Ok(RetrySettings {
        policies,
        poll_interval: Duration::from_millis(rt.poll_interval_ms),
        idle_look: Duration::from_millis(rt.idle_look_ms),
        promote_batch: rt.promote_batch,
    })
}
