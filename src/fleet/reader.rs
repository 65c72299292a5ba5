//! The reader: discovers tenants, drains this member's own pending entries on start (and after
//! any read error, to catch entries delivered to a read whose reply was lost), then reads new
//! entries across lanes, sized to free capacity, blocking only when the last read found nothing.
//!
//! Tenant isolation shapes every read: a lane whose breaker is open is not read (once its
//! cool-down is over, a member holding none of the tenant's entries reads one, the probe
//! candidate); free capacity is shared between lanes by weight; a capped tenant's lane takes
//! no more than the fleet-wide slots this member could reserve. Lanes asking for different
//! counts are read in one XREADGROUP per count.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::read_plan::{read_groups, read_plan, LaneInput, ReadPlan};
use super::settlement::{Aside, Settlement};
use super::shared::{Shared, Wish};
use crate::broker::{is_missing_group, Broker, ClaimStep, Entry, LaneReader, ReadFrom};
use crate::config::FleetSettings;
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::telemetry::{events, RedisOp};

/// The reader loop's state.
pub(crate) struct Reader {
    broker: Broker,
    shared: Arc<Shared>,
    settle: mpsc::UnboundedSender<Settlement>,
    member: String,
    max_deliveries: u64,
    block: Duration,
    read_batch: usize,
    discovery_interval: Duration,
    max_lanes_per_read: usize,
    /// Lane keys, in registry order.
    lanes: Vec<String>,
    /// Lane key → tenant.
    tenant_of: HashMap<String, Arc<str>>,
    /// How many registered tenants we last saw.
    known_count: u64,
    last_discovery: Option<Instant>,
    /// Where the next read's window of lanes starts, when there are more than fit one read.
    rotation: usize,
    /// Lanes served since the last read: the next read names them whatever the rotation (a
    /// new tenant's first entries wait for no turn).
    fresh: Vec<String>,
    /// Tenants whose lanes had entries in the last non-empty read (or were skipped since,
    /// waiting for their turn): the basis for per-lane COUNT.
    active: HashSet<Arc<str>>,
    /// Each lane's share carried over between reads (see [`crate::isolation::lane_counts`]).
    credits: HashMap<Arc<str>, f64>,
    /// The reader's own connection (`None` until the first connect).
    conn: Option<LaneReader>,
    /// Whether the next read may block: the last one found nothing and no lane waits on its cap.
    block_next: bool,
    /// Whether this member's own pending entries must be taken up before the next read (on
    /// start, and after a read error whose lost reply may have delivered entries).
    must_drain: bool,
    /// The pause before the next reconnect.
    backoff: Duration,
}

/// What one step of the reader did, for `run` to pace the next.
#[derive(Debug)]
pub(crate) enum ReadStep {
    /// A read went out.
    Read(Cycle),
    /// Every lane is held back or at its cap: wait for capacity to free.
    HeldBack,
    /// No lane is known yet: look again after the discovery interval.
    NoLanes,
    /// Shutdown fired while waiting for capacity.
    Stopped,
}

/// Why the reader looks at the tenant registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// On (re)connecting: always.
    Connect,
    /// The tenant watch heard a producer announce new tenants: at once.
    Signalled,
    /// Every `fleet.discovery_interval_ms`, when the registry's size changed: the fallback for
    /// announcements missed and producers that do not announce.
    Periodic,
}

impl Look {
    /// The `via` label of the tenants found this way.
    fn as_str(self) -> &'static str {
        match self {
            Look::Connect => "connect",
            Look::Signalled => "signal",
            Look::Periodic => "poll",
        }
    }
}

/// What one read cycle found.
#[derive(Debug)]
pub(crate) struct Cycle {
    /// Entries read in all.
    pub found: usize,
    /// Whether some lane took less than its share because its tenant is at its fleet-wide cap
    /// (its slots come back without a new entry arriving, so the next read must not block).
    pub capped: bool,
}

/// How long a reader that can read nothing (every lane held back or at its cap) waits for its
/// own capacity to free before it looks again.
const HELD_BACK_WAIT: Duration = Duration::from_millis(50);

impl Reader {
    pub fn new(
        broker: Broker,
        shared: Arc<Shared>,
        settle: mpsc::UnboundedSender<Settlement>,
        s: &FleetSettings,
    ) -> Reader {
        Reader {
            broker,
            shared,
            settle,
            member: s.member_id.clone(),
            max_deliveries: s.reclaim.max_deliveries,
            block: s.block,
            read_batch: s.read_batch,
            discovery_interval: s.discovery_interval,
            max_lanes_per_read: s.max_lanes_per_read,
            lanes: Vec::new(),
            tenant_of: HashMap::new(),
            known_count: 0,
            last_discovery: None,
            rotation: 0,
            fresh: Vec::new(),
            active: HashSet::new(),
            credits: HashMap::new(),
            conn: None,
            block_next: false,
            must_drain: true,
            backoff: Duration::from_millis(100),
        }
    }

    /// Reads until shutdown. Errors from Redis are retried with backoff; the loop only ends
    /// with an error when it cannot even start.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        loop {
            match self.connect().await {
                Ok(c) => break self.conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "reader cannot connect; retrying");
                    if !pause(&shutdown, self.backoff).await {
                        return Ok(());
                    }
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        while !shutdown.is_triggered() {
            match self.step(&shutdown).await {
                Ok(ReadStep::Stopped) => break,
                Ok(ReadStep::NoLanes) => {
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = self.shared.discovery.wake.notified() => {}
                        _ = tokio::time::sleep(self.discovery_interval) => {}
                    }
                }
                Ok(ReadStep::HeldBack) => self.held_back_wait(&shutdown).await,
                Ok(ReadStep::Read(cycle)) => {
                    if cycle.found == 0 && cycle.capped {
                        self.held_back_wait(&shutdown).await;
                    }
                }
                Err(e) => {
                    if !self.recover(e, &shutdown).await {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// One drain-or-read cycle: takes up this member's own pending entries when it must, waits
    /// for free capacity, picks up new tenants, then reads once. Never sleeps; an error leaves
    /// the reader to drain again before its next read.
    pub(crate) async fn step(&mut self, shutdown: &Shutdown) -> Result<ReadStep> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        if self.must_drain {
            self.drain_own_pending(shutdown).await?;
            self.must_drain = false;
        }
        // A busy member reads once a quantum of slots is free, not at every freed slot: each
        // lane read then gives a batch (crate::isolation::lane_counts).
        let quantum = crate::isolation::read_quantum(self.read_batch);
        if !self.wait_for_capacity(shutdown, quantum).await {
            return Ok(ReadStep::Stopped);
        }
        let looked = match self.shared.discovery.take() {
            // An announcement without a name (not one of redrive's producers) reads it all.
            Some(Wish { full: false, named }) if !named.is_empty() => {
                self.discover_named(named).await
            }
            Some(_) => self.discover(Look::Signalled).await,
            None => self.discover(Look::Periodic).await,
        };
        if let Err(e) = looked {
            tracing::warn!(error = %e, "tenant discovery failed; keeping the known lanes");
        }
        if self.lanes.is_empty() {
            return Ok(ReadStep::NoLanes);
        }
        let Some(mut conn) = self.conn.take() else {
            return Ok(ReadStep::NoLanes);
        };
        let read = self.read_cycle(&mut conn, self.block_next).await;
        self.conn = Some(conn);
        match read {
            Ok(None) => {
                self.block_next = false;
                Ok(ReadStep::HeldBack)
            }
            Ok(Some(cycle)) => {
                self.shared.health.read_done();
                self.backoff = Duration::from_millis(100);
                self.block_next = cycle.found == 0 && !cycle.capped;
                Ok(ReadStep::Read(cycle))
            }
            Err(e) => {
                self.block_next = false;
                // A lost reply may have delivered entries into our PEL: drain it again.
                self.must_drain = true;
                Err(e)
            }
        }
    }

    /// One read over the current window of lanes, shaped by tenant isolation. `None` when no
    /// lane may be read at all.
    async fn read_cycle(
        &mut self,
        conn: &mut LaneReader,
        block_next: bool,
    ) -> Result<Option<Cycle>> {
        let free = self
            .shared
            .unsettled_limit
            .saturating_sub(self.shared.unsettled())
            .max(1);
        let window: Vec<LaneInput> = self
            .window()
            .into_iter()
            .filter_map(|lane| {
                let tenant = self.tenant_of.get(&lane)?.clone();
                let iso = &self.shared.isolation;
                Some(LaneInput {
                    weight: iso.settings.weight(&tenant),
                    active: self.active.contains(&tenant),
                    allowance: iso.read_allowance(&tenant),
                    credit: self.credits.get(&tenant).copied().unwrap_or(0.0),
                    lane,
                    tenant,
                })
            })
            .collect();
        let ReadPlan {
            lanes,
            mut counts,
            credits,
            still_active,
        } = read_plan(free, self.read_batch, window);
        self.credits.extend(credits);
        let iso = &self.shared.isolation;
        // Capped tenants read only what the fleet-wide cap leaves them.
        let capped_idx: Vec<usize> = (0..lanes.len())
            .filter(|i| iso.settings.cap(&lanes[*i].1) > 0)
            .collect();
        let wants: Vec<(Arc<str>, usize)> = capped_idx
            .iter()
            .map(|i| (lanes[*i].1.clone(), counts[*i]))
            .collect();
        let granted = iso.reserve(&self.broker, &wants).await;
        let mut capped = false;
        let mut reading = Vec::with_capacity(wants.len());
        for (i, g) in capped_idx.iter().zip(granted) {
            capped |= g < counts[*i];
            counts[*i] = g;
            if g > 0 {
                reading.push((lanes[*i].1.clone(), g));
            }
        }
        // One XREADGROUP per distinct count (usually one); a blocking read only when the last
        // one found nothing and no lane waits on its cap, over every lane at the smallest count.
        let groups = read_groups(lanes, counts, block_next && !capped);
        if groups.is_empty() {
            iso.finish_read(&reading, || ()).await;
            return Ok(None);
        }
        let block = (block_next && !capped).then_some(self.block);
        let mut found = 0;
        let mut result = Ok(());
        let mut with_entries = HashSet::new();
        let mut read = Vec::new();
        for (count, group) in groups {
            let sent = Instant::now();
            match conn.read(&group, ReadFrom::New, count, block).await {
                Ok(streams) => {
                    for (lane, entries) in &streams {
                        if !entries.is_empty() {
                            found += entries.len();
                            if let Some(t) = self.tenant_of.get(lane) {
                                with_entries.insert(t.clone());
                            }
                        }
                    }
                    read.push((streams, sent));
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Entries delivered by the reads that succeeded are admitted even when a later one
        // failed; their slots turn from "being read" into "held" in one step.
        iso.finish_read(&reading, || {
            for (streams, sent) in read {
                self.ingest(streams, sent);
            }
        })
        .await;
        result?;
        if !with_entries.is_empty() {
            with_entries.extend(still_active);
            self.active = with_entries;
        }
        Ok(Some(Cycle { found, capped }))
    }

    /// Waits until this member's capacity frees, or a short while (another member's slots or a
    /// breaker's cool-down may free a lane meanwhile).
    async fn held_back_wait(&self, shutdown: &Shutdown) {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = self.shared.capacity_freed.notified() => {}
            _ = tokio::time::sleep(HELD_BACK_WAIT) => {}
        }
    }

    async fn connect(&mut self) -> Result<LaneReader> {
        let conn = self.broker.reader(&self.member, self.block).await?;
        self.shared.discovery.set_reader_client(conn.client_id());
        self.discover(Look::Connect).await?;
        Ok(conn)
    }

    /// Handles a read error: recreates missing groups, or reconnects after a pause. Returns
    /// false when shutdown fired meanwhile.
    async fn recover(&mut self, e: crate::error::Error, shutdown: &Shutdown) -> bool {
        events::redis_calls::failed(RedisOp::Read);
        if is_missing_group(&e) {
            tracing::warn!(error = %e, "a lane or its group is gone; recreating groups");
            for tenant in self.tenant_of.values().cloned().collect::<Vec<_>>() {
                if let Err(e) = self.broker.ensure_group(&tenant).await {
                    tracing::warn!(tenant = %tenant, error = %e, "cannot recreate group");
                }
            }
            return true;
        }
        tracing::warn!(error = %e, retry_in_ms = self.backoff.as_millis() as u64, "read failed; reconnecting");
        if !pause(shutdown, self.backoff).await {
            return false;
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
        match self.connect().await {
            Ok(c) => self.conn = Some(c),
            Err(e) => tracing::warn!(error = %e, "reconnect failed"),
        }
        true
    }

    /// Picks up tenants registered since the last look, creating the group on their lanes.
    async fn discover(&mut self, look: Look) -> Result<()> {
        let force = look != Look::Periodic;
        let due = self
            .last_discovery
            .is_none_or(|t| t.elapsed() >= self.discovery_interval);
        if !force && !due {
            return Ok(());
        }
        self.last_discovery = Some(Instant::now());
        let count = self.broker.tenant_count().await?;
        if !force && count == self.known_count {
            return Ok(());
        }
        let mut new: Vec<Arc<str>> = Vec::new();
        for tenant in self.broker.tenants().await? {
            let lane = self.broker.keys().lane(&tenant);
            if self.tenant_of.contains_key(&lane) {
                continue;
            }
            if crate::task::validate_tenant(&tenant).is_err() {
                tracing::error!(tenant = %tenant, "registry holds an invalid tenant name; skipping it");
                continue;
            }
            self.broker.ensure_group(&tenant).await?;
            new.push(tenant.as_str().into());
        }
        self.serve(new, look).await?;
        self.known_count = count;
        Ok(())
    }

    /// Picks up the tenants a producer announced (the names it published), checking them
    /// against the registry (one `SMISMEMBER`) instead of reading all of it: the cost of an
    /// announcement does not grow with the number of tenants. A name the registry does not
    /// hold is left to the periodic look. The registry's count is not taken: the next periodic
    /// look sees it changed and reads the registry once.
    async fn discover_named(&mut self, mut names: Vec<String>) -> Result<()> {
        names.sort_unstable();
        names.dedup();
        names.retain(|t| {
            crate::task::validate_tenant(t).is_ok()
                && !self.tenant_of.contains_key(&self.broker.keys().lane(t))
        });
        if names.is_empty() {
            return Ok(());
        }
        let held = self.broker.registered(&names).await?;
        let mut new: Vec<Arc<str>> = Vec::with_capacity(names.len());
        for (tenant, held) in names.iter().zip(held) {
            if held {
                self.broker.ensure_group(tenant).await?;
                new.push(tenant.as_str().into());
            }
        }
        self.serve(new, Look::Signalled).await
    }

    /// Serves the `new` tenants (their groups exist): their breakers read first, then their
    /// lanes added, named by the next read whatever the rotation.
    async fn serve(&mut self, new: Vec<Arc<str>>, look: Look) -> Result<()> {
        // A lane is served only once its tenant's breaker has been seen: an operator's hold
        // or an open breaker applies from this member's first read.
        let _ = self.shared.isolation.load_views(&self.broker, &new).await?;
        for tenant in new {
            let lane = self.broker.keys().lane(&tenant);
            events::read::tenant_served(&tenant, look.as_str());
            self.tenant_of.insert(lane.clone(), tenant.clone());
            if let Ok(mut shared) = self.shared.lanes.write() {
                shared.push((lane.clone(), tenant));
            }
            self.fresh.push(lane.clone());
            self.lanes.push(lane);
        }
        Ok(())
    }

    /// The lanes the next read covers: all of them, or — when there are more than one read may
    /// name — the lanes served since the last read, then a rotating window.
    fn window(&mut self) -> Vec<String> {
        let (lanes, rotation) = window(
            &self.lanes,
            &mut self.fresh,
            self.rotation,
            self.max_lanes_per_read,
        );
        self.rotation = rotation;
        lanes
    }

    /// Waits until at least `free` slots are free under the limit of unsettled entries (one, or
    /// the read quantum, which the read batch bounds: with every slot running and nothing
    /// queued, a whole read batch is free). False when shutdown fired.
    async fn wait_for_capacity(&self, shutdown: &Shutdown, free: usize) -> bool {
        loop {
            if shutdown.is_triggered() {
                return false;
            }
            if self.shared.unsettled() + free.max(1) <= self.shared.unsettled_limit {
                return true;
            }
            tokio::select! {
                _ = shutdown.wait() => return false,
                _ = self.shared.capacity_freed.notified() => {}
            }
        }
    }

    /// Takes up this member's own pending entries in every lane (start-up, and after a read
    /// error): entries that started too often are dead-lettered as crash loops (this member
    /// kept dying on them), the rest are claimed back (JUSTID: their count grows only when one
    /// starts) and queued, skipping those already in flight here.
    async fn drain_own_pending(&mut self, shutdown: &Shutdown) -> Result<()> {
        let inflight = self.shared.inflight_by_tenant();
        for (lane, tenant) in self.shared.lanes() {
            let skip = inflight.get(&tenant).cloned().unwrap_or_default();
            let mut cursor = "-".to_owned();
            loop {
                if !self.wait_for_capacity(shutdown, 1).await {
                    return Ok(());
                }
                let step = self
                    .broker
                    .claim_own(
                        &tenant,
                        &self.member,
                        &cursor,
                        self.read_batch,
                        self.max_deliveries,
                        &skip,
                    )
                    .await?;
                if !step.claimed.is_empty() || !step.poison.is_empty() {
                    tracing::info!(
                        lane = %lane, entries = step.claimed.len(), crash_loops = step.poison.len(),
                        "re-reading own pending entries"
                    );
                }
                let me: Arc<str> = self.member.as_str().into();
                report_claim(
                    &self.shared,
                    &self.settle,
                    &lane,
                    &tenant,
                    &step,
                    Some(me),
                    Duration::ZERO,
                );
                self.shared
                    .queue_suspects(&tenant, step.claimed, &step.owners);
                match step.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Turns read entries into jobs (or settlements for unreadable ones).
    fn ingest(&self, streams: Vec<(String, Vec<Entry>)>, sent: Instant) {
        for (lane, entries) in streams {
            let Some(tenant) = self.tenant_of.get(&lane).cloned() else {
                tracing::error!(lane = %lane, "read a lane this member does not know; ignoring it");
                continue;
            };
            if entries.is_empty() {
                continue;
            }
            events::read::tasks_read(&tenant, entries.len());
            crate::failpoint::hit("after_read");
            self.shared
                .ingest(&lane, &tenant, entries, 0, sent, &self.settle);
        }
    }
}

/// The lanes a read names out of `lanes` (at most `max`) and where the next rotation starts:
/// every lane when they fit, else first the `fresh` ones (taken out; those past `max` wait for
/// the next read), then lanes in turn from `rotation`, each named once.
fn window(
    lanes: &[String],
    fresh: &mut Vec<String>,
    rotation: usize,
    max: usize,
) -> (Vec<String>, usize) {
    let n = lanes.len();
    if n <= max {
        fresh.clear();
        return (lanes.to_vec(), rotation);
    }
    let later = fresh.split_off(fresh.len().min(max));
    let mut out = std::mem::replace(fresh, later);
    let named: HashSet<String> = out.iter().cloned().collect();
    let start = rotation % n;
    let mut next = start;
    for i in 0..n {
        if out.len() >= max {
            break;
        }
        next = (start + i + 1) % n;
        let lane = &lanes[(start + i) % n];
        if !named.contains(lane) {
            out.push(lane.clone());
        }
    }
    (out, next)
}

/// Hands the poison entries of a claim step to the settler and counts its tombstones.
pub(crate) fn report_claim(
    shared: &Shared,
    settle: &mpsc::UnboundedSender<Settlement>,
    lane: &str,
    tenant: &Arc<str>,
    step: &ClaimStep,
    owner: Option<Arc<str>>,
    min_idle: Duration,
) {
    let (tombstones, poison) = (step.tombstones, &step.poison);
    if tombstones > 0 {
        events::read::tombstones_found(lane, tenant, tombstones);
        shared
            .stats
            .with(tenant, |t| t.tombstones += tombstones as u64);
    }
    for (id, deliveries) in poison {
        if shared.admit(tenant, id).is_some() {
            let _ = settle.send(Settlement::Aside(Aside::CrashLoop {
                tenant: tenant.clone(),
                entry_id: id.clone(),
                deliveries: *deliveries,
                owner: owner.clone(),
                min_idle,
            }));
        }
    }
}

/// Sleeps for `d` unless shutdown fires first. Returns false when it did.
async fn pause(shutdown: &Shutdown, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::window;

    fn lanes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("l{i}")).collect()
    }

    #[test]
    fn every_lane_is_read_when_they_fit() {
        let all = lanes(3);
        let mut fresh = vec!["l2".to_owned()];
        assert_eq!(window(&all, &mut fresh, 1, 3), (all.clone(), 1));
        assert!(fresh.is_empty());
    }

    #[test]
    fn the_window_rotates_over_every_lane() {
        let all = lanes(5);
        let mut fresh = Vec::new();
        let (w, next) = window(&all, &mut fresh, 0, 2);
        assert_eq!((w, next), (vec!["l0".to_owned(), "l1".to_owned()], 2));
        let (w, next) = window(&all, &mut fresh, 4, 2);
        assert_eq!((w, next), (vec!["l4".to_owned(), "l0".to_owned()], 1));
    }

    #[test]
    fn fresh_lanes_are_read_first_whatever_the_rotation() {
        let all = lanes(6);
        // l5 is new; the rotation is at l0: it would wait for its turn.
        let mut fresh = vec!["l5".to_owned()];
        let (w, next) = window(&all, &mut fresh, 0, 3);
        assert_eq!(w, vec!["l5", "l0", "l1"]);
        assert_eq!(next, 2);
        assert!(fresh.is_empty());
        // A fresh lane the rotation reaches as well is named once.
        let mut fresh = vec!["l3".to_owned()];
        let (w, next) = window(&all, &mut fresh, 2, 3);
        assert_eq!(w, vec!["l3", "l2", "l4"]);
        assert_eq!(next, 5);
        // More fresh lanes than a read names: the rest go first in the next read.
        let mut fresh = vec!["l1".to_owned(), "l3".to_owned(), "l5".to_owned()];
        let (w, next) = window(&all, &mut fresh, 4, 2);
        assert_eq!((w, next), (vec!["l1".to_owned(), "l3".to_owned()], 4));
        assert_eq!(fresh, vec!["l5"]);
    }
}
