//! `redrive run`: a fleet member until SIGTERM or SIGINT, with the /metrics endpoint when
//! `metrics.listen` is set.

use std::sync::Arc;

use clap::Args;

use super::common::init;
use crate::broker::Broker;
use crate::config::{RawConfig, Settings};
use crate::error::Result;
use crate::fleet::Fleet;
use crate::handler::{Handler, NoopHandler};
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

/// Runs `redrive run`: the flags override their settings, then the member runs.
pub async fn run(args: RunArgs, mut raw: RawConfig) -> Result<()> {
    if let Some(v) = args.member_id {
        raw.fleet.member_id = v;
    }
    if let Some(v) = args.concurrency {
        raw.fleet.concurrency = v;
    }
    if let Some(v) = args.handler {
        raw.fleet.handler = v;
    }
    let settings = Settings::from_raw(raw)?;
    init(&settings);
    let broker = Broker::connect(&settings).await?;
    let handler: Arc<dyn Handler> = match settings.fleet.handler.as_str() {
        "noop" => Arc::new(NoopHandler),
        _ => crate::app::demo_agent::handler(settings.demo_agent.clone())?,
    };
    let fleet = Fleet::new(broker, &settings, handler);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    if let Some(addr) = settings.metrics_listen {
        let handle = crate::telemetry::install_prometheus(settings.metrics.refresh_interval * 3)?;
        let listener = crate::telemetry::endpoint::bind(addr).await?;
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %bound, "serving /metrics, /healthz and /readyz");
        tokio::spawn(crate::telemetry::endpoint::serve(
            listener,
            handle,
            fleet.health(),
            shutdown.clone(),
        ));
    }
    fleet.run(shutdown).await
}
