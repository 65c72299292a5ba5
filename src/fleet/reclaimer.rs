//! The reclaimer: takes over entries that stayed pending past `reclaim.min_idle_ms` at another
//! (crashed or stuck) member, with a cursor per lane kept between passes so every entry is
//! reached. Entries delivered `reclaim.max_deliveries` times are dead-lettered as crash loops.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::reader::report_claim;
use super::{Settlement, Shared};
use crate::broker::Broker;
use crate::config::ReclaimSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::{names, tenant_label};

/// The reclaimer loop's state.
pub(crate) struct Reclaimer {
    broker: Broker,
    shared: Arc<Shared>,
    settle: mpsc::UnboundedSender<Settlement>,
    cfg: ReclaimSettings,
    /// Where each lane's scan continues.
    cursors: HashMap<String, String>,
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
        }
    }

    /// One pass every `reclaim.interval_ms` until shutdown.
    pub async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
            self.pass().await;
        }
    }

    /// One claim step on every lane, within free capacity.
    pub async fn pass(&mut self) {
        for (lane, tenant) in self.shared.lanes() {
            let free = self
                .shared
                .unsettled_limit
                .saturating_sub(self.shared.unsettled());
            if free == 0 {
                return;
            }
            let cursor = self
                .cursors
                .get(&lane)
                .cloned()
                .unwrap_or_else(|| "0-0".to_owned());
            let skip = self
                .shared
                .inflight_by_tenant()
                .remove(&tenant)
                .unwrap_or_default();
            let step = match self
                .broker
                .reclaim(
                    &tenant,
                    &self.shared.member,
                    self.cfg.min_idle,
                    &cursor,
                    self.cfg.batch.min(free),
                    self.cfg.max_deliveries,
                    &skip,
                )
                .await
            {
                Ok(step) => step,
                Err(e) => {
                    metrics::counter!(names::REDIS_ERRORS, "op" => "reclaim").increment(1);
                    tracing::warn!(tenant = %tenant, error = %e, "reclaim step failed");
                    continue;
                }
            };
            report_claim(
                &self.shared,
                &self.settle,
                &lane,
                &tenant,
                &step,
                Some(self.shared.member.clone()),
                std::time::Duration::ZERO,
            );
            if !step.claimed.is_empty() {
                crate::failpoint::hit("after_claim");
            }
            let n = self.shared.queue_suspects(&tenant, step.claimed);
            if n > 0 {
                tracing::info!(tenant = %tenant, entries = n, "reclaimed stale entries");
                metrics::counter!(names::RECLAIMED, "tenant" => tenant_label(&tenant))
                    .increment(n as u64);
                self.shared.stats.with(&tenant, |t| t.reclaimed += n as u64);
            }
            match step.next {
                Some(next) => self.cursors.insert(lane, next),
                None => self.cursors.remove(&lane),
            };
        }
    }
}
