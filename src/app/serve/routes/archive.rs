//! The dead-letter archive, as `redrive dlq archive list|show|restore` read and change it: a
//! page of archived dead letters (from the manifests, a cursor continuing), one archived dead
//! letter whole, and a restore through the admin command stream. Every tenant is resolved
//! through the token's scope first: another tenant's archive answers like one that does not
//! exist.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::plain;
use crate::admin::select::{dedup, DlId};
use crate::admin::time::parse_time;
use crate::admin::{AdminCommand, RestoreSpec};
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Body, Params, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::redact;
use crate::app::serve::state::AppState;
use crate::app::serve::submit::{send, ChangeMeta, Sent, Wait};
use crate::app::view::{archived_row, DeadLetterView};
use crate::archive::format::day_text;
use crate::archive::{read, ArchiveStore};
use crate::broker::Entry;

/// The most entries one page of the archive lists.
const MAX_LIMIT: usize = 1_000;

/// The body of a restore.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// Archived dead letters (`TENANT/ENTRY-ID`, their dead-letter ids), 1 to 1000.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Why (kept in the audit trail; default "restored from the archive").
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// The archive, opened from the settings (a directory or a bucket; nothing is sent yet).
fn store(st: &AppState) -> ApiResult<ArchiveStore> {
    Ok(ArchiveStore::open(&st.settings.archive)?)
}

/// A page of archived dead letters: `tenant` (repeatable; default every tenant the token may
/// see), `since` / `until` (days their batches were archived: a duration ago, an RFC 3339
/// time or epoch ms), `limit` (1 to 1000, default 50), `after` (the `next` of the page before).
pub async fn list(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    Ok(Json(list_doc(&st, &p, &mut q).await?))
}

/// The document of `GET /api/v1/archive` for the query `q` (the console's archive page shows
/// it).
pub async fn list_doc(st: &AppState, p: &Principal, q: &mut Params) -> ApiResult<Value> {
    let now = st.broker.server_time_ms().await?;
    let tenants = q.all("tenant");
    let day = |name: &str, v: Option<String>| -> ApiResult<Option<String>> {
        v.map(|t| {
            parse_time(&t, now)
                .map(day_text)
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
        })
        .transpose()
    };
    let since = day("since", q.one("since")?)?;
    let until = day("until", q.one("until")?)?;
    let limit = q.number("limit", 50usize, 1, MAX_LIMIT)?;
    let after = q.one("after")?;
    q.finish()?;
    let tenants = p.tenants(&tenants)?;
    let store = store(st)?;
    let page = read::page(
        &store,
        (!tenants.is_empty()).then_some(tenants.as_slice()),
        since.as_deref(),
        until.as_deref(),
        after.as_deref(),
        limit,
    )
    .await?;
    // An unscoped token's walk over every tenant names only tenants it may see anyway.
    let entries: Vec<Value> = page
        .entries
        .iter()
        .filter(|e| p.may_see(&e.tenant))
        .map(archived_row)
        .collect();
    Ok(json!({
        "archive": store.describe(),
        "entries": entries,
        "next": page.next,
        "manifests_read": page.manifests_read,
    }))
}

/// One archived dead letter whole (payload hidden from a viewer that may not see payloads),
/// with the object holding it, why it was archived and, once restored, its new id.
pub async fn show(
    State(st): State<AppState>,
    p: Principal,
    PathArgs((tenant, id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(show_doc(&st, &p, &tenant, &id).await?))
}

/// The document of `GET /api/v1/tenants/{tenant}/archive/{id}` (the console's page of one
/// archived dead letter shows it).
pub async fn show_doc(st: &AppState, p: &Principal, tenant: &str, id: &str) -> ApiResult<Value> {
    let tenant = p.tenant(tenant)?;
    let id = DlId::parse(id, Some(&tenant)).map_err(ApiError::bad_request)?;
    if id.tenant != tenant {
        return Err(ApiError::bad_request(format!(
            "'{id}' is an entry id of tenant {}: give the bare entry id",
            id.tenant
        )));
    }
    let store = store(st)?;
    let (object, e) = read::find(&store, st.settings.archive.key.as_ref(), &tenant, &id.id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("archived dead letter {id} is not in the archive"))
        })?;
    let restored_as = st
        .broker
        .dlq_restored_as(&tenant, &[id.id.as_str()])
        .await?
        .into_iter()
        .next()
        .flatten();
    let class = e.class;
    let view = DeadLetterView::from_entry(
        &tenant,
        Entry {
            id: e.id.clone(),
            fields: Some(e.fields),
        },
    );
    let mut v = view.to_json();
    if !p.sees_payloads() {
        redact::dead_letter(&mut v);
    }
    v["archive"] = json!({
        "object": object,
        "class": class.as_str(),
        "restored_as": restored_as.map(|r| format!("{tenant}/{r}")),
    });
    Ok(v)
}

/// Puts archived dead letters back as dead letters (through a fleet member, audited; each at
/// most once); waits for the result.
pub async fn restore(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<RestoreBody>,
) -> ApiResult<Response> {
    let meta = ChangeMeta::new(body.reason, body.command_id);
    Ok(send_restore(&st, &p, &body.ids, meta)
        .await?
        .into_response(&st))
}

/// Sends the restore of `ids` as `p` (every one of a tenant it may see: 404 otherwise).
pub async fn send_restore(
    st: &AppState,
    p: &Principal,
    ids: &[String],
    meta: ChangeMeta,
) -> ApiResult<Sent> {
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "ids: give the archived dead letters (TENANT/ENTRY-ID)",
        ));
    }
    let parsed = ids
        .iter()
        .map(|i| DlId::parse(i, None).map_err(|e| ApiError::bad_request(plain(&e))))
        .collect::<ApiResult<Vec<_>>>()?;
    if let Some(d) = parsed.iter().find(|d| !p.may_see(&d.tenant)) {
        return Err(ApiError::not_found(format!(
            "archived dead letter {d} is not in the archive"
        )));
    }
    let spec = RestoreSpec { ids: dedup(parsed) };
    spec.validate()
        .map_err(|e| ApiError::bad_request(plain(&e)))?;
    send(
        st,
        p,
        AdminCommand::Restore(spec),
        meta,
        Some("restored from the archive"),
        Wait::Result,
    )
    .await
}
