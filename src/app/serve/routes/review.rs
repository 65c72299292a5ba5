//! The review moves, as `redrive dlq assign|escalate|note|fold` make them: each narrowed to the
//! token's tenants, then sent through the admin command stream
//! ([`crate::app::serve::submit`]) and answered with its result.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::plain;
use crate::admin::select::{dedup, DlId, Selection};
use crate::admin::{AdminCommand, FoldSpec, ReviewSpec};
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Body, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;
use crate::app::serve::submit::{send, ChangeMeta, Sent, Wait};

/// The body of an assign and of an escalation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Dead letters (`TENANT/ENTRY-ID`; a fold's representative stands for its members).
    #[serde(default)]
    pub ids: Vec<String>,
    /// assign: who reviews them; escalate: `tenant` or a team's name.
    #[serde(default)]
    pub to: String,
    /// Why (kept in the audit trail): required for an escalation.
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// The body of a note.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// Dead letters (`TENANT/ENTRY-ID`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// The note (at most 2048 bytes).
    #[serde(default)]
    pub text: String,
    /// Why (kept in the audit trail; default "note").
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// The body of a fold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldBody {
    /// The fingerprint whose dead letters are folded.
    #[serde(default)]
    pub fingerprint: String,
    /// Why (required, kept in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// The listed dead letters, each of a tenant the token may see (404 otherwise).
pub fn ids_of(p: &Principal, ids: &[String]) -> ApiResult<Vec<DlId>> {
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "ids: give the dead letters (TENANT/ENTRY-ID)",
        ));
    }
    let parsed = ids
        .iter()
        .map(|i| DlId::parse(i, None).map_err(|e| ApiError::bad_request(plain(&e))))
        .collect::<ApiResult<Vec<_>>>()?;
    let mut select = Selection::Ids(dedup(parsed));
    p.narrow_selection(&mut select)?;
    match select {
        Selection::Ids(ids) => Ok(ids),
        Selection::Filter(_) => Err(ApiError::bad_request("ids: give the dead letters")),
    }
}

/// Sends a review command, waiting for its result.
async fn send_review(
    st: &AppState,
    p: &Principal,
    command: AdminCommand,
    meta: ChangeMeta,
    default_reason: Option<&str>,
) -> ApiResult<Response> {
    Ok(send_move(st, p, command, meta, default_reason)
        .await?
        .into_response(st))
}

/// Checks a review command (with the API's names in its messages) and sends it as `p`,
/// waiting for its result: what the API's review routes and the console's review form send.
pub async fn send_move(
    st: &AppState,
    p: &Principal,
    command: AdminCommand,
    meta: ChangeMeta,
    default_reason: Option<&str>,
) -> ApiResult<Sent> {
    command.validate().map_err(|e| {
        ApiError::bad_request(plain(&e).replace("--to", "to").replace("--text", "text"))
    })?;
    send(st, p, command, meta, default_reason, Wait::Result).await
}

/// Assigns dead letters to an operator for review (→ `in_review`).
pub async fn assign(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<ReviewBody>,
) -> ApiResult<Response> {
    let spec = ReviewSpec {
        ids: ids_of(&p, &body.ids)?,
        to: body.to,
        text: String::new(),
    };
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send_review(
        &st,
        &p,
        AdminCommand::Assign(spec),
        meta,
        Some("assigned for review"),
    )
    .await
}

/// Escalates dead letters to their tenant (notified when it has a target for escalations) or
/// a named team (→ `escalated`).
pub async fn escalate(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<ReviewBody>,
) -> ApiResult<Response> {
    let spec = ReviewSpec {
        ids: ids_of(&p, &body.ids)?,
        to: body.to,
        text: String::new(),
    };
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send_review(&st, &p, AdminCommand::Escalate(spec), meta, None).await
}

/// Adds a note to dead letters (their state stays).
pub async fn note(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<NoteBody>,
) -> ApiResult<Response> {
    let spec = ReviewSpec {
        ids: ids_of(&p, &body.ids)?,
        to: String::new(),
        text: body.text,
    };
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send_review(&st, &p, AdminCommand::Note(spec), meta, Some("note")).await
}

/// Folds a tenant's dead letters of one fingerprint under the oldest of them.
pub async fn fold(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
    Body(body): Body<FoldBody>,
) -> ApiResult<Response> {
    let tenant = p.tenant(&tenant)?;
    let command = AdminCommand::Fold(FoldSpec {
        tenant,
        fingerprint: body.fingerprint,
    });
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send_review(&st, &p, command, meta, None).await
}
