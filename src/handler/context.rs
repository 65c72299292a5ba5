//! [`TaskContext`]: what a handler reports while it runs — step checkpoints, progress — and its
//! final output.
//!
//! Steps follow PROTOCOL.md ("Steps and checkpoints"): a handler calls
//! [`TaskContext::step_started`] before a step and [`TaskContext::step_done`] after it. Each
//! accepted event is also sent to the attempt's step sink (when the fleet gave it one), which
//! records it in Redis as it arrives, so a completed step survives any crash after it. A step
//! that breaks the limits is refused: the call returns the error and the attempt fails as
//! `schema_mismatch` ([`TaskContext::refused`]).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::class::FailureClass;
use super::outcome::Outcome;
use crate::task::{check_step_output, validate_step_name, Step, MAX_STEPS, MAX_STEPS_OUTPUT_BYTES};

/// What a handler reported while it ran: the steps it recorded and its latest progress. These
/// travel with the task into its retry and its dead letter, so an operator (or the next
/// attempt) knows which side effects already happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Progress {
    /// Steps recorded during this attempt, in order (completed ones and side-effecting ones
    /// still open).
    pub steps: Vec<Step>,
    /// The latest progress report or partial output.
    pub partial_output: Option<serde_json::Value>,
}

/// A step event accepted by a [`TaskContext`], as its sink receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvent {
    /// A side-effecting step started (starts of other steps are not recorded).
    Started(Step),
    /// A step completed with its output.
    Done(Step),
    /// A side-effecting step ended without its side effect: its start is cleared.
    Failed {
        /// The step's name.
        name: String,
    },
}

/// The handle a handler gets next to its task.
#[derive(Debug, Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

#[derive(Debug)]
struct ContextInner {
    member_id: Arc<str>,
    attempt: u32,
    max_attempts: u32,
    sink: Option<Sink>,
    state: Mutex<State>,
}

/// Where a context's accepted step events go.
#[derive(Debug)]
enum Sink {
    /// A channel the caller gave ([`TaskContext::for_attempt`]).
    Channel(mpsc::UnboundedSender<Box<StepEvent>>),
    /// The fleet's recorder of the attempt ([`TaskContext::recorded_by`]).
    Recorder(Arc<dyn StepSink>),
}

/// Takes the step events of one attempt, in the order its context accepted them: the fleet's
/// step recorder, which starts writing them only once the first one comes (an attempt that
/// reports no steps costs no channel and no recorder).
pub(crate) trait StepSink: Send + Sync + std::fmt::Debug {
    /// One accepted event.
    fn send(&self, event: StepEvent);
}

#[derive(Debug, Default)]
struct State {
    progress: Progress,
    /// Completed steps of earlier attempts (for the limits: names, counts, bytes).
    earlier: Vec<(String, usize)>,
    /// Output bytes of every completed step so far, earlier attempts included.
    output_bytes: usize,
    output: Option<serde_json::Value>,
    refused: Option<String>,
    /// The last step started and not (yet) completed, side-effecting or not.
    started: Option<String>,
}

impl TaskContext {
    /// A fresh context for one attempt run by `member_id`, without a step sink (steps are kept
    /// in memory only) and without earlier steps.
    pub fn new(member_id: Arc<str>) -> Self {
        TaskContext::for_attempt(member_id, 1, 1, &[], None)
    }

    /// The context of attempt `attempt` (of at most `max_attempts`) of a task that carries
    /// `earlier` steps; accepted step events go to `sink` (boxed: a channel's first block holds
    /// 32 slots, and a pointer per slot keeps an attempt's idle channel small).
    pub fn for_attempt(
        member_id: Arc<str>,
        attempt: u32,
        max_attempts: u32,
        earlier: &[Step],
        sink: Option<mpsc::UnboundedSender<Box<StepEvent>>>,
    ) -> Self {
        TaskContext::with_sink(
            member_id,
            attempt,
            max_attempts,
            earlier,
            sink.map(Sink::Channel),
        )
    }

    /// The context of an attempt run by the fleet: as [`TaskContext::for_attempt`], with the
    /// accepted step events going to `recorder`.
    pub(crate) fn recorded_by(
        member_id: Arc<str>,
        attempt: u32,
        max_attempts: u32,
        earlier: &[Step],
        recorder: Arc<dyn StepSink>,
    ) -> Self {
        TaskContext::with_sink(
            member_id,
            attempt,
            max_attempts,
            earlier,
            Some(Sink::Recorder(recorder)),
        )
    }

    fn with_sink(
        member_id: Arc<str>,
        attempt: u32,
        max_attempts: u32,
        earlier: &[Step],
        sink: Option<Sink>,
    ) -> Self {
        let earlier: Vec<(String, usize)> = earlier
            .iter()
            .filter(|s| s.done)
            .map(|s| (s.name.clone(), json_len(&s.output)))
            .collect();
        let output_bytes = earlier.iter().map(|(_, n)| n).sum();
        TaskContext {
            inner: Arc::new(ContextInner {
                member_id,
                attempt,
                max_attempts,
                sink,
                state: Mutex::new(State {
                    earlier,
                    output_bytes,
                    ..State::default()
                }),
            }),
        }
    }

    /// The fleet member running this attempt.
    pub fn member_id(&self) -> &str {
        &self.inner.member_id
    }

    /// This attempt's number (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The attempt after which a transient failure is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// A step begins. A side-effecting one is recorded (and sent to the sink): should the
    /// attempt end before [`TaskContext::step_done`] or [`TaskContext::step_failed`], the task
    /// is a `partial_execution`.
    pub fn step_started(&self, name: &str, side_effect: bool) -> Result<(), String> {
        self.checked(|st| {
            validate_step_name(name)?;
            st.started = Some(name.to_owned());
            if !side_effect {
                return Ok(None);
            }
            let step = Step {
                name: name.to_owned(),
                output: serde_json::Value::Null,
                side_effect: true,
                attempt: self.inner.attempt,
                at_ms: crate::task::now_ms(),
                done: false,
            };
            upsert(&mut st.progress.steps, step.clone());
            Ok(Some(StepEvent::Started(step)))
        })
    }

    /// A step completed with `output`: recorded (and sent to the sink) so no later attempt
    /// runs it again.
    pub fn step_done(&self, name: &str, output: serde_json::Value) -> Result<(), String> {
        self.checked(|st| {
            validate_step_name(name)?;
            let size = check_step_output(name, &output)?;
            // The task's completed steps by name (earlier attempts' and this one's): a name
            // recorded again replaces its earlier record, in the count and in the bytes.
            let previous = st
                .progress
                .steps
                .iter()
                .find(|s| s.name == name && s.done)
                .map(|s| json_len(&s.output))
                .or_else(|| st.earlier.iter().find(|(n, _)| n == name).map(|(_, b)| *b));
            let this_attempt_new = st
                .progress
                .steps
                .iter()
                .filter(|s| s.done && !st.earlier.iter().any(|(n, _)| *n == s.name))
                .count();
            let count = st.earlier.len() + this_attempt_new + usize::from(previous.is_none());
            if count > MAX_STEPS {
                return Err(format!(
                    "step '{name}' would be step {count} of the task; the limit is {MAX_STEPS}"
                ));
            }
            let total = st.output_bytes.saturating_sub(previous.unwrap_or(0)) + size;
            if total > MAX_STEPS_OUTPUT_BYTES {
                return Err(format!(
                    "step '{name}' would bring the task's step outputs to {total} bytes; the limit \
                     is {MAX_STEPS_OUTPUT_BYTES}"
                ));
            }
            let side_effect = st
                .progress
                .steps
                .iter()
                .any(|s| s.name == name && s.side_effect);
            let step = Step {
                name: name.to_owned(),
                output,
                side_effect,
                attempt: self.inner.attempt,
                at_ms: crate::task::now_ms(),
                done: true,
            };
            st.output_bytes = total;
            if st.started.as_deref() == Some(name) {
                st.started = None;
            }
            upsert(&mut st.progress.steps, step.clone());
            Ok(Some(StepEvent::Done(step)))
        })
    }

    /// A step ended without its side effect (the agent says so): its start is cleared.
    pub fn step_failed(&self, name: &str) -> Result<(), String> {
        self.checked(|st| {
            validate_step_name(name)?;
            let before = st.progress.steps.len();
            st.progress.steps.retain(|s| s.name != name || s.done);
            Ok(
                (st.progress.steps.len() != before).then(|| StepEvent::Failed {
                    name: name.to_owned(),
                }),
            )
        })
    }

    /// The side-effecting step started in this attempt and neither done nor failed, if any.
    pub fn open_side_effect(&self) -> Option<String> {
        let st = self.inner.state.lock().ok()?;
        st.progress
            .steps
            .iter()
            .find(|s| s.side_effect && !s.done)
            .map(|s| s.name.clone())
    }

    /// The step the attempt stopped in, for a dead letter's `failed_step`: the side-effecting
    /// step left open, else the last step started and not completed (a step the agent reported
    /// failed included), else none.
    pub fn failed_step(&self) -> Option<String> {
        self.open_side_effect()
            .or_else(|| self.inner.state.lock().ok()?.started.clone())
    }

    /// Why a step was refused, if one was: the attempt then fails as `schema_mismatch`.
    pub fn refused(&self) -> Option<String> {
        self.inner.state.lock().ok()?.refused.clone()
    }

    /// What the attempt's `outcome` comes to once its steps are considered: a refused step
    /// makes it `schema_mismatch`; a failure (of any kind, a timeout and a panic included) while
    /// a side-effecting step is open makes it `partial_execution`, never retried blindly.
    /// Success stays success: the agent said the work is done.
    pub fn conclude(&self, outcome: Outcome) -> Outcome {
        if let Some(why) = self.refused() {
            return Outcome::fail(
                FailureClass::SchemaMismatch,
                format!("a step was refused: {why}"),
            );
        }
        if matches!(outcome, Outcome::Done) {
            return outcome;
        }
        match self.open_side_effect() {
            Some(step) => {
                let why = match &outcome {
                    Outcome::Fail { class, reason, .. } => format!("{class}: {reason}"),
                    Outcome::Poison { reason } => reason.clone(),
                    Outcome::Error { message } => message.clone(),
                    Outcome::Done => String::new(),
                };
                Outcome::fail(
                    FailureClass::PartialExecution,
                    format!(
                        "the attempt failed while side-effecting step '{step}' was started and not done ({why})"
                    ),
                )
            }
            None => outcome,
        }
    }

    /// Records the output produced so far (a progress report).
    pub fn partial_output(&self, output: serde_json::Value) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.progress.partial_output = Some(output);
        }
    }

    /// Records the attempt's final output, which the handler's
    /// [`Handler::check_output`](super::Handler::check_output) validates when the attempt reports success.
    pub fn output(&self, output: serde_json::Value) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.output = Some(output);
        }
    }

    /// The final output recorded, if any.
    pub fn final_output(&self) -> Option<serde_json::Value> {
        self.inner
            .state
            .lock()
            .ok()
            .and_then(|st| st.output.clone())
    }

    /// A copy of what was reported so far.
    pub fn progress(&self) -> Progress {
        self.inner
            .state
            .lock()
            .map(|st| st.progress.clone())
            .unwrap_or_default()
    }

    /// Applies one step change under the lock; an accepted event goes to the sink, a refusal
    /// is remembered (the first one wins) and returned.
    fn checked(
        &self,
        f: impl FnOnce(&mut State) -> Result<Option<StepEvent>, String>,
    ) -> Result<(), String> {
        let Ok(mut st) = self.inner.state.lock() else {
            return Err("the task context is poisoned".into());
        };
        match f(&mut st) {
            Ok(event) => {
                match (event, &self.inner.sink) {
                    (Some(event), Some(Sink::Channel(tx))) => {
                        let _ = tx.send(Box::new(event));
                    }
                    (Some(event), Some(Sink::Recorder(r))) => r.send(event),
                    _ => {}
                }
                Ok(())
            }
            Err(why) => {
                st.refused.get_or_insert_with(|| why.clone());
                Err(why)
            }
        }
    }
}

/// Replaces the step of the same name, or appends.
fn upsert(steps: &mut Vec<Step>, step: Step) {
    match steps.iter_mut().find(|s| s.name == step.name) {
        Some(slot) => *slot = step,
        None => steps.push(step),
    }
}

fn json_len(v: &serde_json::Value) -> usize {
    serde_json::to_string(v).map(|s| s.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_are_recorded_and_sent_to_the_sink() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = TaskContext::for_attempt("m".into(), 2, 5, &[], Some(tx));
        assert_eq!((ctx.attempt(), ctx.max_attempts()), (2, 5));
        assert!(ctx.step_started("draft", false).is_ok());
        assert!(ctx.step_done("draft", json!("Dear u1")).is_ok());
        assert!(ctx.step_started("send", true).is_ok());
        assert_eq!(ctx.open_side_effect().as_deref(), Some("send"));
        assert!(ctx.step_done("send", json!({"id": 1})).is_ok());
        assert_eq!(ctx.open_side_effect(), None);
        ctx.partial_output(json!({"p": 1}));
        let p = ctx.progress();
        assert_eq!(
            p.steps
                .iter()
                .map(|s| (s.name.as_str(), s.side_effect, s.done, s.attempt))
                .collect::<Vec<_>>(),
            [("draft", false, true, 2), ("send", true, true, 2)]
        );
        assert_eq!(p.partial_output, Some(json!({"p": 1})));
        let mut kinds = Vec::new();
        while let Ok(e) = rx.try_recv() {
            kinds.push(match *e {
                StepEvent::Started(s) => format!("started {}", s.name),
                StepEvent::Done(s) => format!("done {}", s.name),
                StepEvent::Failed { name } => format!("failed {name}"),
            });
        }
        assert_eq!(kinds, ["done draft", "started send", "done send"]);
    }

    #[test]
    fn failures_with_an_open_side_effect_are_partial_executions() {
        let ctx = TaskContext::new("m".into());
        assert!(ctx.step_started("pay", true).is_ok());
        let o = ctx.conclude(Outcome::fail(FailureClass::Timeout, "slow"));
        assert!(
            matches!(&o, Outcome::Fail { class: FailureClass::PartialExecution, reason, .. } if reason.contains("'pay'") && reason.contains("timeout: slow")),
            "{o:?}"
        );
        assert_eq!(ctx.conclude(Outcome::Done), Outcome::Done);
        let ctx = TaskContext::new("m".into());
        let e = Outcome::Error {
            message: "x".into(),
        };
        assert_eq!(ctx.conclude(e.clone()), e);
        let _ = ctx.step_done("", serde_json::Value::Null);
        assert!(matches!(
            ctx.conclude(Outcome::Done),
            Outcome::Fail {
                class: FailureClass::SchemaMismatch,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_side_effect_step_is_closed() {
        let ctx = TaskContext::new("m".into());
        assert!(ctx.step_started("pay", true).is_ok());
        assert!(ctx.step_failed("pay").is_ok());
        assert_eq!(ctx.open_side_effect(), None);
        assert!(ctx.progress().steps.is_empty());
        assert_eq!(
            ctx.failed_step().as_deref(),
            Some("pay"),
            "it failed in 'pay'"
        );
    }

    #[test]
    fn the_failed_step_is_the_open_side_effect_else_the_last_unfinished_start() {
        let ctx = TaskContext::new("m".into());
        assert_eq!(ctx.failed_step(), None);
        assert!(ctx.step_started("draft", false).is_ok());
        assert_eq!(ctx.failed_step().as_deref(), Some("draft"));
        assert!(ctx.step_done("draft", json!(1)).is_ok());
        assert_eq!(ctx.failed_step(), None, "nothing unfinished");
        assert!(ctx.step_started("send", true).is_ok());
        assert!(ctx.step_started("log", false).is_ok());
        assert_eq!(
            ctx.failed_step().as_deref(),
            Some("send"),
            "an open side effect wins"
        );
    }

    #[test]
    fn limits_refuse_the_step_and_mark_the_attempt() {
        let ctx = TaskContext::new("m".into());
        assert!(ctx.step_done("a\u{7}", json!(1)).is_err());
        let big = json!("x".repeat(crate::task::MAX_STEP_OUTPUT_BYTES));
        let err = ctx.step_done("big", big).err().unwrap_or_default();
        assert!(err.contains("limit"), "{err}");
        assert!(ctx
            .refused()
            .is_some_and(|r| r.contains("control character")));
        // The task's total counts earlier attempts' outputs too.
        let earlier: Vec<Step> = (0..8)
            .map(|i| Step {
                name: format!("s{i}"),
                output: json!("y".repeat(60 * 1024)),
                side_effect: false,
                attempt: 1,
                at_ms: 0,
                done: true,
            })
            .collect();
        let ctx = TaskContext::for_attempt("m".into(), 2, 3, &earlier, None);
        let err = ctx
            .step_done("more", json!("z".repeat(40 * 1024)))
            .err()
            .unwrap_or_default();
        assert!(err.contains("step outputs"), "{err}");
        // Too many steps.
        let many: Vec<Step> = (0..MAX_STEPS)
            .map(|i| Step {
                name: format!("s{i}"),
                output: json!(null),
                side_effect: false,
                attempt: 1,
                at_ms: 0,
                done: true,
            })
            .collect();
        let ctx = TaskContext::for_attempt("m".into(), 2, 3, &many, None);
        assert!(
            ctx.step_done("s0", json!(1)).is_ok(),
            "re-recording a known step is no new step"
        );
        assert!(ctx.step_done("one-more", json!(1)).is_err());
        // Recording a name again replaces its bytes instead of adding them.
        let ctx = TaskContext::new("m".into());
        for _ in 0..20 {
            assert!(ctx.step_done("same", json!("q".repeat(60 * 1024))).is_ok());
        }
    }
}
