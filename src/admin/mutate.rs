//! The short admin commands, each one change: `resolve` and `discard` (dead letters into the
//! tenant's archive), `purge` (a tenant's dead letters before a cutoff), `cancel` (a replay
//! job's stop request) and `breaker` (hold or release a tenant). Replays run as jobs
//! (see [`super::replay::runner`]).

use serde_json::{json, Value};

use super::context::AdminContext;
use super::replay::job::JobState;
use super::select::{DlId, Selection};
use super::{BreakerSpec, Envelope, PurgeSpec, RemoveSpec};
use crate::broker::{Entry, RecordTarget, Removal};
use crate::error::{Error, Result};
use crate::task::field;
use crate::telemetry::events;

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
    // Each selected dead letter with what its task's record needs (task_id, kind).
    let targets: Vec<(DlId, Option<Entry>)> = match &spec.select {
        Selection::Ids(ids) => {
            let ids = super::select::dedup(ids.clone());
            let mut found = Vec::with_capacity(ids.len());
            let mut missing = Vec::new();
            for d in ids {
                match b
                    .dlq_entries(&d.tenant, &[d.id.as_str()])
                    .await?
                    .into_iter()
                    .next()
                    .flatten()
                {
                    Some(e) => found.push((d, Some(e))),
                    None => missing.push(d.to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(Error::NotFound(format!(
                    "dead letters {} do not exist; nothing was {action}",
                    missing.join(", ")
                )));
            }
            // A fold's representative takes its members along: they go first, it goes last,
            // so a crash midway leaves it (and its fold) for the command's next execution.
            let listed: Vec<DlId> = found.iter().map(|(d, _)| d.clone()).collect();
            let (members, reps) = super::triage::fold_members(b, &listed).await?;
            let (rep_rows, mut rows): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|(d, _)| reps.contains(d));
            rows.extend(members.into_iter().map(|(d, e)| (d, Some(e))));
            rows.extend(rep_rows);
            rows
        }
        Selection::Filter(_) => {
            let now = b.server_time_ms().await?;
            let Selection::Filter(pinned) = super::scan::pin(&spec.select, now) else {
                return Err(Error::Usage("unexpected selection".into()));
            };
            let mut found = Vec::new();
            super::scan::scan(b, &pinned, |tenant, entry, _| {
                found.push((
                    DlId {
                        tenant: tenant.to_owned(),
                        id: entry.id.clone(),
                    },
                    Some(entry),
                ));
                Ok(())
            })
            .await?;
            found
        }
    };
    let mut removed = 0u64;
    let mut by_tenant: Vec<(String, Vec<RecordTarget>)> = Vec::new();
    for (d, e) in &targets {
        let t = record_target(ctx, &d.tenant, &d.id, e.as_ref());
        match by_tenant.iter_mut().find(|(x, _)| *x == d.tenant) {
            Some((_, v)) => v.push(t),
            None => by_tenant.push((d.tenant.clone(), vec![t])),
        }
    }
    let records = ctx.tasks.enabled;
    for (tenant, list) in &by_tenant {
        for chunk in list.chunks(ctx.settings.batch) {
            let (ids, written, dropped) = b
                .dlq_remove(
                    tenant,
                    chunk,
                    &Removal {
                        action,
                        operator: &env.operator,
                        reason: &env.reason,
                        command_id: &env.id,
                    },
                    ctx.dlq_ceiling,
                    records,
                )
                .await?;
            removed += ids.len() as u64;
            events::task_records::written(tenant, action, written);
            if dropped > 0 {
                events::archive::dropped(tenant, "removed", dropped);
            }
        }
    }
    let gone = targets.len() as u64 - removed;
    let mut message = format!(
        "{action} {removed} dead letters (kept with the reason, archived after \
         dead_letter.removed_grace_ms)"
    );
    if gone > 0 {
        message.push_str(&format!(", {gone} already gone"));
    }
    Ok((
        message,
        json!({"selected": targets.len(), action: removed, "already_gone": gone}),
    ))
}

/// What a dead letter's task record needs from it: its task_id when valid (a dead letter
/// without one gets no record), its kind and the retention of that kind in `tenant`.
pub(crate) fn record_target(
    ctx: &AdminContext,
    tenant: &str,
    dlq_id: &str,
    entry: Option<&Entry>,
) -> RecordTarget {
    let get = |name: &str| -> Option<String> {
        entry?
            .fields
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let task_id = get(field::TASK_ID).filter(|id| crate::task::validate_task_id(id).is_ok());
    let kind = get(field::KIND)
        .filter(|k| crate::task::validate_kind(k).is_ok())
        .unwrap_or_default();
    RecordTarget {
        dlq_id: dlq_id.to_owned(),
        task_id,
        retention: ctx.tasks.retention_for(tenant, &kind),
        kind,
    }
}

/// Deletes a tenant's dead letters from before the spec's cutoff, their tasks' records
/// `discarded` (page by page; with records off, one exact XTRIM).
pub async fn purge(ctx: &AdminContext, spec: &PurgeSpec) -> Result<(String, Value)> {
    crate::task::validate_tenant(&spec.tenant).map_err(Error::Usage)?;
    let b = &ctx.broker;
    // Page by page through dlq_purge.lua (with records or without), so the tenant's
    // dead-letter counts see every deletion.
    let records = ctx.tasks.enabled;
    let n = {
        let mut n = 0u64;
        loop {
            let page = b
                .dlq_before(&spec.tenant, spec.before_ms, ctx.settings.batch.max(1))
                .await?;
            if page.is_empty() {
                break;
            }
            let targets: Vec<RecordTarget> = page
                .iter()
                .map(|e| record_target(ctx, &spec.tenant, &e.id, Some(e)))
                .collect();
            let (deleted, written) = b.dlq_purge_entries(&spec.tenant, &targets, records).await?;
            n += deleted;
            if records {
                events::task_records::written(&spec.tenant, "discarded", written);
            }
        }
        n
    };
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
