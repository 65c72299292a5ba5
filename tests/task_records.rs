//! Task records from the admin side and their readers, end to end: replay, resolve, discard
//! and purge write the record in their scripts (links, retention, events); the recovery loop's
//! index sweep removes expired records' entries and ends the records of dead letters the cap
//! trimmed, never those whose dead letter exists; `redrive task show` (a record, or a raw-XADD
//! task found in the lane, pending on a member, in the retry schedule, in the dead letters),
//! `task list` (filters, cursor paging), `dlq list --task-id`, and `health`'s success rate.
//! Real redis-server, real member processes, the real binary as the operator's CLI.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{eventually, http_get, TestEnv};
use redrive::testkit::{BrokerExt, DeadLetter, Limits};
use redrive::{FailureClass, NewTask};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn key(env: &TestEnv, tenant: &str, what: &str) -> String {
    format!("{}:{{{tenant}}}:{what}", env.prefix)
}

/// A task's record as readers show it (empty when there is none).
async fn record(env: &TestEnv, tenant: &str, task_id: &str) -> HashMap<String, String> {
    env.task_read(tenant, task_id).await.0
}

/// The record's time left, ms (-1: kept, -2: gone).
async fn pttl(env: &TestEnv, tenant: &str, task_id: &str) -> i64 {
    let mut raw = env.raw().await;
    redis::cmd("PTTL")
        .arg(key(env, tenant, &format!("task:{task_id}")))
        .query_async(&mut raw)
        .await
        .unwrap()
}

/// Whether the tenant's index still lists the task.
async fn indexed(env: &TestEnv, tenant: &str, task_id: &str) -> bool {
    let mut raw = env.raw().await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(key(env, tenant, "tasks"))
        .arg(task_id)
        .query_async(&mut raw)
        .await
        .unwrap();
    score.is_some()
}

/// Registers a waiter on `tenant` for a minute (the scripts publish finish events only while
/// someone waits; CONTRACT.md).
async fn listen(env: &TestEnv, tenant: &str) {
    let now = env.server_time_ms().await;
    let mut raw = env.raw().await;
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{}:{{{tenant}}}:waiters", env.prefix))
        .arg(now + 60_000)
        .arg("test-waiter")
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// The tenant's task events: (task, state, entry).
async fn events(env: &TestEnv, tenant: &str) -> Vec<(String, String, String)> {
    env.stream_entries(&format!("{{{tenant}}}:events"))
        .await
        .into_iter()
        .map(|e| (e["task"].clone(), e["state"].clone(), e["entry"].clone()))
        .collect()
}

/// A dead letter written straight into the tenant's stream with the fields a member writes
/// (`id`: an explicit entry id, else server-assigned); returns its id. `task_id` None: an
/// unreadable entry without one.
async fn seed_dead(
    env: &TestEnv,
    tenant: &str,
    task_id: Option<&str>,
    kind: &str,
    id: Option<&str>,
) -> String {
    let mut raw = env.raw().await;
    let now = env.server_time_ms().await;
    let _: i64 = redis::cmd("SADD")
        .arg(format!("{}:tenants", env.prefix))
        .arg(tenant)
        .query_async(&mut raw)
        .await
        .unwrap();
    let Some(task_id) = task_id else {
        // An entry with no task_id at all (written by hand, or by another tool).
        return redis::cmd("XADD")
            .arg(key(env, tenant, "dlq"))
            .arg(id.unwrap_or("*"))
            .arg("raw")
            .arg("{}")
            .arg("class")
            .arg("malformed_entry")
            .query_async(&mut raw)
            .await
            .unwrap();
    };
    let task = NewTask::new(tenant, kind, json!({"simulate": "ok", "work_ms": 0}))
        .with_task_id(task_id)
        .into_task(&Limits::default(), now - 1_000)
        .unwrap();
    let fields = DeadLetter {
        orig_lane: key(env, tenant, "lane"),
        orig_id: format!("{}-0", now - 1_000),
        steps: Vec::new(),
        task: Some(task),
        raw: None,
        class: FailureClass::SchemaMismatch,
        error: "seeded".into(),
        detail: None,
        failed_step: None,
        partial_output: None,
        member: "seed".into(),
        first_failed_at_ms: now - 500,
        dead_lettered_at_ms: now,
    }
    .to_fields();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key(env, tenant, "dlq")).arg(id.unwrap_or("*"));
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query_async(&mut raw).await.unwrap()
}

/// A record with `fields`, indexed at `score` (kept: no expiry), as the moving scripts leave
/// one (e.g. dead_letter.lua: state dead_lettered, dlq, kept while the dead letter exists).
async fn put_record(
    env: &TestEnv,
    tenant: &str,
    task_id: &str,
    score: u64,
    fields: &[(&str, &str)],
) {
    let mut raw = env.raw().await;
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(env, tenant, &format!("task:{task_id}")));
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.arg("updated").arg(score);
    let _: () = redis::pipe()
        .add_command(cmd)
        .cmd("ZADD")
        .arg(key(env, tenant, "tasks"))
        .arg(score)
        .arg(task_id)
        .query_async(&mut raw)
        .await
        .unwrap();
}

async fn dead_record(env: &TestEnv, tenant: &str, task_id: &str, dlq_id: &str, kind: &str) {
    let now = env.server_time_ms().await;
    put_record(
        env,
        tenant,
        task_id,
        now,
        &[
            ("state", "dead_lettered"),
            ("kind", kind),
            ("attempt", "1"),
            ("dlq", dlq_id),
            ("class", "schema_mismatch"),
            ("error", "seeded"),
            ("runs", "1"),
        ],
    )
    .await;
}

fn cli_json(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Value {
    let (code, out, err) = env.cli(args, vars);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[tokio::test]
async fn a_replay_leaves_the_record_replayed_with_both_links_then_a_member_runs_it_to_done() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![NewTask::new(
        "rp",
        "crm",
        json!({"simulate": "malformed_output", "work_ms": 0}),
    )
    .with_task_id("t-1")])
        .await;
    let mut m = env.member("m1", &[]);
    eventually(LONG, "the task is dead-lettered", || async {
        env.dead_letters("rp").await.len() == 1
    })
    .await;
    assert!(m.stop().success());
    let list = cli_json(&env, &["dlq", "list", "--json"], &[]);
    let dlq_id = list["entries"][0]["id"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .to_owned();

    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            &format!("rp/{dlq_id}"),
            "--local",
            "--reason",
            "fixed the schema",
            "--patch",
            r#"{"simulate":"ok"}"#,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    let lane = env.lane_entries("rp").await;
    assert_eq!(lane.len(), 1);
    let mut raw = env.raw().await;
    let ids: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key(&env, "rp", "lane"))
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let new_entry = ids[0].0.clone();
    let r = record(&env, "rp", "t-1").await;
    assert_eq!(r["state"], "replayed", "{r:?}");
    assert_eq!(
        r["replay_of"], dlq_id,
        "linked to the dead letter it came from"
    );
    assert_eq!(
        r["replayed_as"], new_entry,
        "linked to its new life in the lane"
    );
    assert_eq!(r["entry"], new_entry);
    assert_eq!(r["replays"], "1");
    assert_eq!(r["attempt"], "1");
    assert!(!r.contains_key("dlq"), "no longer dead: {r:?}");
    assert_eq!(
        pttl(&env, "rp", "t-1").await,
        -1,
        "kept until it finishes again"
    );
    let shown = cli_json(&env, &["task", "show", "rp/t-1", "--json"], &[]);
    assert_eq!(shown["state"], "replayed");
    assert_eq!(shown["replay_of"], dlq_id.as_str());
    assert_eq!(shown["replayed_as"], new_entry.as_str());
    let (code, text, _) = env.cli(&["task", "show", "rp/t-1"], &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!(
            "replayed from   dead letter rp/{dlq_id} (replays: 1)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("replayed as     lane entry {new_entry}")),
        "{text}"
    );

    // A member runs it to done; the links stay.
    let mut m = env.member("m2", &[]);
    eventually(LONG, "the replayed task is done", || async {
        record(&env, "rp", "t-1")
            .await
            .get("state")
            .map(String::as_str)
            == Some("done")
    })
    .await;
    assert!(m.stop().success());
    let r = record(&env, "rp", "t-1").await;
    assert_eq!(r["replay_of"], dlq_id);
    assert_eq!(r["member"], "m2");
    assert_eq!(
        r["runs"], "1",
        "the history: the first life's failed run (the replay's done run is the main fields): {r:?}"
    );
    assert_eq!(r["r1:outcome"], "schema_mismatch");
    assert!(!r.contains_key("r2:outcome"), "{r:?}");
    let shown = cli_json(&env, &["task", "show", "rp/t-1", "--json"], &[]);
    assert_eq!(shown["runs"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["runs"][0]["member"], "m1");
    assert_eq!(shown["runs"][1]["member"], "m2");
    assert!(
        shown["expires_in_ms"].as_u64().is_some(),
        "a finished record expires: {shown}"
    );
}

#[tokio::test]
async fn resolve_and_discard_end_the_records_with_their_retention_and_an_event() {
    let env = TestEnv::new();
    listen(&env, "rs").await;
    let config = env.config_file(
        "tasks.toml",
        r#"
[tasks]
retention_ms = 1000

[[tasks.overrides]]
tenant = "rs"
kind = "slow.*"
retention_ms = 600000
"#,
    );
    let vars = [("REDRIVE_CONFIG", config.as_str())];
    let a = seed_dead(&env, "rs", Some("a"), "fast", None).await;
    let b = seed_dead(&env, "rs", Some("b"), "slow.report", None).await;
    let c = seed_dead(&env, "rs", Some("c"), "fast", None).await;
    let none = seed_dead(&env, "rs", None, "", None).await;
    dead_record(&env, "rs", "a", &a, "fast").await;
    dead_record(&env, "rs", "b", &b, "slow.report").await;
    // c's record belongs to a later life of the same task_id (ids reused): not this dead
    // letter's, so it is left alone.
    put_record(&env, "rs", "c", 1, &[("state", "queued"), ("entry", "9-0")]).await;

    for (what, ids) in [("resolve", vec![&a, &b]), ("discard", vec![&c, &none])] {
        let mut args = vec!["dlq", what];
        let full: Vec<String> = ids.iter().map(|i| format!("rs/{i}")).collect();
        args.extend(full.iter().map(String::as_str));
        args.extend(["--local", "--reason", "handled"]);
        let (code, out, err) = env.cli(&args, &vars);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(" 2 dead letters"), "{out}");
    }
    let r = record(&env, "rs", "a").await;
    assert_eq!(r["state"], "resolved");
    assert_eq!(r["dlq"], a, "the link to the archived dead letter");
    assert!(r.contains_key("ended"));
    let ttl = pttl(&env, "rs", "a").await;
    assert!((1..=1000).contains(&ttl), "the tenant's retention: {ttl}");
    assert_eq!(record(&env, "rs", "b").await["state"], "resolved");
    let ttl = pttl(&env, "rs", "b").await;
    assert!(ttl > 500_000, "the kind's retention (slow.*): {ttl}");
    let stored: Option<String> = redis::cmd("HGET")
        .arg(key(&env, "rs", "task:c"))
        .arg("state")
        .query_async(&mut env.raw().await)
        .await
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("queued"),
        "another life's record is not touched"
    );
    let evs = events(&env, "rs").await;
    assert_eq!(
        evs,
        vec![
            ("a".to_owned(), "resolved".to_owned(), a.clone()),
            ("b".to_owned(), "resolved".to_owned(), b.clone()),
        ],
        "one event per record ended; none for another life's record or a dead letter without a task_id"
    );
    // A dead letter's record written by nobody before (e.g. from before records): created.
    let d = seed_dead(&env, "rs", Some("d"), "fast", None).await;
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "discard",
            &format!("rs/{d}"),
            "--local",
            "--reason",
            "stale",
        ],
        &vars,
    );
    assert_eq!(code, 0, "{err}");
    let r = record(&env, "rs", "d").await;
    assert_eq!(r["state"], "discarded");
    assert_eq!(r["kind"], "fast");
    assert!(indexed(&env, "rs", "d").await);
    let shown = cli_json(&env, &["task", "show", "rs/d", "--json"], &vars);
    assert_eq!(shown["state"], "discarded");
    assert_eq!(shown["finished"], true);

    // They expire after the retention (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while pttl(&env, "rs", "a").await != -2 || pttl(&env, "rs", "d").await != -2 {
        assert!(
            Instant::now() < deadline,
            "records past their retention are gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pttl(&env, "rs", "b").await > 0,
        "the longer retention still runs"
    );
}

#[tokio::test]
async fn a_purge_discards_the_records_of_the_dead_letters_it_deletes() {
    let env = TestEnv::new();
    listen(&env, "pg").await;
    let vars = [("REDRIVE_TASKS__RETENTION_MS", "5000")];
    let now = env.server_time_ms().await;
    let mut old = Vec::new();
    for i in 0..7 {
        let id = format!("{}-{i}", now - 3 * 3_600_000);
        let task = format!("old-{i}");
        seed_dead(&env, "pg", Some(&task), "k", Some(&id)).await;
        dead_record(&env, "pg", &task, &id, "k").await;
        old.push(task);
    }
    let young = seed_dead(&env, "pg", Some("young"), "k", None).await;
    dead_record(&env, "pg", "young", &young, "k").await;
    // A small page size, so the purge goes through several pages.
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "purge",
            "--tenant",
            "pg",
            "--older-than",
            "1h",
            "--yes",
            "--local",
            "--reason",
            "retention",
            "--json",
        ],
        &[vars[0], ("REDRIVE_ADMIN__BATCH", "3")],
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["details"]["purged"], 7);
    for t in &old {
        let r = record(&env, "pg", t).await;
        assert_eq!(r["state"], "discarded", "{t}: {r:?}");
        let ttl = pttl(&env, "pg", t).await;
        assert!((1..=5000).contains(&ttl), "{t}: {ttl}");
    }
    assert_eq!(record(&env, "pg", "young").await["state"], "dead_lettered");
    assert_eq!(
        pttl(&env, "pg", "young").await,
        -1,
        "its dead letter is still there"
    );
    assert_eq!(env.dead_letters("pg").await.len(), 1);
    assert_eq!(events(&env, "pg").await.len(), 7);
}

#[tokio::test]
async fn records_live_as_long_as_their_dead_letter_and_the_sweep_ends_trimmed_ones() {
    let env = TestEnv::new();
    // Five dead letters with their (kept) records, and a done record expiring soon.
    let mut dead = Vec::new();
    for i in 0..5 {
        let t = format!("d-{i}");
        let id = seed_dead(&env, "sw", Some(&t), "k", None).await;
        dead_record(&env, "sw", &t, &id, "k").await;
        dead.push(t);
    }
    let now = env.server_time_ms().await;
    put_record(
        &env,
        "sw",
        "done-1",
        now,
        &[("state", "done"), ("kind", "k")],
    )
    .await;
    let mut raw = env.raw().await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(key(&env, "sw", "task:done-1"))
        .arg(1000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let vars = [
        ("REDRIVE_TASKS__RETENTION_MS", "1000"),
        ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
    ];
    let mut m = env.member("m1", &vars);
    let addr = m.metrics_addr();

    // The done record expires, and the sweep removes its index entry (counted).
    eventually(
        Duration::from_secs(30),
        "the expired record's index entry is swept",
        || async { !indexed(&env, "sw", "done-1").await },
    )
    .await;
    let text = http_get(&addr, "/metrics").1;
    assert!(
        text.lines()
            .any(|l| l.starts_with("redrive_task_records_expired_total{tenant=\"sw\"} 1")),
        "{text}"
    );
    // Retentions later, with another sweep in between (it removed a second done record written
    // after the first sweep), the dead letters' records are all there.
    let now = env.server_time_ms().await;
    put_record(
        &env,
        "sw",
        "done-2",
        now,
        &[("state", "done"), ("kind", "k")],
    )
    .await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(key(&env, "sw", "task:done-2"))
        .arg(1000)
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "a later sweep removes the second expired record's index entry",
        || async { !indexed(&env, "sw", "done-2").await },
    )
    .await;
    for t in &dead {
        assert_eq!(record(&env, "sw", t).await["state"], "dead_lettered", "{t}");
        assert_eq!(
            pttl(&env, "sw", t).await,
            -1,
            "{t} kept while its dead letter exists"
        );
        assert!(indexed(&env, "sw", t).await);
    }

    // The cap trims the three oldest dead letters (as dead_letter.lua's MAXLEN does): their
    // records get the retention, expire, and leave the index; the other two stay.
    let _: i64 = redis::cmd("XTRIM")
        .arg(key(&env, "sw", "dlq"))
        .arg("MAXLEN")
        .arg(2)
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(40),
        "the trimmed dead letters' records end",
        || async {
            let mut gone = 0;
            for t in &dead[..3] {
                if pttl(&env, "sw", t).await == -2 && !indexed(&env, "sw", t).await {
                    gone += 1;
                }
            }
            gone == 3
        },
    )
    .await;
    for t in &dead[3..] {
        assert_eq!(pttl(&env, "sw", t).await, -1, "{t}: its dead letter exists");
        assert!(indexed(&env, "sw", t).await);
    }
    let text = http_get(&addr, "/metrics").1;
    assert!(
        text.lines()
            // done-1, done-2 and the three trimmed dead letters' records.
            .any(|l| l.starts_with("redrive_task_records_expired_total{tenant=\"sw\"} 5")),
        "{text}"
    );
    assert!(m.stop().success());
}

#[tokio::test]
async fn task_show_finds_a_raw_xadd_task_in_the_lane_pending_scheduled_or_dead() {
    let env = TestEnv::new();
    let broker = env.broker().await;
    broker.ensure_group("rw").await.unwrap();
    let mut raw = env.raw().await;
    let lane = key(&env, "rw", "lane");
    let xadd = |id: &str| {
        let mut c = redis::cmd("XADD");
        c.arg(&lane)
            .arg("*")
            .arg("task_id")
            .arg(id)
            .arg("kind")
            .arg("k")
            .arg("payload")
            .arg("{}");
        c
    };
    let pend: String = xadd("r-pend").query_async(&mut raw).await.unwrap();
    // Delivered to member-x (a read through the fleet's group), not settled.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("redrive")
        .arg("member-x")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&lane)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let waiting: String = xadd("r-lane").query_async(&mut raw).await.unwrap();
    let due = env.server_time_ms().await + 600_000;
    let _: () = redis::cmd("ZADD")
        .arg(key(&env, "rw", "retry"))
        .arg(due)
        .arg(r#"["task_id","r-retry","kind","k","attempt","2","from_entry","1-0"]"#)
        .query_async(&mut raw)
        .await
        .unwrap();
    let dlq: String = redis::cmd("XADD")
        .arg(key(&env, "rw", "dlq"))
        .arg("*")
        .arg("task_id")
        .arg("r-dead")
        .arg("class")
        .arg("timeout")
        .query_async(&mut raw)
        .await
        .unwrap();

    let (code, out, err) = env.cli(&["task", "show", "rw/r-lane"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no record"), "{out}");
    assert!(
        out.contains(&format!(
            "in the lane as entry {waiting}, not delivered to a member yet"
        )),
        "{out}"
    );
    let (code, out, _) = env.cli(&["task", "show", "rw/r-pend"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "pending on member member-x: lane entry {pend}, delivered 1 time(s)"
        )),
        "{out}"
    );
    let (code, out, _) = env.cli(&["task", "show", "rw/r-retry"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("in the retry schedule, attempt 2, due in 9m"),
        "{out}"
    );
    let (code, out, _) = env.cli(&["task", "show", "rw/r-dead"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("in the dead letters as rw/{dlq} (timeout)")),
        "{out}"
    );
    let j = cli_json(&env, &["task", "show", "rw/r-pend", "--json"], &[]);
    assert_eq!(j["source"], "scan");
    assert_eq!(j["found_in"][0]["place"], "pending");
    assert_eq!(j["found_in"][0]["member"], "member-x");
    let j = cli_json(&env, &["task", "show", "rw/r-retry", "--json"], &[]);
    assert_eq!(j["found_in"][0]["place"], "retry");
    assert_eq!(j["found_in"][0]["due_at"], due);

    // Nowhere: exit 66, saying how far each place was read.
    let (code, out, err) = env.cli(&["task", "show", "rw/r-none"], &[]);
    assert_eq!(code, 66, "{out}");
    assert!(
        out.contains("not found in all 2 lane entries, all 1 scheduled retries, all 0 deferred tasks, all 1 dead letters"),
        "{out}"
    );
    assert!(err.contains("r-none"), "{err}");
    // A bounded scan says so.
    let (code, out, _) = env.cli(&["task", "show", "rw/r-lane", "--scan-limit", "1"], &[]);
    assert_eq!(code, 66);
    assert!(out.contains("the first 1 of 2 lane entries"), "{out}");
    // Bad addresses are usage errors.
    for bad in ["rw", "r w/x", "rw/a b"] {
        let (code, _, err) = env.cli(&["task", "show", bad], &[]);
        assert_eq!(code, 64, "{bad}: {err}");
    }
}

#[tokio::test]
async fn task_list_filters_and_pages_with_a_cursor() {
    let env = TestEnv::new();
    let now = env.server_time_ms().await;
    // 250 records; groups of 25 share a score (one script's batch writes them all at once).
    let states = ["done", "queued", "dead_lettered", "running", "done"];
    let mut want: Vec<(u64, String)> = Vec::new();
    for i in 0..250u64 {
        let t = format!("t-{i:03}");
        let score = now - 60_000 + (i / 25) * 1_000;
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        put_record(
            &env,
            "ls",
            &t,
            score,
            &[
                ("state", states[(i % 5) as usize]),
                ("kind", kind),
                ("attempt", "1"),
            ],
        )
        .await;
        want.push((score, t));
    }
    // An index entry whose record expired (not swept yet) is skipped.
    let mut raw = env.raw().await;
    let _: () = redis::cmd("ZADD")
        .arg(key(&env, "ls", "tasks"))
        .arg(now)
        .arg("gone")
        .query_async(&mut raw)
        .await
        .unwrap();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["task", "list", "--tenant", "ls", "--limit", "100", "--json"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = cli_json(&env, &args, &[]);
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["task_id"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let want_ids: Vec<String> = want.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(seen, want_ids, "every task once, newest change first");

    let page = cli_json(
        &env,
        &[
            "task",
            "list",
            "--tenant",
            "ls",
            "--state",
            "dead_lettered",
            "--kind",
            "even",
            "--json",
            "--limit",
            "1000",
        ],
        &[],
    );
    let got: HashSet<String> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_owned())
        .collect();
    let expect: HashSet<String> = (0..250u64)
        .filter(|i| i % 5 == 2 && i % 2 == 0)
        .map(|i| format!("t-{i:03}"))
        .collect();
    assert_eq!(got, expect);
    assert!(page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "dead_lettered" && t["kind"] == "even"));
    // --since: the last two score groups (50 tasks).
    let since = (now - 60_000 + 8_000).to_string();
    let page = cli_json(
        &env,
        &[
            "task", "list", "--tenant", "ls", "--since", &since, "--json", "--limit", "1000",
        ],
        &[],
    );
    assert_eq!(page["tasks"].as_array().unwrap().len(), 50);
    assert!(page["next_cursor"].is_null());
    // Text: a header, rows, and the next-cursor line.
    let (code, out, _) = env.cli(&["task", "list", "--tenant", "ls", "--limit", "3"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("TASK_ID"), "{out}");
    assert!(
        out.contains("t-249") && out.contains("next cursor: "),
        "{out}"
    );
    // Bad arguments: exit 64 with the reason.
    for (args, why) in [
        (vec!["--tenant", "l s"], "--tenant"),
        (
            vec!["--tenant", "ls", "--state", "finished"],
            "is not a task state; the states are queued",
        ),
        (vec!["--tenant", "ls", "--since", "yesterday"], "--since"),
        (vec!["--tenant", "ls", "--cursor", "nope"], "--cursor"),
        (vec!["--tenant", "ls", "--limit", "0"], "--limit"),
    ] {
        let mut a = vec!["task", "list"];
        a.extend(args.iter().copied());
        let (code, _, err) = env.cli(&a, &[]);
        assert_eq!(code, 64, "{a:?}: {err}");
        assert!(err.contains(why), "{a:?}: {err}");
    }
}

#[tokio::test]
async fn dlq_list_filters_by_task_id() {
    let env = TestEnv::new();
    let a1 = seed_dead(&env, "dt", Some("a"), "k", None).await;
    seed_dead(&env, "dt", Some("b"), "k", None).await;
    let a2 = seed_dead(&env, "dt", Some("a"), "k", None).await;
    let list = cli_json(&env, &["dlq", "list", "--task-id", "a", "--json"], &[]);
    let ids: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![format!("dt/{a1}"), format!("dt/{a2}")]);
    let list = cli_json(&env, &["dlq", "list", "--task-id", "zzz", "--json"], &[]);
    assert!(list["entries"].as_array().unwrap().is_empty());
    let (code, _, err) = env.cli(&["dlq", "list", "--task-id", "a b"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--task-id"), "{err}");
}

#[tokio::test]
async fn health_shows_the_success_rate_and_duplicates_per_tenant() {
    let env = TestEnv::new();
    let mut tasks: Vec<NewTask> = (0..3)
        .map(|i| {
            NewTask::new("hs", "k", json!({"simulate": "ok", "work_ms": 0}))
                .with_task_id(format!("ok-{i}"))
        })
        .collect();
    tasks.push(
        NewTask::new(
            "hs",
            "k",
            json!({"simulate": "malformed_output", "work_ms": 0}),
        )
        .with_task_id("bad"),
    );
    env.enqueue_tasks(tasks).await;
    let mut m = env.member("m1", &[]);
    env.wait_drained(&["hs"], LONG).await;
    eventually(LONG, "the failure is dead-lettered", || async {
        env.dead_letters("hs").await.len() == 1
    })
    .await;
    assert!(m.stop().success());
    // Two enqueues refused as duplicates, counted where enqueue.lua counts them: the tenant's
    // stats bucket of the minute.
    let minute = env.server_time_ms().await / 60_000;
    let mut raw = env.raw().await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(key(&env, "hs", &format!("stats:{minute}")))
        .arg("duplicates")
        .arg(2)
        .query_async(&mut raw)
        .await
        .unwrap();
    let h = cli_json(&env, &["health", "--json"], &[]);
    let t = h["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "hs")
        .unwrap()
        .clone();
    assert_eq!(t["window"]["completed"], 3);
    assert_eq!(t["window"]["dead_lettered"], 1);
    assert_eq!(t["success_rate"], 0.75);
    assert_eq!(t["window"]["duplicates"], 2);
    assert_eq!(h["overall"]["success_rate"], 0.75);
    let (code, out, _) = env.cli(&["health"], &[]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with("hs ")).unwrap();
    assert!(row.contains("75.0%"), "{out}");
    assert!(out.contains("SUCCESS") && out.contains("DUPS"), "{out}");
}
