//! The member's shared state: the local queue, what is in flight and the known lanes, shared by
//! every loop of one member.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use super::fair::FairQueue;
use super::isolation;
use super::settlement::{Aside, Settlement};
use super::stats::{AckObserver, FleetStats};
use crate::broker::Entry;
use crate::config::{FleetSettings, TasksSettings};
use crate::task::{Limits, Task};
use crate::telemetry::Health;

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
    pub(crate) fn mark(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) fn is_settling(&self) -> bool {
        self.settling.load(Ordering::Acquire)
    }

    /// Notes that the entry's start mark is about to be sent (`true`), or that it landed and
    /// the entry runs (`false`: it is pending here again, as before the mark).
    pub(crate) fn set_starting(&self, on: bool) {
        self.starting.store(on, Ordering::Release);
    }

    pub(crate) fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
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
    /// life), named when known (its record then names the member of the run that died). It
    /// is re-delivered right before it runs (its start counted); one that started before
    /// already runs alone, so that if it crashes the process again only its own count of
    /// starts grows.
    Suspect(Option<Arc<str>>),
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

/// Unsettled entries by (tenant, entry id), with their ownership flags.
type Inflight = HashMap<(Arc<str>, String), Arc<Lost>>;

/// State shared by the member's loops.
pub(crate) struct Shared {
    pub(crate) queue: Mutex<FairQueue<Job>>,
    /// Wakes the executor when the queue gets work.
    pub(crate) queue_ready: Notify,
    /// Wakes the reader when capacity frees up.
    pub(crate) capacity_freed: Notify,
    /// Entries read and not yet settled.
    pub(crate) unsettled: AtomicUsize,
    /// The most entries that may be unsettled before the reader pauses.
    pub(crate) unsettled_limit: usize,
    /// Every unsettled entry by (tenant, entry id), with its ownership flag. A re-read of the
    /// PEL skips these; the heartbeat refreshes them.
    pub(crate) inflight: Mutex<Inflight>,
    /// Known lanes: (lane key, tenant), written by discovery, read by every loop.
    pub(crate) lanes: RwLock<Vec<(String, Arc<str>)>>,
    /// Set when shutdown has run past its grace: settles stop retrying then.
    pub(crate) hard_deadline: OnceLock<Instant>,
    /// Breaker views, held counts and fleet-wide reservations per tenant.
    pub(crate) isolation: isolation::Isolation,
    pub(crate) stats: Arc<FleetStats>,
    pub(crate) member: Arc<str>,
    pub(crate) limits: Limits,
    /// Told about every batch of acks, when set (benchmarks measure enqueue→done with it).
    pub(crate) ack_observer: Option<Arc<dyn AckObserver>>,
    /// Liveness and readiness inputs.
    pub(crate) health: Arc<Health>,
    /// `[tasks]`: whether moves write task records, their retention, outputs, dedup.
    pub(crate) tasks: Arc<TasksSettings>,
    /// Between the tenant watch (which hears of new tenants) and the reader (which serves them).
    pub(crate) discovery: Discovery,
    /// Between what schedules retries or frees held tasks here (the settler, the breakers)
    /// and the recovery loop, which promotes a tenant when something there may be due.
    pub(crate) promote_wakes: PromoteWakes,
}

/// When the recovery loop should look at a tenant's retry schedule sooner than its periodic
/// look: this member just scheduled a retry or a deferral there (due after its delay), or saw
/// the tenant's breaker close (held tasks due at once). Only a hint: the periodic look finds
/// everything in the end, whoever scheduled it.
#[derive(Debug, Default)]
pub(crate) struct PromoteWakes {
    at: Mutex<HashMap<Arc<str>, Instant>>,
}

impl PromoteWakes {
    /// Something in `tenant`'s schedule is due `after` from now.
    pub(crate) fn due(&self, tenant: &Arc<str>, after: Duration) {
        let at = Instant::now() + after;
        if let Ok(mut m) = self.at.lock() {
            m.entry(tenant.clone())
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }

    /// The wakes so far, emptied.
    pub(crate) fn take(&self) -> HashMap<Arc<str>, Instant> {
        self.at
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// The hand-off from the tenant watch to the reader: a wanted flag, the announced tenant
/// names, a wake-up for a reader waiting without lanes, and the id of the reader's connection,
/// so a blocked read can be ended (`CLIENT UNBLOCK`) to take the new lane in.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    wanted: AtomicBool,
    /// What the reader is asked to look at (read with `wanted`).
    wish: Mutex<Wish>,
    pub(crate) wake: Notify,
    /// The reader connection's `CLIENT ID`; 0 while it has none.
    reader_client: AtomicU64,
}

/// What the reader is asked to look at before its next read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Wish {
    /// The whole registry (the watch subscribed again and may have missed announcements).
    pub full: bool,
    /// Tenants producers announced: only these need a look (the registry stays the truth).
    pub named: Vec<String>,
}

/// How many announced names a wish keeps; past that the reader reads the whole registry.
const WISH_NAMES: usize = 1_000;

impl Discovery {
    /// The watch may have missed announcements: the reader looks at the whole registry before
    /// its next read.
    pub(crate) fn want(&self) {
        if let Ok(mut w) = self.wish.lock() {
            w.full = true;
        }
        self.wanted.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// A producer announced `names` (comma-separated, as published): the reader looks at these
    /// before its next read.
    pub(crate) fn want_named(&self, names: &str) {
        if let Ok(mut w) = self.wish.lock() {
            for name in names.split(',').filter(|n| !n.is_empty()) {
                if w.named.len() >= WISH_NAMES {
                    w.full = true;
                    break;
                }
                w.named.push(name.to_owned());
            }
        }
        self.wanted.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The wish, if a look is wanted, clearing it (the reader calls this before each read).
    pub(crate) fn take(&self) -> Option<Wish> {
        if !self.wanted.swap(false, Ordering::AcqRel) {
            return None;
        }
        let wish = self
            .wish
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or(Wish {
                full: true,
                named: Vec::new(),
            });
        Some(wish)
    }

    /// Whether a wish is still waiting for the reader.
    pub(crate) fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// The reader's connection is now `id` (0: none).
    pub(crate) fn set_reader_client(&self, id: u64) {
        self.reader_client.store(id, Ordering::Release);
    }

    /// The reader connection's id, if it has one.
    pub(crate) fn reader_client(&self) -> Option<u64> {
        match self.reader_client.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }
}

/// What a member's shared state is built from, besides its settings.
pub(crate) struct SharedParts {
    /// The member id this process leased.
    pub member: Arc<str>,
    /// The tenant isolation settings (breakers, caps, weights).
    pub isolation: Arc<crate::isolation::IsolationSettings>,
    /// The member's tallies, shared with whoever built the fleet.
    pub stats: Arc<FleetStats>,
    /// The task limits, for reading entries as tasks.
    pub limits: Limits,
    /// Told about every batch of acks, when set.
    pub ack_observer: Option<Arc<dyn AckObserver>>,
    /// The member's liveness and readiness.
    pub health: Arc<Health>,
    /// `[tasks]`: task records.
    pub tasks: Arc<TasksSettings>,
}

impl Shared {
    /// A member's empty shared state: nothing read, nothing in flight, no lanes known yet.
    pub(crate) fn new(s: &FleetSettings, parts: SharedParts) -> Shared {
        Shared {
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
                parts.isolation,
                parts.member.clone(),
                s.task_timeout + Duration::from_secs(5),
            ),
            stats: parts.stats,
            member: parts.member,
            limits: parts.limits,
            ack_observer: parts.ack_observer,
            health: parts.health,
            tasks: parts.tasks,
            discovery: Discovery::default(),
            promote_wakes: PromoteWakes::default(),
        }
    }

    pub(crate) fn push(&self, job: Job) {
        let weight = self.isolation.settings.weight(&job.tenant);
        if let Ok(mut q) = self.queue.lock() {
            q.push_weighted(&job.tenant.clone(), weight, job);
        }
    }

    pub(crate) fn pop(&self) -> Option<Job> {
        self.queue.lock().ok()?.pop()
    }

    /// Claims a slot for an entry just read; `None` when it is already in flight here.
    pub(crate) fn admit(&self, tenant: &Arc<str>, entry_id: &str) -> Option<Arc<Lost>> {
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
    pub(crate) fn release<'a>(&self, tenant: &Arc<str>, ids: impl IntoIterator<Item = &'a str>) {
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
    pub(crate) fn mark_lost(&self, tenant: &Arc<str>, ids: &[String]) {
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
    pub(crate) fn holding(&self, tenant: &Arc<str>, ids: &[String]) -> HashMap<String, Holding> {
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
    pub(crate) fn inflight_by_tenant(&self) -> HashMap<Arc<str>, Vec<String>> {
        let mut out: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        if let Ok(s) = self.inflight.lock() {
            for (tenant, id) in s.keys() {
                out.entry(tenant.clone()).or_default().push(id.clone());
            }
        }
        out
    }

    /// Jobs waiting in the local queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub(crate) fn lanes(&self) -> Vec<(String, Arc<str>)> {
        self.lanes.read().map(|l| l.clone()).unwrap_or_default()
    }

    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled.load(Ordering::Acquire)
    }

    pub(crate) fn past_hard_deadline(&self) -> bool {
        self.hard_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Queues entries taken over by a claim as suspects, each with whom it was pending for
    /// (`owners`). Returns how many were queued.
    pub(crate) fn queue_suspects(
        &self,
        tenant: &Arc<str>,
        claimed: Vec<(String, u64)>,
        owners: &std::collections::HashMap<String, String>,
    ) -> usize {
        let mut queued = 0;
        for (id, deliveries) in claimed {
            if let Some(lost) = self.admit(tenant, &id) {
                let owner = owners.get(&id).map(|o| Arc::from(o.as_str()));
                self.push(Job {
                    tenant: tenant.clone(),
                    entry_id: id,
                    work: Work::Suspect(owner),
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
    pub(crate) fn ingest(
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
                let _ = settle.send(Settlement::Aside(Aside::Tombstone {
                    tenant: tenant.clone(),
                    entry_id: entry.id,
                }));
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
                    let _ = settle.send(Settlement::Aside(Aside::Malformed {
                        tenant: tenant.clone(),
                        lane: lane.to_owned(),
                        entry_id: entry.id,
                        reason: m.reason,
                        fields,
                    }));
                }
            }
        }
        if queued > 0 {
            self.queue_ready.notify_one();
        }
        queued
    }
}
