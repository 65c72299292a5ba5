//! A tenant's dead letters: reading them, server-side tallies, replay into the lane, removal
//! to the archive, purge by age.

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::{self, array, hash, int_or_zero, pairs, text_or_empty, Entry};
use super::scripts::scripts;
use crate::error::{Error, Result};

/// Counts of one fingerprint in a tally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintTally {
    /// The fingerprint.
    pub fingerprint: String,
    /// Dead letters with it.
    pub count: u64,
    /// Their class.
    pub class: String,
    /// Their kind.
    pub kind: String,
    /// The error message of the first one seen.
    pub sample: String,
}

/// One page of [`Broker::dlq_tally`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyPage {
    /// Where the next page starts, `None` at the end.
    pub next: Option<String>,
    /// Entries read.
    pub scanned: u64,
    /// Entries matching the filter.
    pub matched: u64,
    /// The first matching id.
    pub oldest: Option<String>,
    /// Matching entries by class.
    pub classes: Vec<(String, u64)>,
    /// Matching entries by kind.
    pub kinds: Vec<(String, u64)>,
    /// Matching entries by fingerprint.
    pub fingerprints: Vec<FingerprintTally>,
}

/// One tenant's step of a filtered dead-letter scan ([`Broker::dlq_pages`], see
/// scripts/dlq_page.lua).
#[derive(Debug, Clone)]
pub struct PageScan<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Newest first (XREVRANGE) instead of oldest first.
    pub newest_first: bool,
    /// Where the step starts: an id, `(id` (exclusive), or the open end (`-`, `+` newest first).
    pub start: String,
    /// Where the scan ends, inclusive: an id or the open end.
    pub end: &'a str,
    /// Entries the step reads at most (≥ 1).
    pub budget: usize,
    /// Matches the step returns at most (≥ 1); it stops at the last one.
    pub want: usize,
    /// The criteria as dlq_page.lua reads them.
    pub filter_json: &'a str,
    /// The fields of each match returned (empty: all).
    pub fields: &'a [&'a str],
    /// Pass the tenant's review keys: the filter's review criteria (`states`, `assignees`,
    /// `members`) apply and each match's review comes back ([`ScanStep::reviews`]).
    pub review: bool,
}

/// What one step of a filtered scan read ([`Broker::dlq_pages`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanStep {
    /// Entries read.
    pub scanned: u64,
    /// The id of the last entry read; `None` when the range held nothing (more).
    pub last: Option<String>,
    /// The range has nothing after `last`.
    pub ended: bool,
    /// The matches, in scan order, with the fields asked for.
    pub matches: Vec<Entry>,
    /// With [`PageScan::review`], one per match: its review record's JSON (`""` without one;
    /// a fold member's is its representative's) and its fold's representative (`""` when
    /// none; the match's own id when it represents one). Empty otherwise.
    pub reviews: Vec<(String, String)>,
}

/// One group of a tenant's dead letters in its counts: those with one fingerprint, class and
/// kind ([`Broker::dlq_counts_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqGroup {
    /// The fingerprint (`""` for dead letters without one).
    pub fingerprint: String,
    /// Their class.
    pub class: String,
    /// Their kind (`""` for malformed entries without one).
    pub kind: String,
    /// How many.
    pub count: u64,
    /// The error of one dead letter with the fingerprint.
    pub sample: String,
}

/// A tenant's dead-letter counts, whole and in agreement with its stream
/// ([`Broker::dlq_counts_of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqCounts {
    /// Dead letters.
    pub total: u64,
    /// By fingerprint, class and kind.
    pub groups: Vec<DlqGroup>,
}

/// What one upkeep step of a tenant's dead-letter counts did ([`Broker::dlq_counts_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountsStep {
    /// The counts are whole and agree with the stream; nothing was written.
    Ok,
    /// A rebuild began (the counts were missing or disagreed with the stream).
    Started,
    /// A rebuild counted another page.
    Rebuilding,
    /// A rebuild counted its last page.
    Complete,
}

/// What a removal of dead letters stamps on the archived copies ([`Broker::dlq_remove`]).
#[derive(Debug, Clone, Copy)]
pub struct Removal<'a> {
    /// `resolve` or `discard`.
    pub action: &'a str,
    /// Who asked.
    pub operator: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The admin command that removed them.
    pub command_id: &'a str,
}

/// One dead letter to replay ([`Broker::replay`]).
#[derive(Debug, Clone)]
pub struct ReplayItem {
    /// The dead-letter id.
    pub dlq_id: String,
    /// The replayed task's id (`None`: no record is written).
    pub task_id: Option<String>,
    /// The replayed task's kind (for a record created by the replay).
    pub kind: String,
    /// The replayed task's fields.
    pub fields: crate::task::TaskFields,
}

/// A dead letter a removal or purge is about, with what its task's record needs.
#[derive(Debug, Clone)]
pub struct RecordTarget {
    /// The dead-letter id.
    pub dlq_id: String,
    /// Its task's id when valid (`None`: no record is written).
    pub task_id: Option<String>,
    /// Its task's kind (`""` when it has none).
    pub kind: String,
    /// How long the record is kept once the dead letter is gone (tasks.retention).
    pub retention: Duration,
}

impl RecordTarget {
    fn args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.arg(&self.dlq_id)
            .arg(self.task_id.as_deref().unwrap_or(""))
            .arg(&self.kind)
            .arg((self.retention.as_millis() as u64).max(1));
    }
}

/// Whole counts from a counts hash and the stream's length, or `None` when they are missing,
/// being rebuilt, or disagree with the length.
fn counts_from_hash(len: u64, h: &std::collections::HashMap<String, String>) -> Option<DlqCounts> {
    let total: u64 = h.get("n")?.parse().ok()?;
    if total != len || h.contains_key("rebuild_to") {
        return None;
    }
    let mut groups = Vec::new();
    for (k, v) in h {
        let Some(g) = k.strip_prefix("g:") else {
            continue;
        };
        let mut parts = g.splitn(3, '\u{1f}');
        let (Some(fingerprint), Some(class), Some(kind)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let count: u64 = v.parse().unwrap_or(0);
        if count == 0 {
            continue;
        }
        groups.push(DlqGroup {
            fingerprint: fingerprint.to_owned(),
            class: class.to_owned(),
            kind: kind.to_owned(),
            count,
            sample: h
                .get(&format!("s:{fingerprint}"))
                .cloned()
                .unwrap_or_default(),
        });
    }
    groups.sort_by(|a, b| {
        (&a.fingerprint, &a.class, &a.kind).cmp(&(&b.fingerprint, &b.class, &b.kind))
    });
    Some(DlqCounts { total, groups })
}

impl Broker {
    /// Entries in a tenant's dead-letter stream.
    pub(crate) async fn dlq_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.dlq(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Dead letters of a tenant from `start` to `end` (stream ids, `-`/`+` for the ends).
    pub(crate) async fn dlq_range(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq(tenant))
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        reply::entries(v)
    }

    /// The dead letters `ids` of a tenant in one round trip; `None` for ids that do not exist.
    pub(crate) async fn dlq_entries(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Entry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.dlq(tenant);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(&key).arg(*id).arg(*id);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        replies
            .into_iter()
            .map(|v| Ok(reply::entries(v)?.into_iter().next()))
            .collect()
    }

    /// Counts one page of a tenant's dead letters on the server (see scripts/dlq_tally.lua).
    /// `filter_json` holds the class, kind and fingerprint criteria.
    pub(crate) async fn dlq_tally(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
        filter_json: &str,
    ) -> Result<TallyPage> {
        let mut inv = scripts().dlq_tally.key(self.keys.dlq(tenant));
        inv.arg(start).arg(end).arg(count).arg(filter_json);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "dlq_tally.lua", None)?.into_iter();
        let mut next = || parts.next().unwrap_or(Value::Nil);
        let cursor = text_or_empty(next());
        let scanned = int_or_zero(next());
        let matched = int_or_zero(next());
        let oldest = text_or_empty(next());
        let classes = pairs(next(), "dlq_tally.lua classes")?;
        let kinds = pairs(next(), "dlq_tally.lua kinds")?;
        let mut fingerprints = Vec::new();
        let mut it = array(next(), "dlq_tally.lua fingerprints", None)?.into_iter();
        while let (Some(fp), Some(n), Some(class), Some(kind), Some(sample)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        {
            fingerprints.push(FingerprintTally {
                fingerprint: text_or_empty(fp),
                count: int_or_zero(n),
                class: text_or_empty(class),
                kind: text_or_empty(kind),
                sample: text_or_empty(sample),
            });
        }
        Ok(TallyPage {
            next: (!cursor.is_empty()).then_some(cursor),
            scanned,
            matched,
            oldest: (!oldest.is_empty()).then_some(oldest),
            classes,
            kinds,
            fingerprints,
        })
    }

    /// One step of a filtered scan of each tenant's dead letters, every step in one
    /// pipelined round trip (scripts/dlq_page.lua: matched on the server, so a rare filter
    /// moves only its matches).
    pub(crate) async fn dlq_pages(&self, steps: &[PageScan<'_>]) -> Result<Vec<ScanStep>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().dlq_page).ignore();
        for s in steps {
            let mut inv = scripts().dlq_page.key(self.keys.dlq(s.tenant));
            if s.review {
                inv.key(self.keys.dlq_review(s.tenant))
                    .key(self.keys.dlq_folds(s.tenant));
            }
            inv.arg(if s.newest_first { "desc" } else { "asc" })
                .arg(&s.start)
                .arg(s.end)
                .arg(s.budget.max(1))
                .arg(s.want.max(1))
                .arg(s.filter_json);
            for f in s.fields {
                inv.arg(*f);
            }
            pipe.invoke_script(&inv);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != steps.len() {
            return Err(Error::Protocol(format!(
                "dlq_page.lua answered {} times for {} tenants",
                replies.len(),
                steps.len()
            )));
        }
        replies
            .into_iter()
            .map(|v| {
                let mut parts = array(v, "dlq_page.lua", Some(4))?.into_iter();
                let mut next = || parts.next().unwrap_or(Value::Nil);
                let scanned = int_or_zero(next());
                let last = text_or_empty(next());
                let ended = int_or_zero(next()) == 1;
                let flat = array(next(), "dlq_page.lua matches", None)?;
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(id), Some(fields)) = (it.next(), it.next()) {
                    pairs.push(Value::Array(vec![id, fields]));
                }
                let mut reviews = Vec::new();
                let mut it = array(next(), "dlq_page.lua reviews", None)?.into_iter();
                while let (Some(record), Some(rep)) = (it.next(), it.next()) {
                    reviews.push((text_or_empty(record), text_or_empty(rep)));
                }
                Ok(ScanStep {
                    scanned,
                    last: (!last.is_empty()).then_some(last),
                    ended,
                    matches: reply::entries(Value::Array(pairs))?,
                    reviews,
                })
            })
            .collect()
    }

    /// The dead letter each tenant's record of `task_id` names (its `dlq` field while the
    /// record says `dead_lettered` or `expired`), one pipelined round trip; `None` for a
    /// tenant whose record names none (or that has no record).
    pub(crate) async fn dlq_ids_of_task(
        &self,
        tenants: &[String],
        task_id: &str,
    ) -> Result<Vec<Option<String>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("HMGET")
                .arg(self.keys.task(t, task_id))
                .arg(crate::records::field::STATE)
                .arg(crate::records::field::DLQ);
        }
        let rows: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut self.con()).await?;
        Ok(rows
            .into_iter()
            .map(|(state, dlq)| match state.as_deref() {
                Some("dead_lettered") | Some("expired") => dlq.filter(|d| !d.is_empty()),
                _ => None,
            })
            .collect())
    }

    /// Each tenant's dead-letter counts (scripts/lib/dlq_counts.lua) in one pipelined round
    /// trip, each read atomically with its stream's length; `None` for a tenant whose counts
    /// are missing, being rebuilt, or disagree with the stream (the reader must scan).
    pub(crate) async fn dlq_counts_of(&self, tenants: &[String]) -> Result<Vec<Option<DlqCounts>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().dlq_counts_read).ignore();
        for t in tenants {
            let mut inv = scripts().dlq_counts_read.key(self.keys.dlq(t));
            inv.key(self.keys.dlq_counts(t));
            pipe.invoke_script(&inv);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "dlq_counts_read.lua answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        replies
            .into_iter()
            .map(|v| {
                let mut parts = array(v, "dlq_counts_read.lua", Some(2))?.into_iter();
                let len = int_or_zero(parts.next().unwrap_or(Value::Nil));
                let h = hash(parts.next().unwrap_or(Value::Nil)).unwrap_or_default();
                Ok(counts_from_hash(len, &h))
            })
            .collect()
    }

    /// One upkeep step of `tenant`'s dead-letter counts (scripts/dlq_counts.lua): a check
    /// when they are whole, else a rebuild step of up to `page` entries.
    pub(crate) async fn dlq_counts_step(&self, tenant: &str, page: usize) -> Result<CountsStep> {
        let mut inv = scripts().dlq_counts.key(self.keys.dlq(tenant));
        inv.key(self.keys.dlq_counts(tenant)).arg(page.max(1));
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        counts_step(v)
    }

    /// One step of the counts upkeep ([`Broker::dlq_counts_step`]) of each of `tenants`, in one
    /// pipeline (on a cluster, one round trip per master): one answer per tenant, in order.
    pub(crate) async fn dlq_counts_steps(
        &self,
        tenants: &[std::sync::Arc<str>],
        page: usize,
    ) -> Result<Vec<Result<CountsStep>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().dlq_counts).ignore();
        for t in tenants {
            let mut inv = scripts().dlq_counts.key(self.keys.dlq(t));
            inv.key(self.keys.dlq_counts(t)).arg(page.max(1));
            pipe.invoke_script(&inv);
        }
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "dlq_counts.lua answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        Ok(replies
            .into_iter()
            .map(|r| r.map_err(Error::from).and_then(counts_step))
            .collect())
    }

    /// Replays dead letters of `tenant` into its lane (see scripts/replay.lua), with their
    /// tasks' records when `records` (tasks.enabled). Returns per item the new lane entry id,
    /// or `None` when the dead letter was already gone, and how many records were written.
    /// `minute` is the stats bucket counting them.
    pub(crate) async fn replay(
        &self,
        tenant: &str,
        minute: u64,
        stats_keep: Duration,
        records: bool,
        items: &[ReplayItem],
    ) -> Result<(Vec<Option<String>>, u64)> {
        if items.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut inv = scripts().replay.key(self.keys.dlq(tenant));
        inv.key(self.keys.lane(tenant))
            .key(self.keys.stats(tenant, minute))
            .key(self.keys.task_prefix(tenant))
            .key(self.keys.tasks(tenant))
            .key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_review(tenant))
            .key(self.keys.dlq_folds(tenant))
            .arg(stats_keep.as_millis() as u64)
            .arg(if records { "1" } else { "0" });
        for item in items {
            inv.arg(&item.dlq_id)
                .arg(item.task_id.as_deref().unwrap_or(""))
                .arg(&item.kind)
                .arg(item.fields.len() * 2);
            for (k, v) in &item.fields {
                inv.arg(k.as_ref()).arg(v);
            }
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "replay.lua", Some(2))?.into_iter();
        let ids = parts.next().unwrap_or(Value::Nil);
        let written = int_or_zero(parts.next().unwrap_or(Value::Nil));
        let out: Vec<Option<String>> = array(ids, "replay.lua ids", None)?
            .into_iter()
            .map(|v| Some(text_or_empty(v)).filter(|s| !s.is_empty()))
            .collect();
        if out.len() != items.len() {
            return Err(Error::Protocol(format!(
                "replay.lua answered {} items for {}",
                out.len(),
                items.len()
            )));
        }
        Ok((out, written))
    }

    /// Moves dead letters of `tenant` to its stream of removed ones (archived after the grace
    /// period), stamped with the action, operator, reason and command, their tasks' records
    /// `resolved` / `discarded` with their retention when `records` (see
    /// scripts/dlq_remove.lua). Returns the ids removed, how many records were written and how
    /// many removed ones the hard ceiling deleted without an archive.
    pub(crate) async fn dlq_remove(
        &self,
        tenant: &str,
        targets: &[RecordTarget],
        stamp: &Removal<'_>,
        hard_max_len: u64,
        records: bool,
    ) -> Result<(Vec<String>, u64, u64)> {
        if targets.is_empty() {
            return Ok((Vec::new(), 0, 0));
        }
        let mut inv = scripts().dlq_remove.key(self.keys.dlq(tenant));
        inv.key(self.keys.dlq_removed(tenant))
            .key(self.keys.task_prefix(tenant))
            .key(self.keys.tasks(tenant))
            .key(self.keys.events(tenant))
            .key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_dropped(tenant))
            .key(self.keys.dlq_review(tenant))
            .key(self.keys.dlq_folds(tenant))
            .arg(hard_max_len)
            .arg(stamp.action)
            .arg(stamp.operator)
            .arg(stamp.reason)
            .arg(stamp.command_id)
            .arg(if records { "1" } else { "0" });
        for t in targets {
            t.args(&mut inv);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "dlq_remove.lua", Some(3))?.into_iter();
        let removed = array(
            parts.next().unwrap_or(Value::Nil),
            "dlq_remove.lua ids",
            None,
        )?
        .into_iter()
        .map(text_or_empty)
        .collect();
        let written = int_or_zero(parts.next().unwrap_or(Value::Nil));
        Ok((
            removed,
            written,
            int_or_zero(parts.next().unwrap_or(Value::Nil)),
        ))
    }

    /// Up to `count` of a tenant's dead letters with an id below `before_ms`, oldest first:
    /// the next page a purge with records deletes.
    pub(crate) async fn dlq_before(
        &self,
        tenant: &str,
        before_ms: u64,
        count: usize,
    ) -> Result<Vec<Entry>> {
        self.dlq_range(tenant, "-", &format!("({before_ms}-0"), count)
            .await
    }

    /// Deletes the dead letters `targets` of `tenant` for good, their tasks' records
    /// `discarded` with their retention when `records` (see scripts/dlq_purge.lua). Returns
    /// how many were deleted and how many records were written.
    pub(crate) async fn dlq_purge_entries(
        &self,
        tenant: &str,
        targets: &[RecordTarget],
        records: bool,
    ) -> Result<(u64, u64)> {
        if targets.is_empty() {
            return Ok((0, 0));
        }
        let mut inv = scripts().dlq_purge.key(self.keys.dlq(tenant));
        inv.key(self.keys.task_prefix(tenant))
            .key(self.keys.tasks(tenant))
            .key(self.keys.events(tenant))
            .key(self.keys.dlq_counts(tenant))
            .key(self.keys.dlq_review(tenant))
            .key(self.keys.dlq_folds(tenant))
            .arg(if records { "1" } else { "0" });
        for t in targets {
            t.args(&mut inv);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "dlq_purge.lua", Some(2))?.into_iter();
        let deleted = int_or_zero(parts.next().unwrap_or(Value::Nil));
        Ok((deleted, int_or_zero(parts.next().unwrap_or(Value::Nil))))
    }

    /// Removed dead letters of a tenant (its archive), oldest first.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn dlq_removed_range(
        &self,
        tenant: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq_removed(tenant))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        reply::entries(v)
    }

    /// Appends a dead letter by hand (`XADD`, no script, no record, no count; the tenant
    /// registered): what another tool or an operator's `redis-cli` might do. `id` is `*` or an
    /// explicit id. Tests only.
    #[cfg(test)]
    pub(crate) async fn dlq_append_raw(
        &self,
        tenant: &str,
        id: &str,
        fields: &[(&str, String)],
    ) -> Result<String> {
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(self.keys.tenants())
            .arg(tenant)
            .ignore();
        let add = pipe.cmd("XADD").arg(self.keys.dlq(tenant)).arg(id);
        for (k, v) in fields {
            add.arg(*k).arg(v);
        }
        let (id,): (String,) = pipe.query_async(&mut self.con()).await?;
        Ok(id)
    }

    /// Writes fields of a task's record by hand (`HSET`). Tests only.
    #[cfg(test)]
    pub(crate) async fn task_record_set_raw(
        &self,
        tenant: &str,
        task_id: &str,
        fields: &[(&str, &str)],
    ) -> Result<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.task(tenant, task_id));
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: i64 = cmd.query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Deletes a tenant's dead-letter counts (as before they existed). Tests only.
    #[cfg(test)]
    pub(crate) async fn dlq_counts_delete(&self, tenant: &str) -> Result<()> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.dlq_counts(tenant))
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }
}

/// A dlq_counts.lua answer.
fn counts_step(v: Value) -> Result<CountsStep> {
    let mut parts = array(v, "dlq_counts.lua", Some(2))?.into_iter();
    match text_or_empty(parts.next().unwrap_or(Value::Nil)).as_str() {
        "ok" => Ok(CountsStep::Ok),
        "started" => Ok(CountsStep::Started),
        "rebuilding" => Ok(CountsStep::Rebuilding),
        "complete" => Ok(CountsStep::Complete),
        other => Err(Error::Protocol(format!(
            "dlq_counts.lua answered state '{other}'"
        ))),
    }
}
