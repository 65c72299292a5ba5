//! Storm-proof logging against a real member: a storm of failing tasks at the default level
//! writes, per event and cause, the first line in full and one summary per window — a number of
//! lines bounded by the causes and the windows, not by the tasks — while every dead letter is
//! there, every metric counts every event, and the summaries' counts add up to the events.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{eventually, http_get, Member, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

/// The tenants of the storm.
const TENANTS: [&str; 3] = ["acme", "beta", "gamma"];

/// The demo agent's outcomes the storm's tasks are forced to, and the class each fails with:
/// a transient one (three attempts, then a dead letter) and two permanent ones (a dead letter
/// at once; the context overflow's message carries a number that differs per task, which the
/// fingerprint's error pattern masks).
const CAUSES: [(&str, &str); 3] = [
    ("rate_limited", "rate_limited"),
    ("malformed_output", "schema_mismatch"),
    ("context_overflow", "context_overflow"),
];

/// `per_cause` tasks of each cause, spread over the tenants; payloads of varying size make the
/// context overflow's message differ from task to task.
fn storm_tasks(per_cause: usize) -> Vec<NewTask> {
    let mut tasks = Vec::new();
    for (simulate, _) in CAUSES {
        for i in 0..per_cause {
            let tenant = TENANTS[i % TENANTS.len()];
            let payload = json!({"simulate": simulate, "work_ms": 0, "pad": "x".repeat(i % 97)});
            tasks.push(
                NewTask::new(tenant, "triage", payload).with_task_id(format!("{simulate}-{i}")),
            );
        }
    }
    tasks
}

/// The sum of the series of `name` whose labels contain `labels`.
fn metric(body: &str, name: &str, labels: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The member's log as JSON lines (every line must be one).
fn json_lines(m: &Member) -> Vec<Value> {
    m.log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The address of the member's metrics endpoint, from its JSON log once it listens.
fn metrics_addr(m: &Member) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let found = m.log_text().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "serving /metrics, /healthz and /readyz")
                .then(|| v["listen"].as_str().map(str::to_owned))?
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "never listened: {}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A storm's lines: the full lines of each event by fingerprint (or by message where the line
/// has no fingerprint to group by), and the summaries by (event, fingerprint).
#[derive(Default, Debug)]
struct StormLog {
    /// (message, fingerprint of its cause) → full lines.
    full: BTreeMap<(String, String), Vec<Value>>,
    /// (event, fingerprint) → summaries.
    summaries: BTreeMap<(String, String), Vec<Value>>,
    /// Every other line.
    other: Vec<Value>,
}

/// Sorts `lines` into full storm lines (named by `fingerprint_of`), summaries and the rest.
fn sort_lines(lines: Vec<Value>, fingerprint_of: &BTreeMap<String, String>) -> StormLog {
    let mut log = StormLog::default();
    for line in lines {
        let message = line["message"].as_str().unwrap_or_default().to_owned();
        if let Some(event) = line["event"].as_str() {
            let f = line["fingerprint"].as_str().unwrap_or_default().to_owned();
            log.summaries
                .entry((event.to_owned(), f))
                .or_default()
                .push(line);
        } else if [
            "task attempt failed",
            "retry scheduled",
            "task dead-lettered",
        ]
        .contains(&message.as_str())
        {
            // The task's cause, from its id (`<simulate>-<i>`).
            let task_id = line["task_id"].as_str().unwrap_or_default();
            let cause = task_id.rsplit_once('-').map_or("", |(c, _)| c);
            let f = fingerprint_of.get(cause).cloned().unwrap_or_default();
            log.full.entry((message, f)).or_default().push(line);
        } else {
            log.other.push(line);
        }
    }
    log
}

/// The summaries' suppressed counts of `event`, by fingerprint.
fn suppressed(log: &StormLog, event: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((e, f), lines) in &log.summaries {
        if e == event {
            *out.entry(f.clone()).or_default() += lines
                .iter()
                .map(|l| l["suppressed"].as_u64().unwrap_or(0))
                .sum::<u64>();
        }
    }
    out
}

/// 3,000 failing tasks (5,000 failed attempts, 2,000 retries, 3,000 dead letters) at the default
/// level and storm interval: each of the 7 keys (three causes' failures and dead letters, one
/// cause's retries) writes one full line and one summary per window, the summaries count the
/// rest exactly, the dead letters hold every task, and the metrics count every event.
#[tokio::test]
async fn a_failure_storm_writes_a_bounded_number_of_lines_and_loses_no_count() {
    let env = TestEnv::new();
    let per_cause = 1_000;
    env.enqueue_tasks(storm_tasks(per_cause)).await;
    let started = Instant::now();
    let mut m = env.member(
        "m1",
        &[
            // The level stays the default ("info"); JSON only so the test reads fields.
            ("REDRIVE_LOG__FORMAT", "json"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_RETRY__POLL_INTERVAL_MS", "50"),
            // No breaker: the storm runs straight through (deferrals are another test's).
            ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
        ],
    );
    let addr = metrics_addr(&m);
    let total = (per_cause * CAUSES.len()) as f64;
    let (attempts, retries) = (per_cause as f64 * 5.0, per_cause as f64 * 2.0);
    eventually(LONG, "every task dead-lettered and counted", || async {
        let body = http_get(&addr, "/metrics").1;
        metric(&body, "redrive_dead_lettered_total", "") == total
            && metric(&body, "redrive_tasks_failed_total", "") == attempts
            && metric(&body, "redrive_tasks_retried_total", "") == retries
    })
    .await;
    let body = http_get(&addr, "/metrics").1;
    let counted_suppressed = |event: &str| {
        metric(
            &body,
            "redrive_log_lines_suppressed_total",
            &format!("event=\"{event}\""),
        ) as u64
    };
    assert!(m.stop().success(), "{}", m.log_text());
    let windows = started.elapsed().as_millis() as u64 / 10_000 + 1;

    // Every task is in the dead letters, with its cause's fingerprint.
    let mut fingerprint_of: BTreeMap<String, String> = BTreeMap::new();
    let mut dead = 0;
    for tenant in TENANTS {
        for d in env.dead_letters(tenant).await {
            dead += 1;
            let cause = d["task_id"].rsplit_once('-').unwrap().0.to_owned();
            let class = CAUSES.iter().find(|(s, _)| *s == cause).unwrap().1;
            assert_eq!(d["class"], class, "{d:?}");
            let f = fingerprint_of
                .entry(cause.clone())
                .or_insert_with(|| d["fingerprint"].clone());
            assert_eq!(f, &d["fingerprint"], "one fingerprint per cause: {d:?}");
        }
    }
    assert_eq!(dead, per_cause * CAUSES.len());
    assert_eq!(fingerprint_of.len(), CAUSES.len());

    let lines = json_lines(&m);
    let written = lines.len();
    let log = sort_lines(lines, &fingerprint_of);
    // (event, message, causes, events per cause)
    let events = [
        (
            "attempt_failed",
            "task attempt failed",
            vec!["rate_limited", "malformed_output", "context_overflow"],
            [3, 1, 1],
        ),
        (
            "retry_scheduled",
            "retry scheduled",
            vec!["rate_limited"],
            [2, 0, 0],
        ),
        (
            "dead_lettered",
            "task dead-lettered",
            vec!["rate_limited", "malformed_output", "context_overflow"],
            [1, 1, 1],
        ),
    ];
    let mut keys = 0;
    for (event, message, causes, per_task) in &events {
        let sums = suppressed(&log, event);
        let mut event_total = 0;
        for (i, cause) in causes.iter().enumerate() {
            keys += 1;
            let f = &fingerprint_of[*cause];
            let full = log
                .full
                .get(&(message.to_string(), f.clone()))
                .map_or(0, Vec::len) as u64;
            let summaries = log
                .summaries
                .get(&(event.to_string(), f.clone()))
                .map_or(&[][..], Vec::as_slice);
            let expected = per_task[i] * per_cause as u64;
            // The first line of each window in full, the rest counted: nothing lost.
            assert!(
                (1..=windows).contains(&full),
                "{event} {cause}: {full} full lines in {windows} windows"
            );
            assert!(
                summaries.len() as u64 <= windows,
                "{event} {cause}: {summaries:?}"
            );
            assert_eq!(
                full + sums.get(f).copied().unwrap_or(0),
                expected,
                "{event} {cause}: full lines and summarised ones add up to the events"
            );
            event_total += expected - full;
            for s in summaries {
                assert_eq!(
                    s["level"],
                    if *event == "retry_scheduled" {
                        "INFO"
                    } else {
                        "WARN"
                    }
                );
                assert_eq!(s["target"], "redrive::fleet::settler");
                let tenants = s["tenants"].as_str().unwrap();
                for t in TENANTS {
                    assert!(tenants.contains(t), "{s}");
                }
                let (first, last) = (
                    s["first_task_id"].as_str().unwrap(),
                    s["last_task_id"].as_str().unwrap(),
                );
                assert!(first.starts_with(cause) && last.starts_with(cause), "{s}");
                assert!(
                    s["message"]
                        .as_str()
                        .unwrap()
                        .contains("like the one above"),
                    "{s}"
                );
                if *event == "retry_scheduled" {
                    assert!(s.get("find").is_none(), "{s}");
                } else {
                    assert_eq!(
                        s["find"],
                        format!("redrive dlq list --fingerprint {f}"),
                        "{s}"
                    );
                }
            }
        }
        // The metric counts exactly what the summaries count.
        assert_eq!(counted_suppressed(event), event_total, "{event}");
    }
    // Bounded by keys and windows, not by the 10,000 events: two lines per key and window,
    // plus the member's own lines (start, tenants served, stop).
    assert!(log.other.len() <= 30, "{:#?}", log.other);
    let bound = 2 * keys * windows as usize + log.other.len();
    assert!(written <= bound, "{written} lines > {bound}");

    // The summary's command lists the dead letters of its cause.
    let s = &log.summaries[&(
        "dead_lettered".to_owned(),
        fingerprint_of["malformed_output"].clone(),
    )][0];
    let find: Vec<&str> = s["find"].as_str().unwrap().split(' ').skip(1).collect();
    let mut args = find.clone();
    args.extend(["--json", "--limit", "10000"]);
    let (code, out, err) = env.cli(&args, &[]);
    assert_eq!(code, 0, "{args:?}: {err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let listed = listed["entries"].as_array().unwrap();
    assert_eq!(listed.len(), per_cause, "{args:?}");
    assert!(listed.iter().all(|d| d["class"] == "schema_mismatch"));
}

/// A window ends while the member keeps running: its summary is written then, without waiting
/// for another line of its cause; a clean stop writes the summaries of windows still open; an
/// interval of 0 writes every line.
#[tokio::test]
async fn summaries_are_written_when_the_window_ends_and_at_a_clean_stop() {
    let env = TestEnv::new();
    let n = 300;
    let tasks = |tag: &str| -> Vec<NewTask> {
        (0..n)
            .map(|i| {
                NewTask::new(
                    TENANTS[i % 2],
                    "triage",
                    json!({"simulate": "malformed_output", "work_ms": 0}),
                )
                .with_task_id(format!("{tag}-{i}"))
            })
            .collect()
    };
    let member = |id: &str, interval: &str| {
        env.member(
            id,
            &[
                ("REDRIVE_LOG__FORMAT", "json"),
                ("REDRIVE_LOG__STORM_INTERVAL_MS", interval),
                ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
            ],
        )
    };
    let summaries = |m: &Member| -> Vec<Value> {
        json_lines(m)
            .into_iter()
            .filter(|l| l["event"].is_string())
            .collect()
    };
    let sum = |lines: &[Value], event: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["event"] == event)
            .map(|l| l["suppressed"].as_u64().unwrap_or(0))
            .sum()
    };
    let full = |m: &Member, message: &str| -> u64 {
        json_lines(m)
            .iter()
            .filter(|l| l["message"] == message && l["event"].is_null())
            .count() as u64
    };
    let adds_up = |m: &Member| {
        let s = summaries(m);
        full(m, "task attempt failed") + sum(&s, "attempt_failed") == n as u64
            && full(m, "task dead-lettered") + sum(&s, "dead_lettered") == n as u64
    };
    let dead = || async {
        let mut all = 0;
        for t in &TENANTS[..2] {
            all += env.dead_letters(t).await.len();
        }
        all
    };

    // Windows of 500 ms: nothing fails after the storm, so the summary loop alone writes them.
    env.enqueue_tasks(tasks("a")).await;
    let mut m = member("m1", "500");
    eventually(
        LONG,
        "the storm summarised while the member runs",
        || async { adds_up(&m) },
    )
    .await;
    assert!(m.try_exit().is_none(), "still running");
    let written = summaries(&m);
    assert!(!written.is_empty());
    for s in &written {
        let tenants = s["tenants"].as_str().unwrap();
        assert!(tenants.contains("acme") && tenants.contains("beta"), "{s}");
        assert!(s["window_ms"].as_u64().unwrap() <= 500, "{s}");
    }
    assert!(m.stop().success());

    // Windows of an hour: nothing is summarised while the member runs; its stop writes them.
    env.enqueue_tasks(tasks("b")).await;
    let mut m = member("m2", "3600000");
    eventually(LONG, "the second storm dead-lettered", || async {
        dead().await == 2 * n
    })
    .await;
    assert!(summaries(&m).is_empty());
    assert!(m.stop().success());
    assert!(adds_up(&m), "{}", m.log_text());
    assert_eq!(summaries(&m).len(), 2, "one per event: {}", m.log_text());

    // Off: one line per event.
    env.enqueue_tasks(tasks("c")).await;
    let mut m = member("m3", "0");
    eventually(LONG, "every line written", || async {
        full(&m, "task dead-lettered") == n as u64
    })
    .await;
    assert!(m.stop().success());
    assert_eq!(full(&m, "task attempt failed"), n as u64);
    assert!(summaries(&m).is_empty());
}
