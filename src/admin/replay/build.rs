//! The pure replay builder: a dead letter's fields become the replayed task, or the reason it
//! must not or cannot be replayed; and the order a selection is replayed in.
//!
//! [`build`] keeps the task id, records `replay_of` and `replayed_by`, carries completed steps
//! (with their outputs, the dead letter's `recorded_steps` merged in) and history forward,
//! drops a side-effecting step that was started and never completed (the operator who
//! replays has decided it may run again), sets attempt 1 so the retry budget starts afresh, applies schema
//! migrations then the operator's merge patch, and optionally routes to another kind.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::Value;

use crate::admin::context::AdminContext;
use crate::admin::select::{field_str, DlId};
use crate::admin::ReplaySpec;
use crate::broker::Fields;
use crate::deadletter::field as dl;
use crate::handler::FailureClass;
use crate::schema::migrate::Migrations;
use crate::schema::patch::merge_patch;
use crate::task::{field, validate_payload, Limits, Task};

/// How a replayed task is built.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions<'a> {
    /// A JSON merge patch applied to the payload after migrations.
    pub patch: Option<&'a Value>,
    /// Another kind to route the task to.
    pub target_kind: Option<&'a str>,
    /// Replay partial_execution dead letters too.
    pub force: bool,
    /// Who replays it.
    pub operator: &'a str,
    /// Registered schema migrations.
    pub migrations: &'a Migrations,
    /// Payload limits.
    pub limits: &'a Limits,
    /// Now, ms (the replayed task's enqueue time).
    pub now_ms: u64,
}

/// What [`build`] made of a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// Ready to go back into the lane; the migration steps applied, as (from, to).
    Ready(Box<Task>, Vec<(u32, u32)>),
    /// A guardrail refuses it (partial_execution without `--force`).
    Refused(String),
    /// It cannot be replayed as it is (unreadable entry, failing migration, payload too big).
    Invalid(String),
}

/// Builds the task that replays the dead letter `id` with `fields`.
pub fn build(id: &DlId, fields: &Fields, opts: &BuildOptions<'_>) -> Built {
    let class = field_str(fields, dl::CLASS).unwrap_or("");
    if class == FailureClass::PartialExecution.as_str() && !opts.force {
        let step = field_str(fields, crate::deadletter::field::FAILED_STEP)
            .map(|s| format!(" (it stopped inside step '{s}')"))
            .unwrap_or_default();
        return Built::Refused(format!(
            "{id} is partial_execution{step}: steps {} already ran and may have had side \
             effects; review it, then replay with --force",
            field_str(fields, field::STEPS).unwrap_or("[]")
        ));
    }
    let orig_id = field_str(fields, dl::ORIG_ID).unwrap_or(&id.id);
    let parsed = match field_str(fields, dl::RAW) {
        // A malformed entry: what was read is kept in `raw`; it replays only if it now reads as
        // a task (for example with --target-kind supplying a missing kind).
        Some(raw) if field_str(fields, field::KIND).is_none() => {
            let map = match crate::deadletter::decode_raw(raw) {
                Ok(m) => m,
                Err(e) => {
                    return Built::Invalid(format!("{id}: its raw fields are unreadable: {e}"))
                }
            };
            let mut pairs: Fields = map
                .into_iter()
                .filter(|(k, _)| {
                    !(opts.target_kind.is_some() && k.as_slice() == field::KIND.as_bytes())
                })
                .collect();
            if let Some(k) = opts.target_kind {
                pairs.push((field::KIND.as_bytes().to_vec(), k.as_bytes().to_vec()));
            }
            Task::from_fields(&id.tenant, orig_id, &pairs, opts.limits).map_err(|m| {
                format!(
                    "{id} was a malformed entry and still is ({}): export it, fix it and enqueue it \
                     again, or discard it",
                    m.reason
                )
            })
        }
        _ => Task::from_dead_letter(&id.tenant, orig_id, fields, opts.limits)
            .map_err(|m| format!("{id} cannot be read as a task: {}", m.reason)),
    };
    let mut task = match parsed {
        Ok(t) => t,
        Err(why) => return Built::Invalid(why),
    };
    let payload: Value = match serde_json::from_str(&task.payload) {
        Ok(v) => v,
        Err(e) => return Built::Invalid(format!("{id}: payload is not JSON: {e}")),
    };
    let migrated = match opts
        .migrations
        .migrate(&task.kind, task.schema_version, payload)
    {
        Ok(m) => m,
        Err(e) => return Built::Invalid(format!("{id}: {e}")),
    };
    let mut payload = migrated.payload;
    if let Some(p) = opts.patch {
        merge_patch(&mut payload, p);
    }
    task.payload = payload.to_string();
    if let Err(e) = validate_payload(&task.payload, opts.limits) {
        return Built::Invalid(format!("{id}: after migration and patch, {e}"));
    }
    task.schema_version = migrated.schema_version;
    if let Some(k) = opts.target_kind {
        task.kind = k.to_owned();
    }
    // Completed steps go back to the agent (it skips them); a side-effecting step started and
    // never completed runs again: replaying is the operator's decision that it may.
    task.steps.retain(|s| s.done);
    task.attempt = 1;
    task.enqueued_at_ms = opts.now_ms;
    task.replay_of = Some(id.id.clone());
    task.replayed_by = Some(opts.operator.to_owned());
    Built::Ready(Box::new(task), migrated.steps)
}

/// One dead letter selected for a replay, with what ordering needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// Where it is.
    pub id: DlId,
    /// The `--order-by-key` value (the payload field as JSON text), if any.
    pub key: Option<String>,
    /// When its task was first enqueued, ms.
    pub first_enqueued_ms: u64,
}

/// A selected dead letter with what ordering needs (`order_key`: the `--order-by-key` field).
pub fn selected(id: DlId, fields: &Fields, order_key: Option<&str>) -> Selected {
    let key = order_key.and_then(|k| {
        let payload: Value = serde_json::from_str(field_str(fields, field::PAYLOAD)?).ok()?;
        payload.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    let num = |name| field_str(fields, name).and_then(|v| v.parse::<u64>().ok());
    let first_enqueued_ms = num(field::FIRST_ENQUEUED_AT)
        .or_else(|| num(field::ENQUEUED_AT))
        .unwrap_or_else(|| crate::admin::select::id_ms(&id.id));
    Selected {
        id,
        key,
        first_enqueued_ms,
    }
}

/// Orders a selection: chronologically by dead-letter id (then tenant) by default; with a key,
/// grouped by key value, groups in the order of their earliest task, each group in the order
/// its tasks were first enqueued; entries without the key come last, chronologically.
pub fn order(items: &mut [Selected], by_key: bool) {
    if !by_key {
        items.sort_by(|a, b| a.id.order(&b.id));
        return;
    }
    let within = |a: &Selected, b: &Selected| {
        a.first_enqueued_ms
            .cmp(&b.first_enqueued_ms)
            .then_with(|| a.id.order(&b.id))
    };
    // Each key's earliest task decides where its group goes.
    let mut first: HashMap<String, (u64, DlId)> = HashMap::new();
    for s in items.iter() {
        let Some(k) = &s.key else { continue };
        let cand = (s.first_enqueued_ms, s.id.clone());
        match first.get_mut(k) {
            Some(e) => {
                if cand.0 < e.0 || (cand.0 == e.0 && cand.1.order(&e.1) == Ordering::Less) {
                    *e = cand;
                }
            }
            None => {
                first.insert(k.clone(), cand);
            }
        }
    }
    items.sort_by(|a, b| match (&a.key, &b.key) {
        (None, None) => a.id.order(&b.id),
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(ka), Some(kb)) if ka == kb => within(a, b),
        (Some(ka), Some(kb)) => match (first.get(ka), first.get(kb)) {
            (Some(fa), Some(fb)) => {
                fa.0.cmp(&fb.0)
                    .then_with(|| fa.1.order(&fb.1))
                    .then_with(|| ka.cmp(kb))
            }
            _ => ka.cmp(kb),
        },
    });
}

/// The build options of a replay spec, run by `operator` at `now_ms`.
pub fn build_options<'a>(
    ctx: &'a AdminContext,
    spec: &'a ReplaySpec,
    operator: &'a str,
    now_ms: u64,
) -> BuildOptions<'a> {
    BuildOptions {
        patch: spec.patch.as_ref(),
        target_kind: spec.target_kind.as_deref(),
        force: spec.force,
        operator,
        migrations: &ctx.settings.migrations,
        limits: &ctx.limits,
        now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn dead_letter(class: &str) -> Fields {
        fields(&[
            ("task_id", "t-7"),
            ("tenant", "acme"),
            ("kind", "triage"),
            ("payload", r#"{"ticket":7,"simulate":"malformed_output"}"#),
            ("attempt", "3"),
            ("enqueued_at", "2000"),
            ("first_enqueued_at", "1000"),
            ("schema_version", "1"),
            ("trace_id", "tr-1"),
            ("steps", r#"["lookup","update"]"#),
            (
                "history",
                r#"[{"attempt":3,"class":"timeout","error":"e","at_ms":1,"duration_ms":2,"member":"m"}]"#,
            ),
            ("orig_lane", "redrive:{acme}:lane"),
            ("orig_id", "1500-0"),
            ("class", class),
            ("error", "boom"),
            ("fingerprint", "abc"),
        ])
    }

    fn opts<'a>(m: &'a Migrations, l: &'a Limits, patch: Option<&'a Value>) -> BuildOptions<'a> {
        BuildOptions {
            patch,
            target_kind: None,
            force: false,
            operator: "ana@ops",
            migrations: m,
            limits: l,
            now_ms: 9_000,
        }
    }

    #[test]
    fn a_replay_keeps_identity_and_context_and_starts_afresh() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let (m, l) = (Migrations::new(), Limits::default());
        let patch = json!({"simulate": "ok"});
        let Built::Ready(task, steps) = build(
            &id,
            &dead_letter("schema_mismatch"),
            &opts(&m, &l, Some(&patch)),
        ) else {
            panic!("not ready")
        };
        assert!(steps.is_empty());
        assert_eq!(task.task_id, "t-7");
        assert_eq!(task.attempt, 1, "a fresh attempt budget");
        assert_eq!(task.enqueued_at_ms, 9_000);
        assert_eq!(task.first_enqueued_at_ms, 1_000);
        assert_eq!(task.replay_of.as_deref(), Some("5000-0"));
        assert_eq!(task.replayed_by.as_deref(), Some("ana@ops"));
        assert_eq!(crate::task::step_names(&task.steps), ["lookup", "update"]);
        assert_eq!(task.history.len(), 1);
        assert_eq!(task.trace_id.as_deref(), Some("tr-1"));
        let payload: Value = serde_json::from_str(&task.payload).unwrap();
        assert_eq!(payload, json!({"ticket": 7, "simulate": "ok"}));
    }

    #[test]
    fn a_replay_hands_back_completed_steps_with_outputs_and_drops_unfinished_ones() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let (m, l) = (Migrations::new(), Limits::default());
        let mut dl = dead_letter("partial_execution");
        dl.retain(|(k, _)| k.as_slice() != b"steps");
        dl.push((
            b"steps".to_vec(),
            br#"[{"name":"quote","output":{"eur":12.5},"side_effect":false,"attempt":1,"at_ms":5}]"#
                .to_vec(),
        ));
        // What the dead-letter script folded in from Redis: later records of the entry.
        dl.push((
            b"recorded_steps".to_vec(),
            br#"[{"name":"draft","output":"Dear","attempt":2,"at_ms":6},{"name":"charge","output":null,"side_effect":true,"attempt":2,"at_ms":7,"done":false}]"#
                .to_vec(),
        ));
        dl.push((b"failed_step".to_vec(), b"charge".to_vec()));
        let refused = build(&id, &dl, &opts(&m, &l, None));
        assert!(
            matches!(&refused, Built::Refused(why) if why.contains("inside step 'charge'")),
            "{refused:?}"
        );
        let forced = BuildOptions {
            force: true,
            ..opts(&m, &l, None)
        };
        let Built::Ready(task, _) = build(&id, &dl, &forced) else {
            panic!("not ready")
        };
        assert_eq!(crate::task::step_names(&task.steps), ["quote", "draft"]);
        assert_eq!(task.steps[0].output, json!({"eur": 12.5}));
        assert_eq!(task.steps[1].output, json!("Dear"));
        assert!(task.steps.iter().all(|s| s.done));
        // The replayed lane entry carries them in `steps` (recorded_steps is not written).
        let written: Vec<String> = task
            .to_fields()
            .into_iter()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert!(
            written.contains(&"steps".to_owned())
                && !written.contains(&"recorded_steps".to_owned())
        );
    }

    #[test]
    fn guardrails_migrations_and_routing() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let l = Limits::default();
        let mut m = Migrations::new();
        m.register("triage", 1, 2, |mut p| {
            p["migrated"] = json!(true);
            Ok(p)
        })
        .unwrap();
        let partial = dead_letter("partial_execution");
        assert!(
            matches!(build(&id, &partial, &opts(&m, &l, None)), Built::Refused(w) if w.contains("--force"))
        );
        let mut forced = opts(&m, &l, None);
        forced.force = true;
        forced.target_kind = Some("triage_v2");
        let Built::Ready(task, steps) = build(&id, &partial, &forced) else {
            panic!("forced replay refused")
        };
        assert_eq!(steps, vec![(1, 2)]);
        assert_eq!(task.schema_version, Some(2));
        assert_eq!(task.kind, "triage_v2");
        assert!(task.payload.contains("\"migrated\":true"));
        let small = Limits {
            max_payload_bytes: 20,
        };
        assert!(
            matches!(build(&id, &dead_letter("timeout"), &opts(&m, &small, None)), Built::Invalid(w) if w.contains("limit"))
        );
        let mut failing = Migrations::new();
        failing
            .register("triage", 1, 2, |_| Err("bad shape".into()))
            .unwrap();
        assert!(
            matches!(build(&id, &dead_letter("timeout"), &opts(&failing, &l, None)), Built::Invalid(w) if w.contains("bad shape"))
        );
    }

    #[test]
    fn malformed_entries_replay_only_once_readable() {
        let id = DlId::parse("acme/5000-0", None).unwrap();
        let (m, l) = (Migrations::new(), Limits::default());
        let dl = fields(&[
            ("task_id", "t-9"),
            ("raw", r#"{"payload":"{\"a\":1}","task_id":"t-9"}"#),
            ("class", "malformed_entry"),
            ("orig_id", "1-0"),
        ]);
        assert!(
            matches!(build(&id, &dl, &opts(&m, &l, None)), Built::Invalid(w) if w.contains("missing field 'kind'"))
        );
        let mut with_kind = opts(&m, &l, None);
        with_kind.target_kind = Some("triage");
        let Built::Ready(task, _) = build(&id, &dl, &with_kind) else {
            panic!("not ready")
        };
        assert_eq!(
            (task.task_id.as_str(), task.kind.as_str()),
            ("t-9", "triage")
        );
    }

    #[test]
    fn order_is_chronological_or_per_key() {
        let s = |id: &str, key: Option<&str>, first: u64| Selected {
            id: DlId::parse(id, None).unwrap(),
            key: key.map(str::to_owned),
            first_enqueued_ms: first,
        };
        let mut items = vec![
            s("acme/30-0", Some("c2"), 3),
            s("acme/10-0", Some("c1"), 5),
            s("acme/20-0", Some("c1"), 1),
            s("acme/5-0", None, 9),
            s("beta/10-0", Some("c2"), 2),
        ];
        order(&mut items, false);
        let ids: Vec<String> = items.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "acme/5-0",
                "acme/10-0",
                "beta/10-0",
                "acme/20-0",
                "acme/30-0"
            ]
        );
        order(&mut items, true);
        let ids: Vec<String> = items.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "acme/20-0",
                "acme/10-0",
                "beta/10-0",
                "acme/30-0",
                "acme/5-0"
            ],
            "c1 first (earliest task at 1), its tasks by first enqueue; then c2; keyless last"
        );
    }
}
