//! The dead-letter record: everything an operator needs to understand a failed task and replay
//! it, written as the fields of one entry in the tenant's dead-letter stream.

use std::collections::HashMap;

use crate::handler::FailureClass;
use crate::task::{AttemptRecord, Task};

/// Longest error message kept, in bytes.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Longest detail kept, in bytes.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024;

/// What an operator should most likely do with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replay as it is: the cause was transient and may be gone.
    Retry,
    /// Fix the payload or the agent, then replay with the fix.
    ReplayWithFix,
    /// Side effects may exist or the cause is unclear: a person must look first.
    ManualReview,
    /// Not worth running any more.
    Discard,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::ReplayWithFix => "replay_with_fix",
            Action::ManualReview => "manual_review",
            Action::Discard => "discard",
        }
    }

    /// The usual action for a failure class.
    pub fn for_class(class: FailureClass) -> Action {
        match class {
            FailureClass::RateLimited
            | FailureClass::Timeout
            | FailureClass::UpstreamUnavailable
            | FailureClass::LlmError => Action::Retry,
            FailureClass::InvalidInput
            | FailureClass::ContextOverflow
            | FailureClass::SchemaMismatch
            | FailureClass::MalformedEntry => Action::ReplayWithFix,
            FailureClass::Unauthorized
            | FailureClass::PartialExecution
            | FailureClass::CrashLoop
            | FailureClass::SilentFailure
            | FailureClass::Unknown => Action::ManualReview,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The error message with its variable parts replaced: quoted values by `<str>`, long hex and
/// UUID-like ids by `<id>`, numbers by `<n>`. Identical root causes give identical patterns.
pub fn error_pattern(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let chars: Vec<char> = message.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            if let Some(close) = chars[i + 1..].iter().position(|&d| d == c) {
                out.push_str("<str>");
                i += close + 2;
                continue;
            }
        }
        if c.is_ascii_alphanumeric() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '_')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let digits = word.chars().filter(|c| c.is_ascii_digit()).count();
            let hexish = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if word
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '_')
                && digits > 0
            {
                out.push_str("<n>");
            } else if (hexish && word.len() >= 8 && digits > 0)
                || (digits >= 4 && digits * 2 >= word.len())
            {
                out.push_str("<id>");
            } else if word.starts_with(|c: char| c.is_ascii_digit()) {
                out.push_str("<n>");
            } else {
                out.push_str(&word);
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A short stable hash of kind, class and error pattern: the key dead letters group by.
pub fn fingerprint(kind: &str, class: FailureClass, pattern: &str) -> String {
    // FNV-1a, 64 bit: stable across processes and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind
        .bytes()
        .chain([0])
        .chain(class.as_str().bytes())
        .chain([0])
        .chain(pattern.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

/// Names of the dead-letter fields.
pub mod field {
    /// The lane stream the entry came from.
    pub const ORIG_LANE: &str = "orig_lane";
    /// The entry id in that lane.
    pub const ORIG_ID: &str = "orig_id";
    /// The failure class.
    pub const CLASS: &str = "class";
    /// The last error message (bounded).
    pub const ERROR: &str = "error";
    /// More detail (bounded).
    pub const DETAIL: &str = "detail";
    /// The error message with variable parts normalised.
    pub const ERROR_PATTERN: &str = "error_pattern";
    /// Hash of kind, class and error pattern.
    pub const FINGERPRINT: &str = "fingerprint";
    /// How many times the entry started on a member: its delivery count minus the read
    /// (written by the dead-letter script from the PEL).
    pub const DELIVERIES: &str = "deliveries";
    /// Partial output reported by the handler (JSON).
    pub const PARTIAL_OUTPUT: &str = "partial_output";
    /// The member that ran the last attempt.
    pub const MEMBER: &str = "member";
    /// When the first attempt failed, ms.
    pub const FIRST_FAILED_AT: &str = "first_failed_at";
    /// When the task was dead-lettered, ms.
    pub const DEAD_LETTERED_AT: &str = "dead_lettered_at";
    /// The recommended action.
    pub const ACTION: &str = "recommended_action";
    /// For malformed entries: the raw fields as read (JSON object).
    pub const RAW: &str = "raw";
}

/// Everything known about a task at the moment it is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Lane stream key of the entry.
    pub orig_lane: String,
    /// Entry id in the lane.
    pub orig_id: String,
    /// The task, when the entry could be read as one.
    pub task: Option<Task>,
    /// For unreadable entries: the raw fields.
    pub raw: Option<HashMap<String, String>>,
    /// Failure class.
    pub class: FailureClass,
    /// Error message.
    pub error: String,
    /// Further detail.
    pub detail: Option<String>,
    /// Steps completed across attempts.
    pub steps: Vec<String>,
    /// Partial output of the last attempt.
    pub partial_output: Option<serde_json::Value>,
    /// The member that ran the last attempt.
    pub member: String,
    /// When the first attempt failed.
    pub first_failed_at_ms: u64,
    /// When the task was dead-lettered.
    pub dead_lettered_at_ms: u64,
}

impl DeadLetter {
    /// The recommended action.
    pub fn action(&self) -> Action {
        Action::for_class(self.class)
    }

    /// The fields of the dead-letter stream entry.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let error = bounded(&self.error, MAX_ERROR_BYTES);
        let pattern = error_pattern(&error);
        let kind = self.task.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        let mut f = Vec::with_capacity(28);
        if let Some(task) = &self.task {
            let mut task = task.clone();
            task.steps = self.steps.clone();
            f.extend(task.to_fields());
        } else if let Some(raw) = &self.raw {
            if let Some(id) = raw.get(crate::task::field::TASK_ID) {
                if crate::task::validate_task_id(id).is_ok() {
                    f.push((crate::task::field::TASK_ID, id.clone()));
                }
            }
            let mut sorted: Vec<_> = raw.iter().collect();
            sorted.sort();
            f.push((
                field::RAW,
                serde_json::to_string(
                    &sorted
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap_or_default(),
            ));
        }
        f.push((field::ORIG_LANE, self.orig_lane.clone()));
        f.push((field::ORIG_ID, self.orig_id.clone()));
        f.push((field::CLASS, self.class.as_str().to_owned()));
        f.push((field::ERROR, error));
        if let Some(d) = &self.detail {
            f.push((field::DETAIL, bounded(d, MAX_DETAIL_BYTES)));
        }
        f.push((field::FINGERPRINT, fingerprint(kind, self.class, &pattern)));
        f.push((field::ERROR_PATTERN, pattern));
        if let Some(p) = &self.partial_output {
            f.push((
                field::PARTIAL_OUTPUT,
                bounded(&p.to_string(), MAX_DETAIL_BYTES),
            ));
        }
        f.push((field::MEMBER, self.member.clone()));
        f.push((field::FIRST_FAILED_AT, self.first_failed_at_ms.to_string()));
        f.push((
            field::DEAD_LETTERED_AT,
            self.dead_lettered_at_ms.to_string(),
        ));
        f.push((field::ACTION, self.action().as_str().to_owned()));
        f
    }
}

/// The first failure time recorded in a task's history, or `now` for a first failure.
pub fn first_failed_at(history: &[AttemptRecord], now_ms: u64) -> u64 {
    history.first().map(|r| r.at_ms).unwrap_or(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_group_identical_causes() {
        let a = error_pattern(
            "rate limited by 'gpt-4o' for ticket 123456, retry in 30s (req 9f8e7d6c5b4a)",
        );
        let b =
            error_pattern("rate limited by 'claude' for ticket 99, retry in 5s (req 0123abcd4567)");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "rate limited by <str> for ticket <n>, retry in <n> (req <id>)"
        );
        assert_eq!(
            fingerprint("k", FailureClass::RateLimited, &a),
            fingerprint("k", FailureClass::RateLimited, &b)
        );
        assert_ne!(
            fingerprint("k", FailureClass::RateLimited, &a),
            fingerprint("k", FailureClass::Timeout, &a)
        );
        assert_eq!(error_pattern("tool failed"), "tool failed");
    }

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        let s = "é".repeat(600);
        let b = bounded(&s, 1024);
        assert!(b.len() <= 1024 && b.ends_with("..."));
        assert_eq!(bounded("short", 10), "short");
    }
}
