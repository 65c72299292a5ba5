//! The task contract: what a task looks like on the wire, its limits, and how it is validated.
//!
//! A task is one stream entry in its tenant's lane (see [`crate::keys`]). Its fields are flat
//! strings so that a producer in any language can publish one with a plain `XADD`; CONTRACT.md
//! is the reference for producers and this module is the code that enforces it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names of the stream-entry fields of a task.
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
    /// Reserved (written by redrive): JSON array of steps completed by earlier attempts.
    pub const STEPS: &str = "steps";
    /// Reserved (written by redrive): JSON array of the last attempts' errors.
    pub const HISTORY: &str = "history";
    /// Reserved (written by redrive): the dead-letter id this task was replayed from.
    pub const REPLAY_OF: &str = "replay_of";
    /// Reserved (written by redrive): the operator who replayed this task from a dead letter.
    pub const REPLAYED_BY: &str = "replayed_by";
}

/// Longest tenant name accepted.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest kind accepted.
pub const MAX_KIND_LEN: usize = 64;
/// Longest task id accepted.
pub const MAX_TASK_ID_LEN: usize = 128;
/// Longest prompt version or trace id accepted.
pub const MAX_META_LEN: usize = 128;
/// How many attempt records a task carries at most (the oldest are dropped first).
pub const MAX_HISTORY: usize = 5;
/// How many completed steps a task carries at most.
pub const MAX_STEPS: usize = 64;

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

fn validate_meta(what: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_META_LEN {
        return Err(format!(
            "{what} is {} bytes; the limit is {MAX_META_LEN}",
            value.len()
        ));
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
        }
    }

    /// Sets the idempotency key.
    pub fn with_task_id(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// Validates every field and produces the first attempt of the task, enqueued at `now_ms`.
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
    /// Steps completed by earlier attempts.
    pub steps: Vec<String>,
    /// The last failed attempts, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The dead-letter id this task was replayed from.
    pub replay_of: Option<String>,
    /// The operator who replayed it.
    pub replayed_by: Option<String>,
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

impl Task {
    /// Parses the payload into a caller-chosen type.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.payload)
    }

    /// The entry's fields, in the order they are written.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::with_capacity(14);
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
        f
    }

    /// Reads a task from the fields of entry `entry_id` in `lane_tenant`'s lane.
    ///
    /// Unknown fields are ignored, so producers may add their own. Missing `task_id` falls back
    /// to `x-<entry id>` (stable for the entry's life), missing `attempt` to 1, missing
    /// `enqueued_at` to the entry id's time, missing `tenant` to the lane's tenant.
    pub fn from_fields(
        lane_tenant: &str,
        entry_id: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        limits: &Limits,
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
        let mut history: Option<&str> = None;
        let mut replay_of: Option<&str> = None;
        let mut replayed_by: Option<&str> = None;
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
                b"history" => &mut history,
                b"replay_of" => &mut replay_of,
                b"replayed_by" => &mut replayed_by,
                _ => continue,
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
                s.parse::<u64>().map_err(|_| {
                    fail(format!(
                        "field '{what}' is not a non-negative integer: '{s}'"
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
            Some(v) => Some(
                u32::try_from(v)
                    .map_err(|_| fail(format!("field 'schema_version' is out of range: {v}")))?,
            ),
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
        let steps: Vec<String> = match steps {
            None => Vec::new(),
            Some(s) => serde_json::from_str(s)
                .map_err(|e| fail(format!("field 'steps' is not a JSON array of strings: {e}")))?,
        };
        let history: Vec<AttemptRecord> = match history {
            None => Vec::new(),
            Some(s) => serde_json::from_str(s).map_err(|e| {
                fail(format!(
                    "field 'history' is not a JSON array of attempt records: {e}"
                ))
            })?,
        };
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
        task.steps = vec!["fetch".into()];
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
}
