//! The interface between the fleet and agent code: a [`Handler`] runs one attempt of a task and
//! returns an [`Outcome`] that says what happens next.
//!
//! * `handle` — the [`Handler`] trait and the future it returns.
//! * `outcome` — [`Outcome`]: done, fail with a class, poison, or an unclassified error.
//! * `class` — [`FailureClass`] and its stable wire names.
//! * `context` — [`TaskContext`]: progress and output reported during an attempt.
//! * `registry` — [`Handlers`]: handlers by name, for `fleet.handler`.
//! * `spec` — [`HandlerSpec`]: one `[[handlers]]` entry as a factory receives it.
//! * `noop` — [`NoopHandler`], which finishes every task at once.

mod class;
mod context;
mod handle;
mod noop;
mod outcome;
mod registry;
mod spec;

pub use class::FailureClass;
pub(crate) use context::StepSink;
pub use context::{Progress, StepEvent, TaskContext};
pub use handle::{Handler, HandlerFuture, ShutdownFuture};
pub use noop::NoopHandler;
pub use outcome::Outcome;
pub use registry::Handlers;
pub(crate) use spec::glob_match;
pub use spec::HandlerSpec;
