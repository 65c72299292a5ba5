//! The parts of a change that the CLI and the HTTP API build alike, so both refuse the same
//! things with the same words: what a replay, resolve or discard selects (listed ids, or
//! filters, never both; never everything by accident), and how many dead letters a purge
//! would delete.

use std::time::Duration;

use crate::admin::select::{dedup, DlId, Filter, Selection};
use crate::app::report;
use crate::broker::Broker;
use crate::error::{Error, Result};

/// What `ids` and `filter` select for `what` (`replay`, `resolve`, `discard`): the listed ids
/// (bare ids take the filter's one tenant), or every dead letter the filter matches. Refuses
/// ids together with other criteria, and a filter with no criterion unless `all` (only a
/// replay offers `--all`).
pub fn selection(ids: &[String], filter: Filter, all: bool, what: &str) -> Result<Selection> {
    if !ids.is_empty() {
        if filter.classes.len()
            + filter.kinds.len()
            + filter.fingerprints.len()
            + usize::from(filter.since_ms.is_some())
            + usize::from(filter.until_ms.is_some())
            > 0
            || filter.tenants.len() > 1
        {
            return Err(Error::Usage(format!(
                "give dead-letter ids or filters to {what}, not both"
            )));
        }
        let default_tenant = filter.tenants.first().map(String::as_str);
        let parsed = ids
            .iter()
            .map(|id| DlId::parse(id, default_tenant).map_err(Error::Usage))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Selection::Ids(dedup(parsed)));
    }
    if filter.is_everything() && !all {
        return Err(Error::Usage(format!(
            "nothing selected: give dead-letter ids or at least one filter to {what} \
             (--tenant, --class, --kind, --fingerprint, --since, --until){}",
            if what == "replay" { ", or --all" } else { "" }
        )));
    }
    Ok(Selection::Filter(filter))
}

/// How many of `tenant`'s dead letters are older than `before_ms` (server clock): what a purge
/// with that cutoff deletes.
pub async fn purge_count(broker: &Broker, tenant: &str, before_ms: u64) -> Result<u64> {
    Ok(report::stats(
        broker,
        &Filter {
            tenants: vec![tenant.to_owned()],
            until_ms: Some(before_ms.saturating_sub(1)),
            ..Filter::default()
        },
        1,
        Duration::from_secs(60),
    )
    .await?
    .total)
}
