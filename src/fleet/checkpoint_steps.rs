//! Routing and step checkpoints through the loops' `step`s, against a private redis-server:
//! a kind without a route, steps recorded (and fenced) in Redis, carried by retries, dead
//! letters and takeovers, a takeover inside a side effect, and no steps hash left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::executor::{Dispatch, Executor, ExecutorSettings};
use super::loop_steps::{env, Env, MEMBER, TENANT};
use super::reader::{ReadStep, Reader};
use super::reclaimer::Reclaimer;
use super::recoverer::Recoverer;
use super::router::Router;
use super::settlement::Settlement;
use super::settler::SettleLoop;
use crate::broker::{AckEntry, DeferItem, Deferred, RetryItem, StepWrite, StepsRecorded};
use crate::handler::{FailureClass, Handler, HandlerFuture, HandlerSpec, Outcome, TaskContext};
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::{NewTask, Step, Task};

/// What a scripted handler does with one attempt (synchronously, before its future).
type Script = dyn Fn(&Task, &TaskContext) -> Outcome + Send + Sync;

/// A handler that runs a script and remembers every task it was given.
pub(super) struct Scripted {
    script: Box<Script>,
    seen: Mutex<Vec<Task>>,
}

impl Scripted {
    pub(super) fn new(
        script: impl Fn(&Task, &TaskContext) -> Outcome + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn seen(&self) -> Vec<Task> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for Scripted {
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        self.seen.lock().unwrap().push((*task).clone());
        let outcome = (self.script)(&task, &ctx);
        Box::pin(async move { outcome })
    }
}

fn step(name: &str, output: serde_json::Value, done: bool) -> Step {
    Step {
        name: name.into(),
        output,
        side_effect: !done,
        attempt: 1,
        at_ms: 1,
        done,
    }
}

/// A member's executor and settler around one handler, driven step by step.
pub(super) struct Harness {
    pub(super) env: Env,
    pub(super) executor: Executor,
    reader: Reader,
    pub(super) settled: mpsc::UnboundedReceiver<Settlement>,
    pub(super) settle: SettleLoop,
    /// Feeds the reclaimer's settlements (crash loops) nowhere: none happen here.
    reclaims: mpsc::UnboundedSender<Settlement>,
    pub(super) shutdown: Shutdown,
}

impl Harness {
    /// `handler` serves the kinds `kinds` (one route, `handlers[0]`).
    async fn new(kinds: &[&str], handler: Arc<dyn Handler>) -> Harness {
        Harness::on(env().await, kinds, handler)
    }

    /// A harness on `env` (see [`Harness::new`]).
    pub(super) fn on(env: Env, kinds: &[&str], handler: Arc<dyn Handler>) -> Harness {
        let spec = HandlerSpec {
            index: 0,
            type_name: "scripted".into(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            timeout: Duration::from_secs(5),
            max_concurrent: 2,
            options: Default::default(),
        };
        let (tx, settled) = mpsc::unbounded_channel();
        let executor = Executor::new(ExecutorSettings {
            broker: env.broker.clone(),
            shared: env.shared.clone(),
            router: Arc::new(Router::new(vec![(spec, handler)], false)),
            policies: Arc::new(env.settings.policies.clone()),
            classifier: Arc::new(env.settings.classifier.clone()),
            settle: tx.clone(),
            concurrency: 2,
            grace: Duration::from_secs(1),
            fast_start_window: Duration::ZERO,
        });
        let reader = Reader::new(
            env.broker.clone(),
            env.shared.clone(),
            tx.clone(),
            &env.settings.fleet,
        );
        let (_unused, rx) = mpsc::unbounded_channel();
        let settle = SettleLoop::new(env.settler(), rx);
        Harness {
            env,
            executor,
            reader,
            settled,
            settle,
            reclaims: tx,
            shutdown: Shutdown::new(),
        }
    }

    /// Enqueues one task of `kind`; returns its task id.
    pub(super) async fn enqueue(&self, kind: &str, id: &str) {
        let producer = Producer::new(self.env.broker.clone(), &self.env.settings);
        producer
            .enqueue(NewTask::new(TENANT, kind, json!({"n": 1})).with_task_id(id))
            .await
            .unwrap();
        self.env.broker.ensure_group(TENANT).await.unwrap();
    }

    /// Reads until the member's queue holds something.
    pub(super) async fn read(&mut self) {
        for _ in 0..5 {
            if let ReadStep::Read(_) = self.reader.step(&self.shutdown).await.unwrap() {
                if self.env.shared.queued() > 0 {
                    return;
                }
            }
        }
        panic!("nothing was read");
    }

    /// Runs the next queued job to its settlement and settles it.
    pub(super) async fn run_next(&mut self) {
        let job = self.env.shared.pop().expect("a queued job");
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        assert_eq!(
            self.executor.step(job, permit, &self.shutdown).await,
            Dispatch::Spawned
        );
        let settlement = tokio::time::timeout(Duration::from_secs(10), self.settled.recv())
            .await
            .expect("a settlement within 10 s")
            .expect("the channel is open");
        self.settle.step(settlement).await;
        self.settle.drain().await;
    }

    /// Takes over entries of other consumers idle for any time.
    pub(super) async fn reclaim(&mut self) -> u64 {
        let mut cfg = self.env.settings.fleet.reclaim.clone();
        cfg.min_idle = Duration::ZERO;
        let mut r = Reclaimer::new(
            self.env.broker.clone(),
            self.env.shared.clone(),
            self.reclaims.clone(),
            cfg,
        );
        r.step().await
    }

    /// Moves due retries back into the lane.
    pub(super) async fn promote(&self) -> u64 {
        Recoverer {
            broker: self.env.broker.clone(),
            shared: self.env.shared.clone(),
            interval: Duration::from_secs(1),
            idle_look: Duration::from_secs(1),
            next_look: std::collections::HashMap::new(),
            batch: 10,
            sweep: None,
            counts: super::recoverer::CountsUpkeep::new(),
        }
        .step()
        .await
    }

    /// Moves due retries back into the lane once the one scheduled retry is due (a delay of a
    /// millisecond or so by the server's clock; bounded): how many moved.
    pub(super) async fn promote_when_due(&self) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let moved = self.promote().await;
            if moved > 0 || std::time::Instant::now() > deadline {
                return moved;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The tenant's dead letters, each a field map.
    pub(super) async fn dead_letters(&self) -> Vec<HashMap<String, String>> {
        self.env
            .broker
            .dlq_range(TENANT, "-", "+", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                e.fields
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(&k).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The task a dead letter keeps (its `recorded_steps` merged into its steps).
    fn task_of(&self, dl: &HashMap<String, String>) -> Task {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = dl
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Task::from_dead_letter(TENANT, &dl["orig_id"], &fields, &self.env.settings.limits).unwrap()
    }

    async fn steps_keys(&self) -> u64 {
        self.env.broker.steps_keys().await.unwrap()
    }
}

#[tokio::test]
async fn a_kind_without_a_route_is_dead_lettered_as_no_handler_without_a_start() {
    let handler = Scripted::new(|_, _| Outcome::Done);
    let mut h = Harness::new(&["summarise", "score_*"], handler.clone()).await;
    h.enqueue("triage", "t-1").await;
    h.read().await;
    h.run_next().await;
    assert!(handler.seen().is_empty(), "not run");
    let dls = h.dead_letters().await;
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(dl["class"], "no_handler");
    assert_eq!(dl["deliveries"], "0", "not charged a start");
    assert_eq!(dl["recommended_action"], "replay_with_fix");
    assert!(
        dl["error"].contains("'triage'")
            && dl["error"].contains(r#"handlers[0] ["summarise", "score_*"]"#),
        "{}",
        dl["error"]
    );
    assert_eq!(h.env.broker.pending_count(TENANT).await.unwrap(), 0);
    assert_eq!(h.env.broker.lane_len(TENANT).await.unwrap(), 0);
}

#[tokio::test]
async fn only_the_entry_owner_records_steps() {
    let env = env().await;
    Producer::new(env.broker.clone(), &env.settings)
        .enqueue(NewTask::new(TENANT, "triage", json!({})))
        .await
        .unwrap();
    env.broker.ensure_group(TENANT).await.unwrap();
    let id = env.deliver(MEMBER, 1).await.remove(0);
    let draft = step("draft", json!({"text": "Dear 1.000000000000000001"}), true);
    let b = &env.broker;
    let written = b
        .record_steps(
            TENANT,
            MEMBER,
            &id,
            &[
                StepWrite::Done(draft.clone()),
                StepWrite::Started(step("send", json!(null), false)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written, StepsRecorded::Applied(2));
    let refused = b
        .record_steps(
            TENANT,
            "intruder",
            &id,
            &[StepWrite::Done(step("forged", json!(1), true))],
        )
        .await
        .unwrap();
    assert_eq!(refused, StepsRecorded::Fenced);
    let stored = b.recorded_steps(TENANT, &id).await.unwrap();
    assert_eq!(stored, [draft.clone(), step("send", json!(null), false)]);
    // A failed start is removed; a failed "start" of a done step keeps the done record.
    let cleared = b
        .record_steps(
            TENANT,
            MEMBER,
            &id,
            &[
                StepWrite::Failed("send".into()),
                StepWrite::Failed("draft".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(cleared, StepsRecorded::Applied(2));
    assert_eq!(b.recorded_steps(TENANT, &id).await.unwrap(), [draft]);
    // Only the order counter left: the hash is gone.
    b.record_steps(
        TENANT,
        MEMBER,
        &id,
        &[
            StepWrite::Started(step("x", json!(null), false)),
            StepWrite::Failed("x".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(b.steps_keys().await.unwrap(), 1);
}

/// A retry item that is not a JSON array (no redrive writer makes one) cannot carry the steps;
/// its entry's steps hash is deleted with the entry all the same, never left behind.
#[tokio::test]
async fn an_unreadable_retry_item_does_not_leave_its_steps_hash_behind() {
    let env = env().await;
    Producer::new(env.broker.clone(), &env.settings)
        .enqueue(NewTask::new(TENANT, "triage", json!({})).with_task_id("t-u"))
        .await
        .unwrap();
    env.broker.ensure_group(TENANT).await.unwrap();
    let ids = env.deliver(MEMBER, 1).await;
    let b = &env.broker;
    b.record_steps(
        TENANT,
        MEMBER,
        &ids[0],
        &[StepWrite::Done(step("draft", json!(1), false))],
    )
    .await
    .unwrap();
    assert_eq!(b.steps_keys().await.unwrap(), 1);
    let item = RetryItem {
        entry_id: ids[0].clone(),
        delay: Duration::ZERO,
        member: "not a JSON array".into(),
        ..RetryItem::new(&ids[0], Duration::ZERO, &[("task_id", "t-u".to_owned())]).unwrap()
    };
    let due = b
        .schedule_retries(TENANT, MEMBER, &[item], true)
        .await
        .unwrap();
    assert!(due[0].is_some(), "scheduled as it is");
    assert_eq!(
        b.steps_keys().await.unwrap(),
        0,
        "no steps hash left behind"
    );
    assert_eq!(b.lane_len(TENANT).await.unwrap(), 0);
}

#[tokio::test]
async fn every_move_out_of_the_lane_folds_the_recorded_steps_or_deletes_them() {
    let env = env().await;
    let producer = Producer::new(env.broker.clone(), &env.settings);
    for i in 0..5 {
        producer
            .enqueue(NewTask::new(TENANT, "triage", json!({"i": i})).with_task_id(format!("t-{i}")))
            .await
            .unwrap();
    }
    env.broker.ensure_group(TENANT).await.unwrap();
    let ids = env.deliver(MEMBER, 5).await;
    let b = &env.broker;
    // Outputs as the agent wrote them: a number beyond f64 survives (texts are never decoded).
    let draft = step("draft", json!({"n": 12345678901234567890u64}), true);
    for id in &ids {
        b.record_steps(TENANT, MEMBER, id, &[StepWrite::Done(draft.clone())])
            .await
            .unwrap();
    }
    assert_eq!(b.steps_keys().await.unwrap(), 5);
    let task_of = |id: &str, fields: &[(Vec<u8>, Vec<u8>)]| {
        Task::from_fields(TENANT, id, fields, &env.settings.limits).unwrap()
    };
    let entry = |id: String| async move {
        let e = b.lane_entry(TENANT, &id).await.unwrap().unwrap();
        e.fields.unwrap()
    };
    // Retry: the item carries them (before from_entry), the next attempt reads them.
    let f0 = entry(ids[0].clone()).await;
    let t0 = task_of(&ids[0], &f0);
    assert!(t0.steps.is_empty());
    let item = RetryItem::new(&ids[0], Duration::ZERO, &t0.retry_fields(&ids[0])).unwrap();
    let item = item.recorded(&t0.task_id, 2, "timeout", "slow".into(), 0);
    let due = b
        .schedule_retries(TENANT, MEMBER, &[item], true)
        .await
        .unwrap();
    assert!(due[0].is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(b.promote_due(TENANT, 10, true).await.unwrap().moved, 1);
    // Dead letter: the steps are in it.
    let f1 = entry(ids[1].clone()).await;
    let dl = crate::deadletter::DeadLetter {
        orig_lane: b.keys().lane(TENANT),
        orig_id: ids[1].clone(),
        task: Some(task_of(&ids[1], &f1)),
        raw: None,
        class: FailureClass::InvalidInput,
        error: "bad".into(),
        detail: None,
        steps: Vec::new(),
        failed_step: None,
        partial_output: None,
        member: MEMBER.into(),
        first_failed_at_ms: 1,
        dead_lettered_at_ms: 1,
    };
    let moved = b
        .dead_letter(
            TENANT,
            &ids[1],
            100,
            Some(MEMBER),
            Duration::ZERO,
            dl.record_task_id().as_deref(),
            true,
            Some(0),
            &dl.to_fields(),
        )
        .await
        .unwrap();
    assert!(moved.moved);
    // Deferral: the deferred item carries them.
    let out = b
        .defer(
            TENANT,
            MEMBER,
            &[DeferItem {
                entry_id: ids[2].clone(),
                delay: Duration::ZERO,
            }],
            true,
        )
        .await
        .unwrap();
    assert!(matches!(out[0], Deferred::Due(_)));
    // Acks (owner-checked and fast) delete them.
    let acked = b
        .ack(
            TENANT,
            MEMBER,
            &[AckEntry::bare(&ids[3])],
            0,
            &[&ids[3]],
            true,
        )
        .await
        .unwrap();
    assert_eq!(acked.acked, 1);
    assert_eq!(
        b.ack_unclaimable(
            TENANT,
            MEMBER,
            &[AckEntry::bare(&ids[4])],
            0,
            &[&ids[4]],
            true
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(b.steps_keys().await.unwrap(), 0, "no steps hash is left");
    // The promoted retry and the released deferral are new lane entries with the steps.
    assert_eq!(b.promote_due(TENANT, 10, true).await.unwrap().moved, 1);
    let mut reader = b.reader("reader", Duration::from_millis(10)).await.unwrap();
    let streams = reader
        .read(
            &[b.keys().lane(TENANT)],
            crate::broker::ReadFrom::New,
            10,
            None,
        )
        .await
        .unwrap();
    let entries: Vec<_> = streams.into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(entries.len(), 2);
    for e in entries {
        let t = task_of(&e.id, e.fields.as_deref().unwrap());
        assert_eq!(t.steps, std::slice::from_ref(&draft), "{}", t.task_id);
    }
    let dls = b.dlq_range(TENANT, "-", "+", 10).await.unwrap();
    let fields = dls[0].fields.clone().unwrap();
    let kept = Task::from_dead_letter(TENANT, &ids[1], &fields, &env.settings.limits).unwrap();
    assert_eq!(kept.steps, [draft]);
}

#[tokio::test]
async fn steps_of_a_failed_attempt_reach_the_next_attempt_with_their_outputs() {
    let handler = Scripted::new(|task, ctx| {
        // The context knows the attempt and the retry policy's budget (retry.max_attempts).
        if (ctx.attempt(), ctx.max_attempts()) != (task.attempt, 3) {
            return Outcome::fail(FailureClass::InvalidInput, "wrong attempt numbers");
        }
        if task.attempt == 1 {
            ctx.step_started("draft", false).unwrap();
            ctx.step_done("draft", json!({"text": "Dear customer"}))
                .unwrap();
            Outcome::Fail {
                class: FailureClass::RateLimited,
                reason: "slow down".into(),
                retry_after: Some(Duration::from_millis(1)),
            }
        } else {
            Outcome::Done
        }
    });
    let mut h = Harness::new(&["triage_*"], handler.clone()).await;
    h.enqueue("triage_ticket", "t-1").await;
    h.read().await;
    h.run_next().await;
    assert_eq!(h.env.broker.retry_len(TENANT).await.unwrap(), 1);
    assert_eq!(h.steps_keys().await, 0, "folded into the retry item");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(h.promote().await, 1);
    h.read().await;
    h.run_next().await;
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].attempt, 2);
    let draft = &seen[1].steps;
    assert_eq!(draft.len(), 1);
    assert_eq!(
        (
            draft[0].name.as_str(),
            &draft[0].output,
            draft[0].attempt,
            draft[0].done
        ),
        ("draft", &json!({"text": "Dear customer"}), 1, true)
    );
    assert_eq!(h.env.broker.lane_len(TENANT).await.unwrap(), 0);
    assert_eq!(h.steps_keys().await, 0);
}

/// The recorder starts with the attempt's first step, on the member's runtime: a step
/// reported from a thread outside it (a handler's own OS thread) is recorded all the same,
/// before the attempt settles.
#[tokio::test]
async fn a_step_reported_from_a_thread_outside_the_runtime_is_recorded() {
    let handler = Scripted::new(|task, ctx| {
        if task.attempt > 1 {
            return Outcome::Done;
        }
        let ctx = ctx.clone();
        let reported = std::thread::spawn(move || ctx.step_done("fetch", json!({"rows": 3})))
            .join()
            .expect("the reporting thread ran");
        match reported {
            Ok(()) => Outcome::Fail {
                class: FailureClass::RateLimited,
                reason: "slow down".into(),
                retry_after: Some(Duration::from_millis(1)),
            },
            Err(why) => Outcome::fail(FailureClass::InvalidInput, why),
        }
    });
    let mut h = Harness::new(&["triage_*"], handler.clone()).await;
    h.enqueue("triage_ticket", "t-thread").await;
    h.read().await;
    h.run_next().await;
    assert_eq!(h.env.broker.retry_len(TENANT).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(h.promote().await, 1);
    h.read().await;
    h.run_next().await;
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    let steps: Vec<(&str, &serde_json::Value, bool)> = seen[1]
        .steps
        .iter()
        .map(|s| (s.name.as_str(), &s.output, s.done))
        .collect();
    assert_eq!(steps, [("fetch", &json!({"rows": 3}), true)]);
    assert_eq!(h.steps_keys().await, 0);
}

#[tokio::test]
async fn a_dead_letter_shows_the_steps_with_outputs_and_the_step_that_failed() {
    let handler = Scripted::new(|_, ctx| {
        ctx.step_done("draft", json!("Dear customer")).unwrap();
        ctx.step_started("review", false).unwrap();
        Outcome::fail(FailureClass::InvalidInput, "the reviewer refused it")
    });
    let mut h = Harness::new(&["*"], handler).await;
    h.enqueue("triage", "t-1").await;
    h.read().await;
    h.run_next().await;
    let dls = h.dead_letters().await;
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0]["class"], "invalid_input");
    assert_eq!(dls[0]["failed_step"], "review");
    let task = h.task_of(&dls[0]);
    assert_eq!(task.steps.len(), 1);
    assert_eq!(task.steps[0].output, json!("Dear customer"));
    assert!(dls[0].contains_key("recorded_steps"), "{:?}", dls[0]);
    assert_eq!(h.steps_keys().await, 0);
}

#[tokio::test]
async fn an_attempt_failing_inside_a_side_effect_is_a_partial_execution() {
    let handler = Scripted::new(|_, ctx| {
        ctx.step_started("pay", true).unwrap();
        Outcome::fail(FailureClass::Timeout, "the payment API hung")
    });
    let mut h = Harness::new(&["*"], handler).await;
    h.enqueue("billing", "t-1").await;
    h.read().await;
    h.run_next().await;
    let dls = h.dead_letters().await;
    assert_eq!(
        dls[0]["class"], "partial_execution",
        "never retried blindly"
    );
    assert_eq!(dls[0]["failed_step"], "pay");
    assert!(dls[0]["error"].contains("timeout: the payment API hung"));
    let task = h.task_of(&dls[0]);
    assert!(task.steps.iter().any(|s| s.name == "pay" && !s.done));
    assert_eq!(h.env.broker.retry_len(TENANT).await.unwrap(), 0);
    assert_eq!(h.steps_keys().await, 0);
}

#[tokio::test]
async fn a_taken_over_entry_runs_with_the_steps_its_dead_member_recorded() {
    let handler = Scripted::new(|_, _| Outcome::Done);
    let mut h = Harness::new(&["*"], handler.clone()).await;
    h.enqueue("triage", "t-1").await;
    let id = h.env.deliver("dead-member", 1).await.remove(0);
    let draft = step("draft", json!({"text": "Dear customer"}), true);
    let recorded = h
        .env
        .broker
        .record_steps(
            TENANT,
            "dead-member",
            &id,
            &[StepWrite::Done(draft.clone())],
        )
        .await
        .unwrap();
    assert_eq!(recorded, StepsRecorded::Applied(1));
    if let Ok(mut lanes) = h.env.shared.lanes.write() {
        lanes.push((h.env.broker.keys().lane(TENANT), TENANT.into()));
    }
    assert_eq!(h.reclaim().await, 1);
    h.run_next().await;
    let seen = handler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].steps, [draft]);
    assert_eq!(h.env.broker.pending_count(TENANT).await.unwrap(), 0);
    assert_eq!(h.steps_keys().await, 0, "the ack deleted the steps hash");
}

#[tokio::test]
async fn a_taken_over_entry_inside_a_side_effect_is_dead_lettered_without_running() {
    let handler = Scripted::new(|_, _| Outcome::Done);
    let mut h = Harness::new(&["*"], handler.clone()).await;
    h.enqueue("billing", "t-1").await;
    let id = h.env.deliver("dead-member", 1).await.remove(0);
    h.env
        .broker
        .record_steps(
            TENANT,
            "dead-member",
            &id,
            &[
                StepWrite::Done(step("quote", json!(42), true)),
                StepWrite::Started(step("charge", json!(null), false)),
            ],
        )
        .await
        .unwrap();
    if let Ok(mut lanes) = h.env.shared.lanes.write() {
        lanes.push((h.env.broker.keys().lane(TENANT), TENANT.into()));
    }
    assert_eq!(h.reclaim().await, 1);
    h.run_next().await;
    assert!(handler.seen().is_empty(), "not run again");
    let dls = h.dead_letters().await;
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0]["class"], "partial_execution");
    assert_eq!(dls[0]["failed_step"], "charge");
    assert_eq!(dls[0]["recommended_action"], "manual_review");
    let task = h.task_of(&dls[0]);
    assert_eq!(
        task.steps
            .iter()
            .map(|s| (s.name.as_str(), s.done))
            .collect::<Vec<_>>(),
        [("quote", true), ("charge", false)]
    );
    assert_eq!(h.steps_keys().await, 0);
}
