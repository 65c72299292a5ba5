//! The task contract: what a task looks like on the wire, its limits, and how it is validated.
//!
//! A task is one stream entry in its tenant's lane (see [`crate::keys`]). Its fields are flat
//! strings so that a producer in any language can publish one with a plain `XADD`; CONTRACT.md
//! is the reference for producers and this module is the code that enforces it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod step;

pub use step::{
    check_step_output, merge_steps, parse_steps, validate_step_name, Step, MAX_STEPS,
    MAX_STEPS_OUTPUT_BYTES,
};
#[cfg(test)]
pub use step::{step_names, MAX_STEP_OUTPUT_BYTES};

/// Names of the stream-entry fields of a task.
/// The field/value pairs of a stream entry, as raw bytes.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

pub mod field {
    /// Producer-chosen idempotency key; redrive generates one when the producer gives none.
    pub const TASK_ID: &str = "task_id";
    /// The tenant the task belongs to; must match the lane it is in.
    pub const TENANT: &str = "tenant";
    /// The agent or workflow name that selects the handler logic.
    pub const KIND: &str = "kind";
    /// The task's input, a JSON document.
    pub const PAYLOAD: &str = "payload";
    /// 1 for the first attempt, incremented by every scheduled retry.
    pub const ATTEMPT: &str = "attempt";
    /// When the producer enqueued this attempt, in ms since the Unix epoch.
    pub const ENQUEUED_AT: &str = "enqueued_at";
    /// Optional version of the payload schema, for migrations on replay.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Optional version of the prompt the agent should use.
    pub const PROMPT_VERSION: &str = "prompt_version";
    /// Optional trace id, propagated into logs and dead letters.
    pub const TRACE_ID: &str = "trace_id";
    /// Optional deadline in ms since the Unix epoch; past it the task is not worth running.
    pub const DEADLINE: &str = "deadline";
    /// Reserved (written by redrive): when the first attempt was enqueued.
    pub const FIRST_ENQUEUED_AT: &str = "first_enqueued_at";
    /// Reserved (written by redrive): JSON array of the steps of earlier attempts (completed
    /// ones with their outputs, side-effecting ones left open), in the order they were
    /// recorded. Older entries hold an array of step names.
    pub const STEPS: &str = "steps";
    /// Reserved (written by redrive's scripts): JSON array of steps recorded in Redis for the
    /// lane entry the task came from (`redrive:{t}:steps:<entry id>`), folded into the item a
    /// script writes when the entry leaves its lane. Read as later than `steps`: a record of
    /// the same name replaces the one in `steps`.
    pub const RECORDED_STEPS: &str = "recorded_steps";
    /// Reserved (written by redrive): JSON array of the last attempts' errors.
    pub const HISTORY: &str = "history";
    /// Reserved (written by redrive): the dead-letter id this task was replayed from.
    pub const REPLAY_OF: &str = "replay_of";
    /// Reserved (written by redrive): the operator who replayed this task from a dead letter.
    pub const REPLAYED_BY: &str = "replayed_by";
    /// Reserved (written by redrive): which of the producer's own fields were not carried
    /// (over the limits, a bad name, or not UTF-8 text), and why.
    pub const EXTRA_DROPPED: &str = "extra_dropped";
    /// Reserved (written by redrive): the lane entry a retry or deferral was scheduled from.
    /// Read and ignored; it keeps two schedule items of identical tasks apart.
    pub const FROM_ENTRY: &str = "from_entry";
    /// Reserved (written by redrive's scripts): set when the script that appended the entry
    /// wrote its task record too (enqueue.lua, promote.lua, replay.lua), so a fresh start of
    /// the entry need not read the record: `1`, or (enqueue.lua) when that record expires,
    /// ms. Read as [`super::Task::recorded`] and [`super::Task::record_until`], never
    /// carried.
    pub const RECORDED: &str = "recorded";
    /// Reserved (written by redrive): in a dead letter, the producer's own fields as a JSON
    /// object (kept apart from the dead-letter fields so that their names cannot collide).
    pub const EXTRA: &str = "extra";
    /// Reserved (written by redrive's recovery loop): a retry item that could not be decoded.
    pub const UNREADABLE_RETRY: &str = "unreadable_retry";

    /// Every field name with a meaning to redrive: the contract's fields and the reserved
    /// ones. A producer's own fields must use other names.
    pub const KNOWN: [&str; 21] = [
        TASK_ID,
        TENANT,
        KIND,
        PAYLOAD,
        ATTEMPT,
        ENQUEUED_AT,
        SCHEMA_VERSION,
        PROMPT_VERSION,
        TRACE_ID,
        DEADLINE,
        FIRST_ENQUEUED_AT,
        STEPS,
        RECORDED_STEPS,
        HISTORY,
        REPLAY_OF,
        REPLAYED_BY,
        EXTRA_DROPPED,
        FROM_ENTRY,
        RECORDED,
        EXTRA,
        UNREADABLE_RETRY,
    ];
}

/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest kind accepted.
pub const MAX_KIND_LEN: usize = 64;
/// Longest task id accepted.
pub const MAX_TASK_ID_LEN: usize = 128;
/// Longest prompt version or trace id accepted, in characters (Unicode scalar values).
pub const MAX_META_LEN: usize = 128;
/// Most producer-own fields carried with a task.
pub const MAX_EXTRA_FIELDS: usize = 16;
/// Longest producer-own field name, in bytes.
pub const MAX_EXTRA_NAME_LEN: usize = 64;
/// Most bytes of producer-own fields carried with a task (names plus values).
pub const MAX_EXTRA_BYTES: usize = 4096;
/// Longest `extra_dropped` record kept, in bytes.
pub const MAX_EXTRA_DROPPED_LEN: usize = 512;
/// How many attempt records a task carries at most (the oldest are dropped first).
pub const MAX_HISTORY: usize = 5;

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload accepted, in bytes of its JSON text.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// ASCII letters, digits, '_' and '-': the characters every name may use.
const NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

fn check_name(what: &str, value: &str, max: usize, extra: &[char]) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > max {
        return Err(format!(
            "{what} '{}…' is {} bytes long; the limit is {max}",
            value.chars().take(16).collect::<String>(),
            value.len()
        ));
    }
    // Bytes, not chars: every allowed character is ASCII, and this runs for every name of
    // every task read, so the common set is one table lookup.
    let allowed = |b: u8| NAME_BYTES[b as usize] || (b.is_ascii() && extra.contains(&(b as char)));
    if let Some(bad) = value
        .bytes()
        .position(|b| !allowed(b))
        .and_then(|i| value[i..].chars().next())
    {
        return Err(format!(
            "{what} '{value}' contains {bad:?}; allowed are ASCII letters, digits, '_', '-'{}",
            extra.iter().map(|c| format!(", '{c}'")).collect::<String>()
        ));
    }
    Ok(())
}

/// Checks a tenant name: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    check_name("tenant", tenant, MAX_TENANT_LEN, &['.'])
}

/// Checks a kind: 1 to 64 of `A-Z a-z 0-9 _ - . : /`.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    check_name("kind", kind, MAX_KIND_LEN, &['.', ':', '/'])
}

/// Checks a task id: 1 to 128 of `A-Z a-z 0-9 _ - . : / @ + =`.
pub fn validate_task_id(task_id: &str) -> Result<(), String> {
    check_name(
        "task_id",
        task_id,
        MAX_TASK_ID_LEN,
        &['.', ':', '/', '@', '+', '='],
    )
}

/// Checks the name of a producer's own field: 1 to 64 of `A-Z a-z 0-9 _ - . : /`, and not a
/// name redrive gives a meaning to ([`field::KNOWN`]).
pub fn validate_extra_name(name: &str) -> Result<(), String> {
    check_name(
        "extra field name",
        name,
        MAX_EXTRA_NAME_LEN,
        &['.', ':', '/'],
    )?;
    if field::KNOWN.contains(&name) {
        return Err(format!(
            "extra field name '{name}' is reserved: it is a contract field or written by redrive"
        ));
    }
    Ok(())
}

/// Checks a producer's own fields against the limits: each name valid, at most
/// [`MAX_EXTRA_FIELDS`] of them and [`MAX_EXTRA_BYTES`] of names plus values.
pub fn validate_extras<'a>(
    extras: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let (mut count, mut bytes) = (0usize, 0usize);
    for (name, value) in extras {
        validate_extra_name(name)?;
        count += 1;
        bytes += name.len() + value.len();
    }
    if count > MAX_EXTRA_FIELDS {
        return Err(format!(
            "{count} extra fields; the limit is {MAX_EXTRA_FIELDS}"
        ));
    }
    if bytes > MAX_EXTRA_BYTES {
        return Err(format!(
            "extra fields are {bytes} bytes (names and values); the limit is {MAX_EXTRA_BYTES}"
        ));
    }
    Ok(())
}

/// Collects a raw entry's own fields the way they are carried: in entry order, those that fit
/// the limits; the rest are named, with the reason, in the `extra_dropped` record. Never fails:
/// a foreign producer's task is never refused for its metadata.
#[derive(Debug, Default)]
struct Extras {
    kept: Vec<(String, String)>,
    bytes: usize,
    dropped: Vec<String>,
}

impl Extras {
    fn offer(&mut self, name: &[u8], value: &[u8]) {
        let shown = || {
            let n = String::from_utf8_lossy(name);
            format!(
                "{:?}",
                n.chars().take(MAX_EXTRA_NAME_LEN).collect::<String>()
            )
        };
        let why = match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Err(_), _) => Some("name is not UTF-8".to_owned()),
            (Ok(n), v) => match validate_extra_name(n) {
                Err(_) if field::KNOWN.contains(&n) => Some("reserved name".to_owned()),
                Err(_) => Some("name breaks the name rule".to_owned()),
                Ok(()) => match v {
                    Err(_) => Some("value is not UTF-8 text".to_owned()),
                    Ok(_) if self.kept.iter().any(|(k, _)| k == n) => {
                        Some("repeated name".to_owned())
                    }
                    Ok(_) if self.kept.len() >= MAX_EXTRA_FIELDS => {
                        Some(format!("over {MAX_EXTRA_FIELDS} fields"))
                    }
                    Ok(v) if self.bytes + n.len() + v.len() > MAX_EXTRA_BYTES => {
                        Some(format!("over {MAX_EXTRA_BYTES} bytes"))
                    }
                    Ok(v) => {
                        self.bytes += n.len() + v.len();
                        self.kept.push((n.to_owned(), v.to_owned()));
                        None
                    }
                },
            },
        };
        if let Some(why) = why {
            self.dropped.push(format!("{} ({why})", shown()));
        }
    }

    /// The `extra_dropped` record: an earlier one (carried from a previous attempt) first, then
    /// this read's, bounded.
    fn record(&self, earlier: Option<&str>) -> Option<String> {
        let mut parts: Vec<&str> = earlier.into_iter().filter(|e| !e.is_empty()).collect();
        let now = self.dropped.join(", ");
        if !now.is_empty() {
            parts.push(&now);
        }
        if parts.is_empty() {
            return None;
        }
        Some(cut(&parts.join("; "), MAX_EXTRA_DROPPED_LEN))
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with "...".
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn validate_meta(what: &str, value: &str) -> Result<(), String> {
    // Characters, not bytes: the contract promises 128 characters, and a multi-byte character
    // is one of them. Only counted when the bytes could exceed the limit.
    if value.len() > MAX_META_LEN {
        let chars = value.chars().count();
        if chars > MAX_META_LEN {
            return Err(format!(
                "{what} is {chars} characters; the limit is {MAX_META_LEN}"
            ));
        }
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// Checks a payload's JSON text against the size limit and the JSON grammar.
pub fn validate_payload(payload: &str, limits: &Limits) -> Result<(), String> {
    if payload.len() > limits.max_payload_bytes {
        return Err(format!(
            "payload is {} bytes; the limit is {} (limits.max_payload_bytes)",
            payload.len(),
            limits.max_payload_bytes
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| format!("payload is not valid JSON: {e}"))
}

/// A new 128-bit random task id, as 32 lowercase hex digits.
pub fn generate_task_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The current wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a producer submits: the contract's producer-facing fields. Also the shape of one line of
/// `redrive enqueue --file` input; unknown fields are rejected so that typos are not silently lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The tenant the task belongs to.
    pub tenant: String,
    /// The agent or workflow name.
    pub kind: String,
    /// The task's input.
    pub payload: serde_json::Value,
    /// Idempotency key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Version of the payload schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Version of the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_version: Option<String>,
    /// Trace id for correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Deadline, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The producer's own fields (tool version, environment, log links…), carried through
    /// retries, deferrals and replays and shown in dead letters. At most `MAX_EXTRA_FIELDS`
    /// of them, `MAX_EXTRA_BYTES` in all, names by `validate_extra_name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl NewTask {
    /// A task with the three required fields; the rest can be set on the returned value.
    pub fn new(
        tenant: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewTask {
            tenant: tenant.into(),
            kind: kind.into(),
            payload,
            task_id: None,
            schema_version: None,
            prompt_version: None,
            trace_id: None,
            deadline: None,
            extra: BTreeMap::new(),
        }
    }

    /// Adds one of the producer's own fields.
    pub fn with_extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_task_id(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// Validates every field and produces the first attempt of the task, enqueued at `now_ms`.
    #[doc(hidden)]
    pub fn into_task(self, limits: &Limits, now_ms: u64) -> Result<Task> {
        let invalid = Error::InvalidTask;
        validate_tenant(&self.tenant).map_err(invalid)?;
        validate_kind(&self.kind).map_err(invalid)?;
        let task_id = match self.task_id {
            Some(id) => {
                validate_task_id(&id).map_err(invalid)?;
                id
            }
            None => generate_task_id(),
        };
        let payload = serde_json::to_string(&self.payload)
            .map_err(|e| Error::InvalidTask(format!("payload cannot be encoded: {e}")))?;
        if payload.len() > limits.max_payload_bytes {
            return Err(Error::InvalidTask(format!(
                "payload is {} bytes; the limit is {} (limits.max_payload_bytes)",
                payload.len(),
                limits.max_payload_bytes
            )));
        }
        for (what, v) in [
            ("prompt_version", &self.prompt_version),
            ("trace_id", &self.trace_id),
        ] {
            if let Some(v) = v {
                validate_meta(what, v).map_err(invalid)?;
            }
        }
        validate_extras(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(invalid)?;
        Ok(Task {
            task_id,
            tenant: self.tenant,
            kind: self.kind,
            payload,
            attempt: 1,
            enqueued_at_ms: now_ms,
            first_enqueued_at_ms: now_ms,
            schema_version: self.schema_version,
            prompt_version: self.prompt_version,
            trace_id: self.trace_id,
            deadline_ms: self.deadline,
            steps: Vec::new(),
            history: Vec::new(),
            replay_of: None,
            replayed_by: None,
            extra: self.extra.into_iter().collect(),
            extra_dropped: None,
            recorded: false,
            record_until: 0,
        })
    }
}

/// One earlier failed attempt, carried with the task into its retries and its dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    /// The attempt number that failed.
    pub attempt: u32,
    /// The failure class, in its wire name.
    pub class: String,
    /// The error message (bounded).
    pub error: String,
    /// When the attempt ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// How long the attempt ran.
    pub duration_ms: u64,
    /// The fleet member that ran it.
    pub member: String,
}

/// A task as read from a lane and handed to a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Idempotency key, stable across retries and replays.
    pub task_id: String,
    /// The tenant.
    pub tenant: String,
    /// The agent or workflow name.
    pub kind: String,
    /// The payload's JSON text, validated to parse.
    pub payload: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When this attempt was enqueued, ms since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// When the first attempt was enqueued.
    pub first_enqueued_at_ms: u64,
    /// Version of the payload schema.
    pub schema_version: Option<u32>,
    /// Version of the prompt.
    pub prompt_version: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Deadline, ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
    /// Steps recorded by earlier attempts (checkpoints with their outputs).
    pub steps: Vec<Step>,
    /// The last failed attempts, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The dead-letter id this task was replayed from.
    pub replay_of: Option<String>,
    /// The operator who replayed it.
    pub replayed_by: Option<String>,
    /// The producer's own fields, in entry order, within the limits.
    pub extra: Vec<(String, String)>,
    /// Which of the producer's own fields were not carried, and why.
    pub extra_dropped: Option<String>,
    /// Whether the script that appended this entry wrote the task's record with it (the
    /// reserved field `recorded`): a fresh start then marks it running without reading it.
    /// Never written back by [`Task::to_fields`].
    pub recorded: bool,
    /// When the record written with this entry expires (ms, server clock; enqueue.lua gives
    /// it the retention plus an eighth): its done can go to the done log without a record
    /// write while this still covers the retention. 0: not known (no expiry set with it).
    pub record_until: u64,
}

/// Why a stream entry could not be read as a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// A one-line explanation naming the offending field.
    pub reason: String,
    /// The task id, if the entry had a readable one.
    pub task_id: Option<String>,
}

fn parse_ms_of_entry_id(entry_id: &str) -> u64 {
    entry_id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// A task's fields as written to a lane entry or a retry item: names (static for the
/// contract's, owned for the producer's own) and values.
pub type TaskFields = Vec<(Cow<'static, str>, String)>;

/// Where the fields [`Task::parse`] reads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A lane entry: the producer's own fields are the entry's other fields.
    Lane,
    /// A dead letter: its own fields are ignored; the producer's are in `extra` (JSON).
    DeadLetter,
}

/// Reads a non-negative decimal integer: ASCII digits only (no sign, no spaces, no exponent).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Task {
    /// Parses the payload into a caller-chosen type.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.payload)
    }

    /// The contract's and the reserved fields, without the producer's own ones, in the order
    /// they are written. A dead letter writes these plus the own fields as one `extra` field.
    pub(crate) fn contract_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::with_capacity(16);
        f.push((field::TASK_ID, self.task_id.clone()));
        f.push((field::TENANT, self.tenant.clone()));
        f.push((field::KIND, self.kind.clone()));
        f.push((field::PAYLOAD, self.payload.clone()));
        f.push((field::ATTEMPT, self.attempt.to_string()));
        f.push((field::ENQUEUED_AT, self.enqueued_at_ms.to_string()));
        if self.first_enqueued_at_ms != self.enqueued_at_ms {
            f.push((
                field::FIRST_ENQUEUED_AT,
                self.first_enqueued_at_ms.to_string(),
            ));
        }
        if let Some(v) = self.schema_version {
            f.push((field::SCHEMA_VERSION, v.to_string()));
        }
        if let Some(v) = &self.prompt_version {
            f.push((field::PROMPT_VERSION, v.clone()));
        }
        if let Some(v) = &self.trace_id {
            f.push((field::TRACE_ID, v.clone()));
        }
        if let Some(v) = self.deadline_ms {
            f.push((field::DEADLINE, v.to_string()));
        }
        if !self.steps.is_empty() {
            f.push((
                field::STEPS,
                serde_json::to_string(&self.steps).unwrap_or_default(),
            ));
        }
        if !self.history.is_empty() {
            f.push((
                field::HISTORY,
                serde_json::to_string(&self.history).unwrap_or_default(),
            ));
        }
        if let Some(v) = &self.replay_of {
            f.push((field::REPLAY_OF, v.clone()));
        }
        if let Some(v) = &self.replayed_by {
            f.push((field::REPLAYED_BY, v.clone()));
        }
        if let Some(v) = &self.extra_dropped {
            f.push((field::EXTRA_DROPPED, v.clone()));
        }
        f
    }

    /// The producer's own fields as the JSON object a dead letter keeps in `extra`, or `None`
    /// when there are none.
    pub(crate) fn extra_json(&self) -> Option<String> {
        if self.extra.is_empty() {
            return None;
        }
        let map: serde_json::Map<String, serde_json::Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        Some(serde_json::Value::Object(map).to_string())
    }

    /// The lane entry's fields, in the order they are written: [`Task::contract_fields`], then
    /// the producer's own fields. Every path that writes a task to a lane or to the retry
    /// schedule (enqueue, retries, replays) goes through here, so the own fields travel with it.
    #[doc(hidden)]
    pub fn to_fields(&self) -> TaskFields {
        let mut f: TaskFields = self
            .contract_fields()
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect();
        f.extend(
            self.extra
                .iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
        );
        f
    }

    /// The retry schedule item's fields for this task, read from lane entry `from_entry`:
    /// [`Task::to_fields`] without `enqueued_at` (the recovery loop stamps it when the item is
    /// due), with `first_enqueued_at` always present and `from_entry` last, so that two entries
    /// of identical tasks (a repeated `task_id`) never become one schedule item.
    pub(crate) fn retry_fields(&self, from_entry: &str) -> TaskFields {
        let mut f: TaskFields = self
            .to_fields()
            .into_iter()
            .filter(|(k, _)| k != field::ENQUEUED_AT && k != field::FIRST_ENQUEUED_AT)
            .collect();
        f.push((
            Cow::Borrowed(field::FIRST_ENQUEUED_AT),
            self.first_enqueued_at_ms.to_string(),
        ));
        f.push((Cow::Borrowed(field::FROM_ENTRY), from_entry.to_owned()));
        f
    }

    /// Reads a task from the fields of entry `entry_id` in `lane_tenant`'s lane.
    ///
    /// Missing `task_id` falls back to `x-<entry id>` (stable for the entry's life), missing
    /// `attempt` to 1, missing `enqueued_at` to the entry id's time, missing `tenant` to the
    /// lane's tenant. Reserved fields are read as redrive's own, whoever wrote them. Any other
    /// field is the producer's own: carried within the limits, the rest recorded in
    /// `extra_dropped` (never a reason to refuse the task).
    pub(crate) fn from_fields(
        lane_tenant: &str,
        entry_id: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &Limits,
    ) -> Result<Task, Malformed> {
        Task::parse(lane_tenant, entry_id, fields, limits, Source::Lane)
    }

    /// Reads the task kept in a dead letter's fields (`orig_id` is the lane entry it came
    /// from): the dead letter's own fields are ignored and the producer's own fields come from
    /// its `extra` field.
    pub(crate) fn from_dead_letter(
        lane_tenant: &str,
        orig_id: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &Limits,
    ) -> Result<Task, Malformed> {
        Task::parse(lane_tenant, orig_id, fields, limits, Source::DeadLetter)
    }

    fn parse(
        lane_tenant: &str,
        entry_id: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &Limits,
        source: Source,
    ) -> Result<Task, Malformed> {
        let mut task_id: Option<&str> = None;
        let mut tenant: Option<&str> = None;
        let mut kind: Option<&str> = None;
        let mut payload: Option<&str> = None;
        let mut attempt: Option<&str> = None;
        let mut enqueued_at: Option<&str> = None;
        let mut first_enqueued_at: Option<&str> = None;
        let mut schema_version: Option<&str> = None;
        let mut prompt_version: Option<&str> = None;
        let mut trace_id: Option<&str> = None;
        let mut deadline: Option<&str> = None;
        let mut steps: Option<&str> = None;
        let mut recorded_steps: Option<&str> = None;
        let mut history: Option<&str> = None;
        let mut replay_of: Option<&str> = None;
        let mut replayed_by: Option<&str> = None;
        let mut recorded = false;
        let mut record_until = 0u64;
        let mut extra_dropped: Option<&str> = None;
        let mut extra_json: Option<&str> = None;
        let mut extras = Extras::default();
        let mut bad: Option<String> = None;
        for (name, value) in fields {
            let slot = match name.as_slice() {
                b"task_id" => &mut task_id,
                b"tenant" => &mut tenant,
                b"kind" => &mut kind,
                b"payload" => &mut payload,
                b"attempt" => &mut attempt,
                b"enqueued_at" => &mut enqueued_at,
                b"first_enqueued_at" => &mut first_enqueued_at,
                b"schema_version" => &mut schema_version,
                b"prompt_version" => &mut prompt_version,
                b"trace_id" => &mut trace_id,
                b"deadline" => &mut deadline,
                b"steps" => &mut steps,
                b"recorded_steps" => &mut recorded_steps,
                b"history" => &mut history,
                b"replay_of" => &mut replay_of,
                b"replayed_by" => &mut replayed_by,
                b"extra_dropped" => &mut extra_dropped,
                // Written by redrive to keep schedule items apart; nothing to carry.
                b"from_entry" => continue,
                // Written by redrive's scripts: a flag of this entry, never carried.
                b"recorded" => {
                    // '1', or the record's expiry in ms (enqueue.lua).
                    if let Some(ms) = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|ms| *ms >= 1)
                    {
                        recorded = true;
                        record_until = if ms > 1 { ms } else { 0 };
                    }
                    continue;
                }
                b"extra" if source == Source::DeadLetter => &mut extra_json,
                _ => {
                    if source == Source::Lane {
                        extras.offer(name, value);
                    }
                    continue;
                }
            };
            match std::str::from_utf8(value) {
                Ok(s) => *slot = Some(s),
                Err(_) => {
                    bad.get_or_insert_with(|| {
                        format!(
                            "field '{}' is not valid UTF-8",
                            String::from_utf8_lossy(name)
                        )
                    });
                }
            }
        }
        let readable_id = task_id
            .filter(|id| validate_task_id(id).is_ok())
            .map(str::to_owned);
        let fail = |reason: String| Malformed {
            reason,
            task_id: readable_id.clone(),
        };
        if let Some(reason) = bad {
            return Err(fail(reason));
        }
        let task_id = match task_id {
            Some(id) => {
                validate_task_id(id).map_err(&fail)?;
                id.to_owned()
            }
            None => format!("x-{entry_id}"),
        };
        let tenant = match tenant {
            Some(t) => {
                validate_tenant(t).map_err(&fail)?;
                if t != lane_tenant {
                    return Err(fail(format!(
                        "tenant field '{t}' does not match the lane's tenant '{lane_tenant}'"
                    )));
                }
                t.to_owned()
            }
            None => lane_tenant.to_owned(),
        };
        let kind = kind.ok_or_else(|| fail("missing field 'kind'".into()))?;
        validate_kind(kind).map_err(&fail)?;
        let payload = payload.ok_or_else(|| fail("missing field 'payload'".into()))?;
        validate_payload(payload, limits).map_err(&fail)?;
        let num = |what: &str, v: Option<&str>| -> Result<Option<u64>, Malformed> {
            v.map(|s| {
                parse_decimal(s).ok_or_else(|| {
                    fail(format!(
                        "field '{what}' is not a non-negative decimal integer below 2^64: '{}'",
                        cut(s, 32)
                    ))
                })
            })
            .transpose()
        };
        let attempt = match num(field::ATTEMPT, attempt)? {
            None => 1,
            Some(a) if (1..=u32::MAX as u64).contains(&a) => a as u32,
            Some(a) => return Err(fail(format!("field 'attempt' is out of range: {a}"))),
        };
        let enqueued_at_ms =
            num(field::ENQUEUED_AT, enqueued_at)?.unwrap_or_else(|| parse_ms_of_entry_id(entry_id));
        let first_enqueued_at_ms =
            num(field::FIRST_ENQUEUED_AT, first_enqueued_at)?.unwrap_or(enqueued_at_ms);
        let schema_version = match num(field::SCHEMA_VERSION, schema_version)? {
            None => None,
            Some(v) => Some(u32::try_from(v).map_err(|_| {
                fail(format!(
                    "field 'schema_version' is out of range: {v} (0 to 4294967295)"
                ))
            })?),
        };
        for (what, v) in [
            (field::PROMPT_VERSION, &prompt_version),
            (field::TRACE_ID, &trace_id),
            (field::REPLAY_OF, &replay_of),
            (field::REPLAYED_BY, &replayed_by),
        ] {
            if let Some(v) = v {
                validate_meta(what, v).map_err(&fail)?;
            }
        }
        let deadline_ms = num(field::DEADLINE, deadline)?;
        let mut steps: Vec<Step> = match steps {
            None => Vec::new(),
            Some(s) => parse_steps(s).map_err(&fail)?,
        };
        if let Some(s) = recorded_steps {
            let recorded = parse_steps(s)
                .map_err(|e| fail(e.replacen("field 'steps'", "field 'recorded_steps'", 1)))?;
            merge_steps(&mut steps, recorded);
        }
        let history: Vec<AttemptRecord> = match history {
            None => Vec::new(),
            Some(s) => serde_json::from_str(s).map_err(|e| {
                fail(format!(
                    "field 'history' is not a JSON array of attempt records: {e}"
                ))
            })?,
        };
        if let Some(json) = extra_json {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                .map_err(|e| fail(format!("field 'extra' is not a JSON object: {e}")))?;
            for (k, v) in &map {
                match v {
                    serde_json::Value::String(v) => extras.offer(k.as_bytes(), v.as_bytes()),
                    _ => extras
                        .dropped
                        .push(format!("{k:?} (value is not a JSON string)")),
                }
            }
        }
        let extra_dropped = extras.record(extra_dropped);
        Ok(Task {
            task_id,
            tenant,
            kind: kind.to_owned(),
            payload: payload.to_owned(),
            attempt,
            enqueued_at_ms,
            first_enqueued_at_ms,
            schema_version,
            prompt_version: prompt_version.map(str::to_owned),
            trace_id: trace_id.map(str::to_owned),
            deadline_ms,
            steps,
            history,
            replay_of: replay_of.map(str::to_owned),
            replayed_by: replayed_by.map(str::to_owned),
            extra: extras.kept,
            extra_dropped,
            recorded,
            record_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn round_trip_through_fields() {
        let mut task = NewTask::new("acme", "triage", serde_json::json!({"ticket": 7}))
            .with_task_id("t-1")
            .into_task(&Limits::default(), 1_000)
            .unwrap();
        task.steps = vec![Step::completed("fetch", serde_json::json!({"n": 1}))];
        task.trace_id = Some("abc".into());
        let wire = task
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        let wire: Vec<_> = wire;
        let back = Task::from_fields("acme", "1000-0", &wire, &Limits::default()).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn minimal_raw_entry_gets_defaults() {
        let t = Task::from_fields(
            "acme",
            "1700000000000-3",
            &fields(&[("kind", "k"), ("payload", "{}")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(t.task_id, "x-1700000000000-3");
        assert_eq!(t.tenant, "acme");
        assert_eq!(t.attempt, 1);
        assert_eq!(t.enqueued_at_ms, 1_700_000_000_000);
    }

    #[test]
    fn malformed_entries_are_explained() {
        let limits = Limits {
            max_payload_bytes: 10,
        };
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("payload", "{}")], "missing field 'kind'"),
            (&[("kind", "k")], "missing field 'payload'"),
            (&[("kind", "k"), ("payload", "{nope")], "not valid JSON"),
            (
                &[("kind", "k"), ("payload", "[1,2,3,4,5,6,7]")],
                "limit is 10",
            ),
            (
                &[("kind", "k"), ("payload", "{}"), ("tenant", "other")],
                "does not match",
            ),
            (
                &[("kind", "k"), ("payload", "{}"), ("tenant", "b{a}d")],
                "contains '{'",
            ),
            (
                &[("kind", "k"), ("payload", "{}"), ("attempt", "-1")],
                "attempt",
            ),
            (&[("kind", "k k"), ("payload", "{}")], "kind 'k k'"),
        ];
        for (f, want) in cases {
            let err = Task::from_fields("acme", "1-0", &fields(f), &limits).unwrap_err();
            assert!(err.reason.contains(want), "{f:?}: {}", err.reason);
        }
    }

    #[test]
    fn producer_input_is_validated() {
        let limits = Limits {
            max_payload_bytes: 16,
        };
        let bad_tenant = NewTask::new("a b", "k", serde_json::json!({})).into_task(&limits, 0);
        assert!(matches!(bad_tenant, Err(Error::InvalidTask(m)) if m.contains("tenant 'a b'")));
        let long = NewTask::new("a", "k", serde_json::json!({"x": "0123456789abcdef"}))
            .into_task(&limits, 0);
        assert!(matches!(long, Err(Error::InvalidTask(m)) if m.contains("limit is 16")));
        let unknown = serde_json::from_str::<NewTask>(
            r#"{"tenant":"a","kind":"k","payload":{},"tenat":"x"}"#,
        );
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `tenat`"));
        let id = NewTask::new("a", "k", serde_json::json!(1))
            .into_task(&limits, 0)
            .unwrap()
            .task_id;
        assert_eq!(id.len(), 32);
        assert!(validate_tenant(&"x".repeat(65)).is_err());
    }

    fn raw(pairs: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Task, Malformed> {
        let mut f = fields(&[("kind", "k"), ("payload", "{}")]);
        f.extend(fields(pairs));
        Task::from_fields("acme", "1-0", &f, &Limits::default())
    }

    fn produce(t: NewTask) -> Result<Task> {
        t.into_task(&Limits::default(), 0)
    }

    /// prompt_version and trace_id: at most 128 characters, counted as characters, whatever
    /// their bytes; control characters refused.
    #[test]
    fn meta_limits_count_characters_not_bytes() {
        for (unit, n, ok) in [
            ("a", 127, true),
            ("a", 128, true),
            ("a", 129, false),
            ("é", 127, true),
            ("é", 128, true),
            ("é", 129, false),
            ("🦀", 128, true),
            ("🦀", 129, false),
        ] {
            let v = unit.repeat(n);
            for name in ["prompt_version", "trace_id"] {
                let got = read(&[(name, &v)]);
                assert_eq!(got.is_ok(), ok, "{name} = {n} × {unit:?}: {got:?}");
                if let Err(m) = got {
                    assert!(
                        m.reason.contains("129 characters; the limit is 128"),
                        "{m:?}"
                    );
                }
            }
            let mut t = NewTask::new("acme", "k", serde_json::json!({}));
            t.prompt_version = Some(v.clone());
            assert_eq!(produce(t.clone()).is_ok(), ok, "producer: {n} × {unit:?}");
            t.prompt_version = None;
            t.trace_id = Some(v);
            assert_eq!(produce(t).is_ok(), ok, "producer trace_id: {n} × {unit:?}");
        }
        assert!(read(&[("prompt_version", "v1\nv2")]).is_err());
        assert!(read(&[("prompt_version", "")]).is_ok());
    }

    /// schema_version: a decimal integer from 0 to 2^32 − 1.
    #[test]
    fn schema_version_is_0_to_2_pow_32_minus_1() {
        assert_eq!(
            read(&[("schema_version", "0")]).unwrap().schema_version,
            Some(0)
        );
        assert_eq!(
            read(&[("schema_version", "4294967295")])
                .unwrap()
                .schema_version,
            Some(u32::MAX)
        );
        for bad in ["4294967296", "-1", "+5", "1.0", " 7", "", "1e3"] {
            let m = read(&[("schema_version", bad)]).unwrap_err();
            assert!(m.reason.contains("schema_version"), "{bad:?}: {m:?}");
        }
        let line = |v: &str| {
            serde_json::from_str::<NewTask>(&format!(
                r#"{{"tenant":"a","kind":"k","payload":{{}},"schema_version":{v}}}"#
            ))
        };
        assert_eq!(line("4294967295").unwrap().schema_version, Some(u32::MAX));
        assert!(line("4294967296").is_err());
        assert!(line("-1").is_err());
    }

    /// A bare JSON scalar (or array) is a valid payload and reaches the handler as it is.
    #[test]
    fn scalar_payloads_are_tasks() {
        for p in ["42", "\"x\"", "null", "true", "[1,2]", " 7 "] {
            assert_eq!(read(&[("payload", p)]).unwrap().payload, p);
        }
        let t = produce(NewTask::new("acme", "k", serde_json::json!(42))).unwrap();
        assert_eq!(t.payload, "42");
        assert!(read(&[("payload", "42 43")]).is_err());
    }

    /// Reserved fields are read as redrive's own whoever wrote them; an unreadable one makes
    /// the entry malformed.
    #[test]
    fn reserved_fields_set_by_a_producer_are_taken_as_redrives() {
        let t = read(&[
            ("steps", r#"["fetch"]"#),
            ("first_enqueued_at", "5"),
            ("attempt", "3"),
            ("replay_of", "1-0"),
        ])
        .unwrap();
        assert_eq!(step_names(&t.steps), ["fetch"]);
        assert_eq!((t.first_enqueued_at_ms, t.attempt), (5, 3));
        assert_eq!(t.replay_of.as_deref(), Some("1-0"));
        assert!(t.extra.is_empty());
        for (name, v) in [
            ("history", "oops"),
            ("steps", "{}"),
            ("first_enqueued_at", "x"),
        ] {
            let m = read(&[(name, v)]).unwrap_err();
            assert!(m.reason.contains(name), "{name}: {m:?}");
        }
        // `from_entry` is redrive's bookkeeping, never carried; `extra` on a lane is refused
        // as a name and recorded.
        let t = read(&[("from_entry", "9-9"), ("extra", "{}")]).unwrap();
        assert!(t.extra.is_empty());
        assert_eq!(
            t.extra_dropped.as_deref(),
            Some("\"extra\" (reserved name)")
        );
        let e =
            produce(NewTask::new("acme", "k", serde_json::json!({})).with_extra("history", "[]"))
                .unwrap_err();
        assert!(e.to_string().contains("'history' is reserved"), "{e}");
    }

    /// A raw entry's own fields are carried in entry order within the limits; the rest are
    /// recorded in `extra_dropped`, and the task is never refused for them.
    #[test]
    fn own_fields_are_carried_within_the_limits() {
        let mut f = raw(&[
            (b"kind", b"k"),
            (b"tool_version", b"1.4.2"),
            (b"payload", b"{}"),
            (b"log_url", b"https://logs.example/run/7"),
            (b"bin", b"\xff\x00"),
            (b"\xfe", b"x"),
            (b"bad name", b"x"),
            (b"tool_version", b"again"),
        ]);
        for i in 0..20 {
            f.push((format!("f{i:02}").into_bytes(), b"v".to_vec()));
        }
        let t = Task::from_fields("acme", "1-0", &f, &Limits::default()).unwrap();
        assert_eq!(t.extra.len(), MAX_EXTRA_FIELDS);
        assert_eq!(t.extra[0], ("tool_version".into(), "1.4.2".into()));
        assert_eq!(t.extra[1].0, "log_url");
        assert_eq!(t.extra[15].0, "f13");
        let dropped = t.extra_dropped.clone().unwrap();
        for want in [
            "\"bin\" (value is not UTF-8 text)",
            "\"\u{fffd}\" (name is not UTF-8)",
            "\"bad name\" (name breaks the name rule)",
            "\"tool_version\" (repeated name)",
            "\"f14\" (over 16 fields)",
            "\"f19\" (over 16 fields)",
        ] {
            assert!(dropped.contains(want), "{want} in {dropped}");
        }
        // The byte limit.
        let big = "x".repeat(MAX_EXTRA_BYTES - 4);
        let t = Task::from_fields(
            "acme",
            "1-0",
            &fields(&[("kind", "k"), ("payload", "{}"), ("a1", &big), ("a2", "y")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(t.extra.len(), 1);
        assert_eq!(t.extra_dropped.as_deref(), Some("\"a2\" (over 4096 bytes)"));
        // Carried by the retry item, as the recovery loop writes it back into the lane.
        let mut next = t.clone();
        next.attempt = 2;
        let mut wire: Vec<(Vec<u8>, Vec<u8>)> = next
            .retry_fields("1-0")
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        wire.push((b"enqueued_at".to_vec(), b"77".to_vec()));
        let back = Task::from_fields("acme", "2-0", &wire, &Limits::default()).unwrap();
        assert_eq!(back.extra, t.extra);
        assert_eq!(back.extra_dropped, t.extra_dropped);
        assert_eq!((back.attempt, back.enqueued_at_ms), (2, 77));
    }

    /// The producer API refuses what it would have to drop, with a clear error.
    #[test]
    fn producer_own_fields_are_validated() {
        let base = || NewTask::new("acme", "k", serde_json::json!({}));
        let t = produce(
            base()
                .with_extra("env", "prod")
                .with_extra("severity", "high"),
        )
        .unwrap();
        assert_eq!(
            t.extra,
            [
                ("env".into(), "prod".into()),
                ("severity".into(), "high".into())
            ]
        );
        let mut many = base();
        for i in 0..=MAX_EXTRA_FIELDS {
            many = many.with_extra(format!("f{i}"), "v");
        }
        let e = produce(many).unwrap_err().to_string();
        assert!(e.contains("17 extra fields; the limit is 16"), "{e}");
        let e = produce(base().with_extra("a", "x".repeat(MAX_EXTRA_BYTES)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4097 bytes (names and values); the limit is 4096"),
            "{e}"
        );
        assert!(produce(base().with_extra("a", "x".repeat(MAX_EXTRA_BYTES - 1))).is_ok());
        let e = produce(base().with_extra("bad name", "x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extra field name 'bad name' contains ' '"),
            "{e}"
        );
        let line = serde_json::from_str::<NewTask>(
            r#"{"tenant":"a","kind":"k","payload":{},"extra":{"env":"prod"}}"#,
        )
        .unwrap();
        assert_eq!(line.extra["env"], "prod");
    }

    /// Two entries of the same task (a repeated task_id, identical fields) make two schedule
    /// items, so neither can overwrite the other.
    #[test]
    fn retry_items_of_identical_tasks_differ() {
        let t = read(&[("task_id", "dup")]).unwrap();
        assert_ne!(t.retry_fields("1-0"), t.retry_fields("1-1"));
    }

    /// A dead letter's own fields are not the producer's: only `extra` is.
    #[test]
    fn a_dead_letter_reads_back_its_task_and_own_fields() {
        let t = read(&[("task_id", "t-1"), ("env", "prod"), ("class", "billing")]).unwrap();
        assert_eq!(t.extra.len(), 2);
        let mut f: Vec<(Vec<u8>, Vec<u8>)> = t
            .contract_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        f.extend(fields(&[
            ("class", "timeout"),
            ("error", "timed out"),
            ("extra", &t.extra_json().unwrap()),
        ]));
        let back = Task::from_dead_letter("acme", "1-0", &f, &Limits::default()).unwrap();
        // A dead letter keeps them as a JSON object, by name.
        let mut sorted = t.extra.clone();
        sorted.sort();
        assert_eq!(back.extra, sorted);
        assert_eq!(back.extra_dropped, None);
    }
}
