//! Agent processes of the `pool` and `exec` handlers (src/agents/): processes started and
//! ended, restarts by reason, stderr lines forwarded to the member's log, attempts by outcome.
//! Logged under the handler's own target (`redrive::agents::pool`, `redrive::agents::exec`).
//! The `handler` label is the `[[handlers]]` entry as `<index>:<type>` (`0:pool`): bounded by
//! the configuration.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::storm::{self, StormEvent};
use crate::deadletter::Fingerprint;
use crate::handler::{FailureClass, Outcome};
use crate::telemetry::names;
use crate::telemetry::storm::Print;
use crate::telemetry::tasklog::{task_event, TaskLog};

/// The pool handler's module path, which log filters name.
const POOL: &str = "redrive::agents::pool";
/// The exec handler's module path.
const EXEC: &str = "redrive::agents::exec";

/// Logs under the pool's or the exec handler's target.
macro_rules! agent_log {
    ($pooled:expr, $level:ident, $($rest:tt)+) => {
        if $pooled {
            tracing::$level!(target: POOL, $($rest)+)
        } else {
            tracing::$level!(target: EXEC, $($rest)+)
        }
    };
}

/// Why an agent process ended (the `reason` of the restarts counter, except `Shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// It exited or was killed by something else.
    Exit,
    /// It broke the stdio protocol and was killed.
    Protocol,
    /// An attempt in it timed out (or was abandoned) and its group was killed.
    Timeout,
    /// The handler shut down.
    Shutdown,
}

impl EndReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Exit => "exit",
            EndReason::Protocol => "protocol",
            EndReason::Timeout => "timeout",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// The `reason` of a process that could not be started.
const SPAWN_FAILED: &str = "spawn_failed";

/// How many processes one handler runs: the value of its `redrive_agent_processes` series.
#[derive(Debug)]
struct ProcessCount {
    handler: String,
    alive: AtomicI64,
}

impl ProcessCount {
    /// Sets the gauge, resolved anew each time: the recorder drops a gauge that was not set
    /// for its idle timeout, and a handle kept from before would then record nowhere.
    fn publish(&self) {
        metrics::gauge!(names::AGENT_PROCESSES, "handler" => self.handler.clone())
            .set(self.alive.load(Ordering::Relaxed).max(0) as f64);
    }
}

/// Every live handler's count, published again at each health step
/// ([`publish_process_counts`]), so the series stays present while a handler sits idle.
static COUNTS: Mutex<Vec<Weak<ProcessCount>>> = Mutex::new(Vec::new());

/// Publishes the processes gauge of every agent handler alive in this process (called by the
/// health step every `metrics.refresh_interval`, which the recorder's idle timeout follows).
pub fn publish_process_counts() {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.retain(|weak| match weak.upgrade() {
        Some(count) => {
            count.publish();
            true
        }
        None => false,
    });
}

/// One handler's agent-process telemetry, its series registered at 0 when it is built.
pub struct AgentMeters {
    handler: String,
    pooled: bool,
    count: Arc<ProcessCount>,
    stderr: metrics::Counter,
}

impl std::fmt::Debug for AgentMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMeters")
            .field("handler", &self.handler)
            .finish()
    }
}

impl AgentMeters {
    /// The telemetry of handler `handler` (`<index>:<type>`); `pooled` for a pool (long-lived
    /// processes that restart), else exec (one process per attempt).
    pub fn new(handler: &str, pooled: bool) -> AgentMeters {
        let label = handler.to_owned();
        let count = Arc::new(ProcessCount {
            handler: label.clone(),
            alive: AtomicI64::new(0),
        });
        count.publish();
        COUNTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&count));
        let stderr = metrics::counter!(names::AGENT_STDERR_LINES, "handler" => label.clone());
        stderr.increment(0);
        if pooled {
            for reason in [
                EndReason::Exit.as_str(),
                EndReason::Protocol.as_str(),
                EndReason::Timeout.as_str(),
                SPAWN_FAILED,
            ] {
                metrics::counter!(names::AGENT_RESTARTS, "handler" => label.clone(), "reason" => reason)
                    .increment(0);
            }
        }
        for outcome in ["ok", "error"]
            .into_iter()
            .chain(FailureClass::ALL.map(FailureClass::as_str))
        {
            metrics::counter!(names::AGENT_ATTEMPTS, "handler" => label.clone(), "outcome" => outcome)
                .increment(0);
        }
        AgentMeters {
            handler: label,
            pooled,
            count,
            stderr,
        }
    }

    /// Sets the processes gauge again (the health step does too, for every handler).
    pub fn refresh(&self) {
        self.count.publish();
    }

    /// Process `index` (pid `pid`) started.
    pub fn process_started(&self, index: usize, pid: u32) {
        self.count.alive.fetch_add(1, Ordering::Relaxed);
        self.refresh();
        if self.pooled {
            tracing::info!(target: POOL, handler = %self.handler, process = index, pid, "agent process started");
        } else {
            tracing::debug!(target: EXEC, handler = %self.handler, pid, "agent process started");
        }
    }

    /// Process `index` (pid `pid`) ended for `reason` (`detail` says how) with `in_flight`
    /// attempts failed with it; a pool restarts it after `restart_in`.
    pub fn process_ended(
        &self,
        index: usize,
        pid: u32,
        reason: EndReason,
        detail: &str,
        in_flight: usize,
        restart_in: Option<Duration>,
    ) {
        self.count.alive.fetch_sub(1, Ordering::Relaxed);
        self.refresh();
        if !self.pooled {
            tracing::debug!(target: EXEC, handler = %self.handler, pid, reason = reason.as_str(), detail = %detail, "agent process ended");
            return;
        }
        if reason == EndReason::Shutdown {
            tracing::info!(target: POOL, handler = %self.handler, process = index, pid, detail = %detail, "agent process stopped");
            return;
        }
        metrics::counter!(names::AGENT_RESTARTS, "handler" => self.handler.clone(), "reason" => reason.as_str())
            .increment(1);
        let restart_in_ms = restart_in.map(|d| d.as_millis() as u64).unwrap_or(0);
        tracing::warn!(target: POOL, handler = %self.handler, process = index, pid, reason = reason.as_str(), detail = %detail, in_flight, restart_in_ms, "agent process ended; it will be replaced");
    }

    /// Process `index` could not be started; the pool tries again after `restart_in`.
    pub fn spawn_failed(&self, index: usize, error: &str, restart_in: Option<Duration>) {
        if self.pooled {
            metrics::counter!(names::AGENT_RESTARTS, "handler" => self.handler.clone(), "reason" => SPAWN_FAILED)
                .increment(1);
        }
        let restart_in_ms = restart_in.map(|d| d.as_millis() as u64).unwrap_or(0);
        agent_log!(self.pooled, error, handler = %self.handler, process = index, error = %error, restart_in_ms, "cannot start the agent process");
    }

    /// A line process `index` (pid `pid`) wrote on stderr (already bounded), tagged with the
    /// task when exactly one attempt was in flight in it. Lines of one pattern (numbers, ids
    /// and quoted values aside) repeated within the storm interval are summarised.
    pub fn stderr_line(&self, index: usize, pid: u32, task: Option<&TaskLog>, line: &str) {
        self.stderr.increment(1);
        let event = if self.pooled {
            StormEvent::PoolStderr
        } else {
            StormEvent::ExecStderr
        };
        let print = Print::Of(Fingerprint::of_error(
            &self.handler,
            FailureClass::Unknown,
            line,
        ));
        let (tenant, task_id) = task.map_or(("", None), |t| {
            (t.tenant.as_str(), Some(t.task_id.as_str()))
        });
        if !storm::admit(event, print, tenant, task_id, 1) {
            return;
        }
        match (task, self.pooled) {
            (Some(log), true) => {
                task_event!(info, target: POOL, log, handler = %self.handler, process = index, pid, line = %line, "agent stderr")
            }
            (Some(log), false) => {
                task_event!(info, target: EXEC, log, handler = %self.handler, pid, line = %line, "agent stderr")
            }
            (None, true) => {
                tracing::info!(target: POOL, handler = %self.handler, process = index, pid, line = %line, "agent stderr")
            }
            (None, false) => {
                tracing::info!(target: EXEC, handler = %self.handler, pid, line = %line, "agent stderr")
            }
        }
    }

    /// An attempt ended with `outcome` (as the handler returns it).
    pub fn attempt_finished(&self, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Done => "ok",
            Outcome::Fail { class, .. } => class.as_str(),
            Outcome::Poison { .. } => FailureClass::Unknown.as_str(),
            Outcome::Error { .. } => "error",
        };
        metrics::counter!(names::AGENT_ATTEMPTS, "handler" => self.handler.clone(), "outcome" => label)
            .increment(1);
    }

    /// The handler stopped its processes: `terminated` ended after SIGTERM, `killed` needed
    /// SIGKILL after the grace.
    pub fn stopped(&self, terminated: usize, killed: usize) {
        agent_log!(self.pooled, info, handler = %self.handler, terminated, killed, "agent processes stopped");
    }
}
