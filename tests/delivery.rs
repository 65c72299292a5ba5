//! Delivery counting: only a start counts against a task (a read that never started does not),
//! so innocent tasks survive repeated SIGKILLs of their members while a task that aborts its
//! member is dead-lettered as a crash loop after exactly `reclaim.max_deliveries` starts; and a
//! heartbeat racing this member's own settles never reports an entry as taken over.
//! Real redis-server, real member processes, real SIGKILLs.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{counts, eventually, http_get, Act, Supervisor, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::json;

const LONG: Duration = Duration::from_secs(180);

/// Attempts started by `member` in (`after_ms`, `until_ms`] that have not ended: (task, attempt)
/// with more starts than ends in that window.
fn unfinished(acts: &[Act], member: &str, after_ms: u64, until_ms: u64) -> Vec<String> {
    let mut open: HashMap<(String, u32), i64> = HashMap::new();
    for a in acts
        .iter()
        .filter(|a| a.member == member && a.at_ms > after_ms && a.at_ms <= until_ms)
    {
        *open.entry((a.task_id.clone(), a.attempt)).or_default() += if a.start { 1 } else { -1 };
    }
    open.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|((t, _), _)| t)
        .collect()
}

fn now_ms() -> u64 {
    redrive::testkit::now_ms()
}

/// How many entries `consumer` holds pending in `tenant`'s lane.
async fn pending_at(env: &TestEnv, tenant: &str, consumer: &str) -> u64 {
    let mut raw = env.raw().await;
    let rows: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(format!("{}:{{{tenant}}}:lane", env.prefix))
        .arg("redrive")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(consumer)
        .query_async(&mut raw)
        .await
        .unwrap();
    rows.len() as u64
}

#[tokio::test]
async fn innocent_tasks_survive_ten_kills_of_their_members() {
    let env = TestEnv::new();
    let n = 300;
    env.enqueue("acme", n, json!({"simulate": "ok", "work_ms": 250}))
        .await;
    // Two slots and a read-ahead of 16: at any kill, most of what the victim holds was read
    // and never started. Two starts make a crash loop.
    let log = env.activity_log();
    let log = log.to_string_lossy();
    let max_starts = 2;
    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "5000"),
        ("REDRIVE_FLEET__CONCURRENCY", "2"),
        ("REDRIVE_FLEET__READ_BATCH", "16"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
        ("REDRIVE_RECLAIM__MAX_DELIVERIES", "2"),
        ("REDRIVE_DEMO_AGENT__ACTIVITY_LOG", &log),
    ];
    let mut sup = Supervisor::new(&env, 2, &cfg);
    let broker = env.broker().await;
    // Starts cut short by a kill, per task, read from the activity log.
    let mut killed_starts: HashMap<String, u32> = HashMap::new();
    let mut last_kill: HashMap<String, u64> = HashMap::new();
    let mut kills = 0;
    let mut queued_at_kills = 0;
    let mut running_at_kills = 0;
    let deadline = Instant::now() + LONG;
    let mut next_kill = Instant::now() + Duration::from_millis(1500);
    while kills < 10 {
        assert!(
            Instant::now() < deadline,
            "only {kills} kills before the deadline"
        );
        sup.tend();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() < next_kill {
            continue;
        }
        // The victim: a member that has been up a while, runs something and holds more than it
        // runs; never one running a task that a kill already cut short (that task would then
        // rightly end as a crash loop: it started twice on members that died under it).
        let acts = env.activity();
        let now = now_ms();
        let mut victim = None;
        for i in 0..sup.members.len() {
            let m = &sup.members[i];
            if m.is_gone() || m.started.elapsed() < Duration::from_millis(1500) {
                continue;
            }
            let since = last_kill.get(&m.id).copied().unwrap_or(0);
            let running = unfinished(&acts, &m.id, since, now);
            let held = pending_at(&env, "acme", &m.id).await;
            if running.is_empty()
                || held <= running.len() as u64
                || running
                    .iter()
                    .any(|t| killed_starts.get(t).copied().unwrap_or(0) + 1 >= max_starts)
            {
                continue;
            }
            victim = Some((i, held, running.len() as u64));
            break;
        }
        let Some((i, held, running)) = victim else {
            continue;
        };
        let m = &mut sup.members[i];
        m.kill9();
        let killed_at = now_ms();
        kills += 1;
        queued_at_kills += held - running;
        running_at_kills += running;
        // What the victim had running when it died (its log lines are final now).
        let since = last_kill.insert(m.id.clone(), killed_at).unwrap_or(0);
        for t in unfinished(&env.activity(), &m.id, since, killed_at) {
            *killed_starts.entry(t).or_default() += 1;
        }
        next_kill = Instant::now() + Duration::from_millis(fastrand::u64(700..1500));
    }
    eventually(LONG, "every task settled", || {
        sup.tend();
        let broker = &broker;
        async move {
            broker.lane_len("acme").await.unwrap() == 0
                && broker.pending_count("acme").await.unwrap() == 0
        }
    })
    .await;
    sup.stop_all();

    let dead = env.dead_letters("acme").await;
    let crash_loops: BTreeMap<String, String> = dead
        .iter()
        .filter(|d| d["class"] == "crash_loop")
        .map(|d| (d["task_id"].clone(), d["deliveries"].clone()))
        .collect();
    // Only a task cut short by `max_starts` kills may be a crash loop; the kills above never
    // hit one twice, so none is.
    let expected: BTreeMap<String, String> = killed_starts
        .iter()
        .filter(|(_, n)| **n >= max_starts)
        .map(|(t, n)| (t.clone(), n.to_string()))
        .collect();
    let acts = env.activity();
    let starts = counts(acts.iter().filter(|a| a.start).map(|a| a.task_id.as_str()));
    let detail: Vec<String> = crash_loops
        .keys()
        .map(|t| {
            format!(
                "{t}: {} recorded start(s), {} cut short by a kill",
                starts.get(t.as_str()).copied().unwrap_or(0),
                killed_starts.get(t).copied().unwrap_or(0)
            )
        })
        .collect();
    eprintln!(
        "{kills} kills: {running_at_kills} attempts running and {queued_at_kills} entries read but \
         not started at the victims; {} starts cut short; crash loops: {detail:?}",
        killed_starts.values().sum::<u32>()
    );
    assert_eq!(
        crash_loops, expected,
        "innocent tasks dead-lettered as crash loops: {detail:?}"
    );
    let other: Vec<_> = dead.iter().filter(|d| d["class"] != "crash_loop").collect();
    assert!(other.is_empty(), "no other dead letters: {other:?}");
    let done: HashSet<String> = env.side_effects().into_iter().map(|e| e.1).collect();
    let missing = (0..n)
        .map(|i| format!("acme-{i}"))
        .filter(|t| !done.contains(t) && !expected.contains_key(t))
        .count();
    assert_eq!(missing, 0, "every innocent task completed");
    assert!(
        queued_at_kills > 0,
        "the kills caught entries read and not started"
    );
}

#[tokio::test]
async fn a_task_that_aborts_its_member_is_a_crash_loop_after_exactly_max_deliveries_starts() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![NewTask::new(
        "bad",
        "triage",
        json!({"simulate": "abort", "work_ms": 0}),
    )
    .with_task_id("poison")])
        .await;
    env.enqueue("good", 200, json!({"simulate": "ok", "work_ms": 20}))
        .await;
    let log = env.activity_log();
    let log = log.to_string_lossy();
    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "2000"),
        ("REDRIVE_FLEET__CONCURRENCY", "4"),
        ("REDRIVE_FLEET__READ_BATCH", "16"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
        ("REDRIVE_RECLAIM__MAX_DELIVERIES", "3"),
        ("REDRIVE_DEMO_AGENT__ACTIVITY_LOG", &log),
    ];
    let mut sup = Supervisor::new(&env, 2, &cfg);
    let broker = env.broker().await;
    eventually(LONG, "the poison dead-lettered and the rest done", || {
        sup.tend();
        let (env, broker) = (&env, &broker);
        async move {
            if env.dead_letters("bad").await.is_empty() {
                return false;
            }
            for t in ["bad", "good"] {
                if broker.lane_len(t).await.unwrap() > 0
                    || broker.pending_count(t).await.unwrap() > 0
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let crashes = sup.crashes;
    sup.stop_all();

    let dead = env.dead_letters("bad").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["task_id"], "poison");
    assert_eq!(dead[0]["class"], "crash_loop");
    assert_eq!(dead[0]["deliveries"], "3", "{:?}", dead[0]);
    assert!(
        dead[0]["error"].contains("started 3 times"),
        "{:?}",
        dead[0]
    );
    let starts = env
        .activity()
        .iter()
        .filter(|a| a.start && a.task_id == "poison")
        .count();
    assert_eq!(starts, 3, "the poison started exactly max_deliveries times");
    assert_eq!(crashes, 3, "one crash per start");
    assert!(env.dead_letters("good").await.is_empty());
    let done: HashSet<String> = env.side_effects().into_iter().map(|e| e.1).collect();
    assert_eq!(done.len(), 200, "every good task completed");
}

/// Sums a counter over all its series in a Prometheus text exposition.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_heartbeat_racing_the_members_own_settles_reports_nothing_lost() {
    let env = TestEnv::new();
    let n = 30_000;
    env.enqueue("acme", n, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    // One member (no other consumer exists, so nothing can be taken over) beating every
    // 33 ms over a few hundred entries that it settles as fast as it can.
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_FLEET__CONCURRENCY", "64"),
            ("REDRIVE_FLEET__READ_BATCH", "256"),
            ("REDRIVE_RECLAIM__MIN_IDLE_MS", "100"),
            ("REDRIVE_RECLAIM__HEARTBEAT", "true"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
        ],
    );
    let addr = m.metrics_addr();
    env.wait_drained(&["acme"], LONG).await;
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(m.stop().success(), "{}", m.log_text());
    let log = m.log_text();
    let done: HashSet<String> = env.side_effects().into_iter().map(|e| e.1).collect();
    assert_eq!(done.len(), n);
    let lost = metric_sum(&body, "redrive_ownership_lost_total");
    let warned = log
        .lines()
        .filter(|l| l.contains("entries were taken over by another member"))
        .count();
    assert_eq!(
        (lost, warned),
        (0.0, 0),
        "entries settled by their own member reported as taken over"
    );
    assert!(env.dead_letters("acme").await.is_empty());
}
