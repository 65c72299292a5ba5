//! The next move after a failed attempt, decided without I/O: another attempt after a delay,
//! or a dead letter that says why. The settler counts, logs and carries out the move.
//!
//! The rules, in order: a task the handler declared poison is dead-lettered; an
//! `agent_crashed` failure whose previous `reclaim.max_deliveries - 1` attempts (in its history)
//! all ended `agent_crashed` too is dead-lettered as `crash_loop` (the task crashes its agent
//! process as a crash-looping task kills members); otherwise the tenant's and kind's retry
//! policy decides (permanent classes and exhausted attempts go to the
//! dead letters); a retry that would come after the task's deadline is not scheduled, the task
//! is dead-lettered as `expired` instead, with this attempt's error.

use std::sync::Arc;

use super::settlement::Failed;
use crate::broker::RetryItem;
use crate::deadletter::{bounded, first_failed_at, DeadLetter, MAX_ERROR_BYTES};
use crate::handler::FailureClass;
use crate::policy::{retry_in_time, Decision, Policies};
use crate::task::{AttemptRecord, Task, MAX_HISTORY, MAX_STEPS};

/// What a decision about a failed attempt needs besides the attempt itself.
pub(crate) struct MoveInputs<'a> {
    /// The retry policies by tenant and kind.
    pub policies: &'a Policies,
    /// Wall-clock now (ms since the Unix epoch): stamps the attempt record and dead letter.
    pub now_ms: u64,
    /// Now on the clock deadlines are judged by (the member's Redis-adjusted clock).
    pub deadline_clock_ms: u64,
    /// A uniform random number in [0, 1), for the policy's jitter.
    pub jitter: f64,
    /// The member that ran the attempt.
    pub member: &'a str,
    /// The lane the entry came from, named in the dead letter.
    pub orig_lane: String,
    /// `reclaim.max_deliveries`: this many `agent_crashed` attempts in a row are a crash loop.
    pub max_deliveries: u64,
}

/// A failed attempt's next move.
#[derive(Debug)]
pub(crate) enum NextMove {
    /// Another attempt, `item.delay` from now, with the attempt recorded in its history.
    Retry {
        /// The schedule entry of the next attempt.
        item: RetryItem,
        /// The failed attempt's class.
        class: FailureClass,
    },
    /// The dead letters: the record says why (`detail`).
    DeadLetter(Box<DeadLetter>),
}

/// The next move after the failed attempt `f`: the task with this attempt recorded (steps and
/// history capped at `MAX_STEPS` / `MAX_HISTORY`), retried or dead-lettered.
pub(crate) fn next_move(f: Failed, inputs: &MoveInputs<'_>) -> NextMove {
    let Failed {
        tenant,
        entry_id,
        task,
        class,
        reason,
        retry_after,
        poison,
        progress,
        failed_step,
        duration,
        ..
    } = f;
    let now = inputs.now_ms;
    let mut next = recorded(&task, progress.steps, class, &reason, now, duration, inputs);
    let (class, decision) = decide(&tenant, &task, class, retry_after, poison, inputs);
    let why = match decision {
        Decision::Retry { delay } => {
            next.attempt += 1;
            // The promote script stamps enqueued_at when the retry is due; the first
            // enqueue time, the producer's own fields and the entry it came from travel
            // in the item.
            let fields = next.retry_fields(&entry_id);
            match RetryItem::new(&entry_id, delay, &fields) {
                Ok(item) => return NextMove::Retry { item, class },
                // Cannot happen for string fields; if it did, the task is kept, not lost.
                Err(e) => format!("could not schedule a retry: {e}"),
            }
        }
        Decision::DeadLetter { why } => why,
    };
    dead_letter(
        next,
        entry_id,
        Verdict {
            class,
            reason,
            why,
            failed_step,
        },
        progress.partial_output,
        inputs,
    )
}

/// Why a failed attempt's task goes to the dead letters.
struct Verdict {
    class: FailureClass,
    reason: String,
    why: String,
    failed_step: Option<String>,
}

/// The retry decision, with the deadline rule applied: a retry due after the deadline becomes
/// a dead letter of class `expired`.
fn decide(
    tenant: &Arc<str>,
    task: &Task,
    class: FailureClass,
    retry_after: Option<std::time::Duration>,
    poison: bool,
    inputs: &MoveInputs<'_>,
) -> (FailureClass, Decision) {
    if class == FailureClass::AgentCrashed && crashed_in_a_row(task, inputs.max_deliveries) {
        return (
            FailureClass::CrashLoop,
            Decision::DeadLetter {
                why: format!(
                    "its agent crashed on {} attempts in a row (reclaim.max_deliveries = {}): \
                     the task crashes the agent that runs it; not retried",
                    inputs.max_deliveries, inputs.max_deliveries
                ),
            },
        );
    }
    let decision = if poison {
        Decision::DeadLetter {
            why: "the handler declared the task poison".into(),
        }
    } else {
        inputs.policies.for_task(tenant, &task.kind).decide(
            class,
            task.attempt,
            retry_after,
            inputs.jitter,
        )
    };
    match decision {
        Decision::Retry { delay } => {
            match retry_in_time(task.deadline_ms, inputs.deadline_clock_ms, delay) {
                Ok(()) => (class, Decision::Retry { delay }),
                Err(why) => (FailureClass::Expired, Decision::DeadLetter { why }),
            }
        }
        other => (class, other),
    }
}

/// Whether the `max_deliveries - 1` attempts before this one (the last records of the task's
/// history) all ended `agent_crashed`. The history keeps `MAX_HISTORY` records, so a larger
/// threshold is never reached this way (the retry budget ends the task instead).
fn crashed_in_a_row(task: &Task, max_deliveries: u64) -> bool {
    let earlier = max_deliveries.saturating_sub(1) as usize;
    earlier <= task.history.len()
        && task.history[task.history.len() - earlier..]
            .iter()
            .all(|r| r.class == FailureClass::AgentCrashed.as_str())
}

/// The task with the failed attempt's steps and record added, both capped.
fn recorded(
    task: &Task,
    steps: Vec<crate::task::Step>,
    class: FailureClass,
    reason: &str,
    now: u64,
    duration: std::time::Duration,
    inputs: &MoveInputs<'_>,
) -> Task {
    let mut next: Task = task.clone();
    crate::task::merge_steps(&mut next.steps, steps);
    if next.steps.len() > MAX_STEPS {
        let cut = next.steps.len() - MAX_STEPS;
        next.steps.drain(..cut);
    }
    next.history.push(AttemptRecord {
        attempt: task.attempt,
        class: class.as_str().to_owned(),
        error: bounded(reason, MAX_ERROR_BYTES),
        at_ms: now,
        duration_ms: duration.as_millis() as u64,
        member: inputs.member.to_owned(),
    });
    if next.history.len() > MAX_HISTORY {
        let cut = next.history.len() - MAX_HISTORY;
        next.history.drain(..cut);
    }
    next
}

/// The dead letter of a task whose attempt failed for good.
fn dead_letter(
    next: Task,
    entry_id: String,
    verdict: Verdict,
    partial_output: Option<serde_json::Value>,
    inputs: &MoveInputs<'_>,
) -> NextMove {
    let now = inputs.now_ms;
    let Verdict {
        class,
        reason,
        why,
        failed_step,
    } = verdict;
    NextMove::DeadLetter(Box::new(DeadLetter {
        orig_lane: inputs.orig_lane.clone(),
        orig_id: entry_id,
        steps: next.steps.clone(),
        failed_step,
        first_failed_at_ms: first_failed_at(&next.history, now),
        task: Some(next),
        raw: None,
        class,
        error: reason,
        detail: Some(why),
        partial_output,
        member: inputs.member.to_owned(),
        dead_lettered_at_ms: now,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handler::Progress;
    use crate::task::{Limits, NewTask};

    fn policies() -> Policies {
        crate::config::Settings::from_raw(crate::config::RawConfig::defaults().unwrap())
            .unwrap()
            .policies
    }

    fn failed(attempt: u32, class: FailureClass, deadline: Option<u64>) -> Failed {
        let mut new = NewTask::new("acme", "triage", serde_json::json!({"n": 1}));
        new.deadline = deadline;
        let mut task = new.into_task(&Limits::default(), 1_000).unwrap();
        task.attempt = attempt;
        Failed {
            tenant: "acme".into(),
            entry_id: "1-0".into(),
            task: Arc::new(task),
            deliveries: 1,
            class,
            reason: "upstream said no".into(),
            retry_after: None,
            poison: false,
            progress: Progress {
                steps: vec![crate::task::Step::completed(
                    "fetched",
                    serde_json::Value::Null,
                )],
                partial_output: None,
            },
            failed_step: None,
            duration: Duration::from_millis(20),
            started_ms: 0,
        }
    }

    fn inputs(p: &Policies) -> MoveInputs<'_> {
        MoveInputs {
            policies: p,
            now_ms: 10_000,
            deadline_clock_ms: 10_000,
            jitter: 0.5,
            member: "m1",
            orig_lane: "lane".into(),
            max_deliveries: 3,
        }
    }

    fn with_history(mut f: Failed, classes: &[FailureClass]) -> Failed {
        let mut task = (*f.task).clone();
        task.history = classes
            .iter()
            .enumerate()
            .map(|(i, c)| AttemptRecord {
                attempt: i as u32 + 1,
                class: c.as_str().to_owned(),
                error: "agent process exited".into(),
                at_ms: 0,
                duration_ms: 0,
                member: "m0".into(),
            })
            .collect();
        task.attempt = classes.len() as u32 + 1;
        f.task = Arc::new(task);
        f
    }

    #[test]
    fn agent_crashes_in_a_row_are_a_crash_loop() {
        use FailureClass::{AgentCrashed, Timeout};
        let mut p = policies();
        // Enough attempts that the retry budget is not what ends the task.
        p = Policies::new(
            crate::policy::RetryPolicy {
                max_attempts: 10,
                ..p.for_task("acme", "triage")
            },
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let crash = |h: &[FailureClass]| {
            next_move(with_history(failed(1, AgentCrashed, None), h), &inputs(&p))
        };
        // The third crash in a row (max_deliveries = 3): poison, not retried.
        let NextMove::DeadLetter(dl) = crash(&[Timeout, AgentCrashed, AgentCrashed]) else {
            panic!("expected a crash loop");
        };
        assert_eq!(dl.class, FailureClass::CrashLoop);
        assert_eq!(dl.action().as_str(), "manual_review");
        assert!(
            dl.detail
                .as_deref()
                .unwrap_or("")
                .contains("crashed on 3 attempts in a row"),
            "{:?}",
            dl.detail
        );
        assert_eq!(
            dl.task.as_ref().unwrap().history.last().unwrap().class,
            "agent_crashed",
            "the attempt itself is recorded with its own class"
        );
        // Fewer crashes in a row, or another class between them: retried.
        for h in [
            &[AgentCrashed][..],
            &[AgentCrashed, Timeout],
            &[AgentCrashed, Timeout, AgentCrashed],
            &[],
        ] {
            assert!(
                matches!(
                    crash(h),
                    NextMove::Retry {
                        class: AgentCrashed,
                        ..
                    }
                ),
                "{h:?}"
            );
        }
        // Another class after crashes is judged by the policy.
        let NextMove::Retry { class, .. } = next_move(
            with_history(failed(1, Timeout, None), &[AgentCrashed, AgentCrashed]),
            &inputs(&p),
        ) else {
            panic!("expected a retry");
        };
        assert_eq!(class, Timeout);
    }

    #[test]
    fn a_transient_failure_with_attempts_left_is_retried_with_its_attempt_recorded() {
        let p = policies();
        let NextMove::Retry { item, class } =
            next_move(failed(1, FailureClass::Timeout, None), &inputs(&p))
        else {
            panic!("expected a retry");
        };
        assert_eq!(class, FailureClass::Timeout);
        assert_eq!(item.entry_id, "1-0");
        assert!(item.member.contains("upstream said no"), "{}", item.member);
    }

    #[test]
    fn the_last_attempt_goes_to_the_dead_letters_with_why() {
        let p = policies();
        let max = p.for_task("acme", "triage").max_attempts;
        let NextMove::DeadLetter(dl) =
            next_move(failed(max, FailureClass::Timeout, None), &inputs(&p))
        else {
            panic!("expected a dead letter");
        };
        assert_eq!(dl.class, FailureClass::Timeout);
        assert!(dl
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("retries exhausted"));
        let task = dl.task.as_ref().unwrap();
        assert_eq!(task.attempt, max);
        assert_eq!(task.history.len(), 1);
        assert_eq!(crate::task::step_names(&dl.steps), ["fetched"]);
        assert_eq!(dl.orig_lane, "lane");
        assert_eq!(dl.dead_lettered_at_ms, 10_000);
    }

    #[test]
    fn a_permanent_class_or_poison_is_never_retried() {
        let p = policies();
        let NextMove::DeadLetter(dl) =
            next_move(failed(1, FailureClass::InvalidInput, None), &inputs(&p))
        else {
            panic!("expected a dead letter");
        };
        assert!(dl.detail.as_deref().unwrap_or("").contains("permanent"));
        let mut poison = failed(1, FailureClass::Timeout, None);
        poison.poison = true;
        let NextMove::DeadLetter(dl) = next_move(poison, &inputs(&p)) else {
            panic!("expected a dead letter");
        };
        assert_eq!(
            dl.detail.as_deref(),
            Some("the handler declared the task poison")
        );
    }

    #[test]
    fn a_retry_due_after_the_deadline_is_dead_lettered_as_expired() {
        let p = policies();
        let mut f = failed(1, FailureClass::RateLimited, Some(10_001));
        f.retry_after = Some(Duration::from_secs(5));
        let NextMove::DeadLetter(dl) = next_move(f, &inputs(&p)) else {
            panic!("expected a dead letter");
        };
        assert_eq!(dl.class, FailureClass::Expired);
        assert_eq!(dl.error, "upstream said no");
    }

    #[test]
    fn history_and_steps_are_capped() {
        let p = policies();
        let mut f = failed(1, FailureClass::Timeout, None);
        let mut task = (*f.task).clone();
        for i in 0..MAX_HISTORY + 3 {
            task.history.push(AttemptRecord {
                attempt: 0,
                class: "timeout".into(),
                error: format!("e{i}"),
                at_ms: 0,
                duration_ms: 0,
                member: "m0".into(),
            });
        }
        task.steps = (0..MAX_STEPS + 3)
            .map(|i| crate::task::Step::completed(format!("s{i}"), serde_json::Value::Null))
            .collect();
        f.task = Arc::new(task);
        let NextMove::DeadLetter(dl) = ({
            let mut f = f;
            f.poison = true;
            next_move(f, &inputs(&p))
        }) else {
            panic!("expected a dead letter");
        };
        let task = dl.task.as_ref().unwrap();
        assert_eq!(task.history.len(), MAX_HISTORY);
        assert_eq!(task.history.last().unwrap().error, "upstream said no");
        assert_eq!(task.steps.len(), MAX_STEPS);
        assert_eq!(task.steps.last().map(|s| s.name.as_str()), Some("fetched"));
    }
}
