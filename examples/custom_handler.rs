//! A fleet member with its own handler: what an embedder writes instead of `redrive run`.
//!
//! It registers a `summarise` handler type, loads the settings (the built-in defaults, the file in
//! `REDRIVE_CONFIG` if any, then `REDRIVE_<SECTION>__<KEY>` variables), connects to Redis,
//! installs logging and serves /metrics, /healthz and /readyz (when `metrics.listen` is set),
//! and runs until SIGTERM or SIGINT, then stops in order (stop reading, drain, settle).
//!
//! ```text
//! REDRIVE_REDIS_URL=redis://127.0.0.1:6379 REDRIVE_FLEET__HANDLER=summarise \
//! REDRIVE_METRICS__LISTEN=127.0.0.1:9464 cargo run --example custom_handler
//! ```
//!
//! Each task's payload is `{"text": "…"}`; the handler prints one line per summary to standard
//! output (its observable side effect) and records the summary as the attempt's output.

use std::process::ExitCode;
use std::sync::Arc;

use redrive::{
    Broker, FailureClass, Fleet, Handler, HandlerFuture, Handlers, Outcome, Settings, Shutdown,
    Task, TaskContext, Telemetry,
};

/// The payload this handler reads.
#[derive(serde::Deserialize)]
struct Page {
    /// What to summarise.
    text: String,
}

/// Summarises a text by keeping its first words; a real agent would call a model here.
struct Summarise {
    /// Words kept.
    words: usize,
}

impl Handler for Summarise {
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let words = self.words;
        Box::pin(async move {
            let Ok(Page { text }) = task.payload_as::<Page>() else {
                return Outcome::fail(FailureClass::InvalidInput, "payload has no \"text\"");
            };
            let summary: Vec<&str> = text.split_whitespace().take(words).collect();
            let summary = summary.join(" ");
            println!("summarised {} {}: {summary}", task.tenant, task.task_id);
            ctx.output(serde_json::json!({ "summary": summary }));
            Outcome::Done
        })
    }

    /// A success must carry a summary; anything else is a silent failure.
    fn check_output(&self, _task: &Task, output: Option<&serde_json::Value>) -> Result<(), String> {
        match output.and_then(|o| o.get("summary")) {
            Some(_) => Ok(()),
            None => Err("no summary".into()),
        }
    }
}

async fn run() -> redrive::Result<()> {
    // Its own handler type, besides the library's (http, pool, exec).
    let mut handlers = Handlers::new();
    handlers.register_simple("summarise", || Ok(Arc::new(Summarise { words: 8 })));

    let config = std::env::var_os("REDRIVE_CONFIG").map(std::path::PathBuf::from);
    let settings = Settings::load(config.as_deref())?;
    handlers.check(&settings)?;
    let telemetry = Telemetry::install(&settings);
    // Before the fleet: its handlers register their metric series as they are built.
    telemetry.install_metrics()?;

    let broker = Broker::connect(&settings).await?;
    // Routes each task by its kind ([[handlers]], or fleet.handler for every kind).
    let fleet = Fleet::routed(broker, &settings, &handlers)?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    telemetry
        .serve_metrics(fleet.health(), shutdown.clone())
        .await?;
    fleet.run(shutdown).await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
