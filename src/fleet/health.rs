//! Liveness and readiness of a member, and the loop that refreshes the Redis-derived gauges
//! (lane depth, pending, lag, scheduled and overdue retries, dead-letter depth, the age of the
//! oldest dead letter nobody owns) and checks that
//! Redis answers and accepts writes (an out-of-memory episode: Redis over `maxmemory`).

use std::sync::Arc;
use std::time::Instant;

use super::rotation::{budget, Rotation};
use super::shared::Shared;
use crate::broker::{Broker, TenantDepth, Unowned};
use crate::config::MetricsSettings;
use crate::shutdown::Shutdown;
pub use crate::telemetry::Health;
use crate::telemetry::{events, names, OTHER_TENANT};

/// A depth gauge: its name, how to read it, and whether zeros are left out.
type Gauge = (&'static str, fn(&TenantDepth) -> u64, bool);

/// The refresh loop: every `metrics.refresh_interval`, one pipelined read of the depths of the
/// tenants whose turn it is (all of them while they fit the budget of
/// [`LOOKS_PER_SECOND`](super::rotation::LOOKS_PER_SECOND) tenants a second; with more, in turn,
/// each keeping its last figures meanwhile), published as gauges (top `max_tenant_labels`
/// tenants by value, the rest summed under `__other__`), and the readiness inputs updated.
pub(crate) struct DepthRefresher {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub health: Arc<Health>,
    pub cfg: MetricsSettings,
    /// Tenants whose dead-letter depth was last published non-zero: when their stream empties,
    /// the gauge is set to 0 once (instead of lingering at its last value until the idle
    /// timeout drops it), so "a DLQ is non-empty" alerts clear at the next refresh.
    pub dlq_published: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Per tenant, the oldest unowned dead letter's time as last found (`None`: every dead
    /// letter is owned), kept while a step's budget runs out before it knows
    /// (scripts/dlq_unowned.lua).
    pub unowned: std::collections::HashMap<Arc<str>, Option<u64>>,
    /// Each tenant's depths as last read.
    pub known: std::collections::HashMap<Arc<str>, TenantDepth>,
    /// Whose depths are read next.
    pub turn: Rotation,
}

/// Dead letters one refresh reads per tenant at most, looking for the oldest unowned one
/// (past the owned ones since the last refresh: usually one).
const UNOWNED_BUDGET: usize = 1_000;

impl DepthRefresher {
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            self.step().await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.refresh_interval) => {}
            }
        }
    }

    pub(crate) async fn step(&mut self) {
        let all: Vec<Arc<str>> = self.shared.lanes().into_iter().map(|(_, t)| t).collect();
        let tenants: Vec<Arc<str>> = self
            .turn
            .pick(&all, budget(self.cfg.refresh_interval))
            .into_iter()
            .cloned()
            .collect();
        let result = if tenants.is_empty() {
            self.broker.ping().await.map(|()| Vec::new())
        } else {
            self.broker.tenant_depths(&tenants).await
        };
        match result {
            Ok(depths) => {
                self.health.set_redis(true);
                let live: std::collections::HashSet<&Arc<str>> = all.iter().collect();
                self.known.retain(|t, _| live.contains(t));
                for d in depths {
                    self.known.insert(d.tenant.clone(), d);
                }
                let depths: Vec<TenantDepth> = self.known.values().cloned().collect();
                let waiting =
                    self.shared.queued() > 0 || depths.iter().any(|d| d.lag > 0 || d.overdue > 0);
                self.health.set_work_waiting(waiting);
                self.publish(&depths);
                self.unowned_step(&all, &tenants).await;
            }
            Err(e) => {
                self.health.set_redis(false);
                events::health::depths_failed(&e);
            }
        }
        // Whether Redis accepts writes that grow memory (a probe that writes nothing): starts
        // or ends an out-of-memory episode even when no settle has been refused.
        let sent = Instant::now();
        let check = self.broker.write_check().await;
        for (_, e) in &check.unreachable {
            events::health::oom_probe_failed(e);
        }
        // On a cluster a master the probe did not reach is named (its tenants are not
        // served); on a single Redis the depth read above already says whether it answers.
        let unreachable = if self.broker.is_cluster() {
            check.unreachable.iter().map(|(at, _)| at.clone()).collect()
        } else {
            Vec::new()
        };
        self.health.set_unreachable(unreachable);
        if !check.refusing.is_empty() {
            self.health.redis_refused_on(check.refusing, sent);
        } else if check.unreachable.is_empty() {
            self.health.redis_accepts(sent);
        }
        let redis_oom = self.health.redis_oom();
        let ready = self.health.readiness();
        events::health::readiness(redis_oom, ready.is_ok());
        for server in self.broker.servers() {
            events::redis_server::server_info(server.flavor.as_str(), &server.version_label());
        }
    }

    /// One step towards the oldest unowned dead letter of each of `tenants` (this turn's of
    /// `all`), published with the others' last findings as ages.
    async fn unowned_step(&mut self, all: &[Arc<str>], tenants: &[Arc<str>]) {
        if tenants.is_empty() {
            return;
        }
        let (steps, now) = match tokio::try_join!(
            self.broker.dlq_unowned(tenants, UNOWNED_BUDGET),
            self.broker.server_time_ms()
        ) {
            Ok(r) => r,
            Err(e) => {
                events::health::unowned_failed(&e);
                return;
            }
        };
        let live: std::collections::HashSet<&Arc<str>> = all.iter().collect();
        self.unowned.retain(|t, _| live.contains(t));
        for (t, step) in tenants.iter().zip(steps) {
            match step {
                Unowned::Found(id) => {
                    self.unowned
                        .insert(t.clone(), Some(crate::admin::select::id_ms(&id)));
                }
                Unowned::None => {
                    self.unowned.insert(t.clone(), None);
                }
                Unowned::More => {}
            }
        }
        let mut ages: Vec<(&str, u64)> = self
            .unowned
            .iter()
            .map(|(t, at)| (&**t, at.map_or(0, |ms| now.saturating_sub(ms) / 1000)))
            .collect();
        ages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let n = self.cfg.max_tenant_labels;
        for (tenant, age) in ages.iter().take(n) {
            events::health::unowned_age(tenant.to_string(), *age);
        }
        if let Some((_, oldest)) = ages.get(n) {
            // The tenants past the label cap: the oldest of theirs.
            events::health::unowned_age(OTHER_TENANT.to_owned(), *oldest);
        }
    }

    fn publish(&self, depths: &[TenantDepth]) {
        let n = self.cfg.max_tenant_labels;
        let pick: [Gauge; 6] = [
            (names::LANE_DEPTH, |d| d.lane, false),
            (names::PENDING, |d| d.pending, false),
            (names::LAG, |d| d.lag, false),
            (names::RETRIES_SCHEDULED, |d| d.retries, false),
            (names::RETRIES_OVERDUE, |d| d.overdue, false),
            (names::DLQ_DEPTH, |d| d.dlq, true),
        ];
        for (name, value, nonzero_only) in pick {
            let mut values: Vec<(&str, u64)> = depths
                .iter()
                .map(|d| (&*d.tenant, value(d)))
                .filter(|(_, v)| !nonzero_only || *v > 0)
                .collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let rest: u64 = values.iter().skip(n).map(|(_, v)| v).sum();
            let mut shown: Vec<String> = Vec::new();
            for (tenant, v) in values.iter().take(n) {
                events::health::tenant_depth(name, tenant.to_string(), *v);
                shown.push(tenant.to_string());
            }
            if values.len() > n {
                events::health::tenant_depth(name, OTHER_TENANT.to_owned(), rest);
                shown.push(OTHER_TENANT.to_owned());
            }
            if nonzero_only {
                if let Ok(mut before) = self.dlq_published.lock() {
                    for gone in before.iter().filter(|t| !shown.contains(t)) {
                        events::health::tenant_depth(name, gone.clone(), 0);
                    }
                    *before = shown.into_iter().collect();
                }
            }
        }
    }
}
