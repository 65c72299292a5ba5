//! The failure pipeline end to end: every failure class takes its path (retries on the
//! configured schedule, dead letters with their context), crash loops, SIGKILL at each settle
//! point, concurrent recovery loops and reclaimers, heartbeats, the dead-letter cap.
//! Real redis-server, real member processes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{counts, eventually, Member, Supervisor, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);
const HOUR_MS: u64 = 3_600_000;

/// A config with long tiered delays (so nothing is due until the test says so), no jitter,
/// overrides for one kind and one tenant, and extra classification rules.
const SCHEDULE_TOML: &str = r#"
[fleet]
task_timeout_ms = 300

[retry]
max_attempts = 3
backoff = "tiered"
delays_ms = [3600000, 7200000]
max_delay_ms = 7200000
jitter = "none"
poll_interval_ms = 50

[retry.kinds.once]
max_attempts = 1

[retry.tenants.slowco]
delays_ms = [600000]

[classify]
rules = [
  { status = 503, class = "upstream_unavailable" },
  { contains = "model error", class = "llm_error" },
  { contains = "invalid input", class = "invalid_input" },
  { status = 401, class = "unauthorized" },
]
"#;

fn task(tenant: &str, kind: &str, id: &str, payload: Value) -> NewTask {
    NewTask::new(tenant, kind, payload).with_task_id(id)
}

fn error(message: &str) -> Value {
    json!({"simulate": "error", "message": message, "work_ms": 0})
}

fn sim(what: &str) -> Value {
    json!({"simulate": what, "work_ms": 0})
}

/// Waits until `tenant`'s retry schedule holds exactly `ids`, each at `attempt`; returns them
/// with their due times.
async fn wait_scheduled(
    env: &TestEnv,
    tenant: &str,
    ids: &[&str],
    attempt: u32,
) -> HashMap<String, u64> {
    let want: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
    let what = format!("{tenant}: {ids:?} scheduled for attempt {attempt}");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let items = env.scheduled_retries(tenant).await;
        let got: HashMap<String, u64> = items
            .iter()
            .filter(|(f, _)| f["attempt"] == attempt.to_string())
            .map(|(f, due)| (f["task_id"].clone(), *due))
            .collect();
        if got.keys().cloned().collect::<HashSet<_>>() == want && items.len() == want.len() {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts every due time lies within `delay` of the window in which the failures happened.
fn assert_due_within(due: &HashMap<String, u64>, from: u64, to: u64, delay: u64) {
    for (id, d) in due {
        assert!(
            (from + delay..=to + delay).contains(d),
            "{id}: due {d} outside [{}, {}] (delay {delay} ms)",
            from + delay,
            to + delay
        );
    }
}

#[tokio::test]
async fn transient_failures_retry_on_the_configured_schedule_then_dead_letter() {
    let env = TestEnv::new();
    let cfg = env.config_file("schedule.toml", SCHEDULE_TOML);
    let acme = [
        ("acme-timeout", sim("timeout")),
        (
            "acme-503",
            error("gateway answered HTTP 503 for request 8812"),
        ),
        ("acme-llm", error("model error: completion was cut off")),
        ("acme-unknown", error("the agent lost its train of thought")),
        ("acme-panic", sim("panic")),
    ];
    let mut tasks: Vec<NewTask> = acme
        .iter()
        .map(|(id, p)| task("acme", "triage", id, p.clone()))
        .collect();
    tasks.push(task("slowco", "triage", "slowco-timeout", sim("timeout")));
    tasks.push(task("acme", "once", "acme-once", sim("timeout")));
    tasks.push(task("acme", "triage", "acme-429", sim("rate_limited")));

    let t0 = env.server_time_ms().await;
    env.enqueue_tasks(tasks).await;
    let mut m = env.member("m1", &[("REDRIVE_CONFIG", &cfg)]);
    let ids: Vec<&str> = acme.iter().map(|(id, _)| *id).collect();

    // First failure: the first tier (1 h), or the tenant's own tier for slowco (10 min).
    let due = wait_scheduled(&env, "acme", &ids, 2).await;
    let slow = wait_scheduled(&env, "slowco", &["slowco-timeout"], 2).await;
    let t1 = env.server_time_ms().await;
    assert_due_within(&due, t0, t1, HOUR_MS);
    assert_due_within(&slow, t0, t1, 600_000);

    // The clock "moves" an hour: the recovery loop puts them back, they fail again and wait
    // for the second tier.
    let t2 = env.server_time_ms().await;
    assert_eq!(env.make_retries_due("acme").await, ids.len());
    let due = wait_scheduled(&env, "acme", &ids, 3).await;
    let t3 = env.server_time_ms().await;
    assert_due_within(&due, t2, t3, 2 * HOUR_MS);

    // Third attempt: the budget is spent, so they go to the dead letters.
    env.make_retries_due("acme").await;
    eventually(LONG, "acme dead letters", || async {
        env.dead_letters("acme").await.len() == ids.len() + 2
    })
    .await;
    assert!(env.scheduled_retries("acme").await.is_empty());

    let dead: HashMap<String, HashMap<String, String>> = env
        .dead_letters("acme")
        .await
        .into_iter()
        .map(|f| (f["task_id"].clone(), f))
        .collect();
    for (id, class) in [
        ("acme-timeout", "timeout"),
        ("acme-503", "upstream_unavailable"),
        ("acme-llm", "llm_error"),
        ("acme-unknown", "unknown"),
        ("acme-panic", "unknown"),
        ("acme-429", "rate_limited"),
    ] {
        let d = &dead[id];
        assert_eq!(d["class"], class, "{id}");
        assert_eq!(d["attempt"], "3", "{id}: three attempts in all");
        let history: Vec<Value> = serde_json::from_str(&d["history"]).unwrap();
        assert_eq!(history.len(), 3, "{id}: every attempt recorded");
        for (i, h) in history.iter().enumerate() {
            assert_eq!(h["attempt"], json!(i + 1), "{id}");
            assert_eq!(h["class"], json!(class), "{id}");
        }
        assert!(d["detail"].contains("attempt"), "{id}: {}", d["detail"]);
    }
    assert!(dead["acme-panic"]["error"].contains("handler panicked"));
    assert!(dead["acme-timeout"]["error"].contains("task_timeout_ms = 300"));
    // The handler's retry-after (200 ms) beat the hour-long tier: the attempts are close.
    let h: Vec<Value> = serde_json::from_str(&dead["acme-429"]["history"]).unwrap();
    let gap = h[1]["at_ms"].as_u64().unwrap() - h[0]["at_ms"].as_u64().unwrap();
    assert!(
        (200..HOUR_MS).contains(&gap),
        "retry-after decides the delay: {gap} ms"
    );
    // The kind override allows one attempt only.
    assert_eq!(dead["acme-once"]["attempt"], "1");
    assert_eq!(dead["acme-once"]["class"], "timeout");
    assert!(m.stop().success(), "{}", m.log_text());
}

#[tokio::test]
async fn permanent_failures_dead_letter_at_once_with_their_whole_context() {
    let env = TestEnv::new();
    let cfg = env.config_file("schedule.toml", SCHEDULE_TOML);
    let mut with_versions = task("acme", "triage", "acme-schema", sim("malformed_output"));
    with_versions.schema_version = Some(3);
    with_versions.prompt_version = Some("triage-v7".into());
    let payload_ctx = json!({"simulate": "context_overflow", "work_ms": 0, "ticket": 1});
    let tasks = vec![
        with_versions,
        task("acme", "triage", "acme-ctx-1", payload_ctx.clone()),
        // Same root cause, other numbers: the same fingerprint.
        task(
            "acme",
            "triage",
            "acme-ctx-2",
            json!({"simulate": "context_overflow", "work_ms": 0, "ticket": 123456}),
        ),
        task(
            "acme",
            "triage",
            "acme-401",
            error("upstream said HTTP 401 for key 'sk-abc'"),
        ),
        task(
            "acme",
            "triage",
            "acme-input",
            error("invalid input: field 'email' is empty"),
        ),
        task("acme", "crm", "acme-tool", sim("tool_failure")),
        task("acme", "triage", "acme-silent", sim("silent")),
    ];
    let t0 = env.server_time_ms().await;
    env.enqueue_tasks(tasks).await;
    let mut m = env.member("m1", &[("REDRIVE_CONFIG", &cfg)]);
    eventually(LONG, "seven dead letters", || async {
        env.dead_letters("acme").await.len() == 7
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    assert!(
        env.scheduled_retries("acme").await.is_empty(),
        "none retried"
    );
    assert!(env.side_effects().is_empty(), "none succeeded");
    let t1 = env.server_time_ms().await;

    let lane = format!("{}:{{acme}}:lane", env.prefix);
    let dead: HashMap<String, HashMap<String, String>> = env
        .dead_letters("acme")
        .await
        .into_iter()
        .map(|f| (f["task_id"].clone(), f))
        .collect();
    for (id, class, action) in [
        ("acme-schema", "schema_mismatch", "replay_with_fix"),
        ("acme-ctx-1", "context_overflow", "replay_with_fix"),
        ("acme-ctx-2", "context_overflow", "replay_with_fix"),
        ("acme-401", "unauthorized", "manual_review"),
        ("acme-input", "invalid_input", "replay_with_fix"),
        ("acme-tool", "partial_execution", "manual_review"),
        ("acme-silent", "silent_failure", "manual_review"),
    ] {
        let d = &dead[id];
        assert_eq!(d["class"], class, "{id}");
        assert_eq!(d["recommended_action"], action, "{id}");
        assert_eq!(d["attempt"], "1", "{id}: never retried");
        assert_eq!(d["tenant"], "acme");
        assert_eq!(d["orig_lane"], lane);
        assert!(
            d["orig_id"].contains('-'),
            "{id}: entry id {}",
            d["orig_id"]
        );
        assert_eq!(d["member"], "m1");
        assert_eq!(d["deliveries"], "1", "{id}");
        assert!(!d["error"].is_empty() && !d["fingerprint"].is_empty());
        let first: u64 = d["first_failed_at"].parse().unwrap();
        let at: u64 = d["dead_lettered_at"].parse().unwrap();
        assert!(t0 <= first && first <= at && at <= t1, "{id}: {first} {at}");
        let history: Vec<Value> = serde_json::from_str(&d["history"]).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["class"], json!(class));
        assert!(history[0].get("duration_ms").is_some());
        let payload: Value = serde_json::from_str(&d["payload"]).unwrap();
        assert!(payload.get("simulate").is_some(), "{id}: payload snapshot");
    }
    let schema = &dead["acme-schema"];
    assert_eq!(schema["schema_version"], "3");
    assert_eq!(schema["prompt_version"], "triage-v7");
    assert_eq!(schema["kind"], "triage");
    assert_eq!(
        dead["acme-ctx-1"]["fingerprint"], dead["acme-ctx-2"]["fingerprint"],
        "one root cause, one fingerprint"
    );
    assert_ne!(dead["acme-ctx-1"]["error"], dead["acme-ctx-2"]["error"]);
    assert_ne!(
        dead["acme-ctx-1"]["fingerprint"],
        dead["acme-schema"]["fingerprint"]
    );
    assert!(
        !dead["acme-401"]["error_pattern"].contains("sk-abc"),
        "quoted values are normalised: {}",
        dead["acme-401"]["error_pattern"]
    );
    assert!(dead["acme-schema"]["detail"].contains("permanent"));
    // Partial execution: the completed steps and partial output travel with it.
    let tool = &dead["acme-tool"];
    assert_eq!(tool["kind"], "crm");
    // Step records (name, output, side_effect, attempt, at_ms), in the order they completed.
    let steps: Vec<Value> = serde_json::from_str(&tool["steps"]).unwrap();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["lookup_customer", "update_crm_record"]);
    assert!(steps.iter().all(|s| s["attempt"] == 1), "{steps:?}");
    let partial: Value = serde_json::from_str(&tool["partial_output"]).unwrap();
    assert_eq!(partial["crm_record"], "updated");
    assert!(
        tool["detail"].contains("manual review"),
        "{}",
        tool["detail"]
    );
    assert!(dead["acme-silent"]["error"].contains("summary"));
    assert!(m.stop().success(), "{}", m.log_text());
}

#[tokio::test]
async fn a_task_that_kills_its_worker_is_dead_lettered_as_crash_loop_while_others_flow() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![
        task("bad", "triage", "poison-1", sim("abort")),
        task("bad", "triage", "poison-2", sim("abort")),
    ])
    .await;
    let good = ["g1", "g2", "g3"];
    for t in good {
        env.enqueue(t, 300, json!({"simulate": "ok", "work_ms": 20}))
            .await;
    }
    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "1000"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
        ("REDRIVE_RECLAIM__MAX_DELIVERIES", "3"),
        ("REDRIVE_FLEET__CONCURRENCY", "8"),
    ];
    let mut sup = Supervisor::new(&env, 2, &cfg);
    let broker = env.broker().await;
    eventually(
        LONG,
        "both poison tasks dead-lettered and the rest done",
        || {
            sup.tend();
            let env = &env;
            let broker = &broker;
            async move {
                if env.dead_letters("bad").await.len() < 2 {
                    return false;
                }
                for t in good.iter().chain(["bad"].iter()) {
                    if broker.lane_len(t).await.unwrap() > 0
                        || broker.pending_count(t).await.unwrap() > 0
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let crashes = sup.crashes;
    sup.stop_all();

    let dead = env.dead_letters("bad").await;
    assert_eq!(dead.len(), 2, "each poison task dead-lettered once");
    let ids: HashSet<&str> = dead.iter().map(|d| d["task_id"].as_str()).collect();
    assert_eq!(ids, HashSet::from(["poison-1", "poison-2"]));
    for d in &dead {
        assert_eq!(d["class"], "crash_loop");
        assert_eq!(d["recommended_action"], "manual_review");
        let deliveries: u64 = d["deliveries"].parse().unwrap();
        assert!(
            deliveries >= 3,
            "dead-lettered at the threshold: {deliveries}"
        );
        assert_eq!(d["payload"], r#"{"simulate":"abort","work_ms":0}"#);
    }
    // Each poison task killed a worker on every delivery before the threshold, no more.
    assert!(
        (2..=6).contains(&crashes),
        "the poison killed workers {crashes} times (at most 3 deliveries each)"
    );
    // Every good task ran; a process killed by the poison may have had some in flight, which
    // run again (at least once), never more often than the kills allow.
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 900, "every good task completed");
    for t in good {
        assert!(
            env.dead_letters(t).await.is_empty(),
            "{t} has no dead letters"
        );
    }
}

/// Settings for tests that kill members: short idle time, quick retries.
const QUICK: [(&str, &str); 6] = [
    ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "500"),
    ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
    ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
    ("REDRIVE_RETRY__POLL_INTERVAL_MS", "50"),
    ("REDRIVE_FLEET__CONCURRENCY", "16"),
    ("REDRIVE_FLEET__READ_BATCH", "32"),
];

/// Every task ended exactly once: the ok ones completed (at least once, by the side-effect
/// log), the failing ones sit in the dead letters exactly once each with their class, and
/// nothing is left in the lane, the PEL or the retry schedule.
async fn assert_every_task_ended_once(
    env: &TestEnv,
    tenant: &str,
    ok: &HashSet<String>,
    failing: &HashMap<String, &str>,
) -> (usize, usize) {
    let broker = env.broker().await;
    assert_eq!(broker.lane_len(tenant).await.unwrap(), 0);
    assert_eq!(broker.pending_count(tenant).await.unwrap(), 0);
    assert!(env.scheduled_retries(tenant).await.is_empty());
    let dead = env.dead_letters(tenant).await;
    let dead_ids = counts(dead.iter().map(|d| d["task_id"].as_str()));
    let dup: Vec<_> = dead_ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "dead-lettered twice: {dup:?}");
    for d in &dead {
        let id = d["task_id"].as_str();
        assert_eq!(
            failing.get(id).copied(),
            Some(d["class"].as_str()),
            "{id} dead-lettered as {}",
            d["class"]
        );
    }
    assert_eq!(
        dead.len(),
        failing.len(),
        "every failing task dead-lettered"
    );
    let effects = env.side_effects();
    let done = counts(effects.iter().map(|e| e.1.as_str()));
    let done_ids: HashSet<String> = done.keys().map(|s| s.to_string()).collect();
    assert_eq!(&done_ids, ok, "every ok task completed, no failing one did");
    let reruns = done.values().filter(|&&n| n > 1).count();
    (dead.len(), reruns)
}

#[tokio::test]
async fn sigkill_at_each_settle_point_loses_nothing() {
    for (i, point) in redrive::testkit::POINTS.iter().enumerate() {
        let env = TestEnv::new();
        let mut ok = HashSet::new();
        let mut failing = HashMap::new();
        let mut tasks = Vec::new();
        for n in 0..190 {
            let id = format!("t{n}");
            let payload = match n % 19 {
                0 | 1 => {
                    failing.insert(id.clone(), "schema_mismatch");
                    sim("malformed_output")
                }
                2 | 3 => {
                    failing.insert(id.clone(), "rate_limited");
                    sim("rate_limited")
                }
                _ => {
                    ok.insert(id.clone());
                    json!({"simulate": "ok", "work_ms": 5})
                }
            };
            tasks.push(task("acme", "triage", &id, payload));
        }
        env.enqueue_tasks(tasks).await;
        let broker = env.broker().await;
        if *point == "after_claim" {
            // Leave entries pending at a consumer that never comes back, for the reclaim.
            env.read_as("acme", "ghost", 40).await;
        }
        let hit = if *point == "after_claim" { "1" } else { "2" };
        let failpoint = format!("{point}:{hit}");
        let mut vars = QUICK.to_vec();
        vars.push(("REDRIVE_FAILPOINT", &failpoint));
        let mut a = env.member("a", &vars);
        let status = a.wait_exit(LONG);
        assert_eq!(status.code(), None, "{point}: killed by a signal");
        assert!(
            a.log_text().contains("failpoint reached"),
            "{point}: {}",
            a.log_text()
        );
        // Alternate who picks up: the same member after its lease runs out (drains its own
        // entries), or a new member (reclaims them once they are idle).
        let mut after = if i % 2 == 0 {
            eventually(LONG, "the dead member's lease expired", || async {
                broker.lease_remaining("a").await.unwrap().is_none()
            })
            .await;
            env.member("a", &QUICK)
        } else {
            env.member("b", &QUICK)
        };
        eventually(LONG, "everything settled", || async {
            broker.lane_len("acme").await.unwrap() == 0
                && broker.pending_count("acme").await.unwrap() == 0
                && broker.retry_len("acme").await.unwrap() == 0
                && env.dead_letters("acme").await.len() >= failing.len()
        })
        .await;
        assert!(after.stop().success(), "{}", after.log_text());
        let (dead, reruns) = assert_every_task_ended_once(&env, "acme", &ok, &failing).await;
        eprintln!("{point}: {} done ({reruns} ran again after the kill), {dead} dead-lettered, nothing lost", ok.len());
    }
}

/// Reads up to `count` new entries of `tenant`'s lane as consumer `ghost`, a member that then
/// vanishes; returns the entries.
async fn ghost_read(env: &TestEnv, tenant: &str, count: usize) -> Vec<redrive::testkit::Entry> {
    env.broker().await.ensure_group(tenant).await.unwrap();
    let mut raw = env.raw().await;
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("redrive")
        .arg("ghost")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(format!("{}:{{{tenant}}}:lane", env.prefix))
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let streams = redrive::testkit::streams(v).unwrap();
    streams.into_iter().flat_map(|(_, e)| e).collect()
}

#[tokio::test]
async fn two_fleets_promote_and_reclaim_at_once_without_duplicates_or_loss() {
    let env = TestEnv::new();
    let broker = env.broker().await;
    let tenants = ["acme", "globex"];
    let mut all = HashSet::new();
    for t in tenants {
        all.extend(
            env.enqueue(t, 2_000, json!({"simulate": "ok", "work_ms": 0}))
                .await,
        );
        // A member read every entry and died: half of them it had already scheduled for a
        // retry (due now), the other half are left pending for a reclaim.
        let entries = ghost_read(&env, t, 2_000).await;
        assert_eq!(entries.len(), 2_000);
        for e in entries.iter().step_by(2) {
            let fields: Vec<(String, String)> = common::text_fields(e.fields.clone().unwrap())
                .into_iter()
                .filter(|(k, _)| k != "enqueued_at")
                .collect();
            let refs: Vec<(&str, String)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let due = broker
                .schedule_retry(t, "ghost", &e.id, Duration::ZERO, &refs)
                .await
                .unwrap();
            assert!(due.is_some());
        }
        assert_eq!(broker.retry_len(t).await.unwrap(), 1_000);
        assert_eq!(broker.pending_count(t).await.unwrap(), 1_000);
    }
    // Two fleets of two, every member running the recovery loop and the reclaimer often and
    // in small steps, so that they contend on the same items.
    let cfg = [
        ("REDRIVE_RETRY__POLL_INTERVAL_MS", "10"),
        ("REDRIVE_RETRY__PROMOTE_BATCH", "7"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "20"),
        ("REDRIVE_RECLAIM__BATCH", "13"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "300"),
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "200"),
    ];
    let mut members: Vec<_> = ["fleet1-a", "fleet1-b", "fleet2-a", "fleet2-b"]
        .iter()
        .map(|id| env.member(id, &cfg))
        .collect();
    eventually(LONG, "all 4,000 tasks ran", || async {
        env.side_effects().len() >= 4_000
    })
    .await;
    env.wait_drained(&tenants, LONG).await;
    for t in tenants {
        assert_eq!(broker.retry_len(t).await.unwrap(), 0);
    }
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    let seen: HashSet<String> = per_task.keys().map(|s| s.to_string()).collect();
    assert_eq!(seen, all, "nothing lost");
    let twice: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "re-added or handed out twice: {twice:?}");
    let runners: HashSet<&str> = effects.iter().map(|e| e.3.as_str()).collect();
    assert!(runners.len() >= 2, "the work was shared: {runners:?}");
    for m in &mut members {
        assert!(m.stop().success(), "{}", m.log_text());
    }
    for t in tenants {
        assert!(env.dead_letters(t).await.is_empty());
    }
}

/// The sum of `field=N` over a member's log lines that contain `message`.
fn sum_in_log(m: &Member, message: &str, field: &str) -> u64 {
    let key = format!("{field}=");
    m.log_text()
        .lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            l.split(key.as_str())
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// How many entries a member's log says it reclaimed.
fn reclaimed_in_log(m: &Member) -> u64 {
    sum_in_log(m, "reclaimed stale entries", "entries")
}

/// Starts member "a" with `cfg`, then enqueues one task working `work_ms` and waits until a
/// holds it.
async fn one_task_at_member_a(
    env: &TestEnv,
    cfg: &[(&str, &str)],
    work_ms: u64,
) -> (Member, redrive::Broker) {
    let a = env.member("a", cfg);
    let broker = env.broker().await;
    eventually(LONG, "member a serves", || async {
        broker.lease_remaining("a").await.unwrap().is_some()
    })
    .await;
    env.enqueue("acme", 1, json!({"simulate": "ok", "work_ms": work_ms}))
        .await;
    eventually(LONG, "a took the task", || async {
        broker.pending_count("acme").await.unwrap() == 1
    })
    .await;
    (a, broker)
}

#[tokio::test]
async fn a_slow_task_with_heartbeats_is_never_reclaimed() {
    let env = TestEnv::new();
    // The task runs three times the idle time; heartbeats keep its entry fresh.
    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "10000"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "50"),
        ("REDRIVE_RECLAIM__HEARTBEAT", "true"),
    ];
    let (mut a, _broker) = one_task_at_member_a(&env, &cfg, 3000).await;
    let mut others: Vec<_> = ["b", "c"].iter().map(|id| env.member(id, &cfg)).collect();
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    assert_eq!(effects.len(), 1, "ran once: {effects:?}");
    assert_eq!(effects[0].3, "a", "on the member that read it");
    for m in others.iter_mut().chain([&mut a]) {
        assert!(m.stop().success());
        assert_eq!(reclaimed_in_log(m), 0, "{} reclaimed a live task", m.id);
        assert!(!m.log_text().contains("another member took the entry over"));
    }
    assert!(env.dead_letters("acme").await.is_empty());
}

#[tokio::test]
async fn a_frozen_worker_without_heartbeats_has_its_task_reclaimed_once() {
    let env = TestEnv::new();
    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "2000"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "2500"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "50"),
        ("REDRIVE_RECLAIM__HEARTBEAT", "false"),
    ];
    let (mut a, broker) = one_task_at_member_a(&env, &cfg, 1000).await;
    // Freeze a mid-task: no heartbeats, no progress (a stuck process, as far as Redis can tell).
    a.signal("STOP");
    let mut b = env.member("b", &cfg);
    let mut c = env.member("c", &cfg);
    eventually(LONG, "the task ran elsewhere", || async {
        env.side_effects().iter().any(|e| e.3 != "a")
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    a.signal("CONT");
    // a wakes up with a finished attempt it no longer owns: it must not ack it.
    eventually(LONG, "a noticed it lost the entry", || async {
        let log = a.log_text();
        log.contains("no longer ours") || log.contains("another member took the entry over")
    })
    .await;
    let reclaimed: u64 = [&b, &c].iter().map(|m| reclaimed_in_log(m)).sum();
    assert_eq!(reclaimed, 1, "reclaimed exactly once");
    let runs_elsewhere = env.side_effects().iter().filter(|e| e.3 != "a").count();
    assert_eq!(runs_elsewhere, 1);
    for m in [&mut a, &mut b, &mut c] {
        assert!(m.stop().success(), "{}", m.log_text());
    }
    assert!(env.dead_letters("acme").await.is_empty());
    assert_eq!(broker.pending_count("acme").await.unwrap(), 0);
}

/// With the archive off (or unreachable), nothing archives a stream down to its cap: it grows
/// to the hard ceiling an operator set (none by default), and past it the oldest are deleted
/// without an archive — counted in Redis (trimmed and dropped) and logged loudly.
/// tests/archive.rs covers the cap with an archive.
#[tokio::test]
async fn the_hard_ceiling_counts_what_it_drops() {
    let env = TestEnv::new();
    env.enqueue("acme", 300, sim("malformed_output")).await;
    // 300 failures in a row would open acme's circuit breaker and hold the rest back (see
    // tests/isolation.rs); this test is about the ceiling, so every task must reach the dead
    // letters.
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_DEAD_LETTER__MAX_LEN", "5"),
            ("REDRIVE_DEAD_LETTER__HARD_MAX_LEN", "10"),
            ("REDRIVE_ARCHIVE__ENABLED", "false"),
            ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
        ],
    );
    let broker = env.broker().await;
    let raw = env.raw().await;
    let key = |k: &str| format!("{}:{{acme}}:dlq:{k}", env.prefix);
    let (trimmed_key, dropped_key) = (key("trimmed"), key("dropped"));
    eventually(LONG, "300 dead letters kept or counted", || {
        let broker = &broker;
        let mut raw = raw.clone();
        let trimmed_key = &trimmed_key;
        async move {
            let kept = broker.dlq_len("acme").await.unwrap();
            let trimmed: Option<u64> = redis::cmd("GET")
                .arg(trimmed_key)
                .query_async(&mut raw)
                .await
                .unwrap();
            kept + trimmed.unwrap_or(0) == 300
        }
    })
    .await;
    let kept = broker.dlq_len("acme").await.unwrap();
    assert!((10..=11).contains(&kept), "the ceiling (10) kept {kept}");
    let mut raw = raw.clone();
    let dropped: u64 = redis::cmd("GET")
        .arg(&dropped_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(dropped + kept, 300, "every trim past the ceiling is a drop");
    env.wait_drained(&["acme"], LONG).await;
    assert!(m.stop().success());
    assert!(m.log_text().contains(
        "past its hard ceiling: the oldest dead letters were deleted WITHOUT an archive"
    ));
}

#[tokio::test]
async fn tombstones_are_cleaned_and_counted() {
    let env = TestEnv::new();
    env.enqueue("acme", 10, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let entries = ghost_read(&env, "acme", 10).await;
    let mut raw = env.raw().await;
    for e in &entries[..4] {
        let _: u64 = redis::cmd("XDEL")
            .arg(format!("{}:{{acme}}:lane", env.prefix))
            .arg(&e.id)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_RECLAIM__MIN_IDLE_MS", "300"),
            ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "200"),
            ("REDRIVE_RECLAIM__INTERVAL_MS", "50"),
        ],
    );
    env.wait_drained(&["acme"], LONG).await;
    assert_eq!(env.side_effects().len(), 6, "the six intact entries ran");
    assert!(m.stop().success());
    let tombstones = sum_in_log(&m, "deleted before they ran", "tombstones");
    assert_eq!(tombstones, 4, "{}", m.log_text());
}

/// The sum of a metric family's samples in a Prometheus text body.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A dead letter that commits while its reply is lost: Redis holds the script (CLIENT PAUSE
/// WRITE) longer than `redis.response_timeout_ms`, the member's call times out and is tried
/// again; when the pause ends the first try moves the entry and the later ones find it no
/// longer pending. The task is dead-lettered exactly once, the member says so in its log
/// with the task's fields, and it is not counted as a settle lost to another member.
#[tokio::test]
async fn a_settle_whose_reply_was_lost_is_logged_not_counted_lost() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![task(
        "acme",
        "k",
        "late-reply",
        json!({"simulate": "malformed_output", "work_ms": 1500}),
    )])
    .await;
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_REDIS__RESPONSE_TIMEOUT_MS", "200"),
            // The pause holds lease renewals too.
            ("REDRIVE_FLEET__LEASE_TTL_MS", "30000"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
        ],
    );
    let addr = m.metrics_addr();
    let broker = env.broker().await;
    let lane = format!("{}:{{acme}}:lane", env.prefix);
    let mut raw = env.raw().await;
    // As on any Redis that has seen a dead letter: the script is cached, so the paused tries
    // run as EVALSHA when the pause ends (uncached, each would only answer NOSCRIPT).
    let _: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(concat!(
            include_str!("../src/broker/scripts/lib/record.lua"),
            include_str!("../src/broker/scripts/lib/steps.lua"),
            include_str!("../src/broker/scripts/lib/dlq_counts.lua"),
            include_str!("../src/broker/scripts/lib/review.lua"),
            include_str!("../src/broker/scripts/lib/notify.lua"),
            include_str!("../src/broker/scripts/dead_letter.lua")
        ))
        .query_async(&mut raw)
        .await
        .unwrap();
    // The start mark (delivery count 2) comes right before the handler runs its 1.5 s.
    eventually(LONG, "the task starts", || {
        let (lane, mut raw) = (lane.clone(), raw.clone());
        async move {
            let p: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&lane)
                .arg("redrive")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut raw)
                .await
                .unwrap_or_default();
            p.first().is_some_and(|e| e.3 >= 2)
        }
    })
    .await;
    // Writes (scripts included) wait from now until 4 s from now: the attempt fails about
    // 1.5 s into it, inside the pause, and its dead letter waits for the pause's end.
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("WRITE")
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually(LONG, "the task is dead-lettered", || async {
        !env.dead_letters("acme").await.is_empty()
    })
    .await;
    eventually(
        LONG,
        "the member logs the settle whose reply was lost",
        || async {
            m.log_text()
                .contains("settled by an earlier try whose reply was lost")
        },
    )
    .await;
    let (status, body) = common::http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(m.stop().success(), "{}", m.log_text());
    let log = m.log_text();
    let dead = env.dead_letters("acme").await;
    assert_eq!(dead.len(), 1, "dead-lettered exactly once: {dead:?}");
    assert_eq!(dead[0]["task_id"], "late-reply");
    assert_eq!(broker.lane_len("acme").await.unwrap(), 0);
    assert_eq!(broker.pending_count("acme").await.unwrap(), 0);
    let line = log
        .lines()
        .find(|l| l.contains("settled by an earlier try whose reply was lost"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("late-reply") && line.contains("schema_mismatch"),
        "logged at warn with the task's fields and class: {line}"
    );
    assert!(
        log.contains("redis call failed; retrying"),
        "the fault happened: the first try's reply was lost\n{log}"
    );
    assert_eq!(
        metric_sum(&body, "redrive_settle_lost_total"),
        0.0,
        "not a settle lost to another member"
    );
    assert_eq!(metric_sum(&body, "redrive_settle_reply_lost_total"), 1.0);
}
