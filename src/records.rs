//! Task records: one hash per task_id in its tenant's hash tag (`redrive:{t}:task:<task_id>`),
//! written by the scripts that move the task (broker/scripts/lib/record.lua is the one writer),
//! so it never disagrees with where the task is. This module names the fields and states and
//! reads a record back.

use std::collections::HashMap;
use std::time::Duration;

use crate::handler::glob_match;

/// Where a task is, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// In its lane, not started.
    Queued,
    /// Started by a member.
    Running,
    /// Failed; waiting in the retry schedule.
    RetryScheduled,
    /// Held back unattempted by its tenant's breaker.
    Deferred,
    /// Finished successfully.
    Done,
    /// In its tenant's dead letters.
    DeadLettered,
    /// Its dead letter was replayed: back in its lane as entry `replayed_as` (the same
    /// task_id, linked by `replay_of`), not started yet.
    Replayed,
    /// Its dead letter was resolved by an operator.
    Resolved,
    /// Its dead letter was discarded by an operator.
    Discarded,
    /// Dead-lettered because its deadline passed.
    Expired,
}

impl TaskState {
    /// Every state, in a stable order.
    pub const ALL: [TaskState; 10] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::RetryScheduled,
        TaskState::Deferred,
        TaskState::Done,
        TaskState::DeadLettered,
        TaskState::Replayed,
        TaskState::Resolved,
        TaskState::Discarded,
        TaskState::Expired,
    ];

    /// The wire name (what the record's `state` field holds).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::RetryScheduled => "retry_scheduled",
            TaskState::Deferred => "deferred",
            TaskState::Done => "done",
            TaskState::DeadLettered => "dead_lettered",
            TaskState::Replayed => "replayed",
            TaskState::Resolved => "resolved",
            TaskState::Discarded => "discarded",
            TaskState::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the task will not move again by itself (its record then expires after the
    /// retention, except while a dead letter holds it): what `wait` returns on.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Done
                | TaskState::DeadLettered
                | TaskState::Resolved
                | TaskState::Discarded
                | TaskState::Expired
        )
    }

    /// Whether a record in this state makes a new enqueue of the same task_id a duplicate
    /// (queued, running, scheduled, dead, or done within retention) where the tenant refuses
    /// duplicates (`tasks.dedup`); elsewhere only [`in_flight`](Self::in_flight) ones do.
    pub fn refuses_duplicates(self) -> bool {
        matches!(
            self,
            TaskState::Queued
                | TaskState::Running
                | TaskState::RetryScheduled
                | TaskState::Deferred
                | TaskState::Done
                | TaskState::DeadLettered
                | TaskState::Expired
                | TaskState::Replayed
        )
    }

    /// Whether the task is still in flight (queued, running, retry_scheduled, deferred, or
    /// replayed: back in its lane). A new enqueue of its task_id is a duplicate even where
    /// producers reuse ids (`tasks.dedup = false`): one task_id has one record, and the done
    /// of an entry appended with its record writes that record without reading it.
    pub fn in_flight(self) -> bool {
        !self.is_finished()
    }
}

/// The record's field names, shared with lib/record.lua. Besides these, start N of the task
/// writes `r<N>:start`, `r<N>:member`, `r<N>:end` and `r<N>:outcome` ([`run_field`]); the last
/// 16 starts are kept.
#[allow(dead_code)] // each reader names the fields it needs
pub mod field {
    /// The state's wire name.
    pub const STATE: &str = "state";
    /// The task's kind.
    pub const KIND: &str = "kind";
    /// The current attempt.
    pub const ATTEMPT: &str = "attempt";
    /// The lane entry or schedule item the task is now.
    pub const ENTRY: &str = "entry";
    /// When this attempt was enqueued (ms).
    pub const ENQUEUED: &str = "enq";
    /// When the first attempt was enqueued (ms).
    pub const FIRST_ENQUEUED: &str = "first";
    /// The member that ran the last attempt.
    pub const MEMBER: &str = "member";
    /// When the last attempt started (ms).
    pub const STARTED: &str = "started";
    /// When the last attempt ended (ms).
    pub const ENDED: &str = "ended";
    /// The last failure's class.
    pub const CLASS: &str = "class";
    /// The last failure's error (bounded).
    pub const ERROR: &str = "error";
    /// The dead-letter id while the task is dead.
    pub const DLQ: &str = "dlq";
    /// Where the dead letter `dlq` names is now: the archive object's path (under the
    /// archive's root), once the archiver moved it out of Redis (the record keeps its state —
    /// dead_lettered, expired, resolved, discarded — and a dead letter's then expires after the
    /// retention). Empty or absent: not archived.
    pub const ARCHIVED: &str = "archived";
    /// When it was archived (ms).
    pub const ARCHIVED_AT: &str = "archived_at";
    /// The archived dead-letter id this task's dead letter was restored from.
    pub const RESTORED_FROM: &str = "restored_from";
    /// The dead-letter id this task was replayed from.
    pub const REPLAY_OF: &str = "replay_of";
    /// The lane entry its dead letter was replayed as (the same task_id, a new life).
    pub const REPLAYED_AS: &str = "replayed_as";
    /// How many times its dead letters were replayed.
    pub const REPLAYS: &str = "replays";
    /// How many times the task started (across retries, crashes and replays).
    pub const RUNS: &str = "runs";
    /// The handler's output (bounded).
    pub const OUTPUT: &str = "output";
    /// "1" when the output was cut to the bound.
    pub const OUTPUT_TRUNCATED: &str = "output_truncated";
    /// When a `retry_scheduled` or `deferred` task is due back in its lane (ms).
    pub const DUE: &str = "due";
    /// When the record last changed (ms).
    pub const UPDATED: &str = "updated";
}

/// The name of a per-start field: `r<run>:<what>`, `what` one of `start`, `member`, `end`,
/// `outcome` (`ok` or a failure class).
#[allow(dead_code)] // the readers use it (issue 14)
pub fn run_field(run: u64, what: &str) -> String {
    format!("r{run}:{what}")
}

/// What a cut output ends with (after the cut, on a UTF-8 character boundary).
pub const TRUNCATED_MARK: &str = "…[truncated]";

/// A handler's output as a record keeps it: its JSON text, cut to `tasks.max_output_bytes`
/// when longer. A cut output ends with [`TRUNCATED_MARK`] (so it is up to that many bytes
/// longer than the bound) and is not valid JSON: readers show it as text, and the record
/// says `output_truncated = 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The JSON text, or its first bytes and the mark.
    pub text: String,
    /// Whether it was cut.
    pub truncated: bool,
}

impl Output {
    /// `text` bounded to `max` bytes: cut on a character boundary at or below `max`, then
    /// marked.
    pub fn bounded(mut text: String, max: usize) -> Output {
        if text.len() <= max {
            return Output {
                text,
                truncated: false,
            };
        }
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(TRUNCATED_MARK);
        Output {
            text,
            truncated: true,
        }
    }
}

/// The task_id a lane entry's record is named by, from its raw fields, as the member reads it
/// (and lib/task_id.lua `entry_task_id`): its `task_id` field (the last one) when valid,
/// `x-<entry id>` when it has none, `None` when it is invalid — a malformed entry gets no
/// record.
pub fn entry_task_id(fields: &[(Vec<u8>, Vec<u8>)], entry_id: &str) -> Option<String> {
    match fields
        .iter()
        .rev()
        .find(|(k, _)| k.as_slice() == b"task_id")
    {
        None => Some(format!("x-{entry_id}")),
        Some((_, v)) => std::str::from_utf8(v)
            .ok()
            .filter(|id| crate::task::validate_task_id(id).is_ok())
            .map(str::to_owned),
    }
}

/// A record as read back (`HGETALL`), tolerant of missing fields. Its history (`runs` and the
/// `r<N>:*` fields) holds the runs that did not end the task well; a done task's last run is
/// its `member`, `started` and `ended`, a running task's current one its `member` and
/// `started` (see lib/record.lua).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskRecord {
    /// The state, when the field holds a known one.
    pub state: Option<TaskState>,
    /// Every field as stored, for display.
    pub fields: HashMap<String, String>,
}

impl TaskRecord {
    /// Reads the fields of a record hash.
    pub fn from_fields(fields: HashMap<String, String>) -> TaskRecord {
        let state = fields.get(field::STATE).and_then(|s| TaskState::parse(s));
        TaskRecord { state, fields }
    }

    /// A numeric field.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.fields.get(name)?.parse().ok()
    }

    /// The entry the record says the task is now, when it says the task waits in its lane
    /// (`queued`, or `replayed`): an entry appended with its record starts without a record
    /// write (lib/record.lua, Running), so whether it runs is the PEL's to say.
    pub fn waiting_entry(&self) -> Option<&str> {
        matches!(self.state, Some(TaskState::Queued | TaskState::Replayed))
            .then(|| self.fields.get(field::ENTRY).map(String::as_str))
            .flatten()
            .filter(|e| !e.is_empty())
    }

    /// The record as readers show it while its [`waiting_entry`](Self::waiting_entry) is
    /// pending for `consumer`: `running` there, since a start unknown to the record (the
    /// `started` and `ended` of an earlier run no longer apply).
    pub fn running_on(&mut self, consumer: &str) {
        self.state = Some(TaskState::Running);
        self.fields
            .insert(field::STATE.into(), TaskState::Running.as_str().into());
        self.fields.insert(field::MEMBER.into(), consumer.into());
        self.fields.remove(field::STARTED);
        self.fields.remove(field::ENDED);
    }
}

/// One run of a task as its record keeps it: a history entry (`r<N>:*`) or its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    /// Its number (1 = the first start).
    pub run: u64,
    /// When it started, ms.
    pub start: Option<u64>,
    /// The member that ran it.
    pub member: Option<String>,
    /// When it ended, ms (`None` while it runs, or if its member died).
    pub end: Option<u64>,
    /// `ok` or the failure class.
    pub outcome: Option<String>,
}

/// How many runs a record knows of: its history (`runs`) and, for a done or running task,
/// the last run, which its main fields hold.
pub fn run_count(r: &TaskRecord) -> u64 {
    let n = r.number(field::RUNS).unwrap_or(0);
    match r.state {
        Some(TaskState::Done | TaskState::Running) => n + 1,
        _ => n,
    }
}

/// The runs a record keeps, oldest first: the history (the last 16 of `runs`; a run whose
/// member died has an empty outcome and no end) and, for a done or running task, its last run
/// from `member`, `started` and `ended`.
pub fn runs_of(r: &TaskRecord) -> Vec<RunView> {
    let n = r.number(field::RUNS).unwrap_or(0);
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let mut runs: Vec<RunView> = (n.saturating_sub(15).max(1)..=n)
        .filter_map(|i| {
            let get = |what: &str| r.fields.get(&run_field(i, what)).cloned();
            let v = RunView {
                run: i,
                start: get("start").and_then(|s| s.parse().ok()),
                member: nonempty(get("member")),
                end: get("end").and_then(|s| s.parse().ok()),
                outcome: nonempty(get("outcome")),
            };
            r.fields.contains_key(&run_field(i, "member")).then_some(v)
        })
        .collect();
    let last = |outcome: Option<&str>| RunView {
        run: n + 1,
        start: r.number(field::STARTED),
        member: nonempty(r.fields.get(field::MEMBER).cloned()),
        end: outcome.and_then(|_| r.number(field::ENDED)),
        outcome: outcome.map(str::to_owned),
    };
    match r.state {
        Some(TaskState::Done) => runs.push(last(Some("ok"))),
        Some(TaskState::Running) => runs.push(last(None)),
        _ => {}
    }
    runs
}

/// One validated override.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskOverride {
    pub(crate) tenant: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) retention: Option<Duration>,
    pub(crate) store_output: Option<bool>,
    pub(crate) dedup: Option<bool>,
}

impl TaskOverride {
    fn matches(&self, tenant: &str, kind: Option<&str>) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && match (&self.kind, kind) {
                (None, _) => true,
                (Some(p), Some(k)) => glob_match(p, k),
                (Some(_), None) => false,
            }
    }
}

/// Validated `[tasks]` (config/tasks.rs reads it): whether records are kept, for how long, how
/// much of a result, and duplicate refusal, with per tenant and kind overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TasksSettings {
    /// Whether records are written.
    pub enabled: bool,
    /// Default retention of finished records.
    pub retention: Duration,
    /// The most bytes of output a record keeps (longer outputs are cut, with a marker and
    /// `output_truncated = 1`).
    pub max_output_bytes: usize,
    /// Default duplicate refusal.
    pub dedup: bool,
    pub(crate) overrides: Vec<TaskOverride>,
}

impl Default for TasksSettings {
    fn default() -> Self {
        TasksSettings {
            enabled: true,
            retention: Duration::from_secs(86_400),
            max_output_bytes: 64 * 1024,
            dedup: true,
            overrides: Vec::new(),
        }
    }
}

impl TasksSettings {
    /// How long a finished record of `kind` in `tenant` is kept.
    pub fn retention_for(&self, tenant: &str, kind: &str) -> Duration {
        self.overrides
            .iter()
            .filter(|o| o.matches(tenant, Some(kind)))
            .find_map(|o| o.retention)
            .unwrap_or(self.retention)
    }

    /// `tenant`'s retention rules as the index sweep applies them in Redis: the kind globs
    /// with their retention in order (first match wins), then the retention of every other
    /// kind. Equivalent to [`TasksSettings::retention_for`] for each kind.
    pub fn retention_rules(&self, tenant: &str) -> (Vec<(String, Duration)>, Duration) {
        let mut rules = Vec::new();
        for o in &self.overrides {
            let Some(r) = o.retention else { continue };
            if o.tenant.as_deref().is_some_and(|t| t != tenant) {
                continue;
            }
            match &o.kind {
                Some(glob) => rules.push((glob.clone(), r)),
                None => return (rules, r),
            }
        }
        (rules, self.retention)
    }

    /// The shortest retention any override (or the default) gives: an index entry older than
    /// this may belong to an expired record, so the index sweep looks at it.
    pub fn shortest_retention(&self) -> Duration {
        self.overrides
            .iter()
            .filter_map(|o| o.retention)
            .chain([self.retention])
            .min()
            .unwrap_or(self.retention)
    }

    /// Whether the output of a task of `kind` in `tenant` is kept in its record.
    pub fn stores_output(&self, tenant: &str, kind: &str) -> bool {
        self.enabled
            && self
                .overrides
                .iter()
                .filter(|o| o.matches(tenant, Some(kind)))
                .find_map(|o| o.store_output)
                .unwrap_or(true)
    }

    /// Whether `tenant` refuses duplicates (producer side: a live task_id is not enqueued
    /// again; member side: an entry whose task is already done is acked without running).
    pub fn dedup_for(&self, tenant: &str) -> bool {
        self.enabled
            && self
                .overrides
                .iter()
                .filter(|o| o.matches(tenant, None))
                .find_map(|o| o.dedup)
                .unwrap_or(self.dedup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_classify() {
        let mut seen = std::collections::HashSet::new();
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert!(seen.insert(s.as_str()));
        }
        assert!(TaskState::Done.is_finished() && TaskState::Done.refuses_duplicates());
        assert!(!TaskState::Queued.is_finished() && TaskState::Queued.refuses_duplicates());
        assert!(
            TaskState::Replayed.refuses_duplicates() && !TaskState::Replayed.is_finished(),
            "a replayed task is back in its lane"
        );
        assert!(!TaskState::Resolved.refuses_duplicates());
        let flight: Vec<_> = TaskState::ALL
            .into_iter()
            .filter(|s| s.in_flight())
            .collect();
        assert_eq!(
            flight,
            [
                TaskState::Queued,
                TaskState::Running,
                TaskState::RetryScheduled,
                TaskState::Deferred,
                TaskState::Replayed
            ],
            "the states enqueue.lua refuses with dedup off"
        );
        assert!(flight.iter().all(|s| s.refuses_duplicates()));
    }

    #[test]
    fn outputs_are_cut_on_a_character_boundary_and_marked() {
        let short = Output::bounded("{\"a\":1}".into(), 7);
        assert_eq!(
            short,
            Output {
                text: "{\"a\":1}".into(),
                truncated: false
            }
        );
        // "é" is two bytes: a bound inside it cuts before it.
        let cut = Output::bounded("\"aé\"".into(), 3);
        assert!(cut.truncated);
        assert_eq!(cut.text, format!("\"a{TRUNCATED_MARK}"));
        let cut = Output::bounded("\"aé\"".into(), 4);
        assert_eq!(cut.text, format!("\"aé{TRUNCATED_MARK}"));
        assert_eq!(Output::bounded("x".into(), 0).text, TRUNCATED_MARK);
        assert!(serde_json::from_str::<serde_json::Value>(&cut.text).is_err());
    }

    #[test]
    fn entry_task_ids_follow_the_member() {
        let f = |pairs: &[(&str, &[u8])]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect()
        };
        assert_eq!(
            entry_task_id(&f(&[("kind", b"k")]), "1-0").as_deref(),
            Some("x-1-0")
        );
        assert_eq!(
            entry_task_id(&f(&[("task_id", b"a"), ("task_id", b"b=c")]), "1-0").as_deref(),
            Some("b=c")
        );
        assert_eq!(entry_task_id(&f(&[("task_id", b"no space")]), "1-0"), None);
        assert_eq!(entry_task_id(&f(&[("task_id", b"")]), "1-0"), None);
        assert_eq!(entry_task_id(&f(&[("task_id", &[0xff])]), "1-0"), None);
    }

    #[test]
    fn records_read_tolerantly() {
        let r = TaskRecord::from_fields(HashMap::from([
            ("state".to_owned(), "done".to_owned()),
            ("attempt".to_owned(), "2".to_owned()),
            ("ended".to_owned(), "x".to_owned()),
        ]));
        assert_eq!(r.state, Some(TaskState::Done));
        assert_eq!(r.number(field::ATTEMPT), Some(2));
        assert_eq!(r.number(field::ENDED), None);
        assert_eq!(TaskRecord::from_fields(HashMap::new()).state, None);
    }
}
