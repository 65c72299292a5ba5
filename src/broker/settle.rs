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
        let recovered = recovered.min(entries.len());
        let now = crate::task::now_ms();
        let (kept, logged) = if records {
            done_log_split(entries, recovered, now)
        } else {
            (entries.iter().collect(), Vec::new())
        };
        inv.arg(&*self.group)
            .arg(stats_keep_ms())
            .arg(recovered)
            .arg(with_steps.len())
            .arg(consumer)
            .arg(kept.len());
        ack_args(&mut inv, kept.iter().copied());
        log_args(&mut inv, &logged, now);
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

/// How much earlier than the member's clock Redis's may be, ms, for an entry's done to go to
/// the done log: its record's expiry must cover the retention from now plus this. (fast_ack.lua
/// checks with Redis's clock and gives the records their retention itself when the member
/// judged wrong.)
const DONE_LOG_MARGIN_MS: u64 = 60_000;

/// At most this many entries in one done-log section (Lua's `unpack` has a limit).
const DONE_LOG_SECTION_MAX: usize = 1_000;

/// fast_ack.lua's split of `entries`: those written as septuples (the first `recovered`, and
/// every entry whose done needs its record written), and the others grouped by the 100-s
/// window of their entry id, each group a done-log section (see lib/record.lua, the done log): entries
/// appended by enqueue.lua whose record's expiry covers their retention from `now_ms` (the
/// member's clock) plus [`DONE_LOG_MARGIN_MS`].
fn done_log_split<'e, 'a>(
    entries: &'e [AckEntry<'a>],
    recovered: usize,
    now_ms: u64,
) -> (Vec<&'e AckEntry<'a>>, Vec<Vec<&'e AckEntry<'a>>>) {
    let mut kept = Vec::new();
    let mut by_window: Vec<(&str, Vec<&'e AckEntry<'a>>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let covers = e.recorded
            && e.record_until > 1
            && !e.task_id.is_empty()
            && e.record_until >= now_ms + e.retention.as_millis() as u64 + DONE_LOG_MARGIN_MS;
        if i < recovered || !covers {
            kept.push(e);
            continue;
        }
        let window = log_window(e.id);
        match by_window
            .iter_mut()
            .find(|(w, g)| *w == window && g.len() < DONE_LOG_SECTION_MAX)
        {
            Some((_, g)) => g.push(e),
            None => by_window.push((window, vec![e])),
        }
    }
    (kept, by_window.into_iter().map(|(_, g)| g).collect())
}

/// The window of a lane entry id as the done logs are named (100 s): its milliseconds
/// without the last five digits, "0" for fewer than six (lib/record.lua, task_read.lua).
fn log_window(id: &str) -> &str {
    let ms = id.split_once('-').map_or(id, |(ms, _)| ms);
    if ms.len() > 5 {
        &ms[..ms.len() - 5]
    } else {
        "0"
    }
}

/// fast_ack.lua's done-log sections: per group, the window, the smallest and largest record
/// expiry, the longest retention, n, o, n pairs (entry id, started), o output pairs, n
/// task_ids. A start not known (0) is `now_ms`.
fn log_args(inv: &mut redis::ScriptInvocation<'_>, groups: &[Vec<&AckEntry<'_>>], now_ms: u64) {
    for g in groups {
        let Some(first) = g.first() else { continue };
        let low = g.iter().map(|e| e.record_until).min().unwrap_or(0);
        let high = g.iter().map(|e| e.record_until).max().unwrap_or(0);
        let ttl = g.iter().map(|e| e.retention).max().unwrap_or_default();
        let outputs = g.iter().filter(|e| e.output.is_some()).count();
        inv.arg(log_window(first.id))
            .arg(low)
            .arg(high)
            .arg((ttl.as_millis() as u64).max(1))
            .arg(g.len())
            .arg(outputs);
        for e in g {
            inv.arg(e.id).arg(if e.started_ms == 0 {
                now_ms
            } else {
                e.started_ms
            });
        }
        for e in g {
            if let Some(text) = e.output {
                let mark = if e.truncated { "t" } else { "o" };
                inv.arg(format!("{}{mark}", e.id)).arg(text);
            }
        }
        for e in g {
            inv.arg(e.task_id);
        }
    }
}

/// The ack scripts' septuples: entry id, task_id, retention (ms), output flag ('' none, '0'
/// whole, '1' cut), output, when the run started (ms, server clock), and '0' when not
/// appended with its record, else '1' or when that record expires (ms).
fn ack_args<'e, 'a: 'e>(
    inv: &mut redis::ScriptInvocation<'_>,
    entries: impl IntoIterator<Item = &'e AckEntry<'a>>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(id: &'a str, task_id: &'a str, until: u64) -> AckEntry<'a> {
        AckEntry {
            task_id,
            retention: Duration::from_secs(3_600),
            recorded: true,
            record_until: until,
            ..AckEntry::bare(id)
        }
    }

    #[test]
    fn done_log_windows_are_the_milliseconds_without_their_last_five_digits() {
        assert_eq!(log_window("1733000000123-0"), "17330000");
        assert_eq!(log_window("1733000099999-17"), "17330000");
        assert_eq!(log_window("1733000100000-0"), "17330001");
        assert_eq!(log_window("123456-0"), "1");
        assert_eq!(log_window("99999-0"), "0");
        assert_eq!(log_window("9-0"), "0");
    }

    /// Only entries whose record's expiry covers their retention (plus the margin) from now,
    /// past the recovered ones, go to the done log, grouped by window in the order met.
    #[test]
    fn the_done_log_takes_entries_whose_record_outlives_their_retention() {
        let now = 1_733_000_000_000u64;
        let hour = 3_600_000u64;
        let covers = now + hour + DONE_LOG_MARGIN_MS;
        let entries = vec![
            entry("1733000000100-0", "recovered", covers),
            entry("1733000000200-0", "a", covers),
            entry("1733000101300-0", "b", covers + 5),
            entry("1733000000400-0", "c", covers),
            entry("1733000000500-0", "short", covers - 1),
            entry("1733000000600-0", "old-style", 1),
            entry("1733000000700-0", "", covers),
            AckEntry {
                recorded: false,
                ..entry("1733000000800-0", "raw", covers)
            },
        ];
        let (kept, logged) = done_log_split(&entries, 1, now);
        fn ids(v: &[&AckEntry<'_>]) -> Vec<String> {
            v.iter().map(|e| e.task_id.to_owned()).collect()
        }
        assert_eq!(
            ids(&kept),
            ["recovered", "short", "old-style", "", "raw"],
            "written as septuples"
        );
        assert_eq!(logged.len(), 2);
        assert_eq!(ids(&logged[0]), ["a", "c"]);
        assert_eq!(ids(&logged[1]), ["b"]);
    }

    /// A big batch of one window goes in several sections.
    #[test]
    fn a_done_log_section_holds_at_most_its_maximum() {
        let now = 1_733_000_000_000u64;
        let until = now + 3_600_000 + DONE_LOG_MARGIN_MS;
        let ids: Vec<String> = (0..2_500).map(|i| format!("1733000000000-{i}")).collect();
        let entries: Vec<AckEntry<'_>> = ids.iter().map(|id| entry(id, "t", until)).collect();
        let (kept, logged) = done_log_split(&entries, 0, now);
        assert!(kept.is_empty());
        let sizes: Vec<usize> = logged.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
    }
}
