//! redrive: a worker fleet on Redis Streams that keeps AI-agent tasks from vanishing.
//!
//! # Layout
//!
//! * [`task`] — the task contract: wire fields, limits, validation.
//! * [`keys`] — every Redis key name, each tenant's keys under one hash tag.
//! * [`broker`] — the only module that talks to Redis; domain verbs and Lua scripts.
//! * [`producer`] — validated, pipelined enqueue.
//! * [`handler`] — the trait agent code implements and the outcomes it returns.
//! * [`fleet`] — a fleet member: reader, executor, settler, reclaimer, recoverer, heartbeat, lease.
//! * [`policy`] — retry decisions; [`classify`] — rules for untyped errors.
//! * [`deadletter`] — the dead-letter record and error fingerprints.
//! * [`admin`] — operators' commands: dead-letter triage and replay, health, the admin command
//!   stream with exactly-once execution and its audit trail.
//! * [`isolation`] — tenant isolation: breaker views, fair shares, `redrive breaker|tenants`.
//! * [`demo_agent`] — the simulated agent; [`demo`] — `redrive demo`; [`bench`](mod@bench) — `redrive bench`.
//! * [`config`] — layered settings and their validation.
//! * [`embedded`] — a private redis-server for the demo and the tests.
//! * [`telemetry`] — logging and the metric-name catalogue; [`endpoint`] — /metrics,
//!   /healthz, /readyz.
//! * [`failpoint`] — SIGKILL at a named point, for crash tests.
//! * [`shutdown`] — the shutdown signal; [`cli`] — the command line; [`error`] — errors.
//!
//! See ARCHITECTURE.md for the invariants that hold across these modules.

#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod broker;
pub mod classify;
pub mod config;
pub mod deadletter;
pub mod embedded;
pub mod error;
pub mod failpoint;
pub mod fleet;
pub mod handler;
pub mod isolation;
pub mod keys;
pub mod policy;
pub mod producer;
pub mod schema;
pub mod shutdown;
pub mod task;
pub mod telemetry;

pub use error::{Error, Result};
