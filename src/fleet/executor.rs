//! The executor: takes jobs from the fair queue and runs each attempt under a concurrency
//! limit and a timeout, turning panics into failed attempts. Suspects (entries taken over after
//! a crash or a stall) that started before run alone, so a task that kills its process only
//! counts against itself.
//!
//! Every start is recorded in the entry's delivery count before the handler runs (fresh
//! entries by the [`Starter`] in batches, taken-over ones by begin.lua), so the count is 1 (the
//! read) + starts: an entry that was only read when its member died does not count a start.
//! The same scripts write the task's record (`running`); with `tasks.dedup` an entry whose
//! task is already `done` (a raw duplicate, or a redelivery after a lost ack) is not started:
//! it is settled as [`Aside::Duplicate`] (acked, never run).
//!
//! Each task runs on its route (see [`super::router`]): the first `[[handlers]]` entry whose
//! kinds match its kind, with that entry's timeout and concurrency cap. A task no route
//! matches is not run and not charged a start: it is dead-lettered as `no_handler`. A task
//! that arrives with a side-effecting step started and not done (a member died inside it) is
//! not run either: it is dead-lettered as `partial_execution`, naming the step.
//!
//! The route's permit is taken before the start is marked, so waiting for it costs no
//! delivery count. While an attempt waits for its route's permit it holds one of the member's
//! `fleet.concurrency` slots: when one route's cap is full, tasks of that route at the head of
//! the queue keep slots that tasks of other routes could use (head-of-line blocking, bounded
//! by the slots). Keep `max_concurrent` near what the agent can take, and the member's
//! concurrency above the sum of the caps that should run at once.
//!
//! Each attempt gets a [`TaskContext`] with the task's earlier steps and a sink
//! ([`AttemptSteps`]) whose events a recorder, started by the attempt's first step, writes to
//! Redis as they arrive; the recorder has flushed before the attempt's settlement is sent. Every outcome (the handler's, a timeout, a panic) goes through
//! [`TaskContext::conclude`] first: a failure while a side-effecting step is open is a
//! `partial_execution`, a refused step a `schema_mismatch`.
//!
//! Before an attempt starts, the tenant's breaker (the member's local view of it) decides:
//! closed runs it; open defers it to the retry schedule unattempted; past the cool-down the
//! member asks Redis for the tenant's one probe and runs the task as that probe, or defers it
//! when another member holds the probe. Every outcome is counted towards the tenant's failure
//! window; a probe's outcome closes or re-opens the breaker.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::router::{Route, Router};
use super::settlement::{Aside, Failed, NotRun, Settlement};
use super::shared::{Job, Lost, Shared, Work};
use super::steps::AttemptSteps;
use crate::broker::{Begin, Broker, StartEntry, StartRecords};
use crate::classify::Classifier;
use crate::config::TasksSettings;
use crate::handler::{FailureClass, Outcome, TaskContext};
use crate::isolation::Gate;
use crate::policy::Policies;
use crate::records::{Output, TaskState};
use crate::shutdown::Shutdown;
use crate::task::Task;
use crate::telemetry::events;
use crate::telemetry::events::attempt::{AttemptMeters, RouteMeter};
use crate::telemetry::panic_message;
use crate::telemetry::tasklog::{task_event, TaskLog};

/// The executor loop's settings and handles.
pub(crate) struct ExecutorSettings {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    /// The routes by kind, each with its handler, timeout and cap.
    pub router: Arc<Router>,
    /// The retry policies (an attempt's `max_attempts`).
    pub policies: Arc<Policies>,
    pub classifier: Arc<Classifier>,
    pub settle: mpsc::UnboundedSender<Settlement>,
    pub concurrency: usize,
    pub grace: Duration,
    /// Fresh entries whose read was sent less than this long ago have their start recorded
    /// without the owner check (the settler's fast-ack window, for the same reason).
    pub fast_start_window: Duration,
}

/// The executor loop: pops jobs round-robin across tenants and runs each in its own task,
/// within `concurrency` permits.
pub(crate) struct Executor {
    cfg: ExecutorSettings,
    /// One permit per attempt that may run at once.
    permits: Arc<Semaphore>,
    /// The running attempts.
    running: JoinSet<()>,
    /// What every attempt shares.
    ctx: Arc<AttemptCtx>,
}

/// What one dispatch step did with its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dispatch {
    /// The job runs in its own task.
    Spawned,
    /// The entry was lost to another member: released without an attempt.
    Dropped,
    /// A suspect of a held-back tenant: deferred unattempted.
    Deferred,
    /// Shutdown fired while the job waited to run alone; it stays pending.
    Stopped,
}

/// Everything one attempt needs besides its job; shared by every attempt behind one `Arc`
/// (an in-flight task's future holds a pointer, not a copy of every handle: issue 18's memory
/// per task in flight).
struct AttemptCtx {
    meters: AttemptMeters,
    /// One per route, in the router's order (series registered when the executor starts,
    /// after the metrics recorder is installed).
    route_meters: Arc<Vec<RouteMeter>>,
    broker: Arc<Broker>,
    shared: Arc<Shared>,
    router: Arc<Router>,
    policies: Arc<Policies>,
    classifier: Arc<Classifier>,
    settle: mpsc::UnboundedSender<Settlement>,
    starter: Starter,
}

/// The most fresh entries one start call records.
const START_BATCH: usize = 1_000;

/// What recording a fresh entry's start found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Recorded: the attempt may run.
    Run,
    /// The entry was deleted while pending.
    Gone,
    /// Another consumer owns the entry now, or it was settled elsewhere.
    Lost,
    /// Its task is already done (the tenant refuses duplicates): not started.
    Duplicate,
    /// Redis failed; the entry stays pending, for a reclaim to take up.
    Failed,
}

/// One fresh entry about to start, waiting for its start to be recorded.
struct StartAsk {
    entry_id: String,
    /// Its task (the record's task_id, attempt and kind).
    task: Arc<Task>,
    /// When the read that delivered it was sent.
    read_at: Option<Instant>,
    reply: oneshot::Sender<Mark>,
}

/// Records the starts of fresh entries in batches: each attempt asks and waits; one call per
/// tenant carries every start asked for while the previous call was in flight, so the hot path
/// pays one round trip per batch of starts, not per task. Entries read within the fast window
/// (nobody else can have claimed them yet, as for the fast ack) are marked with one plain
/// XCLAIM; older ones through start.lua's owner check.
#[derive(Clone)]
struct Starter {
    tx: mpsc::UnboundedSender<(Arc<str>, StartAsk)>,
}

impl Starter {
    /// Starts the batching loop; it ends when the last handle is dropped.
    fn spawn(
        broker: Broker,
        member: Arc<str>,
        fast_window: Duration,
        tasks: Arc<TasksSettings>,
    ) -> Starter {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Arc<str>, StartAsk)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut by_tenant: HashMap<Arc<str>, Vec<StartAsk>> = HashMap::new();
                let mut next = Some(first);
                let mut n = 0;
                while let Some((tenant, ask)) = next.take() {
                    by_tenant.entry(tenant).or_default().push(ask);
                    n += 1;
                    if n < START_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                let calls = by_tenant.into_iter().flat_map(|(tenant, asks)| {
                    let (fast, checked): (Vec<StartAsk>, Vec<StartAsk>) = asks
                        .into_iter()
                        .partition(|a| a.read_at.is_some_and(|t| t.elapsed() < fast_window));
                    [(tenant.clone(), fast, true), (tenant, checked, false)]
                        .into_iter()
                        .filter(|(_, asks, _)| !asks.is_empty())
                        .map(|(tenant, asks, fast)| {
                            let (broker, member, tasks) = (&broker, &member, &tasks);
                            async move {
                                let entries: Vec<StartEntry<'_>> = asks
                                    .iter()
                                    .map(|a| StartEntry {
                                        id: &a.entry_id,
                                        task_id: &a.task.task_id,
                                        attempt: a.task.attempt,
                                        kind: &a.task.kind,
                                        recorded: a.task.recorded,
                                    })
                                    .collect();
                                let records = StartRecords {
                                    on: tasks.enabled,
                                    refuse_done: tasks.dedup_for(&tenant),
                                };
                                let found = if fast {
                                    broker
                                        .start_unclaimable(&tenant, member, &entries, records)
                                        .await
                                } else {
                                    broker.start(&tenant, member, &entries, records).await
                                };
                                // Only starts of entries appended without their record write
                                // it (lib/record.lua, Running).
                                let unrecorded: HashSet<&str> = entries
                                    .iter()
                                    .filter(|e| !e.recorded)
                                    .map(|e| e.id)
                                    .collect();
                                match &found {
                                    Err(e) => {
                                        events::attempt::starts_failed(&tenant, asks.len(), e)
                                    }
                                    Ok(s) if records.on => {
                                        let n = s
                                            .started
                                            .iter()
                                            .filter(|id| unrecorded.contains(id.as_str()))
                                            .count();
                                        if n > 0 {
                                            events::records::written(
                                                &tenant,
                                                TaskState::Running.as_str(),
                                                n as u64,
                                            )
                                        }
                                    }
                                    Ok(_) => {}
                                }
                                drop(unrecorded);
                                drop(entries);
                                reply_marks(asks, found.ok());
                            }
                        })
                });
                futures_util::future::join_all(calls).await;
            }
        });
        Starter { tx }
    }

    /// Records that `entry_id` (of `task`) starts now; waits for the batch it rides in.
    async fn start(
        &self,
        tenant: &Arc<str>,
        entry_id: &str,
        task: &Arc<Task>,
        read_at: Option<Instant>,
    ) -> Mark {
        let (reply, answer) = oneshot::channel();
        let ask = StartAsk {
            entry_id: entry_id.to_owned(),
            task: task.clone(),
            read_at,
            reply,
        };
        if self.tx.send((tenant.clone(), ask)).is_err() {
            return Mark::Failed;
        }
        answer.await.unwrap_or(Mark::Failed)
    }
}

/// Answers each ask of a start call with what the call found (`None`: it failed).
fn reply_marks(asks: Vec<StartAsk>, found: Option<crate::broker::Starts>) {
    let Some(found) = found else {
        for a in asks {
            let _ = a.reply.send(Mark::Failed);
        }
        return;
    };
    let started: HashSet<String> = found.started.into_iter().collect();
    let gone: HashSet<String> = found.gone.into_iter().collect();
    let duplicates: HashSet<String> = found.duplicates.into_iter().collect();
    for a in asks {
        let mark = if started.contains(&a.entry_id) {
            Mark::Run
        } else if gone.contains(&a.entry_id) {
            Mark::Gone
        } else if duplicates.contains(&a.entry_id) {
            Mark::Duplicate
        } else {
            Mark::Lost
        };
        let _ = a.reply.send(mark);
    }
}

impl Executor {
    /// An executor with `cfg`; its start recorder is spawned on the current runtime.
    pub(crate) fn new(cfg: ExecutorSettings) -> Executor {
        let ctx = Arc::new(AttemptCtx {
            meters: AttemptMeters::new(),
            route_meters: Arc::new(
                cfg.router
                    .routes()
                    .iter()
                    .map(|r| RouteMeter::new(&r.label))
                    .collect(),
            ),
            broker: Arc::new(cfg.broker.clone()),
            shared: cfg.shared.clone(),
            router: cfg.router.clone(),
            policies: cfg.policies.clone(),
            classifier: cfg.classifier.clone(),
            settle: cfg.settle.clone(),
            starter: Starter::spawn(
                cfg.broker.clone(),
                cfg.shared.member.clone(),
                cfg.fast_start_window,
                cfg.shared.tasks.clone(),
            ),
        });
        Executor {
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            running: JoinSet::new(),
            ctx,
            cfg,
        }
    }

    /// Runs jobs until shutdown, then waits up to the grace period for running ones. Attempts
    /// still running then are abandoned: their entries stay pending for a restart or reclaim.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        'outer: loop {
            while self.running.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                p = self.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let job = loop {
                if let Some(job) = self.cfg.shared.pop() {
                    break job;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => break 'outer,
                    _ = self.cfg.shared.queue_ready.notified() => {}
                }
            };
            if self.step(job, permit, &shutdown).await == Dispatch::Stopped {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + self.cfg.grace;
        loop {
            match tokio::time::timeout_at(deadline, self.running.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        abandoned = self.running.len(),
                        "shutdown grace expired; abandoning running tasks, their entries stay pending"
                    );
                    self.running.abort_all();
                    while self.running.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }

    /// Dispatches one popped job holding `permit`: drops it when it was lost, runs a suspect
    /// that started before alone (deferring it first when its tenant is held back), and spawns
    /// its attempt. Never sleeps; it waits only for the other attempts to finish before one
    /// that must run alone.
    pub(crate) async fn step(
        &mut self,
        job: Job,
        permit: OwnedSemaphorePermit,
        shutdown: &Shutdown,
    ) -> Dispatch {
        let concurrency = self.cfg.concurrency;
        if job.lost.is_set() {
            let _ = self.cfg.settle.send(Settlement::Aside(Aside::Lost {
                tenant: job.tenant,
                entry_id: job.entry_id,
            }));
            return Dispatch::Dropped;
        }
        // A suspect that started before may be what killed its last member.
        let alone = matches!(job.work, Work::Suspect(_)) && job.deliveries >= 1;
        if alone && concurrency > 1 {
            // A suspect runs alone; if its tenant is held back it would only be deferred,
            // so defer it before emptying every slot for it.
            if let Gate::Defer(delay) = self.cfg.shared.isolation.gate(&job.tenant) {
                let _ = self.cfg.settle.send(Settlement::Defer {
                    tenant: job.tenant,
                    entry_id: job.entry_id,
                    delay,
                });
                return Dispatch::Deferred;
            }
        }
        let exclusive = if alone && concurrency > 1 {
            // Wait until nothing else runs; nothing new starts meanwhile.
            let rest = tokio::select! {
                biased;
                _ = shutdown.wait() => return Dispatch::Stopped,
                p = self.permits.clone().acquire_many_owned(concurrency as u32 - 1) => p.ok(),
            };
            rest
        } else {
            None
        };
        self.running.spawn(run_job(
            job,
            (permit, exclusive),
            self.ctx.clone(),
            shutdown.clone(),
        ));
        Dispatch::Spawned
    }
}

/// Passes the job through its tenant's breaker, then starts it: deferred unattempted while the
/// breaker holds the tenant, run as the tenant's one probe once its cool-down is over, run
/// normally when closed. A probe's outcome is reported whatever becomes of the job.
///
/// The task's future is what every task in flight costs (issue 18), so this and the phases it
/// awaits are written to keep it small: plain functions returning `async move` blocks (an
/// `async fn` keeps each argument twice, as the future's capture and as a local), the start
/// ([`prepare`]) and the attempt awaited one after the other (their states overlap instead of
/// nesting), rare paths boxed.
// Not an `async fn`: that would keep every argument twice in the task's future.
#[allow(clippy::manual_async_fn)]
fn run_job(
    job: Job,
    permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
    ctx: Arc<AttemptCtx>,
    shutdown: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Held until the job is done.
        let _permits = &permits;
        let iso = &ctx.shared.isolation;
        let gate = match iso.gate(&job.tenant) {
            // Boxed, here and below: rare paths whose state would otherwise size every task's
            // future (issue 18's memory per task in flight).
            Gate::Probe => Box::pin(iso.admit_probe(&ctx.broker, &job.tenant, &job.entry_id)).await,
            other => other,
        };
        let probe = match gate {
            Gate::Run => false,
            Gate::Probe => true,
            Gate::Defer(delay) => {
                if let Work::Ready(task) = &job.work {
                    task_event!(debug, &TaskLog::of(task), entry_id = %job.entry_id, delay_ms = delay.as_millis() as u64, "task held back by the tenant's breaker; deferred unattempted");
                }
                let _ = ctx.settle.send(Settlement::Defer {
                    tenant: job.tenant,
                    entry_id: job.entry_id,
                    delay,
                });
                return;
            }
        };
        let tenant = job.tenant.clone();
        let entry_id = probe.then(|| job.entry_id.clone());
        let result = match prepare(job, &ctx, &shutdown).await {
            Some((started, route, permit)) => {
                let result = attempt(started, &route, &ctx).await;
                drop(permit);
                result
            }
            None => None,
        };
        if let Some(r) = &result {
            iso.record(&tenant, r.as_ref().map(|_| ()).map_err(|c| *c));
        }
        if let Some(entry_id) = entry_id {
            let (success, detail) = match &result {
                Some(Ok(task_id)) => (Some(true), format!("probe {task_id} succeeded")),
                Some(Err(class)) if iso.settings.breaker.counts(*class) => {
                    (Some(false), format!("probe failed: {class}"))
                }
                Some(Err(class)) => (
                    None,
                    format!("probe ended as {class}, which is not counted"),
                ),
                None => (None, "probe did not run to an outcome".to_owned()),
            };
            Box::pin(iso.probe_done(&ctx.broker, &tenant, &entry_id, success, &detail)).await;
        }
    }
}

/// Checks the task may run and takes its route's permit, then records the start (owner
/// check + delivery count + 1: a fresh entry through the batching [`Starter`], a suspect
/// through begin.lua, which also reads its fields and recorded steps). Returns the started
/// attempt, its route and the route's permit, or `None` when the job is not run (settled
/// aside here).
fn prepare<'a>(
    job: Job,
    ctx: &'a AttemptCtx,
    shutdown: &'a Shutdown,
) -> impl Future<Output = Option<(Started, Arc<Route>, OwnedSemaphorePermit)>> + Send + 'a {
    let Job {
        tenant,
        entry_id,
        work,
        deliveries,
        lost,
        read_at,
    } = job;
    async move {
        let (task, deliveries, route, permit) = match work {
            Work::Ready(task) => {
                // A fresh task that must not run is dead-lettered and a fresh one waits for its
                // route's permit before its start is marked, so neither is charged a start.
                if !runnable(ctx, &tenant, &entry_id, &task) {
                    return None;
                }
                let (route, permit) = admit(ctx, &tenant, &entry_id, &task, shutdown).await?;
                // From here until the mark lets the entry run, a heartbeat that finds it pending
                // for nobody does not count it lost: the mark drops a deleted entry from the PEL.
                lost.set_starting(true);
                match ctx.starter.start(&tenant, &entry_id, &task, read_at).await {
                    Mark::Run => {
                        lost.set_starting(false);
                        (task, deliveries + 1, route, permit)
                    }
                    Mark::Duplicate => {
                        // Still pending here: acked as a duplicate, never run.
                        lost.set_starting(false);
                        let _ = ctx.settle.send(Settlement::Aside(Aside::Duplicate {
                            tenant,
                            entry_id,
                            task_id: task.task_id.clone(),
                        }));
                        return None;
                    }
                    Mark::Gone => {
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::Tombstone { tenant, entry_id }));
                        return None;
                    }
                    Mark::Lost => {
                        // Not started here: whoever owns it now runs it.
                        events::attempt::start_lost(&TaskLog::of(&task), &entry_id);
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::Lost { tenant, entry_id }));
                        return None;
                    }
                    Mark::Failed => {
                        events::attempt::start_failed(&TaskLog::of(&task), &entry_id);
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::NotStarted { tenant, entry_id }));
                        return None;
                    }
                }
            }
            Work::Suspect(owner) => {
                lost.set_starting(true);
                let tasks = &ctx.shared.tasks;
                let records = StartRecords {
                    on: tasks.enabled,
                    refuse_done: tasks.dedup_for(&tenant),
                };
                let task = match Box::pin(ctx.broker.begin(
                    &tenant,
                    &ctx.shared.member,
                    &entry_id,
                    records,
                    owner.as_deref(),
                ))
                .await
                {
                    Ok(Begin::Duplicate(task_id)) => {
                        lost.set_starting(false);
                        let _ = ctx.settle.send(Settlement::Aside(Aside::Duplicate {
                            tenant,
                            entry_id,
                            task_id,
                        }));
                        return None;
                    }
                    Ok(Begin::Run(fields)) => {
                        lost.set_starting(false);
                        if records.on && crate::records::entry_task_id(&fields, &entry_id).is_some()
                        {
                            events::records::written(&tenant, TaskState::Running.as_str(), 1);
                        }
                        match Task::from_fields(&tenant, &entry_id, &fields, &ctx.shared.limits) {
                            Ok(mut task) => {
                                // begin.lua wrote its record `running` and kept it (no
                                // expiry): its done must write the record, never go to the
                                // done log (which needs the record as enqueue.lua left it).
                                task.record_until = 0;
                                events::attempt::takeover_running(
                                    &TaskLog::of(&task),
                                    &entry_id,
                                    deliveries + 1,
                                    deliveries >= 1,
                                    task.steps.len(),
                                );
                                Arc::new(task)
                            }
                            Err(m) => {
                                let _ = ctx.settle.send(Settlement::Aside(Aside::Malformed {
                                    lane: ctx.broker.keys().lane(&tenant),
                                    tenant,
                                    entry_id,
                                    reason: m.reason,
                                    fields,
                                }));
                                return None;
                            }
                        }
                    }
                    Ok(Begin::Tombstone) => {
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::Tombstone { tenant, entry_id }));
                        return None;
                    }
                    Ok(Begin::Lost) => {
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::Lost { tenant, entry_id }));
                        return None;
                    }
                    Err(e) => {
                        // Still pending here: a later drain or reclaim takes it up again.
                        events::attempt::takeover_start_failed(&tenant, &entry_id, &e);
                        let _ = ctx
                            .settle
                            .send(Settlement::Aside(Aside::NotStarted { tenant, entry_id }));
                        return None;
                    }
                };
                // A taken-over entry's kind and steps are known once begin.lua has read them,
                // after its start was counted (the known over-count of one start, as for expired).
                if !runnable(ctx, &tenant, &entry_id, &task) {
                    return None;
                }
                let (route, permit) = admit(ctx, &tenant, &entry_id, &task, shutdown).await?;
                (task, deliveries + 1, route, permit)
            }
        };
        let started = Started {
            tenant,
            entry_id,
            task,
            deliveries,
            lost,
            read_at,
        };
        Some((started, route, permit))
    }
}

/// Whether the task may start: past its deadline it is dead-lettered as `expired`; arrived
/// with a side-effecting step started and not done (its member died inside it), as
/// `partial_execution` naming the step. Returns whether it may run.
fn runnable(ctx: &AttemptCtx, tenant: &Arc<str>, entry_id: &str, task: &Arc<Task>) -> bool {
    if let Err(why) = crate::policy::may_start(task.deadline_ms, ctx.shared.isolation.now_ms()) {
        events::attempt::expired(
            &TaskLog::of(task),
            entry_id,
            task.deadline_ms.unwrap_or(0),
            &why,
        );
        not_run(
            ctx,
            tenant,
            entry_id,
            task,
            FailureClass::Expired,
            why,
            "past its deadline when a member was about to start it: not run",
            None,
        );
        return false;
    }
    if let Some(open) = task.steps.iter().find(|s| s.side_effect && !s.done) {
        let why = format!(
            "side-effecting step '{}' was started (attempt {}) and never completed: the member \
             running it stopped inside it, so its effect may or may not have happened",
            open.name, open.attempt
        );
        events::attempt::inside_side_effect(&TaskLog::of(task), entry_id, &open.name, &why);
        not_run(
            ctx,
            tenant,
            entry_id,
            task,
            FailureClass::PartialExecution,
            why,
            "not run again: check whether the step's effect happened, then resolve the dead \
             letter or replay it (a replay drops the unfinished step, so it runs again)",
            Some(open.name.clone()),
        );
        return false;
    }
    true
}

/// Sends the task to the dead letters unattempted.
#[allow(clippy::too_many_arguments)]
fn not_run(
    ctx: &AttemptCtx,
    tenant: &Arc<str>,
    entry_id: &str,
    task: &Arc<Task>,
    class: FailureClass,
    error: String,
    detail: &str,
    failed_step: Option<String>,
) {
    let _ = ctx
        .settle
        .send(Settlement::Aside(Aside::NotRun(Box::new(NotRun {
            tenant: tenant.clone(),
            entry_id: entry_id.to_owned(),
            task: task.clone(),
            class,
            error,
            detail: detail.to_owned(),
            failed_step,
        }))));
}

/// The task's route and one of its permits (waited for). A task no route matches is
/// dead-lettered as `no_handler`; one still waiting when shutdown fires is released unstarted
/// (it stays pending for this member's next life or a reclaim).
async fn admit(
    ctx: &AttemptCtx,
    tenant: &Arc<str>,
    entry_id: &str,
    task: &Arc<Task>,
    shutdown: &Shutdown,
) -> Option<(Arc<Route>, OwnedSemaphorePermit)> {
    let Some(route) = ctx.router.route(&task.kind).cloned() else {
        let why = format!(
            "no handler matches kind '{}': the configured kinds are {}",
            task.kind,
            ctx.router.patterns()
        );
        events::attempt::no_handler(&TaskLog::of(task), entry_id, &why);
        not_run(
            ctx,
            tenant,
            entry_id,
            task,
            FailureClass::NoHandler,
            why,
            "not run: add a [[handlers]] entry whose kinds match it (redrive config check shows \
             the routing table), then replay it",
            None,
        );
        return None;
    };
    let permit = tokio::select! {
        biased;
        p = route.permits.clone().acquire_owned() => p.ok(),
        _ = shutdown.wait() => None,
    };
    match permit {
        Some(p) => Some((route, p)),
        None => {
            let _ = ctx.settle.send(Settlement::Aside(Aside::NotStarted {
                tenant: tenant.clone(),
                entry_id: entry_id.to_owned(),
            }));
            None
        }
    }
}

/// A started attempt's entry and task.
struct Started {
    tenant: Arc<str>,
    entry_id: String,
    task: Arc<Task>,
    /// Starts of the entry, this one included.
    deliveries: u64,
    lost: Arc<Lost>,
    read_at: Option<Instant>,
}

/// Calls the route's handler within its timeout, turning a panic or a timeout into a failure.
async fn invoke(route: &Route, task: &Arc<Task>, tctx: &TaskContext) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        route.handler.handle(task.clone(), tctx.clone())
    })) {
        Err(p) => panicked(&*p),
        Ok(fut) => {
            match tokio::time::timeout(route.timeout(), AssertUnwindSafe(fut).catch_unwind()).await
            {
                Err(_) => Outcome::fail(
                    FailureClass::Timeout,
                    format!(
                        "the attempt ran past {} = {}",
                        route.timeout_setting,
                        route.timeout().as_millis()
                    ),
                ),
                Ok(Err(p)) => panicked(&*p),
                Ok(Ok(outcome)) => outcome,
            }
        }
    }
}

/// Runs one attempt on `route` with its step recorder and reports its outcome to the
/// settler once the recorder has flushed. Returns `Ok(task id)` or the failure's class, or
/// `None` when the entry was lost to another member meanwhile.
fn attempt<'a>(
    job: Started,
    route: &'a Route,
    ctx: &'a AttemptCtx,
) -> impl Future<Output = Option<Result<String, FailureClass>>> + Send + 'a {
    let Started {
        tenant,
        entry_id,
        task,
        deliveries,
        lost,
        read_at,
    } = job;
    async move {
        // The log fields are built where a line is written, not kept for the attempt's whole run.
        task_event!(debug, &TaskLog::of(&task), entry_id = %entry_id, deliveries, route = %route.label, "attempt started");
        let wait_ms = crate::task::now_ms().saturating_sub(task.enqueued_at_ms);
        ctx.meters.started(wait_ms);
        if let Some(m) = ctx.route_meters.get(route.position) {
            m.attempt();
        }
        let max_attempts = ctx.policies.max_attempts(&tenant, &task.kind);
        let steps = Arc::new(AttemptSteps::new(
            ctx.broker.clone(),
            tenant.clone(),
            ctx.shared.member.clone(),
            entry_id.clone(),
        ));
        let tctx = TaskContext::recorded_by(
            ctx.shared.member.clone(),
            task.attempt,
            max_attempts,
            &task.steps,
            steps.clone(),
        );
        let started = Instant::now();
        let started_ms = ctx.shared.isolation.now_ms();
        let outcome = tokio::select! {
            o = invoke(route, &task, &tctx) => Some(o),
            _ = lost.wait() => None,
        };
        let duration = started.elapsed();
        // The recorder (started by the attempt's first step, if it reported one) has written
        // every step the attempt reported before the settlement below is sent.
        let recording = steps.finish().await;
        drop(steps);
        ctx.meters.finished(duration);
        let Some(outcome) = outcome else {
            events::attempt::attempt_lost(&TaskLog::of(&task), &entry_id);
            let _ = ctx
                .settle
                .send(Settlement::Aside(Aside::Lost { tenant, entry_id }));
            return None;
        };
        // Steps first: a failure inside an open side-effecting step is a partial execution, a
        // refused step a schema mismatch, whatever the handler said.
        let mut final_output = None;
        let outcome = match tctx.conclude(outcome) {
            Outcome::Done => {
                final_output = tctx.final_output();
                match route.handler.check_output(&task, final_output.as_ref()) {
                    Ok(()) => Outcome::Done,
                    Err(why) => Outcome::fail(
                        FailureClass::SilentFailure,
                        format!("reported success but its output failed validation: {why}"),
                    ),
                }
            }
            Outcome::Error { message } => Outcome::Fail {
                class: ctx
                    .classifier
                    .classify(&message, &[&task.task_id, &task.tenant]),
                reason: message,
                retry_after: None,
            },
            other => other,
        };
        let failed = |class, reason, retry_after, poison| {
            Settlement::Failed(Failed {
                tenant: tenant.clone(),
                entry_id: entry_id.clone(),
                task: task.clone(),
                deliveries,
                class,
                reason,
                retry_after,
                poison,
                progress: tctx.progress(),
                failed_step: tctx.failed_step(),
                duration,
                started_ms,
            })
        };
        if outcome == Outcome::Done {
            task_event!(debug, &TaskLog::of(&task), entry_id = %entry_id, duration_ms = duration.as_millis() as u64, "attempt succeeded");
        }
        let result = match &outcome {
            Outcome::Done => Ok(task.task_id.clone()),
            Outcome::Fail { class, .. } => Err(*class),
            Outcome::Poison { .. } | Outcome::Error { .. } => Err(FailureClass::Unknown),
        };
        let settlement = match outcome {
            Outcome::Done => Settlement::Done {
                read_at,
                recovered: task.attempt > 1 || task.replay_of.is_some(),
                output: record_output(&ctx.shared.tasks, &tenant, &task.kind, final_output),
                tenant: tenant.clone(),
                entry_id: entry_id.clone(),
                task: task.clone(),
                steps: recording.sent || !task.steps.is_empty(),
                started_ms,
            },
            Outcome::Fail {
                class,
                reason,
                retry_after,
            } => failed(class, reason, retry_after, false),
            Outcome::Poison { reason } => failed(FailureClass::Unknown, reason, None, true),
            Outcome::Error { message } => failed(FailureClass::Unknown, message, None, false),
        };
        // The settler lives until every sender is gone, so this cannot fail while we run.
        let _ = ctx.settle.send(settlement);
        Some(result)
    }
}

/// The output a done record keeps: the final output as JSON text, bounded to
/// `tasks.max_output_bytes`; `None` when the task's kind keeps none (or records are off) or
/// the attempt reported none.
fn record_output(
    tasks: &TasksSettings,
    tenant: &str,
    kind: &str,
    output: Option<serde_json::Value>,
) -> Option<Output> {
    if !tasks.stores_output(tenant, kind) {
        return None;
    }
    let text = serde_json::to_string(&output?).ok()?;
    Some(Output::bounded(text, tasks.max_output_bytes))
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Outcome {
    Outcome::Error {
        message: format!("handler panicked: {}", panic_message(payload)),
    }
}
