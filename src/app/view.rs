//! A dead letter as operators see it: typed JSON for `--json` and `export`, aligned text for
//! people. Pure.

use serde_json::{Map, Value};

use crate::admin::select::{id_ms, DlId};
use crate::admin::time::{format_age, format_time};
use crate::broker::Entry;
use crate::deadletter::field as dl;
use crate::task::{field, merge_steps, parse_steps, Step};

/// Fields holding JSON documents, shown parsed.
const JSON_FIELDS: [&str; 7] = [
    field::PAYLOAD,
    field::STEPS,
    field::RECORDED_STEPS,
    field::HISTORY,
    dl::PARTIAL_OUTPUT,
    dl::RAW,
    dl::EXTRA,
];

/// Fields holding integers, shown as numbers.
const NUMBER_FIELDS: [&str; 9] = [
    field::ATTEMPT,
    field::ENQUEUED_AT,
    field::FIRST_ENQUEUED_AT,
    field::SCHEMA_VERSION,
    field::DEADLINE,
    dl::DELIVERIES,
    dl::FIRST_FAILED_AT,
    dl::DEAD_LETTERED_AT,
    "removed_at",
];

/// The most characters of one step's output `dlq show` prints (`--json` prints it whole: an
/// output is at most 64 KiB by the step limits).
const STEP_OUTPUT_SHOWN: usize = 200;

/// One dead letter: its address and its fields in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterView {
    /// Where it is.
    pub id: DlId,
    /// Its fields as text, in the order they were written.
    pub fields: Vec<(String, String)>,
}

impl DeadLetterView {
    /// The view of a dead-letter stream entry of `tenant`.
    pub fn from_entry(tenant: &str, entry: Entry) -> DeadLetterView {
        DeadLetterView {
            id: DlId {
                tenant: tenant.to_owned(),
                id: entry.id,
            },
            fields: entry
                .fields
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn or_dash(&self, name: &str) -> &str {
        self.get(name).filter(|v| !v.is_empty()).unwrap_or("-")
    }

    /// When it was dead-lettered: its stream id's time (server clock), ms.
    pub fn dead_lettered_at_ms(&self) -> u64 {
        id_ms(&self.id.id)
    }

    /// The task's steps: `steps` with the `recorded_steps` the dead-letter script folded in
    /// merged (a later record of a name replaces the earlier), in order. `None` when neither
    /// field is present; `Err` with the text when one does not read as steps.
    pub fn steps(&self) -> Option<Result<Vec<Step>, String>> {
        let (steps, recorded) = (self.get(field::STEPS), self.get(field::RECORDED_STEPS));
        if steps.is_none() && recorded.is_none() {
            return None;
        }
        let read = |t: Option<&str>| {
            t.map(parse_steps)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        Some(read(steps).and_then(|mut all| {
            merge_steps(&mut all, read(recorded)?);
            Ok(all)
        }))
    }

    /// The step the task failed in: the dead letter's `failed_step`, else a side-effecting
    /// step its steps show started and not done.
    pub fn failed_step(&self) -> Option<String> {
        if let Some(s) = self.get(dl::FAILED_STEP) {
            return Some(s.to_owned());
        }
        let steps = self.steps()?.ok()?;
        steps
            .into_iter()
            .find(|s| s.side_effect && !s.done)
            .map(|s| s.name)
    }

    /// Every field, typed: JSON fields parsed, integers as numbers, plus `id`, `entry_id` and
    /// `dead_lettered_at_iso`; `steps` is the merged list (see [`DeadLetterView::steps`],
    /// `recorded_steps` folded in) and `failed_step` is named when it can be told.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.to_string()));
        m.insert("entry_id".into(), Value::String(self.id.id.clone()));
        m.insert("tenant".into(), Value::String(self.id.tenant.clone()));
        m.insert(
            "dead_lettered_at_iso".into(),
            Value::String(format_time(self.dead_lettered_at_ms())),
        );
        for (k, v) in &self.fields {
            if m.contains_key(k) && k != field::TENANT {
                continue;
            }
            m.insert(k.clone(), typed(k, v));
        }
        if let Some(Ok(steps)) = self.steps() {
            m.remove(field::RECORDED_STEPS);
            m.insert(
                field::STEPS.into(),
                serde_json::to_value(steps).unwrap_or(Value::Null),
            );
        }
        if let Some(step) = self.failed_step() {
            m.insert(dl::FAILED_STEP.into(), Value::String(step));
        }
        Value::Object(m)
    }

    /// The summary `list --json` prints per entry.
    pub fn summary_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.to_string()));
        m.insert("tenant".into(), Value::String(self.id.tenant.clone()));
        m.insert(
            "dead_lettered_at".into(),
            Value::from(self.dead_lettered_at_ms()),
        );
        for name in [
            field::TASK_ID,
            field::KIND,
            dl::CLASS,
            dl::FINGERPRINT,
            dl::ERROR,
            field::ATTEMPT,
            dl::ACTION,
            field::REPLAY_OF,
        ] {
            if let Some(v) = self.get(name) {
                m.insert(name.into(), typed(name, v));
            }
        }
        Value::Object(m)
    }

    /// One line of `list`: id, age, class, kind, task id, fingerprint, error.
    pub fn list_line(&self, now_ms: u64) -> String {
        let error: String = self.or_dash(dl::ERROR).chars().take(72).collect();
        format!(
            "{:<34} {:>5} {:<20} {:<18} {:<24} {:<12} {}",
            self.id.to_string(),
            format_age(now_ms.saturating_sub(self.dead_lettered_at_ms())),
            self.or_dash(dl::CLASS),
            self.or_dash(field::KIND),
            self.or_dash(field::TASK_ID),
            self.or_dash(dl::FINGERPRINT),
            error
        )
    }

    /// The whole execution context for `show`, one field per line, JSON indented.
    pub fn show_text(&self, now_ms: u64) -> String {
        let mut out = format!(
            "dead letter {}  (dead-lettered {} ago, {})\n",
            self.id,
            format_age(now_ms.saturating_sub(self.dead_lettered_at_ms())),
            format_time(self.dead_lettered_at_ms())
        );
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let steps = self.steps();
        let mut steps_shown = false;
        for (k, v) in &self.fields {
            if k == field::STEPS || k == field::RECORDED_STEPS {
                if let Some(Ok(list)) = &steps {
                    if !steps_shown {
                        out.push_str(&steps_text(list, width));
                        steps_shown = true;
                    }
                    continue;
                }
            }
            let shown = match typed(k, v) {
                Value::String(s) => s,
                Value::Number(n) if k.ends_with("_at") || k == field::DEADLINE => {
                    format!("{n}  ({})", format_time(n.as_u64().unwrap_or(0)))
                }
                j @ (Value::Object(_) | Value::Array(_)) => serde_json::to_string_pretty(&j)
                    .unwrap_or_default()
                    .replace('\n', &format!("\n{:width$}  ", "")),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<width$}  {shown}\n"));
        }
        if self.get(dl::FAILED_STEP).is_none() {
            if let Some(step) = self.failed_step() {
                out.push_str(&format!("{:<width$}  {step}\n", dl::FAILED_STEP));
            }
        }
        out
    }
}

/// The steps as `show` prints them: one line each — number, name, state, attempt and output
/// (cut to [`STEP_OUTPUT_SHOWN`] characters).
fn steps_text(steps: &[Step], width: usize) -> String {
    if steps.is_empty() {
        return format!("{:<width$}  (none)\n", field::STEPS);
    }
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        let label = if i == 0 { field::STEPS } else { "" };
        let state = match (s.done, s.side_effect) {
            (true, true) => "done (side effect)",
            (true, false) => "done",
            (false, _) => "STARTED, NOT DONE (side effect)",
        };
        let output = if s.done {
            let text = s.output.to_string();
            let cut: String = text.chars().take(STEP_OUTPUT_SHOWN).collect();
            if cut.len() < text.len() {
                format!("  {cut}… ({} bytes)", text.len())
            } else {
                format!("  {cut}")
            }
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{label:<width$}  {}. {}  {state}, attempt {}{output}\n",
            i + 1,
            s.name,
            s.attempt
        ));
    }
    out
}

/// A field value typed for JSON output (text when it does not parse).
pub fn typed(name: &str, value: &str) -> Value {
    if JSON_FIELDS.contains(&name) {
        if let Ok(v) = serde_json::from_str(value) {
            return v;
        }
    }
    if NUMBER_FIELDS.contains(&name) {
        if let Ok(n) = value.parse::<u64>() {
            return Value::from(n);
        }
    }
    Value::String(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> DeadLetterView {
        DeadLetterView::from_entry(
            "acme",
            Entry {
                id: "1763800000000-0".into(),
                fields: Some(
                    [
                        ("task_id", "t-1"),
                        ("tenant", "acme"),
                        ("kind", "triage"),
                        ("payload", r#"{"ticket":7}"#),
                        ("attempt", "3"),
                        ("class", "timeout"),
                        ("error", "timed out"),
                        ("history", "not json"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                ),
            },
        )
    }

    #[test]
    fn json_is_typed() {
        let j = view().to_json();
        assert_eq!(j["id"], "acme/1763800000000-0");
        assert_eq!(j["payload"]["ticket"], 7);
        assert_eq!(j["attempt"], 3);
        assert_eq!(j["history"], "not json", "unparseable JSON stays text");
        assert_eq!(j["dead_lettered_at_iso"], "2025-11-22T08:26:40.000Z");
        let s = view().summary_json();
        assert_eq!(s["class"], "timeout");
        assert!(s.get("payload").is_none());
    }

    fn with_steps() -> DeadLetterView {
        let mut v = view();
        v.fields.push((
            "steps".into(),
            r#"[{"name":"quote","output":{"eur":12.5},"attempt":1,"at_ms":5}]"#.into(),
        ));
        v.fields.push((
            "recorded_steps".into(),
            format!(
                r#"[{{"name":"draft","output":"{}","attempt":2,"at_ms":6}},{{"name":"charge","output":null,"side_effect":true,"attempt":2,"at_ms":7,"done":false}}]"#,
                "x".repeat(500)
            ),
        ));
        v
    }

    #[test]
    fn steps_show_merged_with_outputs_bounded_and_the_failed_step_named() {
        let v = with_steps();
        let j = v.to_json();
        let steps = j["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0]["output"]["eur"], 12.5);
        assert_eq!(
            steps[1]["output"].as_str().unwrap().len(),
            500,
            "--json keeps outputs whole"
        );
        assert_eq!(steps[2]["done"], false);
        assert!(j.get("recorded_steps").is_none(), "merged into steps");
        assert_eq!(j["failed_step"], "charge", "the open side effect");
        let t = v.show_text(1_763_800_060_000);
        assert!(
            t.contains("1. quote  done, attempt 1  {\"eur\":12.5}"),
            "{t}"
        );
        assert!(
            t.contains("3. charge  STARTED, NOT DONE (side effect), attempt 2"),
            "{t}"
        );
        assert!(t.contains("… (502 bytes)"), "{t}");
        assert!(
            !t.contains(&"x".repeat(300)),
            "outputs are cut for display: {t}"
        );
        assert!(t.contains("failed_step") && t.contains("charge"), "{t}");
        // An explicit failed_step wins.
        let mut v = with_steps();
        v.fields.push(("failed_step".into(), "draft".into()));
        assert_eq!(v.to_json()["failed_step"], "draft");
    }

    #[test]
    fn text_shows_every_field() {
        let t = view().show_text(1_763_800_060_000);
        assert!(t.contains("dead-lettered 1m ago"), "{t}");
        assert!(t.contains("\"ticket\": 7"), "{t}");
        let line = view().list_line(1_763_800_060_000);
        assert!(line.starts_with("acme/1763800000000-0"));
        assert!(line.contains("timeout") && line.contains("t-1"));
    }
}
