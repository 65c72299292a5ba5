//! The review of dead letters (scripts/lib/review.lua): the moves (assign, escalate, note), folds
//! by fingerprint, the records and counts as stored, and the bounded step towards the oldest
//! unowned dead letter. The records are read here as their JSON; `admin::review` gives them a
//! type.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;

use super::connect::Broker;
use super::notify_plan::NotifyEvent;
use super::reply::{array, int_or_zero, text_or_empty};
use super::scripts::scripts;
use crate::error::{Error, Result};

/// One review move on listed dead letters ([`Broker::dlq_review`]).
#[derive(Debug, Clone, Copy)]
pub struct ReviewMove<'a> {
    /// `assign`, `escalate` or `note`.
    pub action: &'a str,
    /// The assignee, the escalation's target (`tenant` or a team), or the note's text.
    pub arg: &'a str,
    /// Who asked.
    pub operator: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The admin command making the move.
    pub command_id: &'a str,
}

/// What a review move came to ([`Broker::dlq_review`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Nothing was written: these ids are gone (`gone`) or members of a fold
    /// (`folded:<representative>`).
    Refused(Vec<(String, String)>),
    /// Done: per id whether it changed (`false`: it already was so), and the notification
    /// appended to the tenant's outbox, if any.
    Done {
        /// Per id, in order: whether it moved.
        moved: Vec<(String, bool)>,
        /// The outbox entry of an escalation to the tenant.
        event: Option<String>,
    },
}

/// What a fold came to ([`Broker::dlq_fold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldOutcome {
    /// Folded under the representative; `merged` review records of members were merged in.
    Folded {
        /// The representative.
        representative: String,
        /// Members' records merged into its record.
        merged: u64,
    },
    /// The fingerprint was folded already, under this representative.
    Exists(String),
    /// The representative is no dead letter of that fingerprint (any more).
    Gone,
    /// The fingerprint's review records changed meanwhile: look again.
    Stale,
}

/// A tenant's review records by state and its folds ([`Broker::dlq_review_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCounts {
    /// Records in review.
    pub in_review: u64,
    /// Records escalated.
    pub escalated: u64,
    /// The folds: fingerprint → representative.
    pub folds: HashMap<String, String>,
}

/// A step towards a tenant's oldest unowned dead letter ([`Broker::dlq_unowned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unowned {
    /// The oldest unowned dead letter.
    Found(String),
    /// Every dead letter is owned (or there is none).
    None,
    /// Not known yet: the step's budget ran out (the next step goes on).
    More,
}

impl Broker {
    /// One review move on dead letters `ids` of `tenant`, all or nothing
    /// (scripts/dlq_review.lua); an escalation to the tenant appends one notification when its
    /// targets want escalations.
    pub(crate) async fn dlq_review(
        &self,
        tenant: &str,
        mv: &ReviewMove<'_>,
        ids: &[&str],
    ) -> Result<ReviewOutcome> {
        if ids.is_empty() {
            return Ok(ReviewOutcome::Done {
                moved: Vec::new(),
                event: None,
            });
        }
        let k = &self.keys;
        let mut inv = scripts().dlq_review.key(k.dlq(tenant));
        inv.key(k.dlq_review(tenant))
            .key(k.dlq_folds(tenant))
            .key(self.notify_key(tenant, NotifyEvent::Escalated))
            .arg(mv.action)
            .arg(mv.arg)
            .arg(mv.operator)
            .arg(mv.reason)
            .arg(mv.command_id);
        for id in ids {
            inv.arg(*id);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "dlq_review.lua", Some(3))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let status = text_or_empty(next());
        let flat: Vec<String> = array(next(), "dlq_review.lua ids", None)?
            .into_iter()
            .map(text_or_empty)
            .collect();
        let event = Some(text_or_empty(next())).filter(|e| !e.is_empty());
        let pairs = flat
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())));
        match status.as_str() {
            "refused" => Ok(ReviewOutcome::Refused(pairs.collect())),
            "ok" => Ok(ReviewOutcome::Done {
                moved: pairs.map(|(id, o)| (id, o == "moved")).collect(),
                event,
            }),
            other => Err(Error::Protocol(format!(
                "dlq_review.lua answered '{other}'"
            ))),
        }
    }

    /// Folds the dead letters of fingerprint `fp` of `tenant` under `representative`
    /// (scripts/dlq_fold.lua), merging `records` (every dead letter of `fp` with a review
    /// record, as [`Broker::dlq_review_ids_of`] found them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dlq_fold(
        &self,
        tenant: &str,
        fp: &str,
        representative: &str,
        operator: &str,
        reason: &str,
        command_id: &str,
        records: &[String],
    ) -> Result<FoldOutcome> {
        let k = &self.keys;
        let mut inv = scripts().dlq_fold.key(k.dlq(tenant));
        inv.key(k.dlq_review(tenant))
            .key(k.dlq_folds(tenant))
            .arg(fp)
            .arg(representative)
            .arg(operator)
            .arg(reason)
            .arg(command_id);
        for r in records {
            inv.arg(r);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "dlq_fold.lua", Some(3))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let status = text_or_empty(next());
        let rep = text_or_empty(next());
        let merged = int_or_zero(next());
        Ok(match status.as_str() {
            "folded" => FoldOutcome::Folded {
                representative: rep,
                merged,
            },
            "exists" => FoldOutcome::Exists(rep),
            "gone" => FoldOutcome::Gone,
            "stale" => FoldOutcome::Stale,
            other => return Err(Error::Protocol(format!("dlq_fold.lua answered '{other}'"))),
        })
    }

    /// The dead letters of `tenant` whose review record says fingerprint `fp` (a HSCAN of the
    /// tenant's review hash, which holds only reviewed dead letters).
    pub(crate) async fn dlq_review_ids_of(&self, tenant: &str, fp: &str) -> Result<Vec<String>> {
        let key = self.keys.dlq_review(tenant);
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.con())
                .await?;
            for pair in flat.chunks(2) {
                let (Some(field), Some(json)) = (pair.first(), pair.get(1)) else {
                    continue;
                };
                if !field.starts_with(|c: char| c.is_ascii_digit()) {
                    continue;
                }
                let same = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .is_some_and(|v| v.get("fp").and_then(|f| f.as_str()) == Some(fp));
                if same {
                    out.push(field.clone());
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// The review records (JSON) of dead letters `ids` of `tenant` in one round trip; `None`
    /// for one without a record.
    pub(crate) async fn dlq_review_records(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.dlq_review(tenant));
        for id in ids {
            cmd.arg(*id);
        }
        Ok(cmd.query_async(&mut self.con()).await?)
    }

    /// Each tenant's folds (fingerprint → representative) in one pipelined round trip.
    pub(crate) async fn dlq_folds_of(
        &self,
        tenants: &[String],
    ) -> Result<Vec<HashMap<String, String>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("HGETALL").arg(self.keys.dlq_folds(t));
        }
        Ok(pipe.query_async(&mut self.con()).await?)
    }

    /// Each tenant's review records by state and its folds, in one pipelined round trip.
    pub(crate) async fn dlq_review_counts(&self, tenants: &[String]) -> Result<Vec<ReviewCounts>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("HMGET")
                .arg(self.keys.dlq_review(t))
                .arg("#in_review")
                .arg("#escalated");
            pipe.cmd("HGETALL").arg(self.keys.dlq_folds(t));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let mut it = replies.into_iter();
        let mut out = Vec::with_capacity(tenants.len());
        for _ in tenants {
            let counts: Vec<Option<u64>> =
                redis::from_redis_value(it.next().unwrap_or(Value::Nil)).unwrap_or_default();
            let folds: HashMap<String, String> =
                redis::from_redis_value(it.next().unwrap_or(Value::Nil)).unwrap_or_default();
            out.push(ReviewCounts {
                in_review: counts.first().copied().flatten().unwrap_or(0),
                escalated: counts.get(1).copied().flatten().unwrap_or(0),
                folds,
            });
        }
        Ok(out)
    }

    /// One bounded step towards each tenant's oldest unowned dead letter
    /// (scripts/dlq_unowned.lua, at most `budget` dead letters read per tenant), every
    /// tenant's step in one pipelined round trip.
    pub(crate) async fn dlq_unowned(
        &self,
        tenants: &[Arc<str>],
        budget: usize,
    ) -> Result<Vec<Unowned>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().dlq_unowned).ignore();
        for t in tenants {
            let mut inv = scripts().dlq_unowned.key(self.keys.dlq(t));
            inv.key(self.keys.dlq_review(t))
                .key(self.keys.dlq_folds(t))
                .arg(budget.max(1));
            pipe.invoke_script(&inv);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "dlq_unowned.lua answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        replies
            .into_iter()
            .map(|v| {
                let mut p = array(v, "dlq_unowned.lua", Some(2))?.into_iter();
                let state = text_or_empty(p.next().unwrap_or(Value::Nil));
                let id = text_or_empty(p.next().unwrap_or(Value::Nil));
                Ok(match state.as_str() {
                    "found" => Unowned::Found(id),
                    "none" => Unowned::None,
                    _ => Unowned::More,
                })
            })
            .collect()
    }

    /// The tenant's review hash as stored (records, counts, cursor). Tests only.
    #[cfg(test)]
    pub(crate) async fn dlq_review_raw(&self, tenant: &str) -> Result<HashMap<String, String>> {
        Ok(redis::cmd("HGETALL")
            .arg(self.keys.dlq_review(tenant))
            .query_async(&mut self.con())
            .await?)
    }
}
