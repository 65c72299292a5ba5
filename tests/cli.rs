//! The binary's command line: bad input gets a clear message and a non-zero exit, and writes
//! nothing; good input lands where the contract says.

mod common;

use std::process::Command;

use common::TestEnv;
use redrive::testkit::BrokerExt;

#[tokio::test]
async fn enqueue_rejects_bad_input_and_writes_nothing() {
    let env = TestEnv::new();
    let big = format!("{{\"x\":\"{}\"}}", "y".repeat(300));
    let file = env.dir.join("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{}}\n{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{},\"tenat\":1}\n",
    )
    .unwrap();
    let bad_json_file = env.dir.join("bad.jsonl");
    std::fs::write(
        &bad_json_file,
        "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{}}\n{oops\n",
    )
    .unwrap();
    let small = [("REDRIVE_LIMITS__MAX_PAYLOAD_BYTES", "100")];
    let file_arg = file.to_str().unwrap();
    let bad_json_arg = bad_json_file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "k",
                "--payload",
                "{nope",
            ],
            &[],
            65,
            "--payload is not valid JSON",
        ),
        (
            vec![
                "enqueue",
                "--tenant",
                "ac me",
                "--kind",
                "k",
                "--payload",
                "{}",
            ],
            &[],
            65,
            "tenant 'ac me' contains ' '",
        ),
        (
            vec![
                "enqueue",
                "--tenant",
                "a{b}",
                "--kind",
                "k",
                "--payload",
                "{}",
            ],
            &[],
            65,
            "contains '{'",
        ),
        (
            vec![
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "k",
                "--payload",
                &big,
            ],
            &small,
            65,
            "the limit is 100",
        ),
        (
            vec![
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "k",
                "--payload",
                "{}",
                "--task-id",
                "a b",
            ],
            &[],
            65,
            "task_id 'a b'",
        ),
        (
            vec!["enqueue", "--file", file_arg],
            &[],
            65,
            "line 2: unknown field `tenat`",
        ),
        (vec!["enqueue", "--file", bad_json_arg], &[], 65, "line 2:"),
        (
            vec!["enqueue", "--file", "/nonexistent/tasks.jsonl"],
            &[],
            74,
            "reading /nonexistent/tasks.jsonl",
        ),
        (vec!["enqueue", "--tenant", "acme"], &[], 2, "--kind"),
        (
            vec!["run", "--concurrency", "lots"],
            &[],
            2,
            "invalid value 'lots'",
        ),
        (
            vec!["run", "--concurrency", "0"],
            &[],
            78,
            "fleet.concurrency = 0 is out of range",
        ),
    ];
    for (args, extra_env, code, want) in cases {
        let (got, _out, err) = env.cli(&args, extra_env);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
    }
    let broker = env.broker().await;
    assert_eq!(
        broker.lane_len("acme").await.unwrap(),
        0,
        "nothing was half-written"
    );
    assert!(broker.tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn enqueue_publishes_single_and_bulk_tasks() {
    let env = TestEnv::new();
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "triage",
            "--payload",
            "{\"ticket\":1}",
            "--task-id",
            "tk-1",
            "--trace-id",
            "tr-9",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("tk-1 "), "{out}");
    let file = env.dir.join("bulk.jsonl");
    let lines: String = (0..250)
        .map(|i| {
            format!(
                "{{\"tenant\":\"t{}\",\"kind\":\"score_lead\",\"payload\":{{\"lead\":{i}}}}}\n",
                i % 5
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let (code, out, err) = env.cli(&["enqueue", "--file", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("enqueued 250 tasks"));
    let broker = env.broker().await;
    assert_eq!(
        broker.tenants().await.unwrap(),
        ["acme", "t0", "t1", "t2", "t3", "t4"]
    );
    for t in ["t0", "t1", "t2", "t3", "t4"] {
        assert_eq!(broker.lane_len(t).await.unwrap(), 50);
    }
    let mut raw = env.raw().await;
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(format!("{}:{{acme}}:lane", env.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let text = format!("{entries:?}");
    for field in [
        "task_id",
        "tk-1",
        "tenant",
        "kind",
        "triage",
        "payload",
        "attempt",
        "enqueued_at",
        "trace_id",
        "tr-9",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
}

#[test]
fn config_check_prints_redacted_settings_and_rejects_contradictions() {
    let env = TestEnv::new();
    let (code, out, err) = env.cli(
        &["config", "check"],
        &[("REDRIVE_REDIS_URL", "redis://app:s3cret@db.internal:6379/0")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("app:***@db.internal") && !out.contains("s3cret"),
        "{out}"
    );
    assert!(out.contains("[fleet]") && out.contains("concurrency = 64"));

    let file = env.dir.join("fleet.toml");
    std::fs::write(
        &file,
        "[fleet]\nconcurrency = 8\nblock_ms = 5000\nshutdown_grace_ms = 1000\n",
    )
    .unwrap();
    let (code, _, err) = env.cli(
        &["--config", file.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("fleet.block_ms = 5000 must be shorter than fleet.shutdown_grace_ms = 1000"),
        "{err}"
    );

    // The environment overrides the file, so the same file passes with a shorter block.
    let (code, out, err) = env.cli(
        &["config", "check"],
        &[
            ("REDRIVE_CONFIG", file.to_str().unwrap()),
            ("REDRIVE_FLEET__BLOCK_MS", "200"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("concurrency = 8") && out.contains("block_ms = 200"));

    std::fs::write(&file, "[fleet]\nconcurency = 8\n").unwrap();
    let (code, _, err) = env.cli(
        &["--config", file.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("unknown field") && err.contains("concurency"),
        "{err}"
    );

    let (code, _, err) = env.cli(&["config", "check"], &[("REDRIVE_FLEET__HANDLER", "gpt")]);
    assert_eq!(code, 78);
    assert!(err.contains("fleet.handler = 'gpt' is unknown"), "{err}");

    let (code, _, err) = env.cli(&["--config", "/nonexistent.toml", "config", "check"], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent.toml does not exist"), "{err}");
}

#[test]
fn config_check_shows_the_routing_table_and_never_a_secret() {
    let env = TestEnv::new();
    let file = env.dir.join("routes.toml");
    std::fs::write(
        &file,
        r#"
[[handlers]]
kinds = ["triage_*", "score_lead"]
type = "noop"
timeout_ms = 60000
max_concurrent = 8
url = "http://127.0.0.1:8000/redrive"
secret = "whsec-s3cret-1"
secrets = ["whsec-s3cret-2", "whsec-s3cret-3"]
headers = { Authorization = "Bearer s3cret-4", X-Api-Key = "s3cret-5" }
api_token = "s3cret-6"
env = { OPENAI_API_KEY = "sk-s3cret-7", MODE = "fast" }

[[handlers]]
kinds = ["*"]
type = "demo"
"#,
    )
    .unwrap();
    let (code, out, err) = env.cli(
        &["--config", file.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    assert!(
        out.contains("# routing table (first match wins):")
            && out.contains("[0] kinds = triage_*, score_lead  type = noop  timeout_ms = 60000  max_concurrent = 8")
            && out.contains("[1] kinds = *  type = demo  timeout_ms = 30000  max_concurrent = 64"),
        "{out}"
    );
    assert!(
        out.contains(r#""Authorization":"<redacted>""#) && out.contains(r#""MODE":"<redacted>""#),
        "header and env names are kept, their values redacted: {out}"
    );
    // The settings print as TOML with the same secrets redacted.
    assert!(
        out.contains("[[handlers]]") && out.contains("<redacted>"),
        "{out}"
    );

    // No handler: fine for config check, which says what `run` will do.
    let (code, out, _) = env.cli(&["config", "check"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("no handler configured; `redrive run` refuses to start"),
        "{out}"
    );

    // An unknown type, and both forms at once.
    std::fs::write(&file, "[[handlers]]\nkinds = [\"a\"]\ntype = \"gpt\"\n").unwrap();
    let (code, _, err) = env.cli(
        &["--config", file.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("handlers[0].type = 'gpt' is unknown: the known types are demo, noop"),
        "{err}"
    );
    let (code, _, err) = env.cli(
        &["--config", file.to_str().unwrap(), "config", "check"],
        &[("REDRIVE_FLEET__HANDLER", "demo")],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("fleet.handler = 'demo' and [[handlers]] are both set"),
        "{err}"
    );
}

#[test]
fn run_without_a_handler_refuses_to_start_and_says_how_to_configure_one() {
    let env = TestEnv::new();
    let (code, out, err) = env.cli(&["run"], &[]);
    assert_eq!(code, 78, "{out}{err}");
    for want in [
        "no handler is configured",
        "[[handlers]]",
        "kinds = [\"*\"]",
        "type = \"http\"",
        "Plug in your agents",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err}");
    }
}

#[test]
fn commands_that_need_redis_say_how_to_configure_it() {
    let env = TestEnv::new();
    let (code, _, err) = env.cli(
        &["run"],
        &[
            ("REDRIVE_REDIS_URL", ""),
            ("REDRIVE_FLEET__HANDLER", "noop"),
        ],
    );
    assert_eq!(code, 78);
    assert!(err.contains("redis.url is not set"), "{err}");
    // A server that is not there: a clear error, not a hang.
    let (code, _, err) = env.cli(
        &["enqueue", "--tenant", "a", "--kind", "k", "--payload", "{}"],
        &[("REDRIVE_REDIS_URL", "redis://127.0.0.1:1")],
    );
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot connect to redis"), "{err}");
}

#[test]
fn demo_runs_end_to_end_on_a_private_server() {
    let env = TestEnv::new();
    let (code, out, err) = env.cli(&["demo", "--tasks", "600"], &[("REDRIVE_REDIS_URL", "")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("started a private redis-server"), "{err}");
    assert!(out.contains("600 of 600 tasks settled"), "{out}");
    assert!(out.contains("none lost: yes"), "{out}");
    for tenant in ["acme", "globex", "initech", "umbrella", "hooli"] {
        assert!(out.contains(tenant), "{out}");
    }
}

#[tokio::test]
async fn bench_reports_every_requested_scenario_against_the_raw_ceiling() {
    let env = TestEnv::new();
    let (code, out, err) = env.cli(
        &[
            "bench",
            "--json",
            "--tasks",
            "2000",
            "--repeat",
            "1",
            "--scenario",
            "drain,failure,log-volume,api-load,wait",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["raw"]["consume_per_second"].as_f64().unwrap() > 0.0);
    let rows = report["results"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["scenario"].as_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {out}"))
    };
    let drain = row("drain: 1 tenant");
    assert_eq!(drain["tasks"], 2000);
    assert!(drain["per_second"].as_f64().unwrap() > 0.0);
    assert!(drain["ratio_to_raw"].as_f64().unwrap() > 0.0);
    assert!(drain["note"].as_str().unwrap().contains("0 left in Redis"));
    // The wait scenario: its own server with a replica, each row without and with WAIT.
    for wait in ["wait_replicas=0", "wait_replicas=1"] {
        for name in [
            "enqueue: one task per call",
            "enqueue: batched",
            "drain: 1 tenant",
        ] {
            let r = row(&format!("{name} ({wait}, 1 replica)"));
            assert!(r["per_second"].as_f64().unwrap() > 0.0, "{r}");
        }
        let d = row(&format!("drain: 1 tenant ({wait}, 1 replica)"));
        assert!(
            d["note"].as_str().unwrap().contains("0 left in Redis"),
            "{d}"
        );
    }
    let failure = row("failure path");
    assert!(
        failure["note"]
            .as_str()
            .unwrap()
            .contains("200 dead-lettered (expected 200: exact)"),
        "{failure}"
    );
    // The storm's log: every failure event written or summarised, far fewer lines with
    // summaries on than off.
    let lines = |row: &serde_json::Value| -> u64 {
        let note = row["note"].as_str().unwrap();
        assert!(note.contains("every event accounted for"), "{row}");
        assert!(note.contains("2000 dead letters: exact"), "{row}");
        note.split(' ').next().unwrap().parse().unwrap()
    };
    let (on, off) = (
        lines(row("log volume: every task fails, default level")),
        lines(row("log volume: every task fails, summaries off")),
    );
    assert!(
        off > 6_000 && on < 100,
        "{on} lines with summaries, {off} without"
    );
    // The API's pages over the dead letters it made (2,000 over 100 tenants here), each with
    // its latencies and what it cost Redis.
    for name in [
        "api: raw XREVRANGE",
        "api: overview: tenants",
        "api: overview: health",
        "api: list: first page",
        "api: list: later page via cursor",
        "api: list: rare fingerprint",
        "api: list: time range",
        "api: list: task id",
        "api: list: payload field",
        "api: stats: top 10, 24h window",
        "api: show one",
    ] {
        let r = row(name);
        assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
        if name != "api: raw XREVRANGE" {
            assert!(
                r["note"].as_str().unwrap().contains("Redis per request"),
                "{r}"
            );
        }
    }
    assert!(row("api: raw XREVRANGE")["note"]
        .as_str()
        .unwrap()
        .contains("2000 dead letters loaded over 100 tenants"));
    // Nothing of the benchmark stays behind in the server it used, except per-minute settle
    // counts, which expire by themselves.
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .unwrap();
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(
            ttl > 0 && k.contains(":stats:"),
            "bench left {k} behind (ttl {ttl}): {keys:?}"
        );
    }
    let (code, _, err) = env.cli(&["bench", "--tasks", "5"], &[]);
    assert_eq!(code, 2, "tasks below the minimum are refused: {err}");
}

/// `redrive bench --cluster` and `--scenario shards` start their own private clusters (never
/// a server someone else runs): the shards scenario drains the same tasks on one server and on
/// three masters, side by side, leaving nothing; `--cluster` with `redis.url` set is refused.
#[test]
fn bench_starts_its_own_clusters_for_shards_and_refuses_cluster_with_a_url() {
    let run = |args: &[&str], url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
        cmd.args(args)
            .env_remove("REDRIVE_REDIS_URL")
            .env_remove("REDRIVE_CONFIG")
            .env("REDRIVE_LOG__LEVEL", "error");
        if let Some(u) = url {
            cmd.env("REDRIVE_REDIS_URL", u);
        }
        let out = cmd.output().expect("run redrive");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(
        &[
            "bench",
            "--json",
            "--cluster",
            "--tasks",
            "1000",
            "--repeat",
            "1",
            "--scenario",
            "shards",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = report["results"].as_array().unwrap();
    for name in [
        "shards: 100 tenants, 1 redis-server",
        "shards: 100 tenants, 3-master cluster",
    ] {
        let row = rows
            .iter()
            .find(|r| r["scenario"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {out}"));
        assert_eq!(row["tasks"], 1000, "{row}");
        assert!(row["per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            row["note"].as_str().unwrap().contains("0 left in Redis"),
            "{row}"
        );
    }
    let env = TestEnv::new();
    let (code, _, err) = run(
        &["bench", "--cluster", "--scenario", "idle"],
        Some(&env.url()),
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("--cluster starts a private cluster"), "{err}");
}

/// Issue 11 #13: the variables Kubernetes injects for a Service named `redrive` are not
/// settings and must not stop a member; a near-miss of a real setting is warned about and
/// ignored; a typo in a real section's key is still an error.
#[tokio::test]
async fn kubernetes_service_variables_are_ignored_and_near_misses_warned() {
    let env = TestEnv::new();
    let k8s: &[(&str, &str)] = &[
        ("REDRIVE_PORT", "tcp://10.0.0.1:9464"),
        ("REDRIVE_SERVICE_HOST", "10.0.0.1"),
        ("REDRIVE_SERVICE_PORT", "9464"),
        ("REDRIVE_SERVICE_PORT_METRICS", "9464"),
        ("REDRIVE_PORT_9464_TCP", "tcp://10.0.0.1:9464"),
        ("REDRIVE_PORT_9464_TCP_ADDR", "10.0.0.1"),
        ("REDRIVE_PORT_9464_TCP_PORT", "9464"),
        ("REDRIVE_PORT_9464_TCP_PROTO", "tcp"),
    ];
    let (code, out, err) = env.cli(&["config", "check"], k8s);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("concurrency = 64"), "{out}");
    assert!(!err.contains("warning"), "nothing to warn about: {err}");

    let mut near = k8s.to_vec();
    near.push(("REDRIVE_FLEET_CONCURRENCY", "8"));
    let (code, out, err) = env.cli(&["config", "check"], &near);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("concurrency = 64"), "ignored: {out}");
    assert!(
        err.contains("REDRIVE_FLEET_CONCURRENCY") && err.contains("REDRIVE_FLEET__CONCURRENCY"),
        "the warning names the intended key: {err}"
    );
    assert!(!err.contains("REDRIVE_PORT"), "{err}");

    let (code, _, err) = env.cli(
        &["config", "check"],
        &[
            ("REDRIVE_PORT", "tcp://10.0.0.1:9464"),
            ("REDRIVE_FLEET__CONCURENCY", "8"),
        ],
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("unknown field") && err.contains("concurency"),
        "{err}"
    );

    // A member started among those variables runs tasks.
    env.enqueue(
        "acme",
        3,
        serde_json::json!({"simulate": "ok", "work_ms": 0}),
    )
    .await;
    let mut m = env.member("k8s-0", k8s);
    env.wait_drained(&["acme"], std::time::Duration::from_secs(60))
        .await;
    assert_eq!(env.side_effects().len(), 3);
    assert!(m.stop().success(), "{}", m.log_text());
}

/// Puts the env's redis-server at `maxmemory` = used memory + `headroom` bytes (at least 1 byte
/// when `headroom` is negative: already over) with `noeviction`, as a full production Redis.
async fn fill_redis(env: &TestEnv, headroom: i64) {
    let mut raw = env.raw().await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut raw)
        .await
        .unwrap();
    let used: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg((used + headroom).max(1))
        .query_async(&mut raw)
        .await
        .unwrap();
}

async fn lanes_total(env: &TestEnv, tenants: &[&str]) -> u64 {
    let broker = env.broker().await;
    let mut n = 0;
    for t in tenants {
        n += broker.lane_len(t).await.unwrap();
    }
    n
}

fn task_file(env: &TestEnv, name: &str, n: usize, pad: usize) -> String {
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"tenant\":\"t{}\",\"kind\":\"triage\",\"task_id\":\"f-{i}\",\"payload\":{{\"n\":{i},\"pad\":\"{}\"}}}}\n",
                i % 4,
                "x".repeat(pad)
            )
        })
        .collect();
    env.config_file(name, &lines)
}

/// Issue 11 #4: a full Redis is not "unreachable": its own exit code and one short line that
/// says what happened and that nothing was written, never a dump of the refused commands.
#[tokio::test]
async fn enqueue_on_a_full_redis_says_out_of_memory_in_one_short_line() {
    let env = TestEnv::new();
    fill_redis(&env, -100_000).await;
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "k",
            "--payload",
            "{\"secret\":\"s3cr3t-payload\"}",
        ],
        &[],
    );
    assert_eq!(code, 73, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.len() < 600, "bounded ({} bytes): {err}", err.len());
    assert!(
        err.contains("out of memory") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-payload"), "{err}");

    let file = task_file(&env, "tasks.jsonl", 2_000, 100);
    let (code, _, err) = env.cli(&["enqueue", "--file", &file], &[]);
    assert_eq!(code, 73, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.len() < 600, "bounded ({} bytes): {err}", err.len());
    assert!(err.contains("none of the 2000 tasks"), "{err}");
    assert_eq!(
        lanes_total(&env, &["acme", "t0", "t1", "t2", "t3"]).await,
        0
    );
}

/// Issue 11 #5: a file is written whole or not at all. On a Redis that fills up part-way
/// through the file nothing is written and the message says so; once memory is back the same
/// file writes everything, exactly once.
#[tokio::test]
async fn enqueue_file_is_all_or_nothing_on_a_redis_that_fills_up() {
    let env = TestEnv::new();
    let tenants = ["t0", "t1", "t2", "t3"];
    // Room for a few hundred of the 2,000 tasks (about 500 bytes each), not for all.
    fill_redis(&env, 250_000).await;
    let file = task_file(&env, "tasks.jsonl", 2_000, 400);
    let (code, out, err) = env.cli(&["enqueue", "--file", &file], &[]);
    assert_eq!(code, 73, "{out}{err}");
    assert!(err.contains("none of the 2000 tasks"), "{err}");
    assert_eq!(lanes_total(&env, &tenants).await, 0, "nothing half-written");
    assert!(env.broker().await.tenants().await.unwrap().is_empty());

    let mut raw = env.raw().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut raw)
        .await
        .unwrap();
    let (code, out, err) = env.cli(&["enqueue", "--file", &file], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("enqueued 2000 tasks"), "{out}");
    assert_eq!(lanes_total(&env, &tenants).await, 2_000);
    assert_eq!(env.broker().await.tenants().await.unwrap(), tenants);
}

/// Issue 11 #5: errors in a --file name the file's own 1-based line (blank lines counted).
#[tokio::test]
async fn enqueue_file_errors_name_the_files_line() {
    let env = TestEnv::new();
    let mut text = String::new();
    for line in 1..=600 {
        match line {
            10 | 11 => text.push('\n'),
            500 => text.push_str(
                "{\"tenant\":\"acme\",\"kind\":\"k\",\"task_id\":\"bad id\",\"payload\":{}}\n",
            ),
            _ => text.push_str(&format!(
                "{{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{{\"line\":{line}}}}}\n"
            )),
        }
    }
    let file = env.config_file("tasks.jsonl", &text);
    let (code, _, err) = env.cli(&["enqueue", "--file", &file], &[]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("line 500:") && err.contains("task_id 'bad id'"),
        "{err}"
    );
    assert!(!err.contains('#'), "{err}");
    assert_eq!(lanes_total(&env, &["acme"]).await, 0);
}

/// Issue 11 #1 through a real member: untyped errors whose digits are ids or plain numbers end
/// as `unknown` (transient), never `unauthorized` (permanent); a real status still counts.
#[tokio::test]
async fn untyped_errors_with_ids_in_them_are_unknown_through_a_member() {
    use redrive::NewTask;
    use serde_json::json;
    let env = TestEnv::new();
    let error = |m: &str| json!({"simulate": "error", "message": m, "work_ms": 0});
    let cases = [
        (
            "probe-panic-401",
            json!({"simulate": "panic", "work_ms": 0}),
            "unknown",
        ),
        ("t-ticket", error("could not load ticket 74012"), "unknown"),
        ("t-number", error("15029"), "unknown"),
        ("error:503", error("job error:503 gave up"), "unknown"),
        (
            "t-http",
            error("upstream answered HTTP 401 Unauthorized"),
            "unauthorized",
        ),
        (
            "t-status",
            error("provider: status code: 429"),
            "rate_limited",
        ),
    ];
    env.enqueue_tasks(
        cases
            .iter()
            .map(|(id, p, _)| NewTask::new("acme", "triage", p.clone()).with_task_id(*id))
            .collect(),
    )
    .await;
    let mut m = env.member("m1", &[("REDRIVE_RETRY__MAX_ATTEMPTS", "1")]);
    common::eventually(
        std::time::Duration::from_secs(60),
        "every task dead-lettered",
        || async { env.dead_letters("acme").await.len() == cases.len() },
    )
    .await;
    assert!(m.stop().success(), "{}", m.log_text());
    let dead = env.dead_letters("acme").await;
    for (id, _, class) in cases {
        let d = dead
            .iter()
            .find(|d| d["task_id"] == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:?}"));
        assert_eq!(d["class"], class, "{id}: {}", d["error"]);
    }
}

/// The configs the repository ships (the examples' and the Compose stack's) are valid, route
/// the example kinds, and name no handler besides their `[[handlers]]` (the image's `run`
/// with REDRIVE_CONFIG, as docker-compose.yml starts members).
#[test]
fn the_shipped_agent_configs_pass_config_check() {
    let env = TestEnv::new();
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, url) in [
        (
            "examples/python-agent/redrive.toml",
            "http://127.0.0.1:8000/",
        ),
        ("examples/python-agent/compose.toml", "http://agent:8000/"),
        ("examples/node-agent/redrive.toml", "http://127.0.0.1:8001/"),
    ] {
        let path = format!("{root}/{file}");
        let (code, out, err) = env.cli(&["config", "check"], &[("REDRIVE_CONFIG", path.as_str())]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(
            out.contains("summarize_ticket") && out.contains("send_followup"),
            "{file}: {out}"
        );
        assert!(out.contains(url), "{file}: {out}");
        assert!(
            !out.contains("example-secret-change-me"),
            "{file}: a secret printed: {out}"
        );
    }
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    assert!(
        !compose.contains("REDRIVE_FLEET__HANDLER"),
        "the members route by [[handlers]] only"
    );
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("CMD [\"run\"]"),
        "the image runs no simulator by default"
    );
}
