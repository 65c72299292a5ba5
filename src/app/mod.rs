//! The `redrive` application on top of the library: the command line, the demo and its
//! simulated agent, the benchmark, and the operators' reports. Compiled with the `app`
//! feature (the default); the library never imports it.
//!
//! # Layout
//!
//! * [`cli`] — clap parsing and dispatch, one file per subcommand family ([`cli::dlq`],
//!   [`cli::health`], [`cli::admin`], [`cli::breaker`], [`cli::tenants`], [`cli::run`](mod@cli::run), …).
//! * [`admin_client`] — the sending side of the admin command stream (CLI and API): fleet
//!   check, submit, wait, withdraw; [`changes`] — what a change selects, built alike by both.
//! * [`report`] — `dlq list|stats|export` and `health`; [`tenants`](mod@tenants) — the tenants
//!   report; [`view`] — a dead letter and a task record as text/JSON.
//! * [`serve`] — `redrive serve`: the versioned JSON API over HTTP, with tokens, roles and
//!   tenant scope.
//! * [`enqueue`] — JSON Lines input of `redrive enqueue --file`.
//! * [`demo`] — `redrive demo`; [`demo_agent`] — the simulated agent it runs.
//! * [`bench`](mod@bench) — `redrive bench`; [`bench_agent`] — the HTTP agent its http
//!   scenarios run in a child process; [`bench_logs`] — the log counter of `log-volume`;
//!   [`bench_api`] — the `api-load` scenario (the HTTP API over 100,000 dead letters).
//! * [`settings`] — the application's own sections (`[demo]`, `[demo_agent]`) and the handlers
//!   `fleet.handler` may name.

pub(crate) mod admin_client;
pub(crate) mod bench;
pub(crate) mod bench_agent;
pub(crate) mod bench_api;
pub(crate) mod bench_cost;
pub(crate) mod bench_logs;
pub(crate) mod bench_python;
pub(crate) mod changes;
pub(crate) mod cli;
pub(crate) mod demo;
pub(crate) mod demo_agent;
pub(crate) mod enqueue;
pub(crate) mod report;
pub(crate) mod serve;
pub(crate) mod settings;
pub(crate) mod tenants;
pub(crate) mod view;

use clap::Parser;

/// Parses the command line, runs it on a multi-threaded runtime and exits with the error's
/// exit code (0 on success).
pub fn run() {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    };
    if let Err(e) = runtime.block_on(cli::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
