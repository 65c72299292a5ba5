//! A dead letter as operators see it: typed JSON for `--json` and `export`, aligned text for
//! people. Pure.

use serde_json::{Map, Value};

use crate::admin::review::Review;
use crate::admin::select::{id_ms, DlId};
use crate::admin::time::{format_age, format_time};
use crate::broker::{Entry, IndexedTask, Located, Place, RecordRead, Searched};
use crate::deadletter::field as dl;
use crate::records::{field as rf, run_count, runs_of, TaskRecord, TaskState};
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
    /// Its review (state, owner, notes, fold), when it was read.
    pub review: Option<Review>,
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
            review: None,
        }
    }

    /// The view with its review.
    pub fn with_review(mut self, review: Review) -> DeadLetterView {
        self.review = Some(review);
        self
    }

    /// The review's label for a list row (`new` when it was not read).
    fn review_label(&self) -> String {
        self.review
            .as_ref()
            .map(|r| r.label(&self.id.id))
            .unwrap_or_else(|| "new".into())
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
        if let Some(r) = &self.review {
            m.insert("review".into(), r.to_json(&self.id, true));
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
        if let Some(r) = &self.review {
            m.insert("review".into(), r.to_json(&self.id, false));
        }
        Value::Object(m)
    }

    /// One line of `list`: id, age, class, kind, task id, fingerprint, review state, error.
    pub fn list_line(&self, now_ms: u64) -> String {
        let error: String = self.or_dash(dl::ERROR).chars().take(72).collect();
        format!(
            "{:<34} {:>5} {:<20} {:<18} {:<24} {:<12} {:<22} {}",
            self.id.to_string(),
            format_age(now_ms.saturating_sub(self.dead_lettered_at_ms())),
            self.or_dash(dl::CLASS),
            self.or_dash(field::KIND),
            self.or_dash(field::TASK_ID),
            self.or_dash(dl::FINGERPRINT),
            self.review_label(),
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
        if let Some(r) = &self.review {
            out.push_str(&review_text(&self.id, r, now_ms));
        }
        out
    }
}

/// The review as `show` prints it: state, owner, fold, then the log (moves and notes).
fn review_text(id: &DlId, r: &Review, now_ms: u64) -> String {
    let mut out = format!("\nreview: {}", r.state(&id.id).as_str());
    if !r.assignee().is_empty() {
        out.push_str(&format!(", assigned to {}", r.assignee()));
    }
    if !r.escalated_to().is_empty() {
        out.push_str(&format!(", escalated to {}", r.escalated_to()));
    }
    if let Some(since) = r.record.as_ref().map(|x| x.since_ms()).filter(|s| *s > 0) {
        if r.state(&id.id).owned() {
            out.push_str(&format!(
                " (for {})",
                format_age(now_ms.saturating_sub(since))
            ));
        }
    }
    out.push('\n');
    if let Some(rep) = &r.representative {
        let count = r
            .fold_count
            .map(|n| format!("{n} dead letters"))
            .unwrap_or_else(|| "its dead letters".into());
        if r.represents(&id.id) {
            out.push_str(&format!(
                "fold: represents {count} with its fingerprint; a replay, resolve or discard of \
                 it takes them all\n"
            ));
        } else {
            out.push_str(&format!(
                "fold: a member, folded under {}/{rep} ({count}); act on the representative\n",
                id.tenant
            ));
        }
    }
    let Some(rec) = &r.record else {
        return out;
    };
    if rec.dropped > 0 {
        out.push_str(&format!("  ({} older log items not kept)\n", rec.dropped));
    }
    for item in &rec.log {
        let what = match item.act.as_str() {
            "note" => format!("note: {}", item.text),
            "fold" => format!("folded fingerprint {}", item.to),
            act if !item.to.is_empty() => format!("{act} → {}", item.to),
            act => act.to_owned(),
        };
        let from = if item.from.is_empty() {
            String::new()
        } else {
            format!(" [from {}]", item.from)
        };
        let why = if item.why.is_empty() || item.act == "note" && item.why == "note" {
            String::new()
        } else {
            format!(" — {}", item.why)
        };
        out.push_str(&format!(
            "  {}  {:<16} {what}{why}{from}\n",
            format_time(item.at_ms()),
            item.by
        ));
    }
    out
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

// ---- task records (`redrive task show|list`) ----

/// A span of time for people: `350ms`, `1.2s`, `3m 2s`, `2h 5m`, `3d 4h`.
pub fn format_span(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..=86_399_999 => format!("{}h {}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{}d {}h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// The output a record holds: parsed JSON, or (when cut, or not JSON) the text.
fn output_of(r: &TaskRecord) -> Option<(Value, bool)> {
    let text = r.fields.get(rf::OUTPUT)?;
    let truncated = r.fields.get(rf::OUTPUT_TRUNCATED).is_some_and(|v| v == "1");
    let value = if truncated {
        Value::String(text.clone())
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
    };
    Some((value, truncated))
}

/// A task record as `task show --json` prints it: typed fields, times in ms, the runs.
pub fn task_json(tenant: &str, task_id: &str, read: &RecordRead) -> Value {
    let r = &read.record;
    let text = |name: &str| {
        r.fields
            .get(name)
            .map(|v| Value::String(v.clone()))
            .unwrap_or(Value::Null)
    };
    let num = |name: &str| r.number(name).map(Value::from).unwrap_or(Value::Null);
    let (output, truncated) = output_of(r)
        .map(|(v, t)| (v, Value::Bool(t)))
        .unwrap_or((Value::Null, Value::Bool(false)));
    let runs: Vec<Value> = runs_of(r)
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "run": v.run, "start": v.start, "member": v.member, "end": v.end,
                "outcome": v.outcome,
            })
        })
        .collect();
    serde_json::json!({
        "tenant": tenant,
        "task_id": task_id,
        "source": "record",
        "state": text(rf::STATE),
        "finished": r.state.is_some_and(|s| s.is_finished()),
        "kind": text(rf::KIND),
        "attempt": num(rf::ATTEMPT),
        "entry": text(rf::ENTRY),
        "member": text(rf::MEMBER),
        "enqueued_at": num(rf::ENQUEUED),
        "first_enqueued_at": num(rf::FIRST_ENQUEUED),
        "started_at": num(rf::STARTED),
        "ended_at": num(rf::ENDED),
        "updated_at": num(rf::UPDATED),
        "due_at": num(rf::DUE),
        "class": text(rf::CLASS),
        "error": text(rf::ERROR),
        "dlq": text(rf::DLQ),
        "archived": text(rf::ARCHIVED),
        "archived_at": num(rf::ARCHIVED_AT),
        "restored_from": text(rf::RESTORED_FROM),
        "replay_of": text(rf::REPLAY_OF),
        "replayed_as": text(rf::REPLAYED_AS),
        "replays": num(rf::REPLAYS),
        "run_count": run_count(r),
        "runs": runs,
        "output": output,
        "output_truncated": truncated,
        "expires_in_ms": read.expires_in.map(|d| d.as_millis() as u64),
    })
}

/// A time with how long ago it was.
fn when(ms: u64, now_ms: u64) -> String {
    format!(
        "{} ({} ago)",
        format_time(ms),
        format_span(now_ms.saturating_sub(ms))
    )
}

/// A task record as `task show` prints it for people.
pub fn task_text(tenant: &str, task_id: &str, read: &RecordRead, now_ms: u64) -> String {
    let r = &read.record;
    let get = |name: &str| r.fields.get(name).filter(|v| !v.is_empty());
    let mut out = format!(
        "task {tenant}/{task_id}: {}\n",
        get(rf::STATE).map(String::as_str).unwrap_or("(no state)")
    );
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<16}{value}\n"));
    if let Some(k) = get(rf::KIND) {
        line("kind", k.clone());
    }
    if let Some(a) = get(rf::ATTEMPT) {
        line("attempt", a.clone());
    }
    if let Some(e) = get(rf::ENTRY) {
        line("entry", e.clone());
    }
    if let Some(ms) = r.number(rf::ENQUEUED) {
        line("enqueued", when(ms, now_ms));
    }
    if let Some(ms) = r
        .number(rf::FIRST_ENQUEUED)
        .filter(|f| Some(*f) != r.number(rf::ENQUEUED))
    {
        line("first enqueued", when(ms, now_ms));
    }
    if let Some(ms) = r.number(rf::STARTED) {
        let by = get(rf::MEMBER)
            .map(|m| format!(" on {m}"))
            .unwrap_or_default();
        line("started", format!("{}{by}", when(ms, now_ms)));
    } else if let Some(m) = get(rf::MEMBER).filter(|_| r.state == Some(TaskState::Running)) {
        line("running on", m.clone());
    }
    if let Some(ms) = r.number(rf::ENDED) {
        let ran = r
            .number(rf::STARTED)
            .filter(|s| *s <= ms)
            .map(|s| format!(", ran {}", format_span(ms - s)))
            .unwrap_or_default();
        line("ended", format!("{}{ran}", when(ms, now_ms)));
    }
    let waiting = matches!(
        r.state,
        Some(TaskState::RetryScheduled | TaskState::Deferred)
    );
    if let Some(ms) = r.number(rf::DUE).filter(|_| waiting) {
        let left = if ms > now_ms {
            format!("in {}", format_span(ms - now_ms))
        } else {
            "now".to_owned()
        };
        line("due", format!("{} ({left})", format_time(ms)));
    }
    if let Some(c) = get(rf::CLASS) {
        let error = get(rf::ERROR).map(String::as_str).unwrap_or("");
        line("last failure", format!("{c}: {error}"));
    }
    match (get(rf::DLQ), get(rf::ARCHIVED)) {
        (Some(d), Some(object)) => {
            line(
                "dead letter",
                format!("{tenant}/{d}, archived (out of redis): see `redrive dlq archive show {tenant}/{d}`"),
            );
            line("archive object", object.clone());
        }
        (Some(d), None) => line("dead letter", format!("{tenant}/{d}")),
        _ => {}
    }
    if let Some(d) = get(rf::RESTORED_FROM) {
        line(
            "restored from",
            format!("archived dead letter {tenant}/{d}"),
        );
    }
    if let Some(d) = get(rf::REPLAY_OF) {
        let n = get(rf::REPLAYS).map(String::as_str).unwrap_or("1");
        line(
            "replayed from",
            format!("dead letter {tenant}/{d} (replays: {n})"),
        );
    }
    if let Some(e) = get(rf::REPLAYED_AS) {
        line("replayed as", format!("lane entry {e}"));
    }
    match read.expires_in {
        Some(d) => line(
            "record expires",
            format!("in {}", format_span(d.as_millis() as u64)),
        ),
        None => line(
            "record kept",
            if r.state.is_some_and(|s| s.is_finished()) {
                "while its dead letter exists".into()
            } else {
                "until the task finishes".into()
            },
        ),
    }
    if let Some((value, truncated)) = output_of(r) {
        if truncated {
            out.push_str("output (truncated: the handler's output was longer than tasks.max_output_bytes; raw text):\n");
            out.push_str(&format!("  {}\n", value.as_str().unwrap_or_default()));
        } else {
            out.push_str("output:\n");
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            for l in pretty.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    let runs = runs_of(r);
    let count = run_count(r);
    if !runs.is_empty() {
        out.push_str(&format!(
            "runs ({count} in all):\n  {:<5}{:<26}{:<24}{:<10}{}\n",
            "RUN", "STARTED", "MEMBER", "TOOK", "OUTCOME"
        ));
        for v in runs {
            let took = match (v.start, v.end) {
                (Some(s), Some(e)) if e >= s => format_span(e - s),
                (Some(_), None) => "-".into(),
                _ => "?".into(),
            };
            out.push_str(&format!(
                "  {:<5}{:<26}{:<24}{:<10}{}\n",
                format!("r{}", v.run),
                v.start.map(format_time).unwrap_or_else(|| "?".into()),
                v.member.as_deref().unwrap_or("?"),
                took,
                v.outcome.as_deref().unwrap_or(
                    if v.run == count && r.state == Some(TaskState::Running) {
                        "running"
                    } else if v.end.is_none() {
                        "died (its member stopped)"
                    } else {
                        "?"
                    }
                )
            ));
        }
    }
    out
}

/// A place a scan found a task, as JSON.
fn place_json(p: &Place) -> Value {
    match p {
        Place::Lane { entry, pending } => serde_json::json!({
            "place": if pending.is_some() { "pending" } else { "lane" },
            "entry": entry,
            "member": pending.as_ref().map(|p| p.0.clone()),
            "idle_ms": pending.as_ref().map(|p| p.1),
            "deliveries": pending.as_ref().map(|p| p.2),
        }),
        Place::Scheduled {
            deferred,
            due_ms,
            attempt,
            from_entry,
        } => serde_json::json!({
            "place": if *deferred { "deferred" } else { "retry" },
            "due_at": due_ms,
            "attempt": attempt,
            "from_entry": from_entry,
        }),
        Place::DeadLetter { id, class } => serde_json::json!({
            "place": "dead_letters", "dead_letter_id": id, "class": class,
        }),
    }
}

/// A task without a record, as `task show --json` prints it: where the scans found it.
pub fn located_json(tenant: &str, task_id: &str, l: &Located) -> Value {
    serde_json::json!({
        "tenant": tenant,
        "task_id": task_id,
        "source": if l.places.is_empty() { "not_found" } else { "scan" },
        "state": Value::Null,
        "found_in": l.places.iter().map(place_json).collect::<Vec<_>>(),
        "searched": l.searched.iter().map(|s| serde_json::json!({
            "place": s.place, "looked": s.looked, "total": s.total,
        })).collect::<Vec<_>>(),
    })
}

/// How far the scans read, for people: `all 3 lane entries`, `the first 10000 of 25000 …`.
pub fn searched_text(searched: &[Searched]) -> String {
    searched
        .iter()
        .map(|s| {
            let what = match s.place {
                "lane" => "lane entries",
                "retry" => "scheduled retries",
                "deferred" => "deferred tasks",
                _ => "dead letters",
            };
            if s.looked >= s.total {
                format!("all {} {what}", s.total)
            } else {
                format!("the first {} of {} {what}", s.looked, s.total)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A task without a record, as `task show` prints it for people.
pub fn located_text(tenant: &str, task_id: &str, l: &Located, now_ms: u64) -> String {
    let mut out = format!(
        "task {tenant}/{task_id}: no record (published without one, e.g. a raw XADD, or records \
         are off); looked where tasks wait:\n"
    );
    for p in &l.places {
        let line = match p {
            Place::Lane {
                entry,
                pending: None,
            } => format!("in the lane as entry {entry}, not delivered to a member yet"),
            Place::Lane {
                entry,
                pending: Some((member, idle, n)),
            } => format!(
                "pending on member {member}: lane entry {entry}, delivered {n} time(s), idle {}",
                format_span(*idle)
            ),
            Place::Scheduled {
                deferred,
                due_ms,
                attempt,
                ..
            } => {
                let due = if *due_ms > now_ms {
                    format!("due in {}", format_span(due_ms - now_ms))
                } else {
                    format!("due {} ago", format_span(now_ms - due_ms))
                };
                let what = if *deferred {
                    "held back by its tenant's breaker (deferred)"
                } else {
                    "in the retry schedule"
                };
                format!(
                    "{what}, attempt {}, {due} ({})",
                    attempt.as_deref().unwrap_or("?"),
                    format_time(*due_ms)
                )
            }
            Place::DeadLetter { id, class } => format!(
                "in the dead letters as {tenant}/{id} ({}); see `redrive dlq show {tenant}/{id}`",
                class.as_deref().unwrap_or("?")
            ),
        };
        out.push_str(&format!("  {line}\n"));
    }
    if l.places.is_empty() {
        out.push_str(&format!("  not found in {}\n", searched_text(&l.searched)));
    } else {
        out.push_str(&format!("  (searched {})\n", searched_text(&l.searched)));
    }
    out
}

/// One line of `task list`.
pub fn task_list_line(t: &IndexedTask, now_ms: u64) -> String {
    let r = t.record.as_ref();
    let get = |name: &str| {
        r.and_then(|r| r.fields.get(name))
            .filter(|v| !v.is_empty())
            .map(String::as_str)
            .unwrap_or("-")
    };
    let error: String = get(rf::ERROR).chars().take(60).collect();
    format!(
        "{:<32} {:<16} {:<18} {:>3} {:>7} {:<20} {}",
        t.task_id,
        get(rf::STATE),
        get(rf::KIND),
        get(rf::ATTEMPT),
        format_span(now_ms.saturating_sub(t.score)),
        get(rf::CLASS),
        error
    )
}

/// One task of `task list --json`.
pub fn task_list_json(t: &IndexedTask) -> Value {
    let r = t.record.as_ref();
    let get = |name: &str| {
        r.and_then(|r| r.fields.get(name))
            .map(|v| Value::String(v.clone()))
            .unwrap_or(Value::Null)
    };
    serde_json::json!({
        "task_id": t.task_id,
        "updated_at": t.score,
        "state": get(rf::STATE),
        "kind": get(rf::KIND),
        "attempt": r.and_then(|r| r.number(rf::ATTEMPT)),
        "member": get(rf::MEMBER),
        "class": get(rf::CLASS),
        "error": get(rf::ERROR),
        "dlq": get(rf::DLQ),
        "entry": get(rf::ENTRY),
    })
}

/// One archived dead letter as `dlq archive list --json` and the API's archive page show it
/// (from its batch's manifest: no payload).
pub fn archived_row(e: &crate::archive::read::PageEntry) -> Value {
    serde_json::json!({
        "id": format!("{}/{}", e.tenant, e.entry.id),
        "tenant": e.tenant,
        "day": e.day,
        "archive_class": e.class.as_str(),
        "class": e.entry.failure_class,
        "kind": e.entry.kind,
        "task_id": e.entry.task_id,
        "object": e.object,
        "encrypted": e.encrypted,
    })
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

    fn record() -> RecordRead {
        let fields: std::collections::HashMap<String, String> = [
            ("state", "done"),
            ("kind", "triage"),
            ("attempt", "2"),
            ("enq", "1763800000000"),
            ("first", "1763799990000"),
            ("started", "1763800001000"),
            ("ended", "1763800002500"),
            ("member", "m-1"),
            ("class", "timeout"),
            ("error", "timed out"),
            ("runs", "1"),
            ("r1:start", "1763799991000"),
            ("r1:member", "m-0"),
            ("r1:end", "1763799992000"),
            ("r1:outcome", "timeout"),
            ("output", r#"{"answer":42}"#),
            ("replay_of", "1763799995000-0"),
            ("replays", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        RecordRead {
            record: TaskRecord::from_fields(fields),
            expires_in: Some(std::time::Duration::from_secs(3_600)),
        }
    }

    #[test]
    fn a_record_shows_times_runs_links_and_output() {
        let r = record();
        let t = task_text("acme", "t-1", &r, 1_763_800_062_500);
        assert!(t.starts_with("task acme/t-1: done\n"), "{t}");
        assert!(
            t.contains("2025-11-22T08:26:41.000Z (1m 1s ago) on m-1"),
            "{t}"
        );
        assert!(t.contains("ran 1.5s"), "{t}");
        assert!(t.contains("last failure    timeout: timed out"), "{t}");
        assert!(
            t.contains("dead letter acme/1763799995000-0 (replays: 1)"),
            "{t}"
        );
        assert!(t.contains("record expires  in 1h 0m"), "{t}");
        assert!(t.contains("\"answer\": 42"), "pretty JSON: {t}");
        assert!(
            t.contains("r1   ") && t.contains("m-0") && t.contains("timeout"),
            "{t}"
        );
        assert!(
            t.contains("r2   ") && t.contains("1.5s") && t.contains("ok"),
            "{t}"
        );
        let j = task_json("acme", "t-1", &r);
        assert_eq!(j["state"], "done");
        assert_eq!(j["finished"], true);
        assert_eq!(j["attempt"], 2);
        assert_eq!(j["output"]["answer"], 42);
        assert_eq!(j["output_truncated"], false);
        assert_eq!(j["runs"][1]["outcome"], "ok");
        assert_eq!(j["runs"][1]["member"], "m-1");
        assert_eq!(j["runs"].as_array().unwrap().len(), 2);
        assert_eq!(j["run_count"], 2);
        assert_eq!(j["expires_in_ms"], 3_600_000);
        // A cut output is shown raw, with a note.
        let mut r = record();
        r.record
            .fields
            .insert("output".into(), r#"{"answer":"4"#.into());
        r.record
            .fields
            .insert("output_truncated".into(), "1".into());
        let t = task_text("acme", "t-1", &r, 1_763_800_062_500);
        assert!(
            t.contains("output (truncated") && t.contains(r#"{"answer":"4"#),
            "{t}"
        );
        assert_eq!(task_json("acme", "t-1", &r)["output"], r#"{"answer":"4"#);
    }

    #[test]
    fn spans_read_at_a_glance() {
        assert_eq!(format_span(350), "350ms");
        assert_eq!(format_span(1_250), "1.2s");
        assert_eq!(format_span(182_000), "3m 2s");
        assert_eq!(format_span(7_500_000), "2h 5m");
        assert_eq!(format_span(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }
}
