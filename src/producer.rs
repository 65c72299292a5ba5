//! The producer API: validate tasks, then append them to their lanes in pipelined batches.
//! A batch is validated whole before anything is written, so a bad task never leaves half a
//! batch behind.

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::task::{now_ms, Limits, NewTask};

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
    /// A producer writing through `broker`, enforcing `limits`.
    pub fn new(broker: Broker, limits: Limits) -> Producer {
        Producer { broker, limits }
    }

    /// Enqueues one task.
    pub async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        let mut out = self.enqueue_batch(vec![task]).await?;
        out.pop()
            .ok_or_else(|| Error::Protocol("XADD returned no entry id".into()))
    }

    /// Validates every task, then enqueues them all in pipelined round trips. On a validation
    /// error nothing is written and the error names the task's position (0-based).
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        let now = now_ms();
        let total = tasks.len();
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.into_task(&self.limits, now).map_err(|e| match e {
                    Error::InvalidTask(m) if total > 1 => {
                        Error::InvalidTask(format!("task #{i}: {m}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(PIPELINE_CHUNK) {
            let ids = self.broker.enqueue(chunk).await?;
            out.extend(chunk.iter().zip(ids).map(|(t, entry_id)| Enqueued {
                task_id: t.task_id.clone(),
                entry_id,
            }));
        }
        Ok(out)
    }
}

/// Parses JSON Lines (one [`NewTask`] object per line; blank lines are skipped). The first bad
/// line fails the whole input with its line number, so nothing is half-enqueued.
pub fn parse_jsonl(text: &str) -> Result<Vec<NewTask>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<NewTask>(line)
                .map_err(|e| Error::InvalidTask(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_the_line() {
        let ok = parse_jsonl("{\"tenant\":\"a\",\"kind\":\"k\",\"payload\":{}}\n\n").unwrap();
        assert_eq!(ok.len(), 1);
        let err =
            parse_jsonl("{\"tenant\":\"a\",\"kind\":\"k\",\"payload\":{}}\n{oops\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
