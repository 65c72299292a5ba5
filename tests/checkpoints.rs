//! Step checkpoints end to end (PROTOCOL.md, "Steps and checkpoints"), with a real member, a
//! real redis-server and a test agent on the Python SDK (tests/agents/sdk_agent.py) served
//! by the SDK as a pool and over HTTP: a step completed before the agent process crashes, or
//! before its member is SIGKILLed, is handed to the next attempt and not run again; a crash
//! inside a started side-effecting step is a `partial_execution` dead letter; its replay gets
//! the completed steps back (not the open one) and runs only what is left.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::agents::{metric, python_http_agent, python_pool_command, repo, toml_str};
use common::{eventually, http_get, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

const TENANT: &str = "acme";
const SECRET: &str = "ck-secret";
const WITHIN: Duration = Duration::from_secs(30);

/// Fast retries: a crashed attempt is tried again within ~100 ms.
const FAST_RETRY: &str = "\n[retry]\ndelays_ms = [50]\npoll_interval_ms = 50\n";

fn agents_dir() -> String {
    repo().join("tests/agents").display().to_string()
}

/// A `pool` entry serving `crash_*` with the SDK (one process).
fn pool_entry(ck_dir: &Path) -> String {
    let command = python_pool_command("sdk_agent:agent");
    format!(
        "[[handlers]]\nkinds = [\"crash_*\"]\ntype = \"pool\"\ncommand = {command}\ncwd = {}\n\
         env = {{ CK_DIR = {}, PYTHONDONTWRITEBYTECODE = \"1\" }}\nprocesses = 1\ntimeout_ms = 10000\n",
        toml_str(&agents_dir()),
        toml_str(&ck_dir.display().to_string()),
    )
}

/// Lines of `<dir>/<name>` (none when it does not exist).
fn lines(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The agent's result lines for `task_id` (one per attempt that returned).
fn results(dir: &Path, task_id: &str) -> Vec<Value> {
    lines(dir, "results.jsonl")
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["task_id"] == task_id)
        .collect()
}

/// The steps hashes of `TENANT`'s entries: key → (step name → record text).
async fn steps_hashes(env: &TestEnv) -> HashMap<String, HashMap<String, String>> {
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{{TENANT}}}:steps:*", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut out = HashMap::new();
    for k in keys {
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&k)
            .query_async(&mut raw)
            .await
            .unwrap();
        out.insert(k, h);
    }
    out
}

/// Waits until the task ran to a result line, then until nothing of `TENANT` is queued,
/// pending or scheduled; returns the result.
async fn finished(env: &TestEnv, dir: &Path, task_id: &str) -> Value {
    eventually(WITHIN, &format!("{task_id} returned"), || async {
        !results(dir, task_id).is_empty()
    })
    .await;
    env.wait_drained(&[TENANT], WITHIN).await;
    eventually(WITHIN, "no retry scheduled", || async {
        env.scheduled_retries(TENANT).await.is_empty()
    })
    .await;
    let mut r = results(dir, task_id);
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

fn member_env<'a>(cfg: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("REDRIVE_FLEET__HANDLER", ""), ("REDRIVE_CONFIG", cfg)];
    v.extend_from_slice(extra);
    v
}

#[tokio::test]
async fn a_step_done_before_the_agent_process_crashed_is_not_run_again() {
    let env = TestEnv::new();
    let dir = env.dir.clone();
    let cfg = env.config_file("ck.toml", &(pool_entry(&dir) + FAST_RETRY));
    let mut m = env.member("m1", &member_env(&cfg, &[]));
    env.enqueue_tasks(vec![
        NewTask::new(TENANT, "crash_after_step", json!({})).with_task_id("ck-a")
    ])
    .await;
    let result = finished(&env, &dir, "ck-a").await;
    assert!(m.stop().success());

    // Step one ran once, in attempt 1; the process then died (agent_crashed, retried); attempt
    // 2 received step one with its output and the SDK returned that instead of running it.
    assert_eq!(lines(&dir, "ck-a.count"), ["1"], "step one ran once");
    assert_eq!(result["attempt"], 2, "{result}");
    assert_eq!(result["history"], json!(["agent_crashed"]), "{result}");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{result}");
    assert_eq!(steps[0]["name"], "one");
    assert_eq!(steps[0]["attempt"], 1);
    assert_eq!(steps[0]["output"]["value"], "one-ck-a");
    assert_eq!(result["one"], steps[0]["output"], "the stored output");
    assert!(env.dead_letters(TENANT).await.is_empty());
    assert!(steps_hashes(&env).await.is_empty(), "no steps hash left");
}

#[tokio::test]
async fn a_step_done_before_the_member_was_sigkilled_reaches_the_member_that_takes_over() {
    let env = TestEnv::new();
    let dir = env.dir.clone();
    let ck_dir = dir.display().to_string();
    let agent = python_http_agent(
        "sdk_agent:agent",
        Path::new(&agents_dir()),
        SECRET,
        &[("CK_DIR", &ck_dir)],
        dir.join("agent.log"),
    );
    let cfg = env.config_file(
        "ck.toml",
        &format!(
            "[[handlers]]\nkinds = [\"block_after_step\"]\ntype = \"http\"\nurl = \"http://{}/\"\n\
             secret = {}\ntimeout_ms = 20000\n{FAST_RETRY}",
            agent.addr,
            toml_str(SECRET)
        ),
    );
    // Entries of a dead member are taken over after 1 s idle.
    let fast_reclaim = [
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "100"),
    ];
    let mut m1 = env.member("m1", &member_env(&cfg, &fast_reclaim));
    env.enqueue_tasks(vec![
        NewTask::new(TENANT, "block_after_step", json!({})).with_task_id("ck-b")
    ])
    .await;

    // The agent completed step one and now blocks; the step is in Redis as it arrived.
    let deadline = std::time::Instant::now() + WITHIN;
    let recorded = loop {
        let found = steps_hashes(&env)
            .await
            .into_values()
            .find_map(|mut h| h.remove("one"));
        if let Some(r) = found {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "step one not recorded in Redis: {}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut parts = recorded.splitn(3, ':');
    let (_seq, state, json_text) = (parts.next(), parts.next(), parts.next().unwrap());
    assert_eq!(state, Some("d"), "a done record: {recorded}");
    let step: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(step["output"]["value"], "one-ck-b");
    m1.kill9();

    let m2_env = member_env(
        &cfg,
        &[
            fast_reclaim[0],
            fast_reclaim[1],
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
        ],
    );
    let mut m2 = env.member("m2", &m2_env);
    let metrics = m2.metrics_addr();
    let result = finished(&env, &dir, "ck-b").await;
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(m2.stop().success());
    std::fs::write(dir.join("ck-b.release"), "").unwrap();

    assert!(
        metric(&text, "redrive_reclaimed_total", &[]) >= 1.0,
        "m2 took the entry over"
    );
    assert_eq!(lines(&dir, "ck-b.count").len(), 1, "step one ran once");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{result}");
    assert_eq!(steps[0]["name"], "one");
    assert_eq!(steps[0]["output"], step["output"], "as recorded");
    assert_eq!(
        result["one"], step["output"],
        "the stored output, not a new run"
    );
    assert!(env.dead_letters(TENANT).await.is_empty());
    assert!(steps_hashes(&env).await.is_empty(), "no steps hash left");
    drop(agent);
}

#[tokio::test]
async fn a_crash_inside_a_side_effect_is_partial_execution_and_its_replay_gets_the_completed_steps()
{
    let env = TestEnv::new();
    let dir = env.dir.clone();
    let cfg = env.config_file("ck.toml", &(pool_entry(&dir) + FAST_RETRY));
    let mut m = env.member("m1", &member_env(&cfg, &[]));
    env.enqueue_tasks(vec![NewTask::new(
        TENANT,
        "crash_in_side_effect",
        json!({}),
    )
    .with_task_id("ck-c")])
        .await;
    eventually(WITHIN, "a dead letter", || async {
        !env.dead_letters(TENANT).await.is_empty()
    })
    .await;
    env.wait_drained(&[TENANT], WITHIN).await;

    // Never retried blindly: dead-lettered for review, naming the open step.
    let dead = env.dead_letters(TENANT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d["class"], "partial_execution", "{d:?}");
    assert_eq!(d["failed_step"], "send", "{d:?}");
    let steps: Value = serde_json::from_str(&d["steps"]).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 2, "{d:?}");
    assert_eq!(
        (&steps[0]["name"], &steps[0]["done"]),
        (&json!("one"), &Value::Null)
    );
    let one = steps[0]["output"].clone();
    assert_eq!(one["value"], "one-ck-c");
    assert_eq!(steps[1]["name"], "send");
    assert_eq!(steps[1]["side_effect"], true);
    assert_eq!(steps[1]["done"], false, "started, never done");
    assert_eq!(lines(&dir, "ck-c.count"), ["1"]);
    assert!(lines(&dir, "ck-c.sent").is_empty(), "nothing sent");

    // An operator who checked that nothing was sent replays it through the fleet.
    let (code, out, err) = env.cli(&["dlq", "list", "--json", "--tenant", TENANT], &[]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let id = list["entries"][0]["id"].as_str().unwrap().to_owned();
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            &id,
            "--force",
            "--reason",
            "checked: not sent",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    let result = finished(&env, &dir, "ck-c").await;
    assert!(m.stop().success());

    // The replay received step one (not the open send), did not run it again, and sent once.
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "only the completed step: {result}");
    assert_eq!(steps[0]["name"], "one");
    assert_eq!(steps[0]["output"], one);
    assert_eq!(result["one"], one, "the stored output");
    assert_eq!(result["replay_of"], id.split_once('/').unwrap().1);
    assert_eq!(result["sent"], json!({"message_id": "m-ck-c"}));
    assert_eq!(lines(&dir, "ck-c.count"), ["1"], "step one ran once in all");
    assert_eq!(lines(&dir, "ck-c.sent").len(), 1, "sent once");
    assert!(env.dead_letters(TENANT).await.is_empty());
    assert!(steps_hashes(&env).await.is_empty(), "no steps hash left");
}
