//! Task deadlines end to end: a task already past its deadline when a member is about to start
//! it is dead-lettered as `expired` without running; a failed attempt whose retry would come
//! after the deadline is dead-lettered as `expired` with its last error. Real redis-server,
//! real member processes; the demo agent's activity log records every attempt's start.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{eventually, http_get, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

/// Retries an hour apart, so a deadline within the hour is never reached by a retry.
const TOML: &str = r#"
[retry]
max_attempts = 3
delays_ms = [3600000]
max_delay_ms = 3600000
jitter = "none"
poll_interval_ms = 50
"#;

fn task(id: &str, payload: Value, deadline: Option<u64>) -> NewTask {
    let mut t = NewTask::new("acme", "triage", payload).with_task_id(id);
    t.deadline = deadline;
    t.trace_id = Some(format!("trace-{id}"));
    t
}

/// Task ids of the attempts the demo agent started.
fn started(env: &TestEnv) -> Vec<String> {
    let text = std::fs::read_to_string(env.dir.join("activity.log")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("start "))
        .filter_map(|l| l.split(' ').nth(2).map(str::to_owned))
        .collect()
}

fn by_task(dead: Vec<HashMap<String, String>>) -> HashMap<String, HashMap<String, String>> {
    dead.into_iter()
        .map(|d| (d["task_id"].clone(), d))
        .collect()
}

#[tokio::test]
async fn a_task_past_its_deadline_is_dead_lettered_expired_without_running() {
    let env = TestEnv::new();
    let cfg = env.config_file("deadline.toml", TOML);
    let now = env.server_time_ms().await;
    let ok = json!({"simulate": "ok", "work_ms": 0});
    env.enqueue_tasks(vec![
        task("late", ok.clone(), Some(now - 1_000)),
        task("in-time", ok.clone(), Some(now + 3_600_000)),
        task("no-deadline", ok, None),
    ])
    .await;
    let activity = env.dir.join("activity.log");
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_CONFIG", &cfg),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            (
                "REDRIVE_DEMO_AGENT__ACTIVITY_LOG",
                activity.to_str().unwrap(),
            ),
        ],
    );
    let addr = m.metrics_addr();
    eventually(LONG, "one dead letter", || async {
        env.dead_letters("acme").await.len() == 1
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;

    let dead = by_task(env.dead_letters("acme").await);
    let d = &dead["late"];
    assert_eq!(d["class"], "expired", "{d:?}");
    assert_eq!(d["recommended_action"], "discard");
    assert_eq!(d["attempt"], "1");
    assert_eq!(d["deadline"], (now - 1_000).to_string());
    assert!(d["error"].contains("deadline"), "{d:?}");
    assert!(!d.contains_key("history"), "no attempt was made: {d:?}");
    let ran = started(&env);
    assert!(
        !ran.contains(&"late".to_owned()),
        "the late task started: {ran:?}"
    );
    let done: Vec<String> = env.side_effects().into_iter().map(|e| e.1).collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(!done.contains(&"late".to_owned()));
    assert!(env.scheduled_retries("acme").await.is_empty());
    let metrics = http_get(&addr, "/metrics").1;
    assert!(
        metrics.contains(r#"redrive_dead_lettered_total{tenant="acme",class="expired"} 1"#),
        "{metrics}"
    );
    assert!(m.stop().success());
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("past its deadline"))
        .unwrap_or_else(|| panic!("no expiry logged: {log}"));
    for want in [
        "task_id=late",
        "trace_id=trace-late",
        "kind=triage",
        "attempt=1",
    ] {
        assert!(line.contains(want), "{want} missing: {line}");
    }
}

#[tokio::test]
async fn a_retry_that_would_come_after_the_deadline_is_dead_lettered_expired_with_its_error() {
    let env = TestEnv::new();
    let cfg = env.config_file("deadline.toml", TOML);
    let now = env.server_time_ms().await;
    let failing = json!({"simulate": "error", "message": "the agent lost its train of thought", "work_ms": 0});
    env.enqueue_tasks(vec![
        // The next attempt would be due in an hour: past this deadline.
        task("soon", failing.clone(), Some(now + 60_000)),
        // This one has time for a retry.
        task("later", failing, Some(now + 3 * 3_600_000)),
    ])
    .await;
    let mut m = env.member("m1", &[("REDRIVE_CONFIG", &cfg)]);
    eventually(LONG, "one dead letter and one retry", || async {
        env.dead_letters("acme").await.len() == 1 && env.scheduled_retries("acme").await.len() == 1
    })
    .await;
    let dead = by_task(env.dead_letters("acme").await);
    let d = &dead["soon"];
    assert_eq!(d["class"], "expired", "{d:?}");
    assert_eq!(d["recommended_action"], "discard");
    assert_eq!(d["error"], "the agent lost its train of thought");
    assert!(d["detail"].contains("deadline"), "{d:?}");
    let history: Value = serde_json::from_str(&d["history"]).unwrap();
    assert_eq!(history[0]["attempt"], 1);
    assert_eq!(history[0]["class"], "unknown");
    let retries = env.scheduled_retries("acme").await;
    assert_eq!(retries[0].0["task_id"], "later");
    assert_eq!(retries[0].0["attempt"], "2");
    assert!(m.stop().success());
}
