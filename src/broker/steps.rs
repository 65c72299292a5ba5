//! Step checkpoints of a running attempt: recorded in the lane entry's steps hash as they
//! arrive, fenced by the entry's owner (scripts/step.lua), so a completed step survives any
//! crash after it. The scripts that move an entry out of its lane fold the hash into what they
//! write (retries, dead letters, deferrals) or delete it (acks).

use super::connect::Broker;
use super::scripts::scripts;
use crate::error::{Error, Result};
use crate::task::Step;

/// One change to an entry's recorded steps.
#[derive(Debug, Clone, PartialEq)]
pub enum StepWrite {
    /// A side-effecting step started (its record has `done: false`).
    Started(Step),
    /// A step completed with its output.
    Done(Step),
    /// A started step ended without its side effect: its started record is removed.
    Failed(String),
}

/// What recording a batch of step changes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepsRecorded {
    /// All of them were applied.
    Applied(u64),
    /// The consumer no longer owns the entry: nothing was written.
    Fenced,
}

impl Broker {
    /// Records `writes` for entry `entry_id` of `tenant`'s lane, in order, while `consumer`
    /// still owns it (one call of scripts/step.lua).
    pub(crate) async fn record_steps(
        &self,
        tenant: &str,
        consumer: &str,
        entry_id: &str,
        writes: &[StepWrite],
    ) -> Result<StepsRecorded> {
        if writes.is_empty() {
            return Ok(StepsRecorded::Applied(0));
        }
        let mut inv = scripts().step.key(self.keys.lane(tenant));
        inv.key(self.keys.steps(tenant, entry_id))
            .arg(&*self.group)
            .arg(consumer)
            .arg(entry_id);
        for w in writes {
            let (op, name, text) = match w {
                StepWrite::Started(s) => ("s", s.name.as_str(), encode(s)?),
                StepWrite::Done(s) => ("d", s.name.as_str(), encode(s)?),
                StepWrite::Failed(name) => ("f", name.as_str(), String::new()),
            };
            inv.arg(op).arg(name).arg(text);
        }
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(if n < 0 {
            StepsRecorded::Fenced
        } else {
            StepsRecorded::Applied(n as u64)
        })
    }

    /// The steps recorded for entry `entry_id` of `tenant` (as the next owner would receive
    /// them), in the order they were written; empty when none.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn recorded_steps(&self, tenant: &str, entry_id: &str) -> Result<Vec<Step>> {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.steps(tenant, entry_id))
            .query_async(&mut self.con())
            .await?;
        let mut records: Vec<(u64, Step)> = Vec::new();
        for (name, value) in fields.into_iter().filter(|(n, _)| !n.is_empty()) {
            let mut parts = value.splitn(3, ':');
            let seq = parts.next().and_then(|s| s.parse().ok());
            let (Some(seq), Some(_state), Some(json)) = (seq, parts.next(), parts.next()) else {
                return Err(Error::Protocol(format!(
                    "unreadable step record of {name:?}"
                )));
            };
            let step: Step = serde_json::from_str(json)
                .map_err(|e| Error::Protocol(format!("step record of {name:?}: {e}")))?;
            records.push((seq, step));
        }
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, s)| s).collect())
    }

    /// How many steps hashes exist under the key prefix (any tenant): none once every entry
    /// that recorded steps has left its lane.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn steps_keys(&self) -> Result<u64> {
        self.count_keys(&self.keys.steps_pattern()).await
    }
}

/// A step as its stored JSON text.
fn encode(step: &Step) -> Result<String> {
    serde_json::to_string(step).map_err(|e| Error::Protocol(format!("cannot encode a step: {e}")))
}
