//! The reclaimer: takes over entries that stayed pending past `reclaim.min_idle_ms` at another
//! (crashed or stuck) member, with a cursor per lane kept between passes so every entry is
//! reached. Entries that started `reclaim.max_deliveries` times are dead-lettered as crash loops.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::reader::report_claim;
use super::rotation::{self, Rotation};
use super::settlement::Settlement;
use super::shared::Shared;
use crate::broker::{Broker, ReclaimScan};
use crate::config::ReclaimSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// The reclaimer loop's state.
pub(crate) struct Reclaimer {
    broker: Broker,
    shared: Arc<Shared>,
    settle: mpsc::UnboundedSender<Settlement>,
    cfg: ReclaimSettings,
    /// Where each lane's scan continues.
    cursors: HashMap<String, String>,
    /// Whose turn it is when there are more lanes than one pass may scan.
    rotation: Rotation,
}

impl Reclaimer {
    pub fn new(
        broker: Broker,
        shared: Arc<Shared>,
        settle: mpsc::UnboundedSender<Settlement>,
        cfg: ReclaimSettings,
    ) -> Reclaimer {
        Reclaimer {
            broker,
            shared,
            settle,
            cfg,
            cursors: HashMap::new(),
            rotation: Rotation::default(),
        }
    }

    /// One pass every `reclaim.interval_ms` until shutdown.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
            self.step().await;
        }
    }

    /// One scan over the lanes whose turn it is (every lane when there are at most
    /// [`rotation::budget`] of them per interval; else that many, in turn, so an idle member's
    /// reclaim work does not grow with the number of tenants), within free capacity: a lane is
    /// scanned step by step until its cursor comes round or a step finds fewer stale entries
    /// than it asked for, so a crashed member's whole backlog is taken in one pass, not one
    /// batch per interval.
    pub(crate) async fn step(&mut self) -> u64 {
        let mut queued = 0;
        let lanes = self.shared.lanes();
        let turn: Vec<(String, Arc<str>)> = self
            .rotation
            .pick(&lanes, rotation::budget(self.cfg.interval))
            .into_iter()
            .cloned()
            .collect();
        let turn = self.with_stale_entries(turn).await;
        for (lane, tenant) in turn {
            loop {
                let free = self
                    .shared
                    .unsettled_limit
                    .saturating_sub(self.shared.unsettled());
                if free == 0 {
                    return queued;
                }
                let asked = self.cfg.batch.min(free);
                let Some((step, n)) = self.claim_page(&lane, &tenant, asked).await else {
                    break;
                };
                queued += n as u64;
                let found = step.claimed.len() + step.poison.len() + step.tombstones;
                if step.next.is_none() || found < asked {
                    break;
                }
            }
        }
        queued
    }

    /// The lanes of `turn` that hold an entry pending past `reclaim.min_idle_ms` (one pipelined
    /// `XPENDING … IDLE` per lane: one round trip per master, and no scan of a lane with
    /// nothing to take over). When Redis cannot say, every lane of the turn is scanned.
    async fn with_stale_entries(&self, turn: Vec<(String, Arc<str>)>) -> Vec<(String, Arc<str>)> {
        let tenants: Vec<Arc<str>> = turn.iter().map(|(_, t)| t.clone()).collect();
        match self.broker.stale_lanes(&tenants, self.cfg.min_idle).await {
            Ok(stale) => turn
                .into_iter()
                .zip(stale)
                .filter_map(|(lane, stale)| stale.then_some(lane))
                .collect(),
            Err(e) => {
                events::claims::reclaim_probe_failed(turn.len(), &e);
                turn
            }
        }
    }

    /// One claim step on one lane, with how many entries it queued; `None` when Redis failed
    /// (logged, counted).
    async fn claim_page(
        &mut self,
        lane: &str,
        tenant: &Arc<str>,
        asked: usize,
    ) -> Option<(crate::broker::ClaimStep, usize)> {
        let cursor = self
            .cursors
            .get(lane)
            .cloned()
            .unwrap_or_else(|| "0-0".to_owned());
        let skip = self
            .shared
            .inflight_by_tenant()
            .remove(tenant)
            .unwrap_or_default();
        let step = match self
            .broker
            .reclaim(
                tenant,
                &self.shared.member,
                ReclaimScan {
                    min_idle: self.cfg.min_idle,
                    cursor: &cursor,
                    count: asked,
                    max_starts: self.cfg.max_deliveries,
                    skip: &skip,
                },
            )
            .await
        {
            Ok(step) => step,
            Err(e) => {
                events::claims::reclaim_failed(tenant, &e);
                return None;
            }
        };
        report_claim(
            &self.shared,
            &self.settle,
            lane,
            tenant,
            &step,
            Some(self.shared.member.clone()),
            std::time::Duration::ZERO,
        );
        if !step.claimed.is_empty() {
            crate::failpoint::hit("after_claim");
        }
        let n = self
            .shared
            .queue_suspects(tenant, step.claimed.clone(), &step.owners);
        if n > 0 {
            events::claims::reclaimed(tenant, n);
            self.shared.stats.with(tenant, |t| t.reclaimed += n as u64);
        }
        match &step.next {
            Some(next) => self.cursors.insert(lane.to_owned(), next.clone()),
            None => self.cursors.remove(lane),
        };
        Some((step, n))
    }
}
