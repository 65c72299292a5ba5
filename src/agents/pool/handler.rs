//! [`PoolHandler`]: the `pool` handler. Each attempt goes to the running process with the most
//! room as one request line; its events are applied to the attempt's context as they arrive and
//! its final reply is its outcome. No reply within the timeout kills the process group (the
//! attempt: `timeout`; the others in flight in it: `upstream_unavailable`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::state::{Assign, Kill, Pool};
use super::supervisor::supervise;
use crate::agents::process::{kill_group, request_line};
use crate::agents::protocol::request_body;
use crate::handler::{FailureClass, Handler, HandlerFuture, Outcome, ShutdownFuture, TaskContext};
use crate::task::Task;
use crate::telemetry::tasklog::TaskLog;

/// How long `shutdown` waits after SIGTERM before it kills what is left.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The `pool` handler: `processes` long-lived copies of `command` speaking the stdio protocol.
pub(crate) struct PoolHandler {
    pool: Arc<Pool>,
    /// The supervisors, started on the first runtime that needs them.
    supervisors: Arc<Mutex<Option<Vec<JoinHandle<()>>>>>,
}

impl PoolHandler {
    /// A handler over `pool`. Its processes start at the first attempt (on that attempt's
    /// runtime), so building one (`redrive config check`, a test) starts nothing.
    pub fn new(pool: Pool) -> PoolHandler {
        PoolHandler {
            pool: Arc::new(pool),
            supervisors: Arc::new(Mutex::new(None)),
        }
    }
}

/// Starts the supervisors once.
fn start(pool: &Arc<Pool>, supervisors: &Mutex<Option<Vec<JoinHandle<()>>>>) {
    let Ok(mut slot) = supervisors.lock() else {
        return;
    };
    if slot.is_some() || pool.is_closed() {
        return;
    }
    *slot = Some(
        (0..pool.settings.processes)
            .map(|i| tokio::spawn(supervise(pool.clone(), i)))
            .collect(),
    );
}

/// Kills the process group of an attempt the fleet dropped before its outcome (its own
/// timeout, the entry taken over by another member): the process still works on it and the
/// protocol has no way to cancel one request.
struct Abandon {
    pool: Arc<Pool>,
    slot: usize,
    generation: u64,
    id: String,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.armed {
            self.pool.give_up(
                self.slot,
                self.generation,
                &self.id,
                Kill::Abandoned(self.id.clone()),
            );
        }
    }
}

impl Handler for PoolHandler {
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let pool = self.pool.clone();
        let supervisors = self.supervisors.clone();
        Box::pin(async move {
            start(&pool, &supervisors);
            let outcome = attempt(&pool, &task, &ctx).await;
            pool.meters.attempt_finished(&outcome);
            outcome
        })
    }

    fn shutdown(&self) -> ShutdownFuture {
        let pool = self.pool.clone();
        let supervisors = self
            .supervisors
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default();
        Box::pin(async move {
            let pids = pool.close();
            for pid in &pids {
                kill_group(*pid, libc::SIGTERM);
            }
            let mut supervisors = supervisors;
            let graceful = tokio::time::timeout(SHUTDOWN_GRACE, async {
                for s in &mut supervisors {
                    let _ = s.await;
                }
            })
            .await
            .is_ok();
            let left = pool.live_pids();
            for pid in &left {
                kill_group(*pid, libc::SIGKILL);
            }
            if !graceful {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    for s in &mut supervisors {
                        let _ = s.await;
                    }
                })
                .await;
                for s in &supervisors {
                    s.abort();
                }
            }
            pool.meters
                .stopped(pids.len().saturating_sub(left.len()), left.len());
        })
    }
}

impl Drop for PoolHandler {
    fn drop(&mut self) {
        for pid in self.pool.close() {
            kill_group(pid, libc::SIGKILL);
        }
    }
}

/// One attempt: wait for room, send the request line, wait for the outcome or the timeout.
async fn attempt(pool: &Arc<Pool>, task: &Task, ctx: &TaskContext) -> Outcome {
    let started = Instant::now();
    let timeout = pool.settings.timeout;
    let deadline = started + timeout;
    let body = match request_body(task, ctx.max_attempts()) {
        Ok(b) => b,
        Err(why) => return Outcome::fail(FailureClass::InvalidInput, why),
    };
    let id = pool.next_id();
    let line = request_line(&id, &body);
    let log = TaskLog::of(task);
    let (slot, generation, mut rx) = loop {
        let changed = pool.changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Instant::now();
        match pool.assign(&id, line.clone(), ctx, &log, now, deadline) {
            Assign::Sent {
                slot,
                generation,
                rx,
            } => break (slot, generation, rx),
            Assign::Unavailable(why) => {
                return Outcome::fail(FailureClass::UpstreamUnavailable, why)
            }
            Assign::Wait(until) => {
                let until = until.map_or(deadline, |u| u.min(deadline));
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
                if Instant::now() >= deadline {
                    return Outcome::fail(
                        FailureClass::Timeout,
                        format!(
                            "no process of {} had room for the attempt within timeout_ms = {}",
                            pool.settings.name,
                            timeout.as_millis()
                        ),
                    );
                }
            }
        }
    };
    let mut abandon = Abandon {
        pool: pool.clone(),
        slot,
        generation,
        id: id.clone(),
        armed: true,
    };
    let outcome = match tokio::time::timeout_at(deadline.into(), &mut rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::fail(
            FailureClass::AgentCrashed,
            format!(
                "{} stopped supervising the agent process",
                pool.settings.name
            ),
        ),
        Err(_) => {
            if pool.give_up(slot, generation, &id, Kill::Timeout(id.clone())) {
                Outcome::fail(
                    FailureClass::Timeout,
                    format!(
                        "no reply within timeout_ms = {} ({}); the agent's process group was \
                         killed and is being replaced",
                        timeout.as_millis(),
                        pool.settings.name
                    ),
                )
            } else {
                // The outcome was decided as the timer fired: it is on its way.
                match tokio::time::timeout(Duration::from_secs(1), rx).await {
                    Ok(Ok(outcome)) => outcome,
                    _ => Outcome::fail(
                        FailureClass::Timeout,
                        format!("no reply within timeout_ms = {}", timeout.as_millis()),
                    ),
                }
            }
        }
    };
    abandon.armed = false;
    outcome
}
