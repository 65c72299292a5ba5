//! `GET /breakers`: every breaker of the tenants the login may see (`GET /api/v1/breakers`),
//! with open (hold) and close for an admin — `POST /breakers/{tenant}/open|close`, sent as the
//! API sends them, then back here with the command's result.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde_json::Value;

use super::commands::outcome_badge;
use crate::app::serve::auth::Role;
use crate::app::serve::console::form::{Fields, Form};
use crate::app::serve::console::html::{
    age, breaker_badge, count, csrf, query, respond, seg, shell, text, title, InPage, Nav,
    PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::extract::PathArgs;
use crate::app::serve::routes::breakers::{list_doc, set_breaker, BreakerBody};
use crate::app::serve::routes::commands::status_doc;
use crate::app::serve::state::AppState;

/// The breakers page (`sent` names a command just sent from it: its result is shown).
pub async fn list(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let doc = list_doc(&st, &ctx.principal).await.in_page(&ctx)?;
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let sent = match f.one("sent") {
        Some(id) => status_doc(&st, &ctx.principal, &id).await.ok(),
        None => None,
    };
    let rows: &[Value] = doc["breakers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let admin = ctx.principal.role() >= Role::Admin && !ctx.read_only;
    let body = html! {
        (title("Breakers", html! { span { (rows.len()) " tenants" } }))
        @if let Some(s) = &sent {
            @let r = &s["result"];
            div class={ "notice " @if r["outcome"] == "ok" { "ok" } @else { "bad" } } role="status" #sent {
                (outcome_badge(r["outcome"].as_str().unwrap_or(""))) " " (text(&r["message"]))
                " · " a href=(ctx.url(&format!("/commands/{}", seg(s["command_id"].as_str().unwrap_or(""))))) { "command" }
            }
        }
        div.table-wrap {
            table #breakers data-nav {
                thead { tr {
                    th { "Tenant" } th { "State" } th { "Since" } th { "Why" } th { "By" }
                    th.num { "Deferred" } th.num { "Transitions" }
                    @if admin { th { "Change (with a reason)" } }
                } }
                tbody {
                    @for row in rows {
                        @let t = row["tenant"].as_str().unwrap_or("");
                        @let b = &row["breaker"];
                        @let state = b["state"].as_str().unwrap_or("");
                        tr data-tenant=(t) {
                            td { a href=(ctx.url(&format!("/dead-letters{}", query(&[("tenant", t)])))) { b { (t) } } }
                            td {
                                (breaker_badge(state))
                                @if b["held"] == true { " " span.badge.warn title="held open by an operator until closed by hand" { "held" } }
                                @if let Some(ms) = b["cooldown_left_ms"].as_u64() { div.hint { "cool-down " (ms / 1000) " s left" } }
                            }
                            td { (age(now, b["since_ms"].as_u64().unwrap_or(0))) }
                            td { (text(&b["reason"])) @if let Some(d) = b["detail"].as_str().filter(|d| !d.is_empty()) { div.hint { (d) } } }
                            td.mono { (text(&b["by"])) }
                            td.num { (count(&b["deferred"])) }
                            td.num { (count(&b["transitions"])) }
                            @if admin {
                                td {
                                    @if state == "closed" {
                                        form.actions-row method="post" action=(ctx.url(&format!("/breakers/{}/open", seg(t)))) data-confirm={ "Open " (t) "'s breaker? Its tasks stop running until it is closed." } {
                                            (csrf(&ctx))
                                            input type="text" name="reason" placeholder="incident 42" aria-label={ "Reason to open " (t) } maxlength="500";
                                            button.danger type="submit" { "Open" }
                                        }
                                    } @else {
                                        form.actions-row method="post" action=(ctx.url(&format!("/breakers/{}/close", seg(t)))) {
                                            (csrf(&ctx))
                                            input type="text" name="reason" placeholder="fixed upstream" aria-label={ "Reason to close " (t) } maxlength="500";
                                            button.primary type="submit" { "Close" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if rows.is_empty() { tr { td.empty colspan="8" { "No tenant yet." } } }
                }
            }
        }
        @if ctx.principal.role() < Role::Admin {
            p.muted { "Opening and closing breakers needs an admin's token." }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Breakers, "Breakers", body),
    ))
}

/// Opens a tenant's breaker (held until closed by hand).
pub async fn open(
    st: State<AppState>,
    ctx: Ctx,
    tenant: PathArgs<String>,
    form: Form,
) -> PageResult {
    set(st, ctx, tenant, form, true).await
}

/// Closes a tenant's breaker.
pub async fn close(
    st: State<AppState>,
    ctx: Ctx,
    tenant: PathArgs<String>,
    form: Form,
) -> PageResult {
    set(st, ctx, tenant, form, false).await
}

async fn set(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(tenant): PathArgs<String>,
    Form(f): Form,
    open: bool,
) -> PageResult {
    let body = BreakerBody {
        reason: f.one("reason"),
        command_id: None,
    };
    let sent = set_breaker(&st, &ctx.principal, &tenant, body, open)
        .await
        .in_page(&ctx)?;
    Ok(
        Redirect::to(&ctx.url(&format!("/breakers{}", query(&[("sent", sent.id())]))))
            .into_response(),
    )
}
