//! Breakers: every visible tenant's (`GET /api/v1/breakers`), one with its recent transitions
//! (`GET /api/v1/tenants/{tenant}/breaker`), and an admin's open (hold) and close, sent
//! through the admin command stream as `redrive breaker open|close` sends them.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{AdminCommand, BreakerSpec};
use crate::app::serve::error::ApiResult;
use crate::app::serve::extract::{Body, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;
use crate::app::serve::submit::{send, ChangeMeta, Sent, Wait};
use crate::app::tenants::{BreakerReport, TransitionReport};

/// Every breaker of the registered tenants the token may see.
pub async fn list(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    Ok(Json(list_doc(&st, &p).await?))
}

/// The document of `GET /api/v1/breakers` (the console's breakers page shows it).
pub async fn list_doc(st: &AppState, p: &Principal) -> ApiResult<Value> {
    let names = p.visible(st.broker.tenants().await?);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (now, infos) = st.broker.breaker_states(&refs).await?;
    let rows: Vec<Value> = names
        .iter()
        .zip(infos)
        .map(|(t, b)| json!({"tenant": t, "breaker": BreakerReport::new(b, now)}))
        .collect();
    Ok(json!({ "breakers": rows }))
}

/// One tenant's breaker and its recent transitions, oldest first.
pub async fn show(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    let t = p.registered_tenant(&st.broker, &tenant).await?;
    let (now, mut infos) = st.broker.breaker_states(&[t.as_str()]).await?;
    let breaker = infos.pop().map(|b| BreakerReport::new(b, now));
    let transitions: Vec<TransitionReport> = st
        .broker
        .breaker_log(&t, 20)
        .await?
        .into_iter()
        .map(TransitionReport::from)
        .collect();
    Ok(Json(json!({
        "tenant": t,
        "breaker": breaker,
        "transitions": transitions,
    })))
}

/// The body of a breaker change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerBody {
    /// Why (default "by hand"; it goes into the breaker log and the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// Opens a tenant's breaker and holds it open until closed by hand.
pub async fn open(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
    Body(body): Body<BreakerBody>,
) -> ApiResult<Response> {
    set(st, p, tenant, body, true).await
}

/// Closes a tenant's breaker: its tasks run again.
pub async fn close(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
    Body(body): Body<BreakerBody>,
) -> ApiResult<Response> {
    set(st, p, tenant, body, false).await
}

async fn set(
    st: AppState,
    p: Principal,
    tenant: String,
    body: BreakerBody,
    open: bool,
) -> ApiResult<Response> {
    Ok(set_breaker(&st, &p, &tenant, body, open)
        .await?
        .into_response(&st))
}

/// Sends a breaker open (`open`) or close of `tenant` as `p` (the console's breaker buttons
/// send the same).
pub async fn set_breaker(
    st: &AppState,
    p: &Principal,
    tenant: &str,
    body: BreakerBody,
    open: bool,
) -> ApiResult<Sent> {
    let tenant = p.registered_tenant(&st.broker, tenant).await?;
    let command = AdminCommand::Breaker(BreakerSpec { tenant, open });
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send(st, p, command, meta, Some("by hand"), Wait::Result).await
}
