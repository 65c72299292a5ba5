//! `GET /tasks`: task lookup by id within the login's tenants — its record (state, attempts,
//! runs, output, its dead letter and replays), or, without one, where the scans found it
//! (`GET /api/v1/tenants/{tenant}/tasks/{task_id}`).

use axum::extract::State;
use axum::http::StatusCode;
use maud::{html, Markup};
use serde_json::Value;

use crate::app::serve::console::form::Fields;
use crate::app::serve::console::html::{
    age, class_chip, json_block, respond, seg, shell, text, title, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::routes::tasks::show_doc;
use crate::app::serve::state::AppState;

/// Entries of each place a record-less task is looked for in.
const SCAN_LIMIT: usize = 10_000;

/// The lookup form, and the task when one is asked for.
pub async fn page(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let tenants = ctx
        .principal
        .visible(st.broker.tenants().await.in_page(&ctx)?);
    let (tenant, task_id) = (f.one("tenant"), f.one("task_id"));
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let (status, found) = match (&tenant, &task_id) {
        (Some(t), Some(id)) => match show_doc(&st, &ctx.principal, t, id, SCAN_LIMIT).await {
            Ok(v) => (StatusCode::OK, Some(Ok(v))),
            Err(e) => (e.status, Some(Err(e))),
        },
        _ => (StatusCode::OK, None),
    };
    let body = html! {
        (title("Task lookup", html! {}))
        form.panel.filters method="get" action=(ctx.url("/tasks")) data-filter role="search" aria-label="Look a task up" {
            div.field {
                label for="t-tenant" { "Tenant" }
                select #t-tenant name="tenant" required {
                    @for t in &tenants { option value=(t) selected[tenant.as_deref() == Some(t.as_str())] { (t) } }
                }
            }
            div.field { label for="t-id" { "Task id" } input #t-id type="text" name="task_id" required value=[task_id.as_deref()] placeholder="order-1234"; }
            div.actions { button.primary type="submit" { "Look up" } }
        }
        @match &found {
            None => p.muted { "A task's record tells its state, attempts, runs and output; a task without one is looked for in its lane, the running entries, the retry schedule and the dead letters." },
            Some(Err(e)) => (not_found(e)),
            Some(Ok(v)) => (task(&ctx, v, now)),
        }
    };
    Ok(respond(
        status,
        shell(&ctx, Nav::Tasks, "Task lookup", body),
    ))
}

fn not_found(e: &ApiError) -> Markup {
    html! {
        div.notice.bad role="alert" #lookup-error { b { (e.status.as_u16()) " · " } (e.message) }
    }
}

fn task(ctx: &Ctx, v: &Value, now: u64) -> Markup {
    let tenant = v["tenant"].as_str().unwrap_or("");
    let ms = |k: &str| v[k].as_u64().unwrap_or(0);
    let dl_link = |id: &str| ctx.url(&format!("/dead-letters/{}/{}", seg(tenant), seg(id)));
    if v["source"] != "record" {
        let places: &[Value] = v["found_in"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        return html! {
            section.panel #task {
                h2 { "Task " span.mono { (text(&v["task_id"])) } " · no record" }
                @if places.is_empty() { p { "Not found." } }
                ul { @for p in places {
                    li { b { (text(&p["place"])) } " "
                        @if let Some(id) = p["dead_letter_id"].as_str() { a.mono href=(dl_link(id)) { (id) } " " (class_chip(p["class"].as_str().unwrap_or(""))) }
                        @else { span.mono { (text(&p["entry"])) } } }
                } }
                details { summary { "As the API answers" } (json_block(v)) }
            }
        };
    }
    let runs: &[Value] = v["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let state = v["state"].as_str().unwrap_or("");
    let state_kind = match state {
        "done" | "resolved" => "ok",
        "dead_lettered" | "expired" | "discarded" => "bad",
        _ => "warn",
    };
    html! {
        section.panel #task {
            h2 { "Task " span.mono { (text(&v["task_id"])) } " " span class={ "badge " (state_kind) } #task-state { (state) } }
            dl.facts {
                dt { "Tenant" } dd { (tenant) }
                dt { "Kind" } dd { (text(&v["kind"])) }
                dt { "Attempts" } dd { (text(&v["attempt"])) }
                dt { "Enqueued" } dd { (age(now, ms("enqueued_at"))) }
                @if ms("started_at") > 0 { dt { "Started" } dd { (age(now, ms("started_at"))) " on " span.mono { (text(&v["member"])) } } }
                @if ms("ended_at") > 0 { dt { "Ended" } dd { (age(now, ms("ended_at"))) } }
                @if !v["class"].is_null() { dt { "Last failure" } dd { (class_chip(v["class"].as_str().unwrap_or(""))) " " span.mono { (text(&v["error"])) } } }
                @if let Some(d) = v["dlq"].as_str().filter(|d| !d.is_empty()) { dt { "Dead letter" } dd { a.mono href=(dl_link(d)) { (d) } } }
                @if !v["replay_of"].is_null() { dt { "Replay of" } dd.mono { (text(&v["replay_of"])) } }
                @if !v["replayed_as"].is_null() { dt { "Replayed as" } dd.mono { (text(&v["replayed_as"])) } }
                dt { "Where" } dd.mono { (text(&v["entry"])) }
            }
            @if !runs.is_empty() {
                h3 { "Runs" }
                div.table-wrap { table {
                    thead { tr { th { "Run" } th { "Started" } th { "Member" } th { "Ended" } th { "Outcome" } } }
                    tbody { @for r in runs { tr {
                        td.num { (text(&r["run"])) } td { (age(now, r["start"].as_u64().unwrap_or(0))) } td.mono { (text(&r["member"])) }
                        td { (age(now, r["end"].as_u64().unwrap_or(0))) } td { (text(&r["outcome"])) }
                    } } }
                } }
            }
            h3 { "Output" }
            @if v["hidden"].as_array().is_some_and(|h| h.iter().any(|x| x == "output")) {
                p.hidden-note { "The output is hidden: this login's token may not see payloads and outputs." }
            } @else if v["output"].is_null() { p.muted { "None." } }
            @else { details open { summary { "Output" @if v["output_truncated"] == true { " (truncated)" } } (json_block(&v["output"])) } }
        }
    }
}
