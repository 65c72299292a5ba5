//! A tenant's dead letters: reading them, server-side tallies, replay into the lane, removal
//! to the archive, purge by age.

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::{self, array, int_or_zero, pairs, text_or_empty, Entry};
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

    /// Replays dead letters of `tenant` into its lane (see scripts/replay.lua): each item is a
    /// dead-letter id and the replayed task's fields. Returns per item the new lane entry id, or
    /// `None` when the dead letter was already gone. `minute` is the stats bucket counting them.
    pub(crate) async fn replay(
        &self,
        tenant: &str,
        minute: u64,
        stats_keep: Duration,
        items: &[(String, crate::task::TaskFields)],
    ) -> Result<Vec<Option<String>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().replay.key(self.keys.dlq(tenant));
        inv.key(self.keys.lane(tenant))
            .key(self.keys.stats(tenant, minute))
            .arg(stats_keep.as_millis() as u64);
        for (id, fields) in items {
            inv.arg(id).arg(fields.len() * 2);
            for (k, v) in fields {
                inv.arg(k.as_ref()).arg(v);
            }
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let out: Vec<Option<String>> = array(v, "replay.lua", None)?
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
        Ok(out)
    }

    /// Moves dead letters of `tenant` to its archive of removed ones, stamped with the action,
    /// operator, reason and command (see scripts/dlq_remove.lua). Returns the ids removed.
    pub(crate) async fn dlq_remove(
        &self,
        tenant: &str,
        ids: &[&str],
        stamp: &Removal<'_>,
        archive_max_len: u64,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().dlq_remove.key(self.keys.dlq(tenant));
        inv.key(self.keys.dlq_removed(tenant))
            .arg(archive_max_len)
            .arg(stamp.action)
            .arg(stamp.operator)
            .arg(stamp.reason)
            .arg(stamp.command_id)
            .arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Deletes a tenant's dead letters with an id below `before_ms` (exact XTRIM MINID).
    /// Returns how many were deleted.
    pub(crate) async fn dlq_purge(&self, tenant: &str, before_ms: u64) -> Result<u64> {
        Ok(redis::cmd("XTRIM")
            .arg(self.keys.dlq(tenant))
            .arg("MINID")
            .arg(format!("{before_ms}-0"))
            .query_async(&mut self.con())
            .await?)
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
}
