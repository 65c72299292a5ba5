//! Sending a change on behalf of a token: through the admin command stream, exactly as the CLI
//! does ([`crate::app::admin_client`]) — the token's name is the operator in the audit trail,
//! a command id makes a re-sent request return the first result, and with no live member the
//! answer is a 503 and nothing is sent. A batch replay answers at once (202) with the command
//! id whose progress `GET /api/v1/commands/{id}` shows; the short commands wait for their
//! result.

use std::collections::HashMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::principal::{touches, Principal};
use super::state::AppState;
use crate::admin::exec::stored;
use crate::admin::{new_command_id, validate_command_id, validate_reason, AdminCommand};
use crate::admin::{CommandResult, Envelope};
use crate::app::admin_client::{require_fleet, wait_quietly};
use crate::telemetry::events;

/// What every change's body carries besides its own fields.
#[derive(Debug, Clone, Default)]
pub struct ChangeMeta {
    /// Why (kept in the audit trail). Required unless the route gives a default.
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result and executes
    /// nothing again.
    pub command_id: Option<String>,
}

impl ChangeMeta {
    /// A change's reason and command id as its body gave them.
    pub fn new(reason: Option<String>, command_id: Option<String>) -> ChangeMeta {
        ChangeMeta { reason, command_id }
    }
}

/// Whether the answer waits for the command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Answer 202 at once with the command id (batch replays).
    No,
    /// Wait for the result (up to `admin.reply_timeout_ms`), like the CLI.
    Result,
}

/// What became of a change that was sent (or had been sent under its command id).
#[derive(Debug, Clone)]
pub enum Sent {
    /// On its way, or running: its status is at its command's route.
    Accepted {
        /// The command id.
        id: String,
        /// The command's name (`replay`, …).
        command: &'static str,
        /// A replay's job (the command id that started it).
        job: Option<String>,
    },
    /// It finished: its result.
    Done(CommandResult),
}

impl Sent {
    /// The command id.
    pub fn id(&self) -> &str {
        match self {
            Sent::Accepted { id, .. } => id,
            Sent::Done(r) => &r.command_id,
        }
    }

    /// The API's answer: 202 with where the status is, or the result (see [`result_response`]).
    pub fn into_response(self, state: &AppState) -> Response {
        match self {
            Sent::Accepted { id, command, job } => accepted(state, &id, command, job),
            Sent::Done(r) => result_response(r),
        }
    }
}

/// Sends `command` as `principal` (the operator), for `meta.reason` (or `default_reason`).
/// The command's tenants were narrowed to the token's scope by the caller; a command that
/// names a replay job (resume, cancel) is checked here against the job's tenants. The API
/// and the console both send every change through here.
pub async fn send(
    state: &AppState,
    principal: &Principal,
    command: AdminCommand,
    meta: ChangeMeta,
    default_reason: Option<&str>,
    wait: Wait,
) -> ApiResult<Sent> {
    command.validate().map_err(ApiError::bad_request)?;
    let reason = meta
        .reason
        .or_else(|| default_reason.map(str::to_owned))
        .ok_or_else(|| {
            ApiError::bad_request("reason is required: say why, it goes into the audit trail")
        })?;
    validate_reason(&reason).map_err(|e| ApiError::bad_request(e.replace("--reason", "reason")))?;
    let id = match meta.command_id {
        Some(id) => {
            validate_command_id(&id).map_err(ApiError::bad_request)?;
            id
        }
        None => new_command_id(),
    };
    let b = &state.broker;
    let touched = touches(b, &command, &mut HashMap::new()).await?;
    if !principal.may_see_touches(&touched) {
        // Only a resume or a cancel can get here: its job is another tenant's, or gone.
        let job = match &command {
            AdminCommand::Cancel(c) => c.job.clone(),
            AdminCommand::Replay(r) => r.resume.clone().unwrap_or_default(),
            _ => String::new(),
        };
        return Err(ApiError::not_found(format!("replay job {job} not found")));
    }
    // A re-sent command id: its record tells what happened, if the token may see it.
    if let Some(rec) = b.admin_record(&id).await? {
        let theirs = crate::admin::scope::recorded(b, &id, Some(&rec)).await?;
        if !theirs.is_some_and(|t| principal.may_see_touches(&t)) && !principal.is_unscoped() {
            return Err(ApiError::refused(format!(
                "command id {id} is taken; send the change without command_id, or with a new one"
            )));
        }
        return match rec.get("state").map(String::as_str) {
            Some("done") => match stored(b, &id).await? {
                Some(r) => Ok(Sent::Done(r)),
                None => Ok(Sent::accepted(&id, &command)),
            },
            Some("expired") => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "expired",
                format!(
                    "command {id} expired before any member started it and will never run; send \
                     it again with a new command id"
                ),
            )),
            _ => Ok(Sent::accepted(&id, &command)),
        };
    }
    let ctx = &state.ctx;
    require_fleet(ctx).await?;
    let now = b.server_time_ms().await?;
    let timeout = state.settings.admin.reply_timeout;
    let env = Envelope {
        id: id.clone(),
        operator: principal.name().to_owned(),
        reason,
        issued_at_ms: now,
        deadline_ms: now + timeout.as_millis() as u64,
        command,
    };
    b.admin_set_scope(&id, &touched.to_json(), state.settings.admin.record_ttl)
        .await?;
    b.admin_submit(&env.to_fields()).await?;
    events::api::change_sent(&id, env.command.name(), principal.name());
    match wait {
        Wait::No => Ok(Sent::accepted(&id, &env.command)),
        Wait::Result => Ok(Sent::Done(wait_quietly(ctx, &env, timeout).await?)),
    }
}

impl Sent {
    fn accepted(id: &str, command: &AdminCommand) -> Sent {
        let job = match command {
            AdminCommand::Replay(r) => Some(r.resume.clone().unwrap_or_else(|| id.to_owned())),
            _ => None,
        };
        Sent::Accepted {
            id: id.to_owned(),
            command: command.name(),
            job,
        }
    }
}

/// 202: the command is on its way; its status is at `status_url` (also in `Location`).
fn accepted(state: &AppState, id: &str, command: &'static str, job: Option<String>) -> Response {
    let url = format!("{}/api/v1/commands/{id}", state.serve.base_path);
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(json!({
            "command_id": id,
            "command": command,
            "job": job,
            "status_url": url,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A command's result: 200 when it succeeded, else the error its outcome stands for, with
/// the whole result in the details.
pub fn result_response(r: CommandResult) -> Response {
    let status = match r.outcome.as_str() {
        "ok" => return Json(json!({ "result": r })).into_response(),
        "not_found" => StatusCode::NOT_FOUND,
        "refused" | "cancelled" => StatusCode::CONFLICT,
        "invalid" => StatusCode::BAD_REQUEST,
        "expired" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match r.outcome.as_str() {
        "not_found" => "not_found",
        "refused" => "refused",
        "cancelled" => "cancelled",
        "invalid" => "invalid_request",
        "expired" => "expired",
        _ => "command_failed",
    };
    let details = serde_json::to_value(&r).unwrap_or(Value::Null);
    ApiError::new(status, code, r.message.clone())
        .with_details(details)
        .into_response()
}
