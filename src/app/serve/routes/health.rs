//! `GET /api/v1/health`: what `redrive health --json` reports (per tenant: lane, pending,
//! retries and those due, dead letters by class, settle counts over the window, success rate,
//! breaker; the sum; live members), over the tenants the token may see.

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::window;
use crate::app::report;
use crate::app::serve::error::ApiResult;
use crate::app::serve::extract::Params;
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;

/// Health of the tenants asked for (`tenant`, repeatable) or every one the token may see,
/// over `window` (default 1h).
pub async fn health(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    Ok(Json(health_doc(&st, &p, &mut q).await?))
}

/// The document of `GET /api/v1/health` for the query `q` (the console's overview shows it).
pub async fn health_doc(st: &AppState, p: &Principal, q: &mut Params) -> ApiResult<Value> {
    let asked = q.all("tenant");
    let w = window(q, "1h")?;
    q.finish()?;
    // Never empty for a scoped token: an empty list would mean every tenant.
    let tenants = p.tenants(&asked)?;
    let h = report::health(&st.broker, &tenants, w, st.settings.admin.member_ttl).await?;
    Ok(serde_json::to_value(h).unwrap_or(Value::Null))
}
