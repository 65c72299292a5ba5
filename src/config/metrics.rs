//! `[metrics]`: the endpoint's address, tenant label cap and gauge refresh.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};
use crate::telemetry::MetricsSettings;

/// The `[metrics]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Listen address of /metrics, /healthz, /readyz; empty turns them off.
    pub listen: String,
    /// Most distinct tenant label values per metric family.
    pub max_tenant_labels: usize,
    /// How often Redis-derived gauges (depths, retries, dead letters) are refreshed.
    pub refresh_interval_ms: u64,
    /// /readyz fails when neither a read nor a settle happened for this long.
    pub stall_after_ms: u64,
}

/// Validates `[metrics]`: the endpoint's address (`None`: off) and the other settings.
pub(crate) fn validate(raw: &RawMetrics) -> Result<(Option<SocketAddr>, MetricsSettings)> {
    let metrics_listen = if raw.listen.is_empty() {
        None
    } else {
        Some(raw.listen.parse::<SocketAddr>().map_err(|e| {
            Error::Config(format!(
                "metrics.listen = '{}' is not an address like 0.0.0.0:9464: {e}",
                raw.listen
            ))
        })?)
    };

    check_range(
        "metrics.max_tenant_labels",
        raw.max_tenant_labels,
        1,
        10_000,
    )?;
    check_range(
        "metrics.refresh_interval_ms",
        raw.refresh_interval_ms,
        50,
        3_600_000,
    )?;
    check_range(
        "metrics.stall_after_ms",
        raw.stall_after_ms,
        100,
        86_400_000,
    )?;
    let metrics = MetricsSettings {
        max_tenant_labels: raw.max_tenant_labels,
        refresh_interval: Duration::from_millis(raw.refresh_interval_ms),
        stall_after: Duration::from_millis(raw.stall_after_ms),
    };
    Ok((metrics_listen, metrics))
}
