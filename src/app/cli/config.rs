//! `redrive config check`: validate the effective settings and print them, secrets redacted.

use clap::Subcommand;

use crate::config::{RawConfig, Settings};
use crate::error::Result;

/// `redrive config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the effective settings and print them, secrets redacted.
    Check,
}

/// Runs `redrive config …`.
pub fn run(action: ConfigAction, raw: RawConfig) -> Result<()> {
    match action {
        ConfigAction::Check => {
            let settings = Settings::from_raw(raw)?;
            print!("{}", settings.raw.redacted_toml());
            for w in crate::config::env_warnings() {
                eprintln!("warning: {w}");
            }
            eprintln!("config: ok");
            Ok(())
        }
    }
}
