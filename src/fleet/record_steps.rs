//! Task records through the loops' `step`s, against a private redis-server: every move a
//! member makes leaves the task's record in the state that says where the task is — running,
//! done with its output and expiry, retry_scheduled then queued again, deferred by an open
//! breaker, taken over after a crash, dead-lettered or expired with the dead letter's id —,
//! outputs bounded or not kept, nothing written with records off, and a redelivery after a
//! lost ack acked as a duplicate without running the handler again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::checkpoint_steps::{Harness, Scripted};
use super::executor::Dispatch;
use super::isolation_sync::IsolationSync;
use super::loop_steps::{env, env_with, MEMBER, TENANT};
use crate::broker::{AckEntry, StartEntry, StartRecords};
use crate::config::{RawConfig, RawTaskOverride};
use crate::handler::{FailureClass, Handler, HandlerFuture, Outcome, TaskContext};
use crate::producer::Producer;
use crate::records::TRUNCATED_MARK;
use crate::task::{NewTask, Task};

/// A record's fields and its time to live (ms; -1 kept, -2 absent).
async fn record(h: &Harness, task_id: &str) -> (HashMap<String, String>, i64) {
    h.env.broker.record_of(TENANT, task_id).await.unwrap()
}

/// Registers a waiter on the tenant for a minute: the finishing scripts publish events only
/// while someone waits.
async fn listening(h: &Harness) {
    let now = h.env.broker.server_time_ms().await.unwrap();
    h.env
        .broker
        .register_waiter(TENANT, "test-waiter", now, now + 60_000)
        .await
        .unwrap();
}

/// A harness whose one route serves every kind with `handler`, on `env`.
fn harness_on(env: super::loop_steps::Env, handler: Arc<dyn Handler>) -> Harness {
    Harness::on(env, &["*"], handler)
}

/// A handler that reports `output` as its final output and succeeds.
fn succeeding(output: serde_json::Value) -> Arc<Scripted> {
    Scripted::new(move |_, ctx| {
        ctx.output(output.clone());
        Outcome::Done
    })
}

/// A fresh entry `id` of task `task_id` about to start.
fn mk<'a>(id: &'a str, task_id: &'a str) -> StartEntry<'a> {
    StartEntry {
        id,
        task_id,
        attempt: 1,
        kind: "triage",
        recorded: false,
    }
}

/// Runs the next queued job and returns what the executor sent the settler, unsettled.
async fn dispatch(h: &mut Harness) -> super::settlement::Settlement {
    let job = h.env.shared.pop().expect("a queued job");
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    assert_eq!(
        h.executor.step(job, permit, &h.shutdown).await,
        Dispatch::Spawned
    );
    tokio::time::timeout(Duration::from_secs(10), h.settled.recv())
        .await
        .expect("a settlement within 10 s")
        .expect("the channel is open")
}

#[tokio::test]
async fn a_task_runs_then_is_done_with_its_output_expiry_and_event() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let handler = Arc::new(WaitThen {
        gate: gate.clone(),
        output: json!({"answer": 42}),
    });
    let mut h = harness_on(env().await, handler);
    listening(&h).await;
    h.enqueue("triage", "t-1").await;
    h.read().await;
    let job = h.env.shared.pop().unwrap();
    let entry = job.entry_id.clone();
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    assert_eq!(
        h.executor.step(job, permit, &h.shutdown).await,
        Dispatch::Spawned
    );
    // While the handler runs, readers see it running, on this entry, at this member: the
    // record itself still says queued (a start writes nothing), the PEL says where it runs.
    let mut running = HashMap::new();
    for _ in 0..200 {
        running = record(&h, "t-1").await.0;
        if running.get("state").map(String::as_str) == Some("running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running["state"], "running", "{running:?}");
    assert_eq!(running["entry"], entry);
    assert_eq!(running["member"], MEMBER);
    assert_eq!(
        running["runs"], "0",
        "a run enters the history when it ends"
    );
    assert!(!running.contains_key("r1:member"), "{running:?}");
    assert_eq!(running["kind"], "triage");
    assert_eq!(running["attempt"], "1");
    assert_eq!(
        raw_state(&h, "t-1").await,
        "queued",
        "no record write at the start"
    );
    gate.notify_one();
    let s = tokio::time::timeout(Duration::from_secs(10), h.settled.recv())
        .await
        .unwrap()
        .unwrap();
    h.settle.step(s).await;
    h.settle.drain().await;
    let (done, ttl) = record(&h, "t-1").await;
    assert_eq!(done["state"], "done", "{done:?}");
    assert_eq!(done["member"], MEMBER);
    let (started, ended): (u64, u64) = (
        done["started"].parse().unwrap(),
        done["ended"].parse().unwrap(),
    );
    assert!(started <= ended, "{done:?}");
    assert_eq!(done["output"], r#"{"answer":42}"#);
    assert!(!done.contains_key("output_truncated"));
    let retention = h.env.settings.tasks().retention.as_millis() as i64;
    assert!(ttl > retention - 60_000 && ttl <= retention, "ttl {ttl}");
    assert_eq!(
        h.env.broker.record_events(TENANT).await.unwrap(),
        [("t-1".to_owned(), "done".to_owned(), entry)]
    );
    assert_eq!(
        done["runs"], "0",
        "the history holds only runs that did not end well"
    );
    assert!(!done.contains_key("r1:member"), "{done:?}");
    let runs = crate::records::runs_of(&crate::records::TaskRecord::from_fields(done));
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].member.as_deref(), runs[0].outcome.as_deref()),
        (Some(MEMBER), Some("ok"))
    );
    assert_eq!(h.env.broker.lane_len(TENANT).await.unwrap(), 0);
}

/// The record's state as stored (no PEL overlay).
async fn raw_state(h: &Harness, task_id: &str) -> String {
    h.env
        .broker
        .record_state_stored(TENANT, task_id)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Waits for its gate, then reports `output` and succeeds.
struct WaitThen {
    gate: Arc<tokio::sync::Notify>,
    output: serde_json::Value,
}

impl Handler for WaitThen {
    fn handle(&self, _task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let (gate, output) = (self.gate.clone(), self.output.clone());
        Box::pin(async move {
            gate.notified().await;
            ctx.output(output);
            Outcome::Done
        })
    }
}

#[tokio::test]
async fn a_retry_is_scheduled_then_queued_again_then_done_on_its_second_run() {
    let handler = Scripted::new(|task, ctx| {
        if task.attempt == 1 {
            Outcome::Fail {
                class: FailureClass::RateLimited,
                reason: "429 slow down".into(),
                retry_after: Some(Duration::from_millis(1)),
            }
        } else {
            ctx.output(json!("second time lucky"));
            Outcome::Done
        }
    });
    let mut h = harness_on(env().await, handler.clone());
    h.enqueue("triage", "t-r").await;
    h.read().await;
    h.run_next().await;
    let (r, ttl) = record(&h, "t-r").await;
    assert_eq!(r["state"], "retry_scheduled", "{r:?}");
    assert_eq!(r["class"], "rate_limited");
    assert_eq!(r["error"], "429 slow down");
    assert_eq!(r["attempt"], "2", "the next attempt");
    assert_eq!(r["r1:outcome"], "rate_limited");
    assert_eq!(r["r1:member"], MEMBER);
    assert_eq!(r["member"], MEMBER);
    let due: u64 = r["due"].parse().unwrap();
    let ended: u64 = r["ended"].parse().unwrap();
    assert!(
        due >= ended && due <= ended + 1_000,
        "due after the retry delay: {r:?}"
    );
    assert_eq!(ttl, -1, "a live record does not expire");
    let first_entry = r["entry"].clone();
    assert_eq!(h.promote_when_due().await, 1);
    let (q, _) = record(&h, "t-r").await;
    assert_eq!(q["state"], "queued", "{q:?}");
    assert_ne!(q["entry"], first_entry, "the new lane entry");
    assert_eq!(q["attempt"], "2");
    h.read().await;
    h.run_next().await;
    let (d, _) = record(&h, "t-r").await;
    assert_eq!(d["state"], "done", "{d:?}");
    assert_eq!(
        d["runs"], "1",
        "the failed run; the done one is the main fields"
    );
    assert_eq!(d["attempt"], "2");
    assert_eq!(d["entry"], q["entry"]);
    for f in ["r1:start", "r1:end", "started", "ended"] {
        assert!(d.contains_key(f), "{f} in {d:?}");
    }
    assert_eq!(d["r1:outcome"], "rate_limited");
    assert!(!d.contains_key("r2:outcome"), "{d:?}");
    let runs = crate::records::runs_of(&crate::records::TaskRecord::from_fields(d.clone()));
    let outcomes: Vec<_> = runs.iter().map(|r| r.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("rate_limited"), Some("ok")]);
    assert_eq!(d["output"], r#""second time lucky""#);
    assert_eq!(handler.seen().len(), 2);
    assert!(
        h.env.broker.record_events(TENANT).await.unwrap().is_empty(),
        "nobody waits: no finish events are written"
    );
}

#[tokio::test]
async fn a_task_held_back_by_an_open_breaker_is_deferred_then_runs_when_it_closes() {
    let handler = succeeding(json!(1));
    let mut h = harness_on(env().await, handler.clone());
    h.enqueue("triage", "t-d").await;
    // Read while the breaker is closed; it opens before the task starts.
    h.read().await;
    h.env
        .broker
        .breaker_set(TENANT, true, "test", "hold")
        .await
        .unwrap();
    IsolationSync::new(h.env.broker.clone(), h.env.shared.clone())
        .step()
        .await;
    let s = dispatch(&mut h).await;
    assert!(
        matches!(s, super::settlement::Settlement::Defer { .. }),
        "{s:?}"
    );
    h.settle.step(s).await;
    h.settle.drain().await;
    let (r, _) = record(&h, "t-d").await;
    assert_eq!(r["state"], "deferred", "{r:?}");
    assert!(
        r["due"].parse::<u64>().is_ok(),
        "when it is due back: {r:?}"
    );
    assert!(
        !r.contains_key("runs") || r["runs"] == "0",
        "not a run: {r:?}"
    );
    assert!(handler.seen().is_empty());
    h.env
        .broker
        .breaker_set(TENANT, false, "test", "release")
        .await
        .unwrap();
    IsolationSync::new(h.env.broker.clone(), h.env.shared.clone())
        .step()
        .await;
    assert_eq!(h.promote().await, 1);
    assert_eq!(record(&h, "t-d").await.0["state"], "queued");
    h.read().await;
    h.run_next().await;
    let (d, _) = record(&h, "t-d").await;
    assert_eq!(d["state"], "done", "{d:?}");
    assert_eq!(d["runs"], "0", "one run, the done one (main fields)");
    assert_eq!(d["member"], MEMBER);
}

#[tokio::test]
async fn a_task_taken_over_after_a_crash_runs_on_the_new_member_then_is_done() {
    let handler = succeeding(json!("ok"));
    let mut h = harness_on(env().await, handler.clone());
    h.enqueue("triage", "t-c").await;
    // A member that started the task, then died.
    let b = h.env.broker.clone();
    let ids = h.env.deliver("dead-member", 1).await;
    let started = b
        .start(
            TENANT,
            "dead-member",
            &[StartEntry {
                id: &ids[0],
                task_id: "t-c",
                attempt: 1,
                kind: "triage",
                recorded: false,
            }],
            StartRecords {
                on: true,
                refuse_done: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(started.started, ids);
    let (r, _) = record(&h, "t-c").await;
    assert_eq!(
        (r["state"].as_str(), r["member"].as_str()),
        ("running", "dead-member")
    );
    if let Ok(mut lanes) = h.env.shared.lanes.write() {
        lanes.push((b.keys().lane(TENANT), TENANT.into()));
    }
    assert_eq!(h.reclaim().await, 1);
    h.run_next().await;
    let (d, _) = record(&h, "t-c").await;
    assert_eq!(d["state"], "done", "{d:?}");
    assert_eq!(d["runs"], "1");
    assert_eq!(d["r1:member"], "dead-member");
    assert_eq!(d["r1:outcome"], "", "a run whose member died");
    assert!(
        !d.contains_key("r1:end"),
        "the first run never ended: {d:?}"
    );
    assert_eq!(d["member"], MEMBER);
    assert_eq!(handler.seen().len(), 1);
}

#[tokio::test]
async fn an_enqueued_task_whose_member_died_is_running_there_then_keeps_a_dead_run() {
    let handler = succeeding(json!("ok"));
    let mut h = harness_on(env().await, handler.clone());
    h.enqueue("triage", "t-k").await;
    // A member started it the fast way (no record write), then died.
    let b = h.env.broker.clone();
    let ids = h.env.deliver("dead-member", 1).await;
    let started = b
        .start_unclaimable(
            TENANT,
            "dead-member",
            &[StartEntry {
                id: &ids[0],
                task_id: "t-k",
                attempt: 1,
                kind: "triage",
                recorded: true,
            }],
            StartRecords {
                on: true,
                refuse_done: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(started.started, ids);
    assert_eq!(raw_state(&h, "t-k").await, "queued");
    let (r, _) = record(&h, "t-k").await;
    assert_eq!(
        (r["state"].as_str(), r["member"].as_str()),
        ("running", "dead-member"),
        "readers see where it runs: {r:?}"
    );
    if let Ok(mut lanes) = h.env.shared.lanes.write() {
        lanes.push((b.keys().lane(TENANT), TENANT.into()));
    }
    assert_eq!(h.reclaim().await, 1);
    h.run_next().await;
    let (d, _) = record(&h, "t-k").await;
    assert_eq!(d["state"], "done", "{d:?}");
    assert_eq!(d["runs"], "1", "the dead run: {d:?}");
    assert_eq!(
        (d["r1:member"].as_str(), d["r1:outcome"].as_str()),
        ("dead-member", ""),
        "the reclaim named the member it took the entry from"
    );
    assert_eq!(d["r1:start"], "", "when it started only the PEL knew");
    assert_eq!(d["member"], MEMBER);
    let runs = crate::records::runs_of(&crate::records::TaskRecord::from_fields(d));
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (
            runs[0].member.as_deref(),
            runs[0].start,
            runs[0].outcome.as_deref()
        ),
        (Some("dead-member"), None, None)
    );
    assert_eq!(runs[1].outcome.as_deref(), Some("ok"));
    assert_eq!(handler.seen().len(), 1);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_record_with_its_id_and_no_expiry() {
    let handler = Scripted::new(|_, _| Outcome::Fail {
        class: FailureClass::InvalidInput,
        reason: "the payload has no text".into(),
        retry_after: None,
    });
    let mut h = harness_on(env().await, handler);
    listening(&h).await;
    h.enqueue("triage", "t-x").await;
    h.read().await;
    h.run_next().await;
    let dls = h.dead_letters().await;
    assert_eq!(dls.len(), 1);
    let dlq_id = h.env.broker.dlq_range(TENANT, "-", "+", 1).await.unwrap()[0]
        .id
        .clone();
    let (r, ttl) = record(&h, "t-x").await;
    assert_eq!(r["state"], "dead_lettered", "{r:?}");
    assert_eq!(r["class"], "invalid_input");
    assert_eq!(r["error"], "the payload has no text");
    assert_eq!(r["dlq"], dlq_id);
    assert_eq!(r["r1:outcome"], "invalid_input");
    assert_eq!(ttl, -1, "kept as long as its dead letter");
    assert_eq!(
        h.env.broker.record_events(TENANT).await.unwrap(),
        [("t-x".to_owned(), "dead_lettered".to_owned(), dlq_id)]
    );
}

#[tokio::test]
async fn a_task_past_its_deadline_is_recorded_expired_without_a_run() {
    let handler = succeeding(json!(1));
    let mut h = harness_on(env().await, handler.clone());
    listening(&h).await;
    let mut t = NewTask::new(TENANT, "triage", json!({})).with_task_id("t-late");
    t.deadline = Some(1_000);
    Producer::new(h.env.broker.clone(), &h.env.settings)
        .enqueue(t)
        .await
        .unwrap();
    h.env.broker.ensure_group(TENANT).await.unwrap();
    h.read().await;
    h.run_next().await;
    assert!(handler.seen().is_empty());
    let (r, ttl) = record(&h, "t-late").await;
    assert_eq!(r["state"], "expired", "{r:?}");
    assert_eq!(r["class"], "expired");
    assert!(r["dlq"].contains('-'), "{r:?}");
    assert!(
        !r.contains_key("runs") || r["runs"] == "0",
        "never started: {r:?}"
    );
    assert_eq!(ttl, -1);
    let events = h.env.broker.record_events(TENANT).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("t-late", "expired")
    );
}

#[tokio::test]
async fn outputs_are_bounded_and_kept_only_for_kinds_that_store_them() {
    let env = env_with(|raw: &mut RawConfig| {
        raw.tasks.max_output_bytes = 16;
        raw.tasks.overrides = vec![RawTaskOverride {
            kind: Some("secret.*".into()),
            store_output: Some(false),
            retention_ms: Some(5_000),
            ..Default::default()
        }];
    })
    .await;
    let handler = succeeding(json!({"text": "ééééééééééééééé"}));
    let mut h = harness_on(env, handler);
    h.enqueue("triage", "t-long").await;
    h.enqueue("secret.summary", "t-secret").await;
    h.read().await;
    h.run_next().await;
    h.run_next().await;
    let (long, _) = record(&h, "t-long").await;
    assert_eq!(long["state"], "done");
    assert_eq!(long["output_truncated"], "1");
    let text = &long["output"];
    assert!(text.ends_with(TRUNCATED_MARK), "{text}");
    let kept = &text[..text.len() - TRUNCATED_MARK.len()];
    assert!(
        kept.len() <= 16 && r#"{"text":"ééééé"#.starts_with(kept),
        "{kept}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(text).is_err());
    let (secret, ttl) = record(&h, "t-secret").await;
    assert_eq!(secret["state"], "done");
    assert!(!secret.contains_key("output"), "{secret:?}");
    assert!(ttl > 0 && ttl <= 5_000, "the kind's retention: {ttl}");
}

#[tokio::test]
async fn with_records_off_no_record_index_or_event_is_written() {
    let env = env_with(|raw: &mut RawConfig| raw.tasks.enabled = false).await;
    let handler = Scripted::new(|task, _| match task.task_id.as_str() {
        "t-retry" if task.attempt == 1 => Outcome::Fail {
            class: FailureClass::Timeout,
            reason: "slow".into(),
            retry_after: Some(Duration::from_millis(1)),
        },
        "t-dead" => Outcome::Fail {
            class: FailureClass::InvalidInput,
            reason: "bad".into(),
            retry_after: None,
        },
        _ => Outcome::Done,
    });
    let mut h = harness_on(env, handler.clone());
    for id in ["t-ok", "t-retry", "t-dead"] {
        h.enqueue("triage", id).await;
    }
    h.read().await;
    for _ in 0..3 {
        h.run_next().await;
    }
    assert_eq!(h.promote_when_due().await, 1);
    h.read().await;
    h.run_next().await;
    assert_eq!(handler.seen().len(), 4);
    assert_eq!(h.env.broker.lane_len(TENANT).await.unwrap(), 0);
    assert_eq!(h.dead_letters().await.len(), 1);
    assert_eq!(h.env.broker.record_keys_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_redelivery_after_a_lost_ack_is_acked_as_a_duplicate_without_running() {
    let handler = succeeding(json!("again?"));
    let mut h = harness_on(env().await, handler.clone());
    h.enqueue("triage", "t-l").await;
    let b = h.env.broker.clone();
    // Member "slow" starts the task; it stalls long enough for this member to take the entry
    // over, then finishes and sends its ack.
    let ids = h.env.deliver("slow", 1).await;
    let on = StartRecords {
        on: true,
        refuse_done: true,
    };
    let entry = StartEntry {
        id: &ids[0],
        task_id: "t-l",
        attempt: 1,
        kind: "triage",
        recorded: false,
    };
    assert_eq!(
        b.start(TENANT, "slow", &[entry], on).await.unwrap().started,
        ids
    );
    if let Ok(mut lanes) = h.env.shared.lanes.write() {
        lanes.push((b.keys().lane(TENANT), TENANT.into()));
    }
    assert_eq!(h.reclaim().await, 1, "taken over while 'slow' stalls");
    let ack = AckEntry {
        id: &ids[0],
        task_id: "t-l",
        retention: Duration::from_secs(60),
        output: Some("\"done by slow\""),
        truncated: false,
        started_ms: 0,
        recorded: false,
        record_until: 0,
    };
    let acked = b.ack(TENANT, "slow", &[ack], 0, &[], true).await.unwrap();
    assert_eq!(
        (acked.acked, acked.marked_done),
        (0, 1),
        "not ours: marked, not acked"
    );
    let (r, _) = record(&h, "t-l").await;
    assert_eq!(r["state"], "done", "{r:?}");
    // The new owner's begin finds the task done: acked, never run, the record untouched.
    h.run_next().await;
    assert!(
        handler.seen().is_empty(),
        "the handler did not run a second time"
    );
    assert_eq!(b.pending_count(TENANT).await.unwrap(), 0);
    assert_eq!(b.lane_len(TENANT).await.unwrap(), 0);
    let (after, _) = record(&h, "t-l").await;
    assert_eq!(after, r);
    assert_eq!(after["output"], "\"done by slow\"");
    assert_eq!(h.env.shared.stats.snapshot()[TENANT].duplicates, 1);
}

#[tokio::test]
async fn both_start_paths_refuse_a_done_task_and_only_with_dedup() {
    for dedup in [true, false] {
        let env = env_with(move |raw: &mut RawConfig| raw.tasks.dedup = dedup).await;
        let b = env.broker.clone();
        let producer = Producer::new(b.clone(), &env.settings);
        for _ in 0..4 {
            producer
                .enqueue(NewTask::new(TENANT, "triage", json!({})))
                .await
                .unwrap();
        }
        b.ensure_group(TENANT).await.unwrap();
        let ids = env.deliver(MEMBER, 4).await;
        // Two entries of task "same" already done: each start path refuses one of them.
        let (a_task, b_task) = ("same", "same");
        let rec = StartRecords {
            on: true,
            refuse_done: dedup,
        };
        let first = b
            .start_unclaimable(TENANT, MEMBER, &[mk(&ids[0], a_task)], rec)
            .await
            .unwrap();
        assert_eq!(first.started, [ids[0].clone()]);
        let done = AckEntry {
            id: &ids[0],
            task_id: a_task,
            retention: Duration::from_secs(60),
            output: None,
            truncated: false,
            started_ms: 0,
            recorded: false,
            record_until: 0,
        };
        assert_eq!(
            b.ack_unclaimable(TENANT, MEMBER, &[done], 0, &[], true)
                .await
                .unwrap(),
            1
        );
        let fast = b
            .start_unclaimable(
                TENANT,
                MEMBER,
                &[mk(&ids[1], b_task), mk(&ids[2], "other")],
                rec,
            )
            .await
            .unwrap();
        let checked = b
            .start(TENANT, MEMBER, &[mk(&ids[3], b_task)], rec)
            .await
            .unwrap();
        let (r, _) = b.record_of(TENANT, "same").await.unwrap();
        if dedup {
            assert_eq!(fast.started, [ids[2].clone()]);
            assert_eq!(fast.duplicates, [ids[1].clone()]);
            assert_eq!(checked.duplicates, [ids[3].clone()]);
            assert!(checked.started.is_empty() && checked.lost.is_empty());
            assert_eq!(r["state"], "done", "untouched: {r:?}");
            assert_eq!(r["runs"], "0");
            assert_eq!(
                b.ack_duplicates(TENANT, MEMBER, &[&ids[1], &ids[3]])
                    .await
                    .unwrap(),
                2
            );
        } else {
            assert_eq!(fast.started.len(), 2);
            assert!(fast.duplicates.is_empty() && checked.duplicates.is_empty());
            assert_eq!(checked.started, [ids[3].clone()]);
            assert_eq!(r["state"], "running", "runs again: {r:?}");
            // The done run left no history; r1 is the fast start, which the checked start
            // found still running (it enters the history without an end); the checked
            // start's run is not over yet.
            assert_eq!(r["runs"], "1");
            assert!(!r.contains_key("r1:end"), "{r:?}");
        }
    }
}
