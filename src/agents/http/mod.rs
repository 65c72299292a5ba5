//! The `http` handler type (PROTOCOL.md): one `POST` per attempt to an agent server the
//! operator runs, over a pooled keep-alive client; the reply is JSON or an NDJSON stream whose
//! step events reach the attempt's context as they arrive.
//!
//! * `options` — the entry's keys (`url`, `headers`, `secret`/`secrets`, `max_reply_bytes`,
//!   `ca_file`, `connect_timeout_ms`, `max_idle_per_host`), validated.
//! * `client` — the entry's HTTP client: HTTP/1.1, rustls (ring), compiled-in roots plus
//!   `ca_file`, no redirects, no proxy, no client retries.
//! * `reply` — a reply read into an outcome: JSON, streamed NDJSON, the status mapping,
//!   `Retry-After`, broken replies, bounded excerpts.
//! * `handler` — [`HttpHandler`](handler::HttpHandler): the request of one attempt, within
//!   the entry's timeout.

pub(crate) mod client;
mod handler;
mod options;
pub(crate) mod reply;

use std::sync::Arc;

use crate::error::Result;
use crate::handler::{Handler, HandlerSpec};
use crate::telemetry::events::agent_http;

/// Builds the handler of a `type = "http"` entry: validates its keys (unknown ones and bad
/// values are configuration errors naming `handlers[i].<key>`), reads `ca_file`, builds the
/// entry's client.
pub(crate) fn build(spec: &HandlerSpec) -> Result<Arc<dyn Handler>> {
    let opts = options::HttpOptions::from_spec(spec)?;
    let client = client::build(spec, &opts)?;
    let names: Vec<&str> = opts.headers.keys().map(|k| k.as_str()).collect();
    agent_http::handler_ready(
        &spec.label(),
        &opts.endpoint,
        opts.secrets.len(),
        &names,
        opts.ca_certs.len(),
        opts.max_idle_per_host,
    );
    Ok(Arc::new(handler::HttpHandler::new(spec, opts, client)))
}
