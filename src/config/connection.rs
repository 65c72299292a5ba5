//! `[redis]`: the connection (named `connection`, as only `src/broker/` names the Redis client).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{check_ident, check_range};
use crate::broker::{check_url, redact_url, RedisSettings};
use crate::error::{Error, Result};

/// The `[redis]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Connection URL; empty means not configured.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Timeout of non-blocking commands.
    pub response_timeout_ms: u64,
}

/// Validates `[redis]`: an empty URL means "not configured"; any other must parse.
pub(crate) fn validate(r: &RawRedis) -> Result<RedisSettings> {
    let url = if r.url.trim().is_empty() {
        None
    } else {
        check_url(&r.url).map_err(|e| {
            Error::Config(format!(
                "redis.url = '{}' is not a valid Redis URL: {e}",
                redact_url(&r.url)
            ))
        })?;
        Some(r.url.clone())
    };
    check_ident("redis.key_prefix", &r.key_prefix, &[':'])?;
    check_range(
        "redis.connect_timeout_ms",
        r.connect_timeout_ms,
        10,
        600_000,
    )?;
    check_range(
        "redis.response_timeout_ms",
        r.response_timeout_ms,
        10,
        600_000,
    )?;
    Ok(RedisSettings {
        url,
        key_prefix: r.key_prefix.clone(),
        connect_timeout: Duration::from_millis(r.connect_timeout_ms),
        response_timeout: Duration::from_millis(r.response_timeout_ms),
    })
}
