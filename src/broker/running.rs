//! Entries about to run and running: the start mark of fresh entries (their delivery count),
//! the re-delivery of a taken-over one ([`Broker::begin`]), and heartbeats that keep running
//! entries fresh and report the ones this member lost.

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
}

/// The `ids` a script's answer did not name, in order.
fn not_in<'a>(ids: &[&str], named: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let named: std::collections::HashSet<&str> = named.into_iter().map(String::as_str).collect();
    ids.iter()
        .filter(|id| !named.contains(**id))
        .map(|id| id.to_string())
        .collect()
}

impl Broker {
    /// Records that entries of `tenant`'s lane read fresh by `consumer` start now (see
    /// scripts/start.lua: owner check + delivery count + 1, one call for the batch). Only the
    /// returned `started` ones may run.
    pub(crate) async fn start(&self, tenant: &str, consumer: &str, ids: &[&str]) -> Result<Starts> {
        let Some((lo, hi)) = id_range(ids) else {
            return Ok(Starts::default());
        };
        let mut inv = scripts().start.key(self.keys.lane(tenant));
        inv.arg(&*self.group).arg(consumer).arg(lo).arg(hi).arg(ids);
        let (started, gone): (Vec<String>, Vec<String>) = inv.invoke_async(&mut self.con()).await?;
        let lost = not_in(ids, started.iter().chain(&gone));
        Ok(Starts {
            started,
            gone,
            lost,
        })
    }

    /// Records the start of fresh entries that no other consumer can have taken over yet (read
    /// by `consumer` within the fast window, see the settler's fast ack, so their delivery count
    /// is still the read's 1): one `XCLAIM … RETRYCOUNT 2 JUSTID`, without start.lua's owner
    /// check. Ids not claimed were deleted while pending (`gone`).
    pub(crate) async fn start_unclaimable(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> Result<Starts> {
        if ids.is_empty() {
            return Ok(Starts::default());
        }
        let started: Vec<String> = redis::cmd("XCLAIM")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("RETRYCOUNT")
            .arg(2)
            .arg("JUSTID")
            .query_async(&mut self.con())
            .await?;
        let gone = not_in(ids, &started);
        Ok(Starts {
            started,
            gone,
            lost: Vec::new(),
        })
    }

    /// Starts a taken-over entry: checks `consumer` still owns it and records the delivery.
    /// Its fields carry the steps recorded for it so far (`recorded_steps`, see
    /// scripts/begin.lua).
    pub(crate) async fn begin(&self, tenant: &str, consumer: &str, id: &str) -> Result<Begin> {
        self.begin_on(
            self.keys.lane(tenant),
            Some(self.keys.steps(tenant, id)),
            consumer,
            id,
        )
        .await
    }

    /// begin.lua on any stream read through the fleet's group (a lane, with the entry's steps
    /// hash, or the admin stream).
    pub(crate) async fn begin_on(
        &self,
        stream: String,
        steps: Option<String>,
        consumer: &str,
        id: &str,
    ) -> Result<Begin> {
        let mut inv = scripts().begin.key(stream);
        if let Some(steps) = steps {
            inv.key(steps);
        }
        inv.arg(&*self.group).arg(consumer).arg(id);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
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
            other => Err(Error::Protocol(format!("begin script returned {other:?}"))),
        }
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
