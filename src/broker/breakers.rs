//! Circuit breakers: record outcomes, admit the one probe, settle it, operator open/close, and
//! read states and the transition log. Every script touches the keys of one tenant only.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::{self, array, int, text};
use super::scripts::scripts;
use crate::error::{Error, Result};
use crate::isolation::Thresholds;

/// What errors about the breaker scripts' replies call them.
const SCRIPT: &str = "breaker script";

/// Approximate cap of each tenant's breaker transition log.
pub const BREAKER_LOG_MAX_LEN: u64 = 1_000;

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

/// A transition a script made, as its caller reports it.
fn moved(from: &str, to: &str) -> Option<(String, String)> {
    Some((from.to_owned(), to.to_owned()))
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
        let mut inv = scripts().breaker_record.key(k.breaker(tenant));
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
        let mut p = array(v, "breaker_record.lua", Some(5))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        Ok(Recorded {
            state: text(next(), SCRIPT)?,
            until_ms: int(next(), SCRIPT)?.max(0) as u64,
            opened: int(next(), SCRIPT)? == 1,
            failures: int(next(), SCRIPT)?.max(0) as u64,
            outcomes: int(next(), SCRIPT)?.max(0) as u64,
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
        let mut inv = scripts().breaker_probe.key(k.breaker(tenant));
        inv.key(k.breaker_log(tenant))
            .arg(format!("{member} {entry_id}"))
            .arg(ttl.as_millis() as u64)
            .arg(member)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "breaker_probe.lua", Some(4))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let verdict = text(next(), SCRIPT)?;
        let state = text(next(), SCRIPT)?;
        let until_ms = int(next(), SCRIPT)?.max(0) as u64;
        let transition = if int(next(), SCRIPT)? == 1 {
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
        let mut inv = scripts().breaker_probe_done.key(k.breaker(tenant));
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
        let mut p = array(v, "breaker_probe_done.lua", Some(2))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let state = text(next(), SCRIPT)?;
        let transition = if int(next(), SCRIPT)? == 1 {
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
        let mut inv = scripts().breaker_set.key(k.breaker(tenant));
        inv.key(k.breaker_window(tenant))
            .key(k.breaker_log(tenant))
            .key(k.deferred(tenant))
            .arg(if open { "open" } else { "closed" })
            .arg(who)
            .arg(why)
            .arg(BREAKER_LOG_MAX_LEN);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "breaker_set.lua", Some(3))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        Ok((
            text(next(), SCRIPT)?,
            text(next(), SCRIPT)?,
            int(next(), SCRIPT)? == 1,
        ))
    }

    /// The breaker of `tenant` as stored (closed when it never moved).
    #[cfg(any(test, feature = "testkit"))]
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
        let mut out: Vec<BreakerTransition> = reply::entries(v)?
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
