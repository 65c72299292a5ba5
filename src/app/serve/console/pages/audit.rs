//! `GET /audit`: the admin audit trail, newest first, a page at a time (`GET /api/v1/audit`:
//! a scoped login sees the commands that touch only its tenants), each linking to its
//! command's page.

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;
use serde_json::Value;

use super::commands::outcome_badge;
use super::dead_letters::api_query;
use crate::app::serve::console::form::Fields;
use crate::app::serve::console::html::{
    age, query, respond, seg, shell, text, title, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::extract::Params;
use crate::app::serve::routes::commands::audit_doc;
use crate::app::serve::state::AppState;

/// The audit page.
pub async fn page(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let mut q = Params::parse(&format!("limit=50&{}", api_query(&f, &["cursor"])));
    let doc = audit_doc(&st, &ctx.principal, &mut q).await.in_page(&ctx)?;
    let now = st.broker.server_time_ms().await.in_page(&ctx)?;
    let entries: &[Value] = doc["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let ms = |v: &Value| v.as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    let body = html! {
        (title("Audit trail", html! { span { "newest first" } }))
        div.table-wrap {
            table #audit data-nav {
                thead { tr { th { "When" } th { "Who" } th { "Command" } th { "Outcome" } th { "Why" } th { "What happened" } th { "Command id" } } }
                tbody {
                    @for e in entries {
                        @let id = e["command_id"].as_str().unwrap_or("");
                        tr {
                            td.nowrap { (age(now, ms(&e["finished_at"]))) }
                            td.mono { (text(&e["operator"])) }
                            td { span.chip { (text(&e["command"])) } }
                            td { (outcome_badge(e["outcome"].as_str().unwrap_or(""))) }
                            td { (text(&e["reason"])) }
                            td.error title=(text(&e["message"])) { (text(&e["message"])) }
                            td { a.mono href=(ctx.url(&format!("/commands/{}", seg(id)))) { (id) } }
                        }
                    }
                    @if entries.is_empty() { tr { td.empty colspan="7" { "No command yet (or none within this login's tenants)." } } }
                }
            }
        }
        div.pager {
            @if f.one("cursor").is_some() { a href=(ctx.url("/audit")) { "Newest" } }
            @if let Some(c) = doc["next_cursor"].as_str() { a.button rel="next" href=(ctx.url(&format!("/audit{}", query(&[("cursor", c)])))) { "Older →" } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Audit, "Audit", body),
    ))
}
