//! The executor: takes tasks from the fair queue and runs each attempt under a concurrency
//! limit and a timeout, turning panics into failed attempts.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{Job, Settlement, Shared};
use crate::handler::{FailureClass, Handler, Outcome, TaskContext};
use crate::shutdown::Shutdown;
use crate::telemetry::{names, panic_message};

/// The executor loop's settings and handles.
pub(crate) struct Executor {
    pub shared: Arc<Shared>,
    pub handler: Arc<dyn Handler>,
    pub settle: mpsc::UnboundedSender<Settlement>,
    pub concurrency: usize,
    pub task_timeout: Duration,
    pub grace: Duration,
}

impl Executor {
    /// Runs tasks until shutdown, then waits up to the grace period for running ones. Tasks
    /// still running then are abandoned: their entries stay pending for a restart or reclaim.
    pub async fn run(self, shutdown: Shutdown) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        'outer: loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let job = loop {
                if let Some(job) = self.shared.pop() {
                    break job;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => break 'outer,
                    _ = self.shared.queue_ready.notified() => {}
                }
            };
            running.spawn(attempt(
                job,
                permit,
                self.handler.clone(),
                self.settle.clone(),
                self.task_timeout,
                self.shared.member.clone(),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        abandoned = running.len(),
                        "shutdown grace expired; abandoning running tasks, their entries stay pending"
                    );
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}

/// Runs one attempt and reports its outcome to the settler.
async fn attempt(
    job: Job,
    _permit: OwnedSemaphorePermit,
    handler: Arc<dyn Handler>,
    settle: mpsc::UnboundedSender<Settlement>,
    timeout: Duration,
    member: Arc<str>,
) {
    let wait_ms = crate::task::now_ms().saturating_sub(job.task.enqueued_at_ms);
    metrics::histogram!(names::QUEUE_WAIT).record(wait_ms as f64 / 1000.0);
    metrics::gauge!(names::IN_FLIGHT).increment(1.0);
    let started = Instant::now();
    let ctx = TaskContext::new(member);
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        handler.handle(job.task.clone(), ctx.clone())
    })) {
        Err(p) => panicked(&*p),
        Ok(fut) => {
            match tokio::time::timeout(timeout, AssertUnwindSafe(fut).catch_unwind()).await {
                Err(_) => Outcome::fail(
                    FailureClass::Timeout,
                    format!(
                        "the attempt ran past fleet.task_timeout_ms = {}",
                        timeout.as_millis()
                    ),
                ),
                Ok(Err(p)) => panicked(&*p),
                Ok(Ok(outcome)) => outcome,
            }
        }
    };
    let duration = started.elapsed();
    metrics::gauge!(names::IN_FLIGHT).decrement(1.0);
    metrics::histogram!(names::TASK_DURATION).record(duration.as_secs_f64());
    let settlement = match outcome {
        Outcome::Done => Settlement::Done {
            tenant: job.tenant,
            entry_id: job.entry_id,
        },
        Outcome::Fail {
            class,
            reason,
            retry_after,
        } => Settlement::Failed {
            job,
            class,
            reason,
            retry_after,
            poison: false,
            progress: ctx.progress(),
            duration,
        },
        Outcome::Poison { reason } => Settlement::Failed {
            job,
            class: FailureClass::Unknown,
            reason,
            retry_after: None,
            poison: true,
            progress: ctx.progress(),
            duration,
        },
    };
    // The settler lives until every sender is gone, so this cannot fail while we run.
    let _ = settle.send(settlement);
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Outcome {
    Outcome::fail(
        FailureClass::Unknown,
        format!("handler panicked: {}", panic_message(payload)),
    )
}
