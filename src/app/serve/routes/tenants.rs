//! `GET /api/v1/tenants` and `GET /api/v1/tenants/{tenant}`: the tenants report
//! ([`crate::app::tenants`]) of the tenants the token may see.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::PathArgs;
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;
use crate::app::tenants::reports;

/// Every registered tenant the token may see: lane depth, pending, retries (and those due),
/// dead letters, in-flight, cap, weight, breaker.
pub async fn list(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    Ok(Json(list_doc(&st, &p).await?))
}

/// The document of `GET /api/v1/tenants` (the console shows the same).
pub async fn list_doc(st: &AppState, p: &Principal) -> ApiResult<Value> {
    let names = p.visible(st.broker.tenants().await?);
    let r = reports(&st.broker, &st.settings, &names, false).await?;
    Ok(json!({ "tenants": r }))
}

/// One tenant, with its recent breaker transitions.
pub async fn show(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    let t = p.registered_tenant(&st.broker, &tenant).await?;
    let r = reports(&st.broker, &st.settings, &[t], true)
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("tenant '{tenant}' not found")))?;
    Ok(Json(json!({ "tenant": r })))
}
