//! `redrive demo`: the whole product on a private redis-server with a simulated agent.

use clap::Args;

use crate::app::settings::{self, AppRaw};
use crate::error::Result;
use crate::shutdown::Shutdown;

/// `redrive demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Overrides demo.tasks.
    #[arg(long)]
    pub tasks: Option<usize>,
}

/// Runs `redrive demo`, with retries and timeouts short enough to finish in seconds.
pub async fn run(args: DemoArgs, mut raw: AppRaw) -> Result<()> {
    if let Some(v) = args.tasks {
        raw.demo.tasks = v;
    }
    // A demo should finish in seconds: retry after 0.1, 0.3 and 1 s instead of minutes,
    // and run with a task timeout short enough for simulated hangs.
    raw.lib.retry.delays_ms = vec![100, 300, 1000];
    raw.lib.fleet.task_timeout_ms = raw.lib.fleet.task_timeout_ms.min(500);
    // The demo prints its own progress; keep per-task failure logs out of the way.
    if std::env::var_os("RUST_LOG").is_none() && raw.lib.log.level == "info" {
        raw.lib.log.level = "error,redrive::telemetry=off".into();
    }
    let (settings, app) = settings::validate(raw)?;
    settings::install_logging(&settings);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    crate::app::demo::run(settings, app, shutdown)
        .await
        .map(|_| ())
}
