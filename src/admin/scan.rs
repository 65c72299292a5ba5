//! The dead-letter scan: every dead letter a filter matches, tenant by tenant, page by page.
//!
//! Shared by replay jobs (their selection), `resolve`/`discard` with a filter, and the
//! operators' reports (`dlq list|stats|export`).

use super::select::{Filter, Selection};
use crate::broker::{Broker, Entry, Fields};
use crate::error::Result;

/// Page size of dead-letter scans.
pub const SCAN_PAGE: usize = 500;

/// The tenants a filter covers: its own, or every registered tenant.
pub async fn tenants_of(broker: &Broker, filter: &Filter) -> Result<Vec<String>> {
    if filter.tenants.is_empty() {
        broker.tenants().await
    } else {
        let mut t = filter.tenants.clone();
        t.sort();
        t.dedup();
        Ok(t)
    }
}

/// Every dead letter a filter matches, with its fields, passed to `each` tenant by tenant in
/// stream order. Returns how many matched.
pub async fn scan<F>(broker: &Broker, filter: &Filter, mut each: F) -> Result<u64>
where
    F: FnMut(&str, Entry, &Fields) -> Result<()>,
{
    let (start, end) = filter.range();
    let mut n = 0;
    for tenant in tenants_of(broker, filter).await? {
        let mut from = start.clone();
        loop {
            let page = broker.dlq_range(&tenant, &from, &end, SCAN_PAGE).await?;
            let len = page.len();
            for entry in page {
                from = format!("({}", entry.id);
                let Some(fields) = entry.fields.clone() else {
                    continue;
                };
                if filter.matches(&fields) {
                    n += 1;
                    each(&tenant, entry, &fields)?;
                }
            }
            if len < SCAN_PAGE {
                break;
            }
        }
    }
    Ok(n)
}

/// Pins a filter's open end to `now` so a job selects what existed when it started.
pub fn pin(select: &Selection, now_ms: u64) -> Selection {
    match select {
        Selection::Filter(f) if f.until_ms.is_none() => Selection::Filter(Filter {
            until_ms: Some(now_ms),
            ..f.clone()
        }),
        other => other.clone(),
    }
}
