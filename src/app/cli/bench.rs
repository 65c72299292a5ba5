//! `redrive bench`: throughput and latency against the raw Redis ceiling of the same run.

use clap::Args;

use crate::app::settings::{self, AppRaw};
use crate::error::{Error, Result};

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
    /// Run on a private Redis Cluster of 3 masters the bench starts itself (redis.url must be
    /// unset); the `idle` scenario then says each master's round trips.
    #[arg(long)]
    pub cluster: bool,
    /// Serve the bench's HTTP agent on this address instead (the bench starts it as a child
    /// process for its http scenarios).
    #[arg(long, hide = true, value_name = "ADDR")]
    pub serve_agent: Option<String>,
}

/// Runs `redrive bench` and prints its report (a table, or JSON).
pub async fn run(args: BenchArgs, mut raw: AppRaw) -> Result<()> {
    if let Some(addr) = &args.serve_agent {
        return crate::app::bench_agent::serve(addr).await;
    }
    if std::env::var_os("RUST_LOG").is_none() && raw.lib.log.level == "info" {
        raw.lib.log.level = "error".into();
    }
    let (settings, _) = settings::validate(raw)?;
    settings::install_logging(&settings);
    if cfg!(debug_assertions) {
        eprintln!("bench: this is a debug build; build with --release for meaningful figures");
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
        cluster: args.cluster,
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
