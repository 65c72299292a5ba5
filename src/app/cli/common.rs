//! Helpers every subcommand shares: settings and logging, connecting, the admin context of
//! `--local`, sending a command through the admin stream, and printing.

use serde::Serialize;
use serde_json::Value;

pub use crate::app::admin_client::context;
use crate::app::settings::AppRaw;
use crate::broker::Broker;
use crate::config::Settings;
use crate::error::{Error, Result};

/// The validated library settings of `raw` (the application's own sections validated too),
/// with logging, the tenant label cap and the panic hook set up from them.
pub fn settings(raw: AppRaw) -> Result<Settings> {
    let (settings, _) = crate::app::settings::validate(raw)?;
    crate::app::settings::install_logging(&settings);
    Ok(settings)
}

/// A usage error (exit 64).
pub fn usage(m: impl Into<String>) -> Error {
    Error::Usage(m.into())
}

/// Connects to Redis.
pub async fn connect(settings: &Settings) -> Result<Broker> {
    Broker::connect(settings).await
}

/// Prints JSON, pretty.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Prints a report as pretty JSON.
pub fn print_report<T: Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Protocol(format!("encoding the report: {e}")))?;
    println!("{text}");
    Ok(())
}
