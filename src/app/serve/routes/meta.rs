//! `GET /api/v1/me` (who the token is) and `GET /api/v1/openapi.json` (the API described).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::app::serve::error::ApiResult;
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;

/// The token's name, role, tenants and whether it sees payloads, and whether the server is
/// read-only.
pub async fn me(State(state): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    let mut v = p.to_json();
    if let Some(m) = v.as_object_mut() {
        m.insert("read_only".into(), json!(state.serve.read_only));
    }
    Ok(Json(v))
}

/// The OpenAPI 3.1 document, built from the route table at start.
pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(state.openapi.clone())
}
