//! `[isolation]` and `[isolation.breaker]`: caps, weights and circuit breakers per tenant.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};
use crate::handler::FailureClass;
use crate::isolation::{BreakerSettings, IsolationSettings, TenantOverride};

/// The `[isolation.breaker]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Whether failures open breakers automatically.
    pub enabled: bool,
    /// Fewest failures in the window that open a breaker.
    pub min_failures: u64,
    /// Lowest failure rate that opens it.
    pub failure_rate: f64,
    /// The failure window.
    pub window_ms: u64,
    /// Time an open breaker holds its tenant before one probe.
    pub cooldown_ms: u64,
    /// Failure classes not counted.
    pub ignore_classes: Vec<String>,
}

/// The `[isolation]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIsolation {
    /// Breaker read / outcome flush / reservation renewal period.
    pub refresh_interval_ms: u64,
    /// Lifetime of a member's reservation without renewal.
    pub slot_ttl_ms: u64,
    /// Default fleet-wide cap per tenant (0: none).
    pub max_in_flight: usize,
    /// Default weight.
    pub weight: u32,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, TenantOverride>,
    /// The circuit breaker.
    pub breaker: RawBreaker,
}

/// Validates `[isolation]`.
pub(crate) fn validate(raw: &RawIsolation) -> Result<IsolationSettings> {
    check_range(
        "isolation.refresh_interval_ms",
        raw.refresh_interval_ms,
        20,
        10_000,
    )?;
    check_range("isolation.slot_ttl_ms", raw.slot_ttl_ms, 1_000, 3_600_000)?;
    if raw.slot_ttl_ms < 4 * raw.refresh_interval_ms {
        return Err(Error::Config(format!(
            "isolation.slot_ttl_ms = {} must be at least 4 × isolation.refresh_interval_ms = {}: \
             members renew their reservations once per refresh, and a late renewal must not let \
             another member take a live member's slots",
            raw.slot_ttl_ms, raw.refresh_interval_ms
        )));
    }
    check_range("isolation.max_in_flight", raw.max_in_flight, 0, 1_000_000)?;
    check_range("isolation.weight", raw.weight, 1, 1_000)?;
    for (tenant, o) in &raw.tenants {
        crate::task::validate_tenant(tenant)
            .map_err(|e| Error::Config(format!("isolation.tenants: {e}")))?;
        if let Some(cap) = o.max_in_flight {
            check_range(
                &format!("isolation.tenants.{tenant}.max_in_flight"),
                cap,
                0,
                1_000_000,
            )?;
        }
        if let Some(w) = o.weight {
            check_range(&format!("isolation.tenants.{tenant}.weight"), w, 1, 1_000)?;
        }
    }
    let b = &raw.breaker;
    check_range(
        "isolation.breaker.min_failures",
        b.min_failures,
        1,
        1_000_000,
    )?;
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err(Error::Config(format!(
            "isolation.breaker.failure_rate = {} must be a fraction above 0 and at most 1 \
             (0.5: half of the attempts in the window failed)",
            b.failure_rate
        )));
    }
    check_range(
        "isolation.breaker.window_ms",
        b.window_ms,
        1_000,
        86_400_000,
    )?;
    check_range(
        "isolation.breaker.cooldown_ms",
        b.cooldown_ms,
        100,
        86_400_000,
    )?;
    let mut ignored = Vec::new();
    for (i, name) in b.ignore_classes.iter().enumerate() {
        let class = FailureClass::parse(name).ok_or_else(|| {
            Error::Config(format!(
                "isolation.breaker.ignore_classes[{i}] = '{name}' is unknown: the classes are {}",
                FailureClass::ALL.map(|c| c.as_str()).join(", ")
            ))
        })?;
        ignored.push(class);
    }
    Ok(IsolationSettings {
        refresh_interval: Duration::from_millis(raw.refresh_interval_ms),
        slot_ttl: Duration::from_millis(raw.slot_ttl_ms),
        max_in_flight: raw.max_in_flight,
        weight: raw.weight,
        tenants: raw.tenants.clone(),
        breaker: BreakerSettings {
            enabled: b.enabled,
            min_failures: b.min_failures,
            failure_rate: b.failure_rate,
            window: Duration::from_millis(b.window_ms),
            cooldown: Duration::from_millis(b.cooldown_ms),
            ignored,
        },
    })
}
