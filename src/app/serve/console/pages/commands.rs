//! `GET /commands/{id}`: one command — queued, running, done or expired — with a replay's
//! progress (refreshed live by the script from `GET /api/v1/commands/{id}`, the same
//! document; a resume shows the progress of the job it resumes), its result once done, the
//! cancel of a running replay and the resume of one a cancel or an error stopped. `POST
//! /commands/{id}/cancel` and `POST /commands/{id}/resume` send them for the job the command
//! runs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use serde_json::Value;

use crate::app::serve::auth::Role;
use crate::app::serve::console::form::Form;
use crate::app::serve::console::html::{
    age, count, csrf, json_block, respond, seg, shell, text, title, to_command, InPage, Nav,
    PageError, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::extract::PathArgs;
use crate::app::serve::routes::commands::{send_cancel, status_doc, CancelBody};
use crate::app::serve::routes::recovery::{send_replay, ReplayBody};
use crate::app::serve::state::AppState;
use crate::app::serve::submit::Sent;

/// A command's outcome as a badge.
pub fn outcome_badge(outcome: &str) -> Markup {
    let kind = match outcome {
        "ok" => "ok",
        "cancelled" | "expired" => "warn",
        _ => "bad",
    };
    html! { span class={ "badge " (kind) } { (outcome) } }
}

/// A command's state as a badge.
fn state_badge(state: &str) -> Markup {
    let kind = match state {
        "done" => "ok",
        "expired" => "bad",
        _ => "warn",
    };
    html! { span class={ "badge " (kind) } data-field="state" { (state) } }
}

/// The command page.
pub async fn status(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
) -> PageResult {
    let s = status_doc(&st, &ctx.principal, &id).await.in_page(&ctx)?;
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let state = s["state"].as_str().unwrap_or("unknown");
    let record = &s["record"];
    let result = &s["result"];
    let progress = &s["progress"];
    let job_state = progress["state"].as_str().unwrap_or("");
    let operator = ctx.principal.role() >= Role::Operator;
    let cancellable = matches!(job_state, "running" | "interrupted") && operator;
    // Stopped before its end by a cancel or an error. An interrupted job (its member shut down
    // mid-job) is not offered: its command is still pending, and a live member takes it over
    // and resumes it on its own — a resume beside it would run the job twice at once.
    let resumable = matches!(job_state, "cancelled" | "failed") && operator && !ctx.read_only;
    let job_id = progress["job"].as_str().unwrap_or(&id).to_owned();
    let job_rate = s["job"]["spec"]
        .as_str()
        .and_then(|spec| serde_json::from_str::<Value>(spec).ok())
        .and_then(|spec| spec["rate"].as_u64());
    let poll = (state != "done" && state != "expired")
        .then(|| ctx.url(&format!("/api/v1/commands/{}", seg(&id))));
    let selected = progress["selected"].as_u64().unwrap_or(0);
    let handled = ["replayed", "skipped", "refused", "invalid"]
        .iter()
        .map(|k| progress[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let command = result["command"]
        .as_str()
        .or_else(|| (!progress.is_null()).then_some("replay"))
        .unwrap_or("");
    let body = html! {
        div.crumbs { a href=(ctx.url("/audit")) { "Audit" } " / command" }
        (title(&format!("Command {id}"), html! { (state_badge(state)) @if !command.is_empty() { span.chip { (command) } } }))
        section.panel #status data-poll=[poll.as_deref()] data-state=(state) data-job-state=(job_state) aria-live="polite" {
            h2 { "Status" }
            dl.facts {
                dt { "State" } dd { span data-field="state" { (state) } @if state == "queued" { span.muted { " · waiting for a fleet member to take it" } } }
                @if !progress.is_null() && job_id != id {
                    dt { "Resumes" } dd { "replay job " a.mono #resumed-job href=(ctx.url(&format!("/commands/{}", seg(&job_id)))) { (job_id) } }
                }
                @if let Some(m) = record["member"].as_str() { dt { "Run by" } dd.mono { (m) } }
                @if let Some(t) = record["started_at"].as_str().and_then(|t| t.parse::<u64>().ok()) { dt { "Started" } dd { (age(now, t)) } }
            }
            @if !progress.is_null() {
                h3 { "Replay progress" }
                progress #progress max=(selected.max(1)) value=(handled.min(selected)) aria-label="Dead letters handled" { (handled) " of " (selected) }
                div.progress-figures {
                    span { b data-field="replayed" #replayed { (count(&progress["replayed"])) } " replayed" }
                    span { "of " b data-field="selected" { (selected) } " selected" }
                    span { b data-field="skipped" { (count(&progress["skipped"])) } " skipped" }
                    span { b data-field="refused" { (count(&progress["refused"])) } " refused" }
                    span { b data-field="invalid" { (count(&progress["invalid"])) } " invalid" }
                    span { "job " span.badge data-field="job-state" #job-state { (job_state) } }
                }
                @if cancellable {
                    form method="post" action=(ctx.url(&format!("/commands/{}/cancel", seg(&id)))) #cancel data-confirm="Cancel this replay after its current step? It can be resumed." {
                        (csrf(&ctx))
                        div.actions-row {
                            div.field { label for="cancel-reason" { "Reason" } input #cancel-reason type="text" name="reason" maxlength="500" placeholder="cancel requested by operator"; }
                            button.danger type="submit" #cancel-button { "Cancel replay" }
                        }
                    }
                }
                @if job_state == "interrupted" {
                    p.muted #interrupted { "Its member stopped mid-job; a live member takes the command over and resumes the job on its own." }
                }
                @if resumable {
                    form method="post" action=(ctx.url(&format!("/commands/{}/resume", seg(&id)))) #resume {
                        (csrf(&ctx))
                        p.muted { "This replay stopped before its end (" (job_state) "). Resuming it goes on with the same selection, patch and options; nothing is replayed twice." }
                        div.actions-row {
                            div.field { label for="resume-reason" { "Reason (kept in the audit trail)" } input #resume-reason type="text" name="reason" required maxlength="500" placeholder="patch checked; going on"; }
                            div.field { label for="resume-rate" { "Rate (dead letters a second, 0 = no limit)" } input #resume-rate type="number" min="0" name="rate" value=[job_rate]; }
                            button.primary type="submit" #resume-button { "Resume replay" }
                        }
                    }
                }
            }
            @if poll.is_some() { p.muted { "This page follows the command live; " a href=(ctx.url(&format!("/commands/{}", seg(&id)))) { "reload" } " to see it without the script." } }
        }
        @if !result.is_null() {
            section.panel #result aria-labelledby="h-result" {
                h2 #h-result { "Result " (outcome_badge(result["outcome"].as_str().unwrap_or(""))) }
                p #result-message { (text(&result["message"])) }
                details { summary { "Details" } (json_block(&result["details"])) }
            }
        }
        @if !record.is_null() {
            details.panel { summary { "Record" } (json_block(&strip_result(record))) }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Audit, &format!("Command {id}"), body),
    ))
}

/// A command record without its result (shown on its own).
fn strip_result(record: &Value) -> Value {
    let mut r = record.clone();
    if let Some(m) = r.as_object_mut() {
        m.remove("result");
    }
    r
}

/// The replay job command `id` runs (its own, or the one it resumes), as the login may see
/// it: 404 for a command it may not see, 409 for one that runs no replay job.
async fn job_of_command(st: &AppState, ctx: &Ctx, id: &str) -> Result<String, PageError> {
    let s = status_doc(st, &ctx.principal, id).await.in_page(ctx)?;
    s["progress"]["job"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::refused(format!(
                "command {id} runs no replay job (or its job's record has expired)"
            ))
        })
        .in_page(ctx)
}

/// Sends the cancel of the replay job command `id` runs, then back to the command's page.
pub async fn cancel(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    Form(f): Form,
) -> PageResult {
    let job = job_of_command(&st, &ctx, &id).await?;
    let body = CancelBody {
        reason: f.one("reason"),
        command_id: None,
    };
    let sent = send_cancel(&st, &ctx.principal, &job, body)
        .await
        .in_page(&ctx)?;
    if let Sent::Done(r) = &sent {
        if r.outcome != "ok" {
            return Err(ApiError::refused(r.message.clone())).in_page(&ctx);
        }
    }
    Ok(Redirect::to(&ctx.url(&format!("/commands/{}", seg(&id)))).into_response())
}

/// Resumes the replay job command `id` runs (cancelled or failed), as `redrive dlq
/// replay --resume` does — the job's selection, patch and options, at the rate given — then
/// shows the new command, whose page follows the job to its end.
pub async fn resume(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    Form(f): Form,
) -> PageResult {
    let job = job_of_command(&st, &ctx, &id).await?;
    let rate = match f.one("rate") {
        None => None,
        Some(r) => Some(r.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!(
                "rate = '{r}' is not a whole number of dead letters a second (0 for no limit)"
            ))
        }))
        .transpose()
        .in_page(&ctx)?,
    };
    let body = ReplayBody {
        resume: Some(job),
        rate,
        reason: f.one("reason"),
        ..ReplayBody::default()
    };
    let sent = send_replay(&st, &ctx.principal, body).await.in_page(&ctx)?;
    Ok(to_command(&ctx, &sent))
}
