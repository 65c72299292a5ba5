//! Redis calls that failed: the one counter every area's failure events share.

use crate::telemetry::names;
use crate::telemetry::redis_op::RedisOp;

/// Counts one failed Redis call of kind `op` in `redrive_redis_errors_total`. The events that
/// report a failure (and log it with their own words) call this for the metric.
pub fn failed(op: RedisOp) {
    metrics::counter!(names::REDIS_ERRORS, "op" => op.as_str()).increment(1);
}
