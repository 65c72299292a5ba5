//! `[log]`: format, filter and whether payloads may be logged.

use serde::{Deserialize, Serialize};

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
}

/// Validates `[log]`: a known format and a filter tracing accepts.
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
    Ok(LogSettings {
        format,
        level: raw.level.clone(),
        payloads: raw.log_payloads,
    })
}
