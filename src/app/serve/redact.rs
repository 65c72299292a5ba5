//! What a token that may not see payloads and outputs gets instead: the same documents with
//! those fields set to `null` and listed under `hidden`, so a client can say what it does not
//! show. Errors, classes, fingerprints and times stay: they are what triage needs.

use serde_json::{Map, Value};

use crate::deadletter::field as dl;
use crate::task::field;

/// A dead letter's fields that carry the task's data or what the agent produced.
const DEAD_LETTER_DATA: [&str; 5] = [
    field::PAYLOAD,
    dl::PARTIAL_OUTPUT,
    dl::RAW,
    dl::EXTRA,
    field::RECORDED_STEPS,
];

/// Hides a dead letter's payload, raw entry, producer fields, partial output and step outputs
/// (a dead letter as [`crate::app::view::DeadLetterView::to_json`] makes it).
pub fn dead_letter(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let mut hidden = Vec::new();
    for name in DEAD_LETTER_DATA {
        hide(m, name, &mut hidden);
    }
    if let Some(Value::Array(steps)) = m.get_mut(field::STEPS) {
        for s in steps.iter_mut().filter_map(Value::as_object_mut) {
            if s.get("output").is_some_and(|o| !o.is_null()) {
                s.insert("output".into(), Value::Null);
                if !hidden.contains(&"steps.output") {
                    hidden.push("steps.output");
                }
            }
        }
    } else if m.get(field::STEPS).is_some_and(|s| !s.is_null()) {
        // Steps that did not read as steps are shown as their text: hide it whole.
        hide(m, field::STEPS, &mut hidden);
    }
    mark(m, hidden);
}

/// Hides a task record's output (a task as [`crate::app::view::task_json`] makes it).
pub fn task(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let mut hidden = Vec::new();
    hide(m, "output", &mut hidden);
    mark(m, hidden);
}

fn hide(m: &mut Map<String, Value>, name: &'static str, hidden: &mut Vec<&'static str>) {
    if let Some(v) = m.get_mut(name) {
        if !v.is_null() {
            *v = Value::Null;
            hidden.push(name);
        }
    }
}

fn mark(m: &mut Map<String, Value>, hidden: Vec<&'static str>) {
    if !hidden.is_empty() {
        m.insert("hidden".into(), Value::from(hidden));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_is_hidden_and_triage_fields_stay() {
        let mut v = json!({
            "id": "acme/1-0", "payload": {"secret": 1}, "error": "boom", "class": "tool_failure",
            "partial_output": "half", "extra": {"x": "y"},
            "steps": [{"name": "a", "output": {"s": 2}}, {"name": "b", "output": null}],
        });
        dead_letter(&mut v);
        assert_eq!(v["payload"], Value::Null);
        assert_eq!(v["partial_output"], Value::Null);
        assert_eq!(v["extra"], Value::Null);
        assert_eq!(v["steps"][0]["output"], Value::Null);
        assert_eq!(v["steps"][0]["name"], "a");
        assert_eq!(v["error"], "boom");
        assert_eq!(
            v["hidden"],
            json!(["payload", "partial_output", "extra", "steps.output"])
        );
        let mut t = json!({"task_id": "t", "output": {"answer": 42}});
        task(&mut t);
        assert_eq!(
            t,
            json!({"task_id": "t", "output": null, "hidden": ["output"]})
        );
        let mut t = json!({"task_id": "t", "output": null});
        task(&mut t);
        assert!(t.get("hidden").is_none(), "nothing to hide");
    }
}
