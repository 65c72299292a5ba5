//! Tenant isolation end to end: fleet-wide circuit breakers (open on failures, defer without
//! attempting, exactly one probe after the cool-down, close on a healthy probe), a poison storm
//! that must not slow other tenants down, the fleet-wide concurrency cap across three members,
//! weighted fair selection, and the operator commands. Real redis-server, real member
//! processes; the demo agent's activity log records every attempt's start and end.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{counts, eventually, Act, Member, TestEnv};
use redrive::testkit::BreakerTransition;
use redrive::testkit::BrokerExt;
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);

/// The most attempts of `tenant` running at once, fleet-wide, by the order of the log. A start
/// line is written after the attempt's slot was reserved and an end line before its entry is
/// settled, so this never exceeds what the fleet held.
fn peak_running(acts: &[Act], tenant: &str) -> usize {
    let (mut now, mut peak) = (0i64, 0i64);
    for a in acts.iter().filter(|a| a.tenant == tenant) {
        now += if a.start { 1 } else { -1 };
        peak = peak.max(now);
    }
    peak.max(0) as usize
}

fn starts<'a>(acts: &'a [Act], tenant: &'a str) -> impl Iterator<Item = &'a Act> + 'a {
    acts.iter().filter(move |a| a.start && a.tenant == tenant)
}

fn completed(env: &TestEnv, tenant: &str) -> usize {
    env.side_effects()
        .iter()
        .filter(|e| e.0 == tenant)
        .map(|e| e.1.clone())
        .collect::<HashSet<_>>()
        .len()
}

async fn transitions(env: &TestEnv, tenant: &str) -> Vec<BreakerTransition> {
    env.broker().await.breaker_log(tenant, 1_000).await.unwrap()
}

fn members(env: &TestEnv, n: usize, cfg: &str) -> Vec<Member> {
    let log = env.activity_log();
    let log = log.to_str().unwrap();
    (1..=n)
        .map(|i| {
            env.member(
                &format!("m{i}"),
                &[
                    ("REDRIVE_CONFIG", cfg),
                    ("REDRIVE_DEMO_AGENT__ACTIVITY_LOG", log),
                    ("REDRIVE_LOG__LEVEL", "redrive::fleet::isolation=debug,info"),
                ],
            )
        })
        .collect()
}

fn stop(ms: &mut [Member]) {
    for m in ms {
        assert!(m.stop().success(), "{} did not stop cleanly", m.id);
    }
}

fn tasks(tenant: &str, prefix: &str, n: usize, payload: Value) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask::new(tenant, "test", payload.clone()).with_task_id(format!("{prefix}{i}")))
        .collect()
}

const BREAKER_TOML: &str = r#"
[fleet]
concurrency = 4
read_batch = 8

[retry]
delays_ms = [3600000]
max_delay_ms = 3600000
jitter = "none"
poll_interval_ms = 50

[isolation]
refresh_interval_ms = 100
slot_ttl_ms = 2000

[isolation.breaker]
min_failures = 5
failure_rate = 0.5
window_ms = 60000
cooldown_ms = 1500
"#;

#[tokio::test]
async fn a_failing_tenant_is_held_back_and_one_probe_at_a_time_closes_its_breaker() {
    let env = TestEnv::new();
    let cfg = env.config_file("breaker.toml", BREAKER_TOML);
    let outage = env.dir.join("outage");
    std::fs::write(&outage, "").unwrap();
    let outage_path = outage.to_str().unwrap();
    let mut all = tasks(
        "flaky",
        "f",
        100,
        json!({"simulate": "ok", "work_ms": 30, "fail_while": outage_path}),
    );
    all.extend(tasks(
        "steady",
        "s",
        40,
        json!({"simulate": "ok", "work_ms": 5}),
    ));
    // All three members are up before the tasks arrive, so all three compete for them.
    let mut ms = members(&env, 3, &cfg);
    eventually(LONG, "members started", || async {
        ms.iter()
            .all(|m| m.log_text().contains("fleet member started"))
    })
    .await;
    env.enqueue_tasks(all).await;
    let broker = env.broker().await;

    // Every attempt fails while the outage lasts: the breaker opens, and after the cool-down
    // a probe runs, fails and re-opens it.
    eventually(LONG, "a failed probe re-opened the breaker", || async {
        transitions(&env, "flaky")
            .await
            .iter()
            .any(|t| t.reason == "probe_failed")
    })
    .await;
    // The outage ends: the next probe succeeds and closes the breaker, and everything runs.
    std::fs::remove_file(&outage).unwrap();
    eventually(LONG, "a healthy probe closed the breaker", || async {
        broker.breaker_info("flaky").await.unwrap().state == "closed"
    })
    .await;
    // Retries of the attempts that failed are an hour away: bring them forward.
    eventually(LONG, "flaky settled or scheduled", || async {
        broker.lane_len("flaky").await.unwrap() == 0
            && broker.pending_count("flaky").await.unwrap() == 0
    })
    .await;
    env.make_retries_due("flaky").await;
    eventually(LONG, "every task completed", || async {
        completed(&env, "flaky") == 100 && completed(&env, "steady") == 40
    })
    .await;
    env.wait_drained(&["flaky", "steady"], LONG).await;
    stop(&mut ms);

    let log = transitions(&env, "flaky").await;
    let path: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|t| (t.from.as_str(), t.to.as_str(), t.reason.as_str()))
        .collect();
    assert_eq!(path[0], ("closed", "open", "failure_threshold"), "{path:?}");
    assert_eq!(
        *path.last().unwrap(),
        ("half_open", "closed", "probe_succeeded"),
        "{path:?}"
    );
    for pair in path[1..].chunks(2) {
        assert_eq!(
            pair[0],
            ("open", "half_open", "cooldown_elapsed"),
            "{path:?}"
        );
        assert!(
            pair[1] == ("half_open", "open", "probe_failed")
                || pair[1] == ("half_open", "closed", "probe_succeeded"),
            "{path:?}"
        );
    }
    assert!(log[0].detail.contains("attempts failed within 60000 ms"));

    let acts = env.activity();
    let info = broker.breaker_info("flaky").await.unwrap();
    let mut half_open_windows = 0;
    for (i, t) in log.iter().enumerate() {
        let end = log.get(i + 1).map(|n| n.at_ms()).unwrap_or(u64::MAX);
        let during: Vec<&Act> = starts(&acts, "flaky")
            .filter(|a| (t.at_ms()..end).contains(&a.at_ms))
            .collect();
        match t.to.as_str() {
            // Exactly one attempt fleet-wide while half-open: the probe.
            "half_open" => {
                half_open_windows += 1;
                assert_eq!(during.len(), 1, "attempts while half-open: {during:?}");
            }
            // Nothing starts while open, once members have seen it (they refresh every 100 ms;
            // attempts already under way finish).
            "open" => {
                let late: Vec<&&Act> = during
                    .iter()
                    .filter(|a| a.at_ms > t.at_ms() + 700)
                    .collect();
                assert!(late.is_empty(), "attempts while open: {late:?}");
            }
            _ => {}
        }
    }
    eprintln!(
        "breaker path: {path:?}; {} probes, {} tasks deferred",
        info.probes, info.deferred
    );
    assert_eq!(info.probes, half_open_windows);
    assert!(info.transitions as usize == log.len());

    // Held-back tasks were deferred, not attempted: every task completed with the attempt
    // number its real attempts give it, whatever it went through.
    assert!(info.deferred >= 1, "nothing was deferred: {info:?}");
    let done: HashMap<String, u32> = env
        .side_effects()
        .into_iter()
        .filter(|e| e.0 == "flaky")
        .map(|e| (e.1, e.2))
        .collect();
    let tries = counts(starts(&acts, "flaky").map(|a| a.task_id.as_str()));
    for (task, attempt) in &done {
        assert_eq!(
            *attempt as usize,
            tries[task.as_str()],
            "{task}: completed as attempt {attempt} after {} attempts",
            tries[task.as_str()]
        );
    }
    assert!(
        starts(&acts, "flaky").any(|a| a.attempt == 1
            && done.get(&a.task_id) == Some(&1)
            && a.at_ms > log[0].at_ms()),
        "no task ran after the breaker closed"
    );
    let effects = env.side_effects();
    assert_eq!(
        effects.len(),
        140,
        "each task completed exactly once: {effects:?}"
    );
    // All three members worked on the tenant, so all three were held back by its breaker.
    let ran: HashSet<&str> = starts(&acts, "flaky").map(|a| a.member.as_str()).collect();
    assert_eq!(ran.len(), 3, "{ran:?}");
}

const STORM_TOML: &str = r#"
[fleet]
concurrency = 8
read_batch = 16

[retry]
max_attempts = 2
delays_ms = [200]
jitter = "none"
poll_interval_ms = 50

[isolation]
refresh_interval_ms = 100
slot_ttl_ms = 2000

[isolation.breaker]
min_failures = 20
failure_rate = 0.5
window_ms = 10000
cooldown_ms = 2000
"#;

/// Enqueues `tasks` and waits until `n` tasks of `b` and `c` completed; returns the time taken.
async fn timed_run(env: &TestEnv, tasks: Vec<NewTask>, n: usize) -> Duration {
    let base_b = completed(env, "b");
    let base_c = completed(env, "c");
    let started = Instant::now();
    env.enqueue_tasks(tasks).await;
    eventually(LONG, "b and c completed", || async {
        completed(env, "b") + completed(env, "c") - base_b - base_c >= n
    })
    .await;
    started.elapsed()
}

#[tokio::test]
// The throughput other tenants keep during a storm is a speed figure, so it is printed here (and
// measured by `redrive bench`), not asserted: under a loaded CI machine wall time says little. What
// is asserted is the behaviour that keeps it: the storm's breaker opens during the storm and b and c
// finish their work while a has run under a tenth of its tasks — they never wait behind a's backlog.
async fn a_poison_storm_is_held_by_its_breaker_while_other_tenants_finish_their_work() {
    let env = TestEnv::new();
    let cfg = env.config_file("storm.toml", STORM_TOML);
    let mut ms = members(&env, 3, &cfg);
    let ok = json!({"simulate": "ok", "work_ms": 25});
    // Warm up: every member is serving before the clock starts.
    env.enqueue_tasks(tasks("b", "warm-b", 30, ok.clone()))
        .await;
    eventually(LONG, "warm-up", || async { completed(&env, "b") == 30 }).await;

    // Without the storm.
    let n = 2_000;
    let mut calm = tasks("b", "calm-b", n, ok.clone());
    calm.extend(tasks("c", "calm-c", n, ok.clone()));
    let without = timed_run(&env, calm, 2 * n).await;

    // The same work while tenant a floods 20,000 tasks that always fail (each retried once),
    // all arriving together.
    let bad = json!({"simulate": "error", "message": "model error: tool loop", "work_ms": 0});
    let mut storm = tasks("a", "a", 20_000, bad);
    let mut b = tasks("b", "storm-b", n, ok.clone()).into_iter();
    let mut c = tasks("c", "storm-c", n, ok.clone()).into_iter();
    let mut mixed = Vec::with_capacity(20_000 + 2 * n);
    for (i, t) in storm.drain(..).enumerate() {
        mixed.push(t);
        if i % 5 == 0 {
            mixed.extend(b.next());
            mixed.extend(c.next());
        }
    }
    mixed.extend(b);
    mixed.extend(c);
    let storm_started_ms = env.server_time_ms().await;
    let with = timed_run(&env, mixed, 2 * n).await;
    let storm_ended_ms = env.server_time_ms().await;

    let ratio = without.as_secs_f64() / with.as_secs_f64();
    let attempts_of_a = starts(&env.activity(), "a")
        .filter(|s| (storm_started_ms..=storm_ended_ms).contains(&s.at_ms))
        .count();
    eprintln!(
        "fairness: b+c took {:.2} s without the storm and {:.2} s during it: throughput ratio {ratio:.3}; \
         tenant a made {attempts_of_a} attempts meanwhile",
        without.as_secs_f64(),
        with.as_secs_f64()
    );
    let log = transitions(&env, "a").await;
    assert_eq!(
        (log[0].to.as_str(), log[0].reason.as_str()),
        ("open", "failure_threshold")
    );
    assert!(
        log[0].at_ms() <= storm_ended_ms,
        "the breaker opened during the storm"
    );
    assert!(
        attempts_of_a < 2_000,
        "the breaker let {attempts_of_a} of a's tasks run during the storm"
    );
    stop(&mut ms);

    // Nothing of a is lost: with its breaker closed by hand and thresholds out of reach, its
    // tasks drain into the dead letters, each exactly once.
    // No member runs now: the command executes in the CLI process (same records and audit).
    let (code, out, err) = env.cli(
        &["breaker", "close", "a", "--reason", "drain", "--local"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let drain = [
        ("REDRIVE_CONFIG", cfg.as_str()),
        ("REDRIVE_ISOLATION__BREAKER__MIN_FAILURES", "1000000"),
        ("REDRIVE_FLEET__CONCURRENCY", "32"),
    ];
    let mut ms: Vec<Member> = (1..=3)
        .map(|i| env.member(&format!("m{i}"), &drain))
        .collect();
    let broker = env.broker().await;
    eventually(LONG, "a drained to the dead letters", || async {
        broker.dlq_len("a").await.unwrap() == 20_000
    })
    .await;
    env.wait_drained(&["a", "b", "c"], LONG).await;
    assert_eq!(broker.retry_len("a").await.unwrap(), 0);
    stop(&mut ms);
    let dead = env.dead_letters("a").await;
    let ids: HashSet<&str> = dead.iter().map(|d| d["task_id"].as_str()).collect();
    assert_eq!(ids.len(), 20_000, "every task of a dead-lettered once");
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert!(per_task.values().all(|n| *n == 1), "a task completed twice");
    assert_eq!(completed(&env, "b"), 30 + 2 * n);
    assert_eq!(completed(&env, "c"), 2 * n);
    assert_eq!(completed(&env, "a"), 0);
}

const CAP_TOML: &str = r#"
[fleet]
concurrency = 16
read_batch = 32

[isolation]
refresh_interval_ms = 100
slot_ttl_ms = 2000

[isolation.tenants.capped]
max_in_flight = 6
"#;

#[tokio::test]
async fn a_tenants_concurrency_cap_holds_across_three_members() {
    let env = TestEnv::new();
    let cfg = env.config_file("cap.toml", CAP_TOML);
    let work = json!({"simulate": "ok", "work_ms": 20});
    let mut all = tasks("capped", "c", 400, work.clone());
    all.extend(tasks("free", "f", 400, work));
    env.enqueue_tasks(all).await;
    let mut ms = members(&env, 3, &cfg);
    let broker = env.broker().await;
    eventually(LONG, "both tenants completed", || async {
        completed(&env, "capped") == 400 && completed(&env, "free") == 400
    })
    .await;
    env.wait_drained(&["capped", "free"], LONG).await;
    // The fleet-wide reservations' high-water mark, kept by the slots script.
    let (_, reserved_peak) = broker.in_flight("capped").await.unwrap();
    stop(&mut ms);

    let acts = env.activity();
    let capped = peak_running(&acts, "capped");
    let free = peak_running(&acts, "free");
    let capped_members: HashSet<&str> =
        starts(&acts, "capped").map(|a| a.member.as_str()).collect();
    eprintln!(
        "peak in flight: capped {capped} running (reserved peak {reserved_peak}), free {free} running; capped ran on {capped_members:?}"
    );
    assert_eq!(
        reserved_peak, 6,
        "the fleet reserved up to the cap, never past it"
    );
    assert!(
        (1..=6).contains(&capped),
        "{capped} capped attempts ran at once"
    );
    assert!(free > 6, "the cap is per tenant: free peaked at {free}");
    assert_eq!(env.side_effects().len(), 800);
}

const WEIGHTS_TOML: &str = r#"
[fleet]
concurrency = 4
read_batch = 8

[isolation.tenants.gold]
weight = 3
"#;

#[tokio::test]
async fn weights_share_a_member_between_tenants_with_work() {
    let env = TestEnv::new();
    let cfg = env.config_file("weights.toml", WEIGHTS_TOML);
    let work = json!({"simulate": "ok", "work_ms": 10});
    let mut all = tasks("gold", "g", 300, work.clone());
    all.extend(tasks("basic", "b", 300, work));
    env.enqueue_tasks(all).await;
    let mut ms = members(&env, 1, &cfg);
    env.wait_drained(&["gold", "basic"], LONG).await;
    stop(&mut ms);
    let acts = env.activity();
    // While both have a backlog (the first 200 starts), gold gets three turns for each of
    // basic's.
    let first: Vec<&Act> = acts.iter().filter(|a| a.start).take(200).collect();
    let gold = first.iter().filter(|a| a.tenant == "gold").count();
    eprintln!("gold took {gold} of the first 200 starts");
    assert!((135..=165).contains(&gold), "gold took {gold} of 200");
    assert_eq!(env.side_effects().len(), 600);
}

#[tokio::test]
async fn operators_hold_and_release_a_tenant_and_bad_input_is_refused() {
    let env = TestEnv::new();
    let ok = json!({"simulate": "ok", "work_ms": 0});
    env.enqueue("acme", 20, ok.clone()).await;
    env.enqueue("other", 20, ok).await;
    let json_of = |args: &[&str]| -> Value {
        let (code, out, err) = env.cli(args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };

    let t = json_of(&["tenants", "--json"]);
    let acme = &t["tenants"][0];
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["lane_depth"], 20);
    assert_eq!(acme["pending"], 0);
    assert_eq!(acme["retries_scheduled"], 0);
    assert_eq!(acme["dead_letters"], 0);
    assert_eq!(acme["in_flight"], 0);
    assert_eq!(acme["breaker"]["state"], "closed");
    assert_eq!(t["tenants"][1]["tenant"], "other");

    // No fleet runs yet: without --local the CLI says so and changes nothing.
    let (code, _, err) = env.cli(&["breaker", "open", "acme", "--reason", "incident 42"], &[]);
    assert_eq!(code, 68, "{err}");
    assert_eq!(
        json_of(&["tenants", "acme", "--json"])["tenants"][0]["breaker"]["state"],
        "closed"
    );
    let opened = json_of(&[
        "breaker",
        "open",
        "acme",
        "--reason",
        "incident 42",
        "--local",
        "--json",
    ]);
    assert_eq!(
        (
            &opened["details"]["from"],
            &opened["details"]["to"],
            &opened["details"]["changed"]
        ),
        (&json!("closed"), &json!("open"), &json!(true))
    );
    let again = json_of(&["breaker", "open", "acme", "--local", "--json"]);
    assert_eq!(again["details"]["changed"], false);
    let (code, out, _) = env.cli(&["tenants", "acme"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("open, held (incident 42)"), "{out}");
    assert!(out.contains("closed → open (operator)"), "{out}");

    // Bad input: a clear message and a non-zero exit, and nothing changes.
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["breaker", "open", "nobody"],
            66,
            "tenant 'nobody' is not registered",
        ),
        (
            &["breaker", "close", "nobody"],
            66,
            "registered: acme, other",
        ),
        (&["tenants", "nobody", "--json"], 66, "not registered"),
        (&["breaker", "open", "a{b}"], 64, "contains '{'"),
        (&["tenants", "a b"], 64, "contains ' '"),
        (
            &["breaker", "close", "acme", "--reason", "", "--local"],
            64,
            "reason",
        ),
        (
            &[
                "breaker",
                "close",
                "acme",
                "--reason",
                "two\nlines",
                "--local",
            ],
            64,
            "control character",
        ),
        (&["breaker", "flip", "acme"], 2, "unrecognized subcommand"),
        (&["breaker", "open"], 2, "required"),
        (&["tenants", "--bogus"], 2, "unexpected argument"),
    ];
    for (args, want_code, want) in cases {
        let (code, out, err) = env.cli(args, &[]);
        assert_eq!(code, *want_code, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    }
    assert_eq!(
        json_of(&["tenants", "acme", "--json"])["tenants"][0]["breaker"]["state"],
        "open"
    );

    // A member holds the tenant back while the breaker is held open: the other tenant's
    // tasks, enqueued after acme's, all complete and acme's stay in its lane unread.
    let mut m = env.member("m1", &[]);
    eventually(LONG, "other completed", || async {
        completed(&env, "other") == 20
    })
    .await;
    let t = json_of(&["tenants", "acme", "--json"]);
    assert_eq!(completed(&env, "acme"), 0);
    assert_eq!(t["tenants"][0]["lane_depth"], 20);
    assert_eq!(t["tenants"][0]["pending"], 0);

    // With a member running, the command goes through the admin command stream: executed by
    // the member, once, and kept in the audit trail with who and why.
    let (code, out, err) = env.cli(&["breaker", "close", "acme", "--reason", "fixed"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("open → closed"), "{out}");
    assert!(out.contains("executed on m1"), "{out}");
    let (code, audit, _) = env.cli(&["admin", "audit", "--limit", "1"], &[]);
    assert_eq!(code, 0);
    assert!(
        audit.contains("breaker") && audit.contains("why: fixed"),
        "{audit}"
    );
    eventually(LONG, "acme completed", || async {
        completed(&env, "acme") == 20
    })
    .await;
    assert!(m.stop().success());
    let log = transitions(&env, "acme").await;
    let seen: Vec<(&str, &str, &str, &str)> = log
        .iter()
        .map(|t| {
            (
                t.from.as_str(),
                t.to.as_str(),
                t.reason.as_str(),
                t.detail.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("closed", "open", "operator", "incident 42"),
            ("open", "closed", "operator", "fixed")
        ]
    );
}

const HOLD_TOML: &str = r#"
[fleet]
concurrency = 2
read_batch = 24

[retry]
delays_ms = [3600000]
max_delay_ms = 3600000
jitter = "none"
poll_interval_ms = 50

[isolation]
refresh_interval_ms = 100
slot_ttl_ms = 2000

# More failures to open than attempts can run at once: the reports of attempts that were still
# running when it opened (they arrive within a refresh) cannot re-open it after the close alone.
[isolation.breaker]
min_failures = 6
failure_rate = 0.5
window_ms = 60000
cooldown_ms = 600000
"#;

/// Closing a breaker by hand releases the tasks it held back at once (the cool-down is ten
/// minutes), while genuine retries keep their own due time.
#[tokio::test]
async fn closing_a_breaker_by_hand_releases_held_tasks_at_once_and_retries_keep_their_time() {
    let env = TestEnv::new();
    let cfg = env.config_file("hold.toml", HOLD_TOML);
    let outage = env.dir.join("outage");
    std::fs::write(&outage, "").unwrap();
    let work = json!({"simulate": "ok", "work_ms": 100, "fail_while": outage.to_str().unwrap()});
    env.enqueue_tasks(tasks("acme", "h", 40, work)).await;
    let mut ms = members(&env, 1, &cfg);
    let broker = env.broker().await;

    // The first attempts fail, the breaker opens, and what the member had read already is
    // held back unattempted (attempt still 1) while the failed ones wait an hour (attempt 2).
    eventually(LONG, "the breaker opened and held tasks back", || async {
        let info = broker.breaker_info("acme").await.unwrap();
        info.state == "open"
            && info.deferred >= 1
            && broker.pending_count("acme").await.unwrap() == 0
    })
    .await;
    let retries: HashMap<String, u64> = env
        .scheduled_retries("acme")
        .await
        .into_iter()
        .filter(|(f, _)| f["attempt"] == "2")
        .map(|(f, due)| (f["task_id"].clone(), due))
        .collect();
    assert!(!retries.is_empty(), "no genuine retry was scheduled");
    let held = broker.breaker_info("acme").await.unwrap().deferred;

    // The upstream is back and the operator closes the breaker: everything but the genuine
    // retries runs now, not after the ten-minute cool-down.
    std::fs::remove_file(&outage).unwrap();
    let closed_at = env.server_time_ms().await;
    let (code, out, err) = env.cli(&["breaker", "close", "acme", "--reason", "fixed"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(60), "the held tasks ran", || async {
        completed(&env, "acme") == 40 - retries.len()
    })
    .await;
    let done: HashSet<String> = env.side_effects().into_iter().map(|e| e.1).collect();
    assert!(
        retries.keys().all(|id| !done.contains(id)),
        "a retry ran early"
    );
    let still: HashMap<String, u64> = env
        .scheduled_retries("acme")
        .await
        .into_iter()
        .map(|(f, due)| {
            assert_eq!(f["attempt"], "2", "only genuine retries are left: {f:?}");
            (f["task_id"].clone(), due)
        })
        .collect();
    assert_eq!(still, retries, "genuine retries keep their due time");
    assert!(still.values().all(|due| *due > closed_at + 50 * 60 * 1000));
    eprintln!(
        "{held} held tasks released by the close; {} retries kept",
        retries.len()
    );
    stop(&mut ms);
}
