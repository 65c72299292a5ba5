//! The producer API: validate tasks, then append them to their lanes. A batch is validated
//! whole before anything is written, so a bad task never leaves half a batch behind.
//! [`Producer::enqueue_all`] (what `redrive enqueue` uses) then writes everything in one
//! MULTI/EXEC: all or nothing, also when Redis refuses writes (out of memory).
//! [`Producer::enqueue_batch`] pipelines chunks for throughput; a Redis failure part-way
//! leaves the chunks before it written, and its error says how many tasks that is.

use crate::broker::Broker;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::task::{now_ms, Limits, NewTask, Task};

/// How many tasks one pipeline carries.
const PIPELINE_CHUNK: usize = 1000;

/// Where an enqueued task landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's idempotency key (given or generated).
    pub task_id: String,
    /// The entry id in the tenant's lane.
    pub entry_id: String,
}

/// Publishes tasks.
#[derive(Debug, Clone)]
pub struct Producer {
    broker: Broker,
    limits: Limits,
}

impl Producer {
    /// A producer writing through `broker`, enforcing the task limits of `settings`.
    pub fn new(broker: Broker, settings: &Settings) -> Producer {
        Producer {
            broker,
            limits: settings.limits,
        }
    }

    /// Enqueues one task.
    pub async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        let mut out = self.enqueue_batch(vec![task]).await?;
        out.pop()
            .ok_or_else(|| Error::Protocol("XADD returned no entry id".into()))
    }

    /// Validates every task, then enqueues them all in pipelined round trips of up to 1000
    /// tasks. On a validation error nothing is written and the error names the task's position
    /// (0-based). On a Redis error part-way, the error says how many tasks (the first ones)
    /// were written before the failing round trip.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        let tasks = self.validate(tasks.into_iter().enumerate(), |i| format!("task #{i}"))?;
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(PIPELINE_CHUNK) {
            let ids = match self.broker.enqueue(chunk).await {
                Ok(ids) => ids,
                Err(Error::OutOfMemory(m)) if !out.is_empty() => {
                    return Err(Error::OutOfMemory(format!(
                        "{m}; the first {} tasks of the batch were written before",
                        out.len()
                    )))
                }
                Err(e) => return Err(e),
            };
            out.extend(chunk.iter().zip(ids).map(|(t, entry_id)| Enqueued {
                task_id: t.task_id.clone(),
                entry_id,
            }));
        }
        Ok(out)
    }

    /// Validates every task, then writes them all in one MULTI/EXEC, tenant registrations
    /// included: all or nothing. Each task comes with its number for error messages (a file's
    /// 1-based line number: `line 500: …`); a single task's errors carry no number. A Redis
    /// that is out of memory refuses the whole transaction: [`Error::OutOfMemory`], nothing
    /// written, and the message says so.
    pub async fn enqueue_all(&self, tasks: Vec<(usize, NewTask)>) -> Result<Vec<Enqueued>> {
        let tasks = self.validate(tasks.into_iter(), |line| format!("line {line}"))?;
        let ids = self.broker.enqueue_atomic(&tasks).await?;
        Ok(tasks
            .iter()
            .zip(ids)
            .map(|(t, entry_id)| Enqueued {
                task_id: t.task_id.clone(),
                entry_id,
            })
            .collect())
    }

    /// Validates numbered tasks; an error of one of several names it with `label(number)`.
    fn validate(
        &self,
        tasks: impl ExactSizeIterator<Item = (usize, NewTask)>,
        label: impl Fn(usize) -> String,
    ) -> Result<Vec<Task>> {
        let now = now_ms();
        let total = tasks.len();
        tasks
            .map(|(i, t)| {
                t.into_task(&self.limits, now).map_err(|e| match e {
                    Error::InvalidTask(m) if total > 1 => {
                        Error::InvalidTask(format!("{}: {m}", label(i)))
                    }
                    other => other,
                })
            })
            .collect()
    }
}
