//! `[log]`: format, filter, whether payloads may be logged, and the storm interval (how long
//! repeated lines of one cause are summarised instead of written one by one).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};
use crate::telemetry::LogFormat;

/// The `[log]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "human" or "json".
    pub format: String,
    /// tracing filter directive.
    pub level: String,
    /// Whether payloads may be logged.
    pub log_payloads: bool,
    /// Window of storm-proof logging, ms: within it only the first line of each cause is
    /// written, the rest summarised; 0 writes every line.
    pub storm_interval_ms: u64,
}

/// Validated `[log]`.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    /// Log format.
    pub(crate) format: LogFormat,
    /// Log filter (a valid tracing directive).
    pub(crate) level: String,
    /// Whether payloads may be logged.
    pub(crate) payloads: bool,
    /// Window of storm-proof logging (zero: every line is written).
    pub(crate) storm_interval: Duration,
}

/// The shortest storm interval, ms (besides 0, off): shorter windows would write a summary
/// line for nearly every suppressed one.
const MIN_STORM_INTERVAL_MS: u64 = 100;

/// Validates `[log]`: a known format, a filter tracing accepts, and a storm interval of 0 (off)
/// or 100 ms to an hour.
pub(crate) fn validate(raw: &RawLog) -> Result<LogSettings> {
    let format = match raw.format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            return Err(Error::Config(format!(
                "log.format = '{other}' is unknown: use \"human\" or \"json\""
            )))
        }
    };
    tracing_subscriber::EnvFilter::try_new(&raw.level).map_err(|e| {
        Error::Config(format!(
            "log.level = '{}' is not a valid filter: {e}",
            raw.level
        ))
    })?;
    if raw.storm_interval_ms != 0 {
        check_range(
            "log.storm_interval_ms (0 turns summaries off)",
            raw.storm_interval_ms,
            MIN_STORM_INTERVAL_MS,
            3_600_000,
        )?;
    }
    Ok(LogSettings {
        format,
        level: raw.level.clone(),
        payloads: raw.log_payloads,
        storm_interval: Duration::from_millis(raw.storm_interval_ms),
    })
}
