//! Telemetry: logging set-up, the catalogue of metric names (every metric redrive emits is
//! named in [`names`], so dashboards, alert rules and tests have one list to agree with), the
//! Prometheus recorder with its bounded tenant label, readiness, the /metrics endpoint and the
//! embedder's [`Telemetry`]. Code elsewhere records metrics only through [`events`]: one
//! function per observable event, which logs it and records its metrics together (the `op`
//! label of Redis failures is a [`RedisOp`]).

// The one place that may record metrics directly (clippy.toml disallows the macros elsewhere).
#![allow(clippy::disallowed_macros)]

pub mod endpoint;
pub mod events;
mod health;
mod install;
mod logging;
pub mod names;
mod recorder;
mod redis_op;
mod settings;
pub mod storm;
pub mod tasklog;

pub use health::Health;
pub use install::Telemetry;
pub use logging::{panic_message, LogFormat};
pub use recorder::{install_prometheus, OTHER_TENANT};
pub use redis_op::RedisOp;
pub use settings::MetricsSettings;
