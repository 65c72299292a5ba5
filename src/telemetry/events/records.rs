//! Task records (src/records.rs) as the member's moves write them, and the duplicates a member
//! refuses to run. Logged under the settler's target (it settles duplicates).

use super::storm::{self, StormEvent};
use crate::telemetry::names;
use crate::telemetry::recorder::tenant_label;
use crate::telemetry::storm::Print;

/// The settler's module path, which log filters name.
const SETTLER: &str = "redrive::fleet::settler";

/// `n` records of `tenant` were written in state `state` (a wire name of
/// [`TaskState`](crate::records::TaskState)) by one of this member's moves (n > 0).
pub fn written(tenant: &str, state: &'static str, n: u64) {
    metrics::counter!(names::RECORDS_WRITTEN, "tenant" => tenant_label(tenant), "state" => state)
        .increment(n);
}

/// Entry `entry_id` of `tenant` carried task `task_id`, whose record already says `done`: it
/// was acked without running the handler (a raw duplicate, or a redelivery after a lost ack).
pub fn member_duplicate(tenant: &str, task_id: &str, entry_id: &str) {
    metrics::counter!(names::DUPLICATES, "tenant" => tenant_label(tenant), "side" => "member")
        .increment(1);
    if storm::admit(
        StormEvent::MemberDuplicate,
        Print::Plain,
        tenant,
        Some(task_id),
        1,
    ) {
        tracing::info!(target: SETTLER, tenant = %tenant, task_id = %task_id, entry_id = %entry_id, "task already done: entry acked as a duplicate without running");
    }
}
