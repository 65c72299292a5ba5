//! Claims: a member's drain of its own pending entries after a restart (claim.lua) and the
//! take-over of stale entries of any member (autoclaim.lua), one step of a scan at a time.
//! The admin command stream is claimed the same way (commands.rs).

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::error::is_code;
use super::reply::id_counts;
use super::scripts::scripts;
use crate::error::{Error, Result};

/// One step of a claim scan.
///
/// The counts are, for a tenant's lane ([`Broker::claim_own`], [`Broker::reclaim`]), how many
/// times the entry started on a member (its delivery count minus the read, see
/// scripts/start.lua); for the admin stream, its delivery count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimStep {
    /// Where the next step starts, or `None` when the scan is complete.
    pub next: Option<String>,
    /// Entries now owned by the claimer: (id, count so far). Not yet re-delivered:
    /// [`Broker::begin`] does that when one starts.
    pub claimed: Vec<(String, u64)>,
    /// Entries at or past the poison threshold: (id, count). Still pending, owned by the
    /// claimer, not to be run: they go to the dead letters as crash loops.
    pub poison: Vec<(String, u64)>,
    /// Pending ids whose entry was gone; the claim removed them from the PEL.
    pub tombstones: usize,
    /// Whom each claimed entry was pending for before the claim (its run there died, if it
    /// started: the takeover's start records that run with this member).
    pub owners: HashMap<String, String>,
}

impl ClaimStep {
    /// A lane's step with its delivery counts turned into starts (count − 1: the read itself
    /// is no start).
    pub(super) fn into_starts(mut self) -> ClaimStep {
        for (_, n) in self.claimed.iter_mut().chain(self.poison.iter_mut()) {
            *n = n.saturating_sub(1);
        }
        self
    }
}

/// Parses the reply of claim.lua or autoclaim.lua.
pub(super) fn claim_step(reply: redis::RedisResult<Value>) -> Result<ClaimStep> {
    let v = match reply {
        Ok(v) => v,
        Err(e) if is_code(&e, "NOGROUP") => return Ok(ClaimStep::default()),
        Err(e) => return Err(e.into()),
    };
    let Value::Array(parts) = v else {
        return Err(Error::Protocol("claim script returned a non-array".into()));
    };
    let mut parts = parts.into_iter();
    let next = match parts.next() {
        Some(Value::BulkString(b)) if !b.is_empty() => {
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    };
    let claimed = id_counts(parts.next())?;
    let poison = id_counts(parts.next())?;
    let tombstones = match parts.next() {
        Some(Value::Int(n)) => n.max(0) as usize,
        other => {
            return Err(Error::Protocol(format!(
                "claim script returned {other:?} for the tombstone count"
            )))
        }
    };
    // autoclaim.lua names the previous consumers; claim.lua's are the claimer itself.
    let owners = match parts.next() {
        Some(Value::Array(flat)) => {
            let mut owners = HashMap::new();
            let mut it = flat.into_iter();
            while let (Some(id), Some(who)) = (it.next(), it.next()) {
                let id: String = redis::from_redis_value(id).map_err(redis::RedisError::from)?;
                let who: String = redis::from_redis_value(who).map_err(redis::RedisError::from)?;
                owners.insert(id, who);
            }
            owners
        }
        None => HashMap::new(),
        Some(other) => {
            return Err(Error::Protocol(format!(
                "claim script returned {other:?} for the previous owners"
            )))
        }
    };
    Ok(ClaimStep {
        next,
        claimed,
        poison,
        tombstones,
        owners,
    })
}

/// One step of a reclaim scan over a lane ([`Broker::reclaim`]).
#[derive(Debug, Clone, Copy)]
pub struct ReclaimScan<'a> {
    /// Entries idle at least this long at any consumer are taken over.
    pub min_idle: Duration,
    /// `0-0`, or the `next` of the previous step.
    pub cursor: &'a str,
    /// The most pending entries to examine.
    pub count: usize,
    /// Entries that started this many times are poison.
    pub max_starts: u64,
    /// Ids the claimer already has in flight.
    pub skip: &'a [String],
}

impl Broker {
    /// One step of a member's drain of its own pending entries in `tenant`'s lane (see
    /// scripts/claim.lua). `start` is `-` or the `next` of the previous step; `skip` lists ids
    /// the member already has in flight. Entries that started `max_starts` times are poison;
    /// the step's counts are starts (see [`ClaimStep`]).
    pub(crate) async fn claim_own(
        &self,
        tenant: &str,
        consumer: &str,
        start: &str,
        count: usize,
        max_starts: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = scripts().claim.key(self.keys.lane(tenant));
        // A lane's delivery count is 1 + starts (scripts/start.lua).
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(start)
            .arg(count)
            .arg(max_starts.saturating_add(1))
            .arg(skip);
        let mut step =
            claim_step(inv.invoke_async(&mut self.con()).await).map(ClaimStep::into_starts)?;
        step.owners = step
            .claimed
            .iter()
            .map(|(id, _)| (id.clone(), consumer.to_owned()))
            .collect();
        Ok(step)
    }

    /// One step of a reclaim scan over `tenant`'s lane (see scripts/autoclaim.lua: XPENDING
    /// … IDLE + XCLAIM … JUSTID): entries idle for at least `min_idle` at any consumer are taken
    /// over by `consumer`. `cursor` is `0-0` or the `next` of the previous step; `skip` lists ids
    /// the claimer already has in flight. Entries that started `max_starts` times are poison;
    /// the step's counts are starts (see [`ClaimStep`]).
    pub(crate) async fn reclaim(
        &self,
        tenant: &str,
        consumer: &str,
        scan: ReclaimScan<'_>,
    ) -> Result<ClaimStep> {
        let mut inv = scripts().autoclaim.key(self.keys.lane(tenant));
        // A lane's delivery count is 1 + starts (scripts/start.lua).
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(scan.min_idle.as_millis() as u64)
            .arg(scan.cursor)
            .arg(scan.count)
            .arg(scan.max_starts.saturating_add(1))
            .arg(scan.skip);
        claim_step(inv.invoke_async(&mut self.con()).await).map(ClaimStep::into_starts)
    }

    /// Which of `tenants`' lanes hold an entry pending for at least `min_idle` at any
    /// consumer (what a reclaim step would look at), in one pipeline (`XPENDING … IDLE ms - + 1`
    /// per lane: one round trip per master on a cluster). A lane without a group holds nothing
    /// pending; any other error of one lane says `true` (look at it the usual way).
    pub(crate) async fn stale_lanes(
        &self,
        tenants: &[std::sync::Arc<str>],
        min_idle: Duration,
    ) -> Result<Vec<bool>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let idle = min_idle.as_millis() as u64;
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("XPENDING")
                .arg(self.keys.lane(t))
                .arg(&*self.group)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(1);
        }
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "XPENDING answered {} times for {} lanes",
                replies.len(),
                tenants.len()
            )));
        }
        Ok(replies
            .into_iter()
            .map(|r| match r {
                Ok(Value::Array(rows)) => !rows.is_empty(),
                Ok(Value::Nil) => false,
                Ok(_) => true,
                Err(e) => !is_code(&e, "NOGROUP"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::Value;

    use super::{claim_step, ClaimStep};

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_claim_reply_becomes_a_step_and_counts_become_starts() {
        let reply = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![bulk("1-0"), Value::Int(1), bulk("2-0"), Value::Int(3)]),
            Value::Array(vec![bulk("3-0"), Value::Int(5)]),
            Value::Int(2),
            Value::Array(vec![
                bulk("1-0"),
                bulk("m-dead"),
                bulk("2-0"),
                bulk("m-stuck"),
            ]),
        ]);
        let step = claim_step(Ok(reply)).unwrap();
        assert_eq!(step.next.as_deref(), Some("7-0"));
        assert_eq!(step.tombstones, 2);
        assert_eq!(step.owners["1-0"], "m-dead");
        assert_eq!(step.owners["2-0"], "m-stuck");
        let starts = step.into_starts();
        assert_eq!(
            starts.claimed,
            vec![("1-0".to_owned(), 0), ("2-0".to_owned(), 2)]
        );
        assert_eq!(starts.poison, vec![("3-0".to_owned(), 4)]);
    }

    #[test]
    fn an_empty_cursor_ends_the_scan_and_a_malformed_reply_is_an_error() {
        let reply = Value::Array(vec![
            bulk(""),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Int(0),
        ]);
        assert_eq!(claim_step(Ok(reply)).unwrap(), ClaimStep::default());
        assert!(claim_step(Ok(Value::Int(1))).is_err());
        let bad_owners = Value::Array(vec![
            bulk(""),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Int(0),
            Value::Int(3),
        ]);
        assert!(claim_step(Ok(bad_owners)).is_err());
        let no_count = Value::Array(vec![bulk("0-0"), Value::Nil, Value::Nil]);
        assert!(claim_step(Ok(no_count)).is_err());
    }

    /// Lanes with an entry pending past the idle time are stale; a lane whose entries are all
    /// fresh, a lane with nothing pending and a lane without a group are not.
    #[tokio::test]
    async fn stale_lanes_are_those_with_an_entry_pending_past_the_idle_time() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let b = crate::broker::connect::test_broker(&redis.url(), "st", false).await;
        let tenants: Vec<std::sync::Arc<str>> = ["old", "fresh", "empty", "nogroup"]
            .into_iter()
            .map(std::sync::Arc::from)
            .collect();
        let mut c = b.con();
        for t in ["old", "fresh", "empty"] {
            b.ensure_group(t).await.unwrap();
        }
        for t in ["old", "fresh", "nogroup"] {
            let _: String = redis::cmd("XADD")
                .arg(b.keys.lane(t))
                .arg("*")
                .arg("f")
                .arg("v")
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let read = |t: &str| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&*b.group)
                .arg("m-dead")
                .arg("COUNT")
                .arg(10)
                .arg("STREAMS")
                .arg(b.keys.lane(t))
                .arg(">");
            cmd
        };
        let _: Value = read("old").query_async(&mut c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let _: Value = read("fresh").query_async(&mut c).await.unwrap();
        let stale = b
            .stale_lanes(&tenants, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(stale, vec![true, false, false, false]);
        // With no idle time asked, every pending entry counts.
        let stale = b.stale_lanes(&tenants, Duration::ZERO).await.unwrap();
        assert_eq!(stale, vec![true, true, false, false]);
    }
}
