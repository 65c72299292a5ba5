//! /healthz and /readyz of a real member: ready while it makes progress, not ready while it is
//! "healthy but stuck" (every slot held by an attempt that does not finish while work waits),
//! ready again once it recovers.

mod common;

use std::time::Duration;

use common::{eventually, http_get, TestEnv};
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

/// Every failed attempt is logged once, with tenant, task id, kind, class and attempt; the
/// payload only when `log.log_payloads` is on; human and JSON formats.
#[tokio::test]
async fn failures_are_logged_once_with_context_and_payloads_only_when_enabled() {
    let payload = json!({"simulate": "malformed_output", "work_ms": 0, "secret": "s3cr3t-token"});
    for (format, log_payloads) in [("human", "false"), ("json", "false"), ("json", "true")] {
        let env = TestEnv::new();
        env.enqueue("acme", 1, payload.clone()).await;
        let mut m = env.member(
            "m1",
            &[
                ("REDRIVE_LOG__FORMAT", format),
                ("REDRIVE_LOG__LOG_PAYLOADS", log_payloads),
            ],
        );
        eventually(LONG, "dead-lettered", || async {
            env.dead_letters("acme").await.len() == 1
        })
        .await;
        assert!(m.stop().success());
        let log = m.log_text();
        let failures: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("task attempt failed"))
            .collect();
        assert_eq!(failures.len(), 1, "logged once: {log}");
        let line = failures[0];
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["tenant"], "acme");
            assert_eq!(v["task_id"], "acme-0");
            assert_eq!(v["kind"], "test");
            assert_eq!(v["class"], "schema_mismatch");
            assert_eq!(v["attempt"], 1);
            assert!(log
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        } else {
            for want in [
                "tenant=acme",
                "task_id=acme-0",
                "kind=test",
                "class=schema_mismatch",
                "attempt=1",
            ] {
                assert!(line.contains(want), "{want} missing: {line}");
            }
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
