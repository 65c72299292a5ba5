//! The short admin commands, each one change: `resolve` and `discard` (dead letters into the
//! tenant's archive), `purge` (a tenant's dead letters before a cutoff), `cancel` (a replay
//! job's stop request) and `breaker` (hold or release a tenant). Replays run as jobs
//! (see [`super::replay::runner`]).

use serde_json::{json, Value};

use super::context::AdminContext;
use super::replay::job::JobState;
use super::select::{DlId, Selection};
use super::{BreakerSpec, Envelope, PurgeSpec, RemoveSpec};
use crate::broker::Removal;
use crate::error::{Error, Result};

/// Opens (holds) or closes a tenant's breaker, recording the operator and reason in its log.
pub async fn breaker(
    ctx: &AdminContext,
    env: &Envelope,
    spec: &BreakerSpec,
) -> Result<(String, Value)> {
    let change = super::breaker::breaker(
        &ctx.broker,
        &spec.tenant,
        spec.open,
        &env.reason,
        &env.operator,
    )
    .await?;
    let message = super::breaker::describe(&change, spec.open);
    let details = serde_json::to_value(&change).unwrap_or(Value::Null);
    Ok((message, details))
}

/// Removes the selected dead letters into the tenant's archive, marked `action` (`resolved` or
/// `discarded`).
pub async fn remove(
    ctx: &AdminContext,
    env: &Envelope,
    spec: &RemoveSpec,
    action: &str,
) -> Result<(String, Value)> {
    spec.select.validate().map_err(Error::Usage)?;
    let b = &ctx.broker;
    // Listed ids must all exist (nothing changes otherwise); a filter selects what exists now.
    let ids: Vec<DlId> = match &spec.select {
        Selection::Ids(ids) => {
            let ids = &super::select::dedup(ids.clone());
            let mut missing = Vec::new();
            for d in ids {
                if b.dlq_entries(&d.tenant, &[d.id.as_str()])
                    .await?
                    .into_iter()
                    .next()
                    .flatten()
                    .is_none()
                {
                    missing.push(d.to_string());
                }
            }
            if !missing.is_empty() {
                return Err(Error::NotFound(format!(
                    "dead letters {} do not exist; nothing was {action}",
                    missing.join(", ")
                )));
            }
            ids.clone()
        }
        Selection::Filter(_) => {
            let now = b.server_time_ms().await?;
            let Selection::Filter(pinned) = super::scan::pin(&spec.select, now) else {
                return Err(Error::Usage("unexpected selection".into()));
            };
            let mut ids = Vec::new();
            super::scan::scan(b, &pinned, |tenant, entry, _| {
                ids.push(DlId {
                    tenant: tenant.to_owned(),
                    id: entry.id,
                });
                Ok(())
            })
            .await?;
            ids
        }
    };
    let mut removed = 0u64;
    let mut by_tenant: Vec<(String, Vec<&str>)> = Vec::new();
    for d in &ids {
        match by_tenant.iter_mut().find(|(t, _)| *t == d.tenant) {
            Some((_, v)) => v.push(&d.id),
            None => by_tenant.push((d.tenant.clone(), vec![&d.id])),
        }
    }
    for (tenant, list) in &by_tenant {
        for chunk in list.chunks(ctx.settings.batch) {
            removed += b
                .dlq_remove(
                    tenant,
                    chunk,
                    &Removal {
                        action,
                        operator: &env.operator,
                        reason: &env.reason,
                        command_id: &env.id,
                    },
                    ctx.dlq_max_len,
                )
                .await?
                .len() as u64;
        }
    }
    let gone = ids.len() as u64 - removed;
    let mut message = format!("{action} {removed} dead letters (archived with the reason)");
    if gone > 0 {
        message.push_str(&format!(", {gone} already gone"));
    }
    Ok((
        message,
        json!({"selected": ids.len(), action: removed, "already_gone": gone}),
    ))
}

/// Deletes a tenant's dead letters from before the spec's cutoff.
pub async fn purge(ctx: &AdminContext, spec: &PurgeSpec) -> Result<(String, Value)> {
    crate::task::validate_tenant(&spec.tenant).map_err(Error::Usage)?;
    let n = ctx.broker.dlq_purge(&spec.tenant, spec.before_ms).await?;
    Ok((
        format!(
            "purged {n} dead letters of tenant {} from before {}",
            spec.tenant,
            super::time::format_time(spec.before_ms)
        ),
        json!({"tenant": spec.tenant, "purged": n, "before_ms": spec.before_ms}),
    ))
}

/// Asks replay job `job` to stop after its current step.
pub async fn cancel(ctx: &AdminContext, env: &Envelope, job: &str) -> Result<(String, Value)> {
    match ctx.broker.job_cancel(job, &env.id).await? {
        None => Err(Error::NotFound(format!(
            "no replay job '{job}' (a job exists once its replay command has started)"
        ))),
        Some(state)
            if matches!(
                JobState::parse(&state),
                Some(JobState::Running | JobState::Interrupted)
            ) =>
        {
            Ok((
                format!("cancel requested: replay job {job} stops after its current step"),
                json!({"job": job, "state": state}),
            ))
        }
        Some(state) => Ok((
            format!("replay job {job} is {state} already; nothing to cancel"),
            json!({"job": job, "state": state}),
        )),
    }
}
