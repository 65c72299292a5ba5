//! The fields every log line about a task carries: tenant, task id, kind, attempt and trace
//! id, built once from the task (or, for an entry that is not a task, from its dead letter) so
//! that no line can leave one out. Use [`task_event!`] to write such a line.

use crate::deadletter::DeadLetter;
use crate::task::{field, Task};

/// A task's identity as log lines show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TaskLog {
    pub tenant: String,
    pub task_id: String,
    pub kind: String,
    /// The attempt the line is about (0 when unknown: an unreadable entry).
    pub attempt: u32,
    /// Empty when the producer set none.
    pub trace_id: String,
}

impl TaskLog {
    /// The fields of `task` (its current attempt).
    pub fn of(task: &Task) -> TaskLog {
        TaskLog {
            tenant: task.tenant.clone(),
            task_id: task.task_id.clone(),
            kind: task.kind.clone(),
            attempt: task.attempt,
            trace_id: task.trace_id.clone().unwrap_or_default(),
        }
    }

    /// The fields of the task a dead letter is about: its task, or for an entry that could not
    /// be read as one the task id the dead letter shows and whatever of kind, attempt and trace
    /// id its raw fields hold in a valid form (raw text never reaches a log line unchecked).
    pub fn of_dead_letter(tenant: &str, dl: &DeadLetter) -> TaskLog {
        if let Some(task) = &dl.task {
            return TaskLog::of(task);
        }
        let raw = |k: &str| dl.raw_text(k);
        TaskLog {
            tenant: tenant.to_owned(),
            task_id: dl.task_id(),
            kind: raw(field::KIND)
                .filter(|k| crate::task::validate_kind(k).is_ok())
                .map(str::to_owned)
                .unwrap_or_default(),
            attempt: raw(field::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            trace_id: raw(field::TRACE_ID)
                .filter(|t| t.chars().count() <= 128 && !t.chars().any(char::is_control))
                .map(str::to_owned)
                .unwrap_or_default(),
        }
    }
}

/// Writes a log line about a task at `level` with the task's fields (a [`TaskLog`]) first,
/// then the caller's fields and message: `task_event!(warn, &log, class = %c, "msg")`. The
/// target is the caller's module unless given: `task_event!(warn, target: T, &log, "msg")`
/// (events in telemetry pass the target of the code that used to log the line).
macro_rules! task_event {
    ($level:ident, target: $target:expr, $log:expr, $($rest:tt)+) => {{
        let log: &$crate::telemetry::tasklog::TaskLog = $log;
        tracing::$level!(
            target: $target,
            tenant = %log.tenant,
            task_id = %log.task_id,
            kind = %log.kind,
            attempt = log.attempt,
            trace_id = %log.trace_id,
            $($rest)+
        )
    }};
    ($level:ident, $log:expr, $($rest:tt)+) => {{
        let log: &$crate::telemetry::tasklog::TaskLog = $log;
        tracing::$level!(
            tenant = %log.tenant,
            task_id = %log.task_id,
            kind = %log.kind,
            attempt = log.attempt,
            trace_id = %log.trace_id,
            $($rest)+
        )
    }};
}
pub(crate) use task_event;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FailureClass;
    use std::collections::HashMap;

    fn malformed(raw: &[(&str, &str)]) -> DeadLetter {
        DeadLetter {
            orig_lane: "p:{acme}:lane".into(),
            orig_id: "5-0".into(),
            task: None,
            raw: Some(
                raw.iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            ),
            class: FailureClass::MalformedEntry,
            error: "missing field 'kind'".into(),
            detail: None,
            steps: Vec::new(),
            failed_step: None,
            partial_output: None,
            member: "m".into(),
            first_failed_at_ms: 0,
            dead_lettered_at_ms: 0,
        }
    }

    #[test]
    fn a_malformed_entry_is_logged_under_its_dead_letters_task_id() {
        let dl = malformed(&[("task_id", "raw-7"), ("trace_id", "tr-1"), ("attempt", "2")]);
        let log = TaskLog::of_dead_letter("acme", &dl);
        assert_eq!(log.task_id, "raw-7");
        assert_eq!((log.attempt, log.trace_id.as_str()), (2, "tr-1"));
        let fields: HashMap<&str, String> = dl.to_fields().into_iter().collect();
        assert_eq!(fields["task_id"], log.task_id);

        let dl = malformed(&[("task_id", "bad id{}"), ("trace_id", "a\nforged line")]);
        let log = TaskLog::of_dead_letter("acme", &dl);
        assert_eq!(log.task_id, "x-5-0");
        assert_eq!(log.trace_id, "");
        let fields: HashMap<&str, String> = dl.to_fields().into_iter().collect();
        assert_eq!(fields["task_id"], "x-5-0");
    }
}
