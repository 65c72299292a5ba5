//! The settler: turns outcomes into Redis state. Completed entries are acked (and deleted),
//! retries scheduled and held-back tasks deferred in per-tenant batches, one atomic call per
//! tenant and kind per flush; dead letters and the rarer moves are one script per entry, run
//! concurrently so that a slow failure path never holds acks back.
//!
//! No batch holds the others hostage: each tenant's batch of each kind is its own task. A
//! flush waits for the first try of each of its calls (so that, normally, what arrives
//! meanwhile rides in the next batch), never for a call that failed: that one keeps trying
//! in the background (backoff up to 2 s, until shutdown has run past its grace) while later
//! batches go ahead. While Redis is over `maxmemory` acks still go through (their scripts free
//! memory first), retries, deferrals and dead letters are refused and wait, their entries
//! pending; the member's [`Health`](super::Health) tracks the episode.
//!
//! Every move also writes the task's record in its script (when `tasks.enabled`): `done` with
//! the bounded output and the retention of the task's kind, `retry_scheduled`, `deferred`,
//! `dead_lettered` or `expired`; what was written is counted from the scripts' answers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::next_move::{next_move, MoveInputs, NextMove};
use super::settlement::{Aside, Failed, NotRun, Settlement};
use super::shared::Shared;
use crate::broker::{is_oom, may_have_run, AckEntry, Broker, DeferItem, Deferred, RetryItem};
use crate::config::TasksSettings;
use crate::deadletter::{DeadLetter, Fingerprint};
use crate::error::Result;
use crate::handler::FailureClass;
use crate::policy::Policies;
use crate::records::{Output, TaskState};
use crate::task::{now_ms, Task};
use crate::telemetry::tasklog::TaskLog;
use crate::telemetry::{events, RedisOp};

/// How much of a failure's error a retry sends for the record (lib/record.lua keeps 1 KiB).
const RECORD_ERROR_BYTES: usize = 1024;

/// A failed attempt's next move.
enum FailedMove {
    /// Another attempt, scheduled with the tenant's other retries.
    Retry(Arc<str>, Box<Retry>),
    /// The dead letters (tenant, entry id, record, when the failed run started: ms by the
    /// server's clock).
    Dead(Arc<str>, String, Box<DeadLetter>, u64),
}

/// A retry waiting for the next flush.
struct Retry {
    item: RetryItem,
    /// The task's log fields, with the attempt that failed.
    log: TaskLog,
    class: FailureClass,
    /// The failure's fingerprint, which its log lines are grouped by.
    fingerprint: Fingerprint,
}

/// What a call retried by [`Settler::with_retry`] answered.
struct Tried<T> {
    value: T,
    /// An earlier try failed in a way that may have run it (its reply was lost): what this
    /// answer finds already settled was most likely settled by that try.
    earlier_may_have_run: bool,
}

/// How a settle that found entries no longer pending for this member counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotPending {
    /// Settled or taken over elsewhere: a lost settle.
    Lost,
    /// An earlier try of the same call may have settled them, its reply lost.
    ReplyLost,
}

impl NotPending {
    /// The judgement for entries a settle call found no longer pending for this member.
    fn judge(earlier_may_have_run: bool) -> NotPending {
        if earlier_may_have_run {
            NotPending::ReplyLost
        } else {
            NotPending::Lost
        }
    }
}

/// The settler loop's settings and handles.
#[derive(Clone)]
pub(crate) struct Settler {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub ack_batch: usize,
    pub dlq_ceiling: u64,
    pub policies: Arc<Policies>,
    /// Whether failure logs carry the task payload (`log.log_payloads`).
    pub log_payloads: bool,
    /// `reclaim.max_deliveries`: this many `agent_crashed` attempts in a row are a crash loop.
    pub max_deliveries: u64,
    /// Completed entries whose read was sent less than this long ago are acked without the
    /// owner check: another member can only claim an entry idle for `reclaim.min_idle_ms`,
    /// and its idle time counts from a delivery that came after the read was sent. Half the
    /// idle time minus the Redis response timeout (so a slow ack still lands in time); zero
    /// when that is not positive, which turns the fast path off.
    pub fast_ack_window: Duration,
}

/// A completed entry waiting for the next ack flush.
struct Ack {
    entry_id: String,
    recovered: bool,
    read_at: Option<std::time::Instant>,
    /// Steps may be recorded for it: its steps hash is deleted with it.
    steps: bool,
    /// Its task (task_id and kind of the done record).
    task: Arc<Task>,
    /// The output the done record keeps.
    output: Option<Output>,
    /// When its run started, ms by the server's clock (the done record's `started`).
    started_ms: u64,
}

/// The ack scripts' entries of `acks`: each with its task's done record (task_id, the
/// retention of its kind, its output).
fn ack_entries<'a>(acks: &[&'a Ack], tenant: &str, tasks: &TasksSettings) -> Vec<AckEntry<'a>> {
    acks.iter()
        .map(|a| AckEntry {
            id: &a.entry_id,
            task_id: &a.task.task_id,
            retention: tasks.retention_for(tenant, &a.task.kind),
            output: a.output.as_ref().map(|o| o.text.as_str()),
            truncated: a.output.as_ref().is_some_and(|o| o.truncated),
            started_ms: a.started_ms,
            recorded: a.task.recorded,
            record_until: a.task.record_until,
        })
        .collect()
}

/// The settler loop: what arrived and is waiting for the next flush, and the moves in flight.
pub(crate) struct SettleLoop {
    settler: Settler,
    rx: mpsc::UnboundedReceiver<Settlement>,
    acks: HashMap<Arc<str>, Vec<Ack>>,
    retries: HashMap<Arc<str>, Vec<Retry>>,
    defers: HashMap<Arc<str>, Vec<DeferItem>>,
    moves: JoinSet<()>,
}

impl SettleLoop {
    /// Settles until every sender is gone, then flushes what is left. It stops on its channel
    /// closing, not on shutdown: the executor's last outcomes must still be settled.
    pub(crate) async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            self.step(first).await;
        }
        let mut firsts = Vec::new();
        self.flush_all(&mut firsts);
        self.drain().await;
    }

    /// A loop settling what arrives on `rx` through `settler`.
    pub(crate) fn new(settler: Settler, rx: mpsc::UnboundedReceiver<Settlement>) -> SettleLoop {
        SettleLoop {
            settler,
            rx,
            acks: HashMap::new(),
            retries: HashMap::new(),
            defers: HashMap::new(),
            moves: JoinSet::new(),
        }
    }

    /// Waits for every move in flight, retrying ones included.
    pub(crate) async fn drain(&mut self) {
        while self.moves.join_next().await.is_some() {}
    }

    /// One batch: `first` and what is already queued behind it (up to `ack_batch` batched
    /// entries) are sorted into acks, retries, deferrals and single moves, then flushed; waits
    /// for the first try of each flushed call, never for a retrying one. Never sleeps.
    pub(crate) async fn step(&mut self, first: Settlement) {
        let me = &self.settler;
        let mut batched = 0;
        let mut next = Some(first);
        // Take what is already queued, up to a batch, so acks ride together.
        while let Some(s) = next.take() {
            // Before any Redis call for it: a heartbeat racing this settle then knows the
            // entry may leave the PEL by our own hand (see heartbeat::lost_after_beat).
            me.shared.settling(&s);
            match s {
                Settlement::Done {
                    tenant,
                    entry_id,
                    recovered,
                    read_at,
                    steps,
                    task,
                    output,
                    started_ms,
                } => {
                    self.acks.entry(tenant).or_default().push(Ack {
                        started_ms,
                        entry_id,
                        recovered,
                        read_at,
                        steps,
                        task,
                        output,
                    });
                    batched += 1;
                }
                Settlement::Defer {
                    tenant,
                    entry_id,
                    delay,
                } => {
                    self.defers
                        .entry(tenant)
                        .or_default()
                        .push(DeferItem { entry_id, delay });
                    batched += 1;
                }
                Settlement::Failed(failed) => match me.prepare_failed(failed) {
                    FailedMove::Retry(tenant, r) => {
                        self.retries.entry(tenant).or_default().push(*r);
                        batched += 1;
                    }
                    FailedMove::Dead(tenant, entry_id, dl, started_ms) => {
                        let me = me.clone();
                        self.moves.spawn(async move {
                            let member = me.shared.member.clone();
                            me.dead_letter(
                                &tenant,
                                &entry_id,
                                *dl,
                                Some(&member),
                                Duration::ZERO,
                                Some(started_ms),
                            )
                            .await
                        });
                    }
                },
                Settlement::Aside(aside) => {
                    let me = me.clone();
                    self.moves
                        .spawn(async move { me.settle_other(aside).await });
                }
            }
            if batched < me.ack_batch {
                next = self.rx.try_recv().ok();
            }
        }
        let mut firsts = Vec::new();
        self.flush_all(&mut firsts);
        // The first try of every call of this flush; a failed one goes on trying by itself.
        futures_util::future::join_all(firsts).await;
        self.settler.shared.health.settled();
        while self.moves.try_join_next().is_some() {}
    }

    /// Starts the calls for everything batched: acks, retries, deferrals.
    fn flush_all(&mut self, firsts: &mut Vec<oneshot::Receiver<()>>) {
        let me = &self.settler;
        me.flush(&mut self.acks, &mut self.moves, firsts);
        me.flush_retries(&mut self.retries, &mut self.moves, firsts);
        me.flush_defers(&mut self.defers, &mut self.moves, firsts);
    }
}

impl Settler {
    /// Settles what arrives on `rx` until every sender is gone, then flushes what is left.
    pub async fn run(self, rx: mpsc::UnboundedReceiver<Settlement>) {
        SettleLoop::new(self, rx).run().await
    }

    /// A signal for the first try of one call: the flush waits for it, not for the call.
    fn first_try(firsts: &mut Vec<oneshot::Receiver<()>>) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        firsts.push(rx);
        tx
    }

    /// Starts one ack task per tenant batch.
    fn flush(
        &self,
        acks: &mut HashMap<Arc<str>, Vec<Ack>>,
        moves: &mut JoinSet<()>,
        firsts: &mut Vec<oneshot::Receiver<()>>,
    ) {
        if acks.is_empty() {
            return;
        }
        crate::failpoint::hit("before_ack");
        for (tenant, ids) in acks.drain() {
            let me = self.clone();
            let (fast_first, checked_first) = (Self::first_try(firsts), Self::first_try(firsts));
            moves.spawn(async move { me.ack_batch(tenant, ids, fast_first, checked_first).await });
        }
    }

    /// Acks one tenant's completed entries: one call per kind of ack. Entries read so recently
    /// that no other member can have claimed them skip the owner check (see
    /// `fast_ack_window`). Recovered entries go first, so the script counts them.
    async fn ack_batch(
        &self,
        tenant: Arc<str>,
        mut ids: Vec<Ack>,
        fast_first: oneshot::Sender<()>,
        checked_first: oneshot::Sender<()>,
    ) {
        let member = &self.shared.member;
        let window = self.fast_ack_window;
        ids.sort_by_key(|a| !a.recovered);
        let (fast, checked): (Vec<&Ack>, Vec<&Ack>) = ids
            .iter()
            .partition(|a| a.read_at.is_some_and(|t| t.elapsed() < window));
        // The window must still hold when a retried call finally runs: once the oldest
        // fast entry's read is past it, the retry falls back to the owner-checked ack.
        let oldest = fast.iter().filter_map(|a| a.read_at).min();
        let fast_recovered = fast.iter().filter(|a| a.recovered).count();
        let checked_recovered = checked.iter().filter(|a| a.recovered).count();
        let with_steps = |acks: &[&Ack]| -> Vec<String> {
            acks.iter()
                .filter(|a| a.steps)
                .map(|a| a.entry_id.clone())
                .collect()
        };
        let (fast_steps, checked_steps) = (with_steps(&fast), with_steps(&checked));
        let fast_steps: Vec<&str> = fast_steps.iter().map(String::as_str).collect();
        let checked_steps: Vec<&str> = checked_steps.iter().map(String::as_str).collect();
        let tasks = &self.shared.tasks;
        let records = tasks.enabled;
        let (fast_entries, checked_entries) = (
            ack_entries(&fast, &tenant, tasks),
            ack_entries(&checked, &tenant, tasks),
        );
        let fast: Vec<&str> = fast.iter().map(|a| a.entry_id.as_str()).collect();
        let checked: Vec<&str> = checked.iter().map(|a| a.entry_id.as_str()).collect();
        let broker = &self.broker;
        let tenant_ref: &str = &tenant;
        let (a, b) = tokio::join!(
            self.with_retry_replicated(
                RedisOp::Ack,
                tenant_ref,
                fast.len() as u64,
                Some(fast_first),
                || async {
                    if oldest.is_some_and(|t| t.elapsed() < window) {
                        broker
                            .ack_unclaimable(
                                tenant_ref,
                                member,
                                &fast_entries,
                                fast_recovered,
                                &fast_steps,
                                records,
                            )
                            .await
                    } else {
                        broker
                            .ack(
                                tenant_ref,
                                member,
                                &fast_entries,
                                fast_recovered,
                                &fast_steps,
                                records,
                            )
                            .await
                            .map(|a| {
                                self.marked_done(tenant_ref, a.marked_done);
                                a.acked
                            })
                    }
                }
            ),
            self.with_retry_replicated(
                RedisOp::Ack,
                tenant_ref,
                checked.len() as u64,
                Some(checked_first),
                || async {
                    broker
                        .ack(
                            tenant_ref,
                            member,
                            &checked_entries,
                            checked_recovered,
                            &checked_steps,
                            records,
                        )
                        .await
                        .map(|a| {
                            self.marked_done(tenant_ref, a.marked_done);
                            a.acked
                        })
                }
            ),
        );
        crate::failpoint::hit("after_ack");
        // Each half on its own: one given up at shutdown does not hide what the other wrote.
        for (half, recovered, tried) in [(fast, fast_recovered, a), (checked, checked_recovered, b)]
        {
            if let Some(tried) = tried {
                self.acked(&tenant, &half, recovered as u64, tried);
            }
        }
        // Released even when the ack was abandoned at shutdown: the entries stay pending
        // in Redis and are redelivered, so nothing is lost.
        self.shared
            .release(&tenant, ids.iter().map(|a| a.entry_id.as_str()));
    }

    /// Counts what one ack call of `ids` (the first `recovered` of them recovered) answered.
    fn acked(&self, tenant: &Arc<str>, ids: &[&str], recovered: u64, tried: Tried<u64>) {
        if ids.is_empty() {
            return;
        }
        let acked = tried.value.min(ids.len() as u64);
        if let Some(observer) = &self.shared.ack_observer {
            observer.acked(tenant, ids);
        }
        if self.shared.tasks.enabled && acked > 0 {
            events::records::written(tenant, TaskState::Done.as_str(), acked);
        }
        let missing = ids.len() as u64 - acked;
        // Recovered counts only when every ack of the call went through, which is the normal
        // case; a missing ack is counted below.
        let recovered = if missing == 0 { recovered } else { 0 };
        events::settle::tasks_completed(tenant, acked, recovered);
        let how = NotPending::judge(tried.earlier_may_have_run);
        self.not_pending(tenant, missing, how);
        if missing > 0 {
            match how {
                NotPending::Lost => events::settle::acks_lost(tenant, missing),
                NotPending::ReplyLost => events::settle::acks_reply_lost(tenant, missing),
            }
        }
        self.shared.stats.with(tenant, |t| {
            t.completed += acked;
            t.recovered += recovered;
        });
    }

    /// Counts `n` entries an ack found no longer ours but still running under their task's
    /// record on the same entry: marked done for their new owner to ack as duplicates.
    fn marked_done(&self, tenant: &str, n: u64) {
        if n > 0 {
            tracing::info!(tenant = %tenant, entries = n, "completed entries taken over by another member meanwhile: their records say done, so their new owner acks them without running them again");
            events::records::written(tenant, TaskState::Done.as_str(), n);
        }
    }

    /// Counts `n` entries a settle found no longer pending for this member.
    fn not_pending(&self, tenant: &str, n: u64, how: NotPending) {
        if n == 0 {
            return;
        }
        match how {
            NotPending::Lost => {
                events::settle::settle_lost(tenant, n);
                self.shared.stats.with(tenant, |t| t.settle_lost += n);
            }
            NotPending::ReplyLost => {
                events::settle::settle_reply_lost(tenant, n);
                self.shared.stats.with(tenant, |t| t.settle_reply_lost += n);
            }
        }
    }

    /// Retries a Redis call about `entries` entries with backoff until it succeeds or shutdown
    /// has run past its grace; `first` is told when the first try has answered. A refusal for
    /// memory (Redis over `maxmemory`) is not logged per try: the member's health logs the
    /// episode once, with what waits. The answer says whether an earlier try may have run
    /// (its reply was lost), so that what the answering try found already settled is not
    /// taken for another member's doing.
    async fn with_retry<T, F, Fut>(
        &self,
        what: RedisOp,
        entries: u64,
        mut first: Option<oneshot::Sender<()>>,
        mut call: F,
    ) -> Option<Tried<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let health = &self.shared.health;
        let mut delay = Duration::from_millis(50);
        let mut waiting = false;
        let mut earlier_may_have_run = false;
        loop {
            let sent = Instant::now();
            let result = call().await;
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            match result {
                Ok(value) => {
                    if waiting {
                        health.settle_waiting(what.as_str(), entries, false);
                    }
                    return Some(Tried {
                        value,
                        earlier_may_have_run,
                    });
                }
                Err(e) => {
                    events::redis_calls::failed(what);
                    earlier_may_have_run |= may_have_run(&e);
                    let oom = is_oom(&e);
                    if oom {
                        if !waiting {
                            waiting = true;
                            health.settle_waiting(what.as_str(), entries, true);
                        }
                        health.redis_refused(what.as_str(), sent);
                    }
                    if self.shared.past_hard_deadline() {
                        if waiting {
                            health.settle_waiting(what.as_str(), entries, false);
                        }
                        events::settle::redis_gave_up(what, &e);
                        return None;
                    }
                    if !oom {
                        events::settle::redis_retrying(what, &e, delay);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// [`Settler::with_retry`] of a settle write of `tenant`'s keys, then, with
    /// `redis.wait_replicas` on, a `WAIT` on its node: a shortfall is counted
    /// (`redrive_redis_wait_short_total{what="settle"}`) and logged, never retried or failed
    /// (the write is in Redis; only a failover before the replicas catch up loses it).
    async fn with_retry_replicated<T, F, Fut>(
        &self,
        what: RedisOp,
        tenant: &str,
        entries: u64,
        first: Option<oneshot::Sender<()>>,
        call: F,
    ) -> Option<Tried<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let tried = self.with_retry(what, entries, first, call).await?;
        if let Some(r) = self.broker.wait_written(&[tenant]).await {
            if r.short() {
                events::replication::wait_short(
                    "settle",
                    &[tenant],
                    r.asked,
                    r.confirmed,
                    r.error.as_ref().map(|e| e.to_string()).as_deref(),
                );
            }
        }
        Some(tried)
    }

    /// Settles one entry set aside: each kind is one move of its own.
    async fn settle_other(&self, s: Aside) {
        match s {
            Aside::Tombstone { tenant, entry_id } => {
                events::settle::entry_gone_before_run(&tenant, &entry_id);
                let ids = [entry_id.as_str()];
                if self
                    .with_retry_replicated(RedisOp::AckTombstone, &tenant, 1, None, || {
                        self.broker.ack_only(&tenant, &ids)
                    })
                    .await
                    .is_some()
                {
                    self.shared.stats.with(&tenant, |t| t.tombstones += 1);
                }
                self.shared.release(&tenant, [entry_id.as_str()]);
            }
            Aside::Malformed {
                tenant,
                lane,
                entry_id,
                reason,
                fields,
            } => {
                let now = now_ms();
                let dl = DeadLetter {
                    orig_lane: lane,
                    orig_id: entry_id.clone(),
                    task: None,
                    raw: Some(fields),
                    class: FailureClass::MalformedEntry,
                    error: reason,
                    detail: None,
                    steps: Vec::new(),
                    failed_step: None,
                    partial_output: None,
                    member: self.shared.member.to_string(),
                    first_failed_at_ms: now,
                    dead_lettered_at_ms: now,
                };
                events::settle::malformed_set_aside(
                    &tenant,
                    &TaskLog::of_dead_letter(&tenant, &dl),
                    &entry_id,
                    &dl.error,
                    dl.fingerprint(),
                );
                let member = self.shared.member.clone();
                self.dead_letter(&tenant, &entry_id, dl, Some(&member), Duration::ZERO, None)
                    .await;
            }
            Aside::NotRun(n) => {
                let NotRun {
                    tenant,
                    entry_id,
                    task,
                    class,
                    error,
                    detail,
                    failed_step,
                } = *n;
                let now = now_ms();
                let task = (*task).clone();
                let dl = DeadLetter {
                    orig_lane: self.broker.keys().lane(&tenant),
                    orig_id: entry_id.clone(),
                    steps: task.steps.clone(),
                    failed_step,
                    first_failed_at_ms: crate::deadletter::first_failed_at(&task.history, now),
                    task: Some(task),
                    raw: None,
                    class,
                    error,
                    detail: Some(detail),
                    partial_output: None,
                    member: self.shared.member.to_string(),
                    dead_lettered_at_ms: now,
                };
                let member = self.shared.member.clone();
                self.dead_letter(&tenant, &entry_id, dl, Some(&member), Duration::ZERO, None)
                    .await;
            }
            Aside::Duplicate {
                tenant,
                entry_id,
                task_id,
            } => {
                let ids = [entry_id.as_str()];
                let member = &self.shared.member;
                if let Some(tried) = self
                    .with_retry_replicated(RedisOp::Ack, &tenant, 1, None, || {
                        self.broker.ack_duplicates(&tenant, member, &ids)
                    })
                    .await
                {
                    if tried.value == 1 {
                        events::records::member_duplicate(&tenant, &task_id, &entry_id);
                        self.shared.stats.with(&tenant, |t| t.duplicates += 1);
                    } else {
                        self.not_pending(&tenant, 1, NotPending::judge(tried.earlier_may_have_run));
                    }
                }
                self.shared.release(&tenant, [entry_id.as_str()]);
            }
            Aside::Lost { tenant, entry_id } => {
                events::settle::settle_lost(&tenant, 1);
                self.shared.stats.with(&tenant, |t| t.settle_lost += 1);
                self.shared.release(&tenant, [entry_id.as_str()]);
            }
            Aside::NotStarted { tenant, entry_id } => {
                // Logged by the executor; the Redis error is counted under op="start".
                self.shared.release(&tenant, [entry_id.as_str()]);
            }
            Aside::CrashLoop {
                tenant,
                entry_id,
                deliveries,
                owner,
                min_idle,
            } => {
                self.crash_loop(tenant, entry_id, deliveries, owner, min_idle)
                    .await
            }
        }
    }

    /// Counts and logs a failed attempt and turns its [`next_move`] into a batched retry or a
    /// dead letter.
    fn prepare_failed(&self, f: Failed) -> FailedMove {
        let Failed {
            ref tenant,
            ref task,
            deliveries,
            class,
            ref reason,
            poison,
            duration,
            ..
        } = f;
        let log = TaskLog::of(task);
        let fingerprint = Fingerprint::of_error(&task.kind, class, reason);
        let failure = events::settle::AttemptFailure {
            class,
            deliveries,
            duration,
            poison,
            reason,
            payload: self
                .log_payloads
                .then_some(&task.payload as &dyn std::fmt::Display),
            fingerprint,
        };
        events::settle::attempt_failed(tenant, &log, &failure);
        self.shared.stats.with(tenant, |t| t.failed_attempts += 1);
        let (tenant, entry_id) = (f.tenant.clone(), f.entry_id.clone());
        let member = self.shared.member.to_string();
        let inputs = MoveInputs {
            policies: &self.policies,
            now_ms: now_ms(),
            deadline_clock_ms: self.shared.isolation.now_ms(),
            jitter: fastrand::f64(),
            member: &member,
            orig_lane: self.broker.keys().lane(&tenant),
            max_deliveries: self.max_deliveries,
        };
        // The record's next attempt and error, taken before `next_move` consumes the attempt.
        let (task_id, next_attempt, started) =
            (f.task.task_id.clone(), f.task.attempt + 1, f.started_ms);
        let error = crate::deadletter::bounded(&f.reason, RECORD_ERROR_BYTES);
        match next_move(f, &inputs) {
            NextMove::Retry { item, class } => {
                let item = item.recorded(&task_id, next_attempt, class.as_str(), error, started);
                FailedMove::Retry(
                    tenant,
                    Box::new(Retry {
                        item,
                        log,
                        class,
                        fingerprint,
                    }),
                )
            }
            NextMove::DeadLetter(dl) => FailedMove::Dead(tenant, entry_id, dl, started),
        }
    }

    /// Schedules the collected retries: one atomic script per tenant, each its own task.
    fn flush_retries(
        &self,
        retries: &mut HashMap<Arc<str>, Vec<Retry>>,
        moves: &mut JoinSet<()>,
        firsts: &mut Vec<oneshot::Receiver<()>>,
    ) {
        if retries.is_empty() {
            return;
        }
        crate::failpoint::hit("before_retry");
        for (tenant, items) in retries.drain() {
            let me = self.clone();
            let first = Self::first_try(firsts);
            moves.spawn(async move { me.retry_batch(tenant, items, first).await });
        }
    }

    /// Schedules one tenant's retries in one atomic script.
    async fn retry_batch(&self, tenant: Arc<str>, items: Vec<Retry>, first: oneshot::Sender<()>) {
        let member = &self.shared.member;
        let tenant = &tenant;
        let result = {
            let items: Vec<RetryItem> = items.iter().map(|r| r.item.clone()).collect();
            let records = self.shared.tasks.enabled;
            self.with_retry_replicated(
                RedisOp::ScheduleRetry,
                tenant,
                items.len() as u64,
                Some(first),
                || {
                    self.broker
                        .schedule_retries(tenant, member, &items, records)
                },
            )
            .await
        };
        if let Some(tried) = result {
            if self.shared.tasks.enabled {
                let written = items
                    .iter()
                    .zip(&tried.value)
                    .filter(|(r, due)| due.is_some() && !r.item.task_id.is_empty())
                    .count() as u64;
                if written > 0 {
                    events::records::written(tenant, TaskState::RetryScheduled.as_str(), written);
                }
            }
            let how = NotPending::judge(tried.earlier_may_have_run);
            for (r, due) in items.iter().zip(tried.value) {
                match due {
                    Some(due) => {
                        events::settle::retry_scheduled(
                            tenant,
                            &r.log,
                            r.class,
                            r.fingerprint,
                            r.item.delay,
                            due,
                        );
                        self.shared.stats.with(tenant, |t| t.retried += 1);
                        // This member promotes what it scheduled when it is due.
                        self.shared.promote_wakes.due(tenant, r.item.delay);
                    }
                    None => {
                        self.not_pending(tenant, 1, how);
                        if how == NotPending::ReplyLost {
                            events::settle::retry_reply_lost(&r.log, &r.item.entry_id, r.class);
                        }
                    }
                }
            }
        }
        // Released even when abandoned at shutdown: the entries stay pending and are
        // redelivered, so nothing is lost.
        self.shared
            .release(tenant, items.iter().map(|r| r.item.entry_id.as_str()));
    }

    /// Moves the collected held-back entries to their tenants' retry schedules, unattempted:
    /// one atomic script per tenant, each its own task.
    fn flush_defers(
        &self,
        defers: &mut HashMap<Arc<str>, Vec<DeferItem>>,
        moves: &mut JoinSet<()>,
        firsts: &mut Vec<oneshot::Receiver<()>>,
    ) {
        for (tenant, items) in defers.drain() {
            let me = self.clone();
            let first = Self::first_try(firsts);
            moves.spawn(async move { me.defer_batch(tenant, items, first).await });
        }
    }

    /// Defers one tenant's held-back entries in one atomic script.
    async fn defer_batch(
        &self,
        tenant: Arc<str>,
        items: Vec<DeferItem>,
        first: oneshot::Sender<()>,
    ) {
        let member = &self.shared.member;
        let tenant = &tenant;
        let records = self.shared.tasks.enabled;
        let result = self
            .with_retry_replicated(
                RedisOp::Defer,
                tenant,
                items.len() as u64,
                Some(first),
                || self.broker.defer(tenant, member, &items, records),
            )
            .await;
        if let Some(tried) = result {
            let (mut deferred, mut lost, mut gone) = (0u64, 0u64, 0u64);
            for o in tried.value {
                match o {
                    Deferred::Due(_) => deferred += 1,
                    Deferred::NotOwned => lost += 1,
                    Deferred::Gone => gone += 1,
                }
            }
            if deferred > 0 {
                // Held until the breaker's cool-down (or its close, which the breakers' view
                // reports): this member promotes them then.
                if let Some(first) = items.iter().map(|d| d.delay).min() {
                    self.shared.promote_wakes.due(tenant, first);
                }
                events::settle::tasks_deferred(tenant, deferred);
                if records {
                    events::records::written(tenant, TaskState::Deferred.as_str(), deferred);
                }
            }
            let how = NotPending::judge(tried.earlier_may_have_run);
            self.not_pending(tenant, lost, how);
            if lost > 0 && how == NotPending::ReplyLost {
                events::settle::defers_reply_lost(tenant, lost);
            }
            if gone > 0 {
                events::settle::entries_gone_before_run(tenant, gone);
            }
            self.shared.stats.with(tenant, |t| {
                t.deferred += deferred;
                t.tombstones += gone;
            });
        }
        // Released even when abandoned at shutdown: the entries stay pending and are
        // redelivered, so nothing is lost.
        self.shared
            .release(tenant, items.iter().map(|d| d.entry_id.as_str()));
    }

    async fn crash_loop(
        &self,
        tenant: Arc<str>,
        entry_id: String,
        deliveries: u64,
        owner: Option<Arc<str>>,
        min_idle: Duration,
    ) {
        let entry = self
            .with_retry(RedisOp::ReadEntry, 1, None, || {
                self.broker.lane_entry(&tenant, &entry_id)
            })
            .await
            .map(|t| t.value);
        let Some(Some(entry)) = entry else {
            if entry.is_some() {
                // Deleted meanwhile: a tombstone, acked so it leaves the PEL.
                let ids = [entry_id.as_str()];
                let _ = self
                    .with_retry_replicated(RedisOp::AckTombstone, &tenant, 1, None, || {
                        self.broker.ack_only(&tenant, &ids)
                    })
                    .await;
                events::settle::entry_deleted_meanwhile(&tenant);
            }
            self.shared.release(&tenant, [entry_id.as_str()]);
            return;
        };
        let fields = entry.fields.unwrap_or_default();
        let (task, raw) = match Task::from_fields(&tenant, &entry_id, &fields, &self.shared.limits)
        {
            Ok(t) => (Some(t), None),
            Err(_) => (None, Some(fields)),
        };
        let now = now_ms();
        let dl = DeadLetter {
            orig_lane: self.broker.keys().lane(&tenant),
            orig_id: entry_id.clone(),
            steps: task.as_ref().map(|t| t.steps.clone()).unwrap_or_default(),
            // The steps recorded in Redis join the dead letter in dead_letter.lua; `dlq show`
            // names their open side-effecting step when this does not.
            failed_step: task
                .as_ref()
                .and_then(|t| t.steps.iter().find(|s| s.side_effect && !s.done))
                .map(|s| s.name.clone()),
            first_failed_at_ms: task.as_ref().map(|t| crate::deadletter::first_failed_at(&t.history, now)).unwrap_or(now),
            task,
            raw,
            class: FailureClass::CrashLoop,
            error: format!(
                "started {deliveries} times without ever settling: the task crashes or hangs the worker that runs it"
            ),
            detail: Some("reached reclaim.max_deliveries; not handed out again".into()),
            partial_output: None,
            member: self.shared.member.to_string(),
            dead_lettered_at_ms: now,
        };
        self.dead_letter(&tenant, &entry_id, dl, owner.as_deref(), min_idle, None)
            .await;
    }

    async fn dead_letter(
        &self,
        tenant: &Arc<str>,
        entry_id: &str,
        dl: DeadLetter,
        owner: Option<&str>,
        min_idle: Duration,
        started_ms: Option<u64>,
    ) {
        let fields = dl.to_fields();
        let records = self.shared.tasks.enabled;
        let task_id = dl.record_task_id();
        crate::failpoint::hit("before_dead_letter");
        let result = self
            .with_retry_replicated(RedisOp::DeadLetter, tenant, 1, None, || {
                self.broker.dead_letter(
                    tenant,
                    entry_id,
                    self.dlq_ceiling,
                    owner,
                    min_idle,
                    task_id.as_deref(),
                    records,
                    started_ms,
                    &fields,
                )
            })
            .await;
        if let Some(tried) = result {
            let r = tried.value;
            if r.moved {
                if records && task_id.is_some() {
                    let state = if dl.class == FailureClass::Expired {
                        TaskState::Expired
                    } else {
                        TaskState::DeadLettered
                    };
                    events::records::written(tenant, state.as_str(), 1);
                }
                events::settle::dead_lettered(
                    tenant,
                    &TaskLog::of_dead_letter(tenant, &dl),
                    entry_id,
                    (dl.class, dl.fingerprint()),
                    &r.id,
                    dl.action().as_str(),
                );
                self.shared.stats.with(tenant, |t| {
                    *t.dead_lettered
                        .entry(dl.class.as_str().to_owned())
                        .or_default() += 1
                });
            } else {
                let how = NotPending::judge(tried.earlier_may_have_run);
                self.not_pending(tenant, 1, how);
                if how == NotPending::ReplyLost {
                    events::settle::dead_letter_reply_lost(
                        &TaskLog::of_dead_letter(tenant, &dl),
                        entry_id,
                        dl.class,
                        dl.action().as_str(),
                    );
                }
            }
            if r.trimmed > 0 {
                events::settle::dlq_trimmed(tenant, r.trimmed);
            }
        }
        self.shared.release(tenant, [entry_id]);
    }
}
