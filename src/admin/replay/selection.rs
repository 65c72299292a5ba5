//! A replay's selection: the dead letters it covers, in replay order.

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
    match &spec.select {
        Some(Selection::Ids(ids)) => {
            for (tenant, group) in by_tenant(ids) {
                let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
                let entries = ctx.broker.dlq_entries(&tenant, &refs).await?;
                for (d, e) in group.into_iter().zip(entries) {
                    match e.and_then(|e| e.fields) {
                        Some(f) => items.push(selected(d, &f, key)),
                        None => missing.push(d),
                    }
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
