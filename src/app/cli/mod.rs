//! The command line: clap parses raw arguments, then each command turns them into validated
//! settings and runs. `main.rs` only maps the returned error to an exit code.
//!
//! This file is the clap root and the dispatch; each subcommand family has its own file, with
//! its flags and its code. [`args`] holds the flags several of them share, [`common`] the
//! helpers (settings and logging, connecting, printing), [`submit`] sending a change through
//! the admin command stream.

pub mod admin;
pub mod args;
pub mod bench;
pub mod breaker;
pub mod common;
pub mod config;
pub mod demo;
pub mod dlq;
pub mod dlq_archive;
pub mod enqueue;
pub mod health;
pub mod notify;
pub mod run;
pub mod serve;
pub mod submit;
pub mod task;
pub mod tenants;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::settings::AppRaw;
use crate::error::Result;

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
    Run(run::RunArgs),
    /// Publish tasks: one from flags, or many from a JSON Lines file (the whole file or
    /// nothing: one transaction).
    Enqueue(enqueue::EnqueueArgs),
    /// Run the whole product on a private redis-server with a simulated agent.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency against the raw Redis ceiling of the same run.
    Bench(bench::BenchArgs),
    /// Open or close a tenant's circuit breaker by hand.
    Breaker {
        /// What to do.
        #[command(subcommand)]
        action: breaker::BreakerAction,
    },
    /// Every tenant: lane depth, pending, scheduled retries, dead letters, in-flight, breaker.
    Tenants(tenants::TenantsArgs),
    /// Inspect configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: config::ConfigAction,
    },
    /// Triage, review and recover dead letters: list, show, stats, export, replay, resolve,
    /// discard, purge, cancel, assign, escalate, note, fold.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        action: Box<dlq::DlqCommand>,
    },
    /// What happened to a task: show one by id, list a tenant's by their records.
    Task {
        /// What to do.
        #[command(subcommand)]
        action: task::TaskCommand,
    },
    /// Health per tenant and overall: lane depth, pending, retries, dead letters, recent counts.
    Health(health::HealthArgs),
    /// The HTTP API: the reads and changes of the CLI as JSON, for tokens with a role and a
    /// tenant scope, until SIGTERM or SIGINT (`serve token` makes a token).
    Serve(serve::ServeArgs),
    /// The admin command trail: the audit log and one command's status.
    Admin {
        /// What to look at.
        #[command(subcommand)]
        action: admin::AdminAction,
    },
    /// Tenant notifications: the delivery log, and where each tenant's outbox stands.
    Notify {
        /// What to look at.
        #[command(subcommand)]
        action: notify::NotifyAction,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let raw = AppRaw::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config { action } => config::run(action, raw),
        Command::Run(args) => run::run(args, raw).await,
        Command::Serve(args) => serve::run(args, raw).await,
        Command::Breaker { action } => breaker::run(action, &common::settings(raw)?).await,
        Command::Tenants(args) => tenants::run(args, &common::settings(raw)?).await,
        Command::Enqueue(args) => enqueue::run(args, &common::settings(raw)?).await,
        Command::Dlq { action } => dlq::run(*action, &common::settings(raw)?).await,
        Command::Task { action } => task::run(action, &common::settings(raw)?).await,
        Command::Health(args) => health::run(args, &common::settings(raw)?).await,
        Command::Admin { action } => admin::run(action, &common::settings(raw)?).await,
        Command::Notify { action } => notify::run(action, &common::settings(raw)?).await,
        Command::Demo(args) => demo::run(args, raw).await,
        Command::Bench(args) => bench::run(args, raw).await,
    }
}
