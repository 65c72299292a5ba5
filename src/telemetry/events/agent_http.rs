//! The `http` agent handler (src/agents/http/): each attempt's outcome and duration per
//! `[[handlers]]` entry, and the entry's set-up. Logged under the handler's target. Neither
//! logs a secret, a configured header's value, or the URL's path and query (a token may hide
//! there): only `scheme://host:port`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::handler::{FailureClass, Outcome};
use crate::telemetry::names;

/// The handler's module path, which log filters name.
const TARGET: &str = "redrive::agents::http";

/// The `outcome` label values: `ok`, every failure class, and `unclassified` (a fail reply
/// without a known class: the fleet's `[classify]` rules name it afterwards).
pub const OUTCOMES: [&str; 18] = [
    "ok",
    "rate_limited",
    "timeout",
    "upstream_unavailable",
    "agent_crashed",
    "llm_error",
    "invalid_input",
    "context_overflow",
    "schema_mismatch",
    "unauthorized",
    "partial_execution",
    "malformed_entry",
    "crash_loop",
    "silent_failure",
    "expired",
    "no_handler",
    "unknown",
    "unclassified",
];

/// The position of an outcome's label in [`OUTCOMES`].
fn outcome_index(outcome: &Outcome) -> usize {
    let label = match outcome {
        Outcome::Done => "ok",
        Outcome::Fail { class, .. } => class.as_str(),
        Outcome::Poison { .. } | Outcome::Error { .. } => "unclassified",
    };
    OUTCOMES
        .iter()
        .position(|o| *o == label)
        .unwrap_or(OUTCOMES.len() - 1)
}

/// The metric handles of one `http` entry, resolved once: the attempt counters of every
/// outcome are registered at 0 (so `increase()` sees the first of each), the duration
/// histograms on first use.
#[derive(Clone)]
pub struct HttpMeters {
    handler: Arc<str>,
    attempts: Arc<[metrics::Counter]>,
    durations: Arc<[OnceLock<metrics::Histogram>]>,
}

impl HttpMeters {
    /// The handles of the entry labelled `handler` (`<index>:http`).
    pub fn new(handler: &str) -> HttpMeters {
        let handler: Arc<str> = handler.into();
        let attempts: Vec<metrics::Counter> = OUTCOMES
            .iter()
            .map(|o| {
                let c = metrics::counter!(names::HTTP_ATTEMPTS, "handler" => handler.to_string(), "outcome" => *o);
                c.increment(0);
                c
            })
            .collect();
        HttpMeters {
            handler,
            attempts: attempts.into(),
            durations: OUTCOMES.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// One attempt came to `outcome` (before the executor applies the step rules) after
    /// `took`.
    pub fn attempt_finished(&self, outcome: &Outcome, took: Duration) {
        let i = outcome_index(outcome);
        if let Some(c) = self.attempts.get(i) {
            c.increment(1);
        }
        if let Some(h) = self.durations.get(i) {
            h.get_or_init(|| {
                metrics::histogram!(names::HTTP_ATTEMPT_DURATION, "handler" => self.handler.to_string(), "outcome" => OUTCOMES[i])
            })
            .record(took.as_secs_f64());
        }
        if let Outcome::Fail { class, reason, .. } = outcome {
            // The fleet logs every failed attempt with its task; this line adds the transport's
            // view for whoever debugs the agent.
            if matches!(
                class,
                FailureClass::UpstreamUnavailable
                    | FailureClass::SilentFailure
                    | FailureClass::SchemaMismatch
            ) {
                tracing::debug!(target: TARGET, handler = %self.handler, class = %class, took_ms = took.as_millis() as u64, reason = %reason, "http attempt failed");
            }
        }
    }
}

/// An `http` entry is ready to POST to `endpoint`.
pub fn handler_ready(
    label: &str,
    endpoint: &str,
    signed_with: usize,
    header_names: &[&str],
    extra_roots: usize,
    max_idle: usize,
) {
    tracing::info!(
        target: TARGET,
        handler = %label,
        endpoint = %endpoint,
        secrets = signed_with,
        headers = ?header_names,
        ca_certs = extra_roots,
        max_idle_per_host = max_idle,
        "http handler ready"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_outcome_label() {
        for c in FailureClass::ALL {
            let i = outcome_index(&Outcome::fail(c, "x"));
            assert_eq!(OUTCOMES[i], c.as_str());
        }
        assert_eq!(OUTCOMES[outcome_index(&Outcome::Done)], "ok");
        let e = Outcome::Error {
            message: "x".into(),
        };
        assert_eq!(OUTCOMES[outcome_index(&e)], "unclassified");
        assert_eq!(OUTCOMES.len(), FailureClass::ALL.len() + 2);
    }
}
