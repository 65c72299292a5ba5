//! Tenant notifications in Redis: which tenants' scripts record which events (the plan the
//! configuration sets on the broker), the delivering member's tick and acks over a tenant's
//! outbox (scripts/notify_tick.lua, notify_ack.lua), and the delivery log.
//!
//! The events reach the outbox in the same atomic step as what they report, or from a durable
//! record written in that step: dead_letter.lua counts each dead letter into the tenant's open
//! digest, dlq_review.lua appends an escalation to the tenant, and the breaker scripts' own
//! transition log is copied into the outbox by the tick, behind a cursor, atomically.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::notify_plan::{NotifyEvent, NotifyPlan, Wants};
use super::reply::{self, array, int_or_zero, text_or_empty};
use super::scripts::scripts;
use crate::error::{Error, Result};

/// Where one target stands in its tenant's outbox ([`Broker::notify_tick`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPosition {
    /// The last event it had (`0-0` for none).
    pub cursor: String,
    /// Not before this (server clock, ms): a retry's delay.
    pub wait_until_ms: u64,
    /// Failed attempts at the next event so far.
    pub attempts: u32,
    /// The next event for it, if any.
    pub next: Option<OutboxEvent>,
}

/// An event in a tenant's outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Its id in the outbox.
    pub id: String,
    /// `dead_lettered`, `escalated`, `breaker_opened` or `breaker_closed`.
    pub kind: String,
    /// When it was appended (server clock, ms).
    pub at_ms: u64,
    /// Its body (JSON).
    pub body: String,
}

/// What a delivery tick found ([`Broker::notify_tick`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// This member holds the tenant's delivery lease (else nothing else is filled in).
    pub held: bool,
    /// The server's clock, ms.
    pub now_ms: u64,
    /// Events in the outbox.
    pub depth: u64,
    /// The oldest event's id, if any.
    pub oldest: Option<String>,
    /// Requests sent to the tenant's targets in the current minute (the rate window).
    pub sent_this_minute: u64,
    /// Per target, in the order asked.
    pub targets: Vec<TargetPosition>,
}

/// What became of one delivery attempt ([`Broker::notify_ack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The target answered 2xx: its cursor moves past the event.
    Sent,
    /// It failed; tried again after the delay.
    Retry(Duration),
    /// It failed for the last time: given up, the cursor moves past it, the log says so.
    Failed,
    /// The target does not want this type: the cursor moves past it, nothing logged.
    Skipped,
}

impl Delivery {
    fn wire(&self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Retry(_) => "retry",
            Delivery::Failed => "failed",
            Delivery::Skipped => "skipped",
        }
    }
}

/// One delivery attempt to report ([`Broker::notify_ack`]).
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The target's name.
    pub target: &'a str,
    /// Its cursor as the tick (or the previous ack) said.
    pub cursor: &'a str,
    /// The event.
    pub event: &'a OutboxEvent,
    /// What became of it.
    pub delivery: Delivery,
    /// The attempt's number (1 for the first).
    pub attempt: u32,
    /// Whether a request was sent (it counts against the tenant's rate).
    pub requested: bool,
    /// The status, or why it failed (never a secret).
    pub detail: &'a str,
}

/// One entry of a tenant's delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLogEntry {
    /// The log entry's id (its time is when the attempt ended, server clock).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The event's id in the outbox.
    pub event: String,
    /// The target's name.
    pub target: String,
    /// The event's type.
    pub kind: String,
    /// `sent`, `retry` or `failed`.
    pub outcome: String,
    /// The attempt's number.
    pub attempt: u32,
    /// The status, or why it failed.
    pub detail: String,
}

/// Where a tenant's outbox and targets stand, for `notify status` ([`Broker::notify_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Events waiting in the outbox.
    pub depth: u64,
    /// The oldest's id.
    pub oldest: Option<String>,
    /// Dead letters counted into the open digest.
    pub digest_pending: u64,
    /// The member holding the delivery lease, if any.
    pub holder: Option<String>,
    /// The delivery state's fields (cursors, attempts, failures per target).
    pub state: HashMap<String, String>,
}

/// The milliseconds of a stream id (0 when unreadable).
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// An event from the four strings the scripts return (`None` when the id is empty).
fn event(id: Value, kind: Value, at: Value, body: Value) -> Option<OutboxEvent> {
    let id = text_or_empty(id);
    if id.is_empty() {
        return None;
    }
    Some(OutboxEvent {
        kind: text_or_empty(kind),
        at_ms: text_or_empty(at).parse().unwrap_or_else(|_| id_ms(&id)),
        body: text_or_empty(body),
        id,
    })
}

impl Broker {
    /// This broker with the plan of which tenants' events the scripts record (set once by the
    /// configuration when it connects).
    pub(crate) fn with_notify(mut self, plan: NotifyPlan) -> Broker {
        self.notify = Arc::new(plan);
        self
    }

    /// What `tenant`'s notification targets want recorded.
    pub(crate) fn notify_wants(&self, tenant: &str) -> Wants {
        self.notify.tenants.get(tenant).copied().unwrap_or_default()
    }

    /// The key a script records `event` of `tenant` into — the open digest for dead letters,
    /// the outbox for escalations — or `""` when no target of the tenant wants it.
    pub(crate) fn notify_key(&self, tenant: &str, event: NotifyEvent) -> String {
        if !self.notify_wants(tenant).wants(event) {
            return self.keys.notify_off(tenant);
        }
        match event {
            NotifyEvent::DeadLettered => self.keys.notify_pending(tenant),
            NotifyEvent::Escalated => self.keys.notify_outbox(tenant),
        }
    }

    /// One delivery tick of `tenant` as `member` (scripts/notify_tick.lua): takes or renews
    /// the delivery lease for `lease`, turns a digest older than `digest_interval` (zero: no
    /// digests) and the breaker's new transitions (when `breaker`) into outbox events, and says
    /// where each of `targets` stands.
    pub(crate) async fn notify_tick(
        &self,
        tenant: &str,
        member: &str,
        lease: Duration,
        digest_interval: Duration,
        breaker: bool,
        targets: &[&str],
    ) -> Result<Tick> {
        let k = &self.keys;
        let mut inv = scripts().notify_tick.key(k.notify_lease(tenant));
        inv.key(k.notify_pending(tenant))
            .key(k.notify_outbox(tenant))
            .key(k.notify_state(tenant))
            .key(k.breaker_log(tenant))
            .arg(member)
            .arg(lease.as_millis().max(1) as u64)
            .arg(digest_interval.as_millis() as u64)
            .arg(if breaker { "1" } else { "0" });
        for t in targets {
            inv.arg(*t);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "notify_tick.lua", Some(5))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let held = int_or_zero(next()) == 1;
        let now_ms = text_or_empty(next()).parse().unwrap_or(0);
        let depth = int_or_zero(next());
        let oldest = Some(text_or_empty(next())).filter(|s| !s.is_empty());
        let sent_this_minute = int_or_zero(next());
        let mut tick = Tick {
            held,
            now_ms,
            depth,
            oldest,
            sent_this_minute,
            targets: Vec::new(),
        };
        if !held {
            return Ok(tick);
        }
        for _ in targets {
            let cursor = text_or_empty(next());
            let wait_until_ms = text_or_empty(next()).parse().unwrap_or(0);
            let attempts = text_or_empty(next()).parse().unwrap_or(0);
            let (id, kind, at, body) = (next(), next(), next(), next());
            tick.targets.push(TargetPosition {
                cursor,
                wait_until_ms,
                attempts,
                next: event(id, kind, at, body),
            });
        }
        if tick.targets.len() != targets.len() {
            return Err(Error::Protocol(
                "notify_tick.lua answered fewer targets than asked".into(),
            ));
        }
        Ok(tick)
    }

    /// Gives up `tenant`'s delivery lease if `member` still holds it (scripts/lease_release.lua:
    /// one atomic compare-and-delete, so a lease another member took meanwhile stays theirs).
    /// A member stopping cleanly calls it, so another member delivers at its next tick rather
    /// than after the lease's time to live. Returns whether it was released.
    pub(crate) async fn notify_release(&self, tenant: &str, member: &str) -> Result<bool> {
        let mut inv = scripts().lease_release.key(self.keys.notify_lease(tenant));
        inv.arg(member);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    /// Reports one delivery attempt of `tenant` as `member` (scripts/notify_ack.lua), renewing
    /// the lease for `lease`; `targets` are every target of the tenant (the outbox is trimmed
    /// to what they all had). Returns `None` when refused (the lease or the target's cursor
    /// moved: nothing was written), else the target's next event, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn notify_ack(
        &self,
        tenant: &str,
        member: &str,
        lease: Duration,
        attempt: &Attempt<'_>,
        log_max_len: u64,
        targets: &[&str],
    ) -> Result<Option<Option<OutboxEvent>>> {
        let k = &self.keys;
        let mut inv = scripts().notify_ack.key(k.notify_lease(tenant));
        inv.key(k.notify_outbox(tenant))
            .key(k.notify_state(tenant))
            .key(k.notify_log(tenant))
            .arg(member)
            .arg(lease.as_millis().max(1) as u64)
            .arg(attempt.target)
            .arg(attempt.cursor)
            .arg(&attempt.event.id)
            .arg(attempt.delivery.wire())
            .arg(match attempt.delivery {
                Delivery::Retry(d) => d.as_millis() as u64,
                _ => 0,
            })
            .arg(attempt.detail)
            .arg(&attempt.event.kind)
            .arg(attempt.attempt)
            .arg(if attempt.requested { "1" } else { "0" })
            .arg(log_max_len.max(1));
        for t in targets {
            inv.arg(*t);
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "notify_ack.lua", Some(1))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        if int_or_zero(next()) != 1 {
            return Ok(None);
        }
        let (id, kind, at, body) = (next(), next(), next(), next());
        Ok(Some(event(id, kind, at, body)))
    }

    /// The newest `count` entries of each tenant's delivery log, newest first, in one pipelined
    /// round trip.
    pub(crate) async fn notify_log(
        &self,
        tenants: &[String],
        count: usize,
    ) -> Result<Vec<DeliveryLogEntry>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("XREVRANGE")
                .arg(self.keys.notify_log(t))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count.max(1));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let mut out = Vec::new();
        for (tenant, v) in tenants.iter().zip(replies) {
            for e in reply::entries(v)? {
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
                out.push(DeliveryLogEntry {
                    id: e.id,
                    tenant: tenant.clone(),
                    event: get("event"),
                    target: get("target"),
                    kind: get("type"),
                    outcome: get("outcome"),
                    attempt: get("attempt").parse().unwrap_or(0),
                    detail: get("detail"),
                });
            }
        }
        Ok(out)
    }

    /// Where each tenant's outbox and targets stand, in one pipelined round trip (read-only).
    pub(crate) async fn notify_status(&self, tenants: &[String]) -> Result<Vec<OutboxStatus>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("XLEN").arg(self.keys.notify_outbox(t));
            pipe.cmd("XRANGE")
                .arg(self.keys.notify_outbox(t))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            pipe.cmd("HGET").arg(self.keys.notify_pending(t)).arg("n");
            pipe.cmd("GET").arg(self.keys.notify_lease(t));
            pipe.cmd("HGETALL").arg(self.keys.notify_state(t));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let mut it = replies.into_iter();
        let mut out = Vec::with_capacity(tenants.len());
        for _ in tenants {
            let mut next = || it.next().unwrap_or(Value::Nil);
            let depth = int_or_zero(next());
            let oldest = reply::entries(next())?.into_iter().next().map(|e| e.id);
            let digest_pending = text_or_empty(next()).parse().unwrap_or(0);
            let holder = Some(text_or_empty(next())).filter(|s| !s.is_empty());
            let state = reply::hash(next()).unwrap_or_default();
            out.push(OutboxStatus {
                depth,
                oldest,
                digest_pending,
                holder,
                state,
            });
        }
        Ok(out)
    }
}
