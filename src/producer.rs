//! The producer API: validate tasks, then append them to their lanes. A batch is validated
//! whole before anything is written, so a bad task never leaves half a batch behind.
//! [`Producer::enqueue_all`] (what `redrive enqueue` uses) then writes everything in one
//! MULTI/EXEC: all or nothing, also when Redis refuses writes (out of memory).
//! [`Producer::enqueue_batch`] pipelines chunks for throughput; a Redis failure part-way
//! leaves the chunks before it written, and its error says how many tasks that is.
//!
//! With task records on (`[tasks] enabled`, the default) every task goes in through
//! `enqueue.lua`: a task_id that already has a live record (queued, running, scheduled, dead,
//! or done within its retention) is not appended again but reported as a duplicate
//! ([`Enqueued::duplicate`]), atomically: of any number of producers racing with the same
//! task_id exactly one appends. A duplicate is not an error. A tenant with `dedup = false`
//! (`[[tasks.overrides]]`) reuses ids on purpose: every enqueue appends and starts a new record.
//! With records off every task is a plain XADD and nothing is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::{Broker, Landed};
use crate::config::{Settings, TasksSettings};
use crate::error::{Error, RedisFailure, Result};
use crate::records::{TaskRecord, TaskState};
use crate::task::{now_ms, Limits, NewTask, Task};
use crate::telemetry::events::producer as report;

/// How many tasks one pipeline carries.
const PIPELINE_CHUNK: usize = 1000;

/// How long after its registration (an `SADD` whose answer came back) a producer leaves a
/// tenant out of the registry `SADD` of its enqueues. Nothing in redrive takes a tenant out of
/// the registry; should Redis lose it (a restart without persistence, a failover), entries
/// appended meanwhile wait at most this long for the next enqueue's `SADD` (or the periodic
/// look) to register the tenant again: they are in the lane, the group is created at id 0.
const REGISTERED_FOR: Duration = Duration::from_secs(1);

/// How many tenants a producer remembers as registered; past that it forgets them all (and
/// registers each again at its next enqueue).
const REGISTERED_MAX: usize = 100_000;

/// What became of one task given to a [`Producer`]: appended to its tenant's lane, or — when
/// its task_id already has a live record — refused as a duplicate (nothing written but a
/// count of duplicates in the tenant's health statistics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's tenant.
    pub tenant: String,
    /// The task's idempotency key (given or generated).
    pub task_id: String,
    /// The task's lane entry: the one just appended; for a duplicate, the entry the live
    /// record names (its lane entry, retry or deferral item, or dead letter, where the task
    /// is now; the entry a done task had, since deleted; empty when the record names none).
    pub entry_id: String,
    /// `Some` when nothing was appended because the task_id has a live record.
    pub duplicate: Option<Duplicate>,
}

impl Enqueued {
    /// Whether the task was refused as a duplicate (nothing appended).
    pub fn is_duplicate(&self) -> bool {
        self.duplicate.is_some()
    }
}

/// Why an enqueue was refused: the live record of the same task_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// The live record's state (one that [`TaskState::refuses_duplicates`]).
    pub state: TaskState,
}

/// Publishes tasks.
#[derive(Debug, Clone)]
pub struct Producer {
    broker: Broker,
    limits: Limits,
    tasks: TasksSettings,
    /// Tenants this producer (and its clones) registered, and when.
    registered: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Producer {
    /// A producer writing through `broker`, enforcing the task limits of `settings` and its
    /// `[tasks]` section (records on or off, duplicate refusal per tenant). Settings built
    /// from [`RawConfig::defaults`](crate::RawConfig::defaults) give records on and
    /// duplicates refused.
    pub fn new(broker: Broker, settings: &Settings) -> Producer {
        Producer {
            broker,
            limits: settings.limits,
            tasks: settings.tasks().clone(),
            registered: Arc::default(),
        }
    }

    /// Enqueues one task: one round trip (`EVALSHA` of enqueue.lua, or `XADD` with records
    /// off, with the registry `SADD` in the same pipeline the first time this producer sees the
    /// tenant, and again at most once a second). A duplicate comes back as `Ok` with
    /// [`Enqueued::duplicate`] set.
    pub async fn enqueue(&self, task: NewTask) -> Result<Enqueued> {
        let task = task.into_task(&self.limits, now_ms())?;
        let mut out = self.enqueue_chunk(std::slice::from_ref(&task), 0).await?;
        out.pop()
            .ok_or_else(|| Error::Protocol("an enqueue of one task answered nothing".into()))
    }

    /// One pipelined round trip of validated `tasks` (≤ [`PIPELINE_CHUNK`]), registering the
    /// tenants this producer has not registered within [`REGISTERED_FOR`], then announcing
    /// those that were new. With `redis.wait_replicas` on, waits for the replicas first
    /// ([`Producer::replicated`]; `written_before`: how many tasks of the batch were
    /// confirmed before this chunk, for its error message).
    async fn enqueue_chunk(&self, tasks: &[Task], written_before: usize) -> Result<Vec<Enqueued>> {
        let register = self.to_register(tasks);
        let appended = self.broker.enqueue(tasks, &register, &self.tasks).await?;
        self.registered_now(&register);
        self.replicated(tasks, written_before).await?;
        self.announce(tasks, &register, appended.new_tenants).await;
        outcomes(tasks, appended.landed)
    }

    /// The distinct tenants of `tasks` this producer has not registered lately, sorted.
    fn to_register<'a>(&self, tasks: &'a [Task]) -> Vec<&'a str> {
        let Ok(known) = self.registered.lock() else {
            return tenants_of(tasks);
        };
        let mut out: Vec<&str> = tasks
            .iter()
            .map(|t| t.tenant.as_str())
            .filter(|t| {
                known
                    .get(*t)
                    .is_none_or(|at| at.elapsed() >= REGISTERED_FOR)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Remembers `tenants` as registered (their `SADD` answered).
    fn registered_now(&self, tenants: &[&str]) {
        if tenants.is_empty() {
            return;
        }
        if let Ok(mut known) = self.registered.lock() {
            if known.len() + tenants.len() > REGISTERED_MAX {
                known.clear();
            }
            let now = Instant::now();
            for t in tenants {
                match known.get_mut(*t) {
                    Some(at) => *at = now,
                    None => {
                        known.insert((*t).to_owned(), now);
                    }
                }
            }
        }
    }

    /// Validates every task, then enqueues them all in pipelined round trips of up to 1000
    /// tasks. On a validation error nothing is written and the error names the task's position
    /// (0-based). On a Redis error part-way, the error says how many tasks (the first ones)
    /// were written before the failing round trip. Duplicates are reported in the result, in
    /// order; the same task_id twice in one batch: the second is a duplicate of the first.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>> {
        let tasks = self.validate(tasks.into_iter().enumerate(), |i| format!("task #{i}"))?;
        let mut out = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(PIPELINE_CHUNK) {
            let enqueued = match self.enqueue_chunk(chunk, out.len()).await {
                Ok(a) => a,
                Err(Error::OutOfMemory(m)) if !out.is_empty() => {
                    return Err(Error::OutOfMemory(format!(
                        "{m}; the first {} tasks of the batch were written before",
                        out.len()
                    )))
                }
                Err(e) => return Err(e),
            };
            out.extend(enqueued);
        }
        Ok(out)
    }

    /// Validates every task, then writes them all in one MULTI/EXEC, tenant registrations
    /// included: all or nothing. Each task comes with its number for error messages (a file's
    /// 1-based line number: `line 500: …`); a single task's errors carry no number. A Redis
    /// that is out of memory refuses the whole transaction: [`Error::OutOfMemory`], nothing
    /// written, and the message says so. Duplicates are refused inside the transaction and
    /// reported in the result, in order (they do not fail the others).
    pub async fn enqueue_all(&self, tasks: Vec<(usize, NewTask)>) -> Result<Vec<Enqueued>> {
        let tasks = self.validate(tasks.into_iter(), |line| format!("line {line}"))?;
        let appended = self.broker.enqueue_atomic(&tasks, &self.tasks).await?;
        let tenants = tenants_of(&tasks);
        self.registered_now(&tenants);
        self.replicated(&tasks, 0).await?;
        self.announce(&tasks, &tenants, appended.new_tenants).await;
        outcomes(&tasks, appended.landed)
    }

    /// With `redis.wait_replicas` on, after an enqueue: waits (`WAIT`, bounded by
    /// `redis.wait_timeout_ms`) until the replicas asked for have the tasks.
    ///
    /// A `WAIT` answered short does not fail the enqueue: the node is up and has the tasks,
    /// which reach the replicas when they catch up (only a failover before then loses them);
    /// it is counted (`redrive_redis_wait_short_total{what="enqueue"}`) and logged at warn —
    /// failing enqueues while a replica is down would turn a lost replica into an outage. A
    /// `WAIT` that got no answer (the connection to the node was lost: it may be failing over)
    /// fails the enqueue as a lost reply ([`Error::Redis`], "may have been written"): the tasks
    /// may be gone with the node, and enqueueing them again is safe (a task_id already
    /// enqueued is refused as a duplicate).
    async fn replicated(&self, tasks: &[Task], written_before: usize) -> Result<()> {
        if !self.broker.waits_for_replicas() {
            return Ok(());
        }
        let tenants = tenants_of(tasks);
        let Some(r) = self.broker.wait_written(&tenants).await else {
            return Ok(());
        };
        if r.short() {
            let error = r.error.as_ref().map(|e| e.to_string());
            report::wait_short("enqueue", &tenants, r.asked, r.confirmed, error.as_deref());
        }
        match r.error {
            Some(e) => Err(Error::Redis(
                RedisFailure::new(
                    format!(
                "{} tasks were written but the WAIT for {} replicas got no answer ({e}): they \
                 may not survive a failover of their node; enqueue them again (a task_id \
                 already enqueued is refused as a duplicate){}",
                tasks.len(),
                r.asked,
                if written_before > 0 {
                    format!("; the first {written_before} tasks of the batch were confirmed before")
                } else {
                    String::new()
                }
            ),
                    None,
                )
                .reply_lost(),
            )),
            None => Ok(()),
        }
    }

    /// After an enqueue whose registration of `registered` added `new_tenants` (> 0) tenants,
    /// tells the members (naming the tenants registered) so they serve them at once. The tasks
    /// are written either way: a failed announcement is logged and counted, and members find
    /// the tenants at their next periodic look. On a Redis Cluster it also tells them which
    /// lanes got entries (their readers cannot block on the lanes there), so they read at once
    /// instead of at their next poll.
    async fn announce(&self, tasks: &[Task], registered: &[&str], new_tenants: u64) {
        if new_tenants > 0 {
            if let Err(e) = self.broker.announce_tenants(registered).await {
                report::announce_failed(registered, &e);
            }
        }
        if self.broker.is_cluster() {
            let tenants = tenants_of(tasks);
            if let Err(e) = self.broker.signal_entries(&tenants).await {
                report::announce_failed(&tenants, &e);
            }
        }
    }

    /// Validates numbered tasks; an error of one of several names it with `label(number)`.
    fn validate(
        &self,
        tasks: impl ExactSizeIterator<Item = (usize, NewTask)>,
        label: impl Fn(usize) -> String,
    ) -> Result<Vec<Task>> {
        let now = now_ms();
        let total = tasks.len();
        tasks
            .map(|(i, t)| {
                t.into_task(&self.limits, now).map_err(|e| match e {
                    Error::InvalidTask(m) if total > 1 => {
                        Error::InvalidTask(format!("{}: {m}", label(i)))
                    }
                    other => other,
                })
            })
            .collect()
    }
}

/// The distinct tenants of `tasks`, sorted.
fn tenants_of(tasks: &[Task]) -> Vec<&str> {
    let mut tenants: Vec<&str> = tasks.iter().map(|t| t.tenant.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    tenants
}

/// The tasks with what became of them (reporting each duplicate).
fn outcomes(tasks: &[Task], landed: Vec<Landed>) -> Result<Vec<Enqueued>> {
    if landed.len() != tasks.len() {
        return Err(Error::Protocol(format!(
            "an enqueue of {} tasks answered {} results",
            tasks.len(),
            landed.len()
        )));
    }
    Ok(tasks
        .iter()
        .zip(landed)
        .map(|(t, l)| match l {
            Landed::Appended(entry_id) => Enqueued {
                tenant: t.tenant.clone(),
                task_id: t.task_id.clone(),
                entry_id,
                duplicate: None,
            },
            Landed::Duplicate { state, entry } => {
                report::duplicate_refused(&t.tenant, &t.task_id, state, &entry);
                Enqueued {
                    tenant: t.tenant.clone(),
                    task_id: t.task_id.clone(),
                    entry_id: entry,
                    duplicate: Some(Duplicate { state }),
                }
            }
        })
        .collect())
}

/// How long one blocking read of a wait lasts at most: a wait re-reads the task's record at
/// least this often, whatever the events stream says.
const WAIT_SLICE: Duration = Duration::from_secs(5);

/// How long a waiter's registration lives unless refreshed (every slice refreshes it).
const WAITER_TTL_MS: u64 = 15_000;

/// How a [`Producer::wait`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    /// The task finished: its record, in state done, dead_lettered, expired, resolved or
    /// discarded (see [`TaskState::is_finished`]).
    Finished(TaskRecord),
    /// The timeout passed first: the record as last read (`None`: no record, or Redis could
    /// not be read).
    TimedOut(Option<TaskRecord>),
}

impl Producer {
    /// The record of task `task_id` of `tenant` (`None` when there is none: never enqueued
    /// with records on, or expired after its retention).
    pub async fn task(&self, tenant: &str, task_id: &str) -> Result<Option<TaskRecord>> {
        check_address(tenant, task_id)?;
        Ok(self
            .broker
            .task_record(tenant, task_id)
            .await?
            .map(|r| r.record))
    }

    /// Waits up to `timeout` for task `task_id` of `tenant` to finish and returns its record.
    /// It blocks on the tenant's events stream (one entry per finish), never polls: the last
    /// event id is taken before the record is read, so a finish between the two is not missed,
    /// and the record is read again after each event naming the task and at least every 5 s.
    /// A lost connection (a Redis restart, a failover) is retried until the deadline; the
    /// wait then ends [`Waited::TimedOut`]. A blocking read uses a connection of its own.
    pub async fn wait(&self, tenant: &str, task_id: &str, timeout: Duration) -> Result<Waited> {
        check_address(tenant, task_id)?;
        let waiter = format!("rs-{:016x}{:08x}", fastrand::u64(..), std::process::id());
        let out = self
            .wait_registered(tenant, task_id, timeout, &waiter)
            .await;
        // Best effort: an unremoved registration expires by itself.
        let _ = self.broker.unregister_waiter(tenant, &waiter).await;
        out
    }

    async fn wait_registered(
        &self,
        tenant: &str,
        task_id: &str,
        timeout: Duration,
        waiter: &str,
    ) -> Result<Waited> {
        let deadline = Instant::now() + timeout;
        let key = self.broker.keys().events(tenant);
        let mut last: Option<TaskRecord> = None;
        let mut after: Option<String> = None;
        let mut reader = None;
        // The server's clock: (its ms, the local instant it was read at).
        let mut clock: Option<(u64, Instant)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let step: Result<Option<TaskRecord>> = async {
                let (server_ms, at) = match clock {
                    Some(c) => c,
                    None => {
                        let c = (self.broker.server_time_ms().await?, Instant::now());
                        clock = Some(c);
                        c
                    }
                };
                let now_ms = server_ms + at.elapsed().as_millis() as u64;
                // Registered (or refreshed) before anything is read: a finish before this is in
                // the record, one after it publishes an event.
                self.broker
                    .register_waiter(tenant, waiter, now_ms, now_ms + WAITER_TTL_MS)
                    .await?;
                if after.is_none() {
                    let id = self.broker.events_last_id(tenant).await?;
                    let read = self.broker.task_record(tenant, task_id).await?;
                    last = read.map(|r| r.record);
                    after = Some(id);
                    if let Some(r) = last.as_ref().filter(|r| finished(r)) {
                        return Ok(Some(r.clone()));
                    }
                }
                if left.is_zero() {
                    return Ok(None);
                }
                if reader.is_none() {
                    reader = Some(self.broker.events_reader(WAIT_SLICE).await?);
                }
                let (Some(r), Some(from)) = (reader.as_mut(), after.as_deref()) else {
                    return Ok(None);
                };
                let events = r.read(&key, from, left.min(WAIT_SLICE)).await?;
                let ours = events.iter().any(|e| e.task_id == task_id);
                if let Some(e) = events.last() {
                    after = Some(e.id.clone());
                }
                if ours || events.is_empty() {
                    let read = self.broker.task_record(tenant, task_id).await?;
                    last = read.map(|r| r.record);
                    if let Some(r) = last.as_ref().filter(|r| finished(r)) {
                        return Ok(Some(r.clone()));
                    }
                }
                Ok(None)
            }
            .await;
            match step {
                Ok(Some(done)) => return Ok(Waited::Finished(done)),
                Ok(None) if Instant::now() >= deadline => return Ok(Waited::TimedOut(last)),
                Ok(None) => {}
                Err(Error::Redis(e)) => {
                    // Start over (the stream and the registration may be gone with a restarted
                    // server): clock, registration, last id, record.
                    report::wait_retrying(tenant, task_id, &e);
                    reader = None;
                    after = None;
                    clock = None;
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Waited::TimedOut(last));
                    }
                    tokio::time::sleep(left.min(Duration::from_millis(200))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a record's state is one a wait ends on.
fn finished(r: &TaskRecord) -> bool {
    r.state.is_some_and(TaskState::is_finished)
}

/// Refuses a tenant or task id the contract does not allow.
fn check_address(tenant: &str, task_id: &str) -> Result<()> {
    crate::task::validate_tenant(tenant).map_err(Error::InvalidTask)?;
    crate::task::validate_task_id(task_id).map_err(Error::InvalidTask)
}
