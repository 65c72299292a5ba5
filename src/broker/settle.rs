//! Settling an attempt's entry: ack (owner-checked or within the fast window), ack of a
//! tombstone, the move to the dead letters, the retry schedule, and deferral of a held-back
//! entry. Each move is one script that also counts what it settled in the tenant's stats bucket.

use std::time::Duration;

use super::connect::Broker;
use super::lanes::id_range;
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

/// One failed attempt to schedule again: its entry, its delay and the next attempt's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryItem {
    /// The entry id in the lane.
    pub entry_id: String,
    /// How long from now (server clock) the next attempt is due.
    pub delay: Duration,
    /// The schedule member: a JSON array [field, value, …] of the next attempt.
    pub member: String,
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
        })
    }
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
    /// Acks and deletes completed entries of one lane that `consumer` still owns, and counts
    /// them in the tenant's stats bucket (the first `recovered` of `ids` as recovered too).
    /// The steps hashes of `with_steps` (those of `ids` that may have recorded steps) are
    /// deleted with their entries. Returns how many it acked; the rest were settled or
    /// reclaimed elsewhere.
    pub(crate) async fn ack(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
        recovered: usize,
        with_steps: &[&str],
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let Some((lo, hi)) = id_range(ids) else {
            return Ok(0);
        };
        let mut inv = scripts().ack.key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant));
        for id in with_steps {
            inv.key(self.keys.steps(tenant, id));
        }
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(lo)
            .arg(hi)
            .arg(stats_keep_ms())
            .arg(recovered.min(ids.len()))
            .arg(with_steps.len())
            .arg(with_steps)
            .arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Acks and deletes completed entries that no other consumer can have taken over (see
    /// the settler's fast-ack window), without ack.lua's owner check, and counts them in the
    /// tenant's stats bucket (the first `recovered` of `ids` as recovered too): one script
    /// (scripts/fast_ack.lua), which Redis runs even while over `maxmemory` (a MULTI would be
    /// refused). Returns how many were acked.
    /// The steps hashes of `with_steps` are deleted with their entries.
    pub(crate) async fn ack_unclaimable(
        &self,
        tenant: &str,
        ids: &[&str],
        recovered: usize,
        with_steps: &[&str],
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts().fast_ack.key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant));
        for id in with_steps {
            inv.key(self.keys.steps(tenant, id));
        }
        inv.arg(&*self.group)
            .arg(stats_keep_ms())
            .arg(recovered.min(ids.len()))
            .arg(with_steps.len())
            .arg(ids);
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
    /// [`is_oom`](super::error::is_oom)) while Redis is over `maxmemory`.
    pub(crate) async fn dead_letter(
        &self,
        tenant: &str,
        entry_id: &str,
        max_len: u64,
        owner: Option<&str>,
        min_idle: Duration,
        fields: &[(&str, String)],
    ) -> Result<DeadLettered> {
        let mut inv = scripts().dead_letter.key(self.keys.lane(tenant));
        inv.key(self.keys.dlq(tenant))
            .key(self.keys.dlq_trimmed(tenant))
            .key(self.keys.stats_prefix(tenant))
            .key(self.keys.steps(tenant, entry_id))
            .arg(&*self.group)
            .arg(entry_id)
            .arg(max_len)
            .arg(owner.unwrap_or(""))
            .arg(min_idle.as_millis() as u64)
            .arg(stats_keep_ms());
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
            .schedule_retries(tenant, consumer, std::slice::from_ref(&item))
            .await?;
        Ok(due.pop().flatten())
    }

    /// Acks and removes failed attempts of one tenant owned by `consumer` and schedules their
    /// next ones (`schedule_retry`, the tests' verb, for a batch), in one atomic script that
    /// also counts them in the tenant's stats bucket. The steps recorded for an entry are
    /// folded into its item (`recorded_steps`) and its steps hash deleted. Returns one due
    /// time per item,
    /// `None` for entries `consumer` no longer owns. Refused as a whole (an OOM error, see
    /// [`is_oom`](super::error::is_oom)) while Redis is over `maxmemory`.
    pub(crate) async fn schedule_retries(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[RetryItem],
    ) -> Result<Vec<Option<u64>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().retry.key(self.keys.lane(tenant));
        inv.key(self.keys.retry(tenant))
            .key(self.keys.stats_prefix(tenant));
        for item in items {
            inv.key(self.keys.steps(tenant, &item.entry_id));
        }
        inv.arg(&*self.group).arg(consumer).arg(stats_keep_ms());
        for item in items {
            inv.arg(&item.entry_id)
                .arg(item.delay.as_millis() as u64)
                .arg(&item.member);
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
    /// (`recorded_steps`) and its steps hash is deleted. One result per item.
    pub(crate) async fn defer(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[DeferItem],
    ) -> Result<Vec<Deferred>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = scripts().defer.key(k.lane(tenant));
        inv.key(k.deferred(tenant)).key(k.breaker(tenant));
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
