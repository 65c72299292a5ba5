//! `[limits]` and `[dead_letter]`: what a task may weigh, and how many dead letters are kept
//! in Redis and for how long before they go to the archive.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::archive::Retention;
use crate::error::{Error, Result};
use crate::task::Limits;

/// The `[limits]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest payload in bytes.
    pub max_payload_bytes: usize,
}

/// The `[dead_letter]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// The cap of each tenant's dead-letter stream: the oldest beyond it are archived, then
    /// removed from Redis.
    pub max_len: u64,
    /// An optional hard ceiling: while the archive cannot be written (or is off), a stream
    /// grows past the cap up to this; beyond it the oldest are deleted without an archive,
    /// counted loudly. 0 (the default): no ceiling — nothing leaves Redis unarchived.
    #[serde(default)]
    pub hard_max_len: u64,
    /// How long a dead letter stays in Redis before it is archived, ms; 0: until handled.
    #[serde(default)]
    pub retention_ms: u64,
    /// How long resolved and discarded dead letters stay in Redis before they are archived, ms.
    #[serde(default = "default_removed_grace")]
    pub removed_grace_ms: u64,
    /// Per-tenant overrides of `retention_ms`.
    #[serde(default)]
    pub tenants: BTreeMap<String, RawDeadLetterTenant>,
}

/// One tenant's `[dead_letter.tenants.<tenant>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetterTenant {
    /// How long the tenant's dead letters stay in Redis before they are archived, ms; 0: until
    /// handled.
    pub retention_ms: u64,
}

fn default_removed_grace() -> u64 {
    86_400_000
}

/// Validates `[limits]`.
pub(crate) fn validate(raw: &RawLimits) -> Result<Limits> {
    check_range(
        "limits.max_payload_bytes",
        raw.max_payload_bytes,
        1,
        16 * 1024 * 1024,
    )?;
    Ok(Limits {
        max_payload_bytes: raw.max_payload_bytes,
    })
}

/// Validates `[dead_letter]`: the cap of each tenant's dead-letter stream.
pub(crate) fn validate_dead_letter(raw: &RawDeadLetter) -> Result<u64> {
    check_range("dead_letter.max_len", raw.max_len, 1, u64::MAX / 4)?;
    Ok(raw.max_len)
}

/// Validates `[dead_letter]` as a whole: cap, hard ceiling, retention, grace.
pub(crate) fn validate_retention(raw: &RawDeadLetter) -> Result<Retention> {
    let max_len = validate_dead_letter(raw)?;
    let hard_max_len = match raw.hard_max_len {
        // No ceiling: the scripts compare lengths with it, and no stream reaches this.
        0 => u64::MAX,
        n if n < max_len => {
            return Err(Error::Config(format!(
                "dead_letter.hard_max_len = {n} is below dead_letter.max_len = {max_len}: the hard \
                 ceiling (where the oldest are deleted without an archive) must be at least the cap"
            )))
        }
        n => n,
    };
    let retention = |setting: &str, ms: u64| -> Result<Option<Duration>> {
        if ms == 0 {
            return Ok(None);
        }
        check_range(setting, ms, 1_000, 10 * 365 * 86_400_000)?;
        Ok(Some(Duration::from_millis(ms)))
    };
    let mut tenants = BTreeMap::new();
    for (t, o) in &raw.tenants {
        crate::task::validate_tenant(t)
            .map_err(|e| Error::Config(format!("dead_letter.tenants: {e}")))?;
        tenants.insert(
            t.clone(),
            retention(
                &format!("dead_letter.tenants.{t}.retention_ms"),
                o.retention_ms,
            )?,
        );
    }
    check_range(
        "dead_letter.removed_grace_ms",
        raw.removed_grace_ms,
        0,
        10 * 365 * 86_400_000,
    )?;
    Ok(Retention {
        max_len,
        hard_max_len,
        retention: retention("dead_letter.retention_ms", raw.retention_ms)?,
        tenants,
        removed_grace: Duration::from_millis(raw.removed_grace_ms),
    })
}
