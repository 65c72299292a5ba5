//! The sending side of the admin command stream, shared by the CLI and the HTTP API: is a
//! fleet member alive, send the command, wait for its result (the CLI showing a replay's
//! progress), withdraw it when nobody picks it up in time, or run it in this process with
//! `--local` (CLI only).
//!
//! Fleet-down detection: every member's admin loop beats into `redrive:{@admin}:members` (a
//! ZSET scored by the server's clock) every third of `admin.member_ttl_ms`; a member counts as
//! live when its last beat is younger than that. A cleanly stopped member removes itself at
//! once, a killed one ages out within the TTL. It is one read, and it proves exactly what the
//! command needs: a process whose admin loop is running.

use std::time::{Duration, Instant};

use crate::admin::exec::{run_command, stored, AdminContext, Ran};
use crate::admin::replay::job::JobRecord;
use crate::admin::{AdminCommand, CancelSpec, CommandResult, Envelope};
use crate::broker::{Broker, Withdraw};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// How often the CLI looks at the command's record.
const POLL: Duration = Duration::from_millis(100);
/// How often a replay's progress line is printed at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The admin context of a command sent or executed from this process: the settings' `[admin]`,
/// limits, dead-letter cap and records, executed as `local@<host>` (with `--local`).
pub fn context(broker: Broker, settings: &Settings) -> AdminContext {
    AdminContext {
        broker,
        settings: settings.admin.clone(),
        limits: settings.limits,
        dlq_ceiling: settings.retention.hard_max_len,
        executor: format!("local@{}", crate::config::default_member_id()),
        tasks: settings.tasks().clone(),
        archive: settings.archive.clone(),
    }
}

/// Fails with a clear message unless a fleet member's admin loop is alive; returns the live
/// members.
pub async fn require_fleet(ctx: &AdminContext) -> Result<Vec<String>> {
    let live = ctx
        .broker
        .admin_live_members(ctx.settings.member_ttl)
        .await?;
    if live.is_empty() {
        return Err(Error::FleetDown(format!(
            "no fleet member is running: none has shown a sign of life in the last {} ms \
             (admin.member_ttl_ms), so nobody would execute this command. Start one with \
             `redrive run`, or run the command in this process with --local. Nothing was changed.",
            ctx.settings.member_ttl.as_millis()
        )));
    }
    Ok(live)
}

/// The job a command's progress is read from, if it is a replay.
fn job_of(env: &Envelope) -> Option<String> {
    match &env.command {
        AdminCommand::Replay(r) => Some(r.resume.clone().unwrap_or_else(|| env.id.clone())),
        _ => None,
    }
}

/// Prints a replay job's progress to stderr when it changed, at most once a second.
struct Progress {
    job: Option<String>,
    last: String,
    at: Instant,
    enabled: bool,
}

impl Progress {
    fn new(job: Option<String>, enabled: bool) -> Progress {
        Progress {
            job,
            last: String::new(),
            at: Instant::now() - PROGRESS_EVERY,
            enabled,
        }
    }

    async fn show(&mut self, ctx: &AdminContext) {
        let (Some(job), true) = (&self.job, self.enabled) else {
            return;
        };
        if self.at.elapsed() < PROGRESS_EVERY {
            return;
        }
        // The pace starts at the first record seen: until the job exists, every poll looks.
        let Ok(Some(j)) = ctx.broker.job_get(job).await else {
            return;
        };
        self.at = Instant::now();
        let j = JobRecord::from_fields(&j);
        let line = format!(
            "replay job {job}: {} replayed of {} selected ({} already gone, {} refused, {} invalid) on {}",
            j.counts.replayed,
            j.selected,
            j.counts.skipped,
            j.counts.refused,
            j.counts.invalid,
            j.member.as_deref().unwrap_or("?")
        );
        if line != self.last {
            eprintln!("{line}");
            self.last = line;
        }
    }
}

/// Sends `env` to the fleet (or runs it here with `local`) and waits for its result. A command
/// id that was executed before returns its first result. Ctrl-C during a replay cancels the job
/// (it can be resumed); during another command it stops waiting only.
pub async fn submit_and_wait(
    ctx: &AdminContext,
    env: &Envelope,
    local: bool,
    timeout: Duration,
) -> Result<CommandResult> {
    let b = &ctx.broker;
    // Progress lines go to stderr, so they never mix with --json output on stdout.
    let progress = true;
    // A re-sent command id: its record tells what happened.
    if let Some(rec) = b.admin_record(&env.id).await? {
        match rec.get("state").map(String::as_str) {
            Some("done") => {
                if let Some(r) = stored(b, &env.id).await? {
                    eprintln!(
                        "command {} ran already (on {}); its first result follows, nothing was executed again",
                        env.id, r.member
                    );
                    return Ok(r);
                }
            }
            Some("expired") => {
                return Err(Error::Timeout(format!(
                    "command {} expired before any member started it and will never run; send it again with a new command id",
                    env.id
                )))
            }
            _ => {
                eprintln!("command {} is running already; waiting for it", env.id);
                return wait(ctx, env, timeout, Progress::new(job_of(env), progress)).await;
            }
        }
    }
    if local {
        return run_local(ctx, env, timeout, progress).await;
    }
    let live = send(ctx, env).await?;
    if progress {
        eprintln!(
            "sent command {} ({}); live members: {}",
            env.id,
            env.command.name(),
            live.join(", ")
        );
    }
    wait(ctx, env, timeout, Progress::new(job_of(env), progress)).await
}

/// Sends `env` to the fleet: refuses with [`Error::FleetDown`] (nothing sent) when no member's
/// admin loop is alive, else appends it to the admin stream. Returns the live members.
pub async fn send(ctx: &AdminContext, env: &Envelope) -> Result<Vec<String>> {
    let live = require_fleet(ctx).await?;
    ctx.broker.admin_submit(&env.to_fields()).await?;
    Ok(live)
}

/// Waits for the result of a command already sent, printing nothing and ignoring Ctrl-C (the
/// HTTP API's wait): the same steps and time-outs as the CLI's (a command nobody picked up
/// within `timeout` is withdrawn and never runs).
pub async fn wait_quietly(
    ctx: &AdminContext,
    env: &Envelope,
    timeout: Duration,
) -> Result<CommandResult> {
    let mut waiter = Waiter::new(ctx, env, timeout, Progress::new(None, false));
    loop {
        tokio::time::sleep(POLL).await;
        if let Some(result) = waiter.step().await? {
            return Ok(result);
        }
    }
}

/// Runs the command in this process, with the same records and audit as a fleet member.
async fn run_local(
    ctx: &AdminContext,
    env: &Envelope,
    timeout: Duration,
    progress: bool,
) -> Result<CommandResult> {
    let entry = format!("local:{}-{:08x}", std::process::id(), fastrand::u32(..));
    let stop = Shutdown::new();
    // Keep the record's alive_at fresh (as a member's beat would), and turn Ctrl-C into a
    // cancel request for a replay job.
    let beat = {
        let ctx = ctx.clone();
        let running = vec![(env.id.clone(), entry.clone())];
        let job = job_of(env);
        let id = env.id.clone();
        tokio::spawn(async move {
            let period = ctx.settings.member_ttl / 3;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {
                        let _ = ctx.broker.admin_beat(None, ctx.settings.member_ttl, &running).await;
                    }
                    _ = tokio::signal::ctrl_c() => {
                        if let Some(job) = &job {
                            eprintln!("cancelling replay job {job} after its current step…");
                            let _ = ctx.broker.job_cancel(job, &format!("{id}-ctrl-c")).await;
                        }
                    }
                }
            }
        })
    };
    let mut prog = Progress::new(job_of(env), progress);
    let ran = {
        let run = run_command(ctx, env, &entry, &stop);
        tokio::pin!(run);
        loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(PROGRESS_EVERY) => prog.show(ctx).await,
            }
        }
    };
    beat.abort();
    match ran? {
        Ran::Result(r) => Ok(r),
        Ran::ElsewhereRunning(member) => {
            eprintln!(
                "command {} is being executed by {member}; waiting for it",
                env.id
            );
            wait(ctx, env, timeout, prog).await
        }
        Ran::Expired => Err(Error::Timeout(format!(
            "command {} expired before it started; it never ran",
            env.id
        ))),
        Ran::Interrupted => Err(Error::Interrupted(format!(
            "command {} was interrupted; run it again with --command-id {} to resume",
            env.id, env.id
        ))),
    }
}

/// Waits for the command's record to hold a result. Gives up (withdrawing the command when no
/// member has started it) after `timeout` without a pickup or without a sign of life.
async fn wait(
    ctx: &AdminContext,
    env: &Envelope,
    timeout: Duration,
    prog: Progress,
) -> Result<CommandResult> {
    Waiter::new(ctx, env, timeout, prog).run().await
}

/// The CLI's wait for a command's result, in the fleet's loop shape: `run` paces it and
/// handles Ctrl-C (the first cancels a replay job, the second stops waiting), `step` looks at
/// the command's record once.
struct Waiter<'a> {
    ctx: &'a AdminContext,
    env: &'a Envelope,
    timeout: Duration,
    prog: Progress,
    since: Instant,
    last_alive: String,
    alive_seen: Instant,
    cancelled: bool,
}

impl<'a> Waiter<'a> {
    fn new(
        ctx: &'a AdminContext,
        env: &'a Envelope,
        timeout: Duration,
        prog: Progress,
    ) -> Waiter<'a> {
        Waiter {
            ctx,
            env,
            timeout,
            prog,
            since: Instant::now(),
            last_alive: String::new(),
            alive_seen: Instant::now(),
            cancelled: false,
        }
    }

    /// Polls until the command has a result, or the wait ends in an error.
    async fn run(mut self) -> Result<CommandResult> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut ctrl_c => {
                    self.interrupted().await?;
                    // A second Ctrl-C stops waiting.
                    ctrl_c.set(tokio::signal::ctrl_c());
                }
            }
            if let Some(result) = self.step().await? {
                return Ok(result);
            }
        }
    }

    /// Ctrl-C: the first one cancels a replay job (it can be resumed); otherwise, or the second
    /// time, stop waiting.
    async fn interrupted(&mut self) -> Result<()> {
        let (b, env) = (&self.ctx.broker, self.env);
        let job = job_of(env);
        if self.cancelled || job.is_none() {
            return Err(Error::Interrupted(format!(
                "stopped waiting; command {} goes on{} — see `redrive admin status {}`",
                env.id,
                if self.cancelled {
                    " until its cancel takes effect"
                } else {
                    ""
                },
                env.id
            )));
        }
        self.cancelled = true;
        if let Some(job) = job {
            eprintln!("cancelling replay job {job} after its current step (Ctrl-C again to stop waiting)…");
            let cancel = Envelope {
                id: crate::admin::new_command_id(),
                operator: env.operator.clone(),
                reason: format!("Ctrl-C while waiting for command {}", env.id),
                issued_at_ms: b.server_time_ms().await?,
                deadline_ms: 0,
                command: AdminCommand::Cancel(CancelSpec { job }),
            };
            b.admin_submit(&cancel.to_fields()).await?;
        }
        Ok(())
    }

    /// One look at the command's record: its result when done; an error when it expired, when a
    /// started command shows no sign of life for `timeout`, or when no member picked it up
    /// within `timeout` (then it is withdrawn and never runs); `None` to look again.
    async fn step(&mut self) -> Result<Option<CommandResult>> {
        let (b, env, timeout) = (&self.ctx.broker, self.env, self.timeout);
        let rec = b.admin_record(&env.id).await?;
        let state = rec
            .as_ref()
            .and_then(|r| r.get("state"))
            .map(String::as_str);
        match state {
            Some("done") => stored(b, &env.id).await,
            Some("expired") => Err(Error::Timeout(format!(
                "command {} expired before any member started it; it never ran and nothing changed",
                env.id
            ))),
            Some(_) => {
                self.prog.show(self.ctx).await;
                let alive = rec
                    .as_ref()
                    .and_then(|r| r.get("alive_at"))
                    .cloned()
                    .unwrap_or_default();
                if alive != self.last_alive {
                    self.last_alive = alive;
                    self.alive_seen = Instant::now();
                } else if self.alive_seen.elapsed() >= timeout {
                    let member = rec
                        .as_ref()
                        .and_then(|r| r.get("member"))
                        .cloned()
                        .unwrap_or_default();
                    return Err(Error::Timeout(format!(
                        "command {} started on {member} but has shown no sign of life for {} ms; if that member \
                         died, another takes the command over after admin.claim_idle_ms and resumes it — see \
                         `redrive admin status {}`",
                        env.id,
                        timeout.as_millis(),
                        env.id
                    )));
                }
                Ok(None)
            }
            None => {
                if self.since.elapsed() < timeout {
                    return Ok(None);
                }
                match b.admin_withdraw(&env.id, self.ctx.settings.record_ttl).await? {
                    Withdraw::Withdrawn => Err(Error::Timeout(format!(
                        "no fleet member picked command {} up within {} ms; it was withdrawn \
                         and will never run, so nothing changed. Check the fleet (`redrive health`) \
                         or use --local",
                        env.id,
                        timeout.as_millis()
                    ))),
                    Withdraw::Found { .. } => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, Settings};
    use crate::embedded::RedisServer;

    /// The wait's step against a real Redis: before the timeout a command nobody picked up is
    /// looked at again; after it, the command is withdrawn and the wait ends saying so.
    #[tokio::test]
    async fn a_step_withdraws_a_command_nobody_picked_up_once_the_timeout_passed() {
        let redis = RedisServer::start().unwrap();
        let mut raw = RawConfig::defaults().unwrap();
        raw.redis.url = redis.url();
        let settings = Settings::from_raw(raw).unwrap();
        let broker = crate::broker::Broker::connect(&settings).await.unwrap();
        let ctx = context(broker, &settings);
        let env = Envelope {
            id: crate::admin::new_command_id(),
            operator: "tester".into(),
            reason: "step test".into(),
            issued_at_ms: 0,
            deadline_ms: 0,
            command: AdminCommand::Cancel(CancelSpec {
                job: "job-x".into(),
            }),
        };
        let mut waiter = Waiter::new(
            &ctx,
            &env,
            Duration::from_secs(3600),
            Progress::new(None, false),
        );
        assert!(
            waiter.step().await.unwrap().is_none(),
            "still within the timeout"
        );
        let mut waiter = Waiter::new(&ctx, &env, Duration::ZERO, Progress::new(None, false));
        let err = waiter.step().await.unwrap_err().to_string();
        assert!(err.contains("withdrawn") && err.contains(&env.id), "{err}");
    }
}
