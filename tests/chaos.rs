//! Chaos: 20,000 tasks over four tenants, three member processes killed with SIGKILL at
//! random moments and restarted, with permanent failures, transient failures that recover and
//! ones that exhaust their retries. Every task must end exactly once: completed, or in its
//! tenant's dead letters (never twice, and never both — except a crash loop: a task caught in
//! flight by `reclaim.max_deliveries` kills is dead-lettered as one, as designed, even if one
//! of its runs had completed without its ack getting through), with nothing left behind.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{counts, Supervisor, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::json;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

/// What a task is made to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// Succeeds.
    Ok,
    /// Fails permanently (schema_mismatch) on its first attempt.
    Permanent,
    /// Is rate limited on every attempt until its retries run out.
    Exhausted,
    /// Draws each attempt: rate limited 30% of the time, so it usually recovers.
    Flaky,
}

#[tokio::test]
async fn twenty_thousand_tasks_survive_random_sigkills_of_three_workers() {
    let env = TestEnv::new();
    let mut fate = HashMap::new();
    let mut tasks = Vec::new();
    for (t, tenant) in TENANTS.iter().enumerate() {
        for i in 0..5_000 {
            let id = format!("{tenant}-{i}");
            let f = match (i * 7 + t) % 100 {
                0..=3 => Fate::Permanent,
                4..=6 => Fate::Exhausted,
                7..=16 => Fate::Flaky,
                _ => Fate::Ok,
            };
            let work_ms = 5 + (i % 15) as u64;
            let payload = match f {
                Fate::Ok => json!({"simulate": "ok", "work_ms": work_ms}),
                Fate::Permanent => json!({"simulate": "malformed_output", "work_ms": work_ms}),
                Fate::Exhausted => json!({"simulate": "rate_limited", "work_ms": work_ms}),
                Fate::Flaky => json!({"work_ms": work_ms}),
            };
            fate.insert(id.clone(), f);
            tasks.push(NewTask::new(*tenant, "chaos", payload).with_task_id(id));
        }
    }
    env.enqueue_tasks(tasks).await;
    assert_eq!(fate.len(), 20_000);

    let cfg = [
        ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "500"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "200"),
        ("REDRIVE_RETRY__POLL_INTERVAL_MS", "50"),
        ("REDRIVE_FLEET__CONCURRENCY", "32"),
        ("REDRIVE_FLEET__READ_BATCH", "64"),
        // Tasks without a forced outcome are rate limited on 30% of their attempts.
        ("REDRIVE_DEMO_AGENT__RATE_LIMITED", "0.3"),
    ];
    let mut sup = Supervisor::new(&env, 3, &cfg);
    let broker = env.broker().await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut kills = 0;
    let mut in_flight_at_kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(fastrand::u64(300..900));
    loop {
        sup.tend();
        if kills < 12 && Instant::now() >= next_kill {
            // A member that has been up a while, so that it dies in the middle of its work.
            let victim = fastrand::usize(..sup.members.len());
            let m = &mut sup.members[victim];
            if !m.is_gone() && m.started.elapsed() > Duration::from_millis(600) {
                let id = m.id.clone();
                m.kill9();
                kills += 1;
                in_flight_at_kills += pending_at(&env, &id).await;
            }
            next_kill = Instant::now() + Duration::from_millis(fastrand::u64(300..900));
        }
        let mut settled = true;
        for t in TENANTS {
            if broker.lane_len(t).await.unwrap() > 0
                || broker.pending_count(t).await.unwrap() > 0
                || broker.retry_len(t).await.unwrap() > 0
            {
                settled = false;
                break;
            }
        }
        if settled && kills >= 12 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet did not settle in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    sup.stop_all();

    // Tally.
    let effects = env.side_effects();
    let runs = counts(effects.iter().map(|e| e.1.as_str()));
    let mut dead: HashMap<String, String> = HashMap::new();
    let mut dead_twice = Vec::new();
    let mut by_class: BTreeMap<String, usize> = BTreeMap::new();
    for t in TENANTS {
        for d in env.dead_letters(t).await {
            *by_class.entry(d["class"].clone()).or_default() += 1;
            if dead
                .insert(d["task_id"].clone(), d["class"].clone())
                .is_some()
            {
                dead_twice.push(d["task_id"].clone());
            }
        }
    }
    assert!(dead_twice.is_empty(), "dead-lettered twice: {dead_twice:?}");
    let mut both = Vec::new();
    let mut neither = Vec::new();
    let mut crash_loops = 0;
    let mut crash_loops_done = 0;
    for (id, f) in &fate {
        let done = runs.contains_key(id.as_str());
        let class = dead.get(id).map(String::as_str);
        match (done, class) {
            // A task in flight at max_deliveries kills is indistinguishable from one that kills
            // its worker: it is dead-lettered as a crash loop, a legitimate end. It may even
            // have completed once without its ack getting through before a kill.
            (was_done, Some("crash_loop")) => {
                crash_loops += 1;
                if was_done {
                    crash_loops_done += 1;
                }
            }
            (true, Some(_)) => both.push(id.clone()),
            (false, None) => neither.push(id.clone()),
            (true, None) => assert!(
                matches!(f, Fate::Ok | Fate::Flaky),
                "{id} ({f:?}) completed"
            ),
            (false, Some(c)) => {
                let want = match f {
                    Fate::Permanent => "schema_mismatch",
                    Fate::Exhausted | Fate::Flaky => "rate_limited",
                    Fate::Ok => "none",
                };
                assert_eq!(c, want, "{id} ({f:?})");
            }
        }
    }
    assert!(both.is_empty(), "completed AND dead-lettered: {both:?}");
    assert!(neither.is_empty(), "lost: {neither:?}");
    let unknown: HashSet<&str> = runs
        .keys()
        .copied()
        .filter(|id| !fate.contains_key(*id))
        .collect();
    assert!(unknown.is_empty());
    let done = runs.len();
    let reruns: usize = runs.values().map(|n| n - 1).sum();
    let recovered = fate
        .iter()
        .filter(|(id, f)| **f == Fate::Flaky && runs.contains_key(id.as_str()))
        .count();
    eprintln!(
        "chaos tally: 20000 tasks in {:.1}s, {kills} SIGKILLs ({in_flight_at_kills} entries pending at the victims), \
         {done} completed ({recovered} flaky ones recovered, {reruns} re-runs of work in flight at a kill), \
         {} dead-lettered {by_class:?} ({crash_loops} as crash loops after repeated kills), \
         0 lost, 0 twice-settled",
        elapsed.as_secs_f64(),
        dead.len()
    );
    assert_eq!(done + dead.len() - crash_loops_done, 20_000);
    assert!(kills >= 12);
    assert!(in_flight_at_kills > 0, "the kills landed mid-work");
}

/// How many entries `consumer` holds pending over all tenants' lanes.
async fn pending_at(env: &TestEnv, consumer: &str) -> u64 {
    let mut raw = env.raw().await;
    let mut total = 0;
    for t in TENANTS {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(format!("{}:{{{t}}}:lane", env.prefix))
            .arg("redrive")
            .query_async(&mut raw)
            .await
            .unwrap();
        let redis::Value::Array(parts) = summary else {
            continue;
        };
        if let Some(redis::Value::Array(consumers)) = parts.get(3) {
            for c in consumers {
                let redis::Value::Array(pair) = c else {
                    continue;
                };
                if let [redis::Value::BulkString(name), redis::Value::BulkString(n)] = &pair[..] {
                    if name == consumer.as_bytes() {
                        total += String::from_utf8_lossy(n).parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
    }
    total
}
