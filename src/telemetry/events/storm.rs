//! Storm-proof logging, wired: the events whose lines a storm repeats (one per failed attempt,
//! retry, dead letter, lost entry, duplicate, agent stderr line…), the process's one
//! [`Limiter`] that decides which of their lines are written, and the summary lines of the
//! others.
//!
//! An event function asks [`admit`] before writing its line. Within `log.storm_interval_ms`
//! the first line of each key (the event and its failure's fingerprint) is written in full;
//! the others are counted — `redrive_log_lines_suppressed_total{event}` counts each — and
//! summarised in one line when the window ends: how many, which tenants, the first and last
//! task id, the fingerprint and, for failures, the command that lists their dead letters
//! (which hold every task's full context). Every metric still counts every event.
//!
//! Nothing is counted where the line would not be written anyway (its level is off for its
//! target), and nothing is suppressed where debug is on for its target: whoever turns debug
//! on gets every line. A window's summary is written by the next line of its key after it
//! ended, or by [`flush_due`] (the fleet's `LogSummaries` loop calls it when the next window
//! ends, and [`flush_all`] when it stops), so no count is lost at a clean stop.
//!
//! A summary keeps the target and level of the lines it stands for, so log filters treat
//! both alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::telemetry::names;
use crate::telemetry::storm::{Limiter, Occurrence, Print, Summary, MAX_TENANTS};

/// The window length when the settings name none (`log.storm_interval_ms`'s default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Most keys (event and fingerprint) tracked at once; the occurrences of further keys are
/// summarised per event under `fingerprint=overflow`.
pub const MAX_KEYS: usize = 1_000;

/// Declares the events whose lines go through the limiter: variant, `event` label, the target
/// and level of their lines, the words of their line, and whether their summary points at the
/// dead letters (`dlq`) or at nothing (`none`).
macro_rules! storm_events {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $label:literal, $target:literal, $level:ident, $what:literal, $hint:ident;
    )*) => {
        /// An event whose log lines a storm can repeat.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum StormEvent {
            $($(#[$doc])* $variant,)*
        }

        impl StormEvent {
            /// Every such event.
            pub const ALL: &'static [StormEvent] = &[$(StormEvent::$variant,)*];

            /// The `event` label of `redrive_log_lines_suppressed_total` and of the summary.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(StormEvent::$variant => $label,)*
                }
            }

            /// The target its lines are written under.
            #[cfg(test)]
            pub fn target(self) -> &'static str {
                match self {
                    $(StormEvent::$variant => $target,)*
                }
            }

            /// The words its line says.
            fn what(self) -> &'static str {
                match self {
                    $(StormEvent::$variant => $what,)*
                }
            }

            /// Whether its summary names the dead letters of its fingerprint.
            fn points_at_dead_letters(self) -> bool {
                match self {
                    $(StormEvent::$variant => storm_events!(@hint $hint),)*
                }
            }

            /// Whether its lines are written at all (their level is on for their target).
            fn enabled(self) -> bool {
                match self {
                    $(StormEvent::$variant => tracing::enabled!(target: $target, tracing::Level::$level),)*
                }
            }

            /// Whether debug is on for its target: then every line is written.
            fn debug_enabled(self) -> bool {
                match self {
                    $(StormEvent::$variant => tracing::enabled!(target: $target, tracing::Level::DEBUG),)*
                }
            }

            /// Writes the summary line `s` under its target and level.
            fn write(self, s: &Summary<StormEvent>, line: &SummaryLine) {
                match self {
                    $(StormEvent::$variant => tracing::event!(
                        target: $target,
                        tracing::Level::$level,
                        event = $label,
                        suppressed = s.suppressed,
                        tasks = line.tasks,
                        tenants = %line.tenants,
                        first_task_id = s.first_task_id.as_deref(),
                        last_task_id = s.last_task_id.as_deref(),
                        fingerprint = line.fingerprint.as_deref(),
                        window_ms = s.span_ms,
                        find = line.find.as_deref(),
                        "{}", line.message
                    ),)*
                }
            }
        }
    };
    (@hint dlq) => { true };
    (@hint none) => { false };
}

storm_events! {
    /// A failed attempt (`settle::attempt_failed`).
    AttemptFailed = "attempt_failed", "redrive::fleet::settler", WARN, "task attempt failed", dlq;
    /// A retry scheduled (`settle::retry_scheduled`).
    RetryScheduled = "retry_scheduled", "redrive::fleet::settler", INFO, "retry scheduled", none;
    /// A task dead-lettered (`settle::dead_lettered`).
    DeadLettered = "dead_lettered", "redrive::fleet::settler", WARN, "task dead-lettered", dlq;
    /// An unreadable entry set aside (`settle::malformed_set_aside`).
    MalformedEntry = "malformed_entry", "redrive::fleet::settler", WARN, "malformed entry set aside", dlq;
    /// A task's settle found done by an earlier try whose reply was lost (`settle::reply_lost`).
    ReplyLost = "reply_lost", "redrive::fleet::settler", WARN, "settled by an earlier try whose reply was lost", none;
    /// Entries an ack or a deferral found settled by an earlier try whose reply was lost
    /// (`settle::entries_reply_lost`).
    EntriesReplyLost = "entries_reply_lost", "redrive::fleet::settler", WARN, "entries settled by an earlier try whose reply was lost", none;
    /// Completed entries no longer this member's to ack (`settle::acks_lost`).
    AcksLost = "acks_lost", "redrive::fleet::settler", WARN, "completed entries were no longer ours to ack", none;
    /// Tasks held back by an open breaker, deferred (`settle::tasks_deferred`).
    TasksDeferred = "tasks_deferred", "redrive::fleet::settler", INFO, "tasks held back by the tenant's breaker, deferred unattempted", none;
    /// Dead letters deleted without an archive past the hard ceiling (`settle::dlq_trimmed`).
    DlqTrimmed = "dlq_trimmed", "redrive::fleet::settler", WARN, "dead-letter stream past its hard ceiling: the oldest dead letters were deleted WITHOUT an archive (is the archive unreachable?)", none;
    /// An entry whose task is done, acked as a duplicate (`records::member_duplicate`).
    MemberDuplicate = "member_duplicate", "redrive::fleet::settler", INFO, "task already done: entry acked as a duplicate without running", none;
    /// A task past its deadline, not run (`attempt::not_run`).
    Expired = "expired", "redrive::fleet::executor", WARN, "task past its deadline; not run", dlq;
    /// A task that arrived inside a side-effecting step, not run (`attempt::not_run`).
    PartialExecution = "partial_execution", "redrive::fleet::executor", WARN, "task arrived inside a side-effecting step; not run", dlq;
    /// A task no handler matches, not run (`attempt::not_run`).
    NoHandler = "no_handler", "redrive::fleet::executor", WARN, "no handler for the task's kind; not run", dlq;
    /// A task not started: its entry was taken over meanwhile (`attempt::start_lost`).
    StartLost = "start_lost", "redrive::fleet::executor", WARN, "not started: another member took the entry over while it waited here", none;
    /// A task's start could not be recorded (`attempt::start_failed`).
    StartFailed = "start_failed", "redrive::fleet::executor", WARN, "cannot record the start; not run here, the entry stays pending for a reclaim", none;
    /// A taken-over entry runs here (`attempt::takeover_running`).
    TakeoverRunning = "takeover_running", "redrive::fleet::executor", INFO, "running a taken-over entry", none;
    /// An attempt stopped: its entry was taken over (`attempt::attempt_lost`).
    AttemptLost = "attempt_lost", "redrive::fleet::executor", WARN, "attempt stopped: another member took the entry over", none;
    /// Step records refused by the fence (`attempt::steps_fenced`).
    StepsFenced = "steps_fenced", "redrive::fleet::executor", WARN, "step records refused: another member owns the entry now; this attempt records no more steps", none;
    /// Step records Redis failed to store (`attempt::steps_failed`).
    StepsFailed = "steps_failed", "redrive::fleet::executor", WARN, "cannot record step checkpoints in Redis; a crash now would lose them", none;
    /// A line a pool agent wrote on stderr (`AgentMeters::stderr_line`).
    PoolStderr = "pool_stderr", "redrive::agents::pool", INFO, "agent stderr", none;
    /// A line an exec agent wrote on stderr (`AgentMeters::stderr_line`).
    ExecStderr = "exec_stderr", "redrive::agents::exec", INFO, "agent stderr", none;
    /// A write's `WAIT` confirmed fewer replicas than `redis.wait_replicas`
    /// (`replication::wait_short`).
    WaitShort = "wait_short", "redrive::broker::replicas", WARN, "write not confirmed by enough replicas within redis.wait_timeout_ms: a failover of its node now could lose it", none;
}

impl StormEvent {
    /// Whether occurrences of this event are counted by weight (entries of a batch) rather
    /// than one line per task: their summaries say how many entries.
    fn batched(self) -> bool {
        matches!(
            self,
            StormEvent::EntriesReplyLost
                | StormEvent::AcksLost
                | StormEvent::TasksDeferred
                | StormEvent::DlqTrimmed
        )
    }
}

/// The window length, ms, read on the hot path without the lock (0: off).
static INTERVAL_MS: AtomicU64 = AtomicU64::new(DEFAULT_INTERVAL.as_millis() as u64);

/// The process's limiter.
static LIMITER: LazyLock<Mutex<Limiter<StormEvent>>> =
    LazyLock::new(|| Mutex::new(Limiter::new(INTERVAL_MS.load(Ordering::Relaxed), MAX_KEYS)));

/// The clock windows are measured on: milliseconds since the first use, monotonic.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

fn limiter() -> MutexGuard<'static, Limiter<StormEvent>> {
    LIMITER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the window length (`log.storm_interval_ms`; zero writes every line). Windows already
/// open end by the new length.
pub fn set_interval(interval: Duration) {
    let ms = interval.as_millis() as u64;
    INTERVAL_MS.store(ms, Ordering::Relaxed);
    limiter().set_interval(ms);
}

/// The window length (zero: every line is written).
pub fn interval() -> Duration {
    Duration::from_millis(INTERVAL_MS.load(Ordering::Relaxed))
}

/// Whether the line of this occurrence of `event` (grouped by `print`) is to be written: the
/// first of its key in a window, or every one when debug is on for its target or the limiter
/// is off. A line not to be written is counted for its key's summary and in
/// `redrive_log_lines_suppressed_total`. A window of the key that ended is summarised here,
/// before the line.
pub fn admit(
    event: StormEvent,
    print: Print,
    tenant: &str,
    task_id: Option<&str>,
    weight: u64,
) -> bool {
    if !event.enabled() {
        return false;
    }
    if INTERVAL_MS.load(Ordering::Relaxed) == 0 || event.debug_enabled() {
        return true;
    }
    let o = Occurrence {
        tenant,
        task_id,
        weight,
    };
    let admitted = limiter().admit(event, print, &o, now_ms());
    if let Some(s) = &admitted.closed {
        write_summary(s);
    }
    if !admitted.write {
        count_suppressed(event);
    }
    admitted.write
}

/// The suppressed-lines counters of every event, in [`StormEvent::ALL`]'s order, resolved once
/// the recorder is installed ([`register_series`]).
static SUPPRESSED: OnceLock<Vec<metrics::Counter>> = OnceLock::new();

/// Counts one line of `event` not written: through the handle resolved at start (no label
/// allocation per line), or resolved now when none was.
fn count_suppressed(event: StormEvent) {
    match SUPPRESSED.get().and_then(|c| c.get(event as usize)) {
        Some(counter) => counter.increment(1),
        None => {
            metrics::counter!(names::LOG_LINES_SUPPRESSED, "event" => event.as_str()).increment(1)
        }
    }
}

/// Writes the summaries of the windows that have ended; returns how long until the next open
/// window ends (`None`: none is open).
pub fn flush_due() -> Option<Duration> {
    let now = now_ms();
    let (due, next) = {
        let mut l = limiter();
        let due = l.due(now);
        (due, l.next_due_ms())
    };
    for s in &due {
        write_summary(s);
    }
    next.map(|at| Duration::from_millis(at.saturating_sub(now)))
}

/// Writes the summaries of every open window (at a clean stop: no count is lost).
pub fn flush_all() {
    let all = limiter().drain(now_ms());
    for s in &all {
        write_summary(s);
    }
}

/// Registers every event's suppressed-lines series at 0, so `increase()` sees the first
/// suppressed lines, and keeps their handles. Called by the recorder right after it is
/// installed: handles resolved earlier would record nowhere.
pub fn register_series() {
    let counters = StormEvent::ALL
        .iter()
        .map(|e| {
            let c = metrics::counter!(names::LOG_LINES_SUPPRESSED, "event" => e.as_str());
            c.increment(0);
            c
        })
        .collect();
    let _ = SUPPRESSED.set(counters);
}

/// What a summary line says, worked out once for both formats.
#[derive(Debug)]
struct SummaryLine {
    message: String,
    /// Entries counted, for events about batches.
    tasks: Option<u64>,
    tenants: String,
    /// The fingerprint of the lines' cause (`overflow` for causes beyond the tracked ones;
    /// none for events without one).
    fingerprint: Option<String>,
    /// The command that lists the dead letters of the fingerprint.
    find: Option<String>,
}

impl SummaryLine {
    fn of(s: &Summary<StormEvent>) -> SummaryLine {
        let event = s.event;
        let span = Duration::from_millis(s.span_ms);
        let mut tenants = s.tenants.join(", ");
        if s.more_tenants {
            tenants.push_str(&format!(", … (more than {MAX_TENANTS})"));
        }
        let (fingerprint, of) = match s.print {
            Print::Of(f) => (Some(f.to_string()), " like the one above".to_owned()),
            Print::Plain => (None, " like the one above".to_owned()),
            Print::Overflow => (
                Some("overflow".to_owned()),
                format!(" of further causes (beyond the {MAX_KEYS} tracked)"),
            ),
        };
        let find = match s.print {
            Print::Of(f) if event.points_at_dead_letters() => Some(match &s.tenants[..] {
                [one] if !s.more_tenants => {
                    format!("redrive dlq list --tenant {one} --fingerprint {f}")
                }
                _ => format!("redrive dlq list --fingerprint {f}"),
            }),
            _ => None,
        };
        let tasks = event.batched().then_some(s.weight);
        let mut message = format!(
            "{} more \"{}\" lines{of} in the last {}",
            s.suppressed,
            event.what(),
            humantime(span)
        );
        if let Some(n) = tasks {
            message.push_str(&format!(" ({n} entries)"));
        }
        message.push_str(": not logged one by one");
        SummaryLine {
            message,
            tasks,
            tenants: format!("[{tenants}]"),
            fingerprint,
            find,
        }
    }
}

/// `span` as a short text: `10s`, `2.5s`, `300ms`.
fn humantime(span: Duration) -> String {
    let ms = span.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", span.as_secs_f64())
    }
}

/// Writes the summary line of `s`.
fn write_summary(s: &Summary<StormEvent>) {
    s.event.write(s, &SummaryLine::of(s));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;
    use crate::deadletter::Fingerprint;
    use crate::handler::FailureClass;
    use crate::telemetry::events::{agent_process, attempt, records, settle};
    use crate::telemetry::tasklog::TaskLog;

    /// One captured line: target, level and fields (`message` included).
    type Line = (String, tracing::Level, BTreeMap<String, String>);

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<Line>>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Lines {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            let meta = event.metadata();
            if let Ok(mut lines) = self.0.lock() {
                lines.push((meta.target().to_owned(), *meta.level(), fields));
            }
        }
    }

    /// Emits one occurrence of `event` through its event function, about task `task_id` of
    /// `tenant`; every occurrence of one event and tenant has the same cause.
    fn emit(event: StormEvent, tenant: &str, task_id: &str) {
        let log = TaskLog {
            tenant: tenant.to_owned(),
            task_id: task_id.to_owned(),
            kind: "storm-test".to_owned(),
            attempt: 1,
            trace_id: String::new(),
        };
        let class = FailureClass::RateLimited;
        let print = Fingerprint::of_error("storm-test", class, "429 after 200 ms");
        let err = crate::Error::Config("boom".into());
        match event {
            StormEvent::AttemptFailed => settle::attempt_failed(
                tenant,
                &log,
                &settle::AttemptFailure {
                    class,
                    deliveries: 1,
                    duration: Duration::ZERO,
                    poison: false,
                    reason: "429 after 200 ms",
                    payload: None,
                    fingerprint: print,
                },
            ),
            StormEvent::RetryScheduled => {
                settle::retry_scheduled(tenant, &log, class, print, Duration::ZERO, 1)
            }
            StormEvent::DeadLettered => {
                settle::dead_lettered(tenant, &log, "1-0", (class, print), "2-0", "replay")
            }
            StormEvent::MalformedEntry => {
                settle::malformed_set_aside(tenant, &log, "1-0", "missing field 'kind'", print)
            }
            StormEvent::ReplyLost => settle::retry_reply_lost(&log, "1-0", class),
            StormEvent::EntriesReplyLost => settle::acks_reply_lost(tenant, 3),
            StormEvent::AcksLost => settle::acks_lost(tenant, 3),
            StormEvent::TasksDeferred => settle::tasks_deferred(tenant, 3),
            StormEvent::DlqTrimmed => settle::dlq_trimmed(tenant, 3),
            StormEvent::MemberDuplicate => records::member_duplicate(tenant, task_id, "1-0"),
            StormEvent::Expired => attempt::expired(&log, "1-0", 5, "deadline passed 3 ms ago"),
            StormEvent::PartialExecution => {
                attempt::inside_side_effect(&log, "1-0", "send", "step 'send' never completed")
            }
            StormEvent::NoHandler => attempt::no_handler(&log, "1-0", "no handler matches"),
            StormEvent::StartLost => attempt::start_lost(&log, "1-0"),
            StormEvent::StartFailed => attempt::start_failed(&log, "1-0"),
            StormEvent::TakeoverRunning => attempt::takeover_running(&log, "1-0", 2, true, 0),
            StormEvent::AttemptLost => attempt::attempt_lost(&log, "1-0"),
            StormEvent::StepsFenced => attempt::steps_fenced(tenant, "1-0", 1),
            StormEvent::StepsFailed => attempt::steps_failed(tenant, "1-0", 1, &err),
            StormEvent::PoolStderr | StormEvent::ExecStderr => {
                let meters =
                    agent_process::AgentMeters::new("9:x", event == StormEvent::PoolStderr);
                meters.stderr_line(0, 1, Some(&log), "Traceback at line 12");
            }
            StormEvent::WaitShort => {
                crate::telemetry::events::replication::wait_short("settle", &[tenant], 1, 0, None)
            }
        }
    }

    /// The lines a subscriber at `level` captured while `f` ran.
    fn capture(level: LevelFilter, f: impl FnOnce()) -> Vec<Line> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(lines.clone().with_filter(level));
        tracing::subscriber::with_default(subscriber, f);
        let captured = lines.0.lock().map(|l| l.clone()).unwrap_or_default();
        captured
    }

    /// One test, because the limiter is the process's: every storm event's line is written
    /// once per window under its own target and level, the others are summarised in one line
    /// under the same target and level; debug on, or an interval of 0, writes every line.
    #[test]
    fn storm_lines_are_written_once_then_summarised_under_their_target_and_level() {
        let tenant = |e: StormEvent| format!("storm-{}", e.as_str());
        let lines = capture(LevelFilter::INFO, || {
            for e in StormEvent::ALL {
                for i in 0..5 {
                    emit(*e, &tenant(*e), &format!("task-{i}"));
                }
            }
            flush_all();
        });
        for e in StormEvent::ALL {
            let t = tenant(*e);
            let about: Vec<&Line> = lines
                .iter()
                .filter(|(_, _, f)| {
                    f.get("tenant") == Some(&t) || f.get("tenants") == Some(&format!("[{t}]"))
                })
                .collect();
            assert_eq!(about.len(), 2, "{e:?}: one line, one summary: {about:?}");
            let ((target, level, first), (s_target, s_level, summary)) = (about[0], about[1]);
            assert_eq!(target, e.target(), "{e:?}");
            assert_eq!((s_target, s_level), (target, level), "{e:?}");
            assert!(first["message"].contains(e.what()), "{e:?}: {first:?}");
            assert_eq!(summary["event"], e.as_str());
            assert_eq!(summary["suppressed"], "4", "{e:?}: {summary:?}");
            assert!(
                summary["message"].starts_with(&format!("4 more \"{}\" lines", e.what())),
                "{summary:?}"
            );
            if e.batched() {
                assert_eq!(summary["tasks"], "12", "{e:?}: the entries of 4 batches");
            } else {
                assert!(!summary.contains_key("tasks"));
            }
            let has_task = first.contains_key("task_id");
            assert_eq!(summary.get("first_task_id").is_some(), has_task, "{e:?}");
            if has_task {
                assert_eq!(summary["first_task_id"], "task-1");
                assert_eq!(summary["last_task_id"], "task-4");
            }
            match summary.get("find") {
                Some(find) => {
                    assert!(e.points_at_dead_letters(), "{e:?}");
                    let f = &summary["fingerprint"];
                    assert_eq!(
                        find,
                        &format!("redrive dlq list --tenant {t} --fingerprint {f}")
                    );
                }
                None => assert!(!e.points_at_dead_letters(), "{e:?}"),
            }
        }
        // Nothing else was written.
        assert_eq!(lines.len(), 2 * StormEvent::ALL.len(), "{lines:#?}");

        // Debug on: every line, no summary.
        let lines = capture(LevelFilter::DEBUG, || {
            for i in 0..5 {
                emit(
                    StormEvent::AttemptFailed,
                    "storm-debug",
                    &format!("task-{i}"),
                );
            }
            flush_all();
        });
        let failed = lines
            .iter()
            .filter(|(_, _, f)| f.contains_key("tenant"))
            .count();
        assert_eq!((failed, lines.len()), (5, 5));

        // Off: every line; on again: one line per window.
        set_interval(Duration::ZERO);
        let lines = capture(LevelFilter::INFO, || {
            for i in 0..5 {
                emit(StormEvent::DeadLettered, "storm-off", &format!("task-{i}"));
            }
            flush_all();
        });
        assert_eq!(lines.len(), 5);
        set_interval(DEFAULT_INTERVAL);
        let lines = capture(LevelFilter::INFO, || {
            for i in 0..5 {
                emit(StormEvent::DeadLettered, "storm-on", &format!("task-{i}"));
            }
            assert!(flush_due().is_some_and(|next| next <= DEFAULT_INTERVAL));
            flush_all();
            assert_eq!(flush_due(), None, "nothing open after the flush");
        });
        assert_eq!(lines.len(), 2);

        // A level that is off for the target: nothing written, nothing counted.
        let lines = capture(LevelFilter::WARN, || {
            for i in 0..5 {
                emit(
                    StormEvent::RetryScheduled,
                    "storm-quiet",
                    &format!("task-{i}"),
                );
            }
            flush_all();
        });
        assert!(lines.is_empty(), "{lines:?}");
    }

    /// The suppressed-lines handles are looked up by discriminant in `ALL`'s order.
    #[test]
    fn every_event_is_at_its_discriminant_in_all() {
        for (i, e) in StormEvent::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
        let labels: std::collections::BTreeSet<_> =
            StormEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(labels.len(), StormEvent::ALL.len(), "labels are distinct");
    }

    #[test]
    fn spans_read_as_short_durations() {
        assert_eq!(humantime(Duration::from_secs(10)), "10s");
        assert_eq!(humantime(Duration::from_millis(2_500)), "2.5s");
        assert_eq!(humantime(Duration::from_millis(300)), "300ms");
    }
}
