//! The interface between the fleet and agent code: a [`Handler`] runs one attempt of a task and
//! returns an [`Outcome`] that says what happens next.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::task::Task;

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
    /// Nothing more specific is known.
    Unknown,
}

impl FailureClass {
    /// Every class, in a stable order.
    pub const ALL: [FailureClass; 14] = [
        FailureClass::RateLimited,
        FailureClass::Timeout,
        FailureClass::UpstreamUnavailable,
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
        FailureClass::Unknown,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Timeout => "timeout",
            FailureClass::UpstreamUnavailable => "upstream_unavailable",
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

/// What one attempt of a task came to, and so what the fleet does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task is finished: ack it.
    Done,
    /// The attempt failed; `class` and `reason` explain why. Transient classes are retried
    /// under the retry policy; the others go to the dead letters.
    Fail {
        /// What kind of failure this was.
        class: FailureClass,
        /// A human-readable explanation.
        reason: String,
        /// A delay the upstream asked for (a 429's Retry-After); it wins over the policy's.
        retry_after: Option<Duration>,
    },
    /// The task must never be attempted again: dead-letter it now.
    Poison {
        /// Why.
        reason: String,
    },
    /// The attempt failed with an error that carries no class; the fleet classifies its text
    /// with the configured rules (`[classify]`).
    Error {
        /// The error message.
        message: String,
    },
}

impl Outcome {
    /// A failure of the given class.
    pub fn fail(class: FailureClass, reason: impl Into<String>) -> Outcome {
        Outcome::Fail {
            class,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A transient failure whose upstream asked to wait `after` before retrying.
    pub fn retry_after(class: FailureClass, reason: impl Into<String>, after: Duration) -> Outcome {
        Outcome::Fail {
            class,
            reason: reason.into(),
            retry_after: Some(after),
        }
    }
}

/// What a handler reports while it runs: the steps it completed and any partial output. These
/// travel with the task into its retry and its dead letter, so an operator (or the next
/// attempt) knows which side effects already happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Progress {
    /// Names of completed steps, in order.
    pub steps: Vec<String>,
    /// The latest partial output.
    pub partial_output: Option<serde_json::Value>,
}

/// The handle a handler gets next to its task.
#[derive(Debug, Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    member_id: Arc<str>,
    progress: Mutex<Progress>,
    output: Mutex<Option<serde_json::Value>>,
}

impl TaskContext {
    /// A fresh context for one attempt run by `member_id`.
    pub fn new(member_id: Arc<str>) -> Self {
        TaskContext {
            inner: Arc::new(ContextInner {
                member_id,
                progress: Mutex::new(Progress::default()),
                output: Mutex::new(None),
            }),
        }
    }

    /// The fleet member running this attempt.
    pub fn member_id(&self) -> &str {
        &self.inner.member_id
    }

    /// Records that a step (a tool call, a write) completed.
    pub fn step_done(&self, step: impl Into<String>) {
        if let Ok(mut p) = self.inner.progress.lock() {
            p.steps.push(step.into());
        }
    }

    /// Records the output produced so far.
    pub fn partial_output(&self, output: serde_json::Value) {
        if let Ok(mut p) = self.inner.progress.lock() {
            p.partial_output = Some(output);
        }
    }

    /// Records the attempt's final output, which the handler's
    /// [`Handler::check_output`] validates when the attempt reports success.
    pub fn output(&self, output: serde_json::Value) {
        if let Ok(mut o) = self.inner.output.lock() {
            *o = Some(output);
        }
    }

    /// The final output recorded, if any.
    pub fn final_output(&self) -> Option<serde_json::Value> {
        self.inner.output.lock().ok().and_then(|o| o.clone())
    }

    /// A copy of what was reported so far.
    pub fn progress(&self) -> Progress {
        self.inner
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// Agent code. One value serves every task of the member, concurrently, so it holds shared
/// clients (HTTP, model SDKs) and returns a future per attempt. A panic inside the future is
/// caught by the fleet and treated as a failed attempt.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of `task`.
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture;

    /// Validates the output of an attempt that reported success. An error turns the success
    /// into a `silent_failure`: the agent swallowed a problem and said "done". The default
    /// accepts everything.
    fn check_output(&self, task: &Task, output: Option<&serde_json::Value>) -> Result<(), String> {
        let _ = (task, output);
        Ok(())
    }
}

/// A handler that finishes every task at once; for benchmarks and plumbing tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopHandler;

impl Handler for NoopHandler {
    fn handle(&self, _task: Arc<Task>, _ctx: TaskContext) -> HandlerFuture {
        Box::pin(std::future::ready(Outcome::Done))
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
    }

    #[test]
    fn context_collects_progress() {
        let ctx = TaskContext::new("m".into());
        ctx.step_done("fetch");
        ctx.partial_output(serde_json::json!({"draft": 1}));
        let p = ctx.clone().progress();
        assert_eq!(p.steps, vec!["fetch"]);
        assert_eq!(p.partial_output, Some(serde_json::json!({"draft": 1})));
    }
}
