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
    let mut pages = Pages::new(broker.clone(), filter.clone()).await?;
    let mut n = 0;
    while let Some((tenant, page)) = pages.next().await? {
        for (entry, fields) in page {
            n += 1;
            each(&tenant, entry, &fields)?;
        }
    }
    Ok(n)
}

/// [`scan`] a page at a time, for a consumer that awaits between pages (the HTTP API's export
/// streams each page out before it reads the next).
#[derive(Debug)]
pub struct Pages {
    broker: Broker,
    filter: Filter,
    /// The tenants still to read.
    tenants: std::vec::IntoIter<String>,
    /// The tenant being read and where its next read starts.
    current: Option<(String, String)>,
    /// The XRANGE bounds of the filter's times.
    range: (String, String),
}

impl Pages {
    /// The scan of the dead letters `filter` matches (its tenants, or every registered one).
    pub async fn new(broker: Broker, filter: Filter) -> Result<Pages> {
        let tenants = tenants_of(&broker, &filter).await?.into_iter();
        let range = filter.range();
        Ok(Pages {
            broker,
            filter,
            tenants,
            current: None,
            range,
        })
    }

    /// The next matches of one tenant (at most [`SCAN_PAGE`], never none), in stream order;
    /// `None` once every tenant was read.
    pub async fn next(&mut self) -> Result<Option<(String, Vec<(Entry, Fields)>)>> {
        loop {
            let Some((tenant, from)) = self.current.as_mut() else {
                match self.tenants.next() {
                    Some(t) => self.current = Some((t, self.range.0.clone())),
                    None => return Ok(None),
                }
                continue;
            };
            let page = self
                .broker
                .dlq_range(tenant, from, &self.range.1, SCAN_PAGE)
                .await?;
            let len = page.len();
            let tenant = tenant.clone();
            let mut matched = Vec::new();
            for entry in page {
                *from = format!("({}", entry.id);
                let Some(fields) = entry.fields.clone() else {
                    continue;
                };
                if self.filter.matches(&fields) {
                    matched.push((entry, fields));
                }
            }
            if len < SCAN_PAGE {
                self.current = None;
            }
            if !matched.is_empty() {
                return Ok(Some((tenant, matched)));
            }
        }
    }
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
