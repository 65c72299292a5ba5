//! [`FailureClass`]: why an attempt failed, under a wire name that never changes.

use std::fmt;

/// The class of a failed attempt. The wire name (`as_str`) is what dead letters, metrics and
/// logs carry; it never changes when Rust names do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// The model or a tool said "slow down" (HTTP 429 and friends). Transient.
    RateLimited,
    /// The attempt ran past its time limit. Transient.
    Timeout,
    /// A dependency was down or unreachable. Transient.
    UpstreamUnavailable,
    /// The agent process exited, was killed or broke the stdio protocol during the attempt.
    /// Transient, and counted toward poison detection: after `reclaim.max_deliveries` such
    /// attempts in a row the task is a `crash_loop`.
    AgentCrashed,
    /// The model call failed in a way worth retrying (5xx, truncated stream). Transient.
    LlmError,
    /// The task's input can never succeed as it is. Permanent.
    InvalidInput,
    /// The prompt does not fit the model's context window. Permanent.
    ContextOverflow,
    /// The model's output did not match the expected schema. Permanent.
    SchemaMismatch,
    /// Credentials were refused. Permanent.
    Unauthorized,
    /// Side effects may already have happened; never retried blindly.
    PartialExecution,
    /// The stream entry itself could not be read as a task.
    MalformedEntry,
    /// Delivered again and again without ever settling: it kills or hangs its worker.
    CrashLoop,
    /// The handler reported success but its output failed validation.
    SilentFailure,
    /// Past its `deadline`: not started, or not retried because the next attempt would come
    /// after it. Permanent.
    Expired,
    /// No `[[handlers]]` entry matches the task's kind: it was not run. Permanent.
    NoHandler,
    /// Nothing more specific is known.
    Unknown,
}

impl FailureClass {
    /// Every class, in a stable order.
    pub const ALL: [FailureClass; 16] = [
        FailureClass::RateLimited,
        FailureClass::Timeout,
        FailureClass::UpstreamUnavailable,
        FailureClass::AgentCrashed,
        FailureClass::LlmError,
        FailureClass::InvalidInput,
        FailureClass::ContextOverflow,
        FailureClass::SchemaMismatch,
        FailureClass::Unauthorized,
        FailureClass::PartialExecution,
        FailureClass::MalformedEntry,
        FailureClass::CrashLoop,
        FailureClass::SilentFailure,
        FailureClass::Expired,
        FailureClass::NoHandler,
        FailureClass::Unknown,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Timeout => "timeout",
            FailureClass::UpstreamUnavailable => "upstream_unavailable",
            FailureClass::AgentCrashed => "agent_crashed",
            FailureClass::LlmError => "llm_error",
            FailureClass::InvalidInput => "invalid_input",
            FailureClass::ContextOverflow => "context_overflow",
            FailureClass::SchemaMismatch => "schema_mismatch",
            FailureClass::Unauthorized => "unauthorized",
            FailureClass::PartialExecution => "partial_execution",
            FailureClass::MalformedEntry => "malformed_entry",
            FailureClass::CrashLoop => "crash_loop",
            FailureClass::SilentFailure => "silent_failure",
            FailureClass::Expired => "expired",
            FailureClass::NoHandler => "no_handler",
            FailureClass::Unknown => "unknown",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether another attempt may succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureClass::RateLimited
                | FailureClass::Timeout
                | FailureClass::UpstreamUnavailable
                | FailureClass::AgentCrashed
                | FailureClass::LlmError
                | FailureClass::Unknown
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in FailureClass::ALL {
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()));
        }
        assert!(FailureClass::RateLimited.is_transient());
        assert!(!FailureClass::PartialExecution.is_transient());
        assert!(!FailureClass::ContextOverflow.is_transient());
        assert!(!FailureClass::Expired.is_transient());
        assert_eq!(FailureClass::parse("expired"), Some(FailureClass::Expired));
        assert!(FailureClass::AgentCrashed.is_transient());
        assert!(!FailureClass::NoHandler.is_transient());
    }
}
