//! The failure pipeline end to end: every failure class takes its path (retries on the
//! configured schedule, dead letters with their context), crash loops, SIGKILL at each settle
//! point, concurrent recovery loops and reclaimers, heartbeats, the dead-letter cap.
//! Real redis-server, real member processes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{counts, eventually, Member, TestEnv};
use redrive::task::NewTask;
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
  { contains = "503", class = "upstream_unavailable" },
  { contains = "model error", class = "llm_error" },
  { contains = "invalid input", class = "invalid_input" },
  { contains = "401", class = "unauthorized" },
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
            error("upstream said 401 for key 'sk-abc'"),
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
    let steps: Vec<String> = serde_json::from_str(&tool["steps"]).unwrap();
    assert_eq!(steps, ["lookup_customer", "update_crm_record"]);
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

/// Keeps `n` members alive: whoever dies is started again under the same id (a restart that
/// finds the dead process's lease waits for it, exiting 75, and is simply started again).
struct Supervisor<'a> {
    env: &'a TestEnv,
    members: Vec<Member>,
    env_vars: Vec<(String, String)>,
    /// Members that died by a signal (crashed or killed), not counting refused restarts.
    crashes: usize,
}

impl<'a> Supervisor<'a> {
    fn new(env: &'a TestEnv, n: usize, env_vars: &[(&str, &str)]) -> Supervisor<'a> {
        let env_vars: Vec<(String, String)> = env_vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Supervisor {
            env,
            members: Vec::new(),
            env_vars,
            crashes: 0,
        };
        for i in 0..n {
            let m = s.spawn(&format!("m{}", i + 1));
            s.members.push(m);
        }
        s
    }

    fn spawn(&self, id: &str) -> Member {
        let vars: Vec<(&str, &str)> = self
            .env_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.env.member(id, &vars)
    }

    /// Restarts members that exited (at most one start per member every 250 ms, so a restart
    /// refused while the dead process's lease runs out is not retried in a tight loop).
    fn tend(&mut self) {
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if !m.is_gone() {
                if let Some(status) = m.try_exit() {
                    if status.code().is_none() {
                        self.crashes += 1;
                    }
                }
            }
            let m = &self.members[i];
            if m.is_gone() && m.started.elapsed() >= Duration::from_millis(250) {
                let id = m.id.clone();
                self.members[i] = self.spawn(&id);
            }
        }
    }

    fn stop_all(&mut self) {
        for m in &mut self.members {
            if !m.is_gone() && m.try_exit().is_none() {
                m.stop();
            }
        }
    }
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
