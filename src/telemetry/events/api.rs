//! The HTTP API (`redrive serve`, or the API inside a member): one event per request
//! answered, counted by route template (never the raw path, so the label is bounded by the
//! route table), method and status, and timed by route.

use std::time::Duration;

use crate::telemetry::names;

/// The API's module path, which log filters name.
const TARGET: &str = "redrive::app::serve";

/// A request to `route` (its template, or `unmatched`) answered with `status` after `took`.
/// Server errors are logged as warnings, the rest at debug.
pub fn request(route: &'static str, method: &'static str, status: u16, took: Duration) {
    metrics::counter!(
        names::API_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(names::API_REQUEST_DURATION, "route" => route).record(took.as_secs_f64());
    if status >= 500 {
        tracing::warn!(target: TARGET, route, method, status, took_ms = took.as_millis() as u64, "api request failed");
    } else {
        tracing::debug!(target: TARGET, route, method, status, took_ms = took.as_millis() as u64, "api request");
    }
}

/// A change was sent through the admin command stream on behalf of a token.
pub fn change_sent(command_id: &str, command: &str, token: &str) {
    tracing::info!(target: TARGET, command_id, command, token, "api change sent");
}
