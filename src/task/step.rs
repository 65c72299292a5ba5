//! [`Step`]: a checkpoint an agent recorded during an attempt (PROTOCOL.md, "Steps and
//! checkpoints"), and the limits every recorder checks.

use serde::{Deserialize, Serialize};

/// Longest step name, in characters.
pub const MAX_STEP_NAME_CHARS: usize = 128;
/// Largest output of one step, in bytes of its JSON text.
pub const MAX_STEP_OUTPUT_BYTES: usize = 64 * 1024;
/// How many steps a task records at most.
pub const MAX_STEPS: usize = 64;
/// Largest sum of a task's step outputs, in bytes of their JSON text.
pub const MAX_STEPS_OUTPUT_BYTES: usize = 512 * 1024;

/// One step of a task: completed (`done`, with its output) or, for a side-effecting step whose
/// attempt ended before it completed, only started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's name, unique within its task.
    pub name: String,
    /// What the step produced (`null` until done).
    #[serde(default)]
    pub output: serde_json::Value,
    /// Whether the step acts on the world (sends, charges, writes).
    #[serde(default)]
    pub side_effect: bool,
    /// The attempt that recorded it.
    #[serde(default)]
    pub attempt: u32,
    /// When it was recorded, ms since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
    /// False for a side-effecting step that was started and never completed or failed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub done: bool,
}

impl Step {
    /// A completed step with `output`, without attempt or time (tests, conversions).
    pub fn completed(name: impl Into<String>, output: serde_json::Value) -> Step {
        Step {
            name: name.into(),
            output,
            side_effect: false,
            attempt: 0,
            at_ms: 0,
            done: true,
        }
    }
}

/// The names of `steps`, in order.
#[cfg(test)]
pub fn step_names(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.name.as_str()).collect()
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The steps field as written by older versions: step names only.
#[derive(Deserialize)]
#[serde(untagged)]
enum StepEntry {
    Name(String),
    Full(Step),
}

/// Reads a task's `steps` field: a JSON array of steps, or of step names (older entries: each
/// a completed step with no output).
pub fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    let entries: Vec<StepEntry> = serde_json::from_str(text)
        .map_err(|e| format!("field 'steps' is not a JSON array of steps: {e}"))?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            StepEntry::Name(name) => Step {
                name,
                output: serde_json::Value::Null,
                side_effect: false,
                attempt: 0,
                at_ms: 0,
                done: true,
            },
            StepEntry::Full(s) => s,
        })
        .collect())
}

/// Checks a step name: 1–128 characters, no control characters.
pub fn validate_step_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a step name must not be empty".into());
    }
    if name.chars().count() > MAX_STEP_NAME_CHARS {
        return Err(format!(
            "step name '{}…' is longer than {MAX_STEP_NAME_CHARS} characters",
            name.chars().take(32).collect::<String>()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("step name {name:?} contains a control character"));
    }
    Ok(())
}

/// Checks one step's output against [`MAX_STEP_OUTPUT_BYTES`]; returns its JSON size.
pub fn check_step_output(name: &str, output: &serde_json::Value) -> Result<usize, String> {
    let size = serde_json::to_string(output).map(|s| s.len()).unwrap_or(0);
    if size > MAX_STEP_OUTPUT_BYTES {
        return Err(format!(
            "step '{name}' output is {size} bytes of JSON; the limit is {MAX_STEP_OUTPUT_BYTES}"
        ));
    }
    Ok(size)
}

/// Merges `later` steps into `steps` by name (a later record of a name replaces the earlier
/// one, in place), keeping completion order for new names.
///
/// One exception: a started-only record never replaces a completed step of the same or a later
/// attempt. Such a record is stale — its `step_done` reached the attempt but not Redis (a
/// failed write) — and taking it for an open side effect would dead-letter a task whose step
/// completed as `partial_execution`.
pub fn merge_steps(steps: &mut Vec<Step>, later: impl IntoIterator<Item = Step>) {
    for s in later {
        match steps.iter_mut().find(|x| x.name == s.name) {
            Some(slot) if slot.done && !s.done && slot.attempt >= s.attempt => {}
            Some(slot) => *slot = s,
            None => steps.push(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_name_lists_and_new_records_both_read() {
        let old = parse_steps(r#"["fetch","update"]"#).unwrap_or_default();
        assert_eq!(old.len(), 2);
        assert!(old.iter().all(|s| s.done && s.output.is_null()));
        let new = parse_steps(
            r#"[{"name":"pay","output":{"id":1},"side_effect":true,"attempt":2,"at_ms":5},
                {"name":"send","side_effect":true,"attempt":3,"at_ms":9,"done":false}]"#,
        )
        .unwrap_or_default();
        assert_eq!(new[0].output, serde_json::json!({"id": 1}));
        assert!(new[0].done && !new[1].done);
        let text = serde_json::to_string(&new).unwrap_or_default();
        assert!(
            !text.contains(r#""done":true"#),
            "done is the default: {text}"
        );
        assert!(text.contains(r#""done":false"#));
        assert!(parse_steps("{}").is_err());
    }

    #[test]
    fn names_and_outputs_are_bounded() {
        assert!(validate_step_name("call llm: draft/1").is_ok());
        assert!(validate_step_name("").is_err());
        assert!(validate_step_name(&"n".repeat(129)).is_err());
        assert!(validate_step_name(&"é".repeat(128)).is_ok());
        assert!(validate_step_name("a\u{7}b").is_err());
        let big = serde_json::Value::String("x".repeat(MAX_STEP_OUTPUT_BYTES));
        assert!(check_step_output("big", &big).is_err());
        assert!(check_step_output("ok", &serde_json::json!({"a": 1})).is_ok());
    }

    #[test]
    fn a_stale_started_record_never_reopens_a_completed_step() {
        let at = |name: &str, done, attempt| Step {
            name: name.into(),
            output: serde_json::Value::Null,
            side_effect: true,
            attempt,
            at_ms: 1,
            done,
        };
        // The attempt completed "send" but its done record failed to reach Redis.
        let mut s = vec![at("send", true, 2)];
        merge_steps(&mut s, [at("send", false, 2)]);
        assert!(s[0].done, "the completed step stays completed");
        // A later attempt that started it again (and died inside) does reopen it.
        merge_steps(&mut s, [at("send", false, 3)]);
        assert!(!s[0].done);
    }

    #[test]
    fn merging_replaces_by_name_and_appends_new_ones() {
        let step = |name: &str, done| Step {
            name: name.into(),
            output: serde_json::Value::Null,
            side_effect: true,
            attempt: 1,
            at_ms: 1,
            done,
        };
        let mut s = vec![step("a", true), step("b", false)];
        merge_steps(&mut s, [step("b", true), step("c", true)]);
        assert_eq!(
            s.iter()
                .map(|x| (x.name.as_str(), x.done))
                .collect::<Vec<_>>(),
            [("a", true), ("b", true), ("c", true)]
        );
    }
}
