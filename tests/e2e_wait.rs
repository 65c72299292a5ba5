//! Waiting for a task's result end to end (issue 14): a real member runs a Python SDK agent
//! (tests/agents/sdk_agent.py) as a pool; the task is enqueued with the Python SDK, enqueued
//! again with the Node SDK (a duplicate), and three waiters block at once — `python -m redrive
//! wait`, the Node SDK's `redrive-sdk wait` and `redrive task wait` (the Rust library's
//! `Producer::wait`) — while the member running it is SIGKILLed and another takes the task
//! over. Each returns the result when the task is done; failures and timeouts end each the way
//! its exit code says. Real redis-server, members, agent and waiter processes; loopback only.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{node, python_pool_command, repo, toml_str, venv_python};
use common::{eventually, TestEnv};
use serde_json::Value;

const TENANT: &str = "acme";
const WITHIN: Duration = Duration::from_secs(60);

/// A `pool` entry serving `answer` and `refuse` with the SDK (one process).
fn config(env: &TestEnv) -> String {
    let command = python_pool_command("sdk_agent:agent");
    env.config_file(
        "wait.toml",
        &format!(
            "[[handlers]]\nkinds = [\"answer\", \"refuse\"]\ntype = \"pool\"\ncommand = {command}\n\
             cwd = {}\nenv = {{ CK_DIR = {}, PYTHONDONTWRITEBYTECODE = \"1\" }}\nprocesses = 1\n\
             timeout_ms = 40000\n",
            toml_str(&repo().join("tests/agents").display().to_string()),
            toml_str(&env.dir.display().to_string()),
        ),
    )
}

fn member_env(cfg: &str) -> Vec<(&str, &str)> {
    vec![
        ("REDRIVE_FLEET__HANDLER", ""),
        ("REDRIVE_CONFIG", cfg),
        // Entries of a dead member are taken over after 1 s idle.
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "1000"),
        ("REDRIVE_RECLAIM__INTERVAL_MS", "100"),
    ]
}

/// `python -m redrive <args>` against the env's Redis and prefix.
fn python(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(venv_python());
    cmd.args(["-m", "redrive"])
        .args(args)
        .args(["--redis-url", &env.url(), "--key-prefix", &env.prefix])
        .current_dir(repo().join("sdk/python"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The Node SDK's `redrive-sdk <args>` against the env's Redis and prefix.
fn node_sdk(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(node());
    cmd.arg(repo().join("sdk/node/dist/cli.js"))
        .args(args)
        .args(["--redis-url", &env.url(), "--key-prefix", &env.prefix])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `redrive <args>` against the env's Redis and prefix.
fn redrive(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDRIVE_REDIS_URL", env.url())
        .env("REDRIVE_REDIS__KEY_PREFIX", &env.prefix)
        .env("REDRIVE_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end: (exit code, the JSON it printed, stderr).
fn run(mut cmd: Command) -> (i32, Value, String) {
    let out = cmd.output().expect("run a waiter");
    finish(out)
}

fn finish(out: std::process::Output) -> (i32, Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // One JSON document: a line (the SDKs) or pretty-printed (redrive --json).
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// A waiter started now, collected later (each is bounded by its own timeout).
struct Waiter {
    what: &'static str,
    child: Child,
}

impl Waiter {
    fn start(what: &'static str, mut cmd: Command) -> Waiter {
        Waiter {
            what,
            child: cmd.spawn().expect("spawn a waiter"),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll a waiter").is_none()
    }

    fn end(self) -> (&'static str, i32, Value, String) {
        let (code, json, stderr) = finish(self.child.wait_with_output().expect("a waiter's end"));
        (self.what, code, json, stderr)
    }
}

fn waiters(env: &TestEnv, task_id: &str, timeout_s: u64) -> Vec<Waiter> {
    let secs = timeout_s.to_string();
    let ms = (timeout_s * 1000).to_string();
    let address = format!("{TENANT}/{task_id}");
    vec![
        Waiter::start(
            "python",
            python(env, &["wait", TENANT, task_id, "--timeout", &secs]),
        ),
        Waiter::start(
            "node",
            node_sdk(env, &["wait", TENANT, task_id, "--timeout-ms", &ms]),
        ),
        Waiter::start(
            "rust",
            redrive(
                env,
                &["task", "wait", &address, "--timeout", &secs, "--json"],
            ),
        ),
    ]
}

/// Waits (bounded) for `path` to exist.
async fn appears(path: &Path) {
    eventually(WITHIN, &format!("{} to appear", path.display()), || async {
        path.exists()
    })
    .await;
}

#[tokio::test]
async fn three_languages_wait_for_one_result_across_a_member_killed_mid_task() {
    let env = TestEnv::new();
    let cfg = config(&env);

    // Enqueued with the Python SDK; the Node SDK's enqueue of the same id is a duplicate.
    let (code, sent, err) = run(python(
        &env,
        &[
            "enqueue",
            TENANT,
            "answer",
            "{\"q\": 1}",
            "--task-id",
            "w-1",
        ],
    ));
    assert_eq!(code, 0, "python enqueue: {sent} {err}");
    let (code, dup, err) = run(node_sdk(
        &env,
        &[
            "enqueue",
            TENANT,
            "answer",
            "--payload",
            "{\"q\": 2}",
            "--task-id",
            "w-1",
        ],
    ));
    assert_eq!(code, 0, "node enqueue: {dup} {err}");
    assert_eq!(dup["duplicate"]["state"], "queued", "{dup}");
    assert_eq!(env.lane_entries(TENANT).await.len(), 1);

    // Three waiters block before anything runs.
    let mut waiting = waiters(&env, "w-1", 90);
    let mut m1 = env.member("m1", &member_env(&cfg));
    appears(&env.dir.join("w-1.started")).await;
    let producer = env.producer().await;
    let record = producer.task(TENANT, "w-1").await.unwrap().unwrap();
    assert_eq!(record.fields["state"], "running", "{record:?}");
    assert_eq!(record.fields["member"], "m1");

    // The member dies mid-task; the waiters keep waiting; another member takes it over.
    m1.kill9();
    // The task stays unfinished for a while (its entry idles, pending at the dead member):
    // every waiter is still waiting then.
    let lane = format!("{}:{{{TENANT}}}:lane", env.prefix);
    eventually(WITHIN, "the dead member's entry to idle 500 ms", || {
        let lane = &lane;
        let env = &env;
        async move {
            let mut raw = env.raw().await;
            let p: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(lane)
                .arg("redrive")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut raw)
                .await
                .unwrap();
            p.iter()
                .any(|(_, who, idle, _)| who == "m1" && *idle >= 500)
        }
    })
    .await;
    for w in &mut waiting {
        assert!(
            w.running(),
            "{} stopped waiting when the member died",
            w.what
        );
    }
    let mut m2 = env.member("m2", &member_env(&cfg));
    for w in waiting {
        let (what, code, rec, err) = w.end();
        assert_eq!(code, 0, "{what}: {rec} {err}");
        assert_eq!(rec["state"], "done", "{what}: {rec}");
        assert_eq!(rec["output"]["answer"], 42, "{what}: {rec}");
        assert_eq!(rec["member"], "m2", "{what}: {rec}");
        // One shape in every language: the two runs, the killed one without an end.
        assert_eq!(rec["task_id"], "w-1", "{what}: {rec}");
        assert_eq!(rec["run_count"], 2, "{what}: {rec}");
        let runs = rec["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {rec}"));
        assert_eq!(runs.len(), 2, "{what}: {rec}");
        assert_eq!(runs[0]["member"], "m1", "{what}: {rec}");
        assert_eq!(runs[0]["end"], Value::Null, "{what}: {rec}");
        assert_eq!(runs[1]["outcome"], "ok", "{what}: {rec}");
        assert_eq!(rec["output_truncated"], false, "{what}: {rec}");
    }
    let record = producer.task(TENANT, "w-1").await.unwrap().unwrap();
    assert_eq!(
        record.number("runs"),
        Some(1),
        "the history holds the killed run (the done one is the main fields): {record:?}"
    );

    // A finished task's wait returns at once; a second enqueue is a duplicate of a done task.
    let started = Instant::now();
    let (code, rec, err) = run(python(&env, &["wait", TENANT, "w-1", "--timeout", "30"]));
    assert_eq!(
        (code, &rec["state"]),
        (0, &Value::from("done")),
        "{rec} {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a finished task waits"
    );
    let (code, dup, _) = run(python(
        &env,
        &["enqueue", TENANT, "answer", "{}", "--task-id", "w-1"],
    ));
    assert_eq!(
        (code, &dup["duplicate"]["state"]),
        (0, &Value::from("done")),
        "{dup}"
    );
    assert!(m2.stop().success());
}

#[tokio::test]
async fn waits_end_on_a_failure_with_its_class_and_time_out_with_the_state() {
    let env = TestEnv::new();
    let cfg = config(&env);
    let producer = env.producer().await;
    producer
        .enqueue(
            redrive::NewTask::new(TENANT, "refuse", serde_json::json!({})).with_task_id("w-bad"),
        )
        .await
        .unwrap();
    producer
        .enqueue(
            redrive::NewTask::new(TENANT, "answer", serde_json::json!({})).with_task_id("w-late"),
        )
        .await
        .unwrap();

    // No member yet: every wait times out, saying the task is queued.
    for (w, timeout_code) in waiters(&env, "w-late", 1).into_iter().zip([2, 2, 75]) {
        let (what, code, rec, err) = w.end();
        assert_eq!(code, timeout_code, "{what}: {rec} {err}");
        assert_eq!(rec["state"], "queued", "{what}: {rec}");
    }

    // A permanent failure ends every wait with exit 1 and the dead letter's class.
    let waiting = waiters(&env, "w-bad", 60);
    std::fs::write(env.dir.join("w-late.release"), "").unwrap();
    let mut m = env.member("m1", &member_env(&cfg));
    for w in waiting {
        let (what, code, rec, err) = w.end();
        assert_eq!(code, 1, "{what}: {rec} {err}");
        assert_eq!(rec["state"], "dead_lettered", "{what}: {rec}");
        assert_eq!(rec["class"], "invalid_input", "{what}: {rec}");
        assert!(
            rec["dlq"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {rec}"
        );
    }
    assert!(m.stop().success());
}
