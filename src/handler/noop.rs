//! [`NoopHandler`]: finishes every task at once.

use std::sync::Arc;

use super::context::TaskContext;
use super::handle::{Handler, HandlerFuture};
use super::outcome::Outcome;
use crate::task::Task;

/// A handler that finishes every task at once; for benchmarks and plumbing tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopHandler;

impl Handler for NoopHandler {
    fn handle(&self, _task: Arc<Task>, _ctx: TaskContext) -> HandlerFuture {
        Box::pin(std::future::ready(Outcome::Done))
    }
}
