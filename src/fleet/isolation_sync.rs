//! The isolation sync loop: reports this member's attempt outcomes and slot reservations and
//! reads the tenants' breakers, once per `isolation.refresh_interval_ms`: on every pass those
//! of the tenants this member works for (holding entries now or within [`ACTIVE_FOR`]), the
//! others in turn ([`Rotation`]: a bounded number per pass), so an idle member's reads do not
//! grow with the number of tenants. A breaker another member opens for a tenant this member
//! is idle on is seen within a round; the first entries it reads meanwhile run under the old
//! view, and the next pass reads that breaker (the tenant is active then).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rotation::{self, Rotation};
use super::shared::Shared;
use crate::broker::Broker;
use crate::shutdown::Shutdown;

/// The isolation sync loop.
pub(crate) struct IsolationSync {
    /// Where the member's isolation state is synced.
    pub broker: Broker,
    /// The member's state, whose isolation view this loop syncs.
    pub shared: Arc<Shared>,
    /// Whose turn it is among the idle tenants.
    pub rotation: Rotation,
    /// When this member last held entries of each tenant.
    pub active: HashMap<Arc<str>, Instant>,
}

/// How long after this member last held a tenant's entries its breaker is still read on every
/// pass.
pub(crate) const ACTIVE_FOR: Duration = Duration::from_secs(10);

impl IsolationSync {
    /// The loop over `shared`'s view, synced through `broker`.
    pub(crate) fn new(broker: Broker, shared: Arc<Shared>) -> IsolationSync {
        IsolationSync {
            broker,
            shared,
            rotation: Rotation::default(),
            active: HashMap::new(),
        }
    }
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

    /// One refresh: the breakers of the active tenants and of the idle ones whose turn it is.
    pub(crate) async fn step(&mut self) {
        let tenants: Vec<Arc<str>> = self.shared.lanes().into_iter().map(|(_, t)| t).collect();
        let now = Instant::now();
        for t in self.shared.isolation.holding() {
            self.active.insert(t, now);
        }
        self.active
            .retain(|_, at| now.duration_since(*at) < ACTIVE_FOR);
        let idle: Vec<Arc<str>> = tenants
            .iter()
            .filter(|t| !self.active.contains_key(*t))
            .cloned()
            .collect();
        let interval = self.shared.isolation.settings.refresh_interval;
        let mut read: Vec<Arc<str>> = self
            .rotation
            .pick(&idle, rotation::budget(interval))
            .into_iter()
            .cloned()
            .collect();
        read.extend(
            tenants
                .iter()
                .filter(|t| self.active.contains_key(*t))
                .cloned(),
        );
        let closed = self
            .shared
            .isolation
            .refresh(&self.broker, &read, &tenants)
            .await;
        // A closed breaker made its held tasks due (breaker_set.lua, breaker_probe_done.lua).
        for tenant in &closed {
            self.shared
                .promote_wakes
                .due(tenant, std::time::Duration::ZERO);
        }
    }
}
