//! The reader: discovers tenants, drains this member's own pending entries on start (and after
//! any read error, to catch entries delivered to a read whose reply was lost), then reads new
//! entries across lanes, sized to free capacity, blocking only when the last read found nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Settlement, Shared};
use crate::broker::{is_missing_group, Broker, ClaimStep, Entry, LaneReader, ReadFrom};
use crate::config::FleetSettings;
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::telemetry::{names, tenant_label};

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
    /// How many lanes had entries in the last non-empty read: the basis for per-lane COUNT.
    active_lanes: usize,
}

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
            active_lanes: 1,
        }
    }

    /// Reads until shutdown. Errors from Redis are retried with backoff; the loop only ends
    /// with an error when it cannot even start.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut conn = loop {
            match self.connect().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "reader cannot connect; retrying");
                    if !pause(&shutdown, backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut block_next = false;
        let mut must_drain = true;
        while !shutdown.is_triggered() {
            if must_drain {
                match self.drain_own_pending(&shutdown).await {
                    Ok(()) => must_drain = false,
                    Err(e) => {
                        if !self.recover(&mut conn, e, &shutdown, &mut backoff).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            if !self.wait_for_capacity(&shutdown).await {
                break;
            }
            if let Err(e) = self.discover(false).await {
                tracing::warn!(error = %e, "tenant discovery failed; keeping the known lanes");
            }
            if self.lanes.is_empty() {
                if !pause(&shutdown, self.discovery_interval).await {
                    break;
                }
                continue;
            }
            let free = self
                .shared
                .unsettled_limit
                .saturating_sub(self.shared.unsettled())
                .max(1);
            let window = self.window();
            let per_lane =
                (free / self.active_lanes.clamp(1, window.len())).clamp(1, self.read_batch);
            let block = block_next.then_some(self.block);
            let sent = Instant::now();
            match conn.read(&window, ReadFrom::New, per_lane, block).await {
                Ok(streams) => {
                    self.shared.health.read_done();
                    backoff = Duration::from_millis(100);
                    let lanes_with_entries = streams.iter().filter(|(_, e)| !e.is_empty()).count();
                    block_next = lanes_with_entries == 0;
                    if lanes_with_entries > 0 {
                        self.active_lanes = lanes_with_entries;
                    }
                    self.ingest(streams, sent);
                }
                Err(e) => {
                    block_next = false;
                    // A lost reply may have delivered entries into our PEL: drain it again.
                    must_drain = true;
                    if !self.recover(&mut conn, e, &shutdown, &mut backoff).await {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<LaneReader> {
        let conn = self.broker.reader(&self.member, self.block).await?;
        self.discover(true).await?;
        Ok(conn)
    }

    /// Handles a read error: recreates missing groups, or reconnects after a pause. Returns
    /// false when shutdown fired meanwhile.
    async fn recover(
        &mut self,
        conn: &mut LaneReader,
        e: crate::error::Error,
        shutdown: &Shutdown,
        backoff: &mut Duration,
    ) -> bool {
        metrics::counter!(names::REDIS_ERRORS, "op" => "read").increment(1);
        if is_missing_group(&e) {
            tracing::warn!(error = %e, "a lane or its group is gone; recreating groups");
            for tenant in self.tenant_of.values().cloned().collect::<Vec<_>>() {
                if let Err(e) = self.broker.ensure_group(&tenant).await {
                    tracing::warn!(tenant = %tenant, error = %e, "cannot recreate group");
                }
            }
            return true;
        }
        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "read failed; reconnecting");
        if !pause(shutdown, *backoff).await {
            return false;
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        match self.connect().await {
            Ok(c) => *conn = c,
            Err(e) => tracing::warn!(error = %e, "reconnect failed"),
        }
        true
    }

    /// Picks up tenants registered since the last look, creating the group on their lanes.
    async fn discover(&mut self, force: bool) -> Result<()> {
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
            tracing::info!(tenant = %tenant, "serving tenant");
            crate::telemetry::register_tenant(&tenant);
            let tenant: Arc<str> = tenant.as_str().into();
            self.tenant_of.insert(lane.clone(), tenant.clone());
            if let Ok(mut shared) = self.shared.lanes.write() {
                shared.push((lane.clone(), tenant));
            }
            self.lanes.push(lane);
        }
        self.known_count = count;
        Ok(())
    }

    /// The lanes the next read covers: all of them, or a rotating window when there are more
    /// than one read may name.
    fn window(&mut self) -> Vec<String> {
        let n = self.lanes.len();
        if n <= self.max_lanes_per_read {
            return self.lanes.clone();
        }
        let start = self.rotation % n;
        self.rotation = (start + self.max_lanes_per_read) % n;
        (0..self.max_lanes_per_read)
            .map(|i| self.lanes[(start + i) % n].clone())
            .collect()
    }

    /// Waits until fewer entries are unsettled than the limit. False when shutdown fired.
    async fn wait_for_capacity(&self, shutdown: &Shutdown) -> bool {
        loop {
            if shutdown.is_triggered() {
                return false;
            }
            if self.shared.unsettled() < self.shared.unsettled_limit {
                return true;
            }
            tokio::select! {
                _ = shutdown.wait() => return false,
                _ = self.shared.capacity_freed.notified() => {}
            }
        }
    }

    /// Takes up this member's own pending entries in every lane (start-up, and after a read
    /// error): entries delivered too often are dead-lettered as crash loops (this member kept
    /// dying on them), the rest are claimed back (a re-delivery) and queued, skipping those
    /// already in flight here.
    async fn drain_own_pending(&mut self, shutdown: &Shutdown) -> Result<()> {
        let inflight = self.shared.inflight_by_tenant();
        for (lane, tenant) in self.shared.lanes() {
            let skip = inflight.get(&tenant).cloned().unwrap_or_default();
            let mut cursor = "-".to_owned();
            loop {
                if !self.wait_for_capacity(shutdown).await {
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
                self.shared.queue_suspects(&tenant, step.claimed);
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
            metrics::counter!(names::TASKS_READ, "tenant" => tenant_label(&tenant))
                .increment(entries.len() as u64);
            crate::failpoint::hit("after_read");
            self.shared
                .ingest(&lane, &tenant, entries, 1, sent, &self.settle);
        }
    }
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
        tracing::error!(lane = %lane, tombstones, "pending entries were deleted before they ran: payloads lost");
        metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(tenant))
            .increment(tombstones as u64);
        shared
            .stats
            .with(tenant, |t| t.tombstones += tombstones as u64);
    }
    for (id, deliveries) in poison {
        if shared.admit(tenant, id).is_some() {
            let _ = settle.send(Settlement::CrashLoop {
                tenant: tenant.clone(),
                entry_id: id.clone(),
                deliveries: *deliveries,
                owner: owner.clone(),
                min_idle,
            });
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
