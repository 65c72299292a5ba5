//! Settling an attempt's entry: ack (owner-checked or within the fast window), ack of a
//! tombstone, the move to the dead letters, the retry schedule, and deferral of a held-back
//! entry. Each move is one script that also counts what it settled in the tenant's stats bucket
//! and writes the task's record (lib/record.lua) when records are on.

use std::time::Duration;

use super::connect::Broker;
use super::lanes::id_range;
use super::running::flag;
use super::scripts::scripts;
use super::stats::stats_keep_ms;
use crate::error::{Error, Result};

/// The result of moving an entry to the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLettered {
    /// False when the entry was no longer pending (another member settled it); nothing was written.
    pub moved: bool,
    /// The dead letter's id in the tenant's dead-letter stream.
    pub id: String,
    /// How many older dead letters the cap trimmed to make room.
    pub trimmed: u64,
}

/// One completed entry to ack, with what its task's `done` record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEntry<'a> {
    /// The entry id in the lane.
    pub id: &'a str,
    /// The task's id, `""` to write no record.
    pub task_id: &'a str,
    /// How long the done record is kept.
    pub retention: Duration,
    /// The handler's output as JSON text, bounded (`None`: not kept).
    pub output: Option<&'a str>,
    /// Whether `output` was cut to `tasks.max_output_bytes` (then it is not valid JSON).
    pub truncated: bool,
    /// When the run started, ms by the server's clock (the member's estimate of it; 0 or a
    /// time after the ack: the ack's time): the done record's `started`.
    pub started_ms: u64,
    /// Whether the entry was appended together with its record (`recorded`): acked by the
    /// same call, its done record is written without a read (lib/record.lua, rec_done).
    pub recorded: bool,
    /// When that record expires (ms; [`crate::task::Task::record_until`], 0: unknown): while
    /// it covers the retention, fast_ack.lua puts the done in the done log instead.
    pub record_until: u64,
}

impl<'a> AckEntry<'a> {
    /// An entry acked without writing its record.
    pub fn bare(id: &'a str) -> AckEntry<'a> {
        AckEntry {
            id,
            task_id: "",
            retention: Duration::ZERO,
            output: None,
            truncated: false,
            started_ms: 0,
            recorded: false,
            record_until: 0,
        }
    }
}

/// What an owner-checked ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acked {
    /// Entries acked and deleted (their records `done`).
    pub acked: u64,
    /// Entries no longer ours whose record said `running` on that very entry: marked `done`,
    /// not acked (their new owner acks them as duplicates without running them).
    pub marked_done: u64,
}

/// One failed attempt to schedule again: its entry, its delay and the next attempt's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryItem {
    /// The entry id in the lane.
    pub entry_id: String,
    /// How long from now (server clock) the next attempt is due.
    pub delay: Duration,
    /// The schedule member: a JSON array [field, value, …] of the next attempt.
    pub member: String,
    /// The task's id for its `retry_scheduled` record, `""` for none.
    pub task_id: String,
    /// The next attempt (the record's `attempt`).
    pub attempt: u32,
    /// The failed attempt's class (the record's `class` and the run's outcome).
    pub class: &'static str,
    /// The failure's error (the record keeps 1 KiB of it).
    pub error: String,
    /// When the failed run started, ms by the server's clock (its start in the record's
    /// history; 0: unknown).
    pub started_ms: u64,
}

impl RetryItem {
    /// Encodes the next attempt's `fields` for the schedule.
    pub fn new<K: AsRef<str>>(
        entry_id: &str,
        delay: Duration,
        fields: &[(K, String)],
    ) -> Result<RetryItem> {
        let flat: Vec<&str> = fields
            .iter()
            .flat_map(|(k, v)| [k.as_ref(), v.as_str()])
            .collect();
        let member = serde_json::to_string(&flat)
            .map_err(|e| Error::Protocol(format!("cannot encode a retry: {e}")))?;
        Ok(RetryItem {
            entry_id: entry_id.to_owned(),
            delay,
            member,
            task_id: String::new(),
            attempt: 0,
            class: "",
            error: String::new(),
            started_ms: 0,
        })
    }

    /// The same item, recorded as `retry_scheduled` in task `task_id`'s record with its next
    /// `attempt`, the failure's `class` and `error`, and the failed run, which started at
    /// `started_ms` (server clock), in the record's history.
    pub fn recorded(
        mut self,
        task_id: &str,
        attempt: u32,
        class: &'static str,
        error: String,
        started_ms: u64,
    ) -> RetryItem {
        self.task_id = task_id.to_owned();
        self.attempt = attempt;
        self.class = class;
        self.error = error;
        self.started_ms = started_ms;
        self
    }
}

/// What one promote call moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Promoted {
    /// Items moved back into the lane.
    pub moved: u64,
    /// Queued records written for them.
    pub recorded: u64,
    /// How long until the earliest item left is due by the server's clock (zero when the call
    /// moved its limit: call again); `None` when nothing is scheduled.
    pub wait: Option<std::time::Duration>,
}

/// One entry to defer: its id and how long from now (server clock) it is due again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferItem {
    /// The entry id in the lane.
    pub entry_id: String,
    /// Delay before it goes back into the lane.
    pub delay: Duration,
}

/// What became of one deferred entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// Scheduled; due at this time (server clock, ms).
    Due(u64),
    /// The consumer no longer owned it: nothing was written.
    NotOwned,
    /// The entry was gone (a tombstone): its pending id was acked.
    Gone,
}

impl Broker {
    /// Adds the record keys of `tenant` to a script call: the records' prefix
    /// ([`Keys::records_off`](crate::keys::Keys::records_off) when records are off, which the
    /// scripts read as "write no record": always a key of the tenant's slot), the index and,
    /// with `events`, the events stream.
    pub(super) fn record_keys(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        tenant: &str,
        on: bool,
        events: bool,
    ) {
        if on {
            inv.key(self.keys.task_prefix(tenant));
        } else {
            inv.key(self.keys.records_off(tenant));
        }
        inv.key(self.keys.tasks(tenant));
        if events {
            inv.key(self.keys.events(tenant));
        }
    }

    /// Acks and deletes completed entries of one lane that `consumer` still owns, counts them
    /// in the tenant's stats bucket (the first `recovered` of `entries` as recovered too) and,
    /// with `records`, writes each task's `done` record (scripts/ack.lua). An entry no longer
    /// ours whose record says `running` on that entry is marked done, not acked. The steps
    /// hashes of `with_steps` (those of the entries that may have recorded steps) are deleted
    /// with their entries.
    pub(crate) async fn ack(
        &self,
        tenant: &str,
        consumer: &str,
        entries: &[AckEntry<'_>],
        recovered: usize,
        with_steps: &[&str],
        records: bool,
    ) -> Result<Acked> {
        self.ack_counted(
            tenant,
            consumer,
            entries,
            recovered,
            with_steps,
            records,
            "completed",
        )
        .await
    }

    /// Acks and deletes entries `consumer` owns whose task is already done (found by a start):
    /// their records are untouched and they count as `duplicates` in the stats bucket; their
    /// steps hashes are deleted. Returns how many were acked.
    pub(crate) async fn ack_duplicates(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> Result<u64> {
        let entries: Vec<AckEntry<'_>> = ids.iter().map(|id| AckEntry::bare(id)).collect();
        let a = self
            .ack_counted(tenant, consumer, &entries, 0, ids, false, "duplicates")
            .await?;
        Ok(a.acked)
    }

    #[allow(clippy::too_many_arguments)]
    async fn ack_counted(
        &self,
        tenant: &str,
        consumer: &str,
        entries: &[AckEntry<'_>],
        recovered: usize,
        with_steps: &[&str],
        records: bool,
        stat: &str,
    ) -> Result<Acked> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id).collect();
        let Some((lo, hi)) = id_range(&ids) else {
            return Ok(Acked::default());
        };
        let mut inv = scripts()
            .ack
            .on(self.server().xackdel)
            .key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant));
        self.record_keys(&mut inv, tenant, records, true);
        for id in with_steps {
            inv.key(self.keys.steps(tenant, id));
        }
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(lo)
            .arg(hi)
            .arg(stats_keep_ms())
            .arg(recovered.min(entries.len()))
            .arg(stat)
            .arg(with_steps.len())
            .arg(with_steps);
        ack_args(&mut inv, entries);
        let (acked, marked_done): (u64, u64) = inv.invoke_async(&mut self.con()).await?;
        Ok(Acked { acked, marked_done })
    }

    /// Acks and deletes completed entries that no other consumer can have taken over (see
    /// the settler's fast-ack window), without ack.lua's owner check, counts them in the
    /// tenant's stats bucket (the first `recovered` of `entries` as recovered too) and, with
    /// `records`, writes each acked task's `done` record: one script (scripts/fast_ack.lua),
    /// which Redis runs even while over `maxmemory` (a MULTI would be refused). Returns how
    /// many were acked. The steps hashes of `with_steps` are deleted with their entries.
    pub(crate) async fn ack_unclaimable(
        &self,
        tenant: &str,
        consumer: &str,
        entries: &[AckEntry<'_>],
        recovered: usize,
        with_steps: &[&str],
        records: bool,
    ) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts()
            .fast_ack
            .on(self.server().xackdel)
            .key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant));
        self.record_keys(&mut inv, tenant, records, true);
        for id in with_steps {
            inv.key(self.keys.steps(tenant, id));
        }
        inv.arg(&*self.group)
            .arg(stats_keep_ms())
            .arg(recovered.min(entries.len()))
            .arg(with_steps.len())
            .arg(consumer);
        ack_args(&mut inv, entries);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Acks only (no delete): for tombstones, whose entry is already gone.
    pub(crate) async fn ack_only(&self, tenant: &str, ids: &[&str]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(redis::cmd("XACK")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg(ids)
            .query_async(&mut self.con())
            .await?)
    }

    /// Moves entry `entry_id` of `tenant`'s lane to the tenant's dead letters with `fields`,
    /// atomically, counted in the tenant's stats bucket (see scripts/dead_letter.lua). With
    /// `owner`, only if that consumer owns it; with `min_idle`, only if it has been idle that
    /// long. The steps recorded for the entry join the dead letter (`recorded_steps`) and its
    /// steps hash is deleted. Refused as a whole (an OOM error, see
    /// [`is_oom`](super::error::is_oom)) while Redis is over `maxmemory`. With `records`
    /// and a `task_id` (`None` for an entry whose task_id is invalid), the task's record says
    /// `dead_lettered` (`expired` for that class) with the dead letter's id, kept while it is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter(
        &self,
        tenant: &str,
        entry_id: &str,
        hard_max_len: u64,
        owner: Option<&str>,
        min_idle: Duration,
        task_id: Option<&str>,
        records: bool,
        started_ms: Option<u64>,
        fields: &[(&str, String)],
    ) -> Result<DeadLettered> {
        let mut inv = scripts().dead_letter.key(self.keys.lane(tenant));
        inv.key(self.keys.dlq(tenant))
            .key(self.keys.dlq_trimmed(tenant))
            .key(self.keys.stats_prefix(tenant))
            .key(self.keys.steps(tenant, entry_id));
        self.record_keys(&mut inv, tenant, records, true);
        inv.key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_dropped(tenant))
            .key(self.keys.dlq_review(tenant))
            .key(self.keys.dlq_folds(tenant))
            .key(self.notify_key(tenant, super::notify_plan::NotifyEvent::DeadLettered));
        inv.arg(&*self.group)
            .arg(entry_id)
            .arg(hard_max_len)
            .arg(owner.unwrap_or(""))
            .arg(min_idle.as_millis() as u64)
            .arg(stats_keep_ms())
            .arg(task_id.unwrap_or(""))
            .arg(started_ms.map(|t| t.to_string()).unwrap_or_default());
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        let (moved, id, trimmed): (i64, String, u64) = inv.invoke_async(&mut self.con()).await?;
        Ok(DeadLettered {
            moved: moved == 1,
            id,
            trimmed,
        })
    }

    /// Acks and removes a failed attempt owned by `consumer` and schedules the next one
    /// (`fields`) `delay` from now by the server's clock. Returns the due time in ms, or `None`
    /// when `consumer` no longer owns the entry (nothing was written).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn schedule_retry(
        &self,
        tenant: &str,
        consumer: &str,
        entry_id: &str,
        delay: Duration,
        fields: &[(&str, String)],
    ) -> Result<Option<u64>> {
        let item = RetryItem::new(entry_id, delay, fields)?;
        let mut due = self
            .schedule_retries(tenant, consumer, std::slice::from_ref(&item), false)
            .await?;
        Ok(due.pop().flatten())
    }

    /// Acks and removes failed attempts of one tenant owned by `consumer` and schedules their
    /// next ones (`schedule_retry`, the tests' verb, for a batch), in one atomic script that
    /// also counts them in the tenant's stats bucket. The steps recorded for an entry are
    /// folded into its item (`recorded_steps`) and its steps hash deleted. Returns one due
    /// time per item,
    /// `None` for entries `consumer` no longer owns. With `records`, each item with a task_id
    /// writes its task's `retry_scheduled` record. Refused as a whole (an OOM error, see
    /// [`is_oom`](super::error::is_oom)) while Redis is over `maxmemory`.
    pub(crate) async fn schedule_retries(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[RetryItem],
        records: bool,
    ) -> Result<Vec<Option<u64>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts()
            .retry
            .on(self.server().xackdel)
            .key(self.keys.lane(tenant));
        inv.key(self.keys.retry(tenant))
            .key(self.keys.stats_prefix(tenant));
        self.record_keys(&mut inv, tenant, records, false);
        for item in items {
            inv.key(self.keys.steps(tenant, &item.entry_id));
        }
        inv.arg(&*self.group).arg(consumer).arg(stats_keep_ms());
        for item in items {
            inv.arg(&item.entry_id)
                .arg(item.delay.as_millis() as u64)
                .arg(&item.member)
                .arg(&item.task_id)
                .arg(item.attempt)
                .arg(item.class)
                .arg(&item.error)
                .arg(item.started_ms);
        }
        let due: Vec<i64> = inv.invoke_async(&mut self.con()).await?;
        if due.len() != items.len() {
            return Err(Error::Protocol(format!(
                "retry script answered {} times for {} entries",
                due.len(),
                items.len()
            )));
        }
        Ok(due
            .into_iter()
            .map(|d| (d >= 0).then_some(d as u64))
            .collect())
    }

    /// Moves entries of `tenant` that `consumer` owns from the lane to the tenant's deferred
    /// set, unattempted: same fields, same attempt (scripts/defer.lua); due at once when the
    /// breaker is closed by then; the steps recorded for an entry go with it
    /// (`recorded_steps`) and its steps hash is deleted; with `records`, each moved task's
    /// record says `deferred`. One result per item.
    pub(crate) async fn defer(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[DeferItem],
        records: bool,
    ) -> Result<Vec<Deferred>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = scripts().defer.key(k.lane(tenant));
        inv.key(k.deferred(tenant)).key(k.breaker(tenant));
        self.record_keys(&mut inv, tenant, records, false);
        for item in items {
            inv.key(k.steps(tenant, &item.entry_id));
        }
        inv.arg(self.group()).arg(consumer);
        for item in items {
            inv.arg(&item.entry_id).arg(item.delay.as_millis() as u64);
        }
        let due: Vec<i64> = inv.invoke_async(&mut self.con()).await?;
        if due.len() != items.len() {
            return Err(Error::Protocol(format!(
                "defer script answered {} times for {} entries",
                due.len(),
                items.len()
            )));
        }
        Ok(due
            .into_iter()
            .map(|d| match d {
                -1 => Deferred::NotOwned,
                d if d < 0 => Deferred::Gone,
                d => Deferred::Due(d as u64),
            })
            .collect())
    }
}

/// The ack scripts' septuples: entry id, task_id, retention (ms), output flag ('' none, '0'
/// whole, '1' cut), output, when the run started (ms, server clock), and '0' when not
/// appended with its record, else '1' or when that record expires (ms).
fn ack_args(inv: &mut redis::ScriptInvocation<'_>, entries: &[AckEntry<'_>]) {
    for e in entries {
        let (mark, text) = match e.output {
            None => ("", ""),
            Some(text) => (flag(e.truncated), text),
        };
        inv.arg(e.id)
            .arg(e.task_id)
            .arg(e.retention.as_millis() as u64)
            .arg(mark)
            .arg(text)
            .arg(e.started_ms)
            .arg(if e.recorded { e.record_until.max(1) } else { 0 });
    }
}

/// Reading records back, for the crate's own tests (the readers' verbs are the CLI's).
#[cfg(test)]
impl Broker {
    /// Every field of task `task_id`'s record and its time to live in ms (-1: kept, -2: no
    /// record).
    pub(crate) async fn record_of(
        &self,
        tenant: &str,
        task_id: &str,
    ) -> Result<(std::collections::HashMap<String, String>, i64)> {
        Ok(match self.task_record(tenant, task_id).await? {
            None => (Default::default(), -2),
            Some(r) => (
                r.record.fields,
                r.expires_in.map_or(-1, |d| d.as_millis() as i64),
            ),
        })
    }

    /// The state a record's hash holds, as stored (no PEL overlay; `None` without one).
    pub(crate) async fn record_state_stored(
        &self,
        tenant: &str,
        task_id: &str,
    ) -> Result<Option<String>> {
        Ok(redis::cmd("HGET")
            .arg(self.keys.task(tenant, task_id))
            .arg("state")
            .query_async(&mut self.con())
            .await?)
    }

    /// The finish events of `tenant`, oldest first: (task, state, entry).
    pub(crate) async fn record_events(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(self.keys.events(tenant))
            .arg("-")
            .arg("+")
            .query_async(&mut self.con())
            .await?;
        let mut out = Vec::new();
        for e in super::reply::entries(v)? {
            let f: std::collections::HashMap<String, String> = e
                .fields
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            out.push((get("task"), get("state"), get("entry")));
        }
        Ok(out)
    }

    /// How many keys of task records, record indexes and events streams exist under this
    /// broker's prefix.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn record_keys_count(&self) -> Result<u64> {
        let mut n = 0;
        for pattern in ["*:task:*", "*:tasks", "*:events"] {
            n += self
                .count_keys(&format!("{}:{pattern}", self.keys.prefix()))
                .await?;
        }
        Ok(n)
    }
}
