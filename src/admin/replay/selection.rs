//! A replay's selection: the dead letters it covers, in replay order (a listed fold
//! representative's members included, the representative after them).

use super::build::{order, selected, Selected};
use crate::admin::context::AdminContext;
use crate::admin::scan::scan;
use crate::admin::select::{DlId, Selection};
use crate::admin::ReplaySpec;
use crate::error::{Error, Result};

/// The selection in replay order; listed ids that do not exist are returned apart.
pub async fn select(ctx: &AdminContext, spec: &ReplaySpec) -> Result<(Vec<Selected>, Vec<DlId>)> {
    let key = spec.order_by_key.as_deref();
    let mut items = Vec::new();
    let mut missing = Vec::new();
    let mut reps = std::collections::HashSet::new();
    match &spec.select {
        Some(Selection::Ids(ids)) => {
            let mut present = Vec::new();
            for (tenant, group) in by_tenant(ids) {
                let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
                let entries = ctx.broker.dlq_entries(&tenant, &refs).await?;
                for (d, e) in group.into_iter().zip(entries) {
                    match e.and_then(|e| e.fields) {
                        Some(f) => {
                            present.push(d.clone());
                            items.push(selected(d, &f, key));
                        }
                        None => missing.push(d),
                    }
                }
            }
            // A fold's representative takes the members of its fold along (see below).
            let (members, r) = crate::admin::triage::fold_members(&ctx.broker, &present).await?;
            reps = r;
            for (d, e) in members {
                if let Some(f) = e.fields {
                    items.push(selected(d, &f, key));
                }
            }
        }
        Some(Selection::Filter(f)) => {
            scan(&ctx.broker, f, |tenant, entry, fields| {
                items.push(selected(
                    DlId {
                        tenant: tenant.to_owned(),
                        id: entry.id,
                    },
                    fields,
                    key,
                ));
                Ok(())
            })
            .await?;
        }
        None => return Err(Error::Usage("the replay selects nothing".into())),
    }
    order(&mut items, key.is_some());
    // Representatives last: a job stopped midway resumes with the fold still there, so its
    // members left are selected again.
    if !reps.is_empty() {
        let (last, mut first): (Vec<Selected>, Vec<Selected>) =
            items.into_iter().partition(|s| reps.contains(&s.id));
        first.extend(last);
        items = first;
    }
    Ok((items, missing))
}

/// Groups ids by tenant, keeping their order within each tenant; a repeated id counts once.
pub fn by_tenant(ids: &[DlId]) -> Vec<(String, Vec<DlId>)> {
    let mut out: Vec<(String, Vec<DlId>)> = Vec::new();
    for d in crate::admin::select::dedup(ids.to_vec()) {
        match out.iter_mut().find(|(t, _)| *t == d.tenant) {
            Some((_, v)) => v.push(d),
            None => out.push((d.tenant.clone(), vec![d])),
        }
    }
    out
}
