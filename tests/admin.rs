//! Operators' commands end to end: reads with every filter, replays with every guardrail,
//! resolve / discard / purge, the admin command stream's exactly-once execution, the audit
//! trail, fleet-down and timeout handling, batch replays at scale, cancelled and resumed, two
//! operators at once, and a member killed mid-replay. Real redis-server, real member processes,
//! the real binary as the operator's CLI.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{counts, eventually, text_fields, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::testkit::DeadLetter;
use redrive::testkit::Limits;
use redrive::FailureClass;
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);
const MIN: u64 = 60_000;
const HOUR: u64 = 3_600_000;

/// A dead letter to seed.
struct Dl {
    tenant: String,
    task_id: String,
    kind: String,
    payload: Value,
    class: FailureClass,
    error: String,
    steps: Vec<String>,
    schema_version: Option<u32>,
    enqueued_at: Option<u64>,
}

fn dl(
    tenant: &str,
    task_id: &str,
    kind: &str,
    payload: Value,
    class: FailureClass,
    error: &str,
) -> Dl {
    Dl {
        tenant: tenant.into(),
        task_id: task_id.into(),
        kind: kind.into(),
        payload,
        class,
        error: error.into(),
        steps: Vec::new(),
        schema_version: None,
        enqueued_at: None,
    }
}

fn ok_payload() -> Value {
    json!({"simulate": "ok", "work_ms": 0})
}

/// Writes dead letters straight into the tenants' dead-letter streams, with the fields a member
/// writes (`ids`: explicit entry ids, else server-assigned). Returns their `TENANT/ID`s.
async fn seed(env: &TestEnv, dls: &[Dl], ids: Option<&[String]>) -> Vec<String> {
    let mut raw = env.raw().await;
    let now = env.server_time_ms().await;
    let tenants: HashSet<&str> = dls.iter().map(|d| d.tenant.as_str()).collect();
    let _: i64 = redis::cmd("SADD")
        .arg(format!("{}:tenants", env.prefix))
        .arg(tenants.into_iter().collect::<Vec<_>>())
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (c, chunk) in dls.chunks(500).enumerate() {
        let mut pipe = redis::pipe();
        for (j, d) in chunk.iter().enumerate() {
            let i = c * 500 + j;
            let mut t =
                NewTask::new(&d.tenant, &d.kind, d.payload.clone()).with_task_id(&d.task_id);
            t.schema_version = d.schema_version;
            let task = t
                .into_task(&Limits::default(), d.enqueued_at.unwrap_or(now - 1_000))
                .unwrap();
            let fields = DeadLetter {
                orig_lane: format!("{}:{{{}}}:lane", env.prefix, d.tenant),
                orig_id: format!("{}-{i}", now - 1_000),
                steps: d
                    .steps
                    .iter()
                    .map(|s| redrive::Step::completed(s.clone(), serde_json::Value::Null))
                    .collect(),
                task: Some(task),
                raw: None,
                class: d.class,
                error: d.error.clone(),
                detail: Some("seeded by the test".into()),
                failed_step: None,
                partial_output: None,
                member: "seed".into(),
                first_failed_at_ms: now - 500,
                dead_lettered_at_ms: now,
            }
            .to_fields();
            let id = ids.map(|ids| ids[i].clone()).unwrap_or_else(|| "*".into());
            let cmd = pipe
                .cmd("XADD")
                .arg(format!("{}:{{{}}}:dlq", env.prefix, d.tenant))
                .arg(id);
            for (k, v) in fields {
                cmd.arg(k).arg(v);
            }
        }
        let new: Vec<String> = pipe.query_async(&mut raw).await.unwrap();
        for (d, id) in chunk.iter().zip(new) {
            out.push(format!("{}/{id}", d.tenant));
        }
    }
    out
}

/// Every key under the env's prefix with its content, for before/after comparisons. The live
/// member set (beats) is left out; admin keys only with `admin`.
async fn snapshot(env: &TestEnv, admin: bool) -> BTreeMap<String, String> {
    let mut raw = env.raw().await;
    // Every master's keys, on a cluster.
    let keys = env
        .broker()
        .await
        .scan_keys(&format!("{}:*", env.prefix))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        // The dead-letter counts are derived: a member's upkeep counts dead letters the test
        // wrote by hand whenever it comes round to them, whatever a command did.
        if key.ends_with("{@admin}:members")
            || key.ends_with(":dlq:counts")
            || (!admin && key.contains("{@admin}"))
        {
            continue;
        }
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let cmd = match kind.as_str() {
            "stream" => {
                let mut c = redis::cmd("XRANGE");
                c.arg(&key).arg("-").arg("+");
                c
            }
            "hash" => {
                let mut c = redis::cmd("HGETALL");
                c.arg(&key);
                c
            }
            "zset" => {
                let mut c = redis::cmd("ZRANGE");
                c.arg(&key).arg(0).arg(-1).arg("WITHSCORES");
                c
            }
            "set" => {
                let mut c = redis::cmd("SMEMBERS");
                c.arg(&key);
                c
            }
            _ => {
                let mut c = redis::cmd("GET");
                c.arg(&key);
                c
            }
        };
        let v: redis::Value = cmd.query_async(&mut raw).await.unwrap();
        let mut text = format!("{v:?}");
        if kind == "set" || kind == "hash" {
            // Unordered: compare sorted.
            let mut parts: Vec<String> = text.split(", ").map(str::to_owned).collect();
            parts.sort();
            text = parts.join(", ");
        }
        out.insert(key, text);
    }
    out
}

fn run_json(env: &TestEnv, args: &[&str]) -> Value {
    let (code, out, err) = env.cli(args, &[]);
    assert_eq!(code, 0, "{args:?} exited {code}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Starts the CLI without waiting for it (an operator in another terminal).
fn spawn_cli(env: &TestEnv, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_redrive"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDRIVE_REDIS_URL", env.url())
        .env("REDRIVE_REDIS__KEY_PREFIX", &env.prefix)
        .envs(env.redis_vars())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redrive")
}

fn finish(child: Child) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

async fn wait_live(env: &TestEnv, member: &str) {
    let broker = env.broker().await;
    eventually(LONG, "member is live for admin commands", || async {
        broker
            .admin_live_members(Duration::from_secs(5))
            .await
            .unwrap()
            .iter()
            .any(|m| m == member)
    })
    .await;
}

/// The audit trail, oldest first, as field maps.
async fn audit(env: &TestEnv) -> Vec<HashMap<String, String>> {
    env.stream_entries("{@admin}:audit").await
}

fn ids_of(list: &Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Seeds 24 dead letters of acme and 6 of beta at known times (10 h ago onwards): acme every
/// 15 minutes, alternating kinds triage/score, every third one a timeout (the rest schema
/// mismatches); beta every hour, rate limited. Returns the base time and all ids in order.
async fn seed_catalogue(env: &TestEnv) -> (u64, Vec<String>) {
    let base = env.server_time_ms().await - 10 * HOUR;
    let mut dls = Vec::new();
    let mut ids = Vec::new();
    for i in 0..24u64 {
        let kind = if i % 2 == 0 { "triage" } else { "score" };
        let (class, error) = if i % 3 == 0 {
            (
                FailureClass::Timeout,
                format!("timed out after 30s on ticket {i}"),
            )
        } else {
            (
                FailureClass::SchemaMismatch,
                format!("missing field 'summary' in output {i}"),
            )
        };
        let payload =
            json!({"ticket": i, "customer": format!("c{}", i % 4), "simulate": "ok", "work_ms": 0});
        dls.push(dl("acme", &format!("a{i}"), kind, payload, class, &error));
        ids.push(format!("{}-0", base + i * 15 * MIN));
    }
    seed(env, &dls, Some(&ids)).await;
    let mut dls = Vec::new();
    let mut ids = Vec::new();
    for i in 0..6u64 {
        dls.push(dl(
            "beta",
            &format!("b{i}"),
            "triage",
            ok_payload(),
            FailureClass::RateLimited,
            "model 'x' answered 429",
        ));
        ids.push(format!("{}-0", base + i * HOUR));
    }
    seed(env, &dls, Some(&ids)).await;
    let mut all: Vec<(u64, String)> = (0..24u64)
        .map(|i| {
            (
                base + i * 15 * MIN,
                format!("acme/{}-0", base + i * 15 * MIN),
            )
        })
        .chain((0..6u64).map(|i| (base + i * HOUR, format!("beta/{}-0", base + i * HOUR))))
        .collect();
    all.sort();
    (base, all.into_iter().map(|(_, id)| id).collect())
}

#[tokio::test]
async fn reads_filter_paginate_and_change_nothing() {
    let env = TestEnv::new();
    let (base, all) = seed_catalogue(&env).await;
    let before = snapshot(&env, true).await;

    // Everything, oldest first (ties between tenants by tenant name).
    let full = run_json(&env, &["dlq", "list", "--json", "--limit", "1000"]);
    assert_eq!(ids_of(&full), all);
    assert!(full["next_cursor"].is_null());
    let first = &full["entries"][0];
    assert_eq!(first["class"], "timeout");
    assert_eq!(first["kind"], "triage");
    assert_eq!(first["task_id"], "a0");
    assert!(first.get("payload").is_none(), "list shows summaries");

    // Cursor pagination: every entry exactly once, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["dlq", "list", "--json", "--limit", "7"];
        if let Some(c) = &cursor {
            args.push("--cursor");
            args.push(c);
        }
        let page = run_json(&env, &args);
        pages += 1;
        paged.extend(ids_of(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(pages, 5);

    // Each filter, and filters combined.
    let n = |args: &[&str]| {
        let mut a = vec!["dlq", "list", "--json", "--limit", "1000"];
        a.extend_from_slice(args);
        ids_of(&run_json(&env, &a)).len()
    };
    assert_eq!(n(&["--tenant", "beta"]), 6);
    assert_eq!(n(&["--tenant", "beta", "--tenant", "acme"]), 30);
    assert_eq!(n(&["--class", "timeout"]), 8);
    assert_eq!(n(&["--class", "timeout", "--class", "rate_limited"]), 14);
    assert_eq!(n(&["--kind", "score"]), 12);
    assert_eq!(n(&["--class", "timeout", "--kind", "triage"]), 4);
    let since = (base + 3 * HOUR).to_string();
    let until = (base + 4 * HOUR).to_string();
    assert_eq!(
        n(&["--since", &since, "--until", &until]),
        7,
        "acme 12..=16, beta 3 and 4"
    );
    assert_eq!(
        n(&["--until", "8h"]),
        12,
        "relative: acme 0..=8, beta 0..=2"
    );
    let rfc = redrive::testkit::format_time(base + 5 * HOUR);
    assert_eq!(n(&["--since", &rfc, "--tenant", "beta"]), 1);
    let timeouts = run_json(
        &env,
        &[
            "dlq", "list", "--json", "--class", "timeout", "--kind", "score",
        ],
    );
    let fp = timeouts["entries"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        n(&["--fingerprint", &fp]),
        4,
        "one root cause, one fingerprint"
    );

    // Show: the whole context, typed.
    let shown = run_json(&env, &["dlq", "show", &all[0], "--json"]);
    assert_eq!(shown["id"], all[0].as_str());
    assert_eq!(shown["payload"]["ticket"], 0);
    assert_eq!(shown["attempt"], 1);
    assert_eq!(shown["detail"], "seeded by the test");
    assert!(shown["error_pattern"].as_str().unwrap().contains("<n>"));
    let bare = all[0].split_once('/').unwrap().1;
    let (code, out, _) = env.cli(&["dlq", "show", bare, "--tenant", "acme"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("error_pattern") && out.contains("\"ticket\": 0"),
        "{out}"
    );

    // Stats: counts, top fingerprints with a sample, oldest.
    let s = run_json(&env, &["dlq", "stats", "--json"]);
    assert_eq!(s["total"], 30);
    assert_eq!(s["by_tenant"], json!({"acme": 24, "beta": 6}));
    assert_eq!(
        s["by_class"],
        json!({"timeout": 8, "schema_mismatch": 16, "rate_limited": 6})
    );
    assert_eq!(s["by_kind"], json!({"triage": 18, "score": 12}));
    let top: Vec<u64> = s["top_fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["count"].as_u64().unwrap())
        .collect();
    assert_eq!(top, [8, 8, 6, 4, 4]);
    for f in s["top_fingerprints"].as_array().unwrap() {
        assert!(!f["sample_error"].as_str().unwrap().is_empty());
    }
    assert_eq!(s["oldest"], all[0].as_str());
    assert!(s["oldest_age_ms"].as_u64().unwrap() >= 10 * HOUR);
    let sb = run_json(
        &env,
        &["dlq", "stats", "--json", "--tenant", "beta", "--top", "1"],
    );
    assert_eq!(sb["total"], 6);
    assert_eq!(sb["top_fingerprints"].as_array().unwrap().len(), 1);
    let (code, text, _) = env.cli(&["dlq", "stats"], &[]);
    assert_eq!(code, 0);
    assert!(text.contains("top fingerprints") && text.contains("schema_mismatch"));

    // Export: JSON Lines, filtered, to stdout or a file.
    let (code, out, err) = env.cli(
        &["dlq", "export", "--format", "jsonl", "--class", "timeout"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert!(lines
        .iter()
        .all(|l| l["class"] == "timeout" && l["payload"].is_object()));
    let file = env.dir.join("export.jsonl");
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "export",
            "--format",
            "jsonl",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 30);

    // A dry run prints the count and a sample as they would be replayed, and writes nothing.
    let d = run_json(
        &env,
        &[
            "dlq",
            "replay",
            "--class",
            "timeout",
            "--patch",
            r#"{"simulate":"ok","fixed":true}"#,
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(d["selected"], 8);
    assert_eq!(d["would_replay"], 8);
    assert_eq!(d["sample"].as_array().unwrap().len(), 5);
    assert_eq!(d["sample"][0]["payload"]["fixed"], true);
    let (code, out, _) = env.cli(&["dlq", "replay", &all[0], &all[1], "--dry-run"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 dead letters selected") && out.contains("Nothing was changed"),
        "{out}"
    );
    let (code, out, _) = env.cli(
        &[
            "dlq",
            "replay",
            "--all",
            "--order-by-key",
            "customer",
            "--dry-run",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["selected"], 30);
    let health = run_json(&env, &["health", "--json"]);
    assert_eq!(health["overall"]["dead_letters"], 30);

    assert_eq!(
        snapshot(&env, true).await,
        before,
        "reads and dry runs change nothing"
    );
}

#[tokio::test]
async fn health_and_stats_report_a_live_fleet() {
    let env = TestEnv::new();
    let cfg = env.config_file(
        "health.toml",
        r#"
[fleet]
task_timeout_ms = 300

[retry]
delays_ms = [3600000]
max_delay_ms = 3600000
jitter = "none"

[admin]
stats_interval_ms = 100
"#,
    );
    let mut tasks: Vec<NewTask> = (0..5)
        .map(|i| NewTask::new("acme", "triage", ok_payload()).with_task_id(format!("ok{i}")))
        .collect();
    tasks.push(
        NewTask::new(
            "acme",
            "triage",
            json!({"simulate": "malformed_output", "work_ms": 0}),
        )
        .with_task_id("bad"),
    );
    tasks.push(
        NewTask::new(
            "acme",
            "triage",
            json!({"simulate": "timeout", "work_ms": 0}),
        )
        .with_task_id("slow"),
    );
    tasks.extend(
        (0..3).map(|i| NewTask::new("beta", "triage", ok_payload()).with_task_id(format!("b{i}"))),
    );
    env.enqueue_tasks(tasks).await;
    let mut m = env.member("m1", &[("REDRIVE_CONFIG", &cfg)]);
    eventually(LONG, "settle counts published", || async {
        let (code, out, _) = env.cli(&["health", "--json"], &[]);
        if code != 0 {
            return false;
        }
        let h: Value = serde_json::from_str(&out).unwrap();
        h["overall"]["window"]["completed"] == 8
            && h["overall"]["window"]["dead_lettered"] == 1
            && h["overall"]["window"]["retried"] == 1
            && h["overall"]["retries_scheduled"] == 1
    })
    .await;
    let h = run_json(&env, &["health", "--json", "--window", "30m"]);
    assert_eq!(h["live_members"], json!(["m1"]));
    let acme = &h["tenants"][0];
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(acme["lane_depth"], 0);
    assert_eq!(acme["pending"], 0);
    assert_eq!(acme["retries_scheduled"], 1);
    assert_eq!(acme["retries_due"], 0);
    assert_eq!(acme["dead_letters"], 1);
    assert_eq!(acme["dead_letters_by_class"], json!({"schema_mismatch": 1}));
    assert_eq!(acme["window"]["completed"], 5);
    assert_eq!(acme["window"]["retried"], 1);
    assert_eq!(acme["breaker"], "closed");
    assert_eq!(h["overall"]["breaker"], "0 not closed");
    assert_eq!(h["tenants"][1]["window"]["completed"], 3);
    assert_eq!(h["overall"]["tenant"], "*");
    let only_beta = run_json(&env, &["health", "--json", "--tenant", "beta"]);
    assert_eq!(only_beta["tenants"].as_array().unwrap().len(), 1);
    let (code, text, _) = env.cli(&["health"], &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains("live fleet members: m1") && text.contains("closed"),
        "{text}"
    );

    // The dead letter is replayed with a fix and completes: it counts as recovered.
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            "--class",
            "schema_mismatch",
            "--patch",
            r#"{"simulate":"ok"}"#,
            "--reason",
            "prompt fixed",
            "--rate",
            "0",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    eventually(LONG, "the replayed task recovered", || async {
        let s = run_json(&env, &["dlq", "stats", "--json", "--tenant", "acme"]);
        s["window"]["recovered"] == 1 && s["window"]["replayed"] == 1
    })
    .await;
    let s = run_json(&env, &["dlq", "stats", "--json", "--tenant", "acme"]);
    assert_eq!(s["total"], 0);
    assert_eq!(s["recovery_rate"], 0.5, "1 recovered, 1 dead-lettered");
    assert!(m.stop().success());
}

#[tokio::test]
async fn a_replay_keeps_the_task_identity_and_runs_with_a_fix() {
    let env = TestEnv::new();
    env.enqueue_tasks(vec![NewTask::new(
        "acme",
        "crm",
        json!({"simulate": "tool_failure", "work_ms": 0, "customer": 7}),
    )
    .with_task_id("p-1")])
        .await;
    let mut m = env.member("m1", &[]);
    eventually(LONG, "partial execution dead-lettered", || async {
        env.dead_letters("acme").await.len() == 1
    })
    .await;
    assert!(m.stop().success());
    let dead = env.dead_letters("acme").await.remove(0);
    assert_eq!(dead["class"], "partial_execution");
    let list = run_json(&env, &["dlq", "list", "--json"]);
    let id = list["entries"][0]["id"].as_str().unwrap().to_owned();
    let entry_id = id.split_once('/').unwrap().1.to_owned();

    // The guardrail: partial_execution is refused without --force, and nothing changes.
    let before = snapshot(&env, false).await;
    let (code, _, err) = env.cli(
        &["dlq", "replay", &id, "--reason", "retry it", "--local"],
        &[],
    );
    assert_eq!(code, 77, "{err}");
    assert!(
        err.contains("partial_execution") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(snapshot(&env, false).await, before);

    // With --force and a fix, executed in the CLI process (no fleet is running).
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            &id,
            "--force",
            "--local",
            "--operator",
            "ana@ops",
            "--reason",
            "reviewed: the email was never sent",
            "--patch",
            r#"{"simulate":"ok","resend":true}"#,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    assert!(
        env.dead_letters("acme").await.is_empty(),
        "removed in the same step"
    );
    let replayed = env.lane_entries("acme").await;
    assert_eq!(replayed.len(), 1, "re-added in the same step");
    let t = &replayed[0];
    assert_eq!(t["task_id"], "p-1", "the idempotency key is kept");
    assert_eq!(t["kind"], "crm");
    assert_eq!(t["attempt"], "1", "a fresh attempt budget");
    assert_eq!(t["replay_of"], entry_id);
    assert_eq!(t["replayed_by"], "ana@ops");
    assert_eq!(t["steps"], dead["steps"], "completed steps carried forward");
    assert_eq!(t["history"], dead["history"]);
    assert_eq!(t["first_enqueued_at"], dead["enqueued_at"]);
    let payload: Value = serde_json::from_str(&t["payload"]).unwrap();
    assert_eq!(
        payload,
        json!({"simulate": "ok", "work_ms": 0, "customer": 7, "resend": true})
    );
    let trail = audit(&env).await;
    assert_eq!(
        trail.len(),
        2,
        "the refusal and the replay are both audited"
    );
    assert_eq!(trail[0]["outcome"], "refused");
    assert_eq!(trail[1]["outcome"], "ok");
    assert_eq!(trail[1]["operator"], "ana@ops");
    assert_eq!(trail[1]["reason"], "reviewed: the email was never sent");
    assert_eq!(trail[1]["command"], "replay");
    assert!(trail[1]["executor"].starts_with("local@"));
    assert!(trail[1]["args"].contains("resend"));

    // The fleet runs it to completion under the same task id.
    let mut m = env.member("m1", &[]);
    env.wait_drained(&["acme"], LONG).await;
    assert_eq!(
        env.side_effects(),
        vec![("acme".into(), "p-1".into(), 1, "m1".into())]
    );
    assert!(m.stop().success());
    assert!(env.dead_letters("acme").await.is_empty());
}

#[tokio::test]
async fn replays_go_in_chronological_or_per_key_order_and_batches_skip_partials() {
    let env = TestEnv::new();
    // Dead-lettered in this order; their tasks were first enqueued in another: within each
    // customer the later dead letter is the older task.
    let t0 = env.server_time_ms().await - HOUR;
    let plan = [
        ("d1", "c2", 50),
        ("d2", "c1", 40),
        ("d3", "c2", 10),
        ("d4", "c1", 20),
        ("d5", "c3", 30),
    ];
    for tenant in ["chrono", "keyed"] {
        let dls: Vec<Dl> = plan
            .iter()
            .map(|(id, customer, first)| {
                let mut d = dl(
                    tenant,
                    id,
                    "triage",
                    json!({"customer": customer, "simulate": "ok", "work_ms": 0}),
                    FailureClass::Timeout,
                    "timed out",
                );
                d.enqueued_at = Some(t0 + first);
                d
            })
            .collect();
        seed(&env, &dls, None).await;
    }
    let replay = |tenant: &str, extra: &[&str]| {
        let mut args = vec![
            "dlq", "replay", "--tenant", tenant, "--local", "--reason", "order", "--rate", "0",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = env.cli(&args, &[]);
        assert_eq!(code, 0, "{err}");
        out
    };
    replay("chrono", &[]);
    replay("keyed", &["--order-by-key", "customer"]);
    let order = |tenant: &'static str| {
        let env = &env;
        async move {
            env.lane_entries(tenant)
                .await
                .into_iter()
                .map(|f| f["task_id"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        order("chrono").await,
        ["d1", "d2", "d3", "d4", "d5"],
        "as dead-lettered"
    );
    assert_eq!(
        order("keyed").await,
        ["d3", "d1", "d4", "d2", "d5"],
        "c2 (oldest task at 10) in task order, then c1 (20), then c3 (30)"
    );

    // A batch replays what it may and refuses partial executions, which stay.
    let mut partial = dl(
        "mixed",
        "p1",
        "crm",
        ok_payload(),
        FailureClass::PartialExecution,
        "smtp 550",
    );
    partial.steps = vec!["update_crm_record".into()];
    let others: Vec<Dl> = (0..3)
        .map(|i| {
            dl(
                "mixed",
                &format!("m{i}"),
                "crm",
                ok_payload(),
                FailureClass::Timeout,
                "t",
            )
        })
        .collect();
    seed(&env, &[partial], None).await;
    seed(&env, &others, None).await;
    let out = replay("mixed", &["--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["details"]["replayed"], 3);
    assert_eq!(r["details"]["refused"], 1);
    assert!(r["message"].as_str().unwrap().contains("--force"), "{r}");
    let left = env.dead_letters("mixed").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["task_id"], "p1");
    let out = replay("mixed", &["--force"]);
    assert!(out.contains("replayed 1 of 1"), "{out}");
    assert!(env.dead_letters("mixed").await.is_empty());
}

#[tokio::test]
async fn migrations_and_target_kinds_apply_before_replay() {
    let env = TestEnv::new();
    let cfg = env.config_file(
        "migrate.toml",
        r#"
[[admin.migrations]]
kind = "legacy"
from = 1
to = 2
rename = { ticket = "ticket_id" }
remove = ["old_flag"]

[[admin.migrations]]
kind = "legacy"
from = 2
to = 3
patch = { locale = "en" }
"#,
    );
    let mut v1 = dl(
        "acme",
        "old-1",
        "legacy",
        json!({"ticket": 9, "old_flag": true, "simulate": "ok", "work_ms": 0}),
        FailureClass::SchemaMismatch,
        "field 'ticket' renamed",
    );
    v1.schema_version = Some(1);
    let mut v3 = dl(
        "acme",
        "new-1",
        "legacy",
        json!({"ticket_id": 1, "simulate": "ok", "work_ms": 0}),
        FailureClass::SchemaMismatch,
        "x",
    );
    v3.schema_version = Some(3);
    let unversioned = dl(
        "acme",
        "none-1",
        "legacy",
        json!({"ticket": 2}),
        FailureClass::Timeout,
        "y",
    );
    seed(&env, &[v1, v3, unversioned], None).await;
    let with_cfg = [("REDRIVE_CONFIG", cfg.as_str())];
    let d: Value = {
        let (code, out, err) = env.cli(
            &[
                "dlq",
                "replay",
                "--tenant",
                "acme",
                "--kind",
                "legacy",
                "--dry-run",
                "--json",
            ],
            &with_cfg,
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(d["sample"][0]["migrations"], json!(["1->2", "2->3"]));
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            "--kind",
            "legacy",
            "--target-kind",
            "triage_v3",
            "--local",
            "--reason",
            "schema v3 rollout",
            "--rate",
            "0",
        ],
        &with_cfg,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 3 of 3"), "{out}");
    let by_id: HashMap<String, HashMap<String, String>> = env
        .lane_entries("acme")
        .await
        .into_iter()
        .map(|f| (f["task_id"].clone(), f))
        .collect();
    let old = &by_id["old-1"];
    assert_eq!(old["kind"], "triage_v3", "routed to another handler");
    assert_eq!(old["schema_version"], "3");
    let p: Value = serde_json::from_str(&old["payload"]).unwrap();
    assert_eq!(
        p,
        json!({"ticket_id": 9, "locale": "en", "simulate": "ok", "work_ms": 0})
    );
    let new: Value = serde_json::from_str(&by_id["new-1"]["payload"]).unwrap();
    assert_eq!(
        new,
        json!({"ticket_id": 1, "simulate": "ok", "work_ms": 0}),
        "already current"
    );
    assert!(
        !by_id["none-1"].contains_key("schema_version"),
        "no version, no migration"
    );
    assert!(env.dead_letters("acme").await.is_empty());
}

#[tokio::test]
async fn resolve_discard_and_purge_leave_a_trail() {
    let env = TestEnv::new();
    let (base, all) = seed_catalogue(&env).await;
    let acme: Vec<&String> = all.iter().filter(|i| i.starts_with("acme/")).collect();

    // Resolve two listed entries: archived with who, why and which command.
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "resolve",
            acme[0],
            acme[1],
            "--reason",
            "refunded by hand",
            "--operator",
            "ana@ops",
            "--local",
            "--command-id",
            "res-1",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resolved 2 dead letters"), "{out}");
    let broker = env.broker().await;
    let archived = broker.dlq_removed_range("acme", "-", 100).await.unwrap();
    assert_eq!(archived.len(), 2);
    let a = text_fields(archived[0].fields.clone().unwrap());
    assert_eq!(a["removed_action"], "resolved");
    assert_eq!(a["removed_by"], "ana@ops");
    assert_eq!(a["removed_reason"], "refunded by hand");
    assert_eq!(a["removed_command"], "res-1");
    assert_eq!(format!("acme/{}", a["dead_letter_id"]), *acme[0]);
    assert_eq!(a["task_id"], "a0", "the whole dead letter is archived");

    // Discard by filter needs --yes; without it nothing changes.
    let before = snapshot(&env, false).await;
    let (code, _, err) = env.cli(
        &[
            "dlq", "discard", "--tenant", "beta", "--reason", "stale", "--local",
        ],
        &[],
    );
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(snapshot(&env, false).await, before);
    let (code, out, err) = env.cli(
        &[
            "dlq", "discard", "--tenant", "beta", "--reason", "stale", "--local", "--yes",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("discarded 6"), "{out}");
    assert!(env.dead_letters("beta").await.is_empty());
    assert_eq!(
        broker
            .dlq_removed_range("beta", "-", 100)
            .await
            .unwrap()
            .len(),
        6
    );

    // Purge needs --yes, says how many it would delete, then deletes them for good.
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "purge",
            "--tenant",
            "acme",
            "--older-than",
            "5h",
            "--reason",
            "retention",
            "--local",
        ],
        &[],
    );
    assert_eq!(code, 77);
    // acme entries at base + i*15min before now-5h (base = 10 h before the seed, a little
    // earlier than now): i*15min <= 5h, so i = 0..=20, minus the two resolved.
    assert!(err.contains("19 dead letters of tenant acme"), "{err}");
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "purge",
            "--tenant",
            "acme",
            "--older-than",
            "5h",
            "--reason",
            "retention",
            "--local",
            "--yes",
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["details"]["purged"], 19);
    let left = env.dead_letters("acme").await;
    assert_eq!(left.len(), 3, "i = 21..=23 remain");
    let _ = base;

    let trail = audit(&env).await;
    let outcomes: Vec<(&str, &str)> = trail
        .iter()
        .map(|a| (a["command"].as_str(), a["outcome"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [("resolve", "ok"), ("discard", "ok"), ("purge", "ok")]
    );
    let (code, out, _) = env.cli(&["admin", "audit"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("refunded by hand") && out.contains("retention"),
        "{out}"
    );
    let status = run_json(&env, &["admin", "status", "res-1", "--json"]);
    assert_eq!(status["record"]["state"], "done");
    assert_eq!(status["result"]["outcome"], "ok");
}

#[tokio::test]
async fn ten_thousand_replayed_by_fingerprint_once_each_with_two_operators() {
    let env = TestEnv::new();
    // 10,000 dead letters: 6,000 of one root cause (to replay), 4,000 of another (to keep).
    let dls: Vec<Dl> = (0..10_000)
        .map(|i| {
            let (class, error) = if i % 5 < 3 {
                (
                    FailureClass::SchemaMismatch,
                    format!("missing field 'summary' in output {i}"),
                )
            } else {
                (
                    FailureClass::ContextOverflow,
                    format!("prompt of {i} tokens is too long"),
                )
            };
            dl(
                "acme",
                &format!("t{i}"),
                "triage",
                ok_payload(),
                class,
                &error,
            )
        })
        .collect();
    seed(&env, &dls, None).await;
    let s = run_json(&env, &["dlq", "stats", "--json", "--top", "2"]);
    let fp = s["top_fingerprints"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s["top_fingerprints"][0]["count"], 6_000);
    assert_eq!(s["top_fingerprints"][0]["class"], "schema_mismatch");

    let mut m = env.member("m1", &[("REDRIVE_FLEET__CONCURRENCY", "128")]);
    wait_live(&env, "m1").await;
    let args = [
        "dlq",
        "replay",
        "--fingerprint",
        &fp,
        "--rate",
        "0",
        "--reason",
        "schema fixed",
        "--json",
        "--timeout",
        "60s",
    ];
    let ana = spawn_cli(&env, &args);
    let bob = spawn_cli(&env, &args);
    let mut replayed = 0;
    for (code, out, err) in [finish(ana), finish(bob)] {
        assert_eq!(code, 0, "{err}");
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["outcome"], "ok");
        let d = &r["details"];
        assert_eq!(
            d["replayed"].as_u64().unwrap() + d["skipped"].as_u64().unwrap(),
            d["selected"].as_u64().unwrap(),
            "every selected entry was replayed by this job or found gone: {d}"
        );
        replayed += d["replayed"].as_u64().unwrap();
    }
    assert_eq!(replayed, 6_000, "each matching entry replayed once in all");
    eventually(LONG, "the replayed tasks completed", || async {
        env.side_effects().len() >= 6_000
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 6_000);
    assert!(per_task.values().all(|n| *n == 1), "each ran once");
    let expected: HashSet<String> = (0..10_000)
        .filter(|i| i % 5 < 3)
        .map(|i| format!("t{i}"))
        .collect();
    let ran: HashSet<String> = per_task.keys().map(|s| s.to_string()).collect();
    assert_eq!(ran, expected, "exactly the matching ones");
    let left = env.dead_letters("acme").await;
    assert_eq!(left.len(), 4_000);
    assert!(left.iter().all(|d| d["class"] == "context_overflow"));
    assert!(m.stop().success(), "{}", m.log_text());
}

#[tokio::test]
async fn a_cancelled_batch_replay_resumes_and_replays_each_entry_once() {
    let env = TestEnv::new();
    let dls: Vec<Dl> = (0..400)
        .map(|i| {
            dl(
                "acme",
                &format!("t{i}"),
                "triage",
                json!({"simulate": "ok", "work_ms": 0, "customer": format!("c{}", i % 7)}),
                FailureClass::Timeout,
                "timed out",
            )
        })
        .collect();
    seed(&env, &dls, None).await;
    // One command slot: the replay takes it, and the cancel must still get through.
    let mut m = env.member("m1", &[("REDRIVE_ADMIN__CONCURRENCY", "1")]);
    wait_live(&env, "m1").await;
    let broker = env.broker().await;
    let replay = spawn_cli(
        &env,
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            "--class",
            "timeout",
            "--rate",
            "40",
            "--order-by-key",
            "customer",
            "--reason",
            "upstream back",
            "--command-id",
            "job-1",
        ],
    );
    eventually(LONG, "the job is under way", || async {
        broker
            .job_get("job-1")
            .await
            .unwrap()
            .and_then(|j| j.get("replayed").cloned())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 40)
    })
    .await;
    let (code, out, err) = env.cli(&["dlq", "cancel", "job-1", "--reason", "too fast"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancel requested"), "{out}");
    let (code, _, err) = finish(replay);
    assert_eq!(code, 75, "a cancelled batch exits 75: {err}");
    assert!(
        err.contains("cancelled") && err.contains("--resume job-1"),
        "{err}"
    );
    assert!(
        err.contains("replay job job-1:"),
        "progress was shown: {err}"
    );
    let job = broker.job_get("job-1").await.unwrap().unwrap();
    assert_eq!(job["state"], "cancelled");
    let done: u64 = job["replayed"].parse().unwrap();
    assert!((40..400).contains(&done), "cancelled half-way: {done}");
    assert_eq!(env.dead_letters("acme").await.len() as u64, 400 - done);

    let (code, out, err) = env.cli(
        &[
            "dlq", "replay", "--resume", "job-1", "--rate", "0", "--reason", "continue",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("job job-1"), "{out}");
    let job = broker.job_get("job-1").await.unwrap().unwrap();
    assert_eq!(job["state"], "done");
    assert_eq!(job["replayed"], "400");
    assert!(env.dead_letters("acme").await.is_empty());
    eventually(LONG, "all 400 ran", || async {
        env.side_effects().len() >= 400
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 400);
    assert!(
        per_task.values().all(|n| *n == 1),
        "no entry replayed twice"
    );
    let trail: Vec<(String, String)> = audit(&env)
        .await
        .into_iter()
        .map(|a| (a["command"].clone(), a["outcome"].clone()))
        .collect();
    assert_eq!(
        trail,
        [
            ("cancel".to_string(), "ok".to_string()),
            ("replay".into(), "cancelled".into()),
            ("replay".into(), "ok".into())
        ]
    );
    // Resuming a finished job replays nothing.
    let (code, out, _) = env.cli(
        &["dlq", "replay", "--resume", "job-1", "--reason", "again"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(out.contains("nothing left"), "{out}");
    assert!(m.stop().success());
}

#[tokio::test]
async fn ctrl_c_cancels_a_batch_replay_which_resumes_later() {
    let env = TestEnv::new();
    let dls: Vec<Dl> = (0..200)
        .map(|i| {
            dl(
                "acme",
                &format!("t{i}"),
                "triage",
                ok_payload(),
                FailureClass::Timeout,
                "t",
            )
        })
        .collect();
    seed(&env, &dls, None).await;
    let mut m = env.member("m1", &[]);
    wait_live(&env, "m1").await;
    let broker = env.broker().await;
    let replay = spawn_cli(
        &env,
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            "--rate",
            "20",
            "--reason",
            "slowly",
            "--command-id",
            "job-c",
        ],
    );
    eventually(LONG, "the job is under way", || async {
        broker
            .job_get("job-c")
            .await
            .unwrap()
            .and_then(|j| j.get("replayed").and_then(|n| n.parse::<u64>().ok()))
            .is_some_and(|n| n >= 10)
    })
    .await;
    let status = Command::new("kill")
        .arg("-INT")
        .arg(replay.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, err) = finish(replay);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("cancelling replay job job-c"), "{err}");
    assert!(err.contains("--resume job-c"), "{err}");
    let job = broker.job_get("job-c").await.unwrap().unwrap();
    assert_eq!(job["state"], "cancelled");
    let done: u64 = job["replayed"].parse().unwrap();
    assert!(done < 200, "{done}");
    let (code, _, err) = env.cli(
        &[
            "dlq", "replay", "--resume", "job-c", "--rate", "0", "--reason", "go on",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(env.dead_letters("acme").await.is_empty());
    eventually(LONG, "all 200 ran", || async {
        env.side_effects().len() >= 200
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 200);
    assert!(per_task.values().all(|n| *n == 1));
    assert!(m.stop().success());
}

#[tokio::test]
async fn bad_input_unknown_ids_a_down_fleet_and_an_expired_wait_change_nothing() {
    let env = TestEnv::new();
    let (_, all) = seed_catalogue(&env).await;
    let before = snapshot(&env, true).await;
    let id = all[0].as_str();
    type Case<'a> = (Vec<&'a str>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["dlq", "list", "--since", "yesterday"], 64, "--since"),
        (vec!["dlq", "list", "--limit", "0"], 64, "--limit"),
        (
            vec!["dlq", "list", "--class", "flaky"],
            64,
            "not a failure class",
        ),
        (vec!["dlq", "list", "--cursor", "nope"], 64, "--cursor"),
        (
            vec!["dlq", "list", "--since", "1h", "--until", "2h"],
            64,
            "later than --until",
        ),
        (vec!["dlq", "show", "acme-1-0"], 64, "TENANT/ENTRY-ID"),
        (vec!["dlq", "show", "acme/1-0"], 66, "not found"),
        (vec!["dlq", "stats", "--window", "3d"], 64, "--window"),
        (vec!["health", "--tenant", "a b"], 64, "tenant"),
        (vec!["dlq", "export", "--format", "csv"], 2, "invalid value"),
        (vec!["dlq", "replay", id], 64, "--reason"),
        (
            vec!["dlq", "replay", "--reason", "x"],
            64,
            "nothing selected",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--patch", "{oops"],
            64,
            "--patch is not valid JSON",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--patch", "[1]"],
            64,
            "merge patch",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--target-kind", "a b"],
            64,
            "--target-kind",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--class", "timeout"],
            64,
            "not both",
        ),
        (
            vec![
                "dlq", "replay", "--resume", "j", "--class", "timeout", "--reason", "x",
            ],
            64,
            "--resume",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--timeout", "5"],
            64,
            "--timeout",
        ),
        (
            vec!["dlq", "replay", id, "--reason", "x", "--command-id", "a b"],
            64,
            "command id",
        ),
        (
            vec![
                "dlq",
                "purge",
                "--tenant",
                "acme",
                "--older-than",
                "ever",
                "--reason",
                "x",
            ],
            64,
            "--older-than",
        ),
        // No fleet member is running: mutating commands say so at once.
        (
            vec!["dlq", "replay", id, "--reason", "x"],
            68,
            "no fleet member is running",
        ),
        (vec!["dlq", "discard", id, "--reason", "x"], 68, "--local"),
        (
            vec![
                "dlq",
                "purge",
                "--tenant",
                "acme",
                "--older-than",
                "1d",
                "--reason",
                "x",
                "--yes",
            ],
            68,
            "redrive run",
        ),
        (vec!["dlq", "cancel", "job-9"], 68, "no fleet member"),
        // Unknown ids, in this process.
        (
            vec!["dlq", "replay", "acme/1-0", "--reason", "x", "--local"],
            66,
            "do not exist",
        ),
        (
            vec!["dlq", "replay", id, "acme/1-0", "--reason", "x", "--local"],
            66,
            "acme/1-0",
        ),
        (
            vec!["dlq", "discard", "beta/1-0", "--reason", "x", "--local"],
            66,
            "do not exist",
        ),
        (
            vec!["dlq", "resolve", id, "acme/2-0", "--reason", "x", "--local"],
            66,
            "acme/2-0",
        ),
        (
            vec!["dlq", "cancel", "job-9", "--local"],
            66,
            "no replay job",
        ),
        (
            vec![
                "dlq", "replay", "--resume", "job-9", "--reason", "x", "--local",
            ],
            66,
            "no replay job",
        ),
        (vec!["admin", "status", "c-none"], 66, "not found"),
    ];
    for (args, want, says) in &cases {
        let (code, out, err) = env.cli(args, &[]);
        assert_eq!(code, *want, "{args:?}: {out} {err}");
        assert!(err.contains(says), "{args:?}: wanted {says:?} in {err:?}");
    }
    assert_eq!(
        snapshot(&env, false).await,
        {
            let mut b = before.clone();
            b.retain(|k, _| !k.contains("{@admin}"));
            b
        },
        "no dead letter, lane or stat changed"
    );
    let trail = audit(&env).await;
    let local_not_found = cases
        .iter()
        .filter(|(args, want, _)| *want == 66 && args.contains(&"--local"))
        .count();
    assert_eq!(
        trail.len(),
        local_not_found,
        "each local unknown-id command was audited once: {trail:?}"
    );
    assert!(
        trail.iter().all(|a| a["outcome"] == "not_found"),
        "only the local unknown-id commands were executed (and audited): {trail:?}"
    );

    // A member that is alive but does not answer (frozen): the wait expires, the command is
    // withdrawn, and when the member wakes up it does not run it.
    let slow = [
        ("REDRIVE_ADMIN__MEMBER_TTL_MS", "20000"),
        ("REDRIVE_ADMIN__CLAIM_IDLE_MS", "20000"),
    ];
    let mut m = env.member("m1", &slow);
    let broker = env.broker().await;
    eventually(LONG, "m1 is live", || async {
        !broker
            .admin_live_members(Duration::from_secs(20))
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // The member's reader has joined both lanes (creating their groups) before it freezes, so
    // the snapshot below sees everything its start-up writes.
    eventually(LONG, "m1 joined both lanes", || async {
        let mut raw = env.raw().await;
        let mut joined = 0;
        for t in ["acme", "beta"] {
            let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(format!("{}:{{{t}}}:lane", env.prefix))
                .query_async(&mut raw)
                .await;
            if matches!(groups, Ok(redis::Value::Array(ref g)) if !g.is_empty()) {
                joined += 1;
            }
        }
        joined == 2
    })
    .await;
    m.signal("STOP");
    let before = snapshot(&env, false).await;
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "replay",
            id,
            "--reason",
            "x",
            "--timeout",
            "1s",
            "--command-id",
            "late-1",
        ],
        &slow,
    );
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("within 1000 ms") && err.contains("withdrawn"),
        "{err}"
    );
    m.signal("CONT");
    eventually(LONG, "the woken member saw the expired command", || async {
        audit(&env)
            .await
            .iter()
            .any(|a| a["command_id"] == "late-1" && a["outcome"] == "expired")
    })
    .await;
    assert_eq!(
        snapshot(&env, false).await,
        before,
        "the expired command never ran"
    );
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "replay",
            id,
            "--reason",
            "x",
            "--command-id",
            "late-1",
        ],
        &slow,
    );
    assert_eq!(
        code, 75,
        "re-sending an expired id does not run it either: {err}"
    );
    assert!(m.stop().success());
}

#[tokio::test]
async fn a_command_id_executes_once_however_often_it_is_sent() {
    let env = TestEnv::new();
    let (_, all) = seed_catalogue(&env).await;
    let mut m = env.member("m1", &[]);
    wait_live(&env, "m1").await;
    let args = [
        "dlq",
        "discard",
        all[0].as_str(),
        "--reason",
        "duplicate ticket",
        "--command-id",
        "once-1",
        "--json",
    ];
    let first = run_json(&env, &args);
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["member"], "m1");
    assert_eq!(first["details"]["discarded"], 1);
    // The operator's CLI re-sends it (a lost reply, a retry): the first result comes back.
    let (code, out, err) = env.cli(&args, &[]);
    assert_eq!(code, 0);
    assert!(err.contains("ran already"), "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again, first);
    // A copy appended to the stream behind the CLI's back is acked, not executed.
    let broker = env.broker().await;
    let env_fields: Vec<(&str, String)> = vec![
        ("id", "once-1".into()),
        ("operator", "ana".into()),
        ("reason", "again".into()),
        ("issued_at", "0".into()),
        ("deadline", "0".into()),
        (
            "command",
            json!({"type": "discard", "select": {"ids": [all[1]]}}).to_string(),
        ),
    ];
    broker.admin_submit(&env_fields).await.unwrap();
    let raw = env.raw().await;
    eventually(LONG, "the copy was settled", || {
        let mut raw = raw.clone();
        let key = format!("{}:{{@admin}}:commands", env.prefix);
        async move {
            let n: u64 = redis::cmd("XLEN")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            n == 0
        }
    })
    .await;
    let trail = audit(&env).await;
    assert_eq!(trail.len(), 1, "executed and audited once: {trail:?}");
    assert_eq!(
        env.dead_letters("acme").await.len(),
        23,
        "only the first discard happened"
    );
    assert!(m.stop().success());
    // With the fleet stopped, the member left the live set at once.
    let (code, _, err) = env.cli(&["dlq", "discard", all[2].as_str(), "--reason", "x"], &[]);
    assert_eq!(code, 68, "{err}");
}

#[tokio::test]
async fn a_member_killed_mid_replay_is_taken_over_and_every_entry_replays_once() {
    let env = TestEnv::new();
    let dls: Vec<Dl> = (0..300)
        .map(|i| {
            dl(
                "acme",
                &format!("t{i}"),
                "triage",
                ok_payload(),
                FailureClass::Timeout,
                "timed out",
            )
        })
        .collect();
    seed(&env, &dls, None).await;
    let quick = [
        ("REDRIVE_ADMIN__MEMBER_TTL_MS", "1000"),
        ("REDRIVE_ADMIN__CLAIM_IDLE_MS", "1500"),
    ];
    let mut a = env.member("a", &quick);
    wait_live(&env, "a").await;
    let replay = spawn_cli(
        &env,
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            "--rate",
            "50",
            "--reason",
            "crash test",
            "--command-id",
            "job-k",
            "--timeout",
            "30s",
            "--json",
        ],
    );
    let broker = env.broker().await;
    eventually(LONG, "a is replaying", || async {
        broker
            .job_get("job-k")
            .await
            .unwrap()
            .and_then(|j| j.get("replayed").and_then(|n| n.parse::<u64>().ok()))
            .is_some_and(|n| n >= 50)
    })
    .await;
    a.kill9();
    let mut b = env.member("b", &quick);
    let (code, out, err) = finish(replay);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["member"], "b", "finished by the member that took it over");
    assert_eq!(r["outcome"], "ok");
    assert!(env.dead_letters("acme").await.is_empty());
    // replay.lua counts each replay in the same atomic step: 300 dead letters, 300 replays.
    let s = run_json(&env, &["dlq", "stats", "--json", "--tenant", "acme"]);
    assert_eq!(
        s["window"]["replayed"], 300,
        "no dead letter replayed twice"
    );
    eventually(LONG, "all 300 ran", || async {
        env.side_effects().len() >= 300
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    let effects = env.side_effects();
    let per_task = counts(effects.iter().map(|e| e.1.as_str()));
    assert_eq!(per_task.len(), 300);
    // a may have been killed after a replayed task ran but before its ack: at-least-once lets
    // that task run again; a dead letter is never replayed twice, which the counts show.
    let trail = audit(&env).await;
    let replays: Vec<_> = trail
        .iter()
        .filter(|t| t["command_id"] == "job-k")
        .collect();
    assert_eq!(replays.len(), 1, "one result recorded");
    assert!(b.stop().success(), "{}", b.log_text());
}

/// Issue 11 #7: a dead letter listed twice (or once with its tenant and once bare under
/// `--tenant`) is one selection: dry runs count it once, and the real replay and discard
/// agree with them.
#[tokio::test]
async fn a_repeated_id_is_one_selection_everywhere() {
    let env = TestEnv::new();
    let ids = seed(
        &env,
        &[
            dl(
                "acme",
                "d-0",
                "triage",
                ok_payload(),
                FailureClass::Timeout,
                "timed out",
            ),
            dl(
                "acme",
                "d-1",
                "triage",
                ok_payload(),
                FailureClass::Timeout,
                "timed out",
            ),
        ],
        None,
    )
    .await;
    let (a, b) = (ids[0].as_str(), ids[1].as_str());
    let bare_a = a.split_once('/').unwrap().1;

    let d = run_json(&env, &["dlq", "replay", a, a, "--dry-run", "--json"]);
    assert_eq!(
        (d["selected"].clone(), d["would_replay"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
    assert_eq!(d["sample"].as_array().unwrap().len(), 1, "{d}");
    let d = run_json(
        &env,
        &[
            "dlq",
            "replay",
            "--tenant",
            "acme",
            bare_a,
            a,
            b,
            bare_a,
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(
        (d["selected"].clone(), d["would_replay"].clone()),
        (json!(2), json!(2)),
        "{d}"
    );
    let (code, out, err) = env.cli(&["dlq", "replay", a, a, "--dry-run"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 dead letters selected; 1 would be replayed"),
        "{out}"
    );

    // The real run replays it once and says so, without a phantom "already gone".
    let (code, out, err) = env.cli(
        &[
            "dlq", "replay", a, a, "--reason", "dup", "--local", "--rate", "0",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    assert!(!out.contains("already gone"), "{out}");
    assert_eq!(env.lane_entries("acme").await.len(), 1);

    // Discard with the id twice: one dead letter discarded, one archived copy.
    let (code, out, err) = env.cli(&["dlq", "discard", b, b, "--reason", "dup", "--local"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("discarded 1 dead letter"), "{out}");
    let broker = env.broker().await;
    assert_eq!(
        broker
            .dlq_removed_range("acme", "-", 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(env.dead_letters("acme").await.is_empty());
}
