//! The stats publisher: adds this member's settle counts (completed, recovered, dead-lettered,
//! retried) to per-tenant minute buckets in Redis every `admin.stats_interval_ms`, so that
//! `redrive health` and `dlq stats` can show what happened in a window across the fleet. Off
//! the hot path: it reads the member's in-memory tallies and sends deltas in one pipeline. A
//! member killed with SIGKILL loses at most one interval of counts (they are for operators'
//! overviews, not for correctness).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{FleetStats, TenantTally};
use crate::broker::Broker;
use crate::shutdown::Shutdown;
use crate::telemetry::names;

/// The publisher loop's settings and handles.
pub(crate) struct Publisher {
    pub broker: Broker,
    pub stats: Arc<FleetStats>,
    pub interval: Duration,
}

impl Publisher {
    /// Publishes every interval until `shutdown`, then once more (after the settler's last
    /// settles, which the shutdown order guarantees).
    pub async fn run(self, shutdown: Shutdown) {
        let mut sent = BTreeMap::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
            self.publish(&mut sent).await;
        }
        self.publish(&mut sent).await;
    }

    /// Sends what was settled since the last successful publish.
    pub async fn publish(&self, sent: &mut BTreeMap<String, TenantTally>) {
        let now = self.stats.snapshot();
        let minute = crate::task::now_ms() / 60_000;
        let mut items = Vec::new();
        for (tenant, t) in &now {
            let before = sent.get(tenant).cloned().unwrap_or_default();
            let dead = |x: &TenantTally| x.dead_lettered.values().sum::<u64>();
            let counts = vec![
                ("completed", t.completed.saturating_sub(before.completed)),
                ("recovered", t.recovered.saturating_sub(before.recovered)),
                ("dead_lettered", dead(t).saturating_sub(dead(&before))),
                ("retried", t.retried.saturating_sub(before.retried)),
            ];
            if counts.iter().any(|(_, n)| *n > 0) {
                items.push((tenant.clone(), minute, counts));
            }
        }
        if items.is_empty() {
            return;
        }
        match self
            .broker
            .stats_add(&items, crate::broker::STATS_KEEP)
            .await
        {
            Ok(()) => *sent = now,
            Err(e) => {
                metrics::counter!(names::REDIS_ERRORS, "op" => "stats").increment(1);
                tracing::warn!(error = %e, "publishing settle counts failed; they are sent with the next ones");
            }
        }
    }
}
