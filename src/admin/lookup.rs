//! Looking a task up by id (`redrive task show`): its record, or — for a task without one (a
//! raw XADD, or records off) — where it is, by bounded scans of the places a task can wait.
//! Each lookup is counted (`redrive_task_lookups_total{found}`).

use crate::broker::{Broker, Located, RecordRead};
use crate::error::Result;
use crate::telemetry::events;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The task's record.
    Record(RecordRead),
    /// No record; the scans found the task (`places` is not empty).
    Located(Located),
    /// No record, and the scans did not find it (`searched` says how far they read).
    NotFound(Located),
}

/// Looks task `task_id` of `tenant` up: its record, else where it is, each place read up to
/// `scan_limit` entries.
pub async fn find(
    broker: &Broker,
    tenant: &str,
    task_id: &str,
    scan_limit: usize,
) -> Result<Lookup> {
    if let Some(r) = broker.task_record(tenant, task_id).await? {
        events::task_records::lookup("record");
        return Ok(Lookup::Record(r));
    }
    let located = broker.locate(tenant, task_id, scan_limit).await?;
    if located.places.is_empty() {
        events::task_records::lookup("none");
        Ok(Lookup::NotFound(located))
    } else {
        events::task_records::lookup("located");
        Ok(Lookup::Located(located))
    }
}
