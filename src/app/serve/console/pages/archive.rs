//! `GET /archive`: the archived dead letters of the tenants the login may see, a page at a time
//! (`GET /api/v1/archive`: from the manifests, no payloads), filtered by tenant and days.
//! `GET /archive/{tenant}/{id}`: one archived dead letter whole (`GET /api/v1/tenants/{tenant}/
//! archive/{id}`, payloads hidden as there), with, for an operator, its restore —
//! `POST /archive/restore`, sent as the API sends it, then to the command's status.

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;
use serde_json::Value;

use super::dead_letters::api_query;
use crate::app::serve::auth::Role;
use crate::app::serve::console::form::{Fields, Form};
use crate::app::serve::console::html::{
    age, class_chip, csrf, json_block, query, read_only_error, respond, seg, shell, text, title,
    to_command, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::extract::{Params, PathArgs};
use crate::app::serve::routes::archive::{list_doc, send_restore, show_doc};
use crate::app::serve::state::AppState;
use crate::app::serve::submit::ChangeMeta;

/// The query parameters the archive's page passes on to the API.
const KEYS: [&str; 5] = ["tenant", "since", "until", "limit", "after"];

/// A page of the archive.
pub async fn list(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let tenants = ctx
        .principal
        .visible(st.broker.tenants().await.in_page(&ctx)?);
    let mut q = Params::parse(&api_query(&f, &KEYS));
    let page = list_doc(&st, &ctx.principal, &mut q).await.in_page(&ctx)?;
    let entries: &[Value] = page["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let chosen = f.all("tenant");
    let filter_q = api_query(&f, &["tenant", "since", "until", "limit"]);
    let next = page["next"].as_str().map(|n| {
        let sep = if filter_q.is_empty() { "" } else { "&" };
        ctx.url(&format!(
            "/archive?{filter_q}{sep}{}",
            &query(&[("after", n)])[1..]
        ))
    });
    let body = html! {
        (title("Archive", html! { span.muted { (text(&page["archive"])) } }))
        form.panel.filters method="get" action=(ctx.url("/archive")) role="search" aria-label="Filter the archive" {
            div.field {
                label for="a-tenant" { "Tenant" }
                select #a-tenant name="tenant" {
                    option value="" { "every tenant" }
                    @for t in &tenants {
                        option value=(t) selected[chosen.contains(t)] { (t) }
                    }
                }
            }
            div.field { label for="a-since" { "Archived since" } input #a-since type="text" name="since" placeholder="7d" value=[f.one("since")]; }
            div.field { label for="a-until" { "until" } input #a-until type="text" name="until" placeholder="2025-01-31T00:00:00Z" value=[f.one("until")]; }
            div.actions {
                button.primary type="submit" { "Filter" }
                a.button href=(ctx.url("/archive")) { "Clear" }
            }
        }
        div.table-wrap {
            table #archive data-nav {
                thead { tr {
                    th { "Archived (day)" } th { "Tenant" } th { "Dead letter" } th { "Why" }
                    th { "Class" } th { "Kind" } th { "Task id" } th { "Encrypted" }
                } }
                tbody {
                    @for e in entries {
                        @let id = e["id"].as_str().unwrap_or("");
                        @let (tenant, entry) = id.split_once('/').unwrap_or(("", id));
                        tr data-id=(id) {
                            td.nowrap { (text(&e["day"])) }
                            td { (tenant) }
                            td { a.mono href=(ctx.url(&format!("/archive/{}/{}", seg(tenant), seg(entry)))) { (entry) } }
                            td { (text(&e["archive_class"])) }
                            td { (class_chip(e["class"].as_str().unwrap_or(""))) }
                            td { (text(&e["kind"])) }
                            td.mono { (text(&e["task_id"])) }
                            td { @if e["encrypted"] == true { span.badge { "encrypted" } } @else { span.muted { "no" } } }
                        }
                    }
                    @if entries.is_empty() { tr { td.empty colspan="8" { "Nothing archived matches." } } }
                }
            }
        }
        div.pager {
            span { (entries.len()) " on this page" }
            @if f.one("after").is_some() {
                a href={ (ctx.url("/archive")) @if !filter_q.is_empty() { "?" (filter_q) } } { "First page" }
            }
            @if let Some(n) = next { a.button #next-page href=(n) rel="next" { "Next page →" } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Archive, "Archive", body),
    ))
}

/// One archived dead letter whole, and its restore.
pub async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((tenant, id)): PathArgs<(String, String)>,
) -> PageResult {
    let d = show_doc(&st, &ctx.principal, &tenant, &id)
        .await
        .in_page(&ctx)?;
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let full = format!("{tenant}/{id}");
    let a = &d["archive"];
    let hidden = d["hidden"].as_array().is_some_and(|h| !h.is_empty());
    let operator = ctx.principal.role() >= Role::Operator && !ctx.read_only;
    let restored = a["restored_as"].as_str();
    let body = html! {
        div.crumbs { a href=(ctx.url("/archive")) { "Archive" } " / " (tenant) }
        (title(&format!("Archived dead letter {full}"), html! { (class_chip(d["class"].as_str().unwrap_or(""))) }))
        div.grid-2 {
            section.panel aria-labelledby="h-what" {
                h2 #h-what { "What failed" }
                dl.facts {
                    dt { "Task id" } dd.mono { (text(&d["task_id"])) }
                    dt { "Kind" } dd { (text(&d["kind"])) }
                    dt { "Error" } dd.mono { (text(&d["error"])) }
                    dt { "Fingerprint" } dd.mono { (text(&d["fingerprint"])) }
                    dt { "Attempts" } dd { (text(&d["attempt"])) }
                    dt { "Dead-lettered" } dd { (age(now, d["dead_lettered_at"].as_u64().unwrap_or(0))) " · " (text(&d["dead_lettered_at_iso"])) }
                }
            }
            section.panel aria-labelledby="h-archive" {
                h2 #h-archive { "In the archive" }
                dl.facts {
                    dt { "Why" } dd #archive-class { (text(&a["class"])) }
                    dt { "Object" } dd.mono { (text(&a["object"])) }
                    dt { "Restored as" } dd #restored-as {
                        @if let Some(r) = restored {
                            @let (rt, rid) = r.split_once('/').unwrap_or(("", r));
                            a.mono href=(ctx.url(&format!("/dead-letters/{}/{}", seg(rt), seg(rid)))) { (r) }
                        } @else { span.muted { "not restored" } }
                    }
                }
                @if operator && restored.is_none() {
                    form.actions-row method="post" action=(ctx.url("/archive/restore")) #restore-form {
                        (csrf(&ctx))
                        input type="hidden" name="id" value=(full);
                        div.field { label for="restore-reason" { "Reason" } input #restore-reason type="text" name="reason" maxlength="500" placeholder="restored from the archive"; }
                        button.primary type="submit" { "Restore as a dead letter" }
                    }
                } @else if restored.is_none() {
                    p.muted { "Restoring needs an operator's token." }
                }
            }
        }
        section.panel aria-labelledby="h-payload" {
            h2 #h-payload { "Payload" }
            @if hidden {
                p.hidden-note { "The payload is hidden: this login's token may not see payloads and outputs." }
            } @else {
                details #payload open { summary { "Payload" } (json_block(&d["payload"])) }
            }
            details { summary { "Every field" } (json_block(&d)) }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Archive, &format!("Archived {full}"), body),
    ))
}

/// Restores the archived dead letters named by `id` (with `reason`), then to the command.
pub async fn restore(State(st): State<AppState>, ctx: Ctx, Form(f): Form) -> PageResult {
    if ctx.read_only {
        return Err(read_only_error()).in_page(&ctx);
    }
    let ids = f.all("id");
    let reason = f.one("reason").filter(|r| !r.trim().is_empty());
    let sent = send_restore(&st, &ctx.principal, &ids, ChangeMeta::new(reason, None))
        .await
        .in_page(&ctx)?;
    Ok(to_command(&ctx, &sent))
}
