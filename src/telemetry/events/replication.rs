//! Replication of writes (`redis.wait_replicas`): a write whose `WAIT` got fewer replicas than
//! asked. Logged under the broker's replicas module target, storm-proof (the first per
//! interval in full, the rest summarised: a replica down makes every write short).

use super::storm::{self, StormEvent};
use crate::telemetry::names;
use crate::telemetry::storm::Print;

/// The module path whose `WAIT` this is, which log filters name.
const TARGET: &str = "redrive::broker::replicas";

/// The values of the `what` label.
pub const WHAT: [&str; 2] = ["enqueue", "settle"];

/// A write of `what` (`enqueue` or `settle`) for `tenants` was confirmed by `confirmed` of
/// `asked` replicas (`error`: why a `WAIT` got no answer). The line names the first tenant and
/// how many the batch had. The write stands; counted in
/// `redrive_redis_wait_short_total{what}` and logged at warn.
pub fn wait_short(
    what: &'static str,
    tenants: &[&str],
    asked: u64,
    confirmed: u64,
    error: Option<&str>,
) {
    metrics::counter!(names::REDIS_WAIT_SHORT, "what" => what).increment(1);
    let tenant = tenants.first().copied().unwrap_or_default();
    if !storm::admit(StormEvent::WaitShort, Print::Plain, tenant, None, 1) {
        return;
    }
    tracing::warn!(
        target: TARGET,
        what,
        tenant = %tenant,
        batch_tenants = tenants.len(),
        asked,
        confirmed,
        error,
        "write not confirmed by enough replicas within redis.wait_timeout_ms: a failover of \
         its node now could lose it"
    );
}
