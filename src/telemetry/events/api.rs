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

/// How a console login ended: `ok`, `bad_token` (no configured token has that hash) or
/// `rate_limited` (refused before the token was looked at). Failures are logged at warn with
/// the client's address (`client`; `via` the trusted proxy that forwarded it, when one did),
/// never with what was typed.
pub fn login(
    result: &'static str,
    client: Option<std::net::IpAddr>,
    via: Option<std::net::IpAddr>,
    token: Option<&str>,
) {
    metrics::counter!(names::API_LOGINS, "result" => result).increment(1);
    let client = client
        .map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".into());
    let via = via.map(|p| p.to_string());
    match result {
        "ok" => {
            tracing::info!(target: TARGET, client, via, token = token.unwrap_or(""), "console login")
        }
        _ => tracing::warn!(target: TARGET, client, via, result, "console login refused"),
    }
}

/// The login results, in the order their series are registered at 0.
pub const LOGIN_RESULTS: [&str; 3] = ["ok", "bad_token", "rate_limited"];
