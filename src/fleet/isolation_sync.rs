//! The isolation sync loop: reports this member's attempt outcomes and slot reservations and
//! reads every tenant's breaker, once per `isolation.refresh_interval_ms`.

use std::sync::Arc;

use super::shared::Shared;
use crate::broker::Broker;
use crate::shutdown::Shutdown;

/// The isolation sync loop.
pub(crate) struct IsolationSync {
    /// Where the member's isolation state is synced.
    pub broker: Broker,
    /// The member's state, whose isolation view this loop syncs.
    pub shared: Arc<Shared>,
}

impl IsolationSync {
    /// One refresh every `isolation.refresh_interval_ms` until `shutdown` fires (after the
    /// settler has flushed), then a last report of outcomes and the release of every
    /// reservation.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            self.step().await;
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.shared.isolation.settings.refresh_interval) => {}
            }
        }
        let iso = &self.shared.isolation;
        iso.report_outcomes(&self.broker).await;
        iso.report_slots(&self.broker, true).await;
    }

    /// One refresh over every known tenant.
    pub(crate) async fn step(&mut self) {
        let tenants: Vec<Arc<str>> = self.shared.lanes().into_iter().map(|(_, t)| t).collect();
        let closed = self.shared.isolation.refresh(&self.broker, &tenants).await;
        // A closed breaker made its held tasks due (breaker_set.lua, breaker_probe_done.lua).
        for tenant in &closed {
            self.shared
                .promote_wakes
                .due(tenant, std::time::Duration::ZERO);
        }
    }
}
