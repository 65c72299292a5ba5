//! The SDKs end to end, one test per language: the SDK's producer publishes, a real fleet
//! member routes by kind (`[[handlers]]`) to the example agent served by the same SDK over
//! HTTP (`summarize_ticket`) and as a worker pool the member supervises (`send_followup`), the
//! fake LLM rate-limits some calls, and every task ends acked or dead-lettered with the right
//! class, no email sent twice. Real redis-server, member, agent processes; loopback only.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::agents::{
    free_port, http_post, metric, node, python_http_agent, repo, toml_list, toml_str, venv_python,
    AgentProcess,
};
use common::{eventually, http_get, TestEnv};
use redrive::testkit::BrokerExt;
use serde_json::{json, Value};

const SECRET: &str = "e2e-secret";
/// The fake LLM's chance of a 429 (retried after the 200 ms it asks for).
const RATE_LIMIT: &str = "0.3";
const TENANTS: [&str; 2] = ["acme", "globex"];
const WITHIN: Duration = Duration::from_secs(60);

/// What the producer publishes, and how each task must end.
struct Plan {
    /// `redrive enqueue --file` shaped objects.
    tasks: Vec<Value>,
    /// Task id → the class of its dead letter.
    dead: BTreeMap<String, &'static str>,
    /// The valid `send_followup` tasks: one email each.
    sends: Vec<String>,
    /// Tasks that must complete.
    completed: usize,
}

fn plan() -> Plan {
    let mut tasks = Vec::new();
    let mut dead = BTreeMap::new();
    let mut sends = Vec::new();
    let mut add = |id: String, kind: &str, payload: Value| {
        let tenant = TENANTS[tasks.len() % 2];
        tasks.push(json!({"tenant": tenant, "kind": kind, "task_id": id, "payload": payload}));
    };
    for i in 0..16 {
        add(
            format!("sum-{i}"),
            "summarize_ticket",
            json!({"ticket": i, "text": format!("Ticket {i}: the export button does nothing on big reports")}),
        );
        add(
            format!("send-{i}"),
            "send_followup",
            json!({"to": format!("user{i}@example.com"), "about": format!("ticket {i}")}),
        );
        sends.push(format!("send-{i}"));
    }
    // Invalid for the agent (not for the fleet): permanent, dead-lettered at once.
    for (i, payload) in [json!({"ticket": 1}), json!({"text": 42}), Value::Null]
        .into_iter()
        .enumerate()
    {
        add(format!("bad-sum-{i}"), "summarize_ticket", payload);
        dead.insert(format!("bad-sum-{i}"), "invalid_input");
    }
    add(
        "bad-send-0".into(),
        "send_followup",
        json!({"about": "no one"}),
    );
    dead.insert("bad-send-0".into(), "invalid_input");
    // A kind no [[handlers]] entry matches.
    add(
        "unrouted-0".into(),
        "translate_ticket",
        json!({"text": "hola"}),
    );
    dead.insert("unrouted-0".into(), "no_handler");
    let completed = tasks.len() - dead.len();
    Plan {
        tasks,
        dead,
        sends,
        completed,
    }
}

/// Runs `program args` with `cwd`, the plan's tasks as JSON on stdin; panics unless it exits 0.
fn produce(program: &str, args: &[&str], cwd: &Path, tasks: &[Value]) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        // Nothing written into the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the producer");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(tasks).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the producer failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tasks.len().to_string(),
        "the producer reports every task enqueued"
    );
}

/// The example served by one SDK: its HTTP agent (already listening), the `pool` entry's
/// command and working directory, and its producer.
struct Example<'a> {
    agent: &'a AgentProcess,
    pool_command: Vec<String>,
    pool_cwd: String,
    /// Extra `env` of the pool entry besides OUTBOX and the fake LLM's.
    pool_env: &'a [(&'a str, &'a str)],
    produce: &'a dyn Fn(&TestEnv, &[Value]),
}

/// Runs the plan through one member routing to `ex`; `outbox` is where both agents "send".
async fn run_example(env: &TestEnv, ex: Example<'_>, outbox: &Path) {
    let plan = plan();
    let mut pool_env = vec![
        format!("OUTBOX = {}", toml_str(&outbox.display().to_string())),
        format!("FAKE_LLM_RATE_LIMIT = {}", toml_str(RATE_LIMIT)),
        format!("FAKE_LLM_LATENCY_MS = {}", toml_str("5")),
    ];
    pool_env.extend(
        ex.pool_env
            .iter()
            .map(|(k, v)| format!("{k} = {}", toml_str(v))),
    );
    let config = format!(
        r#"
[[handlers]]
kinds = ["summarize_ticket"]
type = "http"
url = "http://{addr}/"
secrets = [{secret}]
timeout_ms = 10000
max_concurrent = 16

[[handlers]]
kinds = ["send_*"]
type = "pool"
command = {command}
cwd = {cwd}
env = {{ {env} }}
processes = 2
concurrency = 4
max_concurrent = 8
timeout_ms = 10000

[retry]
max_attempts = 20
delays_ms = [50]
poll_interval_ms = 50
"#,
        addr = ex.agent.addr,
        secret = toml_str(SECRET),
        command = toml_list(&ex.pool_command),
        cwd = toml_str(&ex.pool_cwd),
        env = pool_env.join(", "),
    );
    let cfg = env.config_file("handlers.toml", &config);
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_FLEET__HANDLER", ""),
            ("REDRIVE_CONFIG", &cfg),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            // Gauges not set for 3 × this are dropped by the recorder: a series must be kept
            // present by the member however often it is scraped.
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "100"),
        ],
    );
    let metrics = m.metrics_addr();
    (ex.produce)(env, &plan.tasks);

    // Every task ends acked or dead-lettered: lanes, pending and retry schedules empty.
    let broker = env.broker().await;
    eventually(WITHIN, "every task acked or dead-lettered", || async {
        let (_, text) = http_get(&metrics, "/metrics");
        if (metric(&text, "redrive_tasks_completed_total", &[]) as usize) < plan.completed {
            return false;
        }
        let mut dead = 0;
        for t in TENANTS {
            if broker.lane_len(t).await.unwrap() > 0
                || broker.pending_count(t).await.unwrap() > 0
                || !env.scheduled_retries(t).await.is_empty()
            {
                return false;
            }
            dead += env.dead_letters(t).await.len();
        }
        dead >= plan.dead.len()
    })
    .await;
    let (_, text) = http_get(&metrics, "/metrics");
    // The pool's processes gauge is kept present (a gauge idle for 3 × the refresh interval
    // is dropped by the recorder; one late health step may miss a scrape, so a few are read).
    eventually(
        Duration::from_secs(10),
        "redrive_agent_processes{handler=\"1:pool\"} 2 on /metrics",
        || async {
            let (_, text) = http_get(&metrics, "/metrics");
            metric(&text, "redrive_agent_processes", &[("handler", "1:pool")]) == 2.0
        },
    )
    .await;
    assert!(m.stop().success(), "{}", m.log_text());

    // The dead letters are exactly the invalid tasks and the unrouted one.
    let mut dead = BTreeMap::new();
    for t in TENANTS {
        for d in env.dead_letters(t).await {
            let id = d["task_id"].clone();
            assert!(
                dead.insert(id.clone(), d["class"].clone()).is_none(),
                "{id} dead-lettered twice"
            );
            if d["class"] == "invalid_input" {
                assert!(d["error"].contains("payload needs a string"), "{d:?}");
            }
        }
    }
    let expected: BTreeMap<String, String> = plan
        .dead
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    assert_eq!(dead, expected, "member log: {}", m.log_text());
    assert_eq!(
        metric(&text, "redrive_tasks_completed_total", &[]) as usize,
        plan.completed
    );

    // Routed by kind: the HTTP agent ran the summaries, the pool the follow-ups.
    let http = metric(
        &text,
        "redrive_route_attempts_total",
        &[("route", "0:http")],
    );
    let pool = metric(
        &text,
        "redrive_route_attempts_total",
        &[("route", "1:pool")],
    );
    assert!(
        http >= 19.0 && pool >= 17.0,
        "route attempts: http {http}, pool {pool}"
    );
    // Some attempts were rate-limited and retried (with 32 tasks calling the fake LLM at a
    // 30 % chance of a 429, all passing at once has a chance below 1e-4).
    let retried = metric(
        &text,
        "redrive_tasks_retried_total",
        &[("class", "rate_limited")],
    );
    assert!(retried >= 1.0, "no retry happened:\n{text}");
    assert_eq!(
        metric(&text, "redrive_tasks_retried_total", &[]),
        retried,
        "only rate limits are retried"
    );
    let http_429 = metric(
        &text,
        "redrive_http_attempts_total",
        &[("outcome", "rate_limited")],
    );
    let pool_429 = metric(
        &text,
        "redrive_agent_attempts_total",
        &[("outcome", "rate_limited")],
    );
    assert_eq!(http_429 + pool_429, retried, "{text}");
    // The handlers' own series are emitted by the member (registered when they were built).
    assert_eq!(
        metric(&text, "redrive_http_attempts_total", &[("outcome", "ok")]),
        16.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "redrive_agent_attempts_total", &[("outcome", "ok")]),
        16.0
    );
    let recovered = metric(&text, "redrive_tasks_recovered_total", &[]);
    assert!(recovered >= 1.0, "a retried task completed: {recovered}");
    eprintln!(
        "{} tasks: {} completed, {} dead-lettered; {retried} retries ({http_429} over HTTP, {pool_429} in the pool)",
        plan.tasks.len(),
        plan.completed,
        plan.dead.len()
    );

    // Exactly one email per follow-up task: retries never sent twice.
    let sent: Vec<String> = std::fs::read_to_string(outbox)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["task_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut sorted = sent.clone();
    sorted.sort();
    let mut want = plan.sends.clone();
    want.sort();
    assert_eq!(sorted, want, "one line per send_followup task");

    // The signature is required: the agent refuses a request without one, or a wrong one.
    let body = json!({
        "protocol": 1, "task_id": "forged", "tenant": "acme", "kind": "summarize_ticket",
        "attempt": 1, "max_attempts": 3, "payload": {"text": "hi"}, "steps": [], "history": [],
        "deadline": null, "trace_id": null, "schema_version": null, "prompt_version": null,
        "enqueued_at": 1, "first_enqueued_at": 1, "replay_of": null, "extra": {}
    })
    .to_string();
    for headers in [vec![], vec![("Redrive-Signature", "t=1700000000,v1=00ff")]] {
        let (status, reply) = http_post(&ex.agent.addr, "/", &headers, &body);
        assert_eq!(status, 401, "{reply}");
        let reply: Value = serde_json::from_str(reply.trim()).unwrap();
        assert_eq!(reply["status"], "fail");
        assert_eq!(reply["class"], "unauthorized", "{reply}");
    }
}

const PY_PRODUCER: &str = r#"
import json, sys
from redrive import Producer
url, prefix = sys.argv[1], sys.argv[2]
done = Producer(url, key_prefix=prefix).enqueue_many(json.load(sys.stdin))
print(len(done))
"#;

#[tokio::test]
async fn python_sdk_producer_fleet_http_and_pool_agents() {
    let env = TestEnv::new();
    let py = venv_python();
    let cwd = repo().join("examples/python-agent");
    let outbox = env.dir.join("outbox.jsonl");
    let outbox_text = outbox.display().to_string();
    let agent = python_http_agent(
        "agent:agent",
        &cwd,
        SECRET,
        &[
            ("OUTBOX", &outbox_text),
            ("FAKE_LLM_RATE_LIMIT", RATE_LIMIT),
            ("FAKE_LLM_LATENCY_MS", "5"),
        ],
        env.dir.join("python-agent.log"),
    );
    let produce = |env: &TestEnv, tasks: &[Value]| {
        let (url, prefix) = (env.url(), env.prefix.clone());
        produce(&py, &["-c", PY_PRODUCER, &url, &prefix], &cwd, tasks);
    };
    let ex = Example {
        agent: &agent,
        pool_command: [
            py.as_str(),
            "-m",
            "redrive",
            "pool",
            "agent:agent",
            "--concurrency",
            "4",
        ]
        .map(String::from)
        .to_vec(),
        pool_cwd: cwd.display().to_string(),
        pool_env: &[("PYTHONDONTWRITEBYTECODE", "1")],
        produce: &produce,
    };
    run_example(&env, ex, &outbox).await;
}

const NODE_PRODUCER: &str = r#"
import { readFileSync } from "node:fs";
import { Producer } from "@redrive/sdk";
const [url, keyPrefix] = process.argv.slice(1);
const producer = new Producer(url, { keyPrefix });
const done = await producer.enqueueMany(JSON.parse(readFileSync(0, "utf8")));
await producer.close();
console.log(done.length);
"#;

#[tokio::test]
async fn node_sdk_producer_fleet_http_and_pool_agents() {
    let env = TestEnv::new();
    let node = node();
    let cwd = repo().join("examples/node-agent");
    let outbox = env.dir.join("outbox.jsonl");
    let port = free_port();
    let mut cmd = Command::new(&node);
    cmd.arg("agent.mjs")
        .current_dir(&cwd)
        .env("PORT", port.to_string())
        .env("REDRIVE_SECRETS", SECRET)
        .env("OUTBOX", &outbox)
        .env("FAKE_LLM_RATE_LIMIT", RATE_LIMIT)
        .env("FAKE_LLM_LATENCY_MS", "5");
    let agent = AgentProcess::start(cmd, env.dir.join("node-agent.log"), port);
    let produce = |env: &TestEnv, tasks: &[Value]| {
        let (url, prefix) = (env.url(), env.prefix.clone());
        produce(
            &node,
            &["--input-type=module", "-e", NODE_PRODUCER, &url, &prefix],
            &cwd,
            tasks,
        );
    };
    let ex = Example {
        agent: &agent,
        pool_command: vec![node.clone(), "agent.mjs".into(), "--pool".into()],
        pool_cwd: cwd.display().to_string(),
        pool_env: &[("POOL_CONCURRENCY", "4")],
        produce: &produce,
    };
    run_example(&env, ex, &outbox).await;
}
