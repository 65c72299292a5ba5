//! `redrive config check`: validate the effective settings and print them and the routing
//! table (`[[handlers]]`), secrets redacted.

use clap::Subcommand;

use crate::app::settings::{self, AppRaw};
use crate::error::Result;

/// `redrive config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the effective settings and print them and the routing table, secrets redacted.
    Check,
}

/// Runs `redrive config …`.
pub fn run(action: ConfigAction, raw: AppRaw) -> Result<()> {
    match action {
        ConfigAction::Check => {
            let (settings, _) = settings::validate(raw.clone())?;
            print!("{}", raw.redacted_toml());
            print!("\n{}", settings.routing_table());
            for w in settings::env_warnings() {
                eprintln!("warning: {w}");
            }
            eprintln!("config: ok");
            Ok(())
        }
    }
}
