//! The admin loop: this member's share of the admin command stream.
//!
//! It beats into the live-members set (so CLIs know a fleet is there), reads commands through
//! the fleet's consumer group on `redrive:{@admin}:commands`, and runs each in its own task
//! through [`crate::admin::exec::run_command`], which makes every command id execute at most
//! once. At most `admin.concurrency` run at once and as many more wait for a slot; a `cancel`
//! needs no slot, so it reaches a replay job even when long replays fill every slot. While a command runs, the beat keeps its
//! stream entry fresh; a command left pending by a member that died is taken over by another
//! after `admin.claim_idle_ms` and resumed (a replay job continues from what is left). A
//! command that kills its member `admin.max_deliveries` times is failed instead.
//!
//! On shutdown it stops reading, asks running replays to stop after their current step (they
//! stay pending and resume on restart or elsewhere), waits for the rest up to the grace, and
//! leaves the live set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::admin::exec::{run_command, AdminContext, Ran};
use crate::admin::scope::Touches;
use crate::admin::{CommandResult, Envelope};
use crate::broker::{is_missing_group, Begin, Entry, Fields, FinishMode, LaneReader, ReadFrom};
use crate::error::Error;
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// Running commands: stream entry → command id.
type Running = Arc<Mutex<HashMap<String, String>>>;

/// What the command tasks share: who runs what, the stop signal for long jobs, and the slots
/// that bound how many commands run at once. A cancel takes no slot, so it gets through while
/// long replays fill them all.
#[derive(Clone)]
struct Ctl {
    running: Running,
    stop: Shutdown,
    slots: Arc<Semaphore>,
}

/// The admin loop's settings, handles and state.
pub(crate) struct AdminLoop {
    ctx: AdminContext,
    block: Duration,
    grace: Duration,
    /// Running commands, the stop signal for long jobs and the slots.
    ctl: Ctl,
    /// The command tasks.
    tasks: JoinSet<()>,
    /// The reader's connection (`None` until opened, or after a read error).
    reader: Option<LaneReader>,
    /// Whether the command group is known to exist.
    group_ready: bool,
    /// Whether this member's own pending commands were taken up since the last read error.
    own_drained: bool,
    /// Where the scan for stale members' commands continues.
    cursor: String,
    next_beat: Instant,
    next_reclaim: Instant,
}

/// What one step of the admin loop did, for `run` to pace the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminStep {
    /// A read went out; this many commands were started (or queued for a slot).
    Read(usize),
    /// As many commands wait as run: wait for one to finish (or the next beat).
    Full,
    /// The command group could not be created: retry after a pause.
    NoGroup,
    /// The command reader could not be opened: retry after a pause.
    NoReader,
    /// The read failed: retry after a short pause (own pending commands are drained again).
    ReadFailed,
}

impl AdminLoop {
    /// An admin loop running commands with `ctx`, reading blocked at most `block`, giving
    /// running commands `grace` at shutdown.
    pub(crate) fn new(ctx: AdminContext, block: Duration, grace: Duration) -> AdminLoop {
        let slots = ctx.settings.concurrency;
        AdminLoop {
            ctx,
            block,
            grace,
            ctl: Ctl {
                running: Arc::default(),
                stop: Shutdown::new(),
                slots: Arc::new(Semaphore::new(slots)),
            },
            tasks: JoinSet::new(),
            reader: None,
            group_ready: false,
            own_drained: false,
            cursor: "0-0".to_owned(),
            next_beat: Instant::now(),
            next_reclaim: Instant::now(),
        }
    }

    fn member(&self) -> &str {
        &self.ctx.executor
    }

    /// Runs until `shutdown`, then stops in order (see the module doc).
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match self.step().await {
                AdminStep::Read(_) => {}
                AdminStep::Full => {
                    let next_beat = self.next_beat;
                    tokio::select! {
                        _ = shutdown.wait() => {}
                        _ = self.tasks.join_next() => {}
                        _ = tokio::time::sleep(next_beat.saturating_duration_since(Instant::now())) => {}
                    }
                }
                AdminStep::NoGroup | AdminStep::NoReader => {
                    self.pause(&shutdown, Duration::from_millis(500)).await
                }
                AdminStep::ReadFailed => self.pause(&shutdown, Duration::from_millis(200)).await,
            }
        }
        self.ctl.stop.trigger();
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, self.tasks.join_next()) => match r {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(abandoned = self.tasks.len(), "shutdown grace expired; abandoning admin commands, they stay pending and resume elsewhere");
                        self.tasks.abort_all();
                        while self.tasks.join_next().await.is_some() {}
                        break;
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(500)) => self.beat(&self.ctl.running).await,
            }
        }
        if let Err(e) = self.ctx.broker.admin_leave(self.member()).await {
            tracing::warn!(error = %e, "cannot leave the live-members set; the entry ages out");
        }
    }

    /// One beat (when due), take-over of pending commands (when due) and one read of new
    /// commands, each started in its own task. Never sleeps; the read blocks at most until
    /// the next beat is due.
    pub(crate) async fn step(&mut self) -> AdminStep {
        let s = &self.ctx.settings;
        // Commands read but waiting for a slot stay in this member's PEL and are kept fresh by
        // the beat; at most as many wait as run.
        let backlog = 2 * s.concurrency;
        let beat_every = s.member_ttl / 3;
        let reclaim_every = (s.claim_idle / 2).max(Duration::from_millis(100));
        while self.tasks.try_join_next().is_some() {}
        if Instant::now() >= self.next_beat {
            self.beat(&self.ctl.running).await;
            self.next_beat = Instant::now() + beat_every;
        }
        if !self.group_ready {
            match self.ctx.broker.admin_ensure_group().await {
                Ok(()) => self.group_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the admin command group; retrying");
                    return AdminStep::NoGroup;
                }
            }
        }
        if Instant::now() >= self.next_reclaim {
            let ctl = self.ctl.clone();
            let mut tasks = std::mem::take(&mut self.tasks);
            if !self.own_drained {
                self.own_drained = self.take_over_own(&mut tasks, &ctl).await;
            }
            let mut cursor = std::mem::take(&mut self.cursor);
            self.take_over_stale(&mut tasks, &ctl, &mut cursor).await;
            self.cursor = cursor;
            self.tasks = tasks;
            self.next_reclaim = Instant::now() + reclaim_every;
        }
        let free = backlog.saturating_sub(self.tasks.len());
        if free == 0 {
            return AdminStep::Full;
        }
        if self.reader.is_none() {
            match self.ctx.broker.reader(self.member(), self.block).await {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the admin command reader; retrying");
                    return AdminStep::NoReader;
                }
            }
        }
        let Some(mut r) = self.reader.take() else {
            return AdminStep::NoReader;
        };
        // Blocks at most until the next beat is due; never cancelled mid-read, so a
        // delivered command is never dropped on the floor.
        let block = self
            .block
            .min(self.next_beat.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(10));
        let stream = vec![self.ctx.broker.keys().admin_commands()];
        match r.read(&stream, ReadFrom::New, free, Some(block)).await {
            Ok(streams) => {
                self.reader = Some(r);
                let ctl = self.ctl.clone();
                let mut tasks = std::mem::take(&mut self.tasks);
                let mut started = 0;
                for (_, entries) in streams {
                    for entry in entries {
                        self.spawn(&mut tasks, &ctl, entry);
                        started += 1;
                    }
                }
                self.tasks = tasks;
                AdminStep::Read(started)
            }
            Err(e) if is_missing_group(&e) => {
                self.reader = Some(r);
                self.group_ready = false;
                AdminStep::Read(0)
            }
            Err(e) => {
                events::admin::read_failed(&e);
                // An entry delivered to a lost reply is pending here: drain our own again.
                self.own_drained = false;
                self.next_reclaim = Instant::now();
                AdminStep::ReadFailed
            }
        }
    }

    async fn pause(&self, shutdown: &Shutdown, d: Duration) {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// Says this member is alive and keeps its running commands fresh.
    async fn beat(&self, running: &Running) {
        let list: Vec<(String, String)> = running
            .lock()
            .map(|r| r.iter().map(|(e, c)| (c.clone(), e.clone())).collect())
            .unwrap_or_default();
        match self
            .ctx
            .broker
            .admin_beat(Some(self.member()), self.ctx.settings.member_ttl, &list)
            .await
        {
            Ok(lost) if !lost.is_empty() => {
                tracing::warn!(entries = ?lost, "admin commands were taken over by another member (this one was too slow to beat); the first to finish records the result");
            }
            Ok(_) => {}
            Err(e) => {
                events::admin::beat_failed(&e);
            }
        }
    }

    fn skip(running: &Running) -> Vec<String> {
        running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes up this member's own pending commands (after a restart). Returns whether the
    /// drain completed.
    async fn take_over_own(&self, tasks: &mut JoinSet<()>, ctl: &Ctl) -> bool {
        let b = &self.ctx.broker;
        let mut start = "-".to_owned();
        loop {
            let step = match b
                .admin_claim_own(
                    self.member(),
                    &start,
                    100,
                    self.ctx.settings.max_deliveries,
                    &Self::skip(&ctl.running),
                )
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "draining own admin commands failed; retrying later");
                    return false;
                }
            };
            self.start_claimed(tasks, ctl, step.claimed, step.poison)
                .await;
            match step.next {
                Some(n) => start = n,
                None => return true,
            }
        }
    }

    /// Takes over commands left pending by members that stopped beating.
    async fn take_over_stale(&self, tasks: &mut JoinSet<()>, ctl: &Ctl, cursor: &mut String) {
        let b = &self.ctx.broker;
        match b
            .admin_reclaim(
                self.member(),
                self.ctx.settings.claim_idle,
                cursor,
                100,
                self.ctx.settings.max_deliveries,
                &Self::skip(&ctl.running),
            )
            .await
        {
            Ok(step) => {
                if !step.claimed.is_empty() || !step.poison.is_empty() {
                    tracing::info!(
                        claimed = step.claimed.len(),
                        poison = step.poison.len(),
                        "took over admin commands of a silent member"
                    );
                }
                *cursor = step.next.clone().unwrap_or_else(|| "0-0".into());
                self.start_claimed(tasks, ctl, step.claimed, step.poison)
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "reclaiming admin commands failed"),
        }
    }

    async fn start_claimed(
        &self,
        tasks: &mut JoinSet<()>,
        ctl: &Ctl,
        claimed: Vec<(String, u64)>,
        poison: Vec<(String, u64)>,
    ) {
        let b = &self.ctx.broker;
        let poison_ids: Vec<(String, u64, bool)> =
            poison.into_iter().map(|(id, n)| (id, n, true)).collect();
        for (id, deliveries, is_poison) in claimed
            .into_iter()
            .map(|(id, n)| (id, n, false))
            .chain(poison_ids)
        {
            match b.admin_redeliver(self.member(), &id).await {
                Ok(Begin::Run(fields)) => {
                    let entry = Entry {
                        id,
                        fields: Some(fields),
                    };
                    if is_poison {
                        self.fail_poison(entry, deliveries).await;
                    } else {
                        self.spawn(tasks, ctl, entry);
                    }
                }
                // The admin stream has no task records: never a duplicate.
                Ok(Begin::Tombstone) | Ok(Begin::Lost) | Ok(Begin::Duplicate(_)) => {}
                Err(e) => {
                    tracing::warn!(entry = %id, error = %e, "cannot take up an admin command")
                }
            }
        }
    }

    /// Fails a command that crashed its member again and again.
    async fn fail_poison(&self, entry: Entry, deliveries: u64) {
        let ctx = &self.ctx;
        let fields = entry.fields.clone().unwrap_or_default();
        let Ok(env) = Envelope::from_fields(&fields) else {
            self.unreadable(&entry.id, &fields).await;
            return;
        };
        let message = format!(
            "command {} was delivered {deliveries} times without finishing: it crashes or stalls the \
             member that runs it, so it is not handed out again (admin.max_deliveries)",
            env.id
        );
        tracing::error!(command_id = %env.id, deliveries, "{message}");
        let scope =
            crate::admin::scope::touches(&ctx.broker, &env.command, &mut Default::default())
                .await
                .unwrap_or(Touches::All)
                .to_json();
        let begun = ctx
            .broker
            .admin_begin(
                &env.id,
                &entry.id,
                self.member(),
                0,
                ctx.settings.record_ttl,
                &scope,
            )
            .await;
        if let Ok(crate::broker::BeginCommand::Run(started)) = begun {
            let r = CommandResult::new(
                &env,
                self.member(),
                started,
                Err(Error::Remote { code: 70, message }),
                Value::Null,
            );
            finish(ctx, &env, &entry.id, &r, &scope).await;
        } else if let Err(e) = begun {
            // Redis failed: leave the entry pending so a later pass records it, instead of
            // acking a command nobody answered.
            tracing::warn!(command_id = %env.id, error = %e, "cannot record a crash-looping command yet; it stays pending");
        } else {
            let _ = ctx
                .broker
                .admin_finish(
                    &env.id,
                    &entry.id,
                    FinishMode::Ack,
                    ctx.settings.record_ttl,
                    ctx.settings.audit_max_len,
                    &[],
                )
                .await;
        }
    }

    /// Settles an entry that is no admin command at all, leaving a note in the audit trail.
    async fn unreadable(&self, entry_id: &str, fields: &Fields) {
        let ctx = &self.ctx;
        let why = match Envelope::from_fields(fields) {
            Err((_, why)) => why,
            Ok(_) => return,
        };
        events::admin::command_unreadable(entry_id, &why);
        let _ = ctx
            .broker
            .admin_finish(
                "unreadable",
                entry_id,
                FinishMode::Note,
                ctx.settings.record_ttl,
                ctx.settings.audit_max_len,
                &[
                    ("command", "unknown".into()),
                    ("entry", entry_id.to_owned()),
                    ("executor", self.member().to_owned()),
                    ("outcome", "invalid".into()),
                    ("message", format!("unreadable admin command entry: {why}")),
                ],
            )
            .await;
    }

    fn spawn(&self, tasks: &mut JoinSet<()>, ctl: &Ctl, entry: Entry) {
        let Some(fields) = entry.fields.clone() else {
            // Deleted while pending: nothing to run; settle the id.
            let ctx = self.ctx.clone();
            tasks.spawn(async move {
                let _ = ctx
                    .broker
                    .admin_finish(
                        "tombstone",
                        &entry.id,
                        FinishMode::Ack,
                        ctx.settings.record_ttl,
                        ctx.settings.audit_max_len,
                        &[],
                    )
                    .await;
            });
            return;
        };
        let env = match Envelope::from_fields(&fields) {
            Ok(env) => env,
            Err((Some(id), why)) => {
                let ctx = self.ctx.clone();
                let member = self.member().to_owned();
                tasks.spawn(async move { invalid(&ctx, &member, &entry.id, &id, why).await });
                return;
            }
            Err((None, _)) => {
                let me = AdminLoop::new(self.ctx.clone(), self.block, self.grace);
                tasks.spawn(async move { me.unreadable(&entry.id, &fields).await });
                return;
            }
        };
        if let Ok(mut r) = ctl.running.lock() {
            r.insert(entry.id.clone(), env.id.clone());
        }
        let ctx = self.ctx.clone();
        let ctl = ctl.clone();
        let running = ctl.running.clone();
        tasks.spawn(async move {
            let _slot = if matches!(env.command, crate::admin::AdminCommand::Cancel(_)) {
                None
            } else {
                tokio::select! {
                    p = ctl.slots.clone().acquire_owned() => p.ok(),
                    // Stopping before it started: it stays pending and runs after a restart
                    // or on another member.
                    _ = ctl.stop.wait() => {
                        if let Ok(mut r) = running.lock() {
                            r.remove(&entry.id);
                        }
                        return;
                    }
                }
            };
            match run_command(&ctx, &env, &entry.id, &ctl.stop).await {
                Ok(Ran::ElsewhereRunning(m)) => {
                    tracing::info!(command_id = %env.id, running_on = %m, "admin command id sent twice; the first copy runs")
                }
                Ok(_) => {}
                Err(e) => {
                    // Still pending here: retried after a restart or by another member.
                    events::admin::command_failed(&env.id, &e);
                }
            }
            if let Ok(mut r) = running.lock() {
                r.remove(&entry.id);
            }
        });
    }
}

/// Records a command whose id is readable but whose content is not, so its CLI gets an answer.
async fn invalid(ctx: &AdminContext, member: &str, entry_id: &str, command_id: &str, why: String) {
    let env = Envelope {
        id: command_id.to_owned(),
        operator: "?".into(),
        reason: "?".into(),
        issued_at_ms: 0,
        deadline_ms: 0,
        command: crate::admin::AdminCommand::Cancel(crate::admin::CancelSpec { job: "-".into() }),
    };
    // What an unreadable command touches cannot be told: every tenant, which no
    // tenant-scoped token sees.
    let scope = Touches::All.to_json();
    let started = match ctx
        .broker
        .admin_begin(
            command_id,
            entry_id,
            member,
            0,
            ctx.settings.record_ttl,
            &scope,
        )
        .await
    {
        Ok(crate::broker::BeginCommand::Run(t)) => t,
        Err(e) => {
            // Redis failed: the entry stays pending and is answered on a later pass.
            tracing::warn!(command_id, error = %e, "cannot record an unreadable command yet; it stays pending");
            return;
        }
        _ => {
            let _ = ctx
                .broker
                .admin_finish(
                    command_id,
                    entry_id,
                    FinishMode::Ack,
                    ctx.settings.record_ttl,
                    ctx.settings.audit_max_len,
                    &[],
                )
                .await;
            return;
        }
    };
    let mut r = CommandResult::new(
        &env,
        member,
        started,
        Err(Error::Usage(format!("the command cannot be read: {why}"))),
        Value::Null,
    );
    r.command = "unknown".into();
    tracing::warn!(command_id, error = %why, "unreadable admin command");
    finish(ctx, &env, entry_id, &r, &scope).await;
}

/// Records the failure `r` of a command that did not run, with the tenants it touches
/// (`scope`), in its record and the audit trail.
async fn finish(
    ctx: &AdminContext,
    env: &Envelope,
    entry_id: &str,
    r: &CommandResult,
    scope: &str,
) {
    let json = serde_json::to_string(r).unwrap_or_default();
    let audit = vec![
        (crate::admin::scope::FIELD, scope.to_owned()),
        ("command_id", env.id.clone()),
        ("command", r.command.clone()),
        ("operator", env.operator.clone()),
        ("reason", env.reason.clone()),
        ("executor", r.member.clone()),
        ("entry", entry_id.to_owned()),
        ("outcome", r.outcome.clone()),
        ("exit_code", r.exit_code.to_string()),
        ("message", r.message.clone()),
    ];
    events::admin::command_finished(&r.command, &r.outcome);
    if let Err(e) = ctx
        .broker
        .admin_finish(
            &env.id,
            entry_id,
            FinishMode::Result(&json),
            ctx.settings.record_ttl,
            ctx.settings.audit_max_len,
            &audit,
        )
        .await
    {
        tracing::warn!(command_id = %env.id, error = %e, "cannot record an admin command's failure");
    }
}
