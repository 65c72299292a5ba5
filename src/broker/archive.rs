//! The Redis side of the dead-letter archive: what is due to leave Redis, the archiver's lease
//! and its recorded batch, the removal of a confirmed batch, and restores (see
//! src/fleet/archiver.rs for the protocol, scripts/archive_*.lua, dlq_archived.lua and
//! dlq_restore.lua for the atomic steps).

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::{self, array, hash, int_or_zero, text_or_empty, Entry};
use super::scripts::scripts;
use crate::error::{Error, Result};

/// Which stream a batch leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveSource {
    /// The dead-letter stream (past the cap or the retention).
    Dlq,
    /// The stream of resolved and discarded dead letters (past the grace period).
    Removed,
}

impl ArchiveSource {
    /// The wire name recorded with a batch.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveSource::Dlq => "dlq",
            ArchiveSource::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Option<ArchiveSource> {
        match s {
            "dlq" => Some(ArchiveSource::Dlq),
            "removed" => Some(ArchiveSource::Removed),
            _ => None,
        }
    }
}

/// A batch recorded before its upload (scripts/archive_begin.lua).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    /// The stream its entries leave.
    pub source: ArchiveSource,
    /// Its archive class (`dead_letter`, `resolved`, `discarded`).
    pub class: String,
    /// The data object's path.
    pub object: String,
    /// When it was begun, ms.
    pub begun_ms: u64,
    /// The entries' ids in the source stream, oldest first.
    pub ids: Vec<String>,
}

/// What recording a batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchBegin {
    /// Recorded: upload it.
    Recorded,
    /// This member no longer holds the lease: nothing recorded.
    NotLeased,
    /// Another batch is recorded: resume that one.
    Pending,
}

/// What is due to leave a tenant's Redis now ([`Broker::archive_due`]).
#[derive(Debug, Clone, Default)]
pub struct Due {
    /// The oldest dead letters due (past the cap or the retention), at most one batch.
    pub dead_letters: Vec<Entry>,
    /// Dead letters due in all: past the cap, or past the retention among the first batch.
    pub dead_letters_due: u64,
    /// The oldest removed ones past the grace period, at most one batch.
    pub removed: Vec<Entry>,
}

/// One entry of a confirmed batch, as its removal needs it.
#[derive(Debug, Clone)]
pub struct ArchivedItem {
    /// Its id in the source stream.
    pub source_id: String,
    /// Its dead-letter id (what its task's record names in `dlq`).
    pub dead_letter_id: String,
    /// Its task's id when valid (`None`: no record).
    pub task_id: Option<String>,
    /// How long its record is kept from now (a dead letter's; a removed one keeps its own).
    pub retention: Duration,
    /// The review record its archived copy carries (`""` for none): a dead letter leaves only
    /// while its record is still this one.
    pub review: String,
}

/// What became of a batch's removal ([`Broker::archive_remove`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRemoval {
    /// Removed: the source ids that left (those already gone left out), and the records
    /// written.
    Removed(Vec<String>, u64),
    /// The batch recorded is another one (or none): another member finished it.
    Elsewhere,
    /// Nothing was removed: these dead letters' review records changed since they were read
    /// (write the object again with the records as they are now, then remove).
    ReviewChanged(Vec<String>),
}

/// One archived dead letter to restore ([`Broker::dlq_restore`]).
#[derive(Debug, Clone)]
pub struct RestoreItem {
    /// Its archived dead-letter id.
    pub archived_id: String,
    /// Its task's id when valid.
    pub task_id: Option<String>,
    /// Its kind (for a record the restore creates).
    pub kind: String,
    /// The fields it goes back with.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What became of one restored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// Back in the stream under this id.
    Restored(String),
    /// Restored before, as this id: nothing written.
    Already(String),
    /// The stream is at its hard ceiling: nothing written.
    Full,
}

impl Broker {
    /// Takes or extends `tenant`'s archiver lease for `token`; `false` when another member
    /// holds it.
    pub(crate) async fn archive_lease(
        &self,
        tenant: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut inv = scripts().archive_lease.key(self.keys.archive_lease(tenant));
        inv.arg(token).arg((ttl.as_millis() as u64).max(1));
        let held: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(held == 1)
    }

    /// Gives `tenant`'s archiver lease up if `token` holds it.
    pub(crate) async fn archive_lease_release(&self, tenant: &str, token: &str) -> Result<()> {
        let mut inv = scripts().archive_lease.key(self.keys.archive_lease(tenant));
        inv.arg(token).arg("0");
        let _: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(())
    }

    /// The batch recorded for `tenant`, if any. An unreadable one is an error (it is left for
    /// an operator: nothing of it is removed).
    pub(crate) async fn archive_pending(&self, tenant: &str) -> Result<Option<PendingBatch>> {
        let v: Value = redis::cmd("HGETALL")
            .arg(self.keys.archive_batch(tenant))
            .query_async(&mut self.con())
            .await?;
        let Some(h) = hash(v).filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let bad = |what: &str| {
            Error::Protocol(format!(
                "the archive batch of tenant {tenant} ({}) has no readable '{what}'",
                self.keys.archive_batch(tenant)
            ))
        };
        let source = h
            .get("source")
            .and_then(|s| ArchiveSource::parse(s))
            .ok_or_else(|| bad("source"))?;
        let object = h.get("object").cloned().ok_or_else(|| bad("object"))?;
        let class = h.get("class").cloned().ok_or_else(|| bad("class"))?;
        let begun_ms = h
            .get("begun")
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| bad("begun"))?;
        let ids: Vec<String> = h
            .get("ids")
            .ok_or_else(|| bad("ids"))?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some(PendingBatch {
            source,
            class,
            object,
            begun_ms,
            ids,
        }))
    }

    /// Records `batch` for `tenant` before its upload, while `token` holds the lease.
    pub(crate) async fn archive_begin(
        &self,
        tenant: &str,
        token: &str,
        batch: &PendingBatch,
    ) -> Result<BatchBegin> {
        let mut inv = scripts().archive_begin.key(self.keys.archive_lease(tenant));
        inv.key(self.keys.archive_batch(tenant))
            .arg(token)
            .arg(batch.source.as_str())
            .arg(&batch.class)
            .arg(&batch.object)
            .arg(batch.begun_ms)
            .arg(batch.ids.join(","));
        let r: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(match r {
            1 => BatchBegin::Recorded,
            -1 => BatchBegin::Pending,
            _ => BatchBegin::NotLeased,
        })
    }

    /// What is due to leave `tenant`'s Redis, in one pipelined round trip: the dead-letter
    /// stream's oldest entries beyond `cap` or dead-lettered before `retention_before_ms`, and
    /// removed ones from before `removed_before_ms`; at most `batch` of each.
    pub(crate) async fn archive_due(
        &self,
        tenant: &str,
        cap: u64,
        retention_before_ms: Option<u64>,
        removed_before_ms: u64,
        batch: usize,
    ) -> Result<Due> {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(self.keys.dlq(tenant));
        pipe.cmd("XRANGE")
            .arg(self.keys.dlq(tenant))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(batch);
        pipe.cmd("XRANGE")
            .arg(self.keys.dlq_removed(tenant))
            .arg("-")
            .arg(format!("({removed_before_ms}-0"))
            .arg("COUNT")
            .arg(batch);
        let (len, oldest, removed): (u64, Value, Value) = pipe.query_async(&mut self.con()).await?;
        let oldest = reply::entries(oldest)?;
        let past_cap = len.saturating_sub(cap);
        let past_retention = match retention_before_ms {
            Some(cut) => oldest
                .iter()
                .take_while(|e| id_ms(&e.id).is_some_and(|ms| ms < cut))
                .count() as u64,
            None => 0,
        };
        let due = past_cap.max(past_retention);
        let take = (due as usize).min(batch);
        Ok(Due {
            dead_letters: oldest.into_iter().take(take).collect(),
            dead_letters_due: due,
            removed: reply::entries(removed)?,
        })
    }

    /// The entries `ids` of a batch's source stream, in one round trip; `None` for ids gone.
    pub(crate) async fn archive_entries(
        &self,
        tenant: &str,
        source: ArchiveSource,
        ids: &[String],
    ) -> Result<Vec<Option<Entry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = match source {
            ArchiveSource::Dlq => self.keys.dlq(tenant),
            ArchiveSource::Removed => self.keys.dlq_removed(tenant),
        };
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(&key).arg(id).arg(id);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        replies
            .into_iter()
            .map(|v| {
                Ok(reply::entries(v)?
                    .into_iter()
                    .next()
                    .filter(|e| e.fields.is_some()))
            })
            .collect()
    }

    /// Removes the entries of `tenant`'s confirmed batch `object` from Redis with their counts
    /// and records (scripts/dlq_archived.lua): the ids removed and how many records were
    /// written; nothing is written when the batch recorded is not `object` any more (another
    /// member finished it) or when a dead letter's review record is no longer the one its
    /// archived copy carries.
    pub(crate) async fn archive_remove(
        &self,
        tenant: &str,
        source: ArchiveSource,
        object: &str,
        items: &[ArchivedItem],
        records: bool,
    ) -> Result<ArchiveRemoval> {
        let src = match source {
            ArchiveSource::Dlq => self.keys.dlq(tenant),
            ArchiveSource::Removed => self.keys.dlq_removed(tenant),
        };
        let mut inv = scripts().dlq_archived.key(src);
        inv.key(self.keys.archive_batch(tenant))
            .key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_trimmed(tenant));
        if records {
            inv.key(self.keys.task_prefix(tenant))
                .key(self.keys.tasks(tenant))
                .key(self.keys.events(tenant));
        } else {
            inv.key(self.keys.records_off(tenant))
                .key(self.keys.tasks(tenant))
                .key(self.keys.events(tenant));
        }
        inv.key(self.keys.dlq_review(tenant))
            .key(self.keys.dlq_folds(tenant));
        inv.arg(object).arg(source.as_str());
        for it in items {
            inv.arg(&it.source_id)
                .arg(&it.dead_letter_id)
                .arg(it.task_id.as_deref().unwrap_or(""))
                .arg((it.retention.as_millis() as u64).max(1))
                .arg(&it.review);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "dlq_archived.lua", Some(2))?.into_iter();
        let first = parts.next().unwrap_or(Value::Nil);
        let second = parts.next().unwrap_or(Value::Nil);
        let texts = |v: Value, what: &str| -> Result<Vec<String>> {
            Ok(array(v, what, None)?
                .into_iter()
                .map(text_or_empty)
                .collect())
        };
        match first {
            Value::Int(-1) => Ok(ArchiveRemoval::Elsewhere),
            Value::Int(-2) => Ok(ArchiveRemoval::ReviewChanged(texts(
                second,
                "dlq_archived.lua changed ids",
            )?)),
            first => Ok(ArchiveRemoval::Removed(
                texts(first, "dlq_archived.lua ids")?,
                int_or_zero(second),
            )),
        }
    }

    /// Puts archived dead letters back into `tenant`'s stream (scripts/dlq_restore.lua), each
    /// at most once, with their records when `records`; none while the stream is at
    /// `ceiling`.
    pub(crate) async fn dlq_restore(
        &self,
        tenant: &str,
        ceiling: u64,
        records: bool,
        items: &[RestoreItem],
    ) -> Result<Vec<RestoreOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().dlq_restore.key(self.keys.dlq(tenant));
        inv.key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_restored(tenant));
        if records {
            inv.key(self.keys.task_prefix(tenant));
        } else {
            inv.key(self.keys.records_off(tenant));
        }
        inv.key(self.keys.tasks(tenant))
            .key(self.keys.events(tenant))
            .arg(ceiling);
        for it in items {
            inv.arg(&it.archived_id)
                .arg(it.task_id.as_deref().unwrap_or(""))
                .arg(&it.kind)
                .arg(it.fields.len() * 2);
            for (k, v) in &it.fields {
                inv.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let rows = array(v, "dlq_restore.lua", Some(items.len()))?;
        rows.into_iter()
            .map(|row| {
                let mut p = array(row, "dlq_restore.lua row", Some(3))?.into_iter();
                let _old = p.next();
                let id = text_or_empty(p.next().unwrap_or(Value::Nil));
                match text_or_empty(p.next().unwrap_or(Value::Nil)).as_str() {
                    "restored" => Ok(RestoreOutcome::Restored(id)),
                    "already" => Ok(RestoreOutcome::Already(id)),
                    "full" => Ok(RestoreOutcome::Full),
                    other => Err(Error::Protocol(format!(
                        "dlq_restore.lua answered '{other}'"
                    ))),
                }
            })
            .collect()
    }

    /// The ids archived dead letters of `tenant` were restored as, one per id (`None`: not
    /// restored).
    pub(crate) async fn dlq_restored_as(
        &self,
        tenant: &str,
        archived_ids: &[&str],
    ) -> Result<Vec<Option<String>>> {
        if archived_ids.is_empty() {
            return Ok(Vec::new());
        }
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.dlq_restored(tenant))
            .arg(archived_ids)
            .query_async(&mut self.con())
            .await?;
        Ok(v)
    }

    /// A tenant's counters of dead letters that left the stream for the cap or the retention
    /// (`trimmed`) and of those deleted without an archive (`dropped`).
    #[cfg(test)]
    pub(crate) async fn dlq_left_counts(&self, tenant: &str) -> Result<(u64, u64)> {
        let (t, d): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(self.keys.dlq_trimmed(tenant))
            .arg(self.keys.dlq_dropped(tenant))
            .query_async(&mut self.con())
            .await?;
        Ok((t.unwrap_or(0), d.unwrap_or(0)))
    }
}

/// The ms part of a stream id.
pub(crate) fn id_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}
