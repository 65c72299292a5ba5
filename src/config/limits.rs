//! `[limits]` and `[dead_letter]`: what a task may weigh, and how many dead letters are kept.

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::Result;
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
    /// Approximate cap of each tenant's dead-letter stream.
    pub max_len: u64,
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
    check_range("dead_letter.max_len", raw.max_len, 1, u64::MAX)?;
    Ok(raw.max_len)
}
