//! `redrive health`: health per tenant and overall, read from Redis.

use clap::Args;
use serde_json::Value;

use super::args::window;
use super::common::{connect, print_json, usage};
use crate::app::report;
use crate::config::Settings;
use crate::error::Result;

/// `health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Only this tenant (repeatable; default: every tenant).
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
    /// Window of the completed / recovered / dead-lettered counts (at most 24h).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub window: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `redrive health`.
pub async fn run(a: HealthArgs, settings: &Settings) -> Result<()> {
    let w = window(&a.window)?;
    for t in &a.tenants {
        crate::task::validate_tenant(t).map_err(|e| usage(format!("--tenant: {e}")))?;
    }
    let b = connect(settings).await?;
    let h = report::health(&b, &a.tenants, w, settings.admin.member_ttl).await?;
    if a.json {
        print_json(&serde_json::to_value(&h).unwrap_or(Value::Null));
    } else {
        print!("{}", report::health_text(&h));
    }
    Ok(())
}
