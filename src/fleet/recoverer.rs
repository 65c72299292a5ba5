//! The recovery loop: moves due retries back into their lanes, in bounded atomic batches by the
//! server's clock, and every so often sweeps each tenant's task record index (one bounded step
//! per tenant, see scripts/records_sweep.lua) and looks after each tenant's dead-letter counts
//! (a check, or a few steps of a rebuild, see scripts/dlq_counts.lua). Any number of members
//! may run it at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rotation::{budget, Rotation, LOOKS_PER_SECOND};
use super::shared::Shared;
use crate::broker::{Broker, CountsStep, SweepStep};
use crate::config::TasksSettings;
use crate::records::TaskState;
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// The recovery loop's settings and handles.
pub(crate) struct Recoverer {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub interval: Duration,
    /// The periodic look at a tenant when nothing there is known to be due.
    pub idle_look: Duration,
    /// When each tenant's schedule is looked at next.
    pub next_look: HashMap<Arc<str>, Instant>,
    pub batch: usize,
    /// The record index sweep; `None` when records are off.
    pub sweep: Option<RecordSweep>,
    /// The upkeep of the dead-letter counts.
    pub counts: CountsUpkeep,
}

/// The upkeep of each tenant's dead-letter counts and when each tenant was last looked at.
pub(crate) struct CountsUpkeep {
    /// How often each tenant's counts are checked.
    pub every: Duration,
    /// Entries one rebuild step counts.
    pub page: usize,
    /// Rebuild steps per tenant per visit.
    pub steps: usize,
    /// When each tenant was last looked at.
    pub last: HashMap<String, Instant>,
    /// Whose turn it is: at most [`LOOKS_PER_SECOND`] tenants are looked at per second.
    pub turn: Rotation,
}

impl Default for CountsUpkeep {
    fn default() -> CountsUpkeep {
        CountsUpkeep::new()
    }
}

impl CountsUpkeep {
    /// How often a member checks each tenant's counts by default.
    pub const EVERY: Duration = Duration::from_secs(5);
    /// Entries one rebuild step counts by default (a few ms of Redis per step).
    pub const PAGE: usize = 1_000;
    /// Rebuild steps per tenant per visit by default: 100,000 dead letters in 50 s.
    pub const STEPS: usize = 10;

    /// The upkeep with the default pace.
    pub fn new() -> CountsUpkeep {
        CountsUpkeep {
            every: Self::EVERY,
            page: Self::PAGE,
            steps: Self::STEPS,
            last: HashMap::new(),
            turn: Rotation::default(),
        }
    }
}

/// The index sweep's settings and when each tenant was last swept by this member.
pub(crate) struct RecordSweep {
    /// `[tasks]`: the retention of trimmed dead letters' records.
    pub tasks: TasksSettings,
    /// How often each tenant gets one step.
    pub every: Duration,
    /// Index entries one step looks at.
    pub batch: usize,
    /// When each tenant was last swept.
    pub last: HashMap<String, Instant>,
    /// Whose turn it is: at most [`LOOKS_PER_SECOND`] tenants are swept per second.
    pub turn: Rotation,
}

impl RecordSweep {
    /// The fleet-wide pace of one tenant's steps: nine tenths of `every`, so that a member's
    /// own next step (due `every` after its last) always finds the mark gone, and the steps of
    /// other members in between do nothing.
    pub fn pace(&self) -> Duration {
        self.every - self.every / 10
    }

    /// How often a member sweeps each tenant's index by default.
    pub const EVERY: Duration = Duration::from_secs(5);
    /// Index entries one step looks at by default.
    pub const BATCH: usize = 500;

    /// The sweep with the default pace.
    pub fn new(tasks: TasksSettings) -> RecordSweep {
        RecordSweep {
            tasks,
            every: Self::EVERY,
            batch: Self::BATCH,
            last: HashMap::new(),
            turn: Rotation::default(),
        }
    }
}

impl Recoverer {
    /// One pass every `retry.poll_interval_ms` until shutdown.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            self.step().await;
            self.sweep_due().await;
            self.counts_due().await;
        }
    }

    /// The upkeep of the dead-letter counts of each tenant not looked at for `every`: a check,
    /// and while a rebuild runs up to `steps` steps of it. The tenants come in turn, at most
    /// [`LOOKS_PER_SECOND`] a second (with many tenants each is looked at less often than
    /// `every`). Returns how many steps rebuilt.
    pub(crate) async fn counts_due(&mut self) -> usize {
        let now = Instant::now();
        let mut rebuilt = 0;
        let lanes = self.shared.lanes();
        let turn: Vec<Arc<str>> = self
            .counts
            .turn
            .pick(&lanes, budget(self.interval))
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        let due: Vec<Arc<str>> = turn
            .into_iter()
            .filter(|t| {
                let c = &mut self.counts;
                if c.last
                    .get(&**t)
                    .is_some_and(|at| now.duration_since(*at) < c.every)
                {
                    return false;
                }
                c.last.insert(t.to_string(), now);
                true
            })
            .collect();
        // The first step of every due tenant in one pipeline (one round trip per master on a
        // cluster); a rebuild then takes its further steps one by one.
        let first = match self.broker.dlq_counts_steps(&due, self.counts.page).await {
            Ok(steps) => steps,
            Err(e) => {
                for t in &due {
                    events::task_records::dlq_counts_failed(t, &e);
                }
                return 0;
            }
        };
        for (tenant, step) in due.iter().zip(first) {
            let c = &self.counts;
            let mut step = step;
            for taken in 1..=c.steps.max(1) {
                match step {
                    Ok(CountsStep::Ok) => break,
                    Ok(CountsStep::Started) => {
                        events::task_records::dlq_counts_rebuilding(tenant);
                        rebuilt += 1;
                    }
                    Ok(CountsStep::Rebuilding) => rebuilt += 1,
                    Ok(CountsStep::Complete) => {
                        events::task_records::dlq_counts_rebuilt(tenant);
                        rebuilt += 1;
                        break;
                    }
                    Err(e) => {
                        events::task_records::dlq_counts_failed(tenant, &e);
                        break;
                    }
                }
                if taken == c.steps.max(1) {
                    break;
                }
                step = self.broker.dlq_counts_step(tenant, c.page).await;
            }
        }
        rebuilt
    }

    /// One sweep step for each tenant not swept for `every`, in turn, at most
    /// [`LOOKS_PER_SECOND`] tenants a second. Returns the steps' sums.
    pub(crate) async fn sweep_due(&mut self) -> SweepStep {
        let mut sum = SweepStep::default();
        let Some(sweep) = self.sweep.as_mut() else {
            return sum;
        };
        let now = Instant::now();
        let lanes = self.shared.lanes();
        let turn: Vec<Arc<str>> = sweep
            .turn
            .pick(&lanes, budget(self.interval))
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        for tenant in turn {
            if sweep
                .last
                .get(&*tenant)
                .is_some_and(|t| now.duration_since(*t) < sweep.every)
            {
                continue;
            }
            sweep.last.insert(tenant.to_string(), now);
            let (rules, retention) = sweep.tasks.retention_rules(&tenant);
            match self
                .broker
                .records_sweep(&tenant, sweep.batch, retention, &rules, sweep.pace())
                .await
            {
                Ok(step) => {
                    events::task_records::swept(&tenant, step.removed, step.retained);
                    sum.looked += step.looked;
                    sum.removed += step.removed;
                    sum.retained += step.retained;
                    sum.pass_done |= step.pass_done;
                }
                Err(e) => events::task_records::sweep_failed(&tenant, &e),
            }
        }
        sum
    }

    /// Promotes the due retries and held tasks of every tenant whose look is due: one this
    /// member scheduled something in that is now due ([`PromoteWakes`](super::shared::PromoteWakes)),
    /// one whose earliest item (as the last look found it) is due, and each tenant at its
    /// periodic look (`idle_look`, spread over time and slower past [`LOOKS_PER_SECOND`]).
    /// Nothing depends on the hints for its safety: an item stays in its set until a look
    /// moves it, and the periodic look reaches every tenant.
    pub(crate) async fn step(&mut self) -> u64 {
        let now = Instant::now();
        let lanes = self.shared.lanes();
        let period = self.idle_look.max(Duration::from_secs_f64(
            lanes.len() as f64 / LOOKS_PER_SECOND,
        ));
        for (tenant, at) in self.shared.promote_wakes.take() {
            self.next_look
                .entry(tenant)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
        if self.next_look.len() > lanes.len() {
            let known: std::collections::HashSet<&str> = lanes.iter().map(|(_, t)| &**t).collect();
            self.next_look.retain(|t, _| known.contains(&**t));
        }
        // The tenants whose look is due, each with its next periodic look (spread around the
        // period so tenants do not come due together); their first page goes out in one
        // pipeline (one round trip per master), and a tenant whose page came back full is
        // promoted on, page by page, alone.
        let due: Vec<Arc<str>> = lanes
            .into_iter()
            .map(|(_, tenant)| tenant)
            .filter(|t| self.next_look.get(t).is_none_or(|at| *at <= now))
            .collect();
        if due.is_empty() {
            return 0;
        }
        let records = self.shared.tasks.enabled;
        let firsts = match self
            .broker
            .promote_due_many(&due, self.batch, records)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                for tenant in &due {
                    events::claims::promote_failed(tenant, &e);
                    self.next_look.insert(tenant.clone(), now + self.interval);
                }
                return 0;
            }
        };
        let mut promoted = 0;
        for (tenant, first) in due.into_iter().zip(firsts) {
            let mut next = now + period.mul_f64(0.5 + fastrand::f64());
            let mut page = first;
            loop {
                match page {
                    Ok(p) => {
                        let n = p.moved;
                        promoted += n;
                        if p.recorded > 0 {
                            events::records::written(
                                &tenant,
                                TaskState::Queued.as_str(),
                                p.recorded,
                            );
                        }
                        if n > 0 {
                            events::claims::retries_promoted(&tenant, n);
                        }
                        if (n as usize) < self.batch {
                            if let Some(wait) = p.wait {
                                next = next.min(now + wait);
                            }
                            break;
                        }
                    }
                    Err(e) => {
                        events::claims::promote_failed(&tenant, &e);
                        next = now + self.interval;
                        break;
                    }
                }
                page = self.broker.promote_due(&tenant, self.batch, records).await;
            }
            self.next_look.insert(tenant, next);
        }
        promoted
    }
}
