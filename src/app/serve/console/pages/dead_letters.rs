//! `GET /dead-letters`: the dead letters the login may see, filtered (tenant, class, kind,
//! fingerprint, time range, task id), a page at a time with a cursor, with bulk selection
//! (replay through the wizard, resolve, discard) — or grouped by fingerprint with counts and
//! a sample error; a link exports what the filter matches (`GET /api/v1/dead-letters/export`,
//! as a download), and an admin's leads to the purge page; each row shows its review state and
//! assignee. `GET /dead-letters/{tenant}/{id}`: one dead letter whole, with its review (state,
//! assignee, escalation, fold, notes) and, for an operator, assign / escalate / note —
//! `POST /dead-letters/{tenant}/{id}/review`, sent as the API's review routes send them, then
//! back to the page with the command's result. `POST /dead-letters/bulk`: what the
//! selection's buttons send.
//!
//! The figures are the API's: `GET /api/v1/dead-letters`, `…/stats`, `…/{tenant}/…/{id}`
//! (payloads hidden from a viewer that may not see them, exactly as there).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};
use serde_json::Value;

use crate::admin::review::validate_assignee;
use crate::admin::{AdminCommand, ReviewSpec};
use crate::app::serve::auth::Role;
use crate::app::serve::console::form::{Fields, Form};
use crate::app::serve::console::html::{
    age, class_chip, count, csrf, json_block, query, read_only_error, respond, seg, shell, text,
    title, to_command, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::extract::{Params, PathArgs};
use crate::app::serve::routes::commands::status_doc;
use crate::app::serve::routes::dead_letters::{list_doc, show_doc, stats_doc};
use crate::app::serve::routes::recovery::{send_remove, RemoveBody};
use crate::app::serve::routes::review::{ids_of, send_move};
use crate::app::serve::state::AppState;
use crate::app::serve::submit::ChangeMeta;
use crate::handler::FailureClass;

/// The filter's query parameters, as the API names them.
pub const FILTER_KEYS: [&str; 8] = [
    "tenant",
    "class",
    "kind",
    "fingerprint",
    "payload",
    "since",
    "until",
    "task_id",
];

/// The query of `fields` restricted to `keys`, empty values left out (a blank form field is
/// no filter), as a string the API's [`Params`] reads.
pub fn api_query(fields: &Fields, keys: &[&str]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields.pairs() {
        if keys.contains(&k.as_str()) && !v.trim().is_empty() {
            s.append_pair(k, v.trim());
        }
    }
    s.finish()
}

/// The filter form (GET), its fields filled from `f`.
fn filter_form(ctx: &Ctx, tenants: &[String], f: &Fields, view: &str) -> Markup {
    let chosen = f.all("tenant");
    let classes = f.all("class");
    html! {
        form.panel.filters method="get" action=(ctx.url("/dead-letters")) data-filter role="search" aria-label="Filter dead letters" {
            @if view == "groups" { input type="hidden" name="view" value="groups"; }
            div.field {
                label for="f-tenant" { "Tenant" }
                select #f-tenant name="tenant" {
                    option value="" { "Every tenant" }
                    @for t in tenants {
                        option value=(t) selected[chosen.contains(t)] { (t) }
                    }
                }
            }
            div.field {
                label for="f-class" { "Class" }
                select #f-class name="class" {
                    option value="" { "Every class" }
                    @for c in FailureClass::ALL {
                        option value=(c.as_str()) selected[classes.iter().any(|x| x == c.as_str())] { (c.as_str()) }
                    }
                }
            }
            div.field { label for="f-kind" { "Kind" } input #f-kind type="text" name="kind" value=[f.one("kind")] placeholder="triage"; }
            div.field { label for="f-fp" { "Fingerprint" } input #f-fp type="text" name="fingerprint" value=[f.one("fingerprint")] placeholder="a1b2c3d4"; }
            div.field { label for="f-since" { "Since" } input #f-since type="text" name="since" value=[f.one("since")] placeholder="2h, 2025-01-31T08:00:00Z"; }
            div.field { label for="f-until" { "Until" } input #f-until type="text" name="until" value=[f.one("until")] placeholder="10m"; }
            div.field { label for="f-task" { "Task id" } input #f-task type="text" name="task_id" value=[f.one("task_id")]; }
            div.field { label for="f-payload" { "Payload field = value" } input #f-payload type="text" name="payload" value=[f.one("payload")] placeholder="customer.id=acme-7"; }
            div.actions {
                button.primary type="submit" { "Filter" }
                a.button href={ (ctx.url("/dead-letters")) @if view == "groups" { "?view=groups" } } { "Clear" }
            }
        }
    }
}

/// The dead-letter list, or the groups by fingerprint (`view=groups`).
pub async fn list(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let view = f.one("view").unwrap_or_else(|| "list".into());
    let tenants = ctx
        .principal
        .visible(st.broker.tenants().await.in_page(&ctx)?);
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let filter_only = api_query(&f, &FILTER_KEYS);
    let tabs = html! {
        nav.tabs aria-label="View" {
            @let list_q = if filter_only.is_empty() { String::new() } else { format!("?{filter_only}") };
            @let groups_q = if filter_only.is_empty() { "?view=groups".to_owned() } else { format!("?{filter_only}&view=groups") };
            a href={ (ctx.url("/dead-letters")) (list_q) } aria-current=[(view != "groups").then_some("page")] { "List" }
            a href={ (ctx.url("/dead-letters")) (groups_q) } aria-current=[(view == "groups").then_some("page")] { "Group by fingerprint" }
        }
    };
    let content = if view == "groups" {
        let mut keys: Vec<&str> = FILTER_KEYS
            .iter()
            .copied()
            // Stats count on the server and cannot look into payloads: grouped without it.
            .filter(|k| *k != "task_id" && *k != "payload")
            .collect();
        keys.push("window");
        let mut q = Params::parse(&format!("{}&top=50", api_query(&f, &keys)));
        let stats = stats_doc(&st, &ctx.principal, &mut q).await.in_page(&ctx)?;
        groups(&ctx, &stats, &filter_only)
    } else {
        let mut keys = FILTER_KEYS.to_vec();
        keys.extend(["cursor", "limit"]);
        let mut q = Params::parse(&api_query(&f, &keys));
        let page = list_doc(&st, &ctx.principal, &mut q).await.in_page(&ctx)?;
        table(&ctx, &page, now, &f, &filter_only)
    };
    let body = html! {
        (title("Dead letters", actions(&ctx, &f)))
        (filter_form(&ctx, &tenants, &f, &view))
        (tabs)
        (content)
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::DeadLetters, "Dead letters", body),
    ))
}

/// The filter's keys an export takes (`GET /api/v1/dead-letters/export`: every one but the
/// task id).
const EXPORT_KEYS: [&str; 7] = [
    "tenant",
    "class",
    "kind",
    "fingerprint",
    "payload",
    "since",
    "until",
];

/// The page's own actions: the export of what the filter matches (a download from the API,
/// which the session authenticates: the login's scope, payloads hidden as there), and for an
/// admin the purge page (with the filter's tenant when it names one).
fn actions(ctx: &Ctx, f: &Fields) -> Markup {
    let q = api_query(f, &EXPORT_KEYS);
    let export = format!(
        "{}{}{q}",
        ctx.url("/api/v1/dead-letters/export"),
        if q.is_empty() { "" } else { "?" }
    );
    let tenants = f.all("tenant");
    let purge = match tenants.as_slice() {
        [one] => ctx.url(&format!("/purge{}", query(&[("tenant", one.as_str())]))),
        _ => ctx.url("/purge"),
    };
    html! {
        a.button #export href=(export) download title="Every dead letter the filter matches, one JSON object a line" { "Export (JSON Lines)" }
        @if f.one("task_id").is_some() { span.hint { "the export leaves the task id out" } }
        @if ctx.principal.role() >= Role::Admin && !ctx.read_only {
            a.button.danger #purge-link href=(purge) { "Purge…" }
        }
    }
}

/// The groups by fingerprint: each with its count, class, kind and a sample error, linking to
/// the list of that fingerprint.
fn groups(ctx: &Ctx, stats: &Value, filter_q: &str) -> Markup {
    let top: &[Value] = stats["top_fingerprints"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let link = |fp: &str| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(filter_q.as_bytes()) {
            if k != "fingerprint" {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("fingerprint", fp);
        ctx.url(&format!("/dead-letters?{}", q.finish()))
    };
    html! {
        @if filter_q.contains("payload=") || filter_q.contains("task_id=") {
            p.notice.warn { "Groups are counted by class, kind and fingerprint on the server: the payload and task id filters are left out here." }
        }
        p.muted { (count(&stats["total"])) " dead letters match; the " (top.len()) " most frequent fingerprints:" }
        div.table-wrap {
            table #groups data-nav {
                thead { tr { th { "Fingerprint" } th.num { "Count" } th { "Class" } th { "Kind" } th { "Sample error" } } }
                tbody {
                    @for g in top {
                        @let fp = g["fingerprint"].as_str().unwrap_or("");
                        tr {
                            td { a.mono href=(link(fp)) { (fp) } }
                            td.num { (count(&g["count"])) }
                            td { (class_chip(g["class"].as_str().unwrap_or(""))) }
                            td { (text(&g["kind"])) }
                            td.error title=(text(&g["sample_error"])) { (text(&g["sample_error"])) }
                        }
                    }
                    @if top.is_empty() { tr { td.empty colspan="5" { "No dead letter matches." } } }
                }
            }
        }
    }
}

/// The table of one page, with the bulk actions the login's role allows.
fn table(ctx: &Ctx, page: &Value, now: u64, f: &Fields, filter_q: &str) -> Markup {
    let entries: &[Value] = page["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let operator = ctx.principal.role() >= Role::Operator;
    let next = page["next_cursor"].as_str().map(|c| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(filter_q.as_bytes()) {
            q.append_pair(&k, &v);
        }
        if let Some(l) = f.one("limit") {
            q.append_pair("limit", &l);
        }
        q.append_pair("cursor", c);
        ctx.url(&format!("/dead-letters?{}", q.finish()))
    });
    let replay_all = ctx.url(&format!(
        "/replay{}",
        if filter_q.is_empty() {
            "?all=1".to_owned()
        } else {
            format!("?{filter_q}")
        }
    ));
    let rows = html! {
        @for e in entries {
            @let id = e["id"].as_str().unwrap_or("");
            @let (tenant, entry) = id.split_once('/').unwrap_or(("", id));
            @let href = ctx.url(&format!("/dead-letters/{}/{}", seg(tenant), seg(entry)));
            tr {
                @if operator {
                    td.check { input type="checkbox" name="id" value=(id) aria-label={ "Select " (id) }; }
                }
                td.nowrap { (age(now, e["dead_lettered_at"].as_u64().unwrap_or(0))) }
                td { (tenant) }
                td { a.mono href=(href) { (entry) } }
                td.mono { (text(&e["task_id"])) }
                td { (text(&e["kind"])) }
                td { (class_chip(e["class"].as_str().unwrap_or(""))) }
                td.error title=(text(&e["error"])) { (text(&e["error"])) }
                td.num { (text(&e["attempt"])) }
                td { a.mono href=(ctx.url(&format!("/dead-letters{}", query(&[("fingerprint", e["fingerprint"].as_str().unwrap_or(""))])))) { (text(&e["fingerprint"])) } }
                td.review { (review_cell(&e["review"])) }
            }
        }
        @if entries.is_empty() {
            tr { td.empty colspan="11" { "No dead letter matches." } }
        }
    };
    let cols = html! {
        thead { tr {
            @if operator { th.check { input type="checkbox" data-select-all aria-label="Select every dead letter on this page"; } }
            th { "Dead-lettered" } th { "Tenant" } th { "Entry" } th { "Task id" } th { "Kind" }
            th { "Class" } th { "Error" } th.num { "Attempt" } th { "Fingerprint" } th { "Review" }
        } }
    };
    html! {
        @if operator {
            form method="post" action=(ctx.url("/dead-letters/bulk")) #bulk {
                (csrf(ctx))
                div.table-wrap {
                    table #dead-letters data-nav { (cols) tbody { (rows) } }
                    div.bulk {
                        span.count data-selected-count { "" }
                        div.field {
                            label for="bulk-reason" { "Reason (for resolve and discard; kept in the audit trail)" }
                            input #bulk-reason type="text" name="reason" maxlength="500";
                        }
                        button.primary type="submit" name="action" value="replay" { "Replay selected…" }
                        button type="submit" name="action" value="resolve" { "Resolve selected" }
                        button.danger type="submit" name="action" value="discard" { "Discard selected" }
                        a.button href=(replay_all) { "Replay all matching…" }
                    }
                }
            }
        } @else {
            div.table-wrap { table #dead-letters data-nav { (cols) tbody { (rows) } } }
        }
        div.pager {
            span { (entries.len()) " on this page" }
            @if f.one("cursor").is_some() {
                a href={ (ctx.url("/dead-letters")) @if !filter_q.is_empty() { "?" (filter_q) } } { "First page" }
            }
            @if let Some(n) = next { a.button #next-page href=(n) rel="next" { "Next page →" } }
        }
    }
}

/// One dead letter whole: what failed and why, the attempts, the steps and their outputs, the
/// payload and partial output (hidden from a viewer that may not see them), and the actions
/// the login's role allows.
pub async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((tenant, id)): PathArgs<(String, String)>,
    req: axum::extract::Request,
) -> PageResult {
    let d = show_doc(&st, &ctx.principal, &tenant, &id)
        .await
        .in_page(&ctx)?;
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let sent = match f.one("sent") {
        Some(c) => status_doc(&st, &ctx.principal, &c).await.ok(),
        None => None,
    };
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let full = d["id"].as_str().unwrap_or("").to_owned();
    let hidden: Vec<&str> = d["hidden"]
        .as_array()
        .map(|h| h.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let hidden_note = |what: &str| {
        html! { p.hidden-note { "The " (what) " is hidden: this login's token may not see payloads and outputs." } }
    };
    let operator = ctx.principal.role() >= Role::Operator;
    let history: &[Value] = d["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let steps: &[Value] = d["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let dl_at = d["dead_lettered_at"].as_u64().unwrap_or(0);
    let body = html! {
        div.crumbs { a href=(ctx.url("/dead-letters")) { "Dead letters" } " / " (tenant) }
        (title(&format!("Dead letter {full}"), html! { (class_chip(d["class"].as_str().unwrap_or(""))) " " (review_cell(&d["review"])) }))
        @if let Some(s) = &sent {
            @let r = &s["result"];
            div class={ "notice " @if r["outcome"] == "ok" { "ok" } @else { "bad" } } role="status" #sent {
                (text(&r["message"]))
                " · " a href=(ctx.url(&format!("/commands/{}", seg(s["command_id"].as_str().unwrap_or(""))))) { "command" }
            }
        }
        div.grid-2 {
            section.panel aria-labelledby="h-what" {
                h2 #h-what { "What failed" }
                dl.facts {
                    dt { "Task id" } dd.mono { a href=(ctx.url(&format!("/tasks{}", query(&[("tenant", &tenant), ("task_id", d["task_id"].as_str().unwrap_or(""))])))) { (text(&d["task_id"])) } }
                    dt { "Kind" } dd { (text(&d["kind"])) }
                    dt { "Class" } dd { (class_chip(d["class"].as_str().unwrap_or(""))) }
                    dt { "Error" } dd.mono #error { (text(&d["error"])) }
                    @if !d["detail"].is_null() { dt { "Detail" } dd.mono { (text(&d["detail"])) } }
                    dt { "Fingerprint" } dd { a.mono href=(ctx.url(&format!("/dead-letters{}", query(&[("fingerprint", d["fingerprint"].as_str().unwrap_or(""))])))) { (text(&d["fingerprint"])) } }
                    dt { "Attempts" } dd { (text(&d["attempt"])) " (" (text(&d["deliveries"])) " deliveries)" }
                    @if let Some(s) = d["failed_step"].as_str() { dt { "Failed in step" } dd.mono { (s) } }
                    dt { "Dead-lettered" } dd { (age(now, dl_at)) " · " (text(&d["dead_lettered_at_iso"])) }
                    dt { "Member" } dd.mono { (text(&d["member"])) }
                    @if !d["replay_of"].is_null() { dt { "Replay of" } dd.mono { (text(&d["replay_of"])) } }
                }
            }
            section.panel aria-labelledby="h-next" {
                h2 #h-next { "What to do" }
                div.action-box #recommended { (text(&d["recommended_action"])) }
                @if operator {
                    h3 { "Actions" }
                    div.actions-row {
                        a.button.primary href=(ctx.url(&format!("/replay{}", query(&[("id", &full)])))) { "Replay…" }
                    }
                    form method="post" action=(ctx.url("/dead-letters/bulk")) {
                        (csrf(&ctx))
                        input type="hidden" name="id" value=(full);
                        div.actions-row {
                            div.field { label for="one-reason" { "Reason" } input #one-reason type="text" name="reason" required maxlength="500"; }
                            button type="submit" name="action" value="resolve" { "Resolve" }
                            button.danger type="submit" name="action" value="discard" { "Discard" }
                        }
                    }
                } @else {
                    p.muted { "A viewer can read; replay, resolve and discard need an operator's token." }
                }
            }
        }
        (review_panel(&ctx, &d, &tenant, &id, now))
        section.panel aria-labelledby="h-attempts" {
            h2 #h-attempts { "Attempts" }
            @if history.is_empty() {
                p.muted { "No earlier attempt is recorded: it failed on its first attempt, or never ran." }
            }
            ol.timeline {
                @for a in history {
                    li {
                        div { b { "Attempt " (text(&a["attempt"])) } " " (class_chip(a["class"].as_str().unwrap_or(""))) " " span.when { (age(now, a["at_ms"].as_u64().unwrap_or(0))) " · " (text(&a["duration_ms"])) " ms on " (text(&a["member"])) } }
                        div.err { (text(&a["error"])) }
                    }
                }
                li.final {
                    div { b { "Dead-lettered" } " " (class_chip(d["class"].as_str().unwrap_or(""))) " " span.when { (age(now, dl_at)) } }
                    div.err { (text(&d["error"])) }
                }
            }
        }
        @if !steps.is_empty() || hidden.contains(&"steps") {
            section.panel aria-labelledby="h-steps" {
                h2 #h-steps { "Steps" }
                @if hidden.contains(&"steps") { (hidden_note("steps")) }
                div.table-wrap {
                    table {
                        thead { tr { th { "Step" } th { "State" } th { "Output" } } }
                        tbody {
                            @for s in steps {
                                tr {
                                    td.mono { (text(&s["name"])) @if s["side_effect"] == true { " " span.badge.warn title="side-effecting" { "side effect" } } }
                                    td { @if s["done"] == true { span.badge.ok { "done" } } @else { span.badge.bad { "not done" } } }
                                    td {
                                        @if s["output"].is_null() { span.muted { "—" } }
                                        @else { details { summary { "Output" } (json_block(&s["output"])) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="h-payload" {
            h2 #h-payload { "Payload" }
            @if hidden.contains(&"payload") { (hidden_note("payload")) }
            @else {
                details #payload open { summary { "Payload (" (d["payload"].to_string().len()) " bytes)" } (json_block(&d["payload"])) }
            }
            @if !d["partial_output"].is_null() {
                details { summary { "Partial output" } (json_block(&d["partial_output"])) }
            } @else if hidden.contains(&"partial_output") { (hidden_note("partial output")) }
            @if !d["extra"].is_null() {
                details { summary { "Producer's fields" } (json_block(&d["extra"])) }
            }
            details { summary { "Every field" } (json_block(&d)) }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::DeadLetters, &format!("Dead letter {full}"), body),
    ))
}

/// A dead letter's review state as a badge, with its assignee or escalation.
fn review_cell(r: &Value) -> Markup {
    let state = r["state"].as_str().unwrap_or("new");
    let badge = match state {
        "in_review" => "badge ok",
        "escalated" => "badge warn",
        "folded" => "badge",
        _ => "badge bad",
    };
    html! {
        span class=(badge) data-review-state=(state) { (state) }
        @if let Some(a) = r["assignee"].as_str().filter(|a| !a.is_empty()) { " " span.mono data-assignee { (a) } }
        @if let Some(t) = r["escalated_to"].as_str().filter(|t| !t.is_empty()) { " → " span.mono { (t) } }
        @if let Some(n) = r["fold"]["count"].as_u64() { " " span.badge title="a fold: acting on it acts on all of them" { "×" (n) } }
    }
}

/// The review of one dead letter: its state, assignee, escalation, fold and log (notes, moves),
/// and for an operator the forms that assign, escalate and note it.
fn review_panel(ctx: &Ctx, d: &Value, tenant: &str, id: &str, now: u64) -> Markup {
    let r = &d["review"];
    let state = r["state"].as_str().unwrap_or("new");
    let log: &[Value] = r["log"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let operator = ctx.principal.role() >= Role::Operator && !ctx.read_only;
    let action = ctx.url(&format!("/dead-letters/{}/{}/review", seg(tenant), seg(id)));
    html! {
        section.panel aria-labelledby="h-review" #review {
            h2 #h-review { "Review" }
            dl.facts {
                dt { "State" } dd { (review_cell(r)) }
                dt { "Assignee" } dd.mono #review-assignee { @if let Some(a) = r["assignee"].as_str().filter(|a| !a.is_empty()) { (a) } @else { span.muted { "nobody" } } }
                dt { "Escalated to" } dd.mono { @if let Some(t) = r["escalated_to"].as_str().filter(|t| !t.is_empty()) { (t) } @else { span.muted { "—" } } }
                @if let Some(since) = r["since"].as_u64() { dt { "Since" } dd { (age(now, since)) } }
                @if let Some(rep) = r["fold"]["representative"].as_str() {
                    dt { "Fold" } dd { "represented by " span.mono { (rep) } @if let Some(n) = r["fold"]["count"].as_u64() { " · " (n) " dead letters" } }
                }
            }
            h3 { "Log" }
            @if log.is_empty() {
                p.muted { "Nothing yet: nobody has assigned, escalated or noted it." }
            } @else {
                ol.timeline #review-log {
                    @for item in log {
                        @let at = item["at"].as_str().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                        li data-act=(text(&item["act"])) {
                            div { b { (text(&item["act"])) } @if !item["to"].is_null() { " → " span.mono { (text(&item["to"])) } } " " span.when { (age(now, at)) " by " (text(&item["by"])) } }
                            @if !item["text"].is_null() { div.note { (text(&item["text"])) } }
                            @if !item["why"].is_null() { div.hint { (text(&item["why"])) } }
                        }
                    }
                }
            }
            @if operator && state != "folded" {
                h3 { "Change" }
                form.actions-row method="post" action=(action) #assign-form {
                    (csrf(ctx))
                    input type="hidden" name="action" value="assign";
                    div.field { label for="assign-to" { "Assign to" } input #assign-to type="text" name="to" required maxlength="128" placeholder="ana"; }
                    div.field { label for="assign-reason" { "Reason" } input #assign-reason type="text" name="reason" maxlength="500" placeholder="on call"; }
                    button.primary type="submit" { "Assign" }
                }
                form.actions-row method="post" action=(action) #escalate-form {
                    (csrf(ctx))
                    input type="hidden" name="action" value="escalate";
                    div.field { label for="escalate-to" { "Escalate to (tenant, or a team)" } input #escalate-to type="text" name="to" required maxlength="128" placeholder="tenant"; }
                    div.field { label for="escalate-reason" { "Reason" } input #escalate-reason type="text" name="reason" required maxlength="500"; }
                    button type="submit" { "Escalate" }
                }
                form.actions-row method="post" action=(action) #note-form {
                    (csrf(ctx))
                    input type="hidden" name="action" value="note";
                    div.field { label for="note-text" { "Note" } input #note-text type="text" name="text" required maxlength="2048"; }
                    button type="submit" { "Add note" }
                }
            } @else if state == "folded" {
                p.muted { "A fold's member: act on its representative." }
            }
        }
    }
}

/// Assigns, escalates or notes one dead letter (`action`: assign, escalate, note; `to`,
/// `text`, `reason`), sent as the API sends it, then back to its page with the result.
pub async fn review(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((tenant, id)): PathArgs<(String, String)>,
    Form(f): Form,
) -> PageResult {
    let full = format!("{tenant}/{id}");
    let ids = ids_of(&ctx.principal, std::slice::from_ref(&full)).in_page(&ctx)?;
    let to = f.one("to").unwrap_or_default().trim().to_owned();
    let text = f.one("text").unwrap_or_default();
    let reason = f.one("reason").filter(|r| !r.trim().is_empty());
    let (command, default_reason) = match f.one("action").as_deref() {
        Some("assign") => {
            validate_assignee(&to)
                .map_err(|e| ApiError::bad_request(e.replace("--to", "Assign to")))
                .in_page(&ctx)?;
            let spec = ReviewSpec {
                ids,
                to,
                text: String::new(),
            };
            (AdminCommand::Assign(spec), Some("assigned for review"))
        }
        Some("escalate") => {
            let spec = ReviewSpec {
                ids,
                to,
                text: String::new(),
            };
            (AdminCommand::Escalate(spec), None)
        }
        Some("note") => {
            let spec = ReviewSpec {
                ids,
                to: String::new(),
                text,
            };
            (AdminCommand::Note(spec), Some("note"))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "'{}' is not a review action; the actions are assign, escalate, note",
                other.unwrap_or("")
            )))
            .in_page(&ctx)
        }
    };
    let sent = send_move(
        &st,
        &ctx.principal,
        command,
        ChangeMeta::new(reason, None),
        default_reason,
    )
    .await
    .in_page(&ctx)?;
    let back = format!(
        "/dead-letters/{}/{}{}",
        seg(&tenant),
        seg(&id),
        query(&[("sent", sent.id())])
    );
    Ok(Redirect::to(&ctx.url(&back)).into_response())
}

/// What the selection's buttons send: replay goes to the wizard with the selected ids (nothing
/// changes yet); resolve and discard are sent at once with the reason given.
pub async fn bulk(State(st): State<AppState>, ctx: Ctx, Form(f): Form) -> PageResult {
    let ids = f.all("id");
    let action = f.one("action").unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "no dead letter is selected: tick the ones to act on, or use \"Replay all matching\"",
        ))
        .in_page(&ctx);
    }
    match action.as_str() {
        "replay" => {
            let pairs: Vec<(&str, &str)> = ids.iter().map(|i| ("id", i.as_str())).collect();
            Ok(Redirect::to(&ctx.url(&format!("/replay{}", query(&pairs)))).into_response())
        }
        "resolve" | "discard" => {
            if ctx.read_only {
                return Err(read_only_error()).in_page(&ctx);
            }
            let body = RemoveBody {
                ids,
                reason: f.one("reason"),
                ..RemoveBody::default()
            };
            let sent = send_remove(&st, &ctx.principal, body, action == "resolve")
                .await
                .in_page(&ctx)?;
            Ok(to_command(&ctx, &sent))
        }
        other => Err(ApiError::bad_request(format!(
            "'{other}' is not an action; the actions are replay, resolve, discard"
        )))
        .in_page(&ctx),
    }
}
