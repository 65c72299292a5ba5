//! The admin trail: the audit log (`GET /api/v1/audit`, newest first), one command's state,
//! result and replay progress (`GET /api/v1/commands/{id}`), and the cancel of a running
//! replay job (`POST /api/v1/commands/{id}/cancel`). A tenant-scoped token sees the entries
//! and commands that touch only its tenants, whoever sent them (the API, the CLI, `--local`):
//! the member that runs a command records the tenants it touches in its record and its audit
//! entry ([`crate::admin::scope`]). A command that touches another tenant too, or every tenant
//! (a filter without tenants), is not shown to it: showing it would tell of the others.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::admin::replay::job::JobRecord;
use crate::admin::scope;
use crate::admin::select::parse_stream_id;
use crate::admin::{validate_command_id, AdminCommand, CancelSpec, Envelope, ReplaySpec};
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Body, Params, PathArgs};
use crate::app::serve::principal::{touches, Principal, Touches};
use crate::app::serve::state::AppState;
use crate::app::serve::submit::{send, ChangeMeta, Sent, Wait};
use crate::broker::{Broker, Entry};

/// Audit entries read per page while looking for a scoped token's.
const AUDIT_PAGE: usize = 200;
/// The most audit entries one request reads looking for a scoped token's; the page then ends
/// early with a cursor to go on.
const AUDIT_SCAN_MAX: usize = 10_000;

/// What an audit entry says about the tenants its command touches.
enum Scoped {
    /// Its `tenants` field, written by the member that ran the command.
    Recorded(Touches),
    /// No such field (written before members recorded it): its command, when readable.
    Command(Option<Box<AdminCommand>>),
}

/// One audit entry as `redrive admin audit --json` prints it: the entry id, then its fields
/// (`args`, `details` and `tenants` parsed).
fn audit_json(e: Entry) -> (Value, Scoped) {
    let mut m = Map::new();
    m.insert("audit_id".into(), Value::String(e.id.clone()));
    let mut command = None;
    let mut recorded = None;
    for (k, v) in e.fields.unwrap_or_default() {
        let k = String::from_utf8_lossy(&k).into_owned();
        let v = String::from_utf8_lossy(&v).into_owned();
        if k == "args" {
            command = serde_json::from_str::<AdminCommand>(&v).ok();
        }
        if k == scope::FIELD {
            recorded = Some(Touches::from_json(&v));
        }
        let typed = if k == "args" || k == "details" || k == scope::FIELD {
            serde_json::from_str(&v).unwrap_or(Value::String(v))
        } else {
            Value::String(v)
        };
        m.insert(k, typed);
    }
    let scoped = match recorded {
        Some(t) => Scoped::Recorded(t),
        None => Scoped::Command(command.map(Box::new)),
    };
    (Value::Object(m), scoped)
}

/// The audit trail, newest first: `limit` entries (1 to 1000, default 20) before `cursor` (the
/// `next_cursor` of the page before).
pub async fn audit(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    Ok(Json(audit_doc(&st, &p, &mut q).await?))
}

/// The document of `GET /api/v1/audit` for the query `q` (the console's audit page shows it).
pub async fn audit_doc(st: &AppState, p: &Principal, q: &mut Params) -> ApiResult<Value> {
    let limit = q.number("limit", 20usize, 1, 1_000)?;
    let cursor = q.one("cursor")?;
    q.finish()?;
    if let Some(c) = &cursor {
        if parse_stream_id(c).is_none() {
            return Err(ApiError::bad_request(format!(
                "cursor: '{c}' is not an audit entry id like 1763800000000-0"
            )));
        }
    }
    let b = &st.broker;
    let mut out: Vec<Value> = Vec::new();
    let mut before = cursor;
    let mut scanned = 0;
    let mut jobs: HashMap<String, Touches> = HashMap::new();
    // Where the next page starts: after the last entry shown when one more was found, after
    // the last entry read when the scan bound stopped the search; none at the trail's end.
    let next = 'pages: loop {
        let want = if p.is_unscoped() {
            limit - out.len() + 1
        } else {
            AUDIT_PAGE
        };
        let page = b.admin_audit(before.as_deref(), want).await?;
        let len = page.len();
        for e in page {
            scanned += 1;
            let id = e.id.clone();
            let (v, scoped) = audit_json(e);
            let seen = match &scoped {
                _ if p.is_unscoped() => true,
                Scoped::Recorded(t) => p.may_see_touches(t),
                Scoped::Command(Some(c)) => p.may_see_touches(&touches(b, c, &mut jobs).await?),
                Scoped::Command(None) => false,
            };
            if seen {
                if out.len() == limit {
                    break 'pages before;
                }
                out.push(v);
            }
            before = Some(id);
        }
        if len < want {
            break None;
        }
        if scanned >= AUDIT_SCAN_MAX {
            break before;
        }
    };
    Ok(json!({ "entries": out, "next_cursor": next }))
}

/// The replay job command `id` runs, with the job's record: its own (a replay's job is named
/// after its command id), or for a resume the job it names — read from its result once done,
/// from its entry in the admin stream while a member runs it. `None` for other commands, a
/// resume no member has begun yet, and a job whose record has expired.
pub async fn job_of(
    b: &Broker,
    id: &str,
    record: Option<&HashMap<String, String>>,
) -> crate::error::Result<Option<(String, HashMap<String, String>)>> {
    if let Some(j) = b.job_get(id).await? {
        return Ok(Some((id.to_owned(), j)));
    }
    let Some(r) = record else { return Ok(None) };
    let from_result = r
        .get("result")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|v| v["command"] == "replay")
        .and_then(|v| v["details"]["job"].as_str().map(str::to_owned));
    let named = match (from_result, r.get("entry")) {
        (Some(job), _) => Some(job),
        (None, Some(entry)) if parse_stream_id(entry).is_some() => b
            .admin_command_entry(entry)
            .await?
            .and_then(|e| e.fields)
            .and_then(|f| Envelope::from_fields(&f).ok())
            .and_then(|env| match env.command {
                AdminCommand::Replay(ReplaySpec {
                    resume: Some(job), ..
                }) => Some(job),
                _ => None,
            }),
        _ => None,
    };
    let Some(job) = named.filter(|j| j != id) else {
        return Ok(None);
    };
    Ok(b.job_get(&job).await?.map(|j| (job, j)))
}

/// One command: its state (`queued` until a member takes it, then `running`, `done` or
/// `expired`), its record, its result once done, and — for a replay or the resume of one — its
/// job's progress (`progress.job` names the job).
pub async fn status(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(status_doc(&st, &p, &id).await?))
}

/// The document of `GET /api/v1/commands/{id}` (the console's command page shows it, and its
/// script polls the route).
pub async fn status_doc(st: &AppState, p: &Principal, id: &str) -> ApiResult<Value> {
    validate_command_id(id).map_err(ApiError::bad_request)?;
    let not_found = || {
        ApiError::not_found(format!(
            "command {id} not found (never sent, or its record expired after admin.record_ttl_ms)"
        ))
    };
    let b = &st.broker;
    let record = b.admin_record(id).await?;
    let touched = scope::recorded(b, id, record.as_ref()).await?;
    if !p.is_unscoped() && !touched.as_ref().is_some_and(|t| p.may_see_touches(t)) {
        return Err(not_found());
    }
    let job = job_of(b, id, record.as_ref()).await?;
    let state = match (&record, &touched) {
        (Some(r), _) => r.get("state").cloned().unwrap_or_else(|| "unknown".into()),
        (None, Some(_)) => "queued".into(),
        (None, None) => return Err(not_found()),
    };
    let result: Option<Value> = record
        .as_ref()
        .and_then(|r| r.get("result"))
        .and_then(|r| serde_json::from_str(r).ok());
    let progress = job.as_ref().map(|(job_id, j)| {
        let r = JobRecord::from_fields(j);
        json!({
            "job": job_id,
            "state": j.get("state"),
            "selected": r.selected,
            "replayed": r.counts.replayed,
            "skipped": r.counts.skipped,
            "refused": r.counts.refused,
            "invalid": r.counts.invalid,
            "member": r.member,
        })
    });
    Ok(json!({
        "command_id": id,
        "state": state,
        "record": record,
        "result": result,
        "job": job.map(|(_, j)| j),
        "progress": progress,
    }))
}

/// The body of a cancel.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why (default "cancel requested by operator").
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// Asks a running replay job (named by the command id that started it) to stop after its
/// current step; it can be resumed.
pub async fn cancel(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(job): PathArgs<String>,
    Body(body): Body<CancelBody>,
) -> ApiResult<Response> {
    Ok(send_cancel(&st, &p, &job, body).await?.into_response(&st))
}

/// Sends the cancel of replay job `job` as `p` (the console's cancel button sends the same).
pub async fn send_cancel(
    st: &AppState,
    p: &Principal,
    job: &str,
    body: CancelBody,
) -> ApiResult<Sent> {
    validate_command_id(job).map_err(ApiError::bad_request)?;
    let command = AdminCommand::Cancel(CancelSpec {
        job: job.to_owned(),
    });
    let meta = ChangeMeta::new(body.reason, body.command_id);
    send(
        st,
        p,
        command,
        meta,
        Some("cancel requested by operator"),
        Wait::Result,
    )
    .await
}
