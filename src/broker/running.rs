//! Entries about to run and running: the start mark of fresh entries (their delivery count
//! and their task records), the re-delivery of a taken-over one ([`Broker::begin`]), and
//! heartbeats that keep running entries fresh and report the ones this member lost.

use redis::Value;

use super::connect::Broker;
use super::lanes::id_range;
use super::reply::{self, Fields};
use super::scripts::scripts;
use crate::error::{Error, Result};

/// What [`Broker::start`] found for a batch of entries about to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Starts {
    /// Entries whose start is now recorded: they may run.
    pub started: Vec<String>,
    /// Entries that were deleted while pending (tombstones, now gone from the PEL too).
    pub gone: Vec<String>,
    /// Entries no longer pending for this consumer (reclaimed or settled elsewhere): they
    /// must not run here.
    pub lost: Vec<String>,
    /// Entries whose task's record is already `done` (asked with `refuse_done`): not started,
    /// still pending here; the member acks them without running them.
    pub duplicates: Vec<String>,
}

/// One fresh entry about to start, with what its task record needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartEntry<'a> {
    /// The lane entry id.
    pub id: &'a str,
    /// The task's id (its record's name).
    pub task_id: &'a str,
    /// The attempt about to start.
    pub attempt: u32,
    /// The task's kind.
    pub kind: &'a str,
    /// Whether the entry carries `recorded` (its record was written when it was appended): its
    /// start marks the record running without reading it.
    pub recorded: bool,
}

/// How a start treats task records (lib/record.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartRecords {
    /// Whether records are written (`tasks.enabled`).
    pub on: bool,
    /// Whether a task already `done` is refused (`tasks.dedup` of the tenant): not started,
    /// reported as a duplicate.
    pub refuse_done: bool,
}

/// What one heartbeat found besides the entries it refreshed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Beat {
    /// Entries now pending for another consumer: lost to a reclaim.
    pub taken: Vec<String>,
    /// Entries pending for nobody: settled, by this member (a settle racing the beat) or by
    /// another one after a reclaim.
    pub gone: Vec<String>,
}

/// What [`Broker::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Another consumer owns the entry now.
    Lost,
    /// The entry was deleted; its pending id is gone too.
    Tombstone,
    /// The entry's fields; it may run.
    Run(Fields),
    /// Its task (this task_id) is already `done` (asked with `refuse_done`): not started, its
    /// record untouched; the member acks it without running it.
    Duplicate(String),
}

/// The `ids` a script's answer did not name, in order.
fn not_in<'a>(ids: &[&str], named: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let named: std::collections::HashSet<&str> = named.into_iter().map(String::as_str).collect();
    ids.iter()
        .filter(|id| !named.contains(**id))
        .map(|id| id.to_string())
        .collect()
}

/// '1' or '0', as the scripts take a flag.
pub(super) fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// The start scripts' quadruples: entry id, task_id, attempt, kind.
fn start_args(inv: &mut redis::ScriptInvocation<'_>, entries: &[StartEntry<'_>]) {
    for e in entries {
        inv.arg(e.id)
            .arg(e.task_id)
            .arg(e.attempt)
            .arg(e.kind)
            .arg(if e.recorded { "1" } else { "0" });
    }
}

/// Reads begin.lua's answer about entry `id`.
fn begin_reply(v: Value, id: &str) -> Result<Begin> {
    let Value::Array(parts) = v else {
        return Err(Error::Protocol("begin script returned a non-array".into()));
    };
    let mut parts = parts.into_iter();
    match parts.next() {
        Some(Value::Int(0)) => Ok(Begin::Lost),
        Some(Value::Int(1)) => Ok(Begin::Tombstone),
        Some(Value::Int(2)) => {
            let entries = reply::entries(Value::Array(vec![Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                parts.next().unwrap_or(Value::Nil),
            ])]))?;
            Ok(Begin::Run(
                entries
                    .into_iter()
                    .next()
                    .and_then(|e| e.fields)
                    .unwrap_or_default(),
            ))
        }
        Some(Value::Int(3)) => match parts.next() {
            Some(Value::BulkString(b)) => {
                Ok(Begin::Duplicate(String::from_utf8_lossy(&b).into_owned()))
            }
            other => Err(Error::Protocol(format!(
                "begin script named a duplicate as {other:?}"
            ))),
        },
        other => Err(Error::Protocol(format!("begin script returned {other:?}"))),
    }
}

impl Broker {
    /// Records that entries of `tenant`'s lane read fresh by `consumer` start now (see
    /// scripts/start.lua: owner check + delivery count + 1, and each task's record `running`,
    /// one call for the batch). Only the returned `started` ones may run.
    pub(crate) async fn start(
        &self,
        tenant: &str,
        consumer: &str,
        entries: &[StartEntry<'_>],
        records: StartRecords,
    ) -> Result<Starts> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id).collect();
        let Some((lo, hi)) = id_range(&ids) else {
            return Ok(Starts::default());
        };
        let mut inv = scripts().start.key(self.keys.lane(tenant));
        self.record_keys(&mut inv, tenant, records.on, false);
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(lo)
            .arg(hi)
            .arg(flag(records.refuse_done));
        start_args(&mut inv, entries);
        let (started, gone, duplicates): (Vec<String>, Vec<String>, Vec<String>) =
            inv.invoke_async(&mut self.con()).await?;
        let lost = not_in(&ids, started.iter().chain(&gone).chain(&duplicates));
        Ok(Starts {
            started,
            gone,
            lost,
            duplicates,
        })
    }

    /// Records the start of fresh entries that no other consumer can have taken over yet (read
    /// by `consumer` within the fast window, see the settler's fast ack, so their delivery count
    /// is still the read's 1): `XCLAIM … RETRYCOUNT 2 JUSTID` without start.lua's owner check.
    /// When records are on and an entry was not appended with its record (a raw XADD), the
    /// batch goes through scripts/start_fast.lua, which also writes those records `running`
    /// (and refuses done duplicates); otherwise nothing but the XCLAIM is needed (see
    /// lib/record.lua, Running). Ids not claimed were deleted while pending (`gone`).
    pub(crate) async fn start_unclaimable(
        &self,
        tenant: &str,
        consumer: &str,
        entries: &[StartEntry<'_>],
        records: StartRecords,
    ) -> Result<Starts> {
        if entries.is_empty() {
            return Ok(Starts::default());
        }
        if !records.on || entries.iter().all(|e| e.recorded) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(self.keys.lane(tenant))
                .arg(&*self.group)
                .arg(consumer)
                .arg(0);
            for e in entries {
                cmd.arg(e.id);
            }
            cmd.arg("RETRYCOUNT").arg(2).arg("JUSTID");
            let started: Vec<String> = cmd.query_async(&mut self.con()).await?;
            let gone = not_in(
                &entries.iter().map(|e| e.id).collect::<Vec<_>>(),
                started.iter(),
            );
            return Ok(Starts {
                started,
                gone,
                lost: Vec::new(),
                duplicates: Vec::new(),
            });
        }
        let mut inv = scripts().start_fast.key(self.keys.lane(tenant));
        self.record_keys(&mut inv, tenant, records.on, false);
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(flag(records.refuse_done));
        start_args(&mut inv, entries);
        let (started, gone, duplicates): (Vec<String>, Vec<String>, Vec<String>) =
            inv.invoke_async(&mut self.con()).await?;
        Ok(Starts {
            started,
            gone,
            lost: Vec::new(),
            duplicates,
        })
    }

    /// Starts a taken-over entry: checks `consumer` still owns it, records the delivery and
    /// its task's record `running` (see scripts/begin.lua; a run that died there goes into
    /// the record's history with `previous`, whom the entry was pending for before the
    /// claim). Its fields carry the steps recorded for it so far (`recorded_steps`).
    pub(crate) async fn begin(
        &self,
        tenant: &str,
        consumer: &str,
        id: &str,
        records: StartRecords,
        previous: Option<&str>,
    ) -> Result<Begin> {
        let mut inv = scripts().begin.key(self.keys.lane(tenant));
        inv.key(self.keys.steps(tenant, id));
        self.record_keys(&mut inv, tenant, records.on, false);
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(id)
            .arg(flag(records.refuse_done))
            .arg(previous.unwrap_or(""));
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        begin_reply(v, id)
    }

    /// begin.lua on a stream read through the fleet's group that holds no tasks (the admin
    /// stream): owner check + delivery, no steps, no record.
    pub(crate) async fn begin_on(&self, stream: String, consumer: &str, id: &str) -> Result<Begin> {
        let mut inv = scripts().begin.key(stream);
        inv.arg(&*self.group).arg(consumer).arg(id);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        begin_reply(v, id)
    }

    /// Refreshes the idle time of the entries `consumer` still owns; reports the others, those
    /// another consumer took apart from those no longer pending at all.
    pub(crate) async fn heartbeat(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> Result<Beat> {
        if ids.is_empty() {
            return Ok(Beat::default());
        }
        let mut inv = scripts().heartbeat.key(self.keys.lane(tenant));
        inv.arg(&*self.group).arg(consumer).arg(ids);
        let (taken, gone) = inv.invoke_async(&mut self.con()).await?;
        Ok(Beat { taken, gone })
    }
}
