//! `redrive run`: one fleet member routing tasks by kind to the handlers `[[handlers]]` (or the
//! shorthand `fleet.handler`) configures, until SIGTERM or SIGINT. Without a handler it refuses
//! to start (exit 78) and says how to configure one.

use clap::Args;

use crate::app::settings::{self, AppRaw};
use crate::broker::Broker;
use crate::error::{Error, Result};
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
    /// Sets fleet.handler: one handler type for every kind (not together with [[handlers]]).
    #[arg(long)]
    pub handler: Option<String>,
}

/// Applies the flags over the loaded settings, validates them, refuses to start without a
/// handler, builds the routes from the application's registry (`demo`, `noop`) and the
/// library's types, and runs the member, serving /metrics, /healthz and /readyz when
/// `metrics.listen` is set, and the HTTP API when `serve.enabled` is.
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
    if settings.handlers().is_empty() {
        return Err(Error::Config(crate::config::handlers::no_handler_message()));
    }
    settings::install_logging(&settings);
    // Before the handlers are built: they register their series as they are.
    let telemetry = settings.telemetry();
    telemetry.install_metrics()?;
    let broker = Broker::connect(&settings).await?;
    let fleet = Fleet::routed(
        broker.clone(),
        &settings,
        &settings::handlers(app.demo_agent),
    )?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    telemetry
        .serve_metrics(fleet.health(), shutdown.clone())
        .await?;
    let api = if app.serve.enabled {
        Some(crate::app::serve::start(&settings, &app.serve, broker, shutdown.clone()).await?)
    } else {
        None
    };
    let result = fleet.run(shutdown).await;
    if let Some(api) = api {
        api.stopped(std::time::Duration::from_secs(2)).await;
    }
    result
}
