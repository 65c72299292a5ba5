//! /healthz and /readyz of a real member: ready while it makes progress, not ready while it is
//! "healthy but stuck" (every slot held by an attempt that does not finish while work waits),
//! ready again once it recovers.

mod common;

use std::time::Duration;

use common::{eventually, http_get, TestEnv};
use redrive::NewTask;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn readyz_reports_a_member_stuck_on_one_entry_and_its_recovery() {
    let env = TestEnv::new();
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "100"),
            ("REDRIVE_METRICS__STALL_AFTER_MS", "1000"),
            ("REDRIVE_FLEET__CONCURRENCY", "1"),
            ("REDRIVE_FLEET__READ_BATCH", "5"),
            ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "4000"),
            ("REDRIVE_RETRY__MAX_ATTEMPTS", "1"),
        ],
    );
    let addr = m.metrics_addr();
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".into()));
    eventually(LONG, "ready once serving", || async {
        http_get(&addr, "/readyz").0 == 200
    })
    .await;

    // One attempt that hangs (until the 4 s task timeout) holds the only slot while 20 more
    // tasks wait behind it.
    env.enqueue("acme", 1, json!({"simulate": "timeout"})).await;
    env.enqueue("globex", 20, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    eventually(LONG, "not ready while stuck", || async {
        let (status, body) = http_get(&addr, "/readyz");
        status == 503 && body.contains("stuck")
    })
    .await;
    eventually(LONG, "the ready gauge follows", || async {
        http_get(&addr, "/metrics").1.contains("redrive_ready 0")
    })
    .await;
    assert_eq!(http_get(&addr, "/healthz").0, 200, "alive all along");

    // The attempt times out, is dead-lettered (one attempt allowed), the rest flows: ready.
    eventually(LONG, "ready again after recovery", || async {
        http_get(&addr, "/readyz").0 == 200
    })
    .await;
    env.wait_drained(&["acme", "globex"], LONG).await;
    assert_eq!(env.side_effects().len(), 20);
    assert_eq!(env.dead_letters("acme").await.len(), 1);
    assert_eq!(http_get(&addr, "/nowhere").0, 404);
    assert!(m.stop().success(), "{}", m.log_text());
}

#[tokio::test]
async fn a_taken_metrics_port_fails_at_start_with_a_clear_error() {
    let env = TestEnv::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut m = env.member("m1", &[("REDRIVE_METRICS__LISTEN", &addr)]);
    let status = m.wait_exit(LONG);
    assert_eq!(status.code(), Some(74), "{}", m.log_text());
    assert!(m.log_text().contains("binding metrics.listen"));
}

/// Every failed attempt is logged once, with tenant, task id, kind, class, attempt and trace id;
/// the retry and dead-letter lines carry the same; a malformed entry's line names the task id
/// its dead letter shows; the payload appears only when `log.log_payloads` is on; human and
/// JSON formats. Storm summaries are off here (`log.storm_interval_ms = 0`), so acme-1's second
/// failure of the same cause has its own line; tests/log_storm.rs covers the default.
#[tokio::test]
async fn failures_are_logged_once_with_context_and_payloads_only_when_enabled() {
    let payload = json!({"simulate": "malformed_output", "work_ms": 0, "secret": "s3cr3t-token"});
    for (format, log_payloads) in [("human", "false"), ("json", "false"), ("json", "true")] {
        let env = TestEnv::new();
        let mut permanent = NewTask::new("acme", "test", payload.clone()).with_task_id("acme-0");
        permanent.trace_id = Some("trace-acme-0".into());
        let mut transient = NewTask::new(
            "acme",
            "test",
            json!({"simulate": "rate_limited", "work_ms": 0}),
        )
        .with_task_id("acme-1");
        transient.trace_id = Some("trace-acme-1".into());
        env.enqueue_tasks(vec![permanent, transient]).await;
        // A foreign producer's entry without a kind: malformed, dead-lettered under its task id.
        let mut raw = env.raw().await;
        let _: String = redis::cmd("XADD")
            .arg(format!("{}:{{acme}}:lane", env.prefix))
            .arg("*")
            .arg("task_id")
            .arg("raw-7")
            .arg("payload")
            .arg("{}")
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut m = env.member(
            "m1",
            &[
                ("REDRIVE_LOG__FORMAT", format),
                ("REDRIVE_LOG__LOG_PAYLOADS", log_payloads),
                ("REDRIVE_RETRY__MAX_ATTEMPTS", "2"),
                ("REDRIVE_RETRY__POLL_INTERVAL_MS", "50"),
                ("REDRIVE_LOG__STORM_INTERVAL_MS", "0"),
            ],
        );
        eventually(LONG, "dead-lettered", || async {
            env.dead_letters("acme").await.len() == 3
        })
        .await;
        assert!(m.stop().success());
        let dead: Vec<String> = env
            .dead_letters("acme")
            .await
            .into_iter()
            .map(|d| d["task_id"].clone())
            .collect();
        assert!(dead.contains(&"raw-7".to_owned()), "{dead:?}");
        let log = m.log_text();
        let lines = |msg: &str, task_id: &str| -> Vec<&str> {
            log.lines()
                .filter(|l| l.contains(msg) && l.contains(task_id))
                .collect()
        };
        let failures = lines("task attempt failed", "acme-0");
        assert_eq!(failures.len(), 1, "logged once: {log}");
        // (line, task id, trace id, attempt, class when the line has one)
        let mut checks = vec![(
            failures[0],
            "acme-0",
            "trace-acme-0",
            1,
            Some("schema_mismatch"),
        )];
        let t1_failures = lines("task attempt failed", "acme-1");
        assert_eq!(t1_failures.len(), 2, "one line per failed attempt: {log}");
        checks.push((
            t1_failures[0],
            "acme-1",
            "trace-acme-1",
            1,
            Some("rate_limited"),
        ));
        checks.push((
            t1_failures[1],
            "acme-1",
            "trace-acme-1",
            2,
            Some("rate_limited"),
        ));
        let retry = lines("retry scheduled", "acme-1");
        assert_eq!(retry.len(), 1, "{log}");
        checks.push((retry[0], "acme-1", "trace-acme-1", 1, None));
        for (id, trace, attempt) in [("acme-0", "trace-acme-0", 1), ("acme-1", "trace-acme-1", 2)] {
            let dl = lines("task dead-lettered", id);
            assert_eq!(dl.len(), 1, "{id}: {log}");
            checks.push((dl[0], id, trace, attempt, None));
        }
        for (line, id, trace, attempt, class) in checks {
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["tenant"], "acme", "{line}");
                assert_eq!(v["task_id"], id, "{line}");
                assert_eq!(v["kind"], "test", "{line}");
                assert_eq!(v["trace_id"], trace, "{line}");
                assert_eq!(v["attempt"], attempt, "{line}");
                if let Some(class) = class {
                    assert_eq!(v["class"], class, "{line}");
                }
            } else {
                let (task, trace, attempt) = (
                    format!("task_id={id}"),
                    format!("trace_id={trace}"),
                    format!("attempt={attempt}"),
                );
                let mut want = vec!["tenant=acme", "kind=test", &task, &trace, &attempt];
                let class = class.map(|c| format!("class={c}"));
                want.extend(class.as_deref());
                for w in want {
                    assert!(line.contains(w), "{w} missing: {line}");
                }
            }
        }
        let malformed = lines("malformed entry set aside", "raw-7");
        assert_eq!(
            malformed.len(),
            1,
            "the malformed entry's line names raw-7: {log}"
        );
        let malformed_dl = lines("task dead-lettered", "raw-7");
        assert_eq!(malformed_dl.len(), 1, "{log}");
        for line in [malformed[0], malformed_dl[0]] {
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["task_id"], "raw-7", "{line}");
                assert_eq!(v["tenant"], "acme", "{line}");
            } else {
                assert!(line.contains("task_id=raw-7"), "{line}");
            }
        }
        if format == "json" {
            assert!(log
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        }
        assert_eq!(
            log.contains("s3cr3t-token"),
            log_payloads == "true",
            "payloads appear only when enabled ({format}, {log_payloads}): {log}"
        );
    }
}

/// The dead-letter depth gauge follows the stream: non-empty streams are published, and a stream
/// that empties reads 0 at the next refresh (so "a DLQ is non-empty" alerts clear).
#[tokio::test]
async fn the_dlq_depth_gauge_drops_to_zero_when_the_stream_empties() {
    let env = TestEnv::new();
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "100"),
        ],
    );
    let addr = m.metrics_addr();
    env.enqueue(
        "acme",
        2,
        json!({"simulate": "malformed_output", "work_ms": 0}),
    )
    .await;
    eventually(LONG, "depth 2 published", || async {
        http_get(&addr, "/metrics")
            .1
            .contains("redrive_dlq_depth{tenant=\"acme\"} 2")
    })
    .await;
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "purge",
            "--tenant",
            "acme",
            "--older-than",
            "0s",
            "--yes",
            "--reason",
            "test",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(env.dead_letters("acme").await.is_empty());
    eventually(LONG, "depth 0 published", || async {
        http_get(&addr, "/metrics")
            .1
            .contains("redrive_dlq_depth{tenant=\"acme\"} 0")
    })
    .await;
    assert!(m.stop().success());
}
