//! redrive: a worker fleet on Redis Streams that keeps AI-agent tasks from vanishing.
//!
//! A handler author implements [`Handler`] (returning an [`Outcome`], with a [`FailureClass`]
//! when an attempt fails); an embedder loads [`Settings`] (from a file and `REDRIVE_*`
//! variables, or from an edited [`RawConfig`]), connects a [`Broker`], and runs a [`Fleet`]
//! member until its [`Shutdown`] is triggered. Producers enqueue [`NewTask`]s through a
//! [`Producer`]; each comes back [`Enqueued`], or refused as a [`Duplicate`] when its task_id
//! already has a live record.
//!
//! # Layout
//!
//! The library (everything below is crate-private; the items above are its public API):
//!
//! * `task` — the task contract: wire fields, limits, validation.
//! * `keys` — every Redis key name, each tenant's keys under one hash tag.
//! * `broker` — the only module that talks to Redis; domain verbs and Lua scripts.
//! * `producer` — validated, pipelined enqueue with duplicate refusal.
//! * `handler` — the trait agent code implements and the outcomes it returns.
//! * `fleet` — a fleet member: reader, executor, settler, reclaimer, recoverer, heartbeat,
//!   lease, admin loop, publisher.
//! * `policy` — retry decisions; `classify` — rules for untyped errors.
//! * `deadletter` — the dead-letter record and error fingerprints.
//! * `archive` — the dead-letter archive (a directory or S3-compatible storage): batches as
//!   compressed JSON Lines with manifests, encryption, reading archived dead letters back.
//! * `admin` — operators' commands: the command model, dead-letter selection, replay jobs,
//!   the exactly-once executor shared by fleet members and `--local`.
//! * `isolation` — tenant isolation, pure: breaker views, fair shares.
//! * `schema` — JSON merge patch and payload schema migrations.
//! * `config` — layered settings and their validation.
//! * `embedded` — a private redis-server for the demo and the tests.
//! * `telemetry` — logging, the metric-name catalogue, readiness and the /metrics endpoint.
//! * `failpoint` — SIGKILL at a named point, for crash tests.
//! * `shutdown` — the shutdown signal; `error` — errors and their exit codes.
//!
//! The application (`app`, the default `app` feature): the command line, bench, demo, demo
//! agent and the operators' reports. Nothing in the library imports it.
//!
//! See ARCHITECTURE.md for the invariants that hold across these modules.

#![warn(missing_docs)]
// Without the application, the helpers only it uses (the CLI's time parsing, logging and
// metrics set-up, the endpoint, the embedded server) have no caller yet; the library's own
// telemetry entry point (issue 12, WP B) gives most of them one.
#![cfg_attr(not(feature = "app"), allow(dead_code, unused_imports))]

pub(crate) mod admin;
pub(crate) mod agents;
#[cfg(feature = "app")]
mod app;
pub(crate) mod archive;
pub(crate) mod broker;
pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod deadletter;
pub(crate) mod embedded;
pub(crate) mod error;
pub(crate) mod failpoint;
pub(crate) mod fleet;
pub(crate) mod handler;
pub(crate) mod isolation;
pub(crate) mod keys;
pub(crate) mod policy;
pub(crate) mod producer;
pub(crate) mod records;
pub(crate) mod schema;
pub(crate) mod shutdown;
pub(crate) mod task;
pub(crate) mod telemetry;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;

pub use broker::Broker;
pub use config::TasksSettings;
pub use config::{RawConfig, Settings};
pub use error::{Error, RedisFailure, Result};
pub use fleet::Fleet;
pub use handler::{
    FailureClass, Handler, HandlerFuture, HandlerSpec, Handlers, NoopHandler, Outcome, Progress,
    ShutdownFuture, StepEvent, TaskContext,
};
pub use producer::{Duplicate, Enqueued, Producer, Waited};
pub use records::{TaskRecord, TaskState};
pub use shutdown::Shutdown;
pub use task::{AttemptRecord, NewTask, Step, Task};
pub use telemetry::{Health, Telemetry};

/// The sections of [`RawConfig`] as loaded, before validation: what an embedder edits before
/// [`Settings::from_raw`].
pub mod sections {
    pub use crate::config::{
        RawAdmin, RawArchive, RawBreaker, RawClassify, RawDeadLetter, RawDeadLetterTenant,
        RawFleet, RawHandler, RawIsolation, RawLimits, RawLog, RawMetrics, RawNotify, RawReclaim,
        RawRedis, RawRetry, RawTarget, RawTaskOverride, RawTasks,
    };
}

/// Runs the `redrive` command line (the binary's `main`).
#[cfg(feature = "app")]
#[doc(hidden)]
pub use app::run as run_app;
