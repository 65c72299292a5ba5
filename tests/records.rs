//! Task records written by real members: a raw-XADD duplicate of a done task is acked without
//! running (both start paths) and counted, and a SIGKILL at each settle point never leaves a
//! record that disagrees with where its task is — checked the moment the member dies and
//! again once another life has settled everything. Real redis-server, real member processes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{eventually, text_fields, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// Quick retries (so failing tasks reach the dead letters fast), a short idle time.
const QUICK_TOML: &str = r#"
[fleet]
task_timeout_ms = 500
concurrency = 16
read_batch = 32

[reclaim]
min_idle_ms = 1000
interval_ms = 200

[retry]
max_attempts = 2
delays_ms = [50]
jitter = "none"
poll_interval_ms = 50
"#;

/// A task record's fields (empty when there is none).
async fn record(env: &TestEnv, tenant: &str, task_id: &str) -> HashMap<String, String> {
    env.task_read(tenant, task_id).await.0
}

/// Where each task of a tenant is: lane entries (with whether pending), the retry schedule and
/// the deferred set (with the entry each came from), the dead letters.
#[derive(Debug, Default)]
struct Places {
    /// lane entry id → (task_id, pending)
    lane: HashMap<String, (String, bool)>,
    /// task_id → from_entry, per set
    retry: HashMap<String, String>,
    deferred: HashMap<String, String>,
    /// dead-letter id → task_id
    dlq: HashMap<String, String>,
}

impl Places {
    async fn read(env: &TestEnv, tenant: &str) -> Places {
        let mut raw = env.raw().await;
        let key = |k: &str| format!("{}:{{{tenant}}}:{k}", env.prefix);
        let mut p = Places::default();
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(key("lane"))
            .arg("redrive")
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query_async(&mut raw)
            .await
            .unwrap_or_default();
        let pending: HashSet<String> = pending.into_iter().map(|e| e.0).collect();
        for (stream, dead) in [("lane", false), ("dlq", true)] {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(key(stream))
                .arg("-")
                .arg("+")
                .query_async(&mut raw)
                .await
                .unwrap();
            for e in redrive::testkit::entries(v).unwrap() {
                let f = text_fields(e.fields.unwrap_or_default());
                let tid = f
                    .get("task_id")
                    .cloned()
                    .unwrap_or_else(|| format!("x-{}", e.id));
                if dead {
                    p.dlq.insert(e.id, tid);
                } else {
                    let is_pending = pending.contains(&e.id);
                    p.lane.insert(e.id, (tid, is_pending));
                }
            }
        }
        for (set, into) in [("retry", &mut p.retry), ("deferred", &mut p.deferred)] {
            let items: Vec<String> = redis::cmd("ZRANGE")
                .arg(key(set))
                .arg(0)
                .arg(-1)
                .query_async(&mut raw)
                .await
                .unwrap();
            for item in items {
                let flat: Vec<String> = serde_json::from_str(&item).unwrap();
                let f: HashMap<&str, &str> = flat
                    .chunks(2)
                    .map(|kv| (kv[0].as_str(), kv[1].as_str()))
                    .collect();
                into.insert(f["task_id"].to_owned(), f["from_entry"].to_owned());
            }
        }
        p
    }
}

/// Every way the record of one of `ids` disagrees with where its task is.
async fn disagreements(env: &TestEnv, tenant: &str, ids: &[String]) -> Vec<String> {
    let places = Places::read(env, tenant).await;
    let mut bad = Vec::new();
    for id in ids {
        let r = record(env, tenant, id).await;
        let in_lane: Vec<(&String, bool)> = places
            .lane
            .iter()
            .filter(|(_, (t, _))| t == id)
            .map(|(e, (_, p))| (e, *p))
            .collect();
        let in_dlq: Vec<&String> = places
            .dlq
            .iter()
            .filter(|(_, t)| *t == id)
            .map(|(d, _)| d)
            .collect();
        let (retry, deferred) = (places.retry.get(id), places.deferred.get(id));
        let somewhere =
            in_lane.len() + in_dlq.len() + retry.is_some() as usize + deferred.is_some() as usize;
        let mut fail = |why: &str| {
            bad.push(format!("{id}: {why}; record {r:?}; lane {in_lane:?}, dlq {in_dlq:?}, retry {retry:?}, deferred {deferred:?}"))
        };
        if somewhere != 1 && !(somewhere == 0 && r.get("state").map(String::as_str) == Some("done"))
        {
            fail("not in exactly one place");
            continue;
        }
        let entry = r.get("entry");
        match r.get("state").map(String::as_str) {
            // Not started yet: published without a record (until the producer writes one).
            None => {
                if in_lane.is_empty() {
                    fail("no record, not in its lane");
                }
            }
            Some("queued") | Some("replayed") => {
                if !in_lane.iter().any(|(e, _)| Some(*e) == entry) {
                    fail("queued, but its entry is not in the lane");
                }
            }
            Some("running") => {
                if !in_lane
                    .iter()
                    .any(|(e, pending)| Some(*e) == entry && *pending)
                {
                    fail("running, but its entry is not pending in the lane");
                }
            }
            Some("retry_scheduled") => {
                if retry != entry {
                    fail("retry_scheduled, but not scheduled from its entry");
                }
            }
            Some("deferred") => {
                if deferred != entry {
                    fail("deferred, but not held back from its entry");
                }
            }
            Some("done") => {
                if somewhere != 0 {
                    fail("done, but still somewhere");
                }
            }
            Some("dead_lettered") | Some("expired") => {
                if in_dlq.len() != 1 || r.get("dlq") != Some(in_dlq[0]) {
                    fail("dead, but not in the dead letters under its dlq id");
                }
            }
            Some(other) => fail(&format!("unexpected state {other}")),
        }
    }
    bad
}

fn sim(what: &str) -> serde_json::Value {
    json!({"simulate": what, "work_ms": 5})
}

#[tokio::test]
async fn sigkill_at_each_settle_point_leaves_records_that_agree_with_the_tasks() {
    for (i, point) in redrive::testkit::POINTS.iter().enumerate() {
        let env = TestEnv::new();
        let cfg = env.config_file("quick.toml", QUICK_TOML);
        let vars = [
            ("REDRIVE_CONFIG", cfg.as_str()),
            ("REDRIVE_FLEET__HANDLER", "demo"),
        ];
        let mut ids = Vec::new();
        let mut failing = HashSet::new();
        let mut tasks = Vec::new();
        for n in 0..120 {
            let id = format!("t{n}");
            let payload = match n % 12 {
                0 => {
                    failing.insert(id.clone());
                    sim("malformed_output")
                }
                1 => {
                    failing.insert(id.clone());
                    sim("rate_limited")
                }
                _ => sim("ok"),
            };
            tasks.push(NewTask::new("acme", "triage", payload).with_task_id(&id));
            ids.push(id);
        }
        env.enqueue_tasks(tasks).await;
        let broker = env.broker().await;
        if *point == "after_claim" {
            // Entries pending at a consumer that never comes back, for the reclaim.
            env.read_as("acme", "ghost", 30).await;
        }
        let hit = if *point == "after_claim" { "1" } else { "2" };
        let failpoint = format!("{point}:{hit}");
        let mut killed = vars.to_vec();
        killed.push(("REDRIVE_FAILPOINT", &failpoint));
        let mut a = env.member("a", &killed);
        let status = a.wait_exit(LONG);
        assert_eq!(status.code(), None, "{point}: killed by a signal");
        assert!(a.log_text().contains("failpoint reached"), "{point}");
        // The moment of the kill: every record agrees with where its task is.
        let bad = disagreements(&env, "acme", &ids).await;
        assert!(bad.is_empty(), "{point}, at the kill:\n{}", bad.join("\n"));
        let mut after = if i % 2 == 0 {
            eventually(LONG, "the dead member's lease expired", || async {
                broker.lease_remaining("a").await.unwrap().is_none()
            })
            .await;
            env.member("a", &vars)
        } else {
            env.member("b", &vars)
        };
        eventually(LONG, "everything settled", || async {
            broker.lane_len("acme").await.unwrap() == 0
                && broker.pending_count("acme").await.unwrap() == 0
                && broker.retry_len("acme").await.unwrap() == 0
                && broker.dlq_len("acme").await.unwrap() as usize >= failing.len()
        })
        .await;
        assert!(after.stop().success(), "{}", after.log_text());
        let bad = disagreements(&env, "acme", &ids).await;
        assert!(bad.is_empty(), "{point}, settled:\n{}", bad.join("\n"));
        for id in &ids {
            let state = record(&env, "acme", id).await.remove("state");
            let want = if failing.contains(id) {
                "dead_lettered"
            } else {
                "done"
            };
            assert_eq!(state.as_deref(), Some(want), "{point}: {id}");
        }
        eprintln!(
            "{point}: {} records agree with their tasks at the kill and after",
            ids.len()
        );
    }
}

/// Sums the samples of a metric family whose labels contain `labels`.
fn metric(body: &str, name: &str, labels: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A raw XADD of a task_id whose record says done (a foreign producer's duplicate) is acked
/// without running, counted and logged; through the fast start (fresh reads) and through
/// start.lua (no fast window: a short idle time).
#[tokio::test]
async fn a_raw_duplicate_of_a_done_task_is_acked_without_running_and_counted() {
    for (label, idle) in [("fast start", "30000"), ("checked start", "200")] {
        let env = TestEnv::new();
        env.enqueue_tasks(vec![
            NewTask::new("acme", "triage", sim("ok")).with_task_id("once")
        ])
        .await;
        let mut m = env.member(
            "m1",
            &[
                ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
                ("REDRIVE_RECLAIM__MIN_IDLE_MS", idle),
                ("REDRIVE_RECLAIM__HEARTBEAT", "true"),
            ],
        );
        let addr = m.metrics_addr();
        eventually(LONG, "the task is done", || async {
            record(&env, "acme", "once")
                .await
                .get("state")
                .map(String::as_str)
                == Some("done")
        })
        .await;
        let done = record(&env, "acme", "once").await;
        let mut raw = env.raw().await;
        let dup: String = redis::cmd("XADD")
            .arg(format!("{}:{{acme}}:lane", env.prefix))
            .arg("*")
            .arg("task_id")
            .arg("once")
            .arg("kind")
            .arg("triage")
            .arg("payload")
            .arg(sim("ok").to_string())
            .query_async(&mut raw)
            .await
            .unwrap();
        env.wait_drained(&["acme"], LONG).await;
        eventually(LONG, "the duplicate is counted", || async {
            let (_, body) = common::http_get(&addr, "/metrics");
            metric(&body, "redrive_duplicates_total", r#"side="member""#) == 1.0
        })
        .await;
        let (_, body) = common::http_get(&addr, "/metrics");
        assert_eq!(
            metric(
                &body,
                "redrive_task_records_written_total",
                r#"state="done""#
            ),
            1.0,
            "{label}: one done record, none for the duplicate"
        );
        assert!(m.stop().success());
        let runs: Vec<_> = env
            .side_effects()
            .into_iter()
            .filter(|e| e.1 == "once")
            .collect();
        assert_eq!(runs.len(), 1, "{label}: the handler ran once: {runs:?}");
        assert_eq!(
            record(&env, "acme", "once").await,
            done,
            "{label}: record untouched"
        );
        let log = m.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("acked as a duplicate"))
            .unwrap_or_else(|| panic!("{label}: no duplicate line in {log}"));
        assert!(line.contains("once") && line.contains(&dup), "{line}");
    }
}

/// Keys of `tenant` matching `pattern` after the tenant's tag (SCAN).
async fn keys_of(env: &TestEnv, tenant: &str, pattern: &str) -> Vec<String> {
    let mut raw = env.raw().await;
    let mut out: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{{tenant}}}:{pattern}", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    out.sort();
    out
}

/// A producer of its own whose `tasks.retention_ms` is `retention_ms`.
fn producer_keeping(
    env: &TestEnv,
    broker: redrive::Broker,
    retention_ms: u64,
) -> redrive::Producer {
    let mut raw = redrive::RawConfig::defaults().unwrap();
    raw.redis.url = env.url();
    raw.redis.key_prefix = env.prefix.clone();
    raw.tasks.retention_ms = retention_ms;
    redrive::Producer::new(broker, &redrive::Settings::from_raw(raw).unwrap())
}

/// Waits until task `task_id` of `tenant` reads `done` (task_read.lua).
async fn wait_done(env: &TestEnv, tenant: &str, task_id: &str) {
    eventually(LONG, "the task reads done", || async {
        record(env, tenant, task_id)
            .await
            .get("state")
            .map(String::as_str)
            == Some("done")
    })
    .await;
}

/// The record's stored state (not as readers show it) and its time to live, ms.
async fn stored(env: &TestEnv, tenant: &str, task_id: &str) -> (Option<String>, i64) {
    let mut raw = env.raw().await;
    let key = format!("{}:{{{tenant}}}:task:{task_id}", env.prefix);
    let state: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("state")
        .query_async(&mut raw)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    (state, ttl)
}

#[tokio::test]
async fn a_task_done_soon_after_its_enqueue_goes_to_the_done_log_and_reads_done_everywhere() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![
        NewTask::new("acme", "triage", sim("ok")).with_task_id("quick")
    ])
    .await;
    // Written at enqueue with the retention (24 h by default) plus an eighth.
    let (state, ttl) = stored(&env, "acme", "quick").await;
    assert_eq!(state.as_deref(), Some("queued"));
    let full = 86_400_000i64 + 86_400_000 / 8;
    assert!(
        ttl > full - 60_000 && ttl <= full,
        "expiry set at enqueue: {ttl}"
    );
    let mut m = env.member("m1", &[]);
    wait_done(&env, "acme", "quick").await;
    assert!(m.stop().success());
    // Nothing was written to the record at its done: its facts are in the done log.
    let (state, after) = stored(&env, "acme", "quick").await;
    assert_eq!(
        state.as_deref(),
        Some("queued"),
        "no record write at the done"
    );
    assert!(
        after > 0 && after <= ttl,
        "the enqueue's expiry stands: {after}"
    );
    let logs = keys_of(&env, "acme", "done:*").await;
    assert_eq!(logs.len(), 1, "one done log: {logs:?}");
    let mut raw = env.raw().await;
    let at = |key: String| {
        let mut c = redis::cmd("PEXPIRETIME");
        c.arg(key);
        c
    };
    let log_at: i64 = at(logs[0].clone()).query_async(&mut raw).await.unwrap();
    let record_at: i64 = at(format!("{}:{{acme}}:task:quick", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        record_at > 0 && log_at >= record_at,
        "the log outlives the record: {log_at} < {record_at}"
    );
    let r = record(&env, "acme", "quick").await;
    assert_eq!(r["member"], "m1");
    let started: u64 = r["started"].parse().unwrap();
    let ended: u64 = r["ended"].parse().unwrap();
    assert!(started > 0 && started <= ended, "{r:?}");
    let enq: u64 = r["enq"].parse().unwrap();
    assert!(enq <= started, "{r:?}");
    let output: serde_json::Value = serde_json::from_str(&r["output"]).unwrap();
    assert_eq!(output["summary"], "handled triage for acme");
    assert!(!r.contains_key("output_truncated"));
    // The CLI reads it the same way.
    let (code, out, err) = env.cli(&["task", "show", "acme/quick", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "done", "{shown}");
    assert_eq!(
        shown["output"]["summary"], "handled triage for acme",
        "{shown}"
    );
    // Enqueueing the same id again is refused as a duplicate of a done task.
    let again = env
        .producer()
        .await
        .enqueue(NewTask::new("acme", "triage", sim("ok")).with_task_id("quick"))
        .await
        .unwrap();
    assert_eq!(
        again.duplicate.map(|d| d.state),
        Some(redrive::TaskState::Done),
        "a duplicate of the done task"
    );
    // A list by state finds it among the done ones.
    let (code, out, err) = env.cli(
        &["task", "list", "--tenant", "acme", "--state", "done"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("quick"), "{out}");
}

#[tokio::test]
async fn a_record_whose_enqueue_expiry_does_not_cover_the_members_retention_is_written_at_the_done()
{
    let env = TestEnv::new();
    // The producer's retention is short (2 h): its record's expiry (2.25 h) cannot cover the
    // member's (the default, 24 h), so the member writes the done record itself. (Below an
    // hour enqueue.lua sets no expiry at all: the done writes the record.)
    let p = producer_keeping(&env, env.broker().await, 7_200_000);
    p.enqueue(NewTask::new("acme", "triage", sim("ok")).with_task_id("short"))
        .await
        .unwrap();
    let (_, ttl) = stored(&env, "acme", "short").await;
    assert!(ttl > 8_100_000 - 60_000 && ttl <= 8_100_000, "{ttl}");
    let mut m = env.member("m1", &[]);
    wait_done(&env, "acme", "short").await;
    assert!(m.stop().success());
    let (state, ttl) = stored(&env, "acme", "short").await;
    assert_eq!(state.as_deref(), Some("done"), "written at the done");
    assert!(
        ttl > 86_000_000,
        "the member's retention from the done: {ttl}"
    );
    assert!(keys_of(&env, "acme", "done:*").await.is_empty());

    // Under an hour: no expiry at enqueue, and the entry says only that it has its record.
    let p = producer_keeping(&env, env.broker().await, 2_000);
    let e = p
        .enqueue(NewTask::new("acme", "triage", sim("ok")).with_task_id("tiny"))
        .await
        .unwrap();
    assert_eq!(
        stored(&env, "acme", "tiny").await,
        (Some("queued".into()), -1)
    );
    let fields: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("{}:{{acme}}:lane", env.prefix))
        .arg(&e.entry_id)
        .arg(&e.entry_id)
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
    assert_eq!(fields[0].1["recorded"], "1");
}

/// A member SIGKILLed in the middle of a drain, then another life: every task reads `done`
/// through task_read.lua with its member, start, end and output — those done through the done
/// log and those whose records were written (taken over from the dead member) alike — and no
/// record still says queued or running on an entry that left the lane without its facts.
#[tokio::test]
async fn a_member_killed_mid_drain_leaves_every_task_readable_as_done_with_its_facts() {
    let env = TestEnv::new();
    // A reclaim idle time long enough for fast acks (the done log needs them: half the idle
    // time, less the response timeout); the second life resumes the dead one's pending
    // entries under the same name at once.
    let vars = [
        ("REDRIVE_FLEET__CONCURRENCY", "8"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "20000"),
    ];
    let n = 600;
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| {
            NewTask::new("acme", "triage", json!({"simulate": "ok", "work_ms": 20}))
                .with_task_id(format!("k-{i}"))
        })
        .collect();
    env.enqueue_tasks(tasks).await;
    let mut m1 = env.member("m1", &vars);
    let broker = env.broker().await;
    eventually(LONG, "some tasks done", || async {
        broker.lane_len("acme").await.unwrap() < (n as u64) * 2 / 3
    })
    .await;
    m1.kill9();
    let mut again = env.member("m1", &vars);
    env.wait_drained(&["acme"], LONG).await;
    assert!(again.stop().success());
    let mut logged = 0;
    let mut written = 0;
    for i in 0..n {
        let id = format!("k-{i}");
        let r = record(&env, "acme", &id).await;
        assert_eq!(
            r.get("state").map(String::as_str),
            Some("done"),
            "{id}: {r:?}"
        );
        for f in ["member", "started", "ended", "output"] {
            assert!(
                r.get(f).is_some_and(|v| !v.is_empty()),
                "{id}: no {f}: {r:?}"
            );
        }
        match stored(&env, "acme", &id).await.0.as_deref() {
            Some("queued") => logged += 1,
            Some("done") => written += 1,
            other => panic!("{id}: stored {other:?}"),
        }
    }
    assert!(logged > 0, "some went through the done log");
    assert_eq!(logged + written, n);
}
