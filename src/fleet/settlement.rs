//! The settlement messages: what the executor, reader and reclaimer ask the settler to do
//! with one entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Fields;
use crate::handler::{FailureClass, Progress};
use crate::records::Output;
use crate::task::Task;

/// A failed attempt, as the executor reports it.
#[derive(Debug)]
pub(crate) struct Failed {
    pub tenant: Arc<str>,
    pub entry_id: String,
    pub task: Arc<Task>,
    /// Starts of the entry, this attempt included.
    pub deliveries: u64,
    pub class: FailureClass,
    pub reason: String,
    pub retry_after: Option<Duration>,
    pub poison: bool,
    pub progress: Progress,
    /// The step the attempt failed in, when known: the side-effecting step left open, else
    /// the last step started and not completed.
    pub failed_step: Option<String>,
    pub duration: Duration,
    /// When the attempt started, ms by the server's clock (the member's estimate of it): its
    /// run's start in the task's record.
    pub started_ms: u64,
}

/// What the settler is asked to do with one entry. Completed entries, held-back entries and
/// failed attempts are batched or decided by the settler's loop; everything set aside is one
/// move of its own (see [`Aside`]).
#[derive(Debug)]
pub(crate) enum Settlement {
    /// The attempt succeeded: ack and delete.
    Done {
        tenant: Arc<str>,
        entry_id: String,
        recovered: bool,
        /// When the read that delivered the entry was sent (`None` for taken-over entries).
        read_at: Option<Instant>,
        /// Whether steps may be recorded for the entry in Redis (its task carried steps or
        /// this attempt recorded some): the ack then deletes the entry's steps hash too.
        steps: bool,
        /// The task (its task_id and kind name its done record and the record's retention).
        task: Arc<Task>,
        /// The handler's output for the record, bounded; `None` when the kind keeps none.
        output: Option<Output>,
        /// When the attempt started, ms by the server's clock (the member's estimate of it:
        /// the done record's `started`).
        started_ms: u64,
    },
    /// The tenant's breaker is not closed: move the entry to the retry schedule unattempted,
    /// due after `delay`.
    Defer {
        tenant: Arc<str>,
        entry_id: String,
        delay: Duration,
    },
    /// The attempt failed.
    Failed(Failed),
    /// The entry is set aside without an attempt's outcome: one move of its own.
    Aside(Aside),
}

/// An entry set aside without an attempt's outcome; each is settled by one call of its own.
#[derive(Debug)]
pub(crate) enum Aside {
    /// The entry could not be read as a task.
    Malformed {
        tenant: Arc<str>,
        lane: String,
        entry_id: String,
        reason: String,
        fields: Fields,
    },
    /// A pending id whose entry no longer exists.
    Tombstone { tenant: Arc<str>, entry_id: String },
    /// Another member owns the entry now: release it here without settling.
    Lost { tenant: Arc<str>, entry_id: String },
    /// Its task (`task_id`) is already done and the tenant refuses duplicates: ack and delete
    /// the entry without running it, the record untouched.
    Duplicate {
        tenant: Arc<str>,
        entry_id: String,
        task_id: String,
    },
    /// Its start could not be recorded (Redis failed): it did not run, stays pending for this
    /// consumer in Redis and is released here for a reclaim to take up. Nothing was lost to
    /// another member, so it is not counted as a lost settle.
    NotStarted { tenant: Arc<str>, entry_id: String },
    /// The task must not run: dead-letter it unattempted with `class` — `expired` (past its
    /// deadline when it was about to start), `no_handler` (no route matches its kind),
    /// `partial_execution` (it arrived with a side-effecting step started and not done).
    NotRun(Box<NotRun>),
    /// The entry started `deliveries` times without settling.
    CrashLoop {
        tenant: Arc<str>,
        entry_id: String,
        deliveries: u64,
        /// The consumer that must still own it (`None`: any), and how idle it must be.
        owner: Option<Arc<str>>,
        min_idle: Duration,
    },
}

impl Settlement {
    /// The tenant and entry id this settlement is about.
    pub(crate) fn entry(&self) -> (&Arc<str>, &str) {
        match self {
            Settlement::Done {
                tenant, entry_id, ..
            }
            | Settlement::Defer {
                tenant, entry_id, ..
            } => (tenant, entry_id),
            Settlement::Failed(f) => (&f.tenant, &f.entry_id),
            Settlement::Aside(a) => a.entry(),
        }
    }
}

impl Aside {
    /// The tenant and entry id this move is about.
    pub(crate) fn entry(&self) -> (&Arc<str>, &str) {
        match self {
            Aside::Malformed {
                tenant, entry_id, ..
            }
            | Aside::Tombstone { tenant, entry_id }
            | Aside::Lost { tenant, entry_id }
            | Aside::Duplicate {
                tenant, entry_id, ..
            }
            | Aside::NotStarted { tenant, entry_id }
            | Aside::CrashLoop {
                tenant, entry_id, ..
            } => (tenant, entry_id),
            Aside::NotRun(n) => (&n.tenant, &n.entry_id),
        }
    }
}

/// A task dead-lettered without running (see [`Aside::NotRun`]).
#[derive(Debug)]
pub(crate) struct NotRun {
    pub tenant: Arc<str>,
    pub entry_id: String,
    pub task: Arc<Task>,
    pub class: FailureClass,
    /// The dead letter's error: why it did not run.
    pub error: String,
    /// The dead letter's detail.
    pub detail: String,
    /// The step it stopped at, if any (the open side-effecting step of a partial execution).
    pub failed_step: Option<String>,
}
