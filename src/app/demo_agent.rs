//! The demo handler: a simulated AI agent that fails the ways real ones do — rate limits,
//! hangs, malformed model output, context overflow, a tool failing after side effects, panics —
//! at configurable rates, or on demand through the payload.
//!
//! A payload `{"simulate": "<outcome>"}` forces an outcome: `ok`, `rate_limited`, `timeout`,
//! `malformed_output`, `context_overflow`, `tool_failure`, `panic`, `silent` (success with empty
//! output, caught by output validation), `abort` (kills the whole process, as a segfaulting
//! native library would) or `error` (an untyped error whose text is the payload's `"message"`,
//! classified by the `[classify]` rules). `{"work_ms": N}` sets the work time.
//! `{"fail_while": "<path>"}` simulates an outage: while that file exists, every attempt fails
//! as `upstream_unavailable` (whatever `simulate` says); once it is gone the task behaves as
//! its payload says.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handler::{FailureClass, Handler, HandlerFuture, Outcome, TaskContext};
use crate::task::Task;

/// The `[demo_agent]` section: the simulated agent's behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoAgentSettings {
    /// Probability of a rate-limit answer.
    pub rate_limited: f64,
    /// Probability of a hang past the task timeout.
    pub timeout: f64,
    /// Probability of output that fails validation.
    pub malformed_output: f64,
    /// Probability of a context-window overflow.
    pub context_overflow: f64,
    /// Probability of a tool failing after some steps.
    pub tool_failure: f64,
    /// Probability of a panic in the handler.
    pub panic: f64,
    /// Probability of a success with empty output (a swallowed error).
    pub silent: f64,
    /// Lower bound of simulated work.
    pub min_work_ms: u64,
    /// Upper bound of simulated work.
    pub max_work_ms: u64,
    /// File that records each successful attempt; empty for none.
    pub side_effect_log: String,
    /// File that records the start and end of every attempt; empty for none.
    pub activity_log: String,
}

/// What one attempt of the simulated agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulated {
    /// Works, then succeeds.
    Ok,
    /// Answers 429.
    RateLimited,
    /// Hangs past any timeout.
    Timeout,
    /// Produces output that fails schema validation.
    MalformedOutput,
    /// The prompt does not fit.
    ContextOverflow,
    /// A tool fails after two steps with side effects.
    ToolFailure,
    /// Panics.
    Panic,
    /// Aborts the process.
    Abort,
    /// Swallows an error and reports success with empty output.
    Silent,
    /// Returns an untyped error (the payload's "message").
    Error,
}

impl Simulated {
    fn parse(s: &str) -> Option<Simulated> {
        Some(match s {
            "ok" => Simulated::Ok,
            "rate_limited" => Simulated::RateLimited,
            "timeout" => Simulated::Timeout,
            "malformed_output" => Simulated::MalformedOutput,
            "context_overflow" => Simulated::ContextOverflow,
            "tool_failure" => Simulated::ToolFailure,
            "panic" => Simulated::Panic,
            "abort" => Simulated::Abort,
            "silent" => Simulated::Silent,
            "error" => Simulated::Error,
            _ => return None,
        })
    }
}

/// The simulated agent.
#[derive(Debug)]
pub struct DemoAgent {
    settings: DemoAgentSettings,
    side_effects: Option<Mutex<std::fs::File>>,
    activity: Option<Arc<Mutex<std::fs::File>>>,
}

/// Appends one line to a log shared by concurrent tasks and processes (O_APPEND, one write).
fn append(file: &Mutex<std::fs::File>, line: &str, what: &str) {
    if let Ok(mut f) = file.lock() {
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(error = %e, "cannot write the demo {what} log");
        }
    }
}

/// Writes the "end" line of an attempt when dropped: after any outcome, a panic, or a
/// cancellation by the timeout.
struct Activity {
    file: Arc<Mutex<std::fs::File>>,
    what: String,
}

impl Drop for Activity {
    fn drop(&mut self) {
        let line = format!("end {} {}\n", self.what, crate::task::now_ms());
        append(&self.file, &line, "activity");
    }
}

/// Draws an outcome for one attempt. The draw is seeded by task id and attempt, so an attempt
/// is reproducible and a retry draws afresh.
pub fn draw(settings: &DemoAgentSettings, task_id: &str, attempt: u32) -> Simulated {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.bytes() {
        seed = (seed ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut rng =
        fastrand::Rng::with_seed(seed ^ (attempt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut x = rng.f64();
    for (p, outcome) in [
        (settings.rate_limited, Simulated::RateLimited),
        (settings.timeout, Simulated::Timeout),
        (settings.malformed_output, Simulated::MalformedOutput),
        (settings.context_overflow, Simulated::ContextOverflow),
        (settings.tool_failure, Simulated::ToolFailure),
        (settings.panic, Simulated::Panic),
        (settings.silent, Simulated::Silent),
    ] {
        if x < p {
            return outcome;
        }
        x -= p;
    }
    Simulated::Ok
}

impl DemoAgent {
    /// An agent behaving as `settings` say; opens the side-effect log if one is configured.
    pub fn new(settings: DemoAgentSettings) -> Result<DemoAgent> {
        let open = |path: &str, setting: &str| -> Result<Option<std::fs::File>> {
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Some)
                .map_err(|e| Error::io(format!("opening demo_agent.{setting} {path}"), e))
        };
        let side_effects = open(&settings.side_effect_log, "side_effect_log")?.map(Mutex::new);
        let activity =
            open(&settings.activity_log, "activity_log")?.map(|f| Arc::new(Mutex::new(f)));
        Ok(DemoAgent {
            settings,
            side_effects,
            activity,
        })
    }

    fn record(&self, task: &Task, member: &str) {
        if let Some(f) = &self.side_effects {
            let line = format!(
                "{} {} {} {}\n",
                task.tenant, task.task_id, task.attempt, member
            );
            // One write of one line with O_APPEND: lines from concurrent tasks and processes
            // never interleave.
            append(f, &line, "side-effect");
        }
    }

    /// Writes the attempt's "start" line; the returned guard writes its "end" line.
    fn started(&self, task: &Task, member: &str) -> Option<Activity> {
        let file = self.activity.clone()?;
        let what = format!(
            "{} {} {} {}",
            task.tenant, task.task_id, task.attempt, member
        );
        append(
            &file,
            &format!("start {what} {}\n", crate::task::now_ms()),
            "activity",
        );
        Some(Activity { file, what })
    }
}

/// Wraps a DemoAgent for sharing.
pub fn handler(settings: DemoAgentSettings) -> Result<Arc<dyn Handler>> {
    Ok(Arc::new(Arc::new(DemoAgent::new(settings)?)))
}

impl Handler for Arc<DemoAgent> {
    /// The agent's output must carry a non-empty "summary".
    fn check_output(&self, _task: &Task, output: Option<&serde_json::Value>) -> Result<(), String> {
        match output
            .and_then(|o| o.get("summary"))
            .and_then(|s| s.as_str())
        {
            Some(s) if !s.trim().is_empty() => Ok(()),
            Some(_) => Err("field 'summary' is empty".into()),
            None => Err("no 'summary' in the output".into()),
        }
    }

    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let me = self.clone();
        Box::pin(async move {
            let _activity = me.started(&task, ctx.member_id());
            // What the payload asks for, read once; the parsed document is dropped before the
            // simulated work (it is not kept for the task's whole run: issue 18's memory per
            // task in flight).
            let (outage, what, work_ms, message) = {
                let payload: serde_json::Value =
                    task.payload_as().unwrap_or(serde_json::Value::Null);
                let text = |name: &str| payload.get(name).and_then(|v| v.as_str());
                let outage = text("fail_while")
                    .filter(|p| std::path::Path::new(p).exists())
                    .map(str::to_owned);
                let forced = text("simulate").and_then(Simulated::parse);
                let what =
                    forced.unwrap_or_else(|| draw(&me.settings, &task.task_id, task.attempt));
                let work_ms = payload
                    .get("work_ms")
                    .and_then(|v| v.as_u64())
                    .unwrap_or_else(|| {
                        fastrand::u64(me.settings.min_work_ms..=me.settings.max_work_ms)
                    });
                let message = (what == Simulated::Error)
                    .then(|| text("message").unwrap_or("agent error").to_owned());
                (outage, what, work_ms, message)
            };
            if work_ms > 0 {
                tokio::time::sleep(Duration::from_millis(work_ms)).await;
            }
            if let Some(path) = outage {
                return Outcome::fail(
                    FailureClass::UpstreamUnavailable,
                    format!("simulated outage: the agent's upstream is down while {path} exists"),
                );
            }
            match what {
                Simulated::Ok => {
                    let _ = ctx.step_done("think", serde_json::Value::Null);
                    me.record(&task, ctx.member_id());
                    let _ = ctx.step_done("act", serde_json::Value::Null);
                    ctx.output(serde_json::json!({"summary": format!("handled {} for {}", task.kind, task.tenant)}));
                    Outcome::Done
                }
                Simulated::Silent => {
                    let _ = ctx.step_done("think", serde_json::Value::Null);
                    ctx.output(serde_json::json!({"summary": ""}));
                    Outcome::Done
                }
                Simulated::RateLimited => Outcome::retry_after(
                    FailureClass::RateLimited,
                    "model 'demo-llm' answered 429 Too Many Requests (retry after 200 ms)",
                    Duration::from_millis(200),
                ),
                Simulated::Timeout => {
                    std::future::pending::<()>().await;
                    Outcome::Done
                }
                Simulated::MalformedOutput => Outcome::fail(
                    FailureClass::SchemaMismatch,
                    "model output failed schema validation: missing field 'summary' at line 3",
                ),
                Simulated::ContextOverflow => Outcome::fail(
                    FailureClass::ContextOverflow,
                    format!(
                        "prompt of {} tokens exceeds the context window of 128000",
                        128_000 + task.payload.len()
                    ),
                ),
                Simulated::ToolFailure => {
                    let _ = ctx.step_done("lookup_customer", serde_json::Value::Null);
                    let _ = ctx.step_done("update_crm_record", serde_json::Value::Null);
                    ctx.partial_output(
                        serde_json::json!({"crm_record": "updated", "email": "not sent"}),
                    );
                    Outcome::fail(
                        FailureClass::PartialExecution,
                        "tool 'send_email' failed after 2 completed steps: SMTP 550 mailbox unavailable",
                    )
                }
                Simulated::Error => Outcome::Error {
                    message: message.unwrap_or_else(|| "agent error".to_owned()),
                },
                Simulated::Panic => panic!("demo agent crashed on task {}", task.task_id),
                Simulated::Abort => {
                    tracing::error!(task_id = %task.task_id, "demo agent aborts the process (simulated native crash)");
                    std::process::abort()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DemoAgentSettings {
        DemoAgentSettings {
            rate_limited: 0.1,
            timeout: 0.0,
            malformed_output: 0.1,
            context_overflow: 0.0,
            tool_failure: 0.0,
            panic: 0.0,
            silent: 0.0,
            min_work_ms: 0,
            max_work_ms: 0,
            side_effect_log: String::new(),
            activity_log: String::new(),
        }
    }

    #[test]
    fn draws_follow_the_rates_and_repeat_per_attempt() {
        let s = settings();
        let draws: Vec<Simulated> = (0..10_000).map(|i| draw(&s, &format!("t{i}"), 1)).collect();
        let ok = draws.iter().filter(|d| **d == Simulated::Ok).count();
        assert!((7_600..8_400).contains(&ok), "ok = {ok}");
        assert!(!draws.contains(&Simulated::Panic));
        assert_eq!(draw(&s, "t1", 1), draw(&s, "t1", 1));
    }

    #[tokio::test]
    async fn forced_outcomes_map_to_classes() {
        let agent = Arc::new(DemoAgent::new(settings()).unwrap());
        let mk = |sim: &str| {
            let mut t = crate::task::NewTask::new(
                "a",
                "k",
                serde_json::json!({"simulate": sim, "work_ms": 0}),
            )
            .into_task(&Default::default(), 0)
            .unwrap();
            t.attempt = 1;
            Arc::new(t)
        };
        let ctx = TaskContext::new("m".into());
        assert_eq!(agent.handle(mk("ok"), ctx.clone()).await, Outcome::Done);
        let tool = agent.handle(mk("tool_failure"), ctx.clone()).await;
        assert!(matches!(
            tool,
            Outcome::Fail {
                class: FailureClass::PartialExecution,
                ..
            }
        ));
        assert_eq!(
            crate::task::step_names(&ctx.progress().steps),
            ["think", "act", "lookup_customer", "update_crm_record"]
        );
        let rl = agent.handle(mk("rate_limited"), ctx).await;
        assert!(matches!(
            rl,
            Outcome::Fail {
                retry_after: Some(_),
                ..
            }
        ));
    }
}
