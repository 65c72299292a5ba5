//! [`TaskContext`]: what a handler reports while it runs ([`Progress`]) and its final output.

use std::sync::{Arc, Mutex};

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
    /// [`Handler::check_output`](super::Handler::check_output) validates when the attempt reports success.
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

#[cfg(test)]
mod tests {
    use super::*;

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
