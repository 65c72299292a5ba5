//! examples/custom_handler.rs, the embedder's fleet member, run as a process against a private
//! redis-server: its `summarise` handler is accepted by name, runs every task (one printed
//! summary each), its /metrics counts them, and SIGTERM stops it cleanly.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, http_get, TestEnv};
use redrive::NewTask;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

/// The example, built (or found up to date) by cargo into `target/<profile>/examples/`, next
/// to the test binaries: `cargo nextest run --test example` does not build examples itself,
/// and a binary left from an earlier build may be stale.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            "custom_handler",
            "--profile",
        ])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .status()
        .expect("run cargo build --example custom_handler");
    assert!(status.success(), "building the example failed");
    profile_dir.join("examples").join("custom_handler")
}

/// Starts the example with `handler` as fleet.handler; standard output and error go to files
/// in the env's scratch directory.
fn start(env: &TestEnv, handler: &str) -> (Child, PathBuf, PathBuf) {
    let out = env.dir.join(format!("example-{handler}.out"));
    let err = env.dir.join(format!("example-{handler}.err"));
    let child = Command::new(example_binary())
        .env_remove("RUST_LOG")
        .env_remove("REDRIVE_CONFIG")
        .env("REDRIVE_REDIS_URL", env.url())
        .env("REDRIVE_REDIS__KEY_PREFIX", &env.prefix)
        .env("REDRIVE_FLEET__HANDLER", handler)
        .env("REDRIVE_FLEET__MEMBER_ID", "example-1")
        .env("REDRIVE_FLEET__BLOCK_MS", "200")
        .env("REDRIVE_FLEET__DISCOVERY_INTERVAL_MS", "100")
        .env("REDRIVE_METRICS__LISTEN", "127.0.0.1:0")
        .env("REDRIVE_LOG__LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start the example");
    (child, out, err)
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The endpoint's address, from the log line the member writes once it listens.
fn metrics_addr(log: &PathBuf) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let text = read(log);
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .and_then(|l| l.split("listen=").nth(1))
            .and_then(|r| r.split_whitespace().next())
        {
            return addr.trim_matches('"').to_owned();
        }
        assert!(Instant::now() < deadline, "never listened: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            return status;
        }
        assert!(Instant::now() < deadline, "the example did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_custom_handler_named_in_config_runs_tasks_serves_metrics_and_stops_cleanly() {
    let env = TestEnv::new();
    let (mut child, out, err) = start(&env, "summarise");
    let addr = metrics_addr(&err);

    let tasks = (0..5)
        .map(|i| {
            NewTask::new(
                "acme",
                "summary",
                json!({"text": format!("page {i} of a long report that nobody will read to the end")}),
            )
            .with_task_id(format!("doc-{i}"))
        })
        .collect();
    env.enqueue_tasks(tasks).await;

    eventually(LONG, "five summaries printed", || async {
        read(&out)
            .lines()
            .filter(|l| l.starts_with("summarised acme doc-"))
            .count()
            == 5
    })
    .await;
    env.wait_drained(&["acme"], LONG).await;
    let printed = read(&out);
    assert!(
        printed.contains("summarised acme doc-3: page 3 of a long report that nobody"),
        "{printed}"
    );
    assert!(env.dead_letters("acme").await.is_empty());

    eventually(LONG, "/metrics counts the five", || async {
        let (status, body) = http_get(&addr, "/metrics");
        status == 200
            && body.lines().any(|l| {
                l.starts_with("redrive_tasks_completed_total{")
                    && l.contains("tenant=\"acme\"")
                    && l.ends_with(" 5")
            })
    })
    .await;
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(
        killed.map(|s| s.success()).unwrap_or(false),
        "kill -TERM {pid}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stderr: {}", read(&err));
}

#[test]
fn a_handler_nobody_registered_is_refused_with_exit_78() {
    let env = TestEnv::new();
    let (mut child, _out, err) = start(&env, "gpt");
    let status = wait_exit(&mut child, LONG);
    let text = read(&err);
    assert_eq!(status.code(), Some(78), "{text}");
    assert!(
        text.contains("fleet.handler = 'gpt' is unknown: the handlers are summarise"),
        "{text}"
    );
}
