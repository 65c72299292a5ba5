//! Replay: a dead letter becomes a fresh task in its lane again.
//!
//! * [`build`] — pure: a dead letter's fields become the replayed task (or the reason it must
//!   not or cannot be replayed), and the order a selection is replayed in.
//! * [`selection`] — the dead letters a replay covers, in replay order.
//! * [`dry_run`] — what a replay would do, without writing anything.
//! * [`job`] — the job record, typed: state, spec, counters.
//! * [`runner`] — runs a replay command as a resumable, cancellable job.

pub mod build;
pub mod dry_run;
pub mod job;
pub mod runner;
pub mod selection;
