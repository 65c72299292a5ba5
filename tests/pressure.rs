//! Settling under pressure, with real members and a real redis-server: Redis over `maxmemory`
//! (acks go on, retries and dead letters wait and land once it accepts writes, the episode is
//! logged once, exported and seen by /readyz), and settle counts that survive SIGKILLs (the
//! per-minute buckets `redrive health` reads are written by the scripts that settle).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{counts, eventually, http_get, Supervisor, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

/// Short retry schedule: a rate-limited task gets one retry, then its dead letter.
const RETRY_TOML: &str = r#"
[retry]
max_attempts = 2
backoff = "tiered"
delays_ms = [100]
max_delay_ms = 100
jitter = "none"
poll_interval_ms = 50
"#;

async fn info_memory(env: &TestEnv) -> BTreeMap<String, String> {
    let mut raw = env.raw().await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut raw)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

async fn config_set(env: &TestEnv, key: &str, value: &str) {
    let mut raw = env.raw().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// Fills Redis up to `maxmemory` with a ballast key until it refuses a write for memory, then
/// keeps it over the limit by a margin the acks cannot free (they free a few KB, and the
/// allocator may hand freed pages back or not: 3 MB leaves room for both), so the episode
/// lasts until the test lifts it.
async fn fill_to_oom(env: &TestEnv) {
    config_set(env, "maxmemory-policy", "noeviction").await;
    let used: u64 = info_memory(env).await["used_memory"].parse().unwrap();
    config_set(env, "maxmemory", &(used + 4 * 1024 * 1024).to_string()).await;
    let mut raw = env.raw().await;
    let chunk = "x".repeat(256 * 1024);
    let mut refused = None;
    for _ in 0..200 {
        let r: redis::RedisResult<u64> = redis::cmd("APPEND")
            .arg("ballast")
            .arg(&chunk)
            .query_async(&mut raw)
            .await;
        if let Err(e) = r {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("redis never refused the ballast");
    assert!(refused.contains("OOM"), "{refused}");
    let used: u64 = info_memory(env).await["used_memory"].parse().unwrap();
    config_set(env, "maxmemory", &(used - 3 * 1024 * 1024).to_string()).await;
}

fn log_lines(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[tokio::test]
async fn settles_go_on_while_redis_is_out_of_memory_and_the_rest_lands_after() {
    let env = TestEnv::new();
    let cfg = env.config_file("retry.toml", RETRY_TOML);
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_CONFIG", &cfg),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "200"),
            ("REDRIVE_FLEET__CONCURRENCY", "64"),
            ("REDRIVE_FLEET__READ_BATCH", "64"),
            // A long idle time: the owner-checked ack (a script XACK comes first in, which Redis
            // accepts over maxmemory) is not what lets the fast acks through here.
            ("REDRIVE_RECLAIM__MIN_IDLE_MS", "600000"),
        ],
    );
    let addr = m.metrics_addr();
    eventually(LONG, "ready once serving", || async {
        http_get(&addr, "/readyz").0 == 200
    })
    .await;

    // 40 tasks that complete, 5 rate limited (one retry, then dead-lettered), 5 with a
    // permanent failure (dead-lettered at once); each works 3 s, long enough to fill Redis
    // while they run.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let simulate = match i {
            0..=39 => "ok",
            40..=44 => "rate_limited",
            _ => "malformed_output",
        };
        tasks.push(
            NewTask::new(
                "acme",
                "test",
                json!({"simulate": simulate, "work_ms": 3000}),
            )
            .with_task_id(format!("acme-{i}")),
        );
    }
    env.enqueue_tasks(tasks).await;
    let broker = env.broker().await;
    eventually(LONG, "all 50 read and running", || async {
        broker.pending_count("acme").await.unwrap() == 50
    })
    .await;
    fill_to_oom(&env).await;
    let oom_at = Instant::now();

    // Over maxmemory: the completed tasks are acked and leave the lane; the failed ones wait,
    // pending, neither retried nor dead-lettered yet.
    eventually(
        LONG,
        "completed tasks acked while out of memory",
        || async { broker.lane_len("acme").await.unwrap() == 10 },
    )
    .await;
    assert_eq!(env.side_effects().len(), 40);
    eventually(LONG, "/readyz says why", || async {
        let (status, body) = http_get(&addr, "/readyz");
        status == 503 && body.contains("redis out of memory")
    })
    .await;
    eventually(LONG, "the gauge says it", || async {
        http_get(&addr, "/metrics")
            .1
            .contains("redrive_redis_oom 1")
    })
    .await;
    eventually(
        LONG,
        "the refused settles are counted as waiting",
        || async {
            let body = http_get(&addr, "/readyz").1;
            body.contains("dead_letter=5") && body.contains("schedule_retry=5")
        },
    )
    .await;
    // Let the refused settles be tried again a few times: still one line for the episode.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(broker.pending_count("acme").await.unwrap(), 10);
    assert!(env.dead_letters("acme").await.is_empty());
    assert!(env.scheduled_retries("acme").await.is_empty());
    assert!(
        http_get(&addr, "/metrics")
            .1
            .contains("redrive_redis_oom 1"),
        "still out of memory"
    );
    let log = m.log_text();
    assert_eq!(
        log_lines(&log, "redis is out of memory"),
        1,
        "one line per episode: {log}"
    );
    assert!(oom_at.elapsed() > Duration::from_secs(3));

    // Lift the limit: the retries and dead letters land, the retried tasks end in the dead
    // letters after their second attempt, nothing is lost or doubled.
    config_set(&env, "maxmemory", "0").await;
    let mut raw = env.raw().await;
    let _: () = redis::cmd("DEL")
        .arg("ballast")
        .query_async(&mut raw)
        .await
        .unwrap();
    env.wait_drained(&["acme"], LONG).await;
    eventually(LONG, "every failed task dead-lettered", || async {
        env.dead_letters("acme").await.len() == 10 && env.scheduled_retries("acme").await.is_empty()
    })
    .await;
    eventually(LONG, "ready again, gauge 0", || async {
        http_get(&addr, "/readyz").0 == 200
            && http_get(&addr, "/metrics")
                .1
                .contains("redrive_redis_oom 0")
    })
    .await;
    let effects = env.side_effects();
    let runs = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(runs.len(), 40);
    assert!(runs.values().all(|n| *n == 1), "ran twice: {runs:?}");
    let dead = env.dead_letters("acme").await;
    let dead_ids = counts(dead.iter().map(|d| d["task_id"].as_str()));
    assert_eq!(dead_ids.len(), 10, "each failed task dead-lettered once");
    for i in 40..50 {
        assert!(dead_ids.contains_key(format!("acme-{i}").as_str()));
    }
    let retried: Vec<_> = dead
        .iter()
        .filter(|d| d["class"] == "rate_limited")
        .collect();
    assert_eq!(retried.len(), 5, "{dead:?}");
    assert!(m.stop().success(), "{}", m.log_text());
    let log = m.log_text();
    assert_eq!(log_lines(&log, "redis is out of memory"), 1, "{log}");
    assert_eq!(log_lines(&log, "redis accepts writes again"), 1, "{log}");
}

/// `redrive health --json`: per tenant, (completed, dead-lettered) over the last hour.
fn health_counts(env: &TestEnv) -> BTreeMap<String, (u64, u64)> {
    let (code, out, err) = env.cli(&["health", "--json", "--window", "1h"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_owned(),
                (
                    t["window"]["completed"].as_u64().unwrap(),
                    t["window"]["dead_lettered"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn health_counts_every_settle_exactly_across_sigkills() {
    let env = TestEnv::new();
    let plan = [("acme", 900, 45), ("globex", 500, 25)];
    let mut tasks = Vec::new();
    for (tenant, ok, bad) in plan {
        for i in 0..ok + bad {
            let simulate = if i < ok { "ok" } else { "malformed_output" };
            tasks.push(
                NewTask::new(tenant, "test", json!({"simulate": simulate, "work_ms": 20}))
                    .with_task_id(format!("{tenant}-{i}")),
            );
        }
    }
    env.enqueue_tasks(tasks).await;
    let cfg = [
        ("REDRIVE_FLEET__CONCURRENCY", "4"),
        ("REDRIVE_FLEET__READ_BATCH", "8"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
    ];
    let mut sup = Supervisor::new(&env, 2, &cfg);
    let broker = env.broker().await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(fastrand::u64(400..800));
    loop {
        sup.tend();
        if kills < 8 && Instant::now() >= next_kill {
            let victim = fastrand::usize(..sup.members.len());
            let m = &mut sup.members[victim];
            if !m.is_gone() && m.started.elapsed() > Duration::from_millis(600) {
                m.kill9();
                kills += 1;
            }
            next_kill = Instant::now() + Duration::from_millis(fastrand::u64(400..800));
        }
        let mut drained = true;
        for (t, _, _) in plan {
            if broker.lane_len(t).await.unwrap() > 0
                || broker.pending_count(t).await.unwrap() > 0
                || broker.retry_len(t).await.unwrap() > 0
            {
                drained = false;
            }
        }
        if drained && kills >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet did not drain in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The counts are read while the members still run (no clean shutdown to flush anything)
    // and again after a last SIGKILL of each.
    for pass in 0..2 {
        let health = health_counts(&env);
        for (tenant, ok, bad) in plan {
            let dead = env.dead_letters(tenant).await.len() as u64;
            assert!(dead >= bad, "{tenant}: {dead} dead letters");
            // Drained: every task either completed (acked) or is in the dead letters (some
            // innocents may be crash loops after the kills), each exactly once.
            let completed = ok + bad - dead;
            assert_eq!(
                health[tenant],
                (completed, dead),
                "pass {pass}, {tenant}: health (completed, dead-lettered) vs the lane and the \
                 dead letters, after {kills} kills"
            );
        }
        for m in &mut sup.members {
            m.kill9();
        }
    }
}
