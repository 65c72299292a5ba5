//! `[reclaim]`: taking over entries of crashed or frozen members.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::Result;

/// The `[reclaim]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReclaim {
    /// Idle time before an entry is reclaimed.
    pub min_idle_ms: u64,
    /// Scan period.
    pub interval_ms: u64,
    /// Entries per claim step.
    pub batch: usize,
    /// Poison threshold on deliveries.
    pub max_deliveries: u64,
    /// Whether members heartbeat their entries.
    pub heartbeat: bool,
}

/// Validated reclaim settings.
#[derive(Debug, Clone)]
pub struct ReclaimSettings {
    /// Idle time before an entry is reclaimed.
    pub min_idle: Duration,
    /// Scan period.
    pub interval: Duration,
    /// Entries per claim step.
    pub batch: usize,
    /// Poison threshold on deliveries.
    pub max_deliveries: u64,
    /// Whether members heartbeat their entries.
    pub heartbeat: bool,
}

/// Validates `[reclaim]` on its own (its rule against the task timeout is
/// [`super::rules::reclaim_outlasts_attempts`]).
pub(crate) fn validate(rc: &RawReclaim) -> Result<ReclaimSettings> {
    check_range("reclaim.min_idle_ms", rc.min_idle_ms, 100, 86_400_000)?;
    check_range("reclaim.interval_ms", rc.interval_ms, 10, 3_600_000)?;
    check_range("reclaim.batch", rc.batch, 1, 1_000)?;
    check_range("reclaim.max_deliveries", rc.max_deliveries, 2, 1_000)?;
    Ok(ReclaimSettings {
        min_idle: Duration::from_millis(rc.min_idle_ms),
        interval: Duration::from_millis(rc.interval_ms),
        batch: rc.batch,
        max_deliveries: rc.max_deliveries,
        heartbeat: rc.heartbeat,
    })
}
