//! Liveness and readiness of a member, and the loop that refreshes the Redis-derived gauges
//! (lane depth, pending, lag, scheduled and overdue retries, dead-letter depth) and checks that
//! Redis answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::broker::{Broker, TenantDepth};
use crate::config::MetricsSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::{names, OTHER_TENANT};

/// What /healthz and /readyz report. Updated by the reader, the settler and the refresh loop.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// ms since `epoch` of the last completed read (0: none yet).
    last_read: AtomicU64,
    /// ms since `epoch` of the last settle.
    last_settle: AtomicU64,
    /// Whether the member has started serving (lease held, loops running).
    serving: AtomicBool,
    /// Whether the last Redis check answered.
    redis_ok: AtomicBool,
    /// Whether work was waiting at the last look (local queue or lanes).
    work_waiting: AtomicBool,
    stall_after: Duration,
}

impl Health {
    /// A member that has not started yet.
    pub fn new(stall_after: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            last_read: AtomicU64::new(0),
            last_settle: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            redis_ok: AtomicBool::new(false),
            work_waiting: AtomicBool::new(false),
            stall_after,
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A read completed (with or without entries).
    pub fn read_done(&self) {
        self.last_read.store(self.now(), Ordering::Relaxed);
        self.redis_ok.store(true, Ordering::Relaxed);
    }

    /// Something was settled.
    pub fn settled(&self) {
        self.last_settle.store(self.now(), Ordering::Relaxed);
    }

    /// The member serves (or stopped serving).
    pub fn set_serving(&self, on: bool) {
        if on {
            // Start the stall clocks now, not at process start.
            self.read_done();
            self.settled();
        }
        self.serving.store(on, Ordering::Relaxed);
    }

    /// The latest Redis check.
    pub fn set_redis(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Whether work waits for this member.
    pub fn set_work_waiting(&self, waiting: bool) {
        self.work_waiting.store(waiting, Ordering::Relaxed);
    }

    /// `Ok(())` when ready, else why not. Not ready: not serving yet; Redis not answering; or
    /// "healthy but stuck": work waits, yet neither a read nor a settle happened for
    /// `metrics.stall_after_ms` (every slot held by attempts that do not finish, or a reader
    /// that does not come back).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Relaxed) {
            return Err("not serving: starting or stopping".into());
        }
        if !self.redis_ok.load(Ordering::Relaxed) {
            return Err("redis does not answer".into());
        }
        let now = self.now();
        let read_age = now.saturating_sub(self.last_read.load(Ordering::Relaxed));
        let settle_age = now.saturating_sub(self.last_settle.load(Ordering::Relaxed));
        let limit = self.stall_after.as_millis() as u64;
        if read_age > limit && settle_age > limit && self.work_waiting.load(Ordering::Relaxed) {
            return Err(format!(
                "stuck: work is waiting but nothing was read for {:.1} s and nothing settled for {:.1} s",
                read_age as f64 / 1000.0,
                settle_age as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

/// A depth gauge: its name, how to read it, and whether zeros are left out.
type Gauge = (&'static str, fn(&TenantDepth) -> u64, bool);

/// The refresh loop: every `metrics.refresh_interval`, one pipelined read of every known
/// tenant's depths, published as gauges (top `max_tenant_labels` tenants by value, the rest
/// summed under `__other__`), and the readiness inputs updated.
pub(crate) struct Refresher {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub health: Arc<Health>,
    pub cfg: MetricsSettings,
    /// Tenants whose dead-letter depth was last published non-zero: when their stream empties,
    /// the gauge is set to 0 once (instead of lingering at its last value until the idle
    /// timeout drops it), so "a DLQ is non-empty" alerts clear at the next refresh.
    pub dlq_published: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Refresher {
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.refresh_interval) => {}
            }
        }
    }

    async fn refresh(&self) {
        let tenants: Vec<Arc<str>> = self.shared.lanes().into_iter().map(|(_, t)| t).collect();
        let result = if tenants.is_empty() {
            self.broker.ping().await.map(|()| Vec::new())
        } else {
            self.broker.tenant_depths(&tenants).await
        };
        match result {
            Ok(depths) => {
                self.health.set_redis(true);
                let waiting =
                    self.shared.queued() > 0 || depths.iter().any(|d| d.lag > 0 || d.overdue > 0);
                self.health.set_work_waiting(waiting);
                self.publish(&depths);
            }
            Err(e) => {
                self.health.set_redis(false);
                metrics::counter!(names::REDIS_ERRORS, "op" => "depths").increment(1);
                tracing::warn!(error = %e, "cannot read tenant depths");
            }
        }
        let ready = self.health.readiness();
        metrics::gauge!(names::READY).set(if ready.is_ok() { 1.0 } else { 0.0 });
        metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        metrics::gauge!(names::IN_FLIGHT).increment(0.0);
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
                metrics::gauge!(name, "tenant" => tenant.to_string()).set(*v as f64);
                shown.push(tenant.to_string());
            }
            if values.len() > n {
                metrics::gauge!(name, "tenant" => OTHER_TENANT).set(rest as f64);
                shown.push(OTHER_TENANT.to_owned());
            }
            if nonzero_only {
                if let Ok(mut before) = self.dlq_published.lock() {
                    for gone in before.iter().filter(|t| !shown.contains(t)) {
                        metrics::gauge!(name, "tenant" => gone.clone()).set(0.0);
                    }
                    *before = shown.into_iter().collect();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_ready_only_while_serving_with_redis_and_progress() {
        let h = Health::new(Duration::from_millis(100));
        assert!(h.readiness().unwrap_err().contains("not serving"));
        h.set_serving(true);
        h.set_redis(true);
        assert!(h.readiness().is_ok());
        h.set_redis(false);
        assert!(h.readiness().unwrap_err().contains("redis"));
        h.set_redis(true);
        std::thread::sleep(Duration::from_millis(150));
        // Idle with nothing waiting: still ready.
        assert!(h.readiness().is_ok());
        h.set_work_waiting(true);
        assert!(h.readiness().unwrap_err().contains("stuck"));
        h.settled();
        assert!(h.readiness().is_ok(), "a settle is progress");
    }
}
