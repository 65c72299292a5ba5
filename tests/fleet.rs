//! End-to-end fleet behaviour with real member processes on a private redis-server.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{counts, eventually, TestEnv};
use redrive::testkit::BrokerExt;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn three_members_drain_20k_tasks_over_5_tenants_each_exactly_once() {
    let env = TestEnv::new();
    let tenants = ["t1", "t2", "t3", "t4", "t5"];
    let mut expected = HashSet::new();
    for t in tenants {
        expected.extend(
            env.enqueue(t, 4_000, json!({"simulate": "ok", "work_ms": 0}))
                .await,
        );
    }
    assert_eq!(expected.len(), 20_000);
    let mut members: Vec<_> = (1..=3).map(|i| env.member(&format!("m{i}"), &[])).collect();
    env.wait_drained(&tenants, LONG).await;

    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 20_000, "every task ran");
    assert!(
        per_task.values().all(|&n| n == 1),
        "no task ran twice in a run without faults"
    );
    assert!(per_task.keys().all(|id| expected.contains(*id)));
    let members_used: HashSet<&str> = effects.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(members_used.len(), 3, "all three members took work");
    for m in &mut members {
        assert!(m.stop().success(), "member {} exit: {}", m.id, m.log_text());
    }
}

#[tokio::test]
async fn a_member_killed_mid_batch_resumes_its_pending_entries_under_the_same_name() {
    let env = TestEnv::new();
    let expected: HashSet<String> = env
        .enqueue("acme", 1_500, json!({"simulate": "ok", "work_ms": 10}))
        .await
        .into_iter()
        .collect();
    let cfg = [
        ("REDRIVE_FLEET__CONCURRENCY", "50"),
        ("REDRIVE_FLEET__READ_BATCH", "100"),
    ];
    let mut m = env.member("worker-a", &cfg);
    eventually(LONG, "some tasks done", || async {
        env.side_effects().len() >= 200
    })
    .await;
    m.kill9();

    let broker = env.broker().await;
    let pending = broker.pending_count("acme").await.unwrap();
    assert!(pending > 0, "the killed member left entries pending");
    let done_before = env.side_effects().len();
    assert!(done_before < 1_500, "the kill came mid-run");

    let mut again = env.member("worker-a", &cfg);
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    let seen: HashSet<String> = per_task.keys().map(|s| s.to_string()).collect();
    assert_eq!(seen, expected, "nothing lost");
    // Only entries that were in flight at the kill may run twice (at-least-once), never more.
    let twice = per_task.values().filter(|&&n| n > 1).count();
    assert!(
        twice as u64 <= pending,
        "{twice} duplicates but only {pending} were pending"
    );
    assert!(per_task.values().all(|&n| n <= 2));
    assert!(
        again.log_text().contains("re-reading own pending entries"),
        "{}",
        again.log_text()
    );
    assert!(again.stop().success());
}

#[tokio::test]
async fn sigterm_lets_in_flight_tasks_finish_and_leaves_the_rest_pending() {
    let env = TestEnv::new();
    env.enqueue("acme", 200, json!({"simulate": "ok", "work_ms": 400}))
        .await;
    let cfg = [
        ("REDRIVE_FLEET__CONCURRENCY", "10"),
        ("REDRIVE_FLEET__READ_BATCH", "20"),
        ("REDRIVE_FLEET__SHUTDOWN_GRACE_MS", "10000"),
    ];
    let mut m = env.member("worker-t", &cfg);
    let broker = env.broker().await;
    // Wait until the member holds a full window: 10 running plus 20 buffered.
    eventually(LONG, "entries delivered", || async {
        broker.pending_count("acme").await.unwrap() >= 30
    })
    .await;
    let started_before_term = 10;
    let status = m.stop();
    assert_eq!(status.code(), Some(0), "clean exit: {}", m.log_text());

    let effects = env.side_effects();
    assert!(
        effects.len() >= started_before_term,
        "the running tasks finished: {}",
        effects.len()
    );
    assert!(effects.len() < 200, "it stopped before the end");
    // What finished is gone from the lane; what did not is still there (pending or new).
    let lane = broker.lane_len("acme").await.unwrap();
    assert_eq!(
        lane as usize + effects.len(),
        200,
        "every task is either done or still in the lane"
    );
    assert!(
        broker.pending_count("acme").await.unwrap() > 0,
        "read-but-unstarted tasks stay pending"
    );

    // A restart finishes the rest without running anything twice: nothing was acked twice or lost.
    let mut m2 = env.member("worker-t", &cfg);
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 200);
    assert!(
        per_task.values().all(|&n| n == 1),
        "no task ran twice across a graceful restart"
    );
    assert!(m2.stop().success());
}

#[tokio::test]
async fn a_small_tenant_is_not_stuck_behind_a_large_backlog() {
    let env = TestEnv::new();
    env.enqueue("big", 50_000, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let mut m = env.member("fair-1", &[("REDRIVE_FLEET__CONCURRENCY", "16")]);
    // The member is busy on the backlog before the small tenant shows up.
    eventually(LONG, "backlog draining", || async {
        env.side_effects().len() >= 1_000
    })
    .await;
    env.enqueue("small", 20, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    env.wait_drained(&["big", "small"], LONG).await;

    let effects = env.side_effects();
    assert_eq!(effects.len(), 50_020);
    let last_small = effects.iter().rposition(|e| e.0 == "small").unwrap();
    let big_after = effects[last_small..]
        .iter()
        .filter(|e| e.0 == "big")
        .count();
    assert_eq!(effects.iter().filter(|e| e.0 == "small").count(), 20);
    // All of the small tenant finished while most of the backlog was still waiting.
    assert!(
        big_after > 25_000,
        "only {big_after} big tasks completed after the small tenant's last"
    );
    assert!(m.stop().success());
}

#[tokio::test]
async fn malformed_entries_are_set_aside_and_the_member_carries_on() {
    let env = TestEnv::new();
    let mut raw = env.raw().await;
    let lane = format!("{}:{{acme}}:lane", env.prefix);
    let _: () = redis::cmd("SADD")
        .arg(format!("{}:tenants", env.prefix))
        .arg("acme")
        .query_async(&mut raw)
        .await
        .unwrap();
    let bad: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![("payload", b"{}".to_vec())], // no kind
        vec![("kind", b"k".to_vec()), ("payload", b"{not json".to_vec())], // bad JSON
        vec![
            ("kind", b"k".to_vec()),
            ("payload", format!("\"{}\"", "x".repeat(3000)).into_bytes()),
        ], // oversize
        vec![
            ("kind", b"k".to_vec()),
            ("payload", b"{}".to_vec()),
            ("tenant", b"globex".to_vec()),
        ], // wrong tenant
        vec![
            ("kind", b"k".to_vec()),
            ("payload", vec![b'"', 0xff, 0xfe, b'"']),
        ], // not UTF-8
        vec![
            ("kind", b"k".to_vec()),
            ("payload", b"{}".to_vec()),
            ("attempt", b"many".to_vec()),
        ], // bad number
    ];
    for fields in &bad {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&lane).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v.as_slice());
        }
        let _: String = cmd.query_async(&mut raw).await.unwrap();
    }
    env.enqueue("acme", 50, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let mut m = env.member("m-bad", &[("REDRIVE_LIMITS__MAX_PAYLOAD_BYTES", "1024")]);
    env.wait_drained(&["acme"], LONG).await;
    assert_eq!(env.side_effects().len(), 50, "the good tasks all ran");

    let broker = env.broker().await;
    let dead = broker.dlq_range("acme", "-", "+", 100).await.unwrap();
    assert_eq!(dead.len(), bad.len());
    let mut reasons = Vec::new();
    for d in &dead {
        let f: std::collections::HashMap<String, String> = d
            .fields
            .clone()
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        assert_eq!(f["class"], "malformed_entry");
        assert_eq!(f["orig_lane"], lane);
        assert!(f.contains_key("raw") && f.contains_key("fingerprint"));
        reasons.push(f["error"].clone());
    }
    for want in [
        "missing field 'kind'",
        "not valid JSON",
        "limit is 1024",
        "does not match",
        "not valid UTF-8",
        "'attempt'",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "no dead letter says {want:?}: {reasons:?}"
        );
    }
    assert!(m.stop().success());
}

#[tokio::test]
async fn two_live_members_cannot_share_a_member_id() {
    let env = TestEnv::new();
    let mut first = env.member("same", &[]);
    let broker = env.broker().await;
    eventually(LONG, "first member holds its lease", || async {
        broker.lease_remaining("same").await.unwrap().is_some()
    })
    .await;
    let mut second = env.member("same", &[]);
    let status = second.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(75), "{}", second.log_text());
    assert!(second
        .log_text()
        .contains("member id 'same' is held by another live process"));
    assert!(first.stop().success());
}

/// Settings under which only an announcement can make a member serve a new tenant in time: the
/// periodic look is an hour away and an idle read blocks for 50 s (the shutdown grace must be
/// longer than that).
const ANNOUNCED_ONLY: [(&str, &str); 4] = [
    ("REDRIVE_FLEET__DISCOVERY_INTERVAL_MS", "3600000"),
    ("REDRIVE_FLEET__BLOCK_MS", "50000"),
    ("REDRIVE_FLEET__SHUTDOWN_GRACE_MS", "60000"),
    ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
];

/// How many tenants the member says it started serving `via` connect / signal / poll.
fn discovered(m: &common::Member, via: &str) -> usize {
    m.log_text()
        .lines()
        .filter(|l| l.contains("serving tenant") && l.contains(&format!("via={via}")))
        .count()
}

/// Enqueues one ok task for `tenant` with the CLI (a producer of its own process).
fn cli_enqueue(env: &TestEnv, tenant: &str, task_id: &str) {
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            tenant,
            "--kind",
            "k",
            "--task-id",
            task_id,
            "--payload",
            r#"{"simulate":"ok","work_ms":0}"#,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn a_new_tenant_is_served_as_soon_as_a_producer_announces_it() {
    let env = TestEnv::new();
    env.enqueue("known", 1, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let m = env.member("watch-1", &ANNOUNCED_ONLY);
    eventually(LONG, "the known tenant's task done", || async {
        env.side_effects().len() == 1
    })
    .await;
    assert_eq!(discovered(&m, "connect"), 1, "{}", m.log_text());
    // The member is idle now, its read blocked on the one lane it knows. Only the
    // announcement of the CLI's enqueue can bring the new tenant in within this wait.
    cli_enqueue(&env, "fresh", "f-1");
    eventually(
        Duration::from_secs(20),
        "the new tenant's task done",
        || async { env.side_effects().iter().any(|e| e.0 == "fresh") },
    )
    .await;
    assert_eq!(discovered(&m, "signal"), 1, "{}", m.log_text());
    assert_eq!(discovered(&m, "poll"), 0, "{}", m.log_text());
    let (_, body) = common::http_get(&m.metrics_addr(), "/metrics");
    assert!(
        body.lines()
            .any(|l| l.starts_with("redrive_tenants_discovered_total{via=\"signal\"} 1")),
        "{body}"
    );
    // A second task of a tenant already registered announces nothing new.
    cli_enqueue(&env, "fresh", "f-2");
    eventually(Duration::from_secs(20), "the second task done", || async {
        env.side_effects().iter().filter(|e| e.0 == "fresh").count() == 2
    })
    .await;
    assert_eq!(discovered(&m, "signal"), 1, "{}", m.log_text());
}

/// Past `fleet.max_lanes_per_read` a read names a rotating window of lanes; a tenant just
/// announced is named by the next read whatever the rotation, so its task does not wait for
/// its lane's turn (here: the blocked read's 50 s, as no other tenant enqueues).
#[tokio::test]
async fn an_announced_tenant_past_the_read_window_is_read_at_once() {
    let env = TestEnv::new();
    let known = ["k0", "k1", "k2", "k3", "k4", "k5", "k6"];
    for t in known {
        env.enqueue(t, 1, json!({"simulate": "ok", "work_ms": 0}))
            .await;
    }
    let mut vars = ANNOUNCED_ONLY.to_vec();
    vars.push(("REDRIVE_FLEET__MAX_LANES_PER_READ", "2"));
    let m = env.member("watch-window", &vars);
    eventually(LONG, "the known tenants' tasks done", || async {
        env.side_effects().len() == known.len()
    })
    .await;
    // Idle now: each read names 2 of the 7 lanes, blocking for 50 s. The new lane is the 8th.
    for i in 0..3 {
        let tenant = format!("fresh{i}");
        cli_enqueue(&env, &tenant, &format!("f-{i}"));
        eventually(
            Duration::from_secs(20),
            "the new tenant's task done",
            || async { env.side_effects().iter().any(|e| e.0 == tenant) },
        )
        .await;
    }
    assert_eq!(discovered(&m, "signal"), 3, "{}", m.log_text());
    assert_eq!(discovered(&m, "poll"), 0, "{}", m.log_text());
}

#[tokio::test]
async fn the_tenant_watch_subscribes_again_after_its_connection_is_killed() {
    let env = TestEnv::new();
    env.enqueue("known", 1, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let m = env.member("watch-2", &ANNOUNCED_ONLY);
    eventually(LONG, "the known tenant's task done", || async {
        env.side_effects().len() == 1
    })
    .await;
    let mut raw = env.raw().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the member's one subscription");
    eventually(Duration::from_secs(20), "subscribed again", || async {
        m.log_text()
            .contains("tenant announcements subscribed again")
    })
    .await;
    cli_enqueue(&env, "later", "l-1");
    eventually(
        Duration::from_secs(20),
        "the new tenant's task done",
        || async { env.side_effects().iter().any(|e| e.0 == "later") },
    )
    .await;
    assert_eq!(discovered(&m, "signal"), 1, "{}", m.log_text());
}

#[tokio::test]
async fn a_tenant_nobody_announced_is_found_by_the_periodic_look() {
    let env = TestEnv::new();
    env.enqueue("known", 1, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let m = env.member(
        "watch-3",
        &[("REDRIVE_FLEET__DISCOVERY_INTERVAL_MS", "100")],
    );
    eventually(LONG, "the known tenant's task done", || async {
        env.side_effects().len() == 1
    })
    .await;
    // A foreign producer doing only what CONTRACT.md requires: register, append.
    let mut raw = env.raw().await;
    let _: () = redis::pipe()
        .cmd("SADD")
        .arg(format!("{}:tenants", env.prefix))
        .arg("foreign")
        .ignore()
        .cmd("XADD")
        .arg(format!("{}:{{foreign}}:lane", env.prefix))
        .arg("*")
        .arg("task_id")
        .arg("x-1")
        .arg("kind")
        .arg("k")
        .arg("payload")
        .arg(r#"{"simulate":"ok","work_ms":0}"#)
        .ignore()
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually(LONG, "the foreign task done", || async {
        env.side_effects().iter().any(|e| e.0 == "foreign")
    })
    .await;
    assert_eq!(discovered(&m, "poll"), 1, "{}", m.log_text());
    assert_eq!(discovered(&m, "signal"), 0, "{}", m.log_text());
}

/// The member's reader speaks to a single Redis over a connection of its own (its own reply
/// parser, src/broker/stream_read.rs): an ACL user and a database from the URL, over TCP and
/// over a Unix socket, must reach the same lanes as every other connection of the member.
#[tokio::test]
async fn the_readers_own_connection_logs_in_selects_the_database_and_speaks_over_a_unix_socket() {
    let sock = std::env::temp_dir().join(format!(
        "redrive-{}-{}.sock",
        std::process::id(),
        fastrand::u32(..)
    ));
    let sock_arg = sock.to_string_lossy().into_owned();
    let env = TestEnv::single_with(&["--unixsocket", &sock_arg, "--unixsocketperm", "700"]);
    let mut raw = env.raw().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">s3cret-reader-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut raw)
        .await
        .unwrap();
    let port = env
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let tcp = format!("redis://app:s3cret-reader-pw@127.0.0.1:{port}/3");
    let unix = format!("redis+unix://{sock_arg}?db=5&user=app&pass=s3cret-reader-pw");
    for (i, url) in [tcp, unix].iter().enumerate() {
        let tenant = format!("acl{i}");
        let (code, out, err) = env.cli(
            &[
                "enqueue",
                "--tenant",
                &tenant,
                "--kind",
                "k",
                "--task-id",
                "t-1",
                "--payload",
                r#"{"simulate":"ok","work_ms":0}"#,
            ],
            &[("REDRIVE_REDIS_URL", url)],
        );
        assert_eq!(code, 0, "{out}{err}");
        let mut m = env.member(&format!("acl-{i}"), &[("REDRIVE_REDIS_URL", url)]);
        eventually(LONG, "the task done", || async {
            env.side_effects().iter().any(|e| e.0 == tenant)
        })
        .await;
        assert!(m.stop().success(), "{}", m.log_text());
        assert!(
            !m.log_text().contains("s3cret-reader-pw"),
            "a password in the log"
        );
    }
    // Nothing went to database 0: both tenants lived in 3 and 5.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let _ = std::fs::remove_file(&sock);
}

/// A killed reader connection (mid-idle, blocked in XREADGROUP) is noticed, connected again,
/// and nothing enqueued before or after is lost.
#[tokio::test]
async fn a_killed_reader_connection_is_opened_again_and_loses_nothing() {
    let env = TestEnv::single();
    env.enqueue("k1", 20, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    let mut m = env.member("own-conn", &[]);
    eventually(LONG, "the first tasks done", || async {
        env.side_effects().len() == 20
    })
    .await;
    let mut raw = env.raw().await;
    let mut killed = 0;
    for round in 0..3 {
        // The reader's connection: the one blocked in (or last sending) XREADGROUP; after a
        // kill, the one it opened again.
        let deadline = std::time::Instant::now() + LONG;
        let ids = loop {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut raw)
                .await
                .unwrap();
            let ids: Vec<String> = list
                .lines()
                .filter(|l| l.contains("cmd=xreadgroup"))
                .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")))
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                break ids;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no reader connection: {}",
                m.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for id in ids {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(&id)
                .query_async(&mut raw)
                .await
                .unwrap();
            killed += n;
        }
        // Task ids are per tenant: a new tenant each round (the member learns of it at once).
        env.enqueue(
            &format!("k{}", round + 2),
            10,
            json!({"simulate": "ok", "work_ms": 0}),
        )
        .await;
        // Read on the connection opened again.
        let want = 20 + 10 * (round + 1);
        eventually(LONG, "the round's tasks done", || async {
            env.side_effects().len() == want
        })
        .await;
    }
    assert!(
        killed >= 3,
        "a reader connection each round: {}",
        m.log_text()
    );
    env.wait_drained(&["k1", "k2", "k3", "k4"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 50, "every task ran: {}", m.log_text());
    assert!(
        m.log_text().contains("read failed; reconnecting"),
        "{}",
        m.log_text()
    );
    assert!(m.stop().success(), "{}", m.log_text());
}
