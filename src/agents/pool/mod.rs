//! The `pool` handler (PROTOCOL.md, "Stdio framing"): `processes` long-lived copies of
//! `command`, each taking up to `concurrency` attempts at once as JSON lines on its stdin and
//! answering with event and reply lines on its stdout, so an agent keeps its imports, model
//! clients and connection pools warm.
//!
//! * `settings` — the entry's options, checked at build.
//! * `state` — the slots, the attempts in flight in each process, and the moves between them.
//! * `supervisor` — one task per slot: start, route stdout, forward stderr, fail what was in
//!   flight when the process ends, restart with backoff.
//! * `handler` — [`Handler`](crate::handler::Handler): assign, wait, time out; shutdown.

mod handler;
mod settings;
mod state;
mod supervisor;

use std::sync::Arc;

use crate::error::Result;
use crate::handler::{Handler, HandlerSpec};

/// Builds the `pool` handler of a `[[handlers]]` entry. Options: `command` (argv, no shell;
/// the program must exist now), `env`, `cwd`, `processes` (default 1), `concurrency` (requests
/// in flight per process, default 1), `max_reply_bytes` (per stdout line, default 1 MiB). The
/// attempt timeout is the entry's. The processes start at the first attempt (building starts
/// nothing: `redrive config check` builds handlers too).
pub(crate) fn build(spec: &HandlerSpec) -> Result<Arc<dyn Handler>> {
    let settings = settings::PoolSettings::from_spec(spec)?;
    Ok(Arc::new(handler::PoolHandler::new(state::Pool::new(
        settings,
    ))))
}
