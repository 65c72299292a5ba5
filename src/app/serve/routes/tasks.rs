//! Task lookup: one task by id (`task show --json`: its record, or where it is when it has
//! none) and a tenant's tasks by their records (`task list --json`), within the token's
//! tenants. A viewer that may not see outputs gets them hidden.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::admin::lookup::{self, Lookup};
use crate::admin::time::parse_time;
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Params, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::redact;
use crate::app::serve::state::AppState;
use crate::app::view;
use crate::broker::{TaskCursor, TaskFilter};
use crate::records::TaskState;

/// The most index entries one page reads (a selective filter may fill a page slowly; the page
/// then ends early with a cursor to go on), as `task list`.
const LIST_SCAN_MAX: usize = 100_000;

/// One task: its record (state, attempts, times, member, last failure, dead letter, replay
/// links, output, runs), or — without one — where the scans found it (`scan_limit` entries of
/// each place at most, default 10000).
pub async fn show(
    State(st): State<AppState>,
    p: Principal,
    PathArgs((tenant, task_id)): PathArgs<(String, String)>,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    let scan_limit = q.number("scan_limit", 10_000usize, 1, 10_000_000)?;
    q.finish()?;
    Ok(Json(
        show_doc(&st, &p, &tenant, &task_id, scan_limit).await?,
    ))
}

/// The document of `GET /api/v1/tenants/{tenant}/tasks/{task_id}` (the console's task lookup
/// shows it): its record, or where it was found; 404 with the places searched.
pub async fn show_doc(
    st: &AppState,
    p: &Principal,
    tenant: &str,
    task_id: &str,
    scan_limit: usize,
) -> ApiResult<Value> {
    let tenant = p.tenant(tenant)?;
    crate::task::validate_task_id(task_id)
        .map_err(|e| ApiError::bad_request(format!("task id: {e}")))?;
    match lookup::find(&st.broker, &tenant, task_id, scan_limit).await? {
        Lookup::Record(r) => {
            let mut v = view::task_json(&tenant, task_id, &r);
            if !p.sees_payloads() {
                redact::task(&mut v);
            }
            Ok(v)
        }
        Lookup::Located(l) => Ok(view::located_json(&tenant, task_id, &l)),
        Lookup::NotFound(l) => Err(ApiError::not_found(format!(
            "task {tenant}/{task_id}: no record, and not found in {} (a finished task's record \
             expires after tasks.retention)",
            view::searched_text(&l.searched)
        ))
        .with_details(view::located_json(&tenant, task_id, &l))),
    }
}

/// A tenant's tasks, newest first: `state`, `kind`, `since` (record created at or after),
/// `cursor`, `limit` (1 to 10000, default 50).
pub async fn list(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    let state = q.one("state")?;
    let kind = q.one("kind")?;
    let since = q.one("since")?;
    let cursor = q.one("cursor")?;
    let limit = q.number("limit", 50usize, 1, 10_000)?;
    q.finish()?;
    let tenant = p.tenant(&tenant)?;
    let state = state
        .as_deref()
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state '{s}' is not a task state; the states are {}",
                    TaskState::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
        })
        .transpose()?;
    if let Some(k) = &kind {
        crate::task::validate_kind(k).map_err(|e| ApiError::bad_request(format!("kind: {e}")))?;
    }
    let cursor = cursor
        .as_deref()
        .map(|c| TaskCursor::parse(c).map_err(|e| ApiError::bad_request(format!("cursor: {e}"))))
        .transpose()?;
    let now = st.broker.server_time_ms().await?;
    let since_ms = since
        .as_deref()
        .map(|t| parse_time(t, now).map_err(|e| ApiError::bad_request(format!("since: {e}"))))
        .transpose()?;
    let filter = TaskFilter {
        state,
        kind,
        since_ms,
    };
    let page = st
        .broker
        .task_list(&tenant, &filter, cursor.as_ref(), limit, LIST_SCAN_MAX)
        .await?;
    Ok(Json(json!({
        "tenant": tenant,
        "tasks": page.tasks.iter().map(view::task_list_json).collect::<Vec<_>>(),
        "next_cursor": page.next.as_ref().map(|c| c.to_string()),
        "scanned": page.scanned,
    })))
}
