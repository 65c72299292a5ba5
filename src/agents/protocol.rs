//! The agent protocol's messages (PROTOCOL.md), shared by every transport: the request built
//! from a task, `traceparent`, the `Redrive-Signature` header, and the event and reply lines an
//! agent writes back, applied to the attempt's [`TaskContext`].

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::handler::{FailureClass, Outcome, TaskContext};
use crate::task::{AttemptRecord, Step, Task};

/// The protocol version requests carry.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// How many seconds a signature's `t` may differ from the verifier's clock.
#[cfg(any(test, feature = "testkit"))]
pub(crate) const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// The request body of one attempt (every key always present).
#[derive(Serialize)]
struct Request<'a> {
    protocol: u32,
    task_id: &'a str,
    tenant: &'a str,
    kind: &'a str,
    attempt: u32,
    max_attempts: u32,
    payload: &'a RawValue,
    steps: Vec<&'a Step>,
    history: &'a [AttemptRecord],
    deadline: Option<u64>,
    trace_id: Option<&'a str>,
    schema_version: Option<u32>,
    prompt_version: Option<&'a str>,
    enqueued_at: u64,
    first_enqueued_at: u64,
    replay_of: Option<&'a str>,
    extra: Map<String, Value>,
}

/// The JSON request for an attempt of `task`: its completed steps only (a started-but-open
/// step never reaches an agent), the payload byte-exact as the producer wrote it.
pub(crate) fn request_body(task: &Task, max_attempts: u32) -> Result<Vec<u8>, String> {
    let payload: &RawValue = serde_json::from_str(&task.payload)
        .map_err(|e| format!("the payload is not valid JSON: {e}"))?;
    let req = Request {
        protocol: PROTOCOL_VERSION,
        task_id: &task.task_id,
        tenant: &task.tenant,
        kind: &task.kind,
        attempt: task.attempt,
        max_attempts,
        payload,
        steps: task.steps.iter().filter(|s| s.done).collect(),
        history: &task.history,
        deadline: task.deadline_ms,
        trace_id: task.trace_id.as_deref(),
        schema_version: task.schema_version,
        prompt_version: task.prompt_version.as_deref(),
        enqueued_at: task.enqueued_at_ms,
        first_enqueued_at: task.first_enqueued_at_ms,
        replay_of: task.replay_of.as_deref(),
        extra: task
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    };
    serde_json::to_vec(&req).map_err(|e| format!("the request cannot be encoded: {e}"))
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// The W3C `traceparent` of an attempt: the task's `trace_id` as the trace id when it is one
/// (32 lowercase hex digits, not all zeros), else derived from it (or from the task id); the
/// parent id derived from the task id and the attempt.
pub(crate) fn traceparent(task_id: &str, attempt: u32, trace_id: Option<&str>) -> String {
    let trace = match trace_id {
        Some(t)
            if t.len() == 32
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && t.bytes().any(|b| b != b'0') =>
        {
            t.to_owned()
        }
        Some(t) if !t.is_empty() => sha256_hex(&format!("redrive:{t}"))[..32].to_owned(),
        _ => sha256_hex(&format!("redrive:{task_id}"))[..32].to_owned(),
    };
    let parent = &sha256_hex(&format!("redrive:{task_id}:{attempt}"))[..16];
    format!("00-{trace}-{parent}-01")
}

fn hmac_hex(secret: &str, t: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The `Redrive-Signature` header for `body` sent at unix second `t`: one `v1` per secret.
pub(crate) fn signature(secrets: &[String], t: u64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for s in secrets {
        let _ = write!(header, ",v1={}", hmac_hex(s, t, body));
    }
    header
}

/// Whether `header` signs `body` under one of `secrets` within the tolerance of `now` (unix
/// seconds). The SDKs implement the same; the fleet uses it in tests and for notifications'
/// receivers.
#[cfg(any(test, feature = "testkit"))]
pub(crate) fn verify_signature(secrets: &[String], header: &str, body: &[u8], now: u64) -> bool {
    let mut t: Option<u64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                t = v.parse().ok()
            }
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    secrets.iter().any(|s| {
        let want = hmac_hex(s, t, body);
        sigs.iter()
            .any(|got| constant_time_eq(want.as_bytes(), got.as_bytes()))
    })
}

#[cfg(any(test, feature = "testkit"))]
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An event line: what the agent reports during an attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A step begins.
    StepStarted { name: String, side_effect: bool },
    /// A step completed.
    StepDone { name: String, output: Value },
    /// A step ended without its side effect.
    StepFailed { name: String },
    /// Anything else the agent wants to show: kept as the partial output.
    Progress(Map<String, Value>),
}

/// The final reply line of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// `{"status":"ok","output":…}`.
    Ok { output: Value },
    /// `{"status":"fail",…}`; `class` is `None` when missing or not a class name.
    Fail {
        class: Option<FailureClass>,
        error: String,
        retry_after_ms: Option<u64>,
    },
}

/// One line an agent wrote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// An event.
    Event(Event),
    /// The final reply.
    Reply(Reply),
}

/// A parsed line with the request id it carries (stdio framing; `None` over HTTP).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Framed {
    /// The `id` key, when present and a string.
    pub id: Option<String>,
    /// The line.
    pub line: Line,
}

/// Parses one line (or a whole JSON reply body): an object with `status` (a reply) or `event`
/// (an event). Anything else is an error saying why.
pub(crate) fn parse_line(bytes: &[u8]) -> Result<Framed, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("not a JSON object".into());
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    if let Some(status) = obj.get("status") {
        let reply = match status.as_str() {
            Some("ok") => Reply::Ok {
                output: obj.remove("output").unwrap_or(Value::Null),
            },
            Some("fail") => Reply::Fail {
                class: obj
                    .get("class")
                    .and_then(Value::as_str)
                    .and_then(FailureClass::parse),
                error: match obj.get("error") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                },
                retry_after_ms: obj.get("retry_after_ms").and_then(Value::as_u64),
            },
            _ => return Err(format!("'status' is {status}, not \"ok\" or \"fail\"")),
        };
        return Ok(Framed {
            id,
            line: Line::Reply(reply),
        });
    }
    let name = |obj: &Map<String, Value>| -> Result<String, String> {
        match obj.get("name") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err("a step event without a string 'name'".into()),
        }
    };
    let event = match obj.get("event").and_then(Value::as_str) {
        Some("step_started") => Event::StepStarted {
            name: name(&obj)?,
            side_effect: obj
                .get("side_effect")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        Some("step_done") => Event::StepDone {
            name: name(&obj)?,
            output: obj.remove("output").unwrap_or(Value::Null),
        },
        Some("step_failed") => Event::StepFailed { name: name(&obj)? },
        Some("progress") => {
            obj.remove("event");
            Event::Progress(obj)
        }
        Some(other) => return Err(format!("unknown event {other:?}")),
        None => return Err("neither 'status' nor 'event'".into()),
    };
    Ok(Framed {
        id,
        line: Line::Event(event),
    })
}

/// Applies an event to the attempt's context. An error is a refused step (its limits): the
/// attempt fails as `schema_mismatch` when it concludes.
pub(crate) fn apply_event(ctx: &TaskContext, event: Event) -> Result<(), String> {
    match event {
        Event::StepStarted { name, side_effect } => ctx.step_started(&name, side_effect),
        Event::StepDone { name, output } => ctx.step_done(&name, output),
        Event::StepFailed { name } => ctx.step_failed(&name),
        Event::Progress(map) => {
            ctx.partial_output(Value::Object(map));
            Ok(())
        }
    }
}

/// The outcome a final reply stands for; an ok reply's output goes to the context. A fail
/// without a known class is an [`Outcome::Error`]: the fleet classifies its text.
pub(crate) fn reply_outcome(ctx: &TaskContext, reply: Reply) -> Outcome {
    match reply {
        Reply::Ok { output } => {
            ctx.output(output);
            Outcome::Done
        }
        Reply::Fail {
            class: Some(class),
            error,
            retry_after_ms,
        } => Outcome::Fail {
            class,
            reason: error,
            retry_after: retry_after_ms.map(std::time::Duration::from_millis),
        },
        Reply::Fail {
            class: None, error, ..
        } => Outcome::Error { message: error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(name: &str) -> Value {
        let path = format!("{}/conformance/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    #[test]
    fn requests_match_the_conformance_vectors() {
        let v = vectors("requests.json");
        let cases = v["requests"].as_array().cloned().unwrap_or_default();
        assert!(cases.len() >= 3);
        for c in cases {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = c["fields"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone().into_bytes(),
                                v.as_str().unwrap_or("").as_bytes().to_vec(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let task = Task::from_fields(
                c["tenant"].as_str().unwrap_or(""),
                c["entry_id"].as_str().unwrap_or(""),
                &fields,
                &crate::task::Limits::default(),
            );
            let Ok(task) = task else {
                panic!("{}: {task:?}", c["name"]);
            };
            let body = request_body(&task, c["max_attempts"].as_u64().unwrap_or(0) as u32);
            let got: Value =
                serde_json::from_slice(&body.unwrap_or_default()).unwrap_or(Value::Null);
            assert_eq!(got, c["body"], "{}", c["name"]);
            assert_eq!(
                traceparent(&task.task_id, task.attempt, task.trace_id.as_deref()),
                c["headers"]["traceparent"].as_str().unwrap_or(""),
                "{}",
                c["name"]
            );
        }
        for c in v["traceparent"].as_array().cloned().unwrap_or_default() {
            let got = traceparent(
                c["task_id"].as_str().unwrap_or(""),
                c["attempt"].as_u64().unwrap_or(0) as u32,
                c["trace_id"].as_str(),
            );
            assert_eq!(got, c["traceparent"].as_str().unwrap_or(""), "{c}");
        }
    }

    #[test]
    fn signatures_match_the_conformance_vectors() {
        let v = vectors("signatures.json");
        let secrets = |c: &Value| -> Vec<String> {
            c["secrets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let sign = v["sign"].as_array().cloned().unwrap_or_default();
        assert!(!sign.is_empty());
        for c in sign {
            let body = c["body"].as_str().unwrap_or("").as_bytes();
            let got = signature(&secrets(&c), c["t"].as_u64().unwrap_or(0), body);
            assert_eq!(got, c["header"].as_str().unwrap_or(""), "{}", c["name"]);
        }
        let verify = v["verify"].as_array().cloned().unwrap_or_default();
        assert!(verify.len() >= 10);
        for c in verify {
            let got = verify_signature(
                &secrets(&c),
                c["header"].as_str().unwrap_or(""),
                c["body"].as_str().unwrap_or("").as_bytes(),
                c["now"].as_u64().unwrap_or(0),
            );
            assert_eq!(Some(got), c["valid"].as_bool(), "{}", c["name"]);
        }
    }

    /// Runs the lines of a stdio vector through the parser and the context, as a transport
    /// does, and returns the concluded outcome (None: the stream ended without a reply).
    fn run_lines(lines: &[&str]) -> (Result<Option<Outcome>, String>, TaskContext) {
        let ctx = TaskContext::new("m".into());
        for l in lines {
            let framed = match parse_line(l.as_bytes()) {
                Ok(f) => f,
                Err(e) => return (Err(e), ctx),
            };
            match framed.line {
                Line::Event(e) => {
                    let _ = apply_event(&ctx, e);
                }
                Line::Reply(r) => {
                    let o = reply_outcome(&ctx, r);
                    return (Ok(Some(ctx.conclude(o))), ctx);
                }
            }
        }
        (Ok(None), ctx)
    }

    #[test]
    fn ndjson_reply_vectors_parse_to_their_outcomes() {
        let v = vectors("replies.json");
        let mut checked = 0;
        for c in v["cases"].as_array().cloned().unwrap_or_default() {
            if c["content_type"].as_str() != Some("application/x-ndjson") {
                continue;
            }
            let body = c["body"].as_str().unwrap_or("");
            let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
            let (got, ctx) = run_lines(&lines);
            let expect = &c["expect"];
            let class = match &got {
                Err(_) => Some("silent_failure".to_owned()),
                Ok(None) if ctx.open_side_effect().is_some() => Some("partial_execution".into()),
                Ok(None) => Some("upstream_unavailable".into()),
                Ok(Some(Outcome::Done)) => None,
                Ok(Some(Outcome::Fail { class, .. })) => Some(class.as_str().to_owned()),
                Ok(Some(other)) => panic!("{}: {other:?}", c["name"]),
            };
            match expect["outcome"].as_str() {
                Some("ok") => {
                    assert_eq!(class, None, "{}", c["name"]);
                    assert_eq!(
                        ctx.final_output().unwrap_or(Value::Null),
                        expect["output"],
                        "{}",
                        c["name"]
                    );
                }
                _ => assert_eq!(class.as_deref(), expect["class"].as_str(), "{}", c["name"]),
            }
            if let Some(steps) = expect["steps"].as_array() {
                let got: Vec<Value> = ctx
                    .progress()
                    .steps
                    .iter()
                    .filter(|s| s.done)
                    .map(|s| serde_json::json!({"name": s.name, "output": s.output, "side_effect": s.side_effect}))
                    .collect();
                assert_eq!(&got, steps, "{}", c["name"]);
            }
            if let Some(p) = expect.get("progress") {
                assert_eq!(
                    ctx.progress().partial_output.as_ref(),
                    Some(p),
                    "{}",
                    c["name"]
                );
            }
            if let Some(ms) = expect["retry_after_ms"].as_u64() {
                let after = match &got {
                    Ok(Some(Outcome::Fail { retry_after, .. })) => {
                        retry_after.map(|d| d.as_millis() as u64)
                    }
                    _ => None,
                };
                assert_eq!(after, Some(ms), "{}", c["name"]);
            }
            checked += 1;
        }
        assert!(checked >= 10, "{checked}");
    }

    #[test]
    fn stdio_pool_vectors_parse_to_their_outcomes_up_to_transport_faults() {
        let v = vectors("stdio.json");
        let mut checked = 0;
        for c in v["pool"].as_array().cloned().unwrap_or_default() {
            let lines: Vec<String> = c["lines"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let known = |l: &str| {
                parse_line(l.as_bytes())
                    .map(|f| f.id.as_deref() == Some("r1"))
                    .unwrap_or(false)
            };
            // A line that does not parse or names another id is a protocol break (agent_crashed);
            // so is a process exit before the reply (unless a side effect is open).
            if !lines.iter().all(|l| known(l)) {
                assert_eq!(c["expect"]["class"], "agent_crashed", "{}", c["name"]);
                checked += 1;
                continue;
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (got, ctx) = run_lines(&refs);
            let class = match got {
                Ok(Some(Outcome::Done)) => "ok".to_owned(),
                Ok(Some(Outcome::Fail { class, .. })) => class.as_str().to_owned(),
                Ok(None) => match ctx.conclude(Outcome::fail(FailureClass::AgentCrashed, "exited"))
                {
                    Outcome::Fail { class, .. } => class.as_str().to_owned(),
                    other => panic!("{}: {other:?}", c["name"]),
                },
                other => panic!("{}: {other:?}", c["name"]),
            };
            let want = c["expect"]["class"].as_str().unwrap_or("ok");
            assert_eq!(class, want, "{}", c["name"]);
            checked += 1;
        }
        assert!(checked >= 5);
    }
}
