//! The replay wizard, `GET /replay`: the selection (listed ids, or the list's filter) → a dry
//! run (counts and a sample of the payloads as they would run) → the options (a JSON merge
//! patch, a target kind, a rate, an order) → a confirmation with a reason, `POST /replay`,
//! which sends the replay and goes on to its command's page (live progress, cancel). Every
//! step is a plain form: the dry run runs again whenever the options change.

use axum::extract::State;
use axum::http::StatusCode;
use maud::{html, Markup};
use serde_json::Value;

use super::dead_letters::FILTER_KEYS;
use crate::app::serve::console::form::{Fields, Form};
use crate::app::serve::console::html::{
    class_chip, count, csrf, json_block, query, respond, shell, text, title, to_command, InPage,
    Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::routes::recovery::{dry_run_doc, send_replay, ReplayBody};
use crate::app::serve::routes::FilterBody;
use crate::app::serve::state::AppState;

/// The options' field names.
const OPTION_KEYS: [&str; 5] = ["patch", "target_kind", "rate", "order_by_key", "force"];

/// The replay body the wizard's fields describe (a patch that is not JSON is a 400 naming it).
fn body(f: &Fields) -> ApiResult<ReplayBody> {
    let patch = f
        .one("patch")
        .map(|p| {
            serde_json::from_str::<Value>(&p)
                .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))
        })
        .transpose()?;
    let rate = f
        .one("rate")
        .map(|r| {
            r.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!(
                    "rate = '{r}' is not a whole number of dead letters a second (0 for no limit)"
                ))
            })
        })
        .transpose()?;
    let filter = FilterBody {
        tenants: f.all("tenant"),
        classes: f.all("class"),
        kinds: f.all("kind"),
        fingerprints: f.all("fingerprint"),
        since: f.one("since"),
        until: f.one("until"),
        payload_equals: f.all("payload"),
    };
    if f.one("task_id").is_some() && f.all("id").is_empty() {
        return Err(ApiError::bad_request(
            "a replay selects by ids or by tenant, class, kind, fingerprint and time; select the \
             task's dead letters in the list and replay those",
        ));
    }
    Ok(ReplayBody {
        ids: f.all("id"),
        all: f.checked("all") && filter.is_empty(),
        filter,
        patch,
        target_kind: f.one("target_kind"),
        force: f.checked("force"),
        order_by_key: f.one("order_by_key"),
        rate,
        reason: f.one("reason"),
        ..ReplayBody::default()
    })
}

/// Hidden fields carrying `keys` of `f` on to the next step.
fn carry(f: &Fields, keys: &[&str]) -> Markup {
    html! {
        @for (k, v) in f.pairs() {
            @if keys.contains(&k.as_str()) && !v.trim().is_empty() {
                input type="hidden" name=(k) value=(v);
            }
        }
    }
}

/// The selection's keys: ids, the filter, `all`.
fn selection_keys() -> Vec<&'static str> {
    let mut keys = vec!["id", "all"];
    keys.extend(FILTER_KEYS.iter().filter(|k| **k != "task_id"));
    keys
}

/// The wizard: the selection, its dry run with the current options, the options, the confirm.
pub async fn wizard(
    State(st): State<AppState>,
    ctx: Ctx,
    req: axum::extract::Request,
) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let sel_keys = selection_keys();
    let ids = f.all("id");
    let dry = match body(&f) {
        Ok(b) => dry_run_doc(&st, &ctx.principal, &b).await,
        Err(e) => Err(e),
    };
    let default_rate = st.settings.admin.rate;
    let filter_desc: Vec<(String, String)> = f
        .pairs()
        .iter()
        .filter(|(k, v)| FILTER_KEYS.contains(&k.as_str()) && !v.trim().is_empty())
        .cloned()
        .collect();
    let back = {
        let pairs: Vec<(&str, &str)> = filter_desc
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ctx.url(&format!("/dead-letters{}", query(&pairs)))
    };
    let would = dry
        .as_ref()
        .ok()
        .and_then(|d| d["would_replay"].as_u64())
        .unwrap_or(0);
    let steps = html! {
        ol.steps aria-label="Replay steps" {
            li.done { "Selection" }
            li class=(if dry.is_ok() { "done" } else { "now" }) { "Dry run" }
            li class=(if dry.is_ok() { "now" } else { "" }) { "Patch & options" }
            li class=(if dry.is_ok() { "now" } else { "" }) { "Confirm" }
            li { "Progress" }
        }
    };
    let selection = html! {
        section.panel aria-labelledby="h-sel" {
            h2 #h-sel { "1 · Selection" }
            @if !ids.is_empty() {
                p { (ids.len()) " dead letter" @if ids.len() != 1 { "s" } " picked by id:" }
                ul.mono { @for i in ids.iter().take(20) { li { (i) } } @if ids.len() > 20 { li { "… and " (ids.len() - 20) " more" } } }
            } @else if filter_desc.is_empty() {
                p { "Every dead letter this login may see." }
            } @else {
                p { "Every dead letter matching: "
                    @for (k, v) in &filter_desc { span.chip { (k) " = " (v) } " " }
                }
            }
            p { a href=(back) { "← Change the selection" } }
        }
    };
    let options = html! {
        section.panel aria-labelledby="h-opt" {
            h2 #h-opt { "3 · Patch & options" }
            form method="get" action=(ctx.url("/replay")) #options {
                (carry(&f, &sel_keys))
                div.form-grid {
                    div.field.wide {
                        label for="patch" { "JSON merge patch (RFC 7386) applied to each payload" }
                        textarea #patch name="patch" spellcheck="false" placeholder=r#"{"simulate": "ok", "model": "larger-context"}"# { (f.one("patch").unwrap_or_default()) }
                        div.hint { "A key set to null removes it. Leave empty to replay the payloads as they are." }
                    }
                    div.field { label for="target_kind" { "Target kind" } input #target_kind type="text" name="target_kind" value=[f.one("target_kind")] placeholder="same kind"; }
                    div.field { label for="rate" { "Rate (dead letters a second, 0 = no limit)" } input #rate type="number" min="0" name="rate" value=(f.one("rate").unwrap_or_else(|| default_rate.to_string())); }
                    div.field { label for="order_by_key" { "Keep order per payload field" } input #order_by_key type="text" name="order_by_key" value=[f.one("order_by_key")] placeholder="customer_id"; }
                    div.field { label.check-line { input type="checkbox" name="force" value="1" checked[f.checked("force")]; "Replay partial executions too (side effects may happen again)" } }
                }
                p { button type="submit" #update-dry-run { "Update the dry run" } }
            }
        }
    };
    let dry_section = match &dry {
        Err(e) => html! {
            section.panel aria-labelledby="h-dry" {
                h2 #h-dry { "2 · Dry run" }
                div.notice.bad role="alert" #dry-run-error { b { (e.status.as_u16()) " · " } (e.message) }
            }
        },
        Ok(d) => dry_run(d),
    };
    let confirm = html! {
        section.panel aria-labelledby="h-confirm" {
            h2 #h-confirm { "4 · Confirm" }
            @if dry.is_err() {
                p.muted { "Fix what the dry run says first." }
            } @else if would == 0 {
                p.muted { "Nothing would be replayed." }
            } @else {
                form method="post" action=(ctx.url("/replay")) #confirm {
                    (csrf(&ctx))
                    (carry(&f, &sel_keys))
                    (carry(&f, &OPTION_KEYS))
                    div.actions-row {
                        div.field { label for="reason" { "Reason (kept in the audit trail)" } input #reason type="text" name="reason" required maxlength="500" placeholder="fixed the schema; re-running"; }
                        button.primary type="submit" #replay-confirm { "Replay " (would) " dead letter" @if would != 1 { "s" } }
                    }
                    @if ctx.read_only { p.notice.warn { "This server is read-only: the replay will be refused." } }
                }
            }
        }
    };
    let body = html! {
        div.crumbs { a href=(ctx.url("/dead-letters")) { "Dead letters" } " / replay" }
        (title("Replay", html! {}))
        (steps)
        (selection)
        (dry_section)
        (options)
        (confirm)
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::DeadLetters, "Replay", body),
    ))
}

/// The dry run's counts and sample.
fn dry_run(d: &Value) -> Markup {
    let sample: &[Value] = d["sample"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let missing: &[Value] = d["missing"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    html! {
        section.panel aria-labelledby="h-dry" #dry-run {
            h2 #h-dry { "2 · Dry run" }
            div.cards {
                div.card { div.label { "Selected" } div.value #dry-selected { (count(&d["selected"])) } }
                div.card.ok { div.label { "Would replay" } div.value #dry-would { (count(&d["would_replay"])) } }
                div class={ "card" @if d["refused"].as_u64().unwrap_or(0) > 0 { " bad" } } { div.label { "Refused" } div.value { (count(&d["refused"])) } div.sub { "by a guardrail" } }
                div class={ "card" @if d["invalid"].as_u64().unwrap_or(0) > 0 { " bad" } } { div.label { "Invalid" } div.value { (count(&d["invalid"])) } div.sub { "not replayable as is" } }
                @if !missing.is_empty() { div.card.bad { div.label { "Missing" } div.value { (missing.len()) } div.sub { "ids gone already" } } }
            }
            @if !sample.is_empty() {
                h3 { "Sample, as they would run" }
                div.table-wrap {
                    table #dry-sample {
                        thead { tr { th { "Dead letter" } th { "Task id" } th { "Class" } th { "Verdict" } th { "Kind" } th { "Payload" } } }
                        tbody {
                            @for s in sample {
                                @let verdict = s["verdict"].as_str().unwrap_or("");
                                tr {
                                    td.mono { (text(&s["id"])) }
                                    td.mono { (text(&s["task_id"])) }
                                    td { (class_chip(s["class"].as_str().unwrap_or(""))) }
                                    td { span class={ "verdict-" (verdict) } { (verdict) } @if let Some(w) = s["why"].as_str() { div.hint { (w) } } }
                                    td { (text(&s["kind"])) }
                                    td { @if s["payload"].is_null() { span.muted { "—" } } @else { details { summary { "payload" } (json_block(&s["payload"])) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sends the replay the confirmed form describes, then shows its command's progress.
pub async fn confirm(State(st): State<AppState>, ctx: Ctx, Form(f): Form) -> PageResult {
    let b = body(&f).in_page(&ctx)?;
    let sent = send_replay(&st, &ctx.principal, b).await.in_page(&ctx)?;
    Ok(to_command(&ctx, &sent))
}
