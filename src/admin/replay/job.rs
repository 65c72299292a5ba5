//! A replay job's record, typed: its state, who runs it, its spec and its counters.
//!
//! The record is a hash at `redrive:{@admin}:job:<id>`. Its field names and state strings are
//! wire format (scripts/job_cancel.lua reads `state` and writes `cancel`; `redrive admin
//! status` prints the hash as stored), so they are written here once and nowhere else.

use std::collections::HashMap;

use crate::admin::ReplaySpec;
use crate::error::{Error, Result};

/// Names of the job record's fields.
pub mod field {
    /// The job's state (see [`super::JobState`]).
    pub const STATE: &str = "state";
    /// The command id that runs it now.
    pub const COMMAND: &str = "command";
    /// The member (or `local@host`) that runs it now.
    pub const MEMBER: &str = "member";
    /// When it last made progress, server ms.
    pub const UPDATED_AT: &str = "updated_at";
    /// The job's id.
    pub const JOB: &str = "job";
    /// The pinned replay spec, JSON.
    pub const SPEC: &str = "spec";
    /// How many dead letters it selected.
    pub const SELECTED: &str = "selected";
    /// Who started it.
    pub const OPERATOR: &str = "operator";
    /// Why.
    pub const REASON: &str = "reason";
    /// When it started, server ms.
    pub const CREATED_AT: &str = "created_at";
    /// Why it failed.
    pub const MESSAGE: &str = "message";
    /// The id of a pending cancel request.
    pub const CANCEL: &str = "cancel";
    /// Dead letters replayed.
    pub const REPLAYED: &str = "replayed";
    /// Dead letters already gone.
    pub const SKIPPED: &str = "skipped";
    /// Dead letters a guardrail refused.
    pub const REFUSED: &str = "refused";
    /// Dead letters not replayable as they are.
    pub const INVALID: &str = "invalid";
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// A member is running it (or was, until it died: see `updated_at`).
    Running,
    /// It replayed its whole selection.
    Done,
    /// A cancel request stopped it; it can be resumed.
    Cancelled,
    /// An error stopped it; it can be resumed.
    Failed,
    /// Its member shut down mid-job; a restart or another member resumes it.
    Interrupted,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 5] = [
        JobState::Running,
        JobState::Done,
        JobState::Cancelled,
        JobState::Failed,
        JobState::Interrupted,
    ];

    /// The state as stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
        }
    }

    /// Reads a stored state; `None` for text that is not one.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The fields that set this state.
    pub fn fields(self) -> Vec<(&'static str, String)> {
        vec![(field::STATE, self.as_str().into())]
    }
}

/// A job's counters (each added to by every step).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobCounts {
    /// Dead letters replayed.
    pub replayed: u64,
    /// Dead letters already gone (replayed or removed by someone else).
    pub skipped: u64,
    /// Dead letters a guardrail refused.
    pub refused: u64,
    /// Dead letters not replayable as they are.
    pub invalid: u64,
}

impl JobCounts {
    /// The counters as increments of the record's fields.
    pub fn increments(&self) -> [(&'static str, u64); 4] {
        [
            (field::REPLAYED, self.replayed),
            (field::SKIPPED, self.skipped),
            (field::REFUSED, self.refused),
            (field::INVALID, self.invalid),
        ]
    }
}

/// A job's record as read from Redis. Reading is lenient, as every reader of the record always
/// was: a missing or unreadable counter is 0, a missing text is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRecord {
    /// Its state; `None` when missing or not a known state.
    pub state: Option<JobState>,
    /// The command id that runs it now.
    pub command: Option<String>,
    /// The member that runs it now.
    pub member: Option<String>,
    /// The pinned spec, JSON as stored (see [`JobRecord::spec`]).
    pub spec: Option<String>,
    /// How many dead letters it selected.
    pub selected: u64,
    /// Its counters.
    pub counts: JobCounts,
    /// Who started it.
    pub operator: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When it started, server ms (0 when unknown).
    pub created_at: u64,
    /// When it last made progress, server ms (0 when unknown).
    pub updated_at: u64,
    /// Why it failed.
    pub message: Option<String>,
    /// The id of a pending cancel request.
    pub cancel: Option<String>,
}

impl JobRecord {
    /// Reads a record from its hash.
    pub fn from_fields(fields: &HashMap<String, String>) -> JobRecord {
        let text = |name: &str| fields.get(name).cloned();
        let num = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        JobRecord {
            state: fields.get(field::STATE).and_then(|s| JobState::parse(s)),
            command: text(field::COMMAND),
            member: text(field::MEMBER),
            spec: text(field::SPEC),
            selected: num(field::SELECTED),
            counts: JobCounts {
                replayed: num(field::REPLAYED),
                skipped: num(field::SKIPPED),
                refused: num(field::REFUSED),
                invalid: num(field::INVALID),
            },
            operator: text(field::OPERATOR),
            reason: text(field::REASON),
            created_at: num(field::CREATED_AT),
            updated_at: num(field::UPDATED_AT),
            message: text(field::MESSAGE),
            cancel: text(field::CANCEL),
        }
    }

    /// The stored spec of job `job`.
    pub fn spec(&self, job: &str) -> Result<ReplaySpec> {
        self.spec
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| Error::Protocol(format!("replay job '{job}' has no readable spec")))
    }

    /// The state's text as stored, `""` when there is none.
    pub fn state_str(&self) -> &'static str {
        self.state.map(JobState::as_str).unwrap_or("")
    }

    /// The fields that mark job `job` running under `command` on `member` at `now_ms`.
    pub fn running(
        job: &str,
        command: &str,
        member: &str,
        now_ms: u64,
    ) -> Vec<(&'static str, String)> {
        vec![
            (field::STATE, JobState::Running.as_str().into()),
            (field::COMMAND, command.to_owned()),
            (field::MEMBER, member.to_owned()),
            (field::UPDATED_AT, now_ms.to_string()),
            (field::JOB, job.to_owned()),
        ]
    }

    /// The fields a fresh job records once, after [`JobRecord::running`]'s.
    pub fn started(
        spec_json: String,
        selected: usize,
        operator: &str,
        reason: &str,
        now_ms: u64,
    ) -> [(&'static str, String); 5] {
        [
            (field::SPEC, spec_json),
            (field::SELECTED, selected.to_string()),
            (field::OPERATOR, operator.to_owned()),
            (field::REASON, reason.to_owned()),
            (field::CREATED_AT, now_ms.to_string()),
        ]
    }

    /// The fields a step sets with its counters: when, and by whom.
    pub fn progressed(now_ms: u64, member: &str) -> [(&'static str, String); 2] {
        [
            (field::UPDATED_AT, now_ms.to_string()),
            (field::MEMBER, member.to_owned()),
        ]
    }

    /// The fields that mark a job failed with `message`.
    pub fn failed(message: String) -> Vec<(&'static str, String)> {
        vec![
            (field::STATE, JobState::Failed.as_str().into()),
            (field::MESSAGE, message),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_with_their_wire_strings() {
        let wire = ["running", "done", "cancelled", "failed", "interrupted"];
        for (state, text) in JobState::ALL.into_iter().zip(wire) {
            assert_eq!(state.as_str(), text);
            assert_eq!(JobState::parse(text), Some(state));
            assert_eq!(state.fields(), vec![("state", text.to_string())]);
        }
        assert_eq!(JobState::parse(""), None);
        assert_eq!(JobState::parse("Running"), None);
    }

    #[test]
    fn a_record_reads_what_the_runner_writes() {
        let mut fields: Vec<(&str, String)> = JobRecord::running("j1", "c1", "m1", 42);
        fields.extend(JobRecord::started("{}".into(), 7, "ops", "why", 40));
        fields.extend(JobRecord::progressed(43, "m2"));
        let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "state",
                "command",
                "member",
                "updated_at",
                "job",
                "spec",
                "selected",
                "operator",
                "reason",
                "created_at",
                "updated_at",
                "member"
            ]
        );
        let mut map: HashMap<String, String> =
            fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        map.insert("replayed".into(), "3".into());
        map.insert("skipped".into(), "1".into());
        map.insert("refused".into(), "not a number".into());
        map.insert("cancel".into(), "c2".into());
        let r = JobRecord::from_fields(&map);
        assert_eq!(r.state, Some(JobState::Running));
        assert_eq!(r.state_str(), "running");
        assert_eq!(r.command.as_deref(), Some("c1"));
        assert_eq!(r.member.as_deref(), Some("m2"));
        assert_eq!(r.selected, 7);
        assert_eq!(
            r.counts,
            JobCounts {
                replayed: 3,
                skipped: 1,
                refused: 0,
                invalid: 0
            }
        );
        assert_eq!((r.created_at, r.updated_at), (40, 43));
        assert_eq!(r.cancel.as_deref(), Some("c2"));
        assert!(r.spec("j1").is_ok());
        assert!(JobRecord::default().spec("j1").is_err());
        assert_eq!(JobRecord::default().state_str(), "");
        assert_eq!(
            JobRecord::failed("boom".into()),
            vec![
                ("state", "failed".to_string()),
                ("message", "boom".to_string())
            ]
        );
        let names: Vec<&str> = JobCounts::default()
            .increments()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(names, ["replayed", "skipped", "refused", "invalid"]);
    }
}
