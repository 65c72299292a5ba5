//! The heartbeat: every third of `reclaim.min_idle_ms`, refreshes the idle time of every entry
//! this member holds (owner-checked), so a slow but live task is never reclaimed; entries it
//! finds lost to another member are marked so their attempts stop and never settle here.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::broker::Broker;
use crate::shutdown::Shutdown;
use crate::telemetry::{names, tenant_label};

/// Ids per heartbeat script call.
const CHUNK: usize = 500;

/// The heartbeat loop's settings and handles.
pub(crate) struct Heartbeat {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub period: Duration,
}

impl Heartbeat {
    /// Beats every `period` until `stop` fires.
    pub async fn run(self, stop: Shutdown) {
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            self.beat().await;
        }
    }

    /// One heartbeat over every held entry.
    pub async fn beat(&self) {
        for (tenant, ids) in self.shared.inflight_by_tenant() {
            for chunk in ids.chunks(CHUNK) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                match self
                    .broker
                    .heartbeat(&tenant, &self.shared.member, &refs)
                    .await
                {
                    Ok(lost) if !lost.is_empty() => {
                        tracing::warn!(tenant = %tenant, lost = lost.len(), "entries were taken over by another member; dropping them here");
                        metrics::counter!(names::OWNERSHIP_LOST, "tenant" => tenant_label(&tenant))
                            .increment(lost.len() as u64);
                        self.shared.mark_lost(&tenant, &lost);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics::counter!(names::REDIS_ERRORS, "op" => "heartbeat").increment(1);
                        tracing::warn!(tenant = %tenant, error = %e, "heartbeat failed");
                    }
                }
            }
        }
    }
}
