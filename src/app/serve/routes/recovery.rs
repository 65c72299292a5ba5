//! The dead-letter changes, as `redrive dlq replay|resolve|discard|purge` make them: replay
//! (listed ids or a filter; a patch, a target kind, force, order by key, rate; or resume a
//! job), its dry run, resolve, discard, purge. Each is narrowed to the token's tenants, then
//! sent through the admin command stream ([`crate::app::serve::submit`]).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{plain, FilterBody};
use crate::admin::replay::dry_run::dry_run;
use crate::admin::select::Selection;
use crate::admin::time::{format_age, parse_duration};
use crate::admin::{AdminCommand, PurgeSpec, RemoveSpec, ReplaySpec};
use crate::app::changes::{purge_count, selection};
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Body, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::state::AppState;
use crate::app::serve::submit::{send, ChangeMeta, Sent, Wait};
use crate::error::Error;

/// The body of a replay and of its dry run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Dead letters to replay (`TENANT/ENTRY-ID`); without ids, every one the filter selects.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Which dead letters.
    #[serde(default)]
    pub filter: FilterBody,
    /// Replay every dead letter the token may see (a batch without any filter needs this).
    #[serde(default)]
    pub all: bool,
    /// A JSON merge patch (RFC 7386) applied to each payload.
    #[serde(default)]
    pub patch: Option<Value>,
    /// Route the replayed tasks to this kind.
    #[serde(default)]
    pub target_kind: Option<String>,
    /// Replay partial_execution dead letters too (their side effects may happen again).
    #[serde(default)]
    pub force: bool,
    /// Keep per-entity order: group by this top-level payload field.
    #[serde(default)]
    pub order_by_key: Option<String>,
    /// Dead letters per second, 0 for unlimited (default: admin.rate).
    #[serde(default)]
    pub rate: Option<u32>,
    /// Resume this cancelled or interrupted replay job instead.
    #[serde(default)]
    pub resume: Option<String>,
    /// Why (required, kept in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

impl ReplayBody {
    /// The replay spec, its selection narrowed to the token's tenants.
    pub async fn spec(&self, st: &AppState, p: &Principal) -> ApiResult<ReplaySpec> {
        let rate = self.rate.unwrap_or(st.settings.admin.rate);
        if let Some(job) = &self.resume {
            let conflicting = !self.ids.is_empty()
                || self.all
                || self.patch.is_some()
                || self.target_kind.is_some()
                || self.force
                || self.order_by_key.is_some()
                || !self.filter.is_empty();
            if conflicting {
                return Err(ApiError::bad_request(
                    "resume continues a job with the ids, filters, patch and options it started \
                     with; give only resume, rate, reason and command_id",
                ));
            }
            return Ok(ReplaySpec {
                resume: Some(job.clone()),
                rate,
                ..ReplaySpec::default()
            });
        }
        let now = st.broker.server_time_ms().await?;
        let filter = self.filter.to_filter(now)?;
        let mut select = selection(&self.ids, filter, self.all, "replay").map_err(api_usage)?;
        p.narrow_selection(&mut select)?;
        let spec = ReplaySpec {
            select: Some(select),
            resume: None,
            order_by_key: self.order_by_key.clone(),
            rate,
            patch: self.patch.clone(),
            target_kind: self.target_kind.clone(),
            force: self.force,
        };
        spec.validate()
            .map_err(|e| ApiError::bad_request(plain(&e)))?;
        Ok(spec)
    }
}

/// A usage error written for the CLI, with the API's names.
fn api_usage(e: Error) -> ApiError {
    match e {
        Error::Usage(m) => {
            ApiError::bad_request(plain(&m).replace(", or all", ", or \"all\": true"))
        }
        other => other.into(),
    }
}

/// Replays dead letters into their lanes: answers 202 with the command id at once; the job's
/// progress is at `GET /api/v1/commands/{id}`.
pub async fn replay(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<ReplayBody>,
) -> ApiResult<Response> {
    Ok(send_replay(&st, &p, body).await?.into_response(&st))
}

/// Sends a replay as `p` (the console's wizard sends the same).
pub async fn send_replay(st: &AppState, p: &Principal, body: ReplayBody) -> ApiResult<Sent> {
    let spec = body.spec(st, p).await?;
    send(
        st,
        p,
        AdminCommand::Replay(spec),
        ChangeMeta::new(body.reason, body.command_id),
        None,
        Wait::No,
    )
    .await
}

/// How many dead letters a replay would replay, refuse or find invalid, and a sample of them
/// as they would run (patched, migrated). Changes nothing, so a read-only server answers it.
pub async fn replay_dry_run(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<ReplayBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(dry_run_doc(&st, &p, &body).await?))
}

/// The document of `POST /api/v1/dead-letters/replay/dry-run` (the console's wizard shows it).
pub async fn dry_run_doc(st: &AppState, p: &Principal, body: &ReplayBody) -> ApiResult<Value> {
    if body.resume.is_some() {
        return Err(ApiError::bad_request(
            "a dry run evaluates a selection; resume continues a job as it started",
        ));
    }
    let spec = body.spec(st, p).await?;
    let d = dry_run(&st.ctx, &spec, p.name()).await?;
    Ok(serde_json::to_value(d).unwrap_or(Value::Null))
}

/// The body of resolve and discard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    /// Dead letters (`TENANT/ENTRY-ID`); without ids, every one the filter selects (needs
    /// `confirm`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// Which dead letters.
    #[serde(default)]
    pub filter: FilterBody,
    /// Confirms a removal selected by a filter.
    #[serde(default)]
    pub confirm: bool,
    /// Why (required, kept in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// Removes dead letters that were handled elsewhere (archived with the reason).
pub async fn resolve(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<RemoveBody>,
) -> ApiResult<Response> {
    remove(st, p, body, true).await
}

/// Removes dead letters not worth running (archived with the reason).
pub async fn discard(
    State(st): State<AppState>,
    p: Principal,
    Body(body): Body<RemoveBody>,
) -> ApiResult<Response> {
    remove(st, p, body, false).await
}

async fn remove(
    st: AppState,
    p: Principal,
    body: RemoveBody,
    resolve: bool,
) -> ApiResult<Response> {
    Ok(send_remove(&st, &p, body, resolve)
        .await?
        .into_response(&st))
}

/// Sends a resolve (`resolve`) or a discard as `p` (the console's bulk actions send the same).
pub async fn send_remove(
    st: &AppState,
    p: &Principal,
    body: RemoveBody,
    resolve: bool,
) -> ApiResult<Sent> {
    let what = if resolve { "resolve" } else { "discard" };
    let now = st.broker.server_time_ms().await?;
    let filter = body.filter.to_filter(now)?;
    let mut select = selection(&body.ids, filter, false, what).map_err(api_usage)?;
    if matches!(select, Selection::Filter(_)) && !body.confirm {
        return Err(ApiError::refused(format!(
            "{what} by filter removes every matching dead letter; check them with GET \
             /api/v1/dead-letters and the same filter, then send \"confirm\": true"
        )));
    }
    p.narrow_selection(&mut select)?;
    let spec = RemoveSpec { select };
    let command = if resolve {
        AdminCommand::Resolve(spec)
    } else {
        AdminCommand::Discard(spec)
    };
    send(
        st,
        p,
        command,
        ChangeMeta::new(body.reason, body.command_id),
        None,
        Wait::Result,
    )
    .await
}

/// The body of a purge.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// Delete dead letters older than this (e.g. 30d).
    pub older_than: String,
    /// Confirms: purged dead letters are deleted, not archived.
    #[serde(default)]
    pub confirm: bool,
    /// Why (required, kept in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
    /// Send under this command id: sending it again returns the first result.
    #[serde(default)]
    pub command_id: Option<String>,
}

/// Deletes a tenant's dead letters older than a duration. Without `confirm` it changes
/// nothing and says how many would go.
pub async fn purge(
    State(st): State<AppState>,
    p: Principal,
    PathArgs(tenant): PathArgs<String>,
    Body(body): Body<PurgeBody>,
) -> ApiResult<Response> {
    Ok(send_purge(&st, &p, &tenant, body).await?.into_response(&st))
}

/// What a purge of `tenant`'s dead letters older than a duration would delete, counted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePreview {
    /// The tenant (one the token may see).
    pub tenant: String,
    /// The age past which dead letters go.
    pub older_than: std::time::Duration,
    /// The cutoff: dead letters before this (server clock, ms) go.
    pub before_ms: u64,
    /// How many there are now.
    pub count: u64,
}

impl PurgePreview {
    /// `older_than` as the CLI writes ages (`30d`).
    pub fn age(&self) -> String {
        format_age(self.older_than.as_millis() as u64)
    }
}

/// A purge's `older_than` (400 when it is not a duration) and the cutoff it means now (server
/// clock, ms).
async fn cutoff(st: &AppState, older_than: &str) -> ApiResult<(std::time::Duration, u64)> {
    let older = parse_duration(older_than)
        .map_err(|e| ApiError::bad_request(format!("older_than: {e}")))?;
    let now = st.broker.server_time_ms().await?;
    Ok((older, now.saturating_sub(older.as_millis() as u64)))
}

/// Counts what a purge of `tenant` (404 for one the token may not see, or that never had a
/// task) older than `older_than` (a duration, `30d`; 400 otherwise) would delete. Changes
/// nothing.
pub async fn purge_preview(
    st: &AppState,
    p: &Principal,
    tenant: &str,
    older_than: &str,
) -> ApiResult<PurgePreview> {
    let tenant = p.registered_tenant(&st.broker, tenant).await?;
    let (older, before_ms) = cutoff(st, older_than).await?;
    let count = purge_count(&st.broker, &tenant, before_ms).await?;
    Ok(PurgePreview {
        tenant,
        older_than: older,
        before_ms,
        count,
    })
}

/// Sends a purge of `tenant` as `p` (the console's purge page sends the same): refused with
/// the count when `body.confirm` is not set.
pub async fn send_purge(
    st: &AppState,
    p: &Principal,
    tenant: &str,
    body: PurgeBody,
) -> ApiResult<Sent> {
    let tenant = p.tenant(tenant)?;
    let (older, before_ms) = cutoff(st, &body.older_than).await?;
    if !body.confirm {
        let n = purge_count(&st.broker, &tenant, before_ms).await?;
        return Err(ApiError::refused(format!(
            "purge deletes dead letters for good (they are not archived): {n} dead letters of \
             tenant {tenant} are older than {}. Send \"confirm\": true to delete them",
            format_age(older.as_millis() as u64)
        )));
    }
    let command = AdminCommand::Purge(PurgeSpec { tenant, before_ms });
    send(
        st,
        p,
        command,
        ChangeMeta::new(body.reason, body.command_id),
        None,
        Wait::Result,
    )
    .await
}
