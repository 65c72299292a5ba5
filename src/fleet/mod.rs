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
//!
//! Shutdown order: stop reading, stop starting tasks, let running tasks finish within the grace
//! period (the rest stay pending for reclaim), flush settlements, release the lease.

pub mod executor;
pub mod fair;
pub mod lease;
pub mod reader;
pub mod settler;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::broker::{Broker, Fields};
use crate::config::FleetSettings;
use crate::error::Result;
use crate::handler::{FailureClass, Handler, Progress};
use crate::shutdown::Shutdown;
use crate::task::{Limits, Task};
use fair::FairQueue;

/// A task read from a lane, waiting to run.
#[derive(Debug)]
pub(crate) struct Job {
    pub tenant: Arc<str>,
    pub entry_id: String,
    pub task: Arc<Task>,
}

/// What the settler is asked to do with one entry.
#[derive(Debug)]
pub(crate) enum Settlement {
    /// The attempt succeeded: ack and delete.
    Done { tenant: Arc<str>, entry_id: String },
    /// The attempt failed.
    Failed {
        job: Job,
        class: FailureClass,
        reason: String,
        retry_after: Option<Duration>,
        poison: bool,
        progress: Progress,
        duration: Duration,
    },
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
    /// (tenant, entry id) of every unsettled entry, so a re-read of the PEL skips them.
    inflight: Mutex<HashSet<(Arc<str>, String)>>,
    /// Set when shutdown has run past its grace: settles stop retrying then.
    hard_deadline: OnceLock<Instant>,
    pub stats: Arc<FleetStats>,
    pub member: Arc<str>,
}

impl Shared {
    fn push(&self, job: Job) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(&job.tenant.clone(), job);
        }
    }

    fn pop(&self) -> Option<Job> {
        self.queue.lock().ok()?.pop()
    }

    /// Claims a slot for an entry just read; false when it is already in flight here.
    fn admit(&self, tenant: &Arc<str>, entry_id: &str) -> bool {
        let fresh = self
            .inflight
            .lock()
            .map(|mut s| s.insert((tenant.clone(), entry_id.to_owned())))
            .unwrap_or(false);
        if fresh {
            self.unsettled.fetch_add(1, Ordering::AcqRel);
        }
        fresh
    }

    /// Releases the slots of settled entries.
    fn release<'a>(&self, tenant: &Arc<str>, ids: impl IntoIterator<Item = &'a str>) {
        let mut n = 0;
        if let Ok(mut s) = self.inflight.lock() {
            for id in ids {
                if s.remove(&(tenant.clone(), id.to_owned())) {
                    n += 1;
                }
            }
        }
        self.unsettled.fetch_sub(n, Ordering::AcqRel);
        self.capacity_freed.notify_one();
    }

    fn unsettled(&self) -> usize {
        self.unsettled.load(Ordering::Acquire)
    }

    fn past_hard_deadline(&self) -> bool {
        self.hard_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }
}

/// A fleet member, ready to run.
pub struct Fleet {
    broker: Broker,
    settings: FleetSettings,
    limits: Limits,
    dlq_max_len: u64,
    handler: Arc<dyn Handler>,
    stats: Arc<FleetStats>,
}

impl Fleet {
    /// A member reading through `broker`'s group with `handler`.
    pub fn new(
        broker: Broker,
        settings: FleetSettings,
        limits: Limits,
        dlq_max_len: u64,
        handler: Arc<dyn Handler>,
    ) -> Fleet {
        Fleet {
            broker,
            settings,
            limits,
            dlq_max_len,
            handler,
            stats: Arc::new(FleetStats::default()),
        }
    }

    /// The member's live tallies.
    pub fn stats(&self) -> Arc<FleetStats> {
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
            inflight: Mutex::new(HashSet::new()),
            hard_deadline: OnceLock::new(),
            stats: self.stats.clone(),
            member: member.clone(),
        });
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();

        let lease_task = tokio::spawn(lease.keep(self.broker.clone(), shutdown.clone()));
        let settler = tokio::spawn(
            settler::Settler {
                broker: self.broker.clone(),
                shared: shared.clone(),
                ack_batch: s.ack_batch,
                dlq_max_len: self.dlq_max_len,
            }
            .run(settle_rx),
        );
        let executor = tokio::spawn(
            executor::Executor {
                shared: shared.clone(),
                handler: self.handler.clone(),
                settle: settle_tx.clone(),
                concurrency: s.concurrency,
                task_timeout: s.task_timeout,
                grace: s.shutdown_grace,
            }
            .run(shutdown.clone()),
        );
        let reader = tokio::spawn(
            reader::Reader::new(
                self.broker.clone(),
                shared.clone(),
                settle_tx,
                s,
                self.limits,
            )
            .run(shutdown.clone()),
        );

        shutdown.wait().await;
        tracing::info!(member = %member, "stopping: no new reads, finishing in-flight tasks");
        let _ = shared
            .hard_deadline
            .set(Instant::now() + s.shutdown_grace + Duration::from_secs(2));
        let reader_result = reader.await;
        let _ = executor.await;
        let _ = settler.await;
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
