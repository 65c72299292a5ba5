//! The tenant-isolation verbs of the broker: circuit breakers (record outcomes, admit the one
//! probe, settle it, operator open/close, read states), deferral of a held tenant's entries,
//! and fleet-wide in-flight reservations. Every script touches the keys of one tenant only.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use redis::{Script, Value};

use super::Broker;
use crate::error::{Error, Result};
use crate::isolation::Thresholds;

/// Approximate cap of each tenant's breaker transition log.
pub const BREAKER_LOG_MAX_LEN: u64 = 1_000;

struct TenantScripts {
    record: Script,
    probe: Script,
    probe_done: Script,
    set: Script,
    defer: Script,
    slots: Script,
}

/// Loaded once per process; `Script` handles EVALSHA and reloading.
fn scripts() -> &'static TenantScripts {
    static S: OnceLock<TenantScripts> = OnceLock::new();
    S.get_or_init(|| TenantScripts {
        record: Script::new(include_str!("scripts/breaker_record.lua")),
        probe: Script::new(include_str!("scripts/breaker_probe.lua")),
        probe_done: Script::new(include_str!("scripts/breaker_probe_done.lua")),
        set: Script::new(include_str!("scripts/breaker_set.lua")),
        defer: Script::new(include_str!("scripts/defer.lua")),
        slots: Script::new(include_str!("scripts/slots.lua")),
    })
}

/// A breaker as stored in Redis (all times are the server's clock, ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerInfo {
    /// `closed`, `open` or `half_open` (a missing breaker is closed).
    pub state: String,
    /// When the last transition happened (0 when never).
    pub since_ms: u64,
    /// When an open breaker's cool-down ends; 0 when closed, half-open, or held by an operator.
    pub until_ms: u64,
    /// The last transition's reason (`failure_threshold`, `cooldown_elapsed`,
    /// `probe_succeeded`, `probe_failed`, `operator`), empty when never moved.
    pub reason: String,
    /// The last transition's detail (the window's counts, the probe, the operator's words).
    pub detail: String,
    /// Who made the last transition (a member id or an operator).
    pub by: String,
    /// Transitions so far.
    pub transitions: u64,
    /// The running probe's token (`<member> <entry id>`), when one runs.
    pub probe: Option<String>,
    /// When the running probe's token expires.
    pub probe_until_ms: u64,
    /// Probes admitted so far.
    pub probes: u64,
    /// Tasks deferred (held back unattempted) so far.
    pub deferred: u64,
}

impl BreakerInfo {
    fn from_map(m: &HashMap<String, String>) -> BreakerInfo {
        let num = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let text = |k: &str| m.get(k).cloned().unwrap_or_default();
        BreakerInfo {
            state: m
                .get("state")
                .cloned()
                .unwrap_or_else(|| "closed".to_owned()),
            since_ms: num("since"),
            until_ms: num("until"),
            reason: text("reason"),
            detail: text("detail"),
            by: text("by"),
            transitions: num("transitions"),
            probe: m.get("probe").cloned(),
            probe_until_ms: num("probe_until"),
            probes: num("probes"),
            deferred: num("deferred"),
        }
    }
}

/// One entry of a tenant's breaker transition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// The log entry id; its time part is when the transition happened (server clock).
    pub id: String,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// Why (a bounded name).
    pub reason: String,
    /// Details (counts, the probe, an operator's words).
    pub detail: String,
    /// Who made it.
    pub by: String,
}

impl BreakerTransition {
    /// When it happened, ms since the epoch by the server's clock (from the entry id).
    pub fn at_ms(&self) -> u64 {
        self.id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0)
    }
}

/// What [`Broker::breaker_probe`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The breaker is closed: run as usual.
    Run,
    /// The caller holds the tenant's one probe until `until_ms`.
    Probe {
        /// When the token expires (server clock, ms).
        until_ms: u64,
    },
    /// Hold the task back: still cooling down, held by an operator, or another probe runs.
    Wait {
        /// Whether the breaker is half-open (a probe runs) rather than open.
        half_open: bool,
        /// End of the cool-down (open; 0 = held by an operator) or of the running probe.
        until_ms: u64,
    },
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

/// The answer of [`Broker::slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    /// How many more entries the member may read.
    pub granted: usize,
    /// The tenant's fleet-wide total reserved after the call.
    pub total: u64,
}

/// A transition a script made, as its caller reports it.
fn moved(from: &str, to: &str) -> Option<(String, String)> {
    Some((from.to_owned(), to.to_owned()))
}

fn text(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!(
            "breaker script returned {other:?} where a string belongs"
        ))),
    }
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => String::from_utf8_lossy(b)
            .parse()
            .map_err(|_| Error::Protocol("breaker script returned a non-number".into())),
        other => Err(Error::Protocol(format!(
            "breaker script returned {other:?} where a number belongs"
        ))),
    }
}

fn array(v: Value, what: &str, len: usize) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) if items.len() >= len => Ok(items),
        other => Err(Error::Protocol(format!("{what} returned {other:?}"))),
    }
}

/// The result of [`Broker::breaker_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The breaker's state after the call.
    pub state: String,
    /// End of the cool-down when open (0 when held by an operator or closed).
    pub until_ms: u64,
    /// Whether this call opened the breaker.
    pub opened: bool,
    /// Failures in the window (0 when the breaker was not closed).
    pub failures: u64,
    /// Outcomes in the window (0 when the breaker was not closed).
    pub outcomes: u64,
}

impl Broker {
    /// Adds `failures` out of `outcomes` attempts of `tenant` to its failure window and opens a
    /// closed breaker that crosses `thresholds` (scripts/breaker_record.lua). One call per
    /// tenant per refresh; with zero counts it only reads the state.
    pub(crate) async fn breaker_record(
        &self,
        tenant: &str,
        failures: u64,
        outcomes: u64,
        thresholds: &Thresholds,
        who: &str,
    ) -> Result<Recorded> {
        let k = self.keys();
        let mut inv = scripts().record.key(k.breaker(tenant));
        inv.key(k.breaker_window(tenant))
            .key(k.breaker_log(tenant))
            .arg(failures)
            .arg(outcomes)
            .arg(thresholds.window.as_millis() as u64)
            .arg(thresholds.min_failures)
            .arg(format!("{:.6}", thresholds.failure_rate))
            .arg(thresholds.cooldown.as_millis() as u64)
            .arg(who)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let p = array(v, "breaker_record.lua", 5)?;
        Ok(Recorded {
            state: text(&p[0])?,
            until_ms: int(&p[1])?.max(0) as u64,
            opened: int(&p[2])? == 1,
            failures: int(&p[3])?.max(0) as u64,
            outcomes: int(&p[4])?.max(0) as u64,
        })
    }

    /// Asks for `tenant`'s one probe (scripts/breaker_probe.lua): an open breaker past its
    /// cool-down turns half-open, and a half-open one without a live probe hands the token
    /// `<member> <entry id>` to this caller for `ttl`. The second value is the transition this
    /// call made (open → half_open), if any.
    pub(crate) async fn breaker_probe(
        &self,
        tenant: &str,
        member: &str,
        entry_id: &str,
        ttl: Duration,
    ) -> Result<(ProbeVerdict, Option<(String, String)>)> {
        let k = self.keys();
        let mut inv = scripts().probe.key(k.breaker(tenant));
        inv.key(k.breaker_log(tenant))
            .arg(format!("{member} {entry_id}"))
            .arg(ttl.as_millis() as u64)
            .arg(member)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let p = array(v, "breaker_probe.lua", 4)?;
        let verdict = text(&p[0])?;
        let state = text(&p[1])?;
        let until_ms = int(&p[2])?.max(0) as u64;
        let transition = if int(&p[3])? == 1 {
            moved("open", "half_open")
        } else {
            None
        };
        let verdict = match verdict.as_str() {
            "run" => ProbeVerdict::Run,
            "probe" => ProbeVerdict::Probe { until_ms },
            "wait" => ProbeVerdict::Wait {
                half_open: state == "half_open",
                until_ms,
            },
            other => {
                return Err(Error::Protocol(format!(
                    "breaker_probe.lua returned the verdict {other:?}"
                )))
            }
        };
        Ok((verdict, transition))
    }

    /// Reports the outcome of the probe `<member> <entry id>` of `tenant`
    /// (scripts/breaker_probe_done.lua): `Some(true)` closes the breaker (and makes every task
    /// it held back due at once), `Some(false)`
    /// re-opens it for `cooldown`, `None` gives the token back without a decision. Returns the
    /// state after the call and the transition made, if any (none for a stale token).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn breaker_probe_done(
        &self,
        tenant: &str,
        member: &str,
        entry_id: &str,
        success: Option<bool>,
        cooldown: Duration,
        detail: &str,
    ) -> Result<(String, Option<(String, String)>)> {
        let k = self.keys();
        let mut inv = scripts().probe_done.key(k.breaker(tenant));
        inv.key(k.breaker_window(tenant))
            .key(k.breaker_log(tenant))
            .key(k.deferred(tenant))
            .arg(format!("{member} {entry_id}"))
            .arg(match success {
                Some(true) => "success",
                Some(false) => "failure",
                None => "release",
            })
            .arg(cooldown.as_millis() as u64)
            .arg(member)
            .arg(detail)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let p = array(v, "breaker_probe_done.lua", 2)?;
        let state = text(&p[0])?;
        let transition = if int(&p[1])? == 1 {
            moved("half_open", &state)
        } else {
            None
        };
        Ok((state, transition))
    }

    /// Opens (held until closed by hand) or closes `tenant`'s breaker as an operator
    /// (scripts/breaker_set.lua); closing makes every task it held back due at once. `who` and `why` go into the transition log. Returns
    /// `(from, to, moved)`; `moved` is false when it already was in that state.
    pub(crate) async fn breaker_set(
        &self,
        tenant: &str,
        open: bool,
        who: &str,
        why: &str,
    ) -> Result<(String, String, bool)> {
        let k = self.keys();
        let mut inv = scripts().set.key(k.breaker(tenant));
        inv.key(k.breaker_window(tenant))
            .key(k.breaker_log(tenant))
            .key(k.deferred(tenant))
            .arg(if open { "open" } else { "closed" })
            .arg(who)
            .arg(why)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let p = array(v, "breaker_set.lua", 3)?;
        Ok((text(&p[0])?, text(&p[1])?, int(&p[2])? == 1))
    }

    /// The breaker of `tenant` as stored (closed when it never moved).
    pub(crate) async fn breaker_info(&self, tenant: &str) -> Result<BreakerInfo> {
        let m: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys().breaker(tenant))
            .query_async(&mut self.con())
            .await?;
        Ok(BreakerInfo::from_map(&m))
    }

    /// The breakers of `tenants` in one pipelined round trip, with the server's clock (ms) at
    /// the time of the read, for members' local views.
    pub(crate) async fn breaker_states(&self, tenants: &[&str]) -> Result<(u64, Vec<BreakerInfo>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for t in tenants {
            pipe.cmd("HGETALL").arg(self.keys().breaker(t));
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() + 1 {
            return Err(Error::Protocol(format!(
                "breaker read answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        let maps = replies.split_off(1);
        let (s, us): (u64, u64) = redis::from_redis_value(
            replies
                .pop()
                .ok_or_else(|| Error::Protocol("no TIME reply".into()))?,
        )
        .map_err(redis::RedisError::from)?;
        let now = s * 1000 + us / 1000;
        let mut out = Vec::with_capacity(maps.len());
        for v in maps {
            let m: HashMap<String, String> =
                redis::from_redis_value(v).map_err(redis::RedisError::from)?;
            out.push(BreakerInfo::from_map(&m));
        }
        Ok((now, out))
    }

    /// The newest `count` transitions of `tenant`'s breaker, oldest first.
    pub(crate) async fn breaker_log(
        &self,
        tenant: &str,
        count: usize,
    ) -> Result<Vec<BreakerTransition>> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(self.keys().breaker_log(tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        let mut out: Vec<BreakerTransition> = super::reply::entries(v)?
            .into_iter()
            .map(|e| {
                let f: HashMap<String, String> = e
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
                BreakerTransition {
                    from: get("from"),
                    to: get("to"),
                    reason: get("reason"),
                    detail: get("detail"),
                    by: get("by"),
                    id: e.id,
                }
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    /// Moves entries of `tenant` that `consumer` owns from the lane to the tenant's deferred
    /// set, unattempted: same fields, same attempt (scripts/defer.lua); due at once when the
    /// breaker is closed by then. One result per item.
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
        inv.key(k.deferred(tenant))
            .key(k.breaker(tenant))
            .arg(self.group())
            .arg(consumer);
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

    /// Reports that `member` holds `held` entries of `tenant` and asks for `wanted` more under
    /// the fleet-wide `cap` (0 for none); the reservation lasts `ttl` unless renewed
    /// (scripts/slots.lua).
    pub(crate) async fn slots(
        &self,
        tenant: &str,
        member: &str,
        held: usize,
        wanted: usize,
        cap: usize,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        let mut inv = scripts().slots.key(self.keys().slots(tenant));
        inv.arg(member)
            .arg(held)
            .arg(wanted)
            .arg(cap)
            .arg(ttl.as_millis() as u64);
        let (granted, total): (i64, i64) = inv.invoke_async(&mut self.con()).await?;
        Ok(SlotGrant {
            granted: granted.max(0) as usize,
            total: total.max(0) as u64,
        })
    }

    /// `tenant`'s fleet-wide in-flight entries (live reservations of every member, as last
    /// reported) and the highest total ever reserved.
    pub(crate) async fn in_flight(&self, tenant: &str) -> Result<(u64, u64)> {
        let (m, now): (HashMap<String, String>, (u64, u64)) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys().slots(tenant))
            .cmd("TIME")
            .query_async(&mut self.con())
            .await?;
        let now_ms = now.0 * 1000 + now.1 / 1000;
        let mut total = 0;
        let mut peak = 0;
        for (k, v) in &m {
            if k == "@peak" {
                peak = v.parse().unwrap_or(0);
                continue;
            }
            let mut parts = v.split(' ');
            let count: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let expiry: u64 = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
            if expiry >= now_ms {
                total += count;
            }
        }
        Ok((total, peak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_breaker_reads_as_closed() {
        let b = BreakerInfo::from_map(&HashMap::new());
        assert_eq!(b.state, "closed");
        assert_eq!(b.transitions, 0);
        assert!(b.probe.is_none());
        let mut m = HashMap::new();
        m.insert("state".to_owned(), "open".to_owned());
        m.insert("until".to_owned(), "oops".to_owned());
        let b = BreakerInfo::from_map(&m);
        assert_eq!((b.state.as_str(), b.until_ms), ("open", 0));
    }

    #[test]
    fn a_transition_knows_its_time() {
        let t = BreakerTransition {
            id: "1763800000123-0".into(),
            from: "closed".into(),
            to: "open".into(),
            reason: "failure_threshold".into(),
            detail: String::new(),
            by: "m1".into(),
        };
        assert_eq!(t.at_ms(), 1_763_800_000_123);
    }
}
