//! The tenants report (`redrive tenants`, and the HTTP API's tenants and breakers): per
//! tenant its lane depth, pending, scheduled retries, dead letters, in-flight, cap, weight and
//! breaker, read from Redis through the broker's verbs. Reads only.

use serde::Serialize;

use crate::admin::breaker::known_tenant;
use crate::broker::{BreakerInfo, BreakerTransition, Broker};
use crate::config::Settings;
use crate::error::Result;

/// One tenant's line of `redrive tenants`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantReport {
    /// The tenant.
    pub tenant: String,
    /// Entries in its lane (waiting, or read and not settled yet).
    pub lane_depth: u64,
    /// Entries delivered to a member and not settled.
    pub pending: u64,
    /// Entries in its retry schedule (retries and deferred tasks).
    pub retries_scheduled: u64,
    /// Of those, due now (waiting for a member's recovery loop).
    pub retries_due: u64,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
    /// Entries the fleet holds (read, not settled), as members last reported them.
    pub in_flight: u64,
    /// The highest fleet-wide in-flight total reserved so far (while members report).
    pub in_flight_peak: u64,
    /// Its fleet-wide cap, when it has one.
    pub max_in_flight: Option<usize>,
    /// Its weight in fair selection.
    pub weight: u32,
    /// Its breaker.
    pub breaker: BreakerReport,
    /// Its recent breaker transitions, oldest first (only when one tenant is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transitions: Option<Vec<TransitionReport>>,
}

/// A breaker as `redrive tenants` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerReport {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Held open by an operator until closed by hand.
    pub held: bool,
    /// Open: ms left of the cool-down (by the server's clock).
    pub cooldown_left_ms: Option<u64>,
    /// The last transition's reason.
    pub reason: String,
    /// The last transition's detail.
    pub detail: String,
    /// Who made the last transition.
    pub by: String,
    /// When the last transition happened (ms since the epoch, server clock; 0 if never).
    pub since_ms: u64,
    /// Transitions so far.
    pub transitions: u64,
    /// Probes admitted so far.
    pub probes: u64,
    /// Tasks deferred unattempted so far.
    pub deferred: u64,
    /// The running probe (`<member> <entry id>`), if any.
    pub probe: Option<String>,
}

/// One transition as `redrive tenants TENANT` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransitionReport {
    /// When (ms since the epoch, server clock).
    pub at_ms: u64,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// Why (bounded name).
    pub reason: String,
    /// Details.
    pub detail: String,
    /// Who.
    pub by: String,
}

impl From<BreakerTransition> for TransitionReport {
    fn from(t: BreakerTransition) -> Self {
        TransitionReport {
            at_ms: t.at_ms(),
            from: t.from,
            to: t.to,
            reason: t.reason,
            detail: t.detail,
            by: t.by,
        }
    }
}

impl BreakerReport {
    /// A breaker as the report shows it, its cool-down counted from `now_ms` (server clock).
    pub fn new(b: BreakerInfo, now_ms: u64) -> BreakerReport {
        let open = b.state == "open";
        BreakerReport {
            held: open && b.until_ms == 0,
            cooldown_left_ms: (open && b.until_ms > 0).then(|| b.until_ms.saturating_sub(now_ms)),
            state: b.state,
            reason: b.reason,
            detail: b.detail,
            by: b.by,
            since_ms: b.since_ms,
            transitions: b.transitions,
            probes: b.probes,
            deferred: b.deferred,
            probe: b.probe,
        }
    }
}

/// The report of `redrive tenants`: every registered tenant, or only `only` (with its recent
/// transitions).
pub async fn tenants(
    broker: &Broker,
    settings: &Settings,
    only: Option<&str>,
) -> Result<Vec<TenantReport>> {
    let names = match only {
        Some(t) => {
            known_tenant(broker, t).await?;
            vec![t.to_owned()]
        }
        None => broker.tenants().await?,
    };
    reports(broker, settings, &names, only.is_some()).await
}

/// The report of the tenants `names`, in that order, with their recent breaker transitions
/// when `transitions`. Three pipelined round trips whatever the number of tenants (depths,
/// breakers, in-flight reservations), plus one per tenant for the transitions.
pub async fn reports(
    broker: &Broker,
    settings: &Settings,
    names: &[String],
    transitions: bool,
) -> Result<Vec<TenantReport>> {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let arcs: Vec<std::sync::Arc<str>> = names.iter().map(|n| n.as_str().into()).collect();
    let ((now, breakers), depths, in_flight) = tokio::try_join!(
        broker.breaker_states(&refs),
        broker.tenant_depths(&arcs),
        broker.in_flight_of(names),
    )?;
    let mut out = Vec::with_capacity(names.len());
    for (((name, b), d), in_flight) in names.iter().zip(breakers).zip(depths).zip(in_flight) {
        let transitions = if transitions {
            Some(
                broker
                    .breaker_log(name, 20)
                    .await?
                    .into_iter()
                    .map(TransitionReport::from)
                    .collect(),
            )
        } else {
            None
        };
        let cap = settings.isolation.cap(name);
        out.push(TenantReport {
            tenant: name.clone(),
            lane_depth: d.lane,
            pending: d.pending,
            retries_scheduled: d.retries,
            retries_due: d.overdue,
            dead_letters: d.dlq,
            in_flight: in_flight.0,
            in_flight_peak: in_flight.1,
            max_in_flight: (cap > 0).then_some(cap),
            weight: settings.isolation.weight(name),
            breaker: BreakerReport::new(b, now),
            transitions,
        });
    }
    Ok(out)
}
