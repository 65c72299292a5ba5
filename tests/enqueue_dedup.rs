//! Idempotent enqueue (issue 14, producer side): a task_id with a live record is not enqueued
//! twice — not by racing processes, not within one batch, not through `--file` — and is
//! reported as a duplicate with the live record's state; a tenant with `dedup = false` appends
//! again and starts a new record; with records off an enqueue is a plain XADD; a flushed
//! script cache changes nothing; a resolved or discarded task_id is enqueued anew. Real
//! redis-server, real `redrive` processes.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;
use redrive::sections::RawTaskOverride;
use redrive::{Broker, NewTask, Producer, Settings, TaskState};
use serde_json::{json, Value};

/// The record of `task_id` (empty when there is none).
async fn record(env: &TestEnv, tenant: &str, task_id: &str) -> HashMap<String, String> {
    env.task_read(tenant, task_id).await.0
}

/// The ids of `tenant`'s lane entries, oldest first, read in pages of 1,000 (a lane of tens of
/// thousands in one reply can outlast the connection's response timeout on a loaded machine).
async fn lane_ids(env: &TestEnv, tenant: &str) -> Vec<String> {
    let mut raw = env.raw().await;
    let mut ids = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let v: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("{}:{{{tenant}}}:lane", env.prefix))
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut raw)
            .await
            .unwrap();
        let n = v.len();
        ids.extend(v.into_iter().map(|(id, _)| id));
        match ids.last() {
            Some(last) if n == 1_000 => from = format!("({last}"),
            _ => return ids,
        }
    }
}

/// Every key of this env's prefix matching `pattern` (after the prefix).
async fn keys(env: &TestEnv, pattern: &str) -> Vec<String> {
    let mut raw = env.raw().await;
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}{pattern}", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    k.sort();
    k
}

/// The duplicates counted in `tenant`'s per-minute stats buckets.
async fn duplicates_counted(env: &TestEnv, tenant: &str) -> u64 {
    let mut raw = env.raw().await;
    let mut n = 0;
    for k in keys(env, &format!(":{{{tenant}}}:stats:*")).await {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(&k)
            .arg("duplicates")
            .query_async(&mut raw)
            .await
            .unwrap();
        n += v.unwrap_or(0);
    }
    n
}

/// Sets the state of a record (and a `dlq` field only the old record has) by HSET.
async fn set_state(env: &TestEnv, id: &str, state: &str) {
    let mut raw = env.raw().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:{{acme}}:task:{id}", env.prefix))
        .arg("state")
        .arg(state)
        .arg("dlq")
        .arg("1-1")
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// Empties the server's script cache.
async fn script_flush(env: &TestEnv) {
    let mut raw = env.raw().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// The env's settings with `[tasks]` changed by `tweak`.
fn settings_with(env: &TestEnv, tweak: impl FnOnce(&mut redrive::RawConfig)) -> Settings {
    let mut raw = redrive::RawConfig::defaults().unwrap();
    raw.redis.url = env.url();
    raw.redis.key_prefix = env.prefix.clone();
    tweak(&mut raw);
    Settings::from_raw(raw).unwrap()
}

/// A producer of its own (its own connection) with `settings`.
async fn producer_with(settings: &Settings) -> Producer {
    Producer::new(Broker::connect(settings).await.unwrap(), settings)
}

fn task(tenant: &str, id: &str, n: u64) -> NewTask {
    NewTask::new(tenant, "triage", json!({"n": n})).with_task_id(id)
}

/// Issue 14 tests: "Concurrent enqueues of the same id from several processes: exactly one
/// task." Six `redrive enqueue` processes of the built binary start at once, and 24 tokio
/// tasks each on a connection of its own, all with task_id `t-race`: one lane entry, one
/// record (queued, naming that entry), and every other enqueue reports a duplicate of that
/// entry in state queued.
#[tokio::test]
async fn concurrent_enqueues_of_one_task_id_make_exactly_one_task() {
    let env = TestEnv::new();
    let tenant = "race";
    // The processes first: each connects and enqueues as fast as it can.
    let children: Vec<_> = (0..6)
        .map(|i| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
            cmd.args([
                "enqueue",
                "--tenant",
                tenant,
                "--kind",
                "triage",
                "--payload",
                &format!("{{\"from\":\"process {i}\"}}"),
                "--task-id",
                "t-race",
            ]);
            if i % 2 == 0 {
                cmd.arg("--json");
            }
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("REDRIVE_REDIS_URL", env.url())
                .env("REDRIVE_REDIS__KEY_PREFIX", &env.prefix)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (i, cmd.spawn().unwrap())
        })
        .collect();
    // Meanwhile the library, from many tasks on separate connections.
    let settings = env.settings();
    let mut producers = Vec::new();
    for _ in 0..24 {
        producers.push(producer_with(&settings).await);
    }
    let tasks: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            tokio::spawn(async move { p.enqueue(task("race", "t-race", i as u64)).await })
        })
        .collect();
    let mut library = Vec::new();
    for t in tasks {
        library.push(t.await.unwrap().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut outputs = Vec::new();
    for (i, mut child) in children {
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "redrive enqueue process {i} did not finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "a duplicate is no failure: {stdout}{stderr}"
        );
        outputs.push((i, stdout));
    }

    let lane = lane_ids(&env, tenant).await;
    assert_eq!(lane.len(), 1, "exactly one task in the lane: {lane:?}");
    let entry = &lane[0];
    let rec = record(&env, tenant, "t-race").await;
    assert_eq!(rec.get("state").map(String::as_str), Some("queued"));
    assert_eq!(rec.get("entry"), Some(entry));
    assert_eq!(keys(&env, ":{race}:task:*").await.len(), 1, "one record");

    // Exactly one enqueue appended; every other one names that entry as queued.
    let mut appended = 0;
    for e in &library {
        assert_eq!((e.tenant.as_str(), e.task_id.as_str()), (tenant, "t-race"));
        assert_eq!(&e.entry_id, entry);
        match e.duplicate {
            None => appended += 1,
            Some(d) => assert_eq!(d.state, TaskState::Queued),
        }
    }
    for (i, out) in &outputs {
        if i % 2 == 0 {
            let v: Value = serde_json::from_str(out).unwrap();
            let t = &v["tasks"][0];
            assert_eq!(t["entry_id"], entry.as_str(), "{out}");
            if t["duplicate"] == true {
                assert_eq!(t["state"], "queued", "{out}");
                assert_eq!(
                    (v["enqueued"].as_u64(), v["duplicates"].as_u64()),
                    (Some(0), Some(1))
                );
            } else {
                appended += 1;
                assert_eq!(
                    (v["enqueued"].as_u64(), v["duplicates"].as_u64()),
                    (Some(1), Some(0))
                );
            }
        } else if out.starts_with("t-race: duplicate") {
            assert_eq!(
                out.trim_end(),
                format!("t-race: duplicate — already queued (entry {entry}), not enqueued")
            );
        } else {
            appended += 1;
            assert_eq!(out.trim_end(), format!("t-race {entry}"));
        }
    }
    assert_eq!(appended, 1, "exactly one of 30 enqueues appended");
    assert_eq!(duplicates_counted(&env, tenant).await, 29);
}

/// The same task_id twice in one batch: the second is a duplicate of the first (the script
/// sees the record the first wrote), pipelined and in one transaction alike.
#[tokio::test]
async fn a_batch_with_the_same_task_id_twice_reports_the_second_as_a_duplicate() {
    let env = TestEnv::new();
    let p = env.producer().await;
    let out = p
        .enqueue_batch(vec![
            task("acme", "a", 1),
            task("acme", "b", 2),
            task("acme", "a", 3),
        ])
        .await
        .unwrap();
    assert!(out[0].duplicate.is_none() && out[1].duplicate.is_none());
    assert_eq!(out[2].duplicate.map(|d| d.state), Some(TaskState::Queued));
    assert_eq!(out[2].entry_id, out[0].entry_id);
    assert_eq!(
        lane_ids(&env, "acme").await,
        [out[0].entry_id.clone(), out[1].entry_id.clone()]
    );

    let out = p
        .enqueue_all(vec![(1, task("acme", "c", 1)), (2, task("acme", "c", 2))])
        .await
        .unwrap();
    assert!(!out[0].is_duplicate());
    assert_eq!(out[1].duplicate.map(|d| d.state), Some(TaskState::Queued));
    assert_eq!(out[1].entry_id, out[0].entry_id);
    assert_eq!(lane_ids(&env, "acme").await.len(), 3);
    // The record is the first's: its payload is in the lane, the second's nowhere.
    let rec = record(&env, "acme", "c").await;
    assert_eq!(rec["entry"], out[0].entry_id);
    assert_eq!(rec["kind"], "triage");
    assert_eq!(rec["attempt"], "1");
    assert_eq!(rec["runs"], "0");
    assert_eq!(rec["enq"], rec["first"]);
    assert_eq!(duplicates_counted(&env, "acme").await, 2);
}

/// `--file` (one transaction) with duplicates: each is reported with its line, the others are
/// written, the summary counts both, the exit code is 0; `--json` says the same.
#[tokio::test]
async fn enqueue_file_reports_duplicates_per_line_and_writes_the_rest() {
    let env = TestEnv::new();
    let first = env
        .producer()
        .await
        .enqueue(task("acme", "old", 0))
        .await
        .unwrap();
    let line = |id: &str| {
        format!(
            "{{\"tenant\":\"acme\",\"kind\":\"triage\",\"task_id\":\"{id}\",\"payload\":{{}}}}\n"
        )
    };
    let text = [line("a"), line("old"), "\n".into(), line("b"), line("a")].concat();
    let file = env.config_file("tasks.jsonl", &text);
    let (code, out, err) = env.cli(&["enqueue", "--file", &file], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let lane = lane_ids(&env, "acme").await;
    assert_eq!(lane.len(), 3, "old, a and b: {lane:?}");
    let a = record(&env, "acme", "a").await["entry"].clone();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "line 2: old: duplicate — already queued (entry {}), not enqueued",
                first.entry_id
            ),
            format!("line 5: a: duplicate — already queued (entry {a}), not enqueued"),
            "enqueued 2 tasks; 2 duplicates not enqueued".to_owned(),
        ]
    );

    // Again, as JSON: now every line is a duplicate, still exit 0, nothing written.
    let (code, out, err) = env.cli(&["enqueue", "--file", &file, "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["enqueued"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(4))
    );
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| t["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 4, 5]
    );
    for t in tasks {
        assert_eq!(
            (t["duplicate"].as_bool(), t["state"].as_str()),
            (Some(true), Some("queued"))
        );
        assert_eq!(t["tenant"], "acme");
    }
    assert_eq!(tasks[0]["entry_id"], a.as_str());
    assert_eq!(lane_ids(&env, "acme").await.len(), 3);
}

/// `[[tasks.overrides]] tenant = "reuse", dedup = false` (a config file, as an operator
/// writes it): the same task_id appends again, and the record is replaced by the new task's
/// (one record, naming the second entry). Another tenant still refuses.
#[tokio::test]
async fn dedup_off_for_a_tenant_replaces_a_finished_record_but_never_one_in_flight() {
    let env = TestEnv::new();
    let cfg = env.config_file(
        "reuse.toml",
        "[[tasks.overrides]]\ntenant = \"reuse\"\ndedup = false\n",
    );
    let enqueue = |tenant: &str| {
        env.cli(
            &[
                "enqueue",
                "--tenant",
                tenant,
                "--kind",
                "triage",
                "--payload",
                "{}",
                "--task-id",
                "same",
            ],
            &[("REDRIVE_CONFIG", &cfg)],
        )
    };
    let (code, first, err) = enqueue("reuse");
    assert_eq!(code, 0, "{err}");
    // Give the first record a mark only the old task has, to see it replaced whole.
    let mut raw = env.raw().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:{{reuse}}:task:same", env.prefix))
        .arg("state")
        .arg("done")
        .arg("runs")
        .arg("1")
        .query_async(&mut raw)
        .await
        .unwrap();
    let (code, second, err) = enqueue("reuse");
    assert_eq!(code, 0, "{err}");
    let lane = lane_ids(&env, "reuse").await;
    assert_eq!(lane.len(), 2, "appended again: {lane:?}");
    assert_eq!(first.trim_end(), format!("same {}", lane[0]));
    assert_eq!(second.trim_end(), format!("same {}", lane[1]));
    let rec = record(&env, "reuse", "same").await;
    assert_eq!(rec["state"], "queued");
    assert_eq!(rec["entry"], lane[1]);
    assert_eq!(rec["runs"], "0", "a new record, not the old one updated");
    assert_eq!(keys(&env, ":{reuse}:task:*").await.len(), 1);
    assert_eq!(duplicates_counted(&env, "reuse").await, 0);

    // The library reads the same override from its Settings.
    let settings = settings_with(&env, |raw| {
        raw.tasks.overrides.push(RawTaskOverride {
            tenant: Some("reuse".into()),
            dedup: Some(false),
            ..Default::default()
        })
    });
    let p = producer_with(&settings).await;
    let out = p
        .enqueue_batch(vec![
            task("reuse", "same", 1),
            task("other", "same", 1),
            task("other", "same", 2),
        ])
        .await
        .unwrap();
    // "same" of "reuse" is queued (in flight): one task_id has one record, so even a tenant
    // that reuses ids gets the duplicate answer until that task finished.
    assert_eq!(out[0].duplicate.map(|d| d.state), Some(TaskState::Queued));
    assert!(!out[1].is_duplicate());
    assert_eq!(out[2].duplicate.map(|d| d.state), Some(TaskState::Queued));
    assert_eq!(lane_ids(&env, "reuse").await.len(), 2);
    assert_eq!(lane_ids(&env, "other").await.len(), 1);
}

/// `[tasks] enabled = false`: enqueue is a plain XADD — the same task_id twice is two entries,
/// and no record, index or events key exists; pipelined, in a transaction and from the CLI.
#[tokio::test]
async fn records_off_is_a_plain_xadd_and_writes_no_record() {
    let env = TestEnv::new();
    let settings = settings_with(&env, |raw| raw.tasks.enabled = false);
    let p = producer_with(&settings).await;
    let out = p
        .enqueue_batch(vec![task("acme", "x", 1), task("acme", "x", 2)])
        .await
        .unwrap();
    assert!(out.iter().all(|e| !e.is_duplicate()));
    let out = p
        .enqueue_all(vec![(1, task("acme", "x", 3)), (2, task("acme", "x", 4))])
        .await
        .unwrap();
    assert!(out.iter().all(|e| !e.is_duplicate()));
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "triage",
            "--payload",
            "{}",
            "--task-id",
            "x",
        ],
        &[("REDRIVE_TASKS__ENABLED", "false")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("x "), "{out}");
    assert_eq!(lane_ids(&env, "acme").await.len(), 5);
    assert_eq!(
        keys(&env, ":*").await,
        [
            format!("{}:tenants", env.prefix),
            format!("{}:{{acme}}:lane", env.prefix),
        ],
        "a lane and the tenant registry, nothing else"
    );
}

/// The script cache flushed (SCRIPT FLUSH, as after a restart without persistence of it)
/// before each kind of enqueue: every one still works, first on a fresh server too.
#[tokio::test]
async fn a_flushed_script_cache_does_not_fail_an_enqueue() {
    let env = TestEnv::new();
    // A fresh server has no script loaded: the transaction path first.
    let p = env.producer().await;
    let out = p
        .enqueue_all(vec![(1, task("acme", "f1", 1))])
        .await
        .unwrap();
    assert!(!out[0].is_duplicate());
    script_flush(&env).await;
    let out = p
        .enqueue_all(vec![(1, task("acme", "f2", 1)), (2, task("acme", "f1", 2))])
        .await
        .unwrap();
    assert!(!out[0].is_duplicate() && out[1].is_duplicate());
    script_flush(&env).await;
    let out = p
        .enqueue_batch(vec![task("acme", "f3", 1), task("acme", "f2", 2)])
        .await
        .unwrap();
    assert!(!out[0].is_duplicate() && out[1].is_duplicate());
    script_flush(&env).await;
    assert!(p
        .enqueue(task("acme", "f4", 1))
        .await
        .unwrap()
        .duplicate
        .is_none());
    script_flush(&env).await;
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "triage",
            "--payload",
            "{}",
            "--task-id",
            "f4",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("f4: duplicate — already queued"), "{out}");
    assert_eq!(lane_ids(&env, "acme").await.len(), 4);
    for id in ["f1", "f2", "f3", "f4"] {
        assert_eq!(record(&env, "acme", id).await["state"], "queued");
    }
}

/// A record that is resolved or discarded (its dead letter settled by an operator) is not
/// live: the task_id is enqueued anew with a fresh record. Every other state refuses, each
/// reported in the CLI's words. The states are set with HSET here: reaching them for real
/// needs a member to dead-letter the task and the admin path (`dlq resolve`/`discard`) to
/// settle it, which the member and admin sides of issue 14 write and test.
#[tokio::test]
async fn a_resolved_or_discarded_task_id_is_enqueued_anew_and_live_ones_are_refused() {
    let env = TestEnv::new();
    let p = env.producer().await;
    let mut raw = env.raw().await;
    for state in ["resolved", "discarded"] {
        let id = format!("t-{state}");
        let old = p.enqueue(task("acme", &id, 1)).await.unwrap();
        set_state(&env, &id, state).await;
        let new = p.enqueue(task("acme", &id, 2)).await.unwrap();
        assert!(!new.is_duplicate(), "{state} is not live");
        assert_ne!(new.entry_id, old.entry_id);
        let rec = record(&env, "acme", &id).await;
        assert_eq!(rec["state"], "queued");
        assert_eq!(rec["entry"], new.entry_id);
        assert!(!rec.contains_key("dlq"), "the old record is gone: {rec:?}");
    }
    let said = [
        ("running", "running"),
        ("retry_scheduled", "scheduled for a retry"),
        ("deferred", "deferred (its tenant's breaker is open)"),
        ("done", "done"),
        ("dead_lettered", "dead-lettered"),
        ("expired", "dead-lettered (its deadline passed)"),
        ("replayed", "replayed (back in its lane)"),
    ];
    for (state, words) in said {
        let id = format!("t-{state}");
        let first = p.enqueue(task("acme", &id, 1)).await.unwrap();
        set_state(&env, &id, state).await;
        let again = p.enqueue(task("acme", &id, 2)).await.unwrap();
        assert_eq!(again.duplicate.map(|d| d.state.as_str()), Some(state));
        assert_eq!(again.entry_id, first.entry_id);
        let (code, out, err) = env.cli(
            &[
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "triage",
                "--payload",
                "{}",
                "--task-id",
                &id,
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.trim_end(),
            format!(
                "{id}: duplicate — already {words} (entry {}), not enqueued",
                first.entry_id
            )
        );
    }
    let lane: u64 = redis::cmd("XLEN")
        .arg(format!("{}:{{acme}}:lane", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(lane, 2 * 2 + 7);
}

/// A producer counts each duplicate it was refused in
/// `redrive_duplicates_total{tenant,side="producer"}`.
#[tokio::test]
async fn producer_duplicates_are_counted_by_tenant_and_side() {
    let handle = redrive::testkit::prometheus().unwrap();
    let env = TestEnv::new();
    let p = env.producer().await;
    p.enqueue_batch(vec![
        task("metered", "m", 1),
        task("metered", "m", 2),
        task("metered", "m", 3),
    ])
    .await
    .unwrap();
    let text = handle.render();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("redrive_duplicates_total{")
                && l.contains("tenant=\"metered\"")
                && l.contains("side=\"producer\"")
        })
        .unwrap_or_else(|| panic!("no producer duplicates series in:\n{text}"));
    assert!(line.ends_with(" 2"), "{line}");
}

/// How many commands the server answered NOSCRIPT so far (INFO errorstats).
async fn noscript_errors(env: &TestEnv) -> u64 {
    let mut raw = env.raw().await;
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Another client flushes the script cache over and over while big pipelined batches go in:
/// the calls the server answered NOSCRIPT for (checked: some were) are sent again, so every
/// task_id ends in the lane exactly once with its record, and a repeated one is reported
/// as a duplicate.
#[tokio::test]
async fn a_script_cache_flushed_during_a_pipelined_batch_loses_no_task() {
    let env = TestEnv::new();
    let p = env.producer().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let stop = stop.clone();
        let mut raw = env.raw().await;
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batches = 0;
    let mut total = 0;
    while noscript_errors(&env).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no enqueue call met a flushed cache in {batches} batches"
        );
        let mut tasks: Vec<NewTask> = (0..3_000)
            .map(|i| task("flushed", &format!("b{batches}-{i}"), i))
            .collect();
        tasks.push(task("flushed", &format!("b{batches}-0"), 0));
        let out = p.enqueue_batch(tasks).await.unwrap();
        assert_eq!(out.iter().filter(|e| e.is_duplicate()).count(), 1);
        batches += 1;
        total += 3_000;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flusher.await.unwrap();
    let lane = lane_ids(&env, "flushed").await;
    assert_eq!(lane.len(), total, "each task once");
    assert_eq!(keys(&env, ":{flushed}:task:*").await.len(), total);
    eprintln!(
        "{batches} batches, {} NOSCRIPT answers retried",
        noscript_errors(&env).await
    );
}

/// A producer registers a tenant with its first enqueue and leaves the `SADD` out of the
/// following ones for a second; should the registry lose the tenant, a later enqueue registers
/// it again.
#[tokio::test]
async fn a_producer_registers_a_tenant_once_a_second_at_most() {
    let env = TestEnv::new();
    let producer = env.producer().await;
    let registry = format!("{}:tenants", env.prefix);
    let mut raw = env.raw().await;
    let sadds = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_sadd:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut raw)
        .await
        .unwrap();
    for _ in 0..5 {
        producer
            .enqueue(NewTask::new("once", "k", json!({})))
            .await
            .unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(sadds(info), 1, "one SADD for five enqueues within a second");
    // The registry loses the tenant (as a Redis without persistence would on a restart).
    let _: () = redis::cmd("SREM")
        .arg(&registry)
        .arg("once")
        .query_async(&mut raw)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    producer
        .enqueue(NewTask::new("once", "k", json!({})))
        .await
        .unwrap();
    let held: bool = redis::cmd("SISMEMBER")
        .arg(&registry)
        .arg("once")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(held, "registered again a second later");
    assert_eq!(lane_ids(&env, "once").await.len(), 6);
}
