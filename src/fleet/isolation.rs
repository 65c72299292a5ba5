//! Tenant isolation inside a member: the local view of every tenant's breaker, the outcome
//! counts waiting to be reported and this member's fleet-wide in-flight reservations; the loop
//! that syncs all three with Redis once per `isolation.refresh_interval_ms` is
//! [`IsolationSync`](super::isolation_sync::IsolationSync).
//!
//! The hot path only reads local state: the executor asks `Isolation::gate` before an attempt
//! and `Isolation::record`s its outcome; the reader asks `Isolation::read_allowance` and, for
//! capped tenants only, `Isolation::reserve`s slots (one batched round trip per read at most,
//! none while the member's earlier reservation still covers the read).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::error::Result;
use crate::isolation::{BreakerState, BreakerView, Gate, IsolationSettings};
use crate::telemetry::events;

/// How long a member waits before asking again for slots the cap refused.
const REFUSED_BACKOFF: Duration = Duration::from_millis(50);

/// This member's reservation of one tenant's fleet-wide slots.
#[derive(Debug, Default)]
struct Slot {
    /// What Redis holds for this member (its last write).
    reserved: usize,
    /// Slots handed to reads still in progress (entries not admitted yet).
    reading: usize,
    /// When the reservation was last written (renewal is due every third of the TTL).
    written: Option<Instant>,
    /// No new request before this (the cap refused the last one).
    refused_until: Option<Instant>,
}

/// One tenant's attempts since the last report.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Attempts that ended with an outcome (for the share-of-work counter).
    attempts: u64,
    /// Failures the breaker counts.
    failures: u64,
    /// Outcomes the breaker counts (successes and counted failures).
    outcomes: u64,
}

/// Isolation state shared by the member's loops.
pub(crate) struct Isolation {
    pub settings: Arc<IsolationSettings>,
    member: Arc<str>,
    /// How long a probe token lasts: past it another member may probe (the holder died).
    probe_ttl: Duration,
    views: RwLock<HashMap<Arc<str>, BreakerView>>,
    /// The server's clock minus ours, ms (breaker times are the server's).
    offset_ms: AtomicI64,
    /// Attempts and outcomes since the last report, by tenant.
    outcomes: Mutex<HashMap<Arc<str>, Tally>>,
    /// Entries of each tenant this member holds (read, not settled).
    held: Mutex<HashMap<Arc<str>, usize>>,
    slots: tokio::sync::Mutex<HashMap<Arc<str>, Slot>>,
    /// Breaker states last published to the gauge.
    published: Mutex<HashMap<Arc<str>, BreakerState>>,
    /// Tenants whose breaker this member's own move closed (a probe's success) since the last
    /// refresh, which reports them with the ones it reads closed.
    closed_here: Mutex<Vec<Arc<str>>>,
}

fn local_ms() -> i64 {
    crate::task::now_ms() as i64
}

impl Isolation {
    /// The isolation state of `member`; a probe token it takes lasts `probe_ttl`.
    pub fn new(settings: Arc<IsolationSettings>, member: Arc<str>, probe_ttl: Duration) -> Self {
        Isolation {
            settings,
            member,
            probe_ttl,
            views: RwLock::new(HashMap::new()),
            offset_ms: AtomicI64::new(0),
            outcomes: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            slots: tokio::sync::Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            closed_here: Mutex::new(Vec::new()),
        }
    }

    /// Now by the server's clock, ms (as of the last refresh's reading of it).
    pub fn now_ms(&self) -> u64 {
        (local_ms() + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// The cached view of `tenant`'s breaker (closed when never seen otherwise).
    pub fn view(&self, tenant: &str) -> BreakerView {
        self.views
            .read()
            .ok()
            .and_then(|v| v.get(tenant).copied())
            .unwrap_or_default()
    }

    fn set_view(&self, tenant: &Arc<str>, view: BreakerView) {
        if let Ok(mut v) = self.views.write() {
            let old = v.insert(tenant.clone(), view).unwrap_or_default();
            if old.state != BreakerState::Closed && view.state == BreakerState::Closed {
                if let Ok(mut c) = self.closed_here.lock() {
                    c.push(tenant.clone());
                }
            }
        }
    }

    /// What to do with a task of `tenant` about to start.
    pub fn gate(&self, tenant: &str) -> Gate {
        self.view(tenant).gate(
            self.now_ms(),
            self.settings.breaker.cooldown,
            fastrand::f64(),
        )
    }

    /// How much of `tenant`'s lane a read may take now.
    pub fn read_allowance(&self, tenant: &str) -> crate::isolation::Allowance {
        self.view(tenant)
            .read_allowance(self.now_ms(), self.held(tenant))
    }

    /// The delay of a task held back by the current view of `tenant`'s breaker.
    pub fn defer_delay(&self, tenant: &str) -> Duration {
        crate::isolation::defer_delay(
            &self.view(tenant),
            self.now_ms(),
            self.settings.breaker.cooldown,
            fastrand::f64(),
        )
    }

    /// Entries of `tenant` this member holds.
    pub fn held(&self, tenant: &str) -> usize {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.get(tenant).copied())
            .unwrap_or(0)
    }

    /// The tenants this member holds entries of now.
    pub fn holding(&self) -> Vec<Arc<str>> {
        self.held
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds (or with `add = false` removes) `n` held entries of `tenant`.
    pub fn hold(&self, tenant: &Arc<str>, n: usize, add: bool) {
        if n == 0 {
            return;
        }
        if let Ok(mut h) = self.held.lock() {
            let e = h.entry(tenant.clone()).or_default();
            *e = if add { *e + n } else { e.saturating_sub(n) };
            if *e == 0 {
                h.remove(tenant);
            }
        }
    }

    /// Counts one attempt of `tenant` (reported once per refresh, for the share-of-work
    /// counter) and its outcome towards the tenant's failure window: `Ok` for a success,
    /// `Err(class)` for a failure (classes the breaker ignores are not counted there).
    pub fn record(&self, tenant: &Arc<str>, outcome: Result<(), crate::handler::FailureClass>) {
        let b = &self.settings.breaker;
        let counted = match outcome {
            Ok(()) => Some(false),
            Err(class) if b.counts(class) => Some(true),
            Err(_) => None,
        };
        if let Ok(mut o) = self.outcomes.lock() {
            let e = o.entry(tenant.clone()).or_default();
            e.attempts += 1;
            if let (true, Some(failed)) = (b.enabled, counted) {
                e.failures += failed as u64;
                e.outcomes += 1;
            }
        }
    }

    /// Logs and counts a transition this member made.
    pub fn transitioned(&self, tenant: &str, from: &str, to: &str, reason: &str, detail: &str) {
        events::isolation::breaker_transition(tenant, from, to, reason, detail);
    }

    /// Asks Redis for `tenant`'s one probe for `entry_id`; updates the view with the answer.
    /// Returns the gate the answer means (Run, Probe, or Defer).
    pub async fn admit_probe(&self, broker: &Broker, tenant: &Arc<str>, entry_id: &str) -> Gate {
        use crate::broker::ProbeVerdict;
        match broker
            .breaker_probe(tenant, &self.member, entry_id, self.probe_ttl)
            .await
        {
            Ok((verdict, moved)) => {
                if let Some((from, to)) = moved {
                    self.transitioned(
                        tenant,
                        &from,
                        &to,
                        crate::isolation::reason::COOLDOWN_ELAPSED,
                        "the cool-down is over: one probe may run",
                    );
                }
                match verdict {
                    ProbeVerdict::Run => {
                        self.set_view(tenant, BreakerView::CLOSED);
                        Gate::Run
                    }
                    ProbeVerdict::Probe { until_ms } => {
                        self.set_view(
                            tenant,
                            BreakerView {
                                state: BreakerState::HalfOpen,
                                until_ms: 0,
                                probe_until_ms: until_ms,
                            },
                        );
                        tracing::info!(tenant = %tenant, entry_id, "running the breaker's probe");
                        Gate::Probe
                    }
                    ProbeVerdict::Wait {
                        half_open,
                        until_ms,
                    } => {
                        let view = if half_open {
                            BreakerView {
                                state: BreakerState::HalfOpen,
                                until_ms: 0,
                                probe_until_ms: until_ms,
                            }
                        } else {
                            BreakerView {
                                state: BreakerState::Open,
                                until_ms,
                                probe_until_ms: 0,
                            }
                        };
                        self.set_view(tenant, view);
                        Gate::Defer(self.defer_delay(tenant))
                    }
                }
            }
            Err(e) => {
                events::isolation::probe_ask_failed(tenant, &e);
                Gate::Defer(self.defer_delay(tenant))
            }
        }
    }

    /// Reports the probe's outcome: `Some(true)` closes the breaker, `Some(false)` re-opens
    /// it, `None` gives the token back. Retries a failed call a few times; if it never gets
    /// through, the token expires and another probe decides.
    pub async fn probe_done(
        &self,
        broker: &Broker,
        tenant: &Arc<str>,
        entry_id: &str,
        success: Option<bool>,
        detail: &str,
    ) {
        let cooldown = self.settings.breaker.cooldown;
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=5 {
            match broker
                .breaker_probe_done(tenant, &self.member, entry_id, success, cooldown, detail)
                .await
            {
                Ok((state, moved)) => {
                    let now = self.now_ms();
                    let view = match BreakerState::parse(&state) {
                        BreakerState::Closed => BreakerView::CLOSED,
                        BreakerState::Open => BreakerView {
                            state: BreakerState::Open,
                            until_ms: now + cooldown.as_millis() as u64,
                            probe_until_ms: 0,
                        },
                        BreakerState::HalfOpen => BreakerView {
                            state: BreakerState::HalfOpen,
                            until_ms: 0,
                            probe_until_ms: 0,
                        },
                    };
                    if let Some((from, to)) = moved {
                        let reason = if to == "closed" {
                            crate::isolation::reason::PROBE_SUCCEEDED
                        } else {
                            crate::isolation::reason::PROBE_FAILED
                        };
                        self.transitioned(tenant, &from, &to, reason, detail);
                        self.set_view(tenant, view);
                    }
                    return;
                }
                Err(e) => {
                    // The probe token expires by itself and another probe decides.
                    events::isolation::probe_report_failed(tenant, &e, attempt == 5);
                    if attempt == 5 {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    /// Reserves fleet-wide slots for reads of capped tenants: for each `(tenant, wanted)`,
    /// how many entries the read may take. Served from this member's earlier reservation when
    /// it covers the read; otherwise one script call per tenant, issued together. Every slot
    /// handed out must be given back with [`Isolation::finish_read`] when the read's entries
    /// are admitted.
    pub async fn reserve(&self, broker: &Broker, wants: &[(Arc<str>, usize)]) -> Vec<usize> {
        if wants.is_empty() {
            return Vec::new();
        }
        let mut table = self.slots.lock().await;
        let now = Instant::now();
        let mut out = vec![0; wants.len()];
        let mut asks = Vec::new();
        for (i, (tenant, wanted)) in wants.iter().enumerate() {
            let held = self.held(tenant);
            let slot = table.entry(tenant.clone()).or_default();
            let spare = slot.reserved.saturating_sub(held + slot.reading);
            if spare >= *wanted || slot.refused_until.is_some_and(|t| t > now) {
                out[i] = spare.min(*wanted);
                slot.reading += out[i];
            } else {
                asks.push((i, tenant.clone(), held + slot.reading, *wanted, spare));
            }
        }
        if !asks.is_empty() {
            let ttl = self.settings.slot_ttl;
            let calls = asks.iter().map(|(_, tenant, holds, wanted, _)| {
                broker.slots(
                    tenant,
                    &self.member,
                    *holds,
                    *wanted,
                    self.settings.cap(tenant),
                    ttl,
                )
            });
            let results = futures_util::future::join_all(calls).await;
            for ((i, tenant, holds, wanted, spare), r) in asks.into_iter().zip(results) {
                let slot = table.entry(tenant.clone()).or_default();
                match r {
                    Ok(g) => {
                        slot.reserved = holds + g.granted;
                        slot.written = Some(now);
                        if g.granted < wanted {
                            slot.refused_until = Some(now + REFUSED_BACKOFF);
                            events::isolation::tenant_capped(&tenant);
                        } else {
                            slot.refused_until = None;
                        }
                        out[i] = g.granted;
                    }
                    Err(e) => {
                        events::isolation::slots_reserve_failed(&tenant, &e);
                        out[i] = spare;
                    }
                }
                slot.reading += out[i];
            }
        }
        for ((tenant, wanted), got) in wants.iter().zip(&out) {
            if let Some(slot) = table.get(tenant) {
                tracing::debug!(tenant = %tenant, wanted, got, held = self.held(tenant), reading = slot.reading, reserved = slot.reserved, "slots for a read");
            }
        }
        out
    }

    /// Admits a read's entries (`admit`) and gives back the slots the read took, in one step
    /// under the reservation lock: a refresh sees each slot either as "being read" or as
    /// "held", never as both (which would reserve it twice) or neither.
    pub async fn finish_read<R>(&self, done: &[(Arc<str>, usize)], admit: impl FnOnce() -> R) -> R {
        if done.is_empty() {
            return admit();
        }
        let mut table = self.slots.lock().await;
        let r = admit();
        for (tenant, n) in done {
            if let Some(slot) = table.get_mut(tenant) {
                slot.reading = slot.reading.saturating_sub(*n);
            }
        }
        r
    }

    /// One sync with Redis: report outcome counts (opening breakers that cross their
    /// thresholds), read the breakers of `read`, report and renew this member's reservations,
    /// publish the gauges of every known tenant (`tenants`). Returns the tenants whose breaker
    /// was found closed after this member had seen it open or half open (their held tasks are
    /// due).
    pub async fn refresh(
        &self,
        broker: &Broker,
        read: &[Arc<str>],
        tenants: &[Arc<str>],
    ) -> Vec<Arc<str>> {
        self.report_outcomes(broker).await;
        let mut closed = self
            .closed_here
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        closed.extend(self.read_breakers(broker, read).await);
        self.report_slots(broker, false).await;
        self.publish(tenants);
        closed
    }

    pub(crate) async fn report_outcomes(&self, broker: &Broker) {
        let tallies: Vec<(Arc<str>, Tally)> = match self.outcomes.lock() {
            Ok(mut o) => o.drain().collect(),
            Err(_) => return,
        };
        for (tenant, t) in &tallies {
            events::isolation::tenant_attempts(tenant, t.attempts);
        }
        let batch: Vec<(Arc<str>, Tally)> = tallies
            .into_iter()
            .filter(|(_, t)| t.outcomes > 0)
            .collect();
        if batch.is_empty() {
            return;
        }
        let th = self.settings.breaker.thresholds();
        let calls = batch.iter().map(|(t, tally)| {
            broker.breaker_record(t, tally.failures, tally.outcomes, &th, &self.member)
        });
        let results = futures_util::future::join_all(calls).await;
        for ((tenant, _), r) in batch.iter().zip(results) {
            match r {
                Ok(rec) => {
                    if rec.opened {
                        let detail = format!(
                            "{} of {} attempts failed within {} ms",
                            rec.failures,
                            rec.outcomes,
                            th.window.as_millis()
                        );
                        self.transitioned(
                            tenant,
                            "closed",
                            "open",
                            crate::isolation::reason::FAILURE_THRESHOLD,
                            &detail,
                        );
                        self.set_view(
                            tenant,
                            BreakerView {
                                state: BreakerState::Open,
                                until_ms: rec.until_ms,
                                probe_until_ms: 0,
                            },
                        );
                    }
                }
                Err(e) => {
                    // The counts are dropped: the breaker decides on a slightly smaller window.
                    events::isolation::outcomes_report_failed(tenant, &e);
                }
            }
        }
    }

    async fn read_breakers(&self, broker: &Broker, tenants: &[Arc<str>]) -> Vec<Arc<str>> {
        match self.load_views(broker, tenants).await {
            Ok(closed) => closed,
            Err(e) => {
                events::isolation::breakers_read_failed(&e);
                Vec::new()
            }
        }
    }

    /// Reads the breakers of `tenants` into the local view (and the server's clock offset).
    /// Returns the tenants whose breaker is now closed after an open or half-open view.
    pub async fn load_views(&self, broker: &Broker, tenants: &[Arc<str>]) -> Result<Vec<Arc<str>>> {
        let mut closed = Vec::new();
        if tenants.is_empty() {
            return Ok(closed);
        }
        let names: Vec<&str> = tenants.iter().map(|t| &**t).collect();
        let before = local_ms();
        let (server_now, infos) = broker.breaker_states(&names).await?;
        let after = local_ms();
        self.offset_ms
            .store(server_now as i64 - (before + after) / 2, Ordering::Relaxed);
        let Ok(mut views) = self.views.write() else {
            return Ok(closed);
        };
        for (tenant, info) in tenants.iter().zip(infos) {
            let state = BreakerState::parse(&info.state);
            let view = BreakerView {
                state,
                until_ms: if state == BreakerState::Open {
                    info.until_ms
                } else {
                    0
                },
                probe_until_ms: if info.probe.is_some() {
                    info.probe_until_ms
                } else {
                    0
                },
            };
            let old = views.insert(tenant.clone(), view).unwrap_or_default();
            if old.state != state {
                tracing::info!(tenant = %tenant, state = %state, reason = %info.reason, by = %info.by, "breaker is now {state}");
                if state == BreakerState::Closed {
                    closed.push(tenant.clone());
                }
            }
        }
        Ok(closed)
    }

    /// Writes this member's reservation of every tenant it holds entries of (or held before):
    /// what it holds plus what reads in progress took, renewed every third of the TTL. With
    /// `release`, writes 0 everywhere (shutdown: entries left pending are someone else's to
    /// reclaim and count).
    pub(crate) async fn report_slots(&self, broker: &Broker, release: bool) {
        let mut table = self.slots.lock().await;
        let now = Instant::now();
        let renew = self.settings.slot_ttl / 3;
        let held: HashMap<Arc<str>, usize> =
            self.held.lock().map(|h| h.clone()).unwrap_or_default();
        for tenant in held.keys() {
            table.entry(tenant.clone()).or_default();
        }
        let mut writes = Vec::new();
        for (tenant, slot) in table.iter() {
            let target = if release {
                0
            } else {
                held.get(tenant).copied().unwrap_or(0) + slot.reading
            };
            let stale = slot.written.is_none_or(|w| now.duration_since(w) >= renew);
            if target != slot.reserved || (target > 0 && stale) {
                writes.push((tenant.clone(), target));
            }
        }
        let ttl = self.settings.slot_ttl;
        let calls = writes.iter().map(|(tenant, target)| {
            broker.slots(
                tenant,
                &self.member,
                *target,
                0,
                self.settings.cap(tenant),
                ttl,
            )
        });
        let results = futures_util::future::join_all(calls).await;
        for ((tenant, target), r) in writes.into_iter().zip(results) {
            match r {
                Ok(_) => {
                    if let Some(slot) = table.get_mut(&tenant) {
                        slot.reserved = target;
                        slot.written = Some(now);
                    }
                }
                Err(e) => {
                    events::isolation::slots_renew_failed(&tenant, &e);
                }
            }
        }
        table.retain(|_, s| s.reserved > 0 || s.reading > 0);
    }

    /// Sets the breaker and in-flight gauges from the local view.
    fn publish(&self, tenants: &[Arc<str>]) {
        if let Ok(mut published) = self.published.lock() {
            for tenant in tenants {
                let state = self.view(tenant).state;
                let before = published.get(tenant).copied();
                if state != BreakerState::Closed {
                    if let Some(b) = before.filter(|b| *b != state) {
                        events::isolation::breaker_state(tenant, b, false);
                    }
                    events::isolation::breaker_state(tenant, state, true);
                    published.insert(tenant.clone(), state);
                } else if let Some(b) = before {
                    events::isolation::breaker_state(tenant, b, false);
                    published.remove(tenant);
                }
            }
        }
        // Every known tenant's series, 0 while it holds nothing here ("export 0 for series
        // known in advance"), so `sum by (tenant)` over members is always defined.
        let held: HashMap<Arc<str>, usize> =
            self.held.lock().map(|h| h.clone()).unwrap_or_default();
        for tenant in tenants {
            let n = held.get(tenant).copied().unwrap_or(0);
            events::isolation::tenant_in_flight(tenant, n);
        }
    }
}
