//! `[fleet]`: how a member reads, runs and settles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{check_ident, check_range};
use super::reclaim::ReclaimSettings;
use super::retry::RetrySettings;
use crate::error::{Error, Result};

/// The `[fleet]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// Consumer name; empty means the host name.
    pub member_id: String,
    /// Consumer group name.
    pub group: String,
    /// Shorthand for one catch-all `[[handlers]]` entry of this type; empty when not set.
    pub handler: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Largest read.
    pub read_batch: usize,
    /// Block time of idle reads.
    pub block_ms: u64,
    /// Per-task timeout.
    pub task_timeout_ms: u64,
    /// Shutdown grace period.
    pub shutdown_grace_ms: u64,
    /// Largest ack batch.
    pub ack_batch: usize,
    /// Registry check period.
    pub discovery_interval_ms: u64,
    /// Hear producers' announcements of new tenants.
    pub tenant_signals: bool,
    /// Lanes per read.
    pub max_lanes_per_read: usize,
    /// Member lease time to live.
    pub lease_ttl_ms: u64,
}

/// Validated fleet settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Consumer name (resolved: never empty).
    pub member_id: String,
    /// Consumer group name.
    pub group: String,
    /// Shorthand for one catch-all handler entry of this type; empty when not set.
    pub handler: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Largest read.
    pub read_batch: usize,
    /// Block time of idle reads.
    pub block: Duration,
    /// Per-task timeout.
    pub task_timeout: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Largest ack batch.
    pub ack_batch: usize,
    /// Registry check period.
    pub discovery_interval: Duration,
    /// Whether the member subscribes to producers' announcements of new tenants.
    pub tenant_signals: bool,
    /// Lanes per read.
    pub max_lanes_per_read: usize,
    /// Member lease TTL.
    pub lease_ttl: Duration,
    /// Reclaim of stale entries.
    pub reclaim: ReclaimSettings,
    /// Recovery loop period.
    pub retry_poll_interval: Duration,
    /// The periodic look at a tenant's retry schedule when nothing there is known to be due.
    pub retry_idle_look: Duration,
    /// Retries per atomic move.
    pub promote_batch: usize,
}

/// The host name, sanitised into a valid member id, or "redrive" when it cannot be read.
pub fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "redrive".to_owned()
    } else {
        cleaned
    }
}

/// Validates `[fleet]` and joins it with the member's share of the validated `[reclaim]` and
/// `[retry]` sections. The handler name is not checked here: which names exist is up to the
/// embedder's [`crate::handler::Handlers`] (see [`crate::handler::Handlers::check`]).
pub(crate) fn validate(
    f: &RawFleet,
    reclaim: ReclaimSettings,
    retry: &RetrySettings,
) -> Result<FleetSettings> {
    let member_id = if f.member_id.is_empty() {
        default_member_id()
    } else {
        f.member_id.clone()
    };
    check_ident("fleet.member_id", &member_id, &[])?;
    check_ident("fleet.group", &f.group, &[])?;
    check_range("fleet.concurrency", f.concurrency, 1, 100_000)?;
    check_range("fleet.read_batch", f.read_batch, 1, 10_000)?;
    check_range("fleet.block_ms", f.block_ms, 10, 60_000)?;
    check_range("fleet.task_timeout_ms", f.task_timeout_ms, 1, 86_400_000)?;
    check_range("fleet.shutdown_grace_ms", f.shutdown_grace_ms, 0, 3_600_000)?;
    check_range("fleet.ack_batch", f.ack_batch, 1, 5_000)?;
    check_range(
        "fleet.discovery_interval_ms",
        f.discovery_interval_ms,
        10,
        3_600_000,
    )?;
    check_range("fleet.max_lanes_per_read", f.max_lanes_per_read, 1, 1_000)?;
    check_range("fleet.lease_ttl_ms", f.lease_ttl_ms, 1_000, 3_600_000)?;
    if f.block_ms >= f.shutdown_grace_ms {
        return Err(Error::Config(format!(
            "fleet.block_ms = {} must be shorter than fleet.shutdown_grace_ms = {}: a blocked read \
             has to return before the shutdown grace period ends",
            f.block_ms, f.shutdown_grace_ms
        )));
    }
    Ok(FleetSettings {
        member_id,
        group: f.group.clone(),
        handler: f.handler.clone(),
        concurrency: f.concurrency,
        read_batch: f.read_batch,
        block: Duration::from_millis(f.block_ms),
        task_timeout: Duration::from_millis(f.task_timeout_ms),
        shutdown_grace: Duration::from_millis(f.shutdown_grace_ms),
        ack_batch: f.ack_batch,
        discovery_interval: Duration::from_millis(f.discovery_interval_ms),
        tenant_signals: f.tenant_signals,
        max_lanes_per_read: f.max_lanes_per_read,
        lease_ttl: Duration::from_millis(f.lease_ttl_ms),
        reclaim,
        retry_poll_interval: retry.poll_interval,
        retry_idle_look: retry.idle_look,
        promote_batch: retry.promote_batch,
    })
}
