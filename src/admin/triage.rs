//! The review commands — assign, escalate, note (scripts/dlq_review.lua) and fold
//! (scripts/dlq_fold.lua) — and the fold expansion: a replay, resolve or discard that lists a
//! fold's representative takes every member of its fold too, members first, so a crash midway
//! leaves the representative (and with it the fold) for the command's next execution.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::context::AdminContext;
use super::review::{
    validate_assignee, validate_escalation, validate_note, ReviewState, TO_TENANT,
};
use super::select::{dedup, field_str, DlId, Filter};
use super::{Envelope, FoldSpec, ReviewSpec};
use crate::broker::{Broker, Entry, FoldOutcome, PageScan, ReviewMove, ReviewOutcome};
use crate::deadletter::field as dl;
use crate::error::{Error, Result};

/// How many times a fold looks again when the fingerprint's dead letters or records changed
/// under it.
const FOLD_TRIES: usize = 5;

/// Dead letters one step of the search for a fold's representative reads.
const OLDEST_STEP: usize = 10_000;

/// Groups ids by tenant (each once), keeping their order.
fn by_tenant(ids: &[DlId]) -> Vec<(String, Vec<DlId>)> {
    let mut out: Vec<(String, Vec<DlId>)> = Vec::new();
    for d in dedup(ids.to_vec()) {
        match out.iter_mut().find(|(t, _)| *t == d.tenant) {
            Some((_, v)) => v.push(d),
            None => out.push((d.tenant.clone(), vec![d])),
        }
    }
    out
}

/// Assigns, escalates or notes (`action`) the listed dead letters, all or nothing: an id that
/// does not exist or is a fold's member changes nothing (the message says which and why).
pub async fn review(
    ctx: &AdminContext,
    env: &Envelope,
    spec: &ReviewSpec,
    action: &str,
) -> Result<(String, Value)> {
    let arg = match action {
        "assign" => {
            validate_assignee(&spec.to).map_err(Error::Usage)?;
            spec.to.as_str()
        }
        "escalate" => {
            validate_escalation(&spec.to).map_err(Error::Usage)?;
            spec.to.as_str()
        }
        "note" => {
            validate_note(&spec.text).map_err(Error::Usage)?;
            spec.text.as_str()
        }
        other => return Err(Error::Usage(format!("unknown review move '{other}'"))),
    };
    if spec.ids.is_empty() {
        return Err(Error::Usage("no dead-letter id given".into()));
    }
    let b = &ctx.broker;
    let groups = by_tenant(&spec.ids);
    // Checked whole before anything changes: every id exists and stands for itself.
    let mut missing = Vec::new();
    let mut members = Vec::new();
    let tenants: Vec<String> = groups.iter().map(|(t, _)| t.clone()).collect();
    let folds = b.dlq_folds_of(&tenants).await?;
    for ((tenant, group), folds) in groups.iter().zip(&folds) {
        let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
        for (d, e) in group.iter().zip(b.dlq_entries(tenant, &refs).await?) {
            match e.and_then(|e| e.fields) {
                None => missing.push(d.to_string()),
                Some(f) => {
                    let fp = field_str(&f, dl::FINGERPRINT).unwrap_or("");
                    if let Some(rep) = folds.get(fp).filter(|r| **r != d.id) {
                        members.push(format!("{d} (folded under {tenant}/{rep})"));
                    }
                }
            }
        }
    }
    let verb = past(action);
    if !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "dead letters {} do not exist; nothing was {verb}",
            missing.join(", ")
        )));
    }
    if !members.is_empty() {
        return Err(Error::Refused(format!(
            "{} belong to a fold: their review is their representative's; act on it \
             (nothing was {verb})",
            members.join(", ")
        )));
    }
    let mv = ReviewMove {
        action,
        arg,
        operator: &env.operator,
        reason: &env.reason,
        command_id: &env.id,
    };
    let (mut moved, mut same, mut notified) = (0u64, 0u64, 0u64);
    for (tenant, group) in &groups {
        for chunk in group.chunks(ctx.settings.batch.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(|d| d.id.as_str()).collect();
            match b.dlq_review(tenant, &mv, &refs).await? {
                ReviewOutcome::Refused(why) => {
                    let list: Vec<String> = why
                        .iter()
                        .map(|(id, w)| format!("{tenant}/{id} ({w})"))
                        .collect();
                    return Err(Error::Refused(format!(
                        "dead letters changed while the command ran: {}; {moved} were {verb} \
                         before, the rest were not",
                        list.join(", ")
                    )));
                }
                ReviewOutcome::Done { moved: m, event } => {
                    for (_, changed) in m {
                        if changed {
                            moved += 1;
                        } else {
                            same += 1;
                        }
                    }
                    notified += u64::from(event.is_some());
                }
            }
        }
    }
    let mut message = match action {
        "assign" => format!("assigned {moved} dead letters to {arg}"),
        "escalate" if arg == TO_TENANT => {
            format!("escalated {moved} dead letters to their tenant")
        }
        "escalate" => format!("escalated {moved} dead letters to {arg}"),
        _ => format!("noted {moved} dead letters"),
    };
    if same > 0 {
        message.push_str(&format!(" ({same} already were)"));
    }
    if notified > 0 {
        message.push_str(&format!(
            "; {notified} notification(s) queued for the tenant"
        ));
    } else if action == "escalate" && arg == TO_TENANT && moved > 0 {
        message.push_str("; the tenant has no notification target for escalations");
    }
    Ok((
        message,
        json!({"selected": spec.ids.len(), "moved": moved, "unchanged": same, "notifications": notified}),
    ))
}

/// The past tense of a review move, for messages.
fn past(action: &str) -> &'static str {
    match action {
        "assign" => "assigned",
        "escalate" => "escalated",
        _ => "noted",
    }
}

/// The oldest dead letter of `tenant` with fingerprint `fp`, if any (a server-side scan in
/// bounded steps).
async fn oldest_of(b: &Broker, tenant: &str, fp: &str) -> Result<Option<String>> {
    let filter = json!({"fingerprints": [fp]}).to_string();
    let mut start = "-".to_owned();
    loop {
        let step = PageScan {
            tenant,
            newest_first: false,
            start: start.clone(),
            end: "+",
            budget: OLDEST_STEP,
            want: 1,
            filter_json: &filter,
            fields: &[dl::FINGERPRINT],
            review: false,
        };
        let r = b
            .dlq_pages(std::slice::from_ref(&step))
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        if let Some(e) = r.matches.into_iter().next() {
            return Ok(Some(e.id));
        }
        match r.last {
            Some(last) if !r.ended => start = format!("({last}"),
            _ => return Ok(None),
        }
    }
}

/// How many dead letters of `tenant` have fingerprint `fp`, from its counts (`None` while
/// they are being rebuilt).
pub async fn fingerprint_count(b: &Broker, tenant: &str, fp: &str) -> Result<Option<u64>> {
    let counts = b.dlq_counts_of(&[tenant.to_owned()]).await?;
    Ok(counts.into_iter().next().flatten().map(|c| {
        c.groups
            .iter()
            .filter(|g| g.fingerprint == fp)
            .map(|g| g.count)
            .sum()
    }))
}

/// Folds the tenant's dead letters of one fingerprint under the oldest of them. Folding a
/// fingerprint folded already changes nothing and says under which representative.
pub async fn fold(ctx: &AdminContext, env: &Envelope, spec: &FoldSpec) -> Result<(String, Value)> {
    spec.validate().map_err(Error::Usage)?;
    let b = &ctx.broker;
    let (t, fp) = (&spec.tenant, &spec.fingerprint);
    for _ in 0..FOLD_TRIES {
        let Some(rep) = oldest_of(b, t, fp).await? else {
            return Err(Error::NotFound(format!(
                "tenant {t} has no dead letter with fingerprint {fp} (see `redrive dlq stats --tenant {t}`)"
            )));
        };
        let records = b.dlq_review_ids_of(t, fp).await?;
        let outcome = b
            .dlq_fold(t, fp, &rep, &env.operator, &env.reason, &env.id, &records)
            .await?;
        let count = fingerprint_count(b, t, fp).await?;
        let counted = count
            .map(|n| format!("{n} dead letters"))
            .unwrap_or_else(|| "the dead letters".into());
        match outcome {
            FoldOutcome::Folded {
                representative,
                merged,
            } => {
                let mut message = format!(
                    "folded {counted} of fingerprint {fp} under {t}/{representative}: act on it \
                     to act on all of them"
                );
                if merged > 0 {
                    message.push_str(&format!(
                        " ({merged} members' review records merged into it)"
                    ));
                }
                return Ok((
                    message,
                    json!({"tenant": t, "fingerprint": fp, "representative": format!("{t}/{representative}"),
                           "count": count, "merged": merged, "created": true}),
                ));
            }
            FoldOutcome::Exists(representative) => {
                return Ok((
                    format!(
                        "fingerprint {fp} of tenant {t} is folded already under {t}/{representative} \
                         ({counted}); nothing changed"
                    ),
                    json!({"tenant": t, "fingerprint": fp, "representative": format!("{t}/{representative}"),
                           "count": count, "merged": 0, "created": false}),
                ));
            }
            FoldOutcome::Gone | FoldOutcome::Stale => continue,
        }
    }
    Err(Error::Refused(format!(
        "the dead letters of fingerprint {fp} of tenant {t} kept changing while folding; nothing \
         was folded, try again"
    )))
}

/// The folds the listed dead letters represent: for each representative among `ids`, every
/// other dead letter of its fingerprint now (the dead-letter scan), with its fields — the
/// members a replay, resolve or discard of the representative takes along. Returns the members
/// (none of them among `ids`) and the representatives among `ids`.
pub async fn fold_members(
    broker: &Broker,
    ids: &[DlId],
) -> Result<(Vec<(DlId, Entry)>, HashSet<DlId>)> {
    let mut tenants: Vec<String> = ids.iter().map(|d| d.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let folds = broker.dlq_folds_of(&tenants).await?;
    let listed: HashSet<&DlId> = ids.iter().collect();
    let mut reps = HashSet::new();
    let mut members = Vec::new();
    for (tenant, folds) in tenants.iter().zip(folds) {
        // representative id → fingerprint
        let by_rep: HashMap<&str, &str> = folds
            .iter()
            .map(|(fp, rep)| (rep.as_str(), fp.as_str()))
            .collect();
        for d in ids.iter().filter(|d| d.tenant == *tenant) {
            let Some(fp) = by_rep.get(d.id.as_str()) else {
                continue;
            };
            if !reps.insert(d.clone()) {
                continue;
            }
            let filter = Filter {
                tenants: vec![tenant.clone()],
                fingerprints: vec![(*fp).to_owned()],
                ..Filter::default()
            };
            super::scan::scan(broker, &filter, |t, entry, _| {
                let id = DlId {
                    tenant: t.to_owned(),
                    id: entry.id.clone(),
                };
                if id != *d && !listed.contains(&id) {
                    members.push((id, entry));
                }
                Ok(())
            })
            .await?;
        }
    }
    Ok((members, reps))
}

/// `tenants`' dead letters by review state, from their counts and review records (two
/// pipelined round trips); `None` when a tenant's counts are being rebuilt.
pub async fn by_state(
    broker: &Broker,
    tenants: &[String],
) -> Result<Option<BTreeMap<String, u64>>> {
    let (counts, reviews) = tokio::try_join!(
        broker.dlq_counts_of(tenants),
        broker.dlq_review_counts(tenants)
    )?;
    let mut out: BTreeMap<String, u64> = ReviewState::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (c, r) in counts.iter().zip(&reviews) {
        let Some(c) = c else {
            return Ok(None);
        };
        let folded: u64 = r
            .folds
            .keys()
            .map(|fp| {
                c.groups
                    .iter()
                    .filter(|g| g.fingerprint == *fp)
                    .map(|g| g.count)
                    .sum::<u64>()
                    .saturating_sub(1)
            })
            .sum();
        let owned = r.in_review + r.escalated + folded;
        *out.entry("in_review".into()).or_default() += r.in_review;
        *out.entry("escalated".into()).or_default() += r.escalated;
        *out.entry("folded".into()).or_default() += folded;
        *out.entry("new".into()).or_default() += c.total.saturating_sub(owned);
    }
    Ok(Some(out))
}
