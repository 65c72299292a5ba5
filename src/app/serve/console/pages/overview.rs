//! `GET /`: every tenant the login may see — lane depth, pending, retries due, dead letters,
//! breaker, and the last hour's throughput and failure rate — with the fleet's live members.
//! The figures are `GET /api/v1/health?window=1h`'s.

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;
use serde_json::Value;

use crate::app::serve::console::html::{
    breaker_badge, count, percent, query, respond, shell, title, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::extract::Params;
use crate::app::serve::routes::health::health_doc;
use crate::app::serve::state::AppState;

/// The overview.
pub async fn page(State(st): State<AppState>, ctx: Ctx) -> PageResult {
    let mut q = Params::parse("window=1h");
    let h = health_doc(&st, &ctx.principal, &mut q)
        .await
        .in_page(&ctx)?;
    let tenants: &[Value] = h["tenants"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let overall = &h["overall"];
    let members: Vec<&str> = h["live_members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let finished =
        |w: &Value| w["completed"].as_u64().unwrap_or(0) + w["dead_lettered"].as_u64().unwrap_or(0);
    let failure = |w: &Value| {
        let f = finished(w);
        (f > 0).then(|| w["dead_lettered"].as_u64().unwrap_or(0) as f64 / f as f64)
    };
    let open: usize = tenants.iter().filter(|t| t["breaker"] != "closed").count();
    let total_failure = failure(&overall["window"]);
    let dl_url = |t: &str| ctx.url(&format!("/dead-letters{}", query(&[("tenant", t)])));
    let body = html! {
        (title("Overview", html! { span { "last hour · " (tenants.len()) " tenants" } }))
        div.cards {
            div.card { div.label { "Tenants" } div.value { (tenants.len()) } div.sub { (open) " breaker" @if open != 1 { "s" } " not closed" } }
            div class={ "card" @if overall["dead_letters"].as_u64().unwrap_or(0) > 0 { " bad" } } {
                div.label { "Dead letters" } div.value #total-dead-letters { (count(&overall["dead_letters"])) }
                div.sub { a href=(ctx.url("/dead-letters")) { "Triage →" } }
            }
            div.card { div.label { "Waiting" } div.value { (count(&overall["lane_depth"])) } div.sub { (count(&overall["pending"])) " running" } }
            div.card { div.label { "Retries due" } div.value { (count(&overall["retries_due"])) } div.sub { (count(&overall["retries_scheduled"])) " scheduled" } }
            div.card { div.label { "Finished / hour" } div.value { (finished(&overall["window"])) } div.sub { (count(&overall["window"]["recovered"])) " recovered" } }
            div class={ "card" @if total_failure.unwrap_or(0.0) > 0.05 { " bad" } @else { " ok" } } {
                div.label { "Failure rate" } div.value { (percent(&total_failure.map(Value::from).unwrap_or(Value::Null))) } div.sub { "dead-lettered / finished" }
            }
            div class={ "card" @if members.is_empty() { " bad" } } {
                div.label { "Members alive" } div.value { (members.len()) }
                div.sub.mono title=(members.join(", ")) { @if members.is_empty() { "changes cannot run" } @else { (members.join(", ")) } }
            }
        }
        div.table-wrap {
            table #tenants data-nav {
                thead { tr {
                    th { "Tenant" } th { "Breaker" } th.num { "Lane" } th.num { "Running" }
                    th.num { "Retries due" } th.num { "Dead letters" } th.num { "Done / h" }
                    th.num { "Dead-lettered / h" } th.num { "Failure rate" }
                } }
                tbody {
                    @for t in tenants {
                        @let name = t["tenant"].as_str().unwrap_or("");
                        tr data-tenant=(name) {
                            td { a href=(dl_url(name)) { b { (name) } } }
                            td { (breaker_badge(t["breaker"].as_str().unwrap_or(""))) }
                            td.num { (count(&t["lane_depth"])) }
                            td.num { (count(&t["pending"])) }
                            td.num { (count(&t["retries_due"])) }
                            td.num { a href=(dl_url(name)) { (count(&t["dead_letters"])) } }
                            td.num { (count(&t["window"]["completed"])) }
                            td.num { (count(&t["window"]["dead_lettered"])) }
                            td.num { (percent(&failure(&t["window"]).map(Value::from).unwrap_or(Value::Null))) }
                        }
                    }
                    @if tenants.is_empty() {
                        tr { td.empty colspan="9" { "No tenant yet: nothing was enqueued for the tenants this login may see." } }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        shell(&ctx, Nav::Overview, "Overview", body),
    ))
}
