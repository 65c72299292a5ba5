//! The command line: clap parses raw arguments, then each command turns them into validated
//! settings and runs. `main.rs` only maps the returned error to an exit code.

pub mod admin;
pub mod isolation;
mod run;

pub use run::RunArgs;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::enqueue::parse_jsonl;
use crate::app::settings::{self, AppRaw};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::NewTask;

/// redrive: a worker fleet on Redis Streams that keeps AI-agent tasks from vanishing.
#[derive(Debug, Parser)]
#[command(name = "redrive", version, about, long_about = None)]
pub struct Cli {
    /// A TOML config file layered over the built-in defaults.
    #[arg(long, global = true, env = "REDRIVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a fleet member until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Publish tasks: one from flags, or many from a JSON Lines file (the whole file or
    /// nothing: one transaction).
    Enqueue(EnqueueArgs),
    /// Run the whole product on a private redis-server with a simulated agent.
    Demo(DemoArgs),
    /// Measure throughput and latency against the raw Redis ceiling of the same run.
    Bench(BenchArgs),
    /// Open or close a tenant's circuit breaker by hand.
    Breaker {
        /// What to do.
        #[command(subcommand)]
        action: crate::app::cli::isolation::BreakerAction,
    },
    /// Every tenant: lane depth, pending, scheduled retries, dead letters, in-flight, breaker.
    Tenants(crate::app::cli::isolation::TenantsArgs),
    /// Inspect configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Triage and recover dead letters: list, show, stats, export, replay, resolve, discard,
    /// purge, cancel.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        action: crate::app::cli::admin::DlqCommand,
    },
    /// Health per tenant and overall: lane depth, pending, retries, dead letters, recent counts.
    Health(crate::app::cli::admin::HealthArgs),
    /// The admin command trail: the audit log and one command's status.
    Admin {
        /// What to look at.
        #[command(subcommand)]
        action: crate::app::cli::admin::AdminAction,
    },
}

/// `redrive config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the effective settings and print them, secrets redacted.
    Check,
}

/// `redrive enqueue` flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["file", "tenant"]))]
pub struct EnqueueArgs {
    /// JSON Lines file of tasks ("-" for standard input); each line like
    /// {"tenant":"acme","kind":"triage","payload":{...}}; blank lines are skipped. Every line is
    /// checked first, then the whole file is written in one transaction: all tasks or none
    /// (errors name the file's line; a full Redis writes nothing and says so, exit 73).
    #[arg(long, conflicts_with_all = ["tenant", "kind", "payload", "task_id"])]
    pub file: Option<PathBuf>,
    /// The task's tenant.
    #[arg(long, requires_all = ["kind", "payload"])]
    pub tenant: Option<String>,
    /// The task's kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// The task's payload, a JSON document.
    #[arg(long)]
    pub payload: Option<String>,
    /// Idempotency key (generated when absent).
    #[arg(long)]
    pub task_id: Option<String>,
    /// Payload schema version.
    #[arg(long)]
    pub schema_version: Option<u32>,
    /// Prompt version.
    #[arg(long)]
    pub prompt_version: Option<String>,
    /// Trace id.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Deadline, ms since the Unix epoch.
    #[arg(long)]
    pub deadline: Option<u64>,
}

/// `redrive demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Overrides demo.tasks.
    #[arg(long)]
    pub tasks: Option<usize>,
}

/// `redrive bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Tasks per throughput scenario.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1_000..=10_000_000))]
    pub tasks: u64,
    /// Offered rate of the e2e-rate scenario, tasks/s.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,
    /// How long the e2e-rate scenario offers load, seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub rate_seconds: u64,
    /// Runs of each throughput scenario (raw, drain, failure); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub repeat: u64,
    /// fleet.concurrency of the benchmarked member.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// fleet.read_batch of the benchmarked member.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub read_batch: u64,
    /// Scenarios to run (repeat or comma-separate); all when absent. The raw ceiling always runs.
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub scenarios: Vec<crate::app::bench::Scenario>,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let mut raw = AppRaw::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => {
            settings::validate(raw.clone())?;
            print!("{}", raw.redacted_toml());
            for w in settings::env_warnings() {
                eprintln!("warning: {w}");
            }
            eprintln!("config: ok");
            Ok(())
        }
        Command::Run(args) => run::run(args, raw).await,
        Command::Breaker { action } => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            crate::app::cli::isolation::run_breaker(action, &settings).await
        }
        Command::Tenants(args) => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            crate::app::cli::isolation::run_tenants(args, &settings).await
        }
        Command::Enqueue(args) => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            let tasks = enqueue_input(&args)?;
            let broker = Broker::connect(&settings).await?;
            let producer = Producer::new(broker, &settings);
            let n = tasks.len();
            let out = producer.enqueue_all(tasks).await?;
            if n == 1 && out.len() == 1 {
                println!("{} {}", out[0].task_id, out[0].entry_id);
            } else {
                println!("enqueued {n} tasks");
            }
            Ok(())
        }
        Command::Dlq { action } => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            crate::app::cli::admin::run_dlq(action, &settings).await
        }
        Command::Health(args) => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            crate::app::cli::admin::run_health(args, &settings).await
        }
        Command::Admin { action } => {
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            crate::app::cli::admin::run_admin(action, &settings).await
        }
        Command::Demo(args) => {
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
        Command::Bench(args) => {
            if std::env::var_os("RUST_LOG").is_none() && raw.lib.log.level == "info" {
                raw.lib.log.level = "error".into();
            }
            let (settings, _) = settings::validate(raw)?;
            settings::install_logging(&settings);
            if cfg!(debug_assertions) {
                eprintln!(
                    "bench: this is a debug build; build with --release for meaningful figures"
                );
            }
            let opts = crate::app::bench::BenchOptions {
                tasks: args.tasks as usize,
                rate: args.rate,
                rate_seconds: args.rate_seconds,
                repeat: args.repeat as usize,
                concurrency: args.concurrency as usize,
                read_batch: args.read_batch as usize,
                scenarios: if args.scenarios.is_empty() {
                    crate::app::bench::Scenario::ALL.to_vec()
                } else {
                    args.scenarios
                },
            };
            let report = crate::app::bench::run(&settings, opts).await?;
            if args.json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| Error::Protocol(format!("encoding the report: {e}")))?;
                println!("{text}");
            } else {
                print!("{}", crate::app::bench::render(&report));
            }
            Ok(())
        }
    }
}

/// The tasks to enqueue, each with its 1-based line number in `--file` (1 for flags).
fn enqueue_input(args: &EnqueueArgs) -> Result<Vec<(usize, NewTask)>> {
    if let Some(path) = &args.file {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::io("reading tasks from standard input", e))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        };
        let tasks = parse_jsonl(&text)?;
        if tasks.is_empty() {
            return Err(Error::InvalidTask(format!(
                "{} holds no tasks",
                path.display()
            )));
        }
        return Ok(tasks);
    }
    let (Some(tenant), Some(kind), Some(payload)) = (&args.tenant, &args.kind, &args.payload)
    else {
        return Err(Error::Usage(
            "give --file, or --tenant, --kind and --payload".into(),
        ));
    };
    let payload: serde_json::Value = serde_json::from_str(payload)
        .map_err(|e| Error::InvalidTask(format!("--payload is not valid JSON: {e}")))?;
    let mut t = NewTask::new(tenant.clone(), kind.clone(), payload);
    t.task_id = args.task_id.clone();
    t.schema_version = args.schema_version;
    t.prompt_version = args.prompt_version.clone();
    t.trace_id = args.trace_id.clone();
    t.deadline = args.deadline;
    Ok(vec![(1, t)])
}
