//! A fleet member: the loops that read tasks, run them and settle them.
//!
//! ```text
//!  lanes ──XREADGROUP──▶ reader ──▶ FairQueue ──▶ executor ──▶ handler
//!                          │ (malformed, tombstones)          │ (outcome)
//!                          └──────────────▶ settler ◀─────────┘
//!                                             │ ack batches / dead-letter scripts
//!                                             ▼
//!                                           Redis
//! ```
//!
//! * [`reader`] owns a dedicated connection, discovers tenants from the registry, drains its
//!   own pending entries on start, then reads new entries across lanes sized to free capacity.
//! * [`executor`] pops tasks round-robin across tenants and runs each attempt with a timeout,
//!   catching panics.
//! * [`settler`] acks completed entries in batches and moves failures to their destination in
//!   one atomic script each.
//! * [`lease`] holds the member id so that two processes never share one consumer name.
//! * [`admin`] executes operators' admin commands from the admin stream (replays, removals)
//!   and beats so that CLIs know a fleet is alive. The per-minute settle counts `redrive
//!   health` reads are written by the settle scripts themselves, in the step that settles.
//! * [`isolation`] keeps the member's view of every tenant's breaker and its share of each
//!   tenant's fleet-wide in-flight cap, synced with Redis once per refresh.
//! * [`health`] holds readiness and refreshes the Redis-derived gauges.
//!
//! Shutdown order: stop reading (tasks and admin commands; a running replay stops after its
//! current step and stays pending, to be resumed), stop starting tasks, let running tasks finish
//! within the grace period (the rest stay pending for reclaim), flush settlements, report the
//! last attempt outcomes and give back the member's in-flight
//! reservations, release the lease.

pub mod admin;
pub mod executor;
pub mod fair;
pub mod health;
pub mod heartbeat;
pub mod isolation;
pub mod lease;
pub mod reader;
pub mod reclaimer;
pub mod recoverer;
pub mod settler;
pub(crate) mod tasklog;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::broker::{Broker, Entry, Fields};
use crate::classify::Classifier;
use crate::config::{AdminSettings, FleetSettings, MetricsSettings, Settings};
use crate::error::Result;
use crate::handler::{FailureClass, Handler, Progress};
use crate::policy::Policies;
use crate::shutdown::Shutdown;
use crate::task::{Limits, Task};
use fair::FairQueue;
pub use health::Health;

/// Set when this member no longer owns an entry (a reclaimer took it): the attempt is dropped
/// and nothing is settled for it here.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    flag: AtomicBool,
    notify: Notify,
    /// Set once a settlement for the entry has reached the settler: from then on the entry may
    /// leave the PEL by this member's own hand, so a heartbeat that finds it gone saw no loss.
    settling: AtomicBool,
    /// Set while the entry's start mark (the fast-window XCLAIM, start.lua or begin.lua) is in
    /// flight, and kept when the mark did not let it run: the mark itself drops a deleted
    /// entry from the PEL, before its Tombstone settlement reaches the settler.
    starting: AtomicBool,
}

impl Lost {
    fn mark(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn is_settling(&self) -> bool {
        self.settling.load(Ordering::Acquire)
    }

    /// Notes that the entry's start mark is about to be sent (`true`), or that it landed and
    /// the entry runs (`false`: it is pending here again, as before the mark).
    pub(crate) fn set_starting(&self, on: bool) {
        self.starting.store(on, Ordering::Release);
    }

    fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// What a job runs.
#[derive(Debug)]
pub(crate) enum Work {
    /// A task read normally: delivered to this member, ready to run.
    Ready(Arc<Task>),
    /// An entry taken over from a dead or stuck consumer (or from this member's previous
    /// life). It is re-delivered right before it runs (its start counted); one that started
    /// before already runs alone, so that if it crashes the process again only its own count
    /// of starts grows.
    Suspect,
}

/// An entry waiting to run.
#[derive(Debug)]
pub(crate) struct Job {
    pub tenant: Arc<str>,
    pub entry_id: String,
    pub work: Work,
    /// How many times this entry started on a member so far (its delivery count minus the
    /// read; see scripts/start.lua). Only starts count towards `reclaim.max_deliveries`.
    pub deliveries: u64,
    pub lost: Arc<Lost>,
    /// For entries read fresh with XREADGROUP: when that read was sent. The delivery happened
    /// after it, so the entry cannot have been idle longer than this has been elapsed.
    pub read_at: Option<Instant>,
}

/// A failed attempt, as the executor reports it.
#[derive(Debug)]
pub(crate) struct Failed {
    pub tenant: Arc<str>,
    pub entry_id: String,
    pub task: Arc<Task>,
    /// Starts of the entry, this attempt included.
    pub deliveries: u64,
    pub class: FailureClass,
    pub reason: String,
    pub retry_after: Option<Duration>,
    pub poison: bool,
    pub progress: Progress,
    pub duration: Duration,
}

/// What the settler is asked to do with one entry.
#[derive(Debug)]
pub(crate) enum Settlement {
    /// The attempt succeeded: ack and delete.
    Done {
        tenant: Arc<str>,
        entry_id: String,
        recovered: bool,
        /// When the read that delivered the entry was sent (`None` for taken-over entries).
        read_at: Option<Instant>,
    },
    /// The attempt failed.
    Failed(Failed),
    /// The entry could not be read as a task.
    Malformed {
        tenant: Arc<str>,
        lane: String,
        entry_id: String,
        reason: String,
        fields: Fields,
    },
    /// A pending id whose entry no longer exists.
    Tombstone { tenant: Arc<str>, entry_id: String },
    /// Another member owns the entry now: release it here without settling.
    Lost { tenant: Arc<str>, entry_id: String },
    /// Its start could not be recorded (Redis failed): it did not run, stays pending for this
    /// consumer in Redis and is released here for a reclaim to take up. Nothing was lost to
    /// another member, so it is not counted as a lost settle.
    NotStarted { tenant: Arc<str>, entry_id: String },
    /// The tenant's breaker is not closed: move the entry to the retry schedule unattempted,
    /// due after `delay`.
    Defer {
        tenant: Arc<str>,
        entry_id: String,
        delay: Duration,
    },
    /// The task was past its deadline when it was about to start: dead-letter it as
    /// `expired`, unattempted (`why` says by how much).
    Expired {
        tenant: Arc<str>,
        entry_id: String,
        task: Arc<Task>,
        why: String,
    },
    /// The entry started `deliveries` times without settling.
    CrashLoop {
        tenant: Arc<str>,
        entry_id: String,
        deliveries: u64,
        /// The consumer that must still own it (`None`: any), and how idle it must be.
        owner: Option<Arc<str>>,
        min_idle: Duration,
    },
}

impl Settlement {
    /// The tenant and entry id this settlement is about.
    pub(crate) fn entry(&self) -> (&Arc<str>, &str) {
        match self {
            Settlement::Done {
                tenant, entry_id, ..
            }
            | Settlement::Malformed {
                tenant, entry_id, ..
            }
            | Settlement::Tombstone { tenant, entry_id }
            | Settlement::Lost { tenant, entry_id }
            | Settlement::NotStarted { tenant, entry_id }
            | Settlement::Defer {
                tenant, entry_id, ..
            }
            | Settlement::CrashLoop {
                tenant, entry_id, ..
            }
            | Settlement::Expired {
                tenant, entry_id, ..
            } => (tenant, entry_id),
            Settlement::Failed(f) => (&f.tenant, &f.entry_id),
        }
    }
}

/// Where an entry stands at this member, for judging a heartbeat that found it pending for
/// nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// Held and not yet handed to the settler: if it is gone, someone else settled it.
    Unsettled,
    /// Its settlement has reached the settler, which may have removed it already.
    Settling,
    /// Its start mark is in flight (or did not let it run and its settlement is on the way):
    /// the mark removes a deleted entry from the PEL by this member's own hand.
    Starting,
    /// No longer held here (settled and released).
    Released,
}

/// Per-tenant counts of what this member settled.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TenantTally {
    /// Tasks acked as done.
    pub completed: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Dead letters written, by class.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Pending ids whose entry was gone.
    pub tombstones: u64,
    /// Settles another member had already done.
    pub settle_lost: u64,
    /// Settles a later try found already done after an earlier try's reply was lost (that
    /// try most likely did them).
    pub settle_reply_lost: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Completed tasks that had failed before (or were replayed).
    pub recovered: u64,
    /// Entries claimed from stale members.
    pub reclaimed: u64,
    /// Entries held back unattempted because the tenant's breaker was not closed.
    pub deferred: u64,
}

/// What a member has settled so far, per tenant. Shared with the demo and tests.
#[derive(Debug, Default)]
pub struct FleetStats {
    tallies: Mutex<BTreeMap<String, TenantTally>>,
}

impl FleetStats {
    fn with(&self, tenant: &str, f: impl FnOnce(&mut TenantTally)) {
        if let Ok(mut t) = self.tallies.lock() {
            f(t.entry(tenant.to_owned()).or_default());
        }
    }

    /// A copy of the per-tenant tallies.
    pub fn snapshot(&self) -> BTreeMap<String, TenantTally> {
        self.tallies.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Tasks settled for good (completed or dead-lettered), over all tenants.
    pub fn settled(&self) -> u64 {
        self.snapshot()
            .values()
            .map(|t| t.completed + t.dead_lettered.values().sum::<u64>())
            .sum()
    }
}

/// Unsettled entries by (tenant, entry id), with their ownership flags.
type Inflight = HashMap<(Arc<str>, String), Arc<Lost>>;

/// State shared by the member's loops.
pub(crate) struct Shared {
    queue: Mutex<FairQueue<Job>>,
    /// Wakes the executor when the queue gets work.
    queue_ready: Notify,
    /// Wakes the reader when capacity frees up.
    capacity_freed: Notify,
    /// Entries read and not yet settled.
    unsettled: AtomicUsize,
    /// The most entries that may be unsettled before the reader pauses.
    unsettled_limit: usize,
    /// Every unsettled entry by (tenant, entry id), with its ownership flag. A re-read of the
    /// PEL skips these; the heartbeat refreshes them.
    inflight: Mutex<Inflight>,
    /// Known lanes: (lane key, tenant), written by discovery, read by every loop.
    lanes: RwLock<Vec<(String, Arc<str>)>>,
    /// Set when shutdown has run past its grace: settles stop retrying then.
    hard_deadline: OnceLock<Instant>,
    /// Breaker views, held counts and fleet-wide reservations per tenant.
    pub(crate) isolation: isolation::Isolation,
    pub stats: Arc<FleetStats>,
    pub member: Arc<str>,
    pub limits: Limits,
    /// Told about every batch of acks, when set (benchmarks measure enqueue→done with it).
    pub ack_observer: Option<Arc<dyn AckObserver>>,
    /// Liveness and readiness inputs.
    pub health: Arc<Health>,
}

/// Sees completed entries the moment their ack went through. Called on the settler's task:
/// keep it short.
pub trait AckObserver: Send + Sync {
    /// `entry_ids` of `tenant`'s lane were acked as done.
    fn acked(&self, tenant: &str, entry_ids: &[&str]);
}

impl Shared {
    fn push(&self, job: Job) {
        let weight = self.isolation.settings.weight(&job.tenant);
        if let Ok(mut q) = self.queue.lock() {
            q.push_weighted(&job.tenant.clone(), weight, job);
        }
    }

    fn pop(&self) -> Option<Job> {
        self.queue.lock().ok()?.pop()
    }

    /// Claims a slot for an entry just read; `None` when it is already in flight here.
    fn admit(&self, tenant: &Arc<str>, entry_id: &str) -> Option<Arc<Lost>> {
        let lost = Arc::new(Lost::default());
        let fresh = self
            .inflight
            .lock()
            .map(|mut s| {
                let key = (tenant.clone(), entry_id.to_owned());
                match s.entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(lost.clone());
                        true
                    }
                }
            })
            .unwrap_or(false);
        if !fresh {
            return None;
        }
        self.isolation.hold(tenant, 1, true);
        self.unsettled.fetch_add(1, Ordering::AcqRel);
        Some(lost)
    }

    /// Releases the slots of settled entries.
    fn release<'a>(&self, tenant: &Arc<str>, ids: impl IntoIterator<Item = &'a str>) {
        let mut n = 0;
        if let Ok(mut s) = self.inflight.lock() {
            for id in ids {
                if s.remove(&(tenant.clone(), id.to_owned())).is_some() {
                    n += 1;
                }
            }
        }
        self.isolation.hold(tenant, n, false);
        self.unsettled.fetch_sub(n, Ordering::AcqRel);
        self.capacity_freed.notify_one();
    }

    /// Marks entries as lost to another member.
    fn mark_lost(&self, tenant: &Arc<str>, ids: &[String]) {
        if let Ok(s) = self.inflight.lock() {
            for id in ids {
                if let Some(l) = s.get(&(tenant.clone(), id.clone())) {
                    l.mark();
                }
            }
        }
    }

    /// Notes that `s` has reached the settler (before any of its Redis calls): the entry may
    /// now leave the PEL by this member's own hand.
    pub(crate) fn settling(&self, s: &Settlement) {
        let (tenant, entry_id) = s.entry();
        if let Ok(m) = self.inflight.lock() {
            if let Some(l) = m.get(&(tenant.clone(), entry_id.to_owned())) {
                l.settling.store(true, Ordering::Release);
            }
        }
    }

    /// Where each of `ids` stands at this member (see [`Holding`]).
    fn holding(&self, tenant: &Arc<str>, ids: &[String]) -> HashMap<String, Holding> {
        let m = self.inflight.lock().ok();
        ids.iter()
            .map(|id| {
                let h = match m
                    .as_ref()
                    .and_then(|m| m.get(&(tenant.clone(), id.clone())))
                {
                    None => Holding::Released,
                    Some(l) if l.is_settling() => Holding::Settling,
                    Some(l) if l.is_starting() => Holding::Starting,
                    Some(_) => Holding::Unsettled,
                };
                (id.clone(), h)
            })
            .collect()
    }

    /// The unsettled entry ids, grouped by tenant.
    fn inflight_by_tenant(&self) -> HashMap<Arc<str>, Vec<String>> {
        let mut out: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        if let Ok(s) = self.inflight.lock() {
            for (tenant, id) in s.keys() {
                out.entry(tenant.clone()).or_default().push(id.clone());
            }
        }
        out
    }

    /// Jobs waiting in the local queue.
    fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn lanes(&self) -> Vec<(String, Arc<str>)> {
        self.lanes.read().map(|l| l.clone()).unwrap_or_default()
    }

    fn unsettled(&self) -> usize {
        self.unsettled.load(Ordering::Acquire)
    }

    fn past_hard_deadline(&self) -> bool {
        self.hard_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Queues entries taken over by a claim as suspects. Returns how many were queued.
    fn queue_suspects(&self, tenant: &Arc<str>, claimed: Vec<(String, u64)>) -> usize {
        let mut queued = 0;
        for (id, deliveries) in claimed {
            if let Some(lost) = self.admit(tenant, &id) {
                self.push(Job {
                    tenant: tenant.clone(),
                    entry_id: id,
                    work: Work::Suspect,
                    deliveries,
                    lost,
                    read_at: None,
                });
                queued += 1;
            }
        }
        if queued > 0 {
            self.queue_ready.notify_one();
        }
        queued
    }

    /// Turns entries read or claimed from `lane` into jobs, or settlements for unreadable ones.
    /// `deliveries` is how many times the entries started so far. Returns how many were queued.
    fn ingest(
        &self,
        lane: &str,
        tenant: &Arc<str>,
        entries: Vec<Entry>,
        deliveries: u64,
        read_at: Instant,
        settle: &mpsc::UnboundedSender<Settlement>,
    ) -> usize {
        // `lane` names the stream in malformed-entry dead letters.
        let mut queued = 0;
        for entry in entries {
            let Some(lost) = self.admit(tenant, &entry.id) else {
                continue;
            };
            let Some(fields) = entry.fields else {
                let _ = settle.send(Settlement::Tombstone {
                    tenant: tenant.clone(),
                    entry_id: entry.id,
                });
                continue;
            };
            match Task::from_fields(tenant, &entry.id, &fields, &self.limits) {
                Ok(task) => {
                    self.push(Job {
                        tenant: tenant.clone(),
                        entry_id: entry.id,
                        work: Work::Ready(Arc::new(task)),
                        deliveries,
                        lost,
                        read_at: Some(read_at),
                    });
                    queued += 1;
                }
                Err(m) => {
                    let _ = settle.send(Settlement::Malformed {
                        tenant: tenant.clone(),
                        lane: lane.to_owned(),
                        entry_id: entry.id,
                        reason: m.reason,
                        fields,
                    });
                }
            }
        }
        if queued > 0 {
            self.queue_ready.notify_one();
        }
        queued
    }
}

/// A fleet member, ready to run.
pub struct Fleet {
    broker: Broker,
    settings: FleetSettings,
    limits: Limits,
    dlq_max_len: u64,
    policies: Arc<Policies>,
    classifier: Arc<Classifier>,
    handler: Arc<dyn Handler>,
    stats: Arc<FleetStats>,
    ack_observer: Option<Arc<dyn AckObserver>>,
    metrics: MetricsSettings,
    health: Arc<Health>,
    log_payloads: bool,
    fast_ack_window: Duration,
    admin: AdminSettings,
    isolation: Arc<crate::isolation::IsolationSettings>,
}

impl Fleet {
    /// A member reading through `broker`'s group with `handler`, configured by `settings`.
    pub fn new(broker: Broker, settings: &Settings, handler: Arc<dyn Handler>) -> Fleet {
        Fleet {
            broker,
            settings: settings.fleet.clone(),
            limits: settings.limits,
            dlq_max_len: settings.dead_letter_max_len,
            policies: Arc::new(settings.policies.clone()),
            classifier: Arc::new(settings.classifier.clone()),
            handler,
            stats: Arc::new(FleetStats::default()),
            ack_observer: None,
            metrics: settings.metrics,
            health: Arc::new(Health::new(settings.metrics.stall_after)),
            log_payloads: settings.log_payloads,
            fast_ack_window: (settings.fleet.reclaim.min_idle / 2)
                .saturating_sub(settings.redis.response_timeout),
            admin: settings.admin.clone(),
            isolation: Arc::new(settings.isolation.clone()),
        }
    }

    /// The member's liveness and readiness, for /healthz and /readyz.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Reports every successful ack batch to `observer`.
    pub(crate) fn with_ack_observer(mut self, observer: Arc<dyn AckObserver>) -> Fleet {
        self.ack_observer = Some(observer);
        self
    }

    /// The member's live tallies.
    pub(crate) fn stats(&self) -> Arc<FleetStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` fires (or the member loses its id), then stops in order.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let member: Arc<str> = s.member_id.as_str().into();
        let lease = lease::Lease::acquire(&self.broker, &member, s.lease_ttl, &shutdown).await?;
        tracing::info!(member = %member, group = self.broker.group(), concurrency = s.concurrency, "fleet member started");

        let shared = Arc::new(Shared {
            queue: Mutex::new(FairQueue::default()),
            queue_ready: Notify::new(),
            capacity_freed: Notify::new(),
            unsettled: AtomicUsize::new(0),
            unsettled_limit: s.concurrency + s.read_batch,
            inflight: Mutex::new(HashMap::new()),
            lanes: RwLock::new(Vec::new()),
            hard_deadline: OnceLock::new(),
            // A probe's token outlives the longest attempt, so only a dead holder loses it.
            isolation: isolation::Isolation::new(
                self.isolation.clone(),
                member.clone(),
                s.task_timeout + Duration::from_secs(5),
            ),
            stats: self.stats.clone(),
            member: member.clone(),
            limits: self.limits,
            ack_observer: self.ack_observer.clone(),
            health: self.health.clone(),
        });
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        // Background loops stop on their own signal, after the executor has drained, so that
        // heartbeats keep running tasks' entries fresh through the grace period.
        let background = Shutdown::new();

        let lease_task = tokio::spawn(lease.keep(self.broker.clone(), shutdown.clone()));
        let settler = tokio::spawn(
            settler::Settler {
                broker: self.broker.clone(),
                shared: shared.clone(),
                ack_batch: s.ack_batch,
                dlq_max_len: self.dlq_max_len,
                policies: self.policies.clone(),
                log_payloads: self.log_payloads,
                fast_ack_window: self.fast_ack_window,
            }
            .run(settle_rx),
        );
        let executor = tokio::spawn(
            executor::Executor {
                broker: self.broker.clone(),
                shared: shared.clone(),
                handler: self.handler.clone(),
                classifier: self.classifier.clone(),
                settle: settle_tx.clone(),
                concurrency: s.concurrency,
                task_timeout: s.task_timeout,
                grace: s.shutdown_grace,
                fast_start_window: self.fast_ack_window,
            }
            .run(shutdown.clone()),
        );
        let recoverer = tokio::spawn(
            recoverer::Recoverer {
                broker: self.broker.clone(),
                shared: shared.clone(),
                interval: s.retry_poll_interval,
                batch: s.promote_batch,
            }
            .run(shutdown.clone()),
        );
        let reclaimer = tokio::spawn(
            reclaimer::Reclaimer::new(
                self.broker.clone(),
                shared.clone(),
                settle_tx.clone(),
                s.reclaim.clone(),
            )
            .run(shutdown.clone()),
        );
        let heartbeat = s.reclaim.heartbeat.then(|| {
            tokio::spawn(
                heartbeat::Heartbeat {
                    broker: self.broker.clone(),
                    shared: shared.clone(),
                    period: s.reclaim.min_idle / 3,
                }
                .run(background.clone()),
            )
        });
        // Runs until the settler has flushed, so the last outcomes are reported and the
        // member's reservations are given back at the very end.
        let isolation = tokio::spawn(
            isolation::IsolationLoop {
                broker: self.broker.clone(),
                shared: shared.clone(),
            }
            .run(background.clone()),
        );
        let reader = tokio::spawn(
            reader::Reader::new(self.broker.clone(), shared.clone(), settle_tx, s)
                .run(shutdown.clone()),
        );
        let refresher = tokio::spawn(
            health::Refresher {
                broker: self.broker.clone(),
                shared: shared.clone(),
                health: self.health.clone(),
                cfg: self.metrics,
                dlq_published: Default::default(),
            }
            .run(background.clone()),
        );
        self.health.set_serving(true);
        let admin = tokio::spawn(
            admin::AdminLoop {
                ctx: crate::admin::exec::AdminContext {
                    broker: self.broker.clone(),
                    settings: self.admin.clone(),
                    limits: self.limits,
                    dlq_max_len: self.dlq_max_len,
                    executor: member.to_string(),
                },
                block: s.block,
                grace: s.shutdown_grace,
            }
            .run(shutdown.clone()),
        );

        shutdown.wait().await;
        self.health.set_serving(false);
        tracing::info!(member = %member, "stopping: no new reads, finishing in-flight tasks");
        let _ = shared
            .hard_deadline
            .set(Instant::now() + s.shutdown_grace + Duration::from_secs(2));
        let reader_result = reader.await;
        let _ = admin.await;
        let _ = reclaimer.await;
        let _ = recoverer.await;
        let _ = executor.await;
        let _ = settler.await;
        background.trigger();
        if let Some(h) = heartbeat {
            let _ = h.await;
        }
        let _ = refresher.await;
        let _ = isolation.await;
        if let Ok(lease) = lease_task.await {
            lease.release(&self.broker).await;
        }
        let left = shared.unsettled();
        tracing::info!(member = %member, left_pending = left, "fleet member stopped");
        match reader_result {
            Ok(r) => r,
            Err(e) => Err(crate::error::Error::Protocol(format!(
                "reader task failed: {e}"
            ))),
        }
    }
}
