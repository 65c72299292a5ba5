//! Executing admin commands: the code a fleet member's admin loop and a `--local` CLI share.
//!
//! [`run_command`] is the whole exactly-once protocol for one command: claim its execution on
//! the command's record (scripts/admin_begin.lua), execute it, then record the result, append
//! the audit entry and settle the stream entry in one script (scripts/admin_finish.lua). A
//! command id that ran already returns its first result; one past its deadline or withdrawn by
//! its CLI never runs.

use serde_json::Value;

pub use super::context::{AdminContext, Executed};
use super::mutate;
use super::{CommandResult, Envelope};
use crate::broker::{BeginCommand, Broker, FinishMode};
use crate::deadletter::bounded;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// Executes one command. Replays may run long; `stop` interrupts them between steps.
pub async fn execute(ctx: &AdminContext, env: &Envelope, stop: &Shutdown) -> Executed {
    use super::AdminCommand as C;
    let simple = match &env.command {
        C::Replay(spec) => return super::replay::runner::run(ctx, env, spec, stop).await,
        C::Resolve(spec) => mutate::remove(ctx, env, spec, "resolved").await,
        C::Discard(spec) => mutate::remove(ctx, env, spec, "discarded").await,
        C::Purge(spec) => mutate::purge(ctx, spec).await,
        C::Cancel(spec) => mutate::cancel(ctx, env, &spec.job).await,
        C::Breaker(spec) => mutate::breaker(ctx, env, spec).await,
        C::Restore(spec) => super::restore::restore(ctx, spec).await,
        C::Assign(spec) => super::triage::review(ctx, env, spec, "assign").await,
        C::Escalate(spec) => super::triage::review(ctx, env, spec, "escalate").await,
        C::Note(spec) => super::triage::review(ctx, env, spec, "note").await,
        C::Fold(spec) => super::triage::fold(ctx, env, spec).await,
    };
    match simple {
        Ok((message, details)) => Executed::finished(Ok(message), details),
        Err(e) => Executed::finished(Err(e), Value::Null),
    }
}

/// What [`run_command`] came to.
#[derive(Debug)]
pub enum Ran {
    /// The command's result: just executed, or stored by its first execution.
    Result(CommandResult),
    /// Another copy with the same command id is being executed by the member named.
    ElsewhereRunning(String),
    /// It was withdrawn or expired before it started; it never ran.
    Expired,
    /// The executor is shutting down mid-command; the command stays pending.
    Interrupted,
}

/// Runs one command exactly once: begin, execute, finish (see the module doc). `entry` is the
/// admin stream entry carrying it, or `local:…` for `--local`.
pub async fn run_command(
    ctx: &AdminContext,
    env: &Envelope,
    entry: &str,
    stop: &Shutdown,
) -> Result<Ran> {
    let b = &ctx.broker;
    let s = &ctx.settings;
    let name = env.command.name();
    // The scope comes from the command itself, whoever sent it; one that cannot be told (a
    // job record unreadable) touches every tenant, which no tenant-scoped token sees.
    let scope = super::scope::touches(b, &env.command, &mut Default::default())
        .await
        .unwrap_or(super::scope::Touches::All)
        .to_json();
    match b
        .admin_begin(
            &env.id,
            entry,
            &ctx.executor,
            env.deadline_ms,
            s.record_ttl,
            &scope,
        )
        .await?
    {
        BeginCommand::Run(started) => {
            let (result, details) = match execute(ctx, env, stop).await {
                Executed::Interrupted => {
                    tracing::info!(command_id = %env.id, command = name, "admin command interrupted by shutdown; it stays pending and resumes");
                    return Ok(Ran::Interrupted);
                }
                Executed::Finished(r, d) => (r, d),
            };
            let result = CommandResult::new(env, &ctx.executor, started, result, details);
            let json = serde_json::to_string(&result)
                .map_err(|e| Error::Protocol(format!("cannot encode a result: {e}")))?;
            let written = b
                .admin_finish(
                    &env.id,
                    entry,
                    FinishMode::Result(&json),
                    s.record_ttl,
                    s.audit_max_len,
                    &audit_fields(env, &result, entry, &scope),
                )
                .await?;
            if !written {
                // Another executor of the same entry finished first; its result stands.
                return Ok(match stored(b, &env.id).await? {
                    Some(r) => Ran::Result(r),
                    None => Ran::Result(result),
                });
            }
            events::admin::command_ran(
                &env.id,
                &env.operator,
                name,
                &result.outcome,
                &ctx.executor,
            );
            Ok(Ran::Result(result))
        }
        BeginCommand::Done(json) => {
            let r: CommandResult = serde_json::from_str(&json).map_err(|e| {
                Error::Protocol(format!(
                    "the stored result of {} is unreadable: {e}",
                    env.id
                ))
            })?;
            b.admin_finish(
                &env.id,
                entry,
                FinishMode::Ack,
                s.record_ttl,
                s.audit_max_len,
                &[],
            )
            .await?;
            events::admin::command_duplicate(&env.id, &env.operator, name);
            Ok(Ran::Result(r))
        }
        BeginCommand::Running(member) => {
            b.admin_finish(
                &env.id,
                entry,
                FinishMode::Ack,
                s.record_ttl,
                s.audit_max_len,
                &[],
            )
            .await?;
            Ok(Ran::ElsewhereRunning(member))
        }
        BeginCommand::Expired(_) => {
            let result = CommandResult::new(
                env,
                &ctx.executor,
                0,
                Err(Error::Timeout(format!(
                    "command {} was not started before its deadline (or its CLI gave up waiting); it never ran",
                    env.id
                ))),
                Value::Null,
            );
            b.admin_finish(
                &env.id,
                entry,
                FinishMode::Note,
                s.record_ttl,
                s.audit_max_len,
                &audit_fields(env, &result, entry, &scope),
            )
            .await?;
            events::admin::command_expired(&env.id, &env.operator, name);
            Ok(Ran::Expired)
        }
    }
}

/// The stored result of a command, if it finished.
pub async fn stored(b: &Broker, command_id: &str) -> Result<Option<CommandResult>> {
    let Some(rec) = b.admin_record(command_id).await? else {
        return Ok(None);
    };
    match rec.get("result").filter(|r| !r.is_empty()) {
        Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
            Error::Protocol(format!(
                "the stored result of {command_id} is unreadable: {e}"
            ))
        }),
        None => Ok(None),
    }
}

/// The audit entry of a command: who, when, what, why, outcome, and the tenants it touches
/// (`scope`, [`super::scope::FIELD`]). Payloads never appear here, but an operator's `--patch`
/// does (it is part of what was asked).
fn audit_fields(
    env: &Envelope,
    r: &CommandResult,
    entry: &str,
    scope: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (super::scope::FIELD, scope.to_owned()),
        ("command_id", env.id.clone()),
        ("command", r.command.clone()),
        ("operator", env.operator.clone()),
        ("reason", env.reason.clone()),
        ("issued_at", env.issued_at_ms.to_string()),
        ("executor", r.member.clone()),
        ("entry", entry.to_owned()),
        ("started_at", r.started_at_ms.to_string()),
        ("finished_at", r.finished_at_ms.to_string()),
        ("outcome", r.outcome.clone()),
        ("exit_code", r.exit_code.to_string()),
        ("message", bounded(&r.message, 2048)),
        (
            "args",
            bounded(
                &serde_json::to_string(&env.command).unwrap_or_default(),
                8192,
            ),
        ),
        ("details", bounded(&r.details.to_string(), 8192)),
    ]
}
