//! The [`Handler`] trait: agent code that runs one attempt of a task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::context::TaskContext;
use super::outcome::Outcome;
use crate::task::Task;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// The future [`Handler::shutdown`] returns.
pub type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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

    /// Releases what the handler holds (child processes, connections) once the member has
    /// stopped running attempts. Called once, after the last attempt ended or was abandoned;
    /// the default does nothing.
    fn shutdown(&self) -> ShutdownFuture {
        Box::pin(async {})
    }
}
