//! The console in a real browser: Debian's headless chromium, driven by playwright-core from
//! tests/browser/console.test.mjs (a typed Node script), against a real `redrive serve`, a real
//! fleet member and a private redis-server. The script logs in as an admin, filters the dead
//! letters and exports them (a downloaded file of exactly the filtered ones), opens one,
//! replays a tenant's dead letters with a patch through the wizard and watches the job finish,
//! cancels a slow replay and resumes it from its page to its end, opens and closes a breaker,
//! purges a tenant's dead letters with the typed confirmation, looks a task up, is refused
//! without the CSRF token, logs out; then as a tenant-scoped viewer it sees and exports only its
//! tenant, payloads hidden (another tenant's dead letter: 404); on a server with a short session
//! its session ends and the console goes back to the login page. Every page is saved as a
//! screenshot in target/console-screenshots/. Here, afterwards, Redis is checked: the replayed
//! tasks ran and are done, the cancelled job was resumed to its end, the purged tenant holds no
//! dead letter while the others keep theirs, the audit trail names the tokens.
//!
//! Needs `scripts/setup.sh` (chromium, chromium-driver, tests/browser/node_modules): without
//! them the test fails saying so, it never passes silently.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

/// The browser the script drives.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Tokens: name, role, tenants (none: every tenant).
const TOKENS: [(&str, &str, &[&str]); 3] = [
    ("admin", "admin", &[]),
    ("acme-viewer", "viewer", &["acme"]),
    ("acme-ops", "operator", &["acme"]),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (never skips) when what the browser test needs is not installed.
fn require_setup() {
    let missing: Vec<String> = [
        Path::new(CHROMIUM).to_path_buf(),
        root().join("tests/browser/node_modules/playwright-core/package.json"),
    ]
    .into_iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    assert!(
        missing.is_empty(),
        "the console's browser test needs {} — run scripts/setup.sh (it installs Debian's \
         chromium and chromium-driver and runs `npm ci` in tests/browser)",
        missing.join(" and ")
    );
}

/// Makes every token of [`TOKENS`] with `redrive serve token`: (name → token, config entries).
fn make_tokens(env: &TestEnv) -> (HashMap<String, String>, String) {
    let mut tokens = HashMap::new();
    let mut toml = String::new();
    for (name, role, tenants) in TOKENS {
        let mut args = vec!["serve", "token", "--name", name, "--role", role];
        for t in tenants {
            args.extend(["--tenant", t]);
        }
        let (code, out, err) = env.cli(&args, &[]);
        assert_eq!(code, 0, "serve token: {err}");
        let (token, entry) = out.split_once('\n').unwrap();
        tokens.insert(name.to_owned(), token.to_owned());
        toml.push_str(entry);
    }
    (tokens, toml)
}

/// Tasks of `tenant` the demo agent fails as `schema_mismatch` (permanent): dead letters.
fn bad_tasks(tenant: &str, n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            NewTask::new(
                tenant,
                "triage",
                json!({"simulate": "malformed_output", "ticket": i, "customer": format!("{tenant}-c{}", i % 3)}),
            )
            .with_task_id(format!("{tenant}-bad-{i}"))
        })
        .collect()
}

/// A plain-HTTP client (reqwest here is built without a default TLS provider).
fn client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GET `path` of the API with a bearer token.
async fn api_get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    require_setup();
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let (tokens, entries) = make_tokens(&env);
    let config = |extra: &str| {
        format!("[serve]\nlisten = \"127.0.0.1:0\"\nbase_path = \"/redrive\"\n{extra}\n\n{entries}")
    };
    let main_cfg = env.config_file("serve.toml", &config(""));
    let short_cfg = env.config_file(
        "short.toml",
        &config("session_ttl_ms = 1500\nsession_max_age_ms = 1500"),
    );
    let serve = env.serve("console", &main_cfg, &[]);
    let short = env.serve("short", &short_cfg, &[]);
    let base = format!(
        "http://{}/redrive",
        serve.listen_addr("serving the HTTP API")
    );
    let short_base = format!(
        "http://{}/redrive",
        short.listen_addr("serving the HTTP API")
    );

    // Dead letters across three tenants, and one task that succeeds.
    let mut tasks = vec![
        NewTask::new("acme", "triage", json!({"simulate": "ok", "ticket": 99}))
            .with_task_id("acme-ok"),
    ];
    tasks.extend(bad_tasks("acme", 3));
    tasks.push(
        NewTask::new(
            "acme",
            "score",
            json!({"simulate": "malformed_output", "lead": "secret-lead-7"}),
        )
        .with_task_id("acme-score-1"),
    );
    tasks.extend(bad_tasks("globex", 12));
    tasks.extend(bad_tasks("initech", 2));
    tasks.extend(bad_tasks("umbrella", 3));
    env.enqueue_tasks(tasks).await;
    for (t, n) in [("acme", 4), ("globex", 12), ("initech", 2), ("umbrella", 3)] {
        eventually(
            Duration::from_secs(60),
            "the dead letters are in",
            || async { env.dead_letters(t).await.len() == n },
        )
        .await;
    }

    let shots = root().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(root().join("tests/browser/console.test.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("CONSOLE_URL", &base)
        .env("SHORT_URL", &short_base)
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOTS", &shots)
        .env("ADMIN_TOKEN", &tokens["admin"])
        .env("ACME_VIEWER_TOKEN", &tokens["acme-viewer"])
        .env("ACME_OPS_TOKEN", &tokens["acme-ops"])
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the browser script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- serve log\n{}",
        out.status,
        serve.log_text()
    );
    // What the script reports: one JSON object per line; the last one holds its findings.
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["done"] == true)
        })
        .unwrap_or_else(|| panic!("no report from the script:\n{stdout}\n{stderr}"));
    let steps: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["step"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "login",
        "overview",
        "filter",
        "export",
        "dead-letter",
        "review",
        "archive",
        "replay",
        "cancel",
        "resume",
        "breaker",
        "purge",
        "task",
        "audit",
        "csrf",
        "logout",
        "scoped",
        "scoped-export",
        "scoped-operator",
        "expired",
    ] {
        assert!(
            steps.iter().any(|s| s == want),
            "step {want} did not pass: {steps:?}"
        );
    }

    // Redis afterwards: the replay ran for real.
    let http = client();
    let admin = &tokens["admin"];
    let replay_id = report["replay_command"].as_str().unwrap().to_owned();
    let status = api_get(
        &http,
        &base,
        admin,
        &format!("/api/v1/commands/{replay_id}"),
    )
    .await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    assert_eq!(status["progress"]["replayed"], 3, "{status}");
    // acme's triage dead letters were replayed; its scoring one was resolved by acme's operator.
    assert!(env.dead_letters("acme").await.is_empty(), "acme replayed");
    for i in 0..3 {
        let path = format!("/api/v1/tenants/acme/tasks/acme-bad-{i}");
        eventually(
            Duration::from_secs(30),
            "the replayed task is done",
            || async { api_get(&http, &base, admin, &path).await["state"] == "done" },
        )
        .await;
    }
    // The cancelled command stays cancelled; its job, resumed by another command, replayed
    // the rest of globex's dead letters.
    let cancel_id = report["cancelled_command"].as_str().unwrap().to_owned();
    let status = api_get(
        &http,
        &base,
        admin,
        &format!("/api/v1/commands/{cancel_id}"),
    )
    .await;
    assert_eq!(status["result"]["outcome"], "cancelled", "{status}");
    let before = status["result"]["details"]["replayed"].as_u64().unwrap();
    assert!((1..12).contains(&before), "cancelled mid-way: {status}");
    assert_eq!(status["progress"]["state"], "done", "{status}");
    let resumed_id = report["resumed_command"].as_str().unwrap().to_owned();
    let status = api_get(
        &http,
        &base,
        admin,
        &format!("/api/v1/commands/{resumed_id}"),
    )
    .await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    assert_eq!(status["progress"]["job"], json!(cancel_id), "{status}");
    assert_eq!(status["progress"]["replayed"], 12, "{status}");
    assert!(
        env.dead_letters("globex").await.is_empty(),
        "globex replayed"
    );
    // The purge deleted umbrella's dead letters and nobody else's.
    assert!(
        env.dead_letters("umbrella").await.is_empty(),
        "umbrella purged"
    );
    let purge_id = report["purge_command"].as_str().unwrap().to_owned();
    let status = api_get(&http, &base, admin, &format!("/api/v1/commands/{purge_id}")).await;
    assert_eq!(status["result"]["details"]["purged"], 3, "{status}");
    // The breaker was opened and closed again.
    let b = api_get(&http, &base, admin, "/api/v1/tenants/initech/breaker").await;
    assert_eq!(b["breaker"]["state"], "closed", "{b}");
    let reasons: Vec<&str> = b["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["detail"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("incident 7")),
        "{reasons:?}"
    );
    // The audit trail names the token of each change; the refused CSRF attempt changed nothing.
    let audit = api_get(&http, &base, admin, "/api/v1/audit?limit=100").await;
    let entries = audit["entries"].as_array().unwrap();
    let by = |command: &str| -> Vec<(&str, &str)> {
        entries
            .iter()
            .filter(|e| e["command"] == command)
            .map(|e| {
                (
                    e["operator"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                )
            })
            .collect()
    };
    assert!(
        by("replay").contains(&("admin", "schema fixed, replaying with the new field")),
        "{audit}"
    );
    assert!(
        by("replay").contains(&("admin", "patch checked, going on")),
        "the resume: {audit}"
    );
    assert!(
        by("cancel").iter().all(|(who, _)| *who == "admin"),
        "{audit}"
    );
    assert_eq!(
        by("purge"),
        vec![("admin", "test tenant retired")],
        "{audit}"
    );
    assert_eq!(by("breaker").len(), 2, "{audit}");
    assert_eq!(
        by("resolve"),
        vec![("acme-ops", "handled by acme support")],
        "the CSRF-less resolve never ran: {audit}"
    );
    assert_eq!(
        env.dead_letters("initech").await.len(),
        2,
        "nothing resolved"
    );
    // The review made in the browser is in Redis: assigned to ana, noted, audited.
    let reviewed = report["reviewed"].as_str().unwrap().to_owned();
    let (rt, rid) = reviewed.split_once('/').unwrap();
    let d = api_get(
        &http,
        &base,
        admin,
        &format!("/api/v1/tenants/{rt}/dead-letters/{rid}"),
    )
    .await;
    assert_eq!(d["review"]["state"], "in_review", "{d}");
    assert_eq!(d["review"]["assignee"], "ana", "{d}");
    let log: Vec<&str> = d["review"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["act"].as_str())
        .collect();
    assert_eq!(log, ["assign", "note"], "{d}");
    assert_eq!(by("assign"), vec![("admin", "on call")], "{audit}");
    assert_eq!(by("note"), vec![("admin", "note")], "{audit}");
    // Sessions live in Redis under their hash only; the logged-out one is gone.
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{@admin}}:session:*", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    for k in &keys {
        let hex = k.rsplit(':').next().unwrap();
        assert_eq!(hex.len(), 64, "{k}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
    }
    let logs = format!("{}{}", serve.log_text(), short.log_text());
    for t in tokens.values() {
        assert!(!logs.contains(t.as_str()), "a token is in the server's log");
    }
    assert!(
        logs.contains("console login refused"),
        "the bad token was logged"
    );
    let pngs = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(pngs >= 14, "screenshots: {pngs}");
}
