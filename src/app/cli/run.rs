//! `redrive run`: one fleet member with the handler `fleet.handler` names, until SIGTERM or
//! SIGINT.

use clap::Args;

use crate::app::settings::{self, AppRaw};
use crate::broker::Broker;
use crate::error::Result;
use crate::fleet::Fleet;
use crate::shutdown::Shutdown;

/// `redrive run` flags; each overrides its setting.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Overrides fleet.member_id.
    #[arg(long)]
    pub member_id: Option<String>,
    /// Overrides fleet.concurrency.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Overrides fleet.handler.
    #[arg(long)]
    pub handler: Option<String>,
}

/// Applies the flags over the loaded settings, validates them, builds the configured handler
/// from the application's registry (`demo`, `noop`) and runs the member, serving /metrics,
/// /healthz and /readyz when `metrics.listen` is set.
pub async fn run(args: RunArgs, mut raw: AppRaw) -> Result<()> {
    if let Some(v) = args.member_id {
        raw.lib.fleet.member_id = v;
    }
    if let Some(v) = args.concurrency {
        raw.lib.fleet.concurrency = v;
    }
    if let Some(v) = args.handler {
        raw.lib.fleet.handler = v;
    }
    let (settings, app) = settings::validate(raw)?;
    settings::install_logging(&settings);
    let broker = Broker::connect(&settings).await?;
    let handler = settings::handlers(app.demo_agent).resolve(&settings)?;
    let fleet = Fleet::new(broker, &settings, handler);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    settings
        .telemetry()
        .serve_metrics(fleet.health(), shutdown.clone())
        .await?;
    fleet.run(shutdown).await
}
