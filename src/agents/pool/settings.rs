//! The `pool` entry's options, checked at build (PROTOCOL.md, "Stdio framing").

use std::time::Duration;

use crate::agents::process::{CommandSpec, Options, DEFAULT_MAX_REPLY_BYTES};
use crate::error::Result;
use crate::handler::HandlerSpec;

/// The keys of a `pool` entry besides the common ones.
const KEYS: [&str; 6] = [
    "command",
    "env",
    "cwd",
    "processes",
    "concurrency",
    "max_reply_bytes",
];

/// A pool's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    /// How messages name the entry: `handlers[0] (type pool)`.
    pub name: String,
    /// The metrics label: `0:pool`.
    pub label: String,
    /// What each process runs.
    pub command: CommandSpec,
    /// How many processes run.
    pub processes: usize,
    /// Requests in flight per process.
    pub concurrency: usize,
    /// The longest stdout line accepted.
    pub max_reply_bytes: usize,
    /// How long one attempt may wait for its reply.
    pub timeout: Duration,
}

impl PoolSettings {
    /// Reads and checks `spec`'s options; every error names `handlers[<i>].<key>`.
    pub fn from_spec(spec: &HandlerSpec) -> Result<PoolSettings> {
        let o = Options::new(spec, &KEYS)?;
        let command = o.command()?;
        let processes = o.integer("processes", 1, 1, 1024)?;
        let concurrency = o.integer("concurrency", 1, 1, 10_000)?;
        let max_reply_bytes = o.integer(
            "max_reply_bytes",
            DEFAULT_MAX_REPLY_BYTES,
            64,
            256 * 1024 * 1024,
        )?;
        if spec.timeout.is_zero() {
            return Err(o.error("timeout_ms", "must be more than 0"));
        }
        Ok(PoolSettings {
            name: spec.label(),
            label: format!("{}:{}", spec.index, spec.type_name),
            command,
            processes,
            concurrency,
            max_reply_bytes,
            timeout: spec.timeout,
        })
    }
}
