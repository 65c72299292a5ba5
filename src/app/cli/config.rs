//! `redrive config check`: validate the effective settings and print them, secrets redacted.

use clap::Subcommand;

use crate::app::settings::{self, AppRaw};
use crate::error::Result;

/// `redrive config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the effective settings and print them, secrets redacted.
    Check,
}

/// Runs `redrive config …`.
pub fn run(action: ConfigAction, raw: AppRaw) -> Result<()> {
    match action {
        ConfigAction::Check => {
            settings::validate(raw.clone())?;
            print!("{}", raw.redacted_toml());
            for w in settings::env_warnings() {
                eprintln!("warning: {w}");
            }
            eprintln!("config: ok");
            Ok(())
        }
    }
}
