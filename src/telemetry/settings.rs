//! The telemetry settings the config builds.

use std::time::Duration;

/// Metrics and health settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsSettings {
    /// Most distinct tenant label values per metric family (the rest are `__other__`).
    pub max_tenant_labels: usize,
    /// Refresh period of the Redis-derived gauges (and of the Redis reachability check).
    pub refresh_interval: Duration,
    /// No read and no settle for this long (with work waiting) makes the member not ready.
    pub stall_after: Duration,
}
