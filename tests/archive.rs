//! The dead-letter archive against real components: fleet members (`redrive run`), a private
//! redis-server, and a real S3-compatible HTTP server started here on a free loopback port as
//! a child process — s3rver (npm, `tests/s3/`, installed by `scripts/setup.sh`), which keeps its
//! objects as files in a directory, so a SIGKILLed server restarted on the same directory still
//! has what it confirmed. The archive is read back through `redrive dlq archive list|show|
//! restore`, the way an operator reads it.
//!
//! Every test ends by checking the invariant: every task_id is in Redis (its dead-letter stream)
//! or in the archive, exactly once in all.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, http_get, TestEnv};
use redrive::testkit::BrokerExt;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const BUCKET: &str = "dead-letters";
/// s3rver's built-in credentials.
const KEY_ID: &str = "S3RVER";
const SECRET: &str = "S3RVER";

/// An s3rver process serving `BUCKET` from a directory on a fixed loopback port.
struct S3Server {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl S3Server {
    fn bin() -> PathBuf {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/node_modules/.bin/s3rver");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh (it installs tests/s3's s3rver with npm ci)",
            bin.display()
        );
        bin
    }

    /// Starts a server on a free port, keeping its objects in `dir`.
    fn start(dir: &Path) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = S3Server {
            child: None,
            dir: dir.to_owned(),
            port,
            log: dir.with_extension("log"),
        };
        s.restart();
        s
    }

    /// (Re)starts the server on its port and directory; waits until it answers.
    fn restart(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(Self::bin())
            .args(["-d", &self.dir.to_string_lossy(), "-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "--configure-bucket", BUCKET])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3rver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3rver did not listen on {} within 30 s: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the server dies mid-request.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The member and CLI settings that archive into this server's bucket.
    fn vars(&self) -> Vec<(String, String)> {
        [
            ("REDRIVE_ARCHIVE__URL", format!("s3://{BUCKET}/prod")),
            ("REDRIVE_ARCHIVE__ENDPOINT", self.endpoint()),
            ("REDRIVE_ARCHIVE__ALLOW_HTTP", "true".into()),
            ("REDRIVE_ARCHIVE__ACCESS_KEY_ID", KEY_ID.into()),
            (
                "REDRIVE_ARCHIVE__SECRET_ACCESS_KEY_ENV",
                "TEST_S3_SECRET".into(),
            ),
            ("TEST_S3_SECRET", SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A member's settings: a small cap, a fast archiver, no breaker (every task must reach the dead
/// letters), plus `more`.
fn member_vars(extra: &[(String, String)], more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
        ("REDRIVE_ARCHIVE__INTERVAL_MS", "100"),
        ("REDRIVE_ARCHIVE__TIMEOUT_MS", "1000"),
        ("REDRIVE_ARCHIVE__LEASE_MS", "3000"),
        ("REDRIVE_ARCHIVE__BATCH", "25"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    v.extend(extra.iter().cloned());
    v.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Tasks that fail permanently at once (straight to the dead letters), each with a payload that
/// round-trips only byte for byte (a float's trailing zero, escapes, non-ASCII).
async fn failing(env: &TestEnv, tenant: &str, from: usize, n: usize) -> Vec<String> {
    let tasks: Vec<redrive::NewTask> = (from..from + n)
        .map(|i| {
            redrive::NewTask::new(
                tenant,
                "triage",
                json!({"simulate": "malformed_output", "work_ms": 0, "i": i, "note": "café ☃ \"q\""}),
            )
            .with_task_id(format!("{tenant}-{i}"))
        })
        .collect();
    env.enqueue_tasks(tasks).await;
    (from..from + n).map(|i| format!("{tenant}-{i}")).collect()
}

/// `redrive dlq archive list --tenant T --json` with `vars`.
fn archive_list(env: &TestEnv, tenant: &str, vars: &[(String, String)]) -> Value {
    let (code, out, err) = env.cli(
        &[
            "dlq", "archive", "list", "--tenant", tenant, "--limit", "100000", "--json",
        ],
        &refs(vars),
    );
    assert_eq!(code, 0, "dlq archive list: {out} {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Checks the invariant: each of `tasks` is in Redis or in the archive, exactly once in all;
/// and no archived dead-letter id is in two places. Returns (in Redis, archived).
async fn nothing_lost(
    env: &TestEnv,
    tenant: &str,
    tasks: &[String],
    vars: &[(String, String)],
) -> (usize, usize) {
    let mut seen: HashMap<String, Vec<&'static str>> = HashMap::new();
    for dl in env.dead_letters(tenant).await {
        seen.entry(dl["task_id"].clone()).or_default().push("redis");
    }
    let list = archive_list(env, tenant, vars);
    let entries = list["entries"].as_array().unwrap();
    let mut ids = HashMap::new();
    for e in entries {
        let t = e["task_id"].as_str().unwrap().to_owned();
        seen.entry(t).or_default().push("archive");
        *ids.entry(e["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "archived twice: {dup:?}");
    for t in tasks {
        assert_eq!(
            seen.get(t).map(Vec::len),
            Some(1),
            "{t} must be in redis or the archive exactly once: {:?}",
            seen.get(t)
        );
    }
    assert_eq!(seen.len(), tasks.len(), "nothing else: {seen:?}");
    let in_redis = seen.values().filter(|v| v[0] == "redis").count();
    (in_redis, entries.len())
}

/// The batch a member recorded for `tenant` (object, ids), if any.
async fn recorded_batch(env: &TestEnv, tenant: &str) -> Option<(String, Vec<String>)> {
    let mut raw = env.raw().await;
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:{{{tenant}}}:archive:batch", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    let object = h.get("object")?.clone();
    let ids = h.get("ids")?.split(',').map(str::to_owned).collect();
    Some((object, ids))
}

/// The sum of a metric family's samples in a Prometheus text body.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_cap_under_load_archives_before_it_removes_and_nothing_is_lost() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env.dir.join("s3"));
    let vars = member_vars(
        &s3.vars(),
        &[
            ("REDRIVE_DEAD_LETTER__MAX_LEN", "50"),
            ("REDRIVE_DEAD_LETTER__HARD_MAX_LEN", "100000"),
        ],
    );
    let broker = env.broker().await;
    let mut m = env.member("m1", &refs(&vars));
    // Load in waves while the archiver works: the stream passes its cap again and again.
    let mut tasks = Vec::new();
    for wave in 0..4 {
        tasks.extend(failing(&env, "acme", wave * 100, 100).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    env.wait_drained(&["acme"], LONG).await;
    eventually(LONG, "the stream archived down to its cap", || async {
        broker.dlq_len("acme").await.unwrap() == 50 && recorded_batch(&env, "acme").await.is_none()
    })
    .await;
    let (in_redis, archived) = nothing_lost(&env, "acme", &tasks, &vars).await;
    assert_eq!((in_redis, archived), (50, 350));
    // The oldest went first: the stream keeps the newest 50 dead letters.
    let id = |s: &str| -> (u64, u64) {
        let (ms, seq) = s.rsplit('/').next().unwrap().split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    let oldest_kept = broker.dlq_range("acme", "-", "+", 1).await.unwrap()[0]
        .id
        .clone();
    let list = archive_list(&env, "acme", &vars);
    for e in list["entries"].as_array().unwrap() {
        assert!(
            id(e["id"].as_str().unwrap()) < id(&oldest_kept),
            "{e} archived before {oldest_kept}"
        );
    }
    // Nothing was dropped; the trim counter counts what the cap archived.
    let mut raw = env.raw().await;
    let (trimmed, dropped): (Option<u64>, Option<u64>) = redis::cmd("MGET")
        .arg(format!("{}:{{acme}}:dlq:trimmed", env.prefix))
        .arg(format!("{}:{{acme}}:dlq:dropped", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((trimmed, dropped.unwrap_or(0)), (Some(350), 0));
    // An archived task's record says where its dead letter went; `dlq archive show` shows the
    // dead letter with its payload byte for byte.
    let (code, out, err) = env.cli(&["task", "show", "acme/acme-0"], &refs(&vars));
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("archived (out of redis)") && out.contains("/dead_letter/"),
        "{out}"
    );
    let list = archive_list(&env, "acme", &vars);
    let first = list["entries"][0]["id"].as_str().unwrap().to_owned();
    let (code, out, err) = env.cli(&["dlq", "archive", "show", &first, "--json"], &refs(&vars));
    assert_eq!(code, 0, "{out} {err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["archive"]["class"], "dead_letter");
    assert!(
        out.contains(r#"caf\u00e9"#) || out.contains("café"),
        "{out}"
    );
    assert!(m.stop().success());
}

#[tokio::test]
async fn the_s3_server_killed_mid_archive_then_restarted_loses_and_duplicates_nothing() {
    let env = TestEnv::new();
    let mut s3 = S3Server::start(&env.dir.join("s3"));
    let vars = member_vars(
        &s3.vars(),
        &[
            ("REDRIVE_DEAD_LETTER__MAX_LEN", "20"),
            ("REDRIVE_DEAD_LETTER__HARD_MAX_LEN", "100000"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
        ],
    );
    let broker = env.broker().await;
    let mut m = env.member("m1", &refs(&vars));
    let addr = m.metrics_addr();
    let mut tasks = failing(&env, "acme", 0, 100).await;
    // Kill the server while the archiver is busy with this backlog.
    eventually(LONG, "a first batch archived", || async {
        broker.dlq_len("acme").await.unwrap() < 100 && broker.dlq_len("acme").await.unwrap() > 20
    })
    .await;
    s3.kill9();
    tasks.extend(failing(&env, "acme", 100, 100).await);
    env.wait_drained(&["acme"], LONG).await;
    // While it is down nothing leaves Redis: the stream stays past its cap, the errors and the
    // backlog show.
    eventually(
        LONG,
        "archive failures counted and the backlog shown",
        || async {
            let (_, body) = http_get(&addr, "/metrics");
            metric_sum(&body, "redrive_dlq_archive_errors_total") >= 2.0
                && metric_sum(&body, "redrive_dlq_archive_backlog") > 0.0
        },
    )
    .await;
    let during = broker.dlq_len("acme").await.unwrap();
    assert!(
        during > 100,
        "kept in redis while the archive is down: {during}"
    );
    // The batch whose upload failed stays recorded, its entries still in Redis.
    let (object, ids) = recorded_batch(&env, "acme")
        .await
        .expect("a failed batch stays recorded");
    // Back up: the batch recorded before the kill goes again under its name, then the rest.
    s3.restart();
    eventually(LONG, "the stream archived down to its cap", || async {
        broker.dlq_len("acme").await.unwrap() == 20 && recorded_batch(&env, "acme").await.is_none()
    })
    .await;
    let (in_redis, archived) = nothing_lost(&env, "acme", &tasks, &vars).await;
    assert_eq!((in_redis, archived), (20, 180));
    // ... and went to the archive under the name it was recorded with, once.
    let list = archive_list(&env, "acme", &vars);
    let mut in_object: Vec<String> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object"] == object.as_str())
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("acme/")
                .to_owned()
        })
        .collect();
    in_object.sort();
    let mut recorded = ids.clone();
    recorded.sort();
    assert_eq!(in_object, recorded);
    let (_, body) = http_get(&addr, "/metrics");
    assert_eq!(metric_sum(&body, "redrive_dlq_archived_total"), 180.0);
    assert_eq!(
        metric_sum(&body, "redrive_dlq_trimmed_total"),
        0.0,
        "nothing dropped"
    );
    assert!(m.stop().success());
    let log = m.log_text();
    assert!(log.contains("archiving dead letters failed"), "{log}");
}

#[tokio::test]
async fn restore_round_trips_byte_for_byte_with_encryption_through_the_admin_stream() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env.dir.join("s3"));
    let mut extra = s3.vars();
    extra.push((
        "REDRIVE_ARCHIVE__ENCRYPTION_KEY_ENV".into(),
        "TEST_ARCHIVE_KEY".into(),
    ));
    extra.push(("TEST_ARCHIVE_KEY".into(), "5a".repeat(32)));
    let vars = member_vars(&extra, &[("REDRIVE_DEAD_LETTER__MAX_LEN", "2")]);
    let broker = env.broker().await;
    // The dead letters as they were written, before anything archived them.
    let mut loader = env.member(
        "loader",
        &refs(&member_vars(
            &extra,
            &[("REDRIVE_ARCHIVE__ENABLED", "false")],
        )),
    );
    let tasks = failing(&env, "acme", 0, 10).await;
    env.wait_drained(&["acme"], LONG).await;
    assert!(loader.stop().success());
    let before: HashMap<String, HashMap<String, String>> = env
        .dead_letters("acme")
        .await
        .into_iter()
        .map(|d| (d["task_id"].clone(), d))
        .collect();
    assert_eq!(before.len(), 10);
    let mut m = env.member("m1", &refs(&vars));
    eventually(LONG, "8 archived", || async {
        broker.dlq_len("acme").await.unwrap() == 2 && recorded_batch(&env, "acme").await.is_none()
    })
    .await;
    nothing_lost(&env, "acme", &tasks, &vars).await;
    let list = archive_list(&env, "acme", &vars);
    let entries = list["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["encrypted"] == true), "{list}");
    // One that was archived (the members dead-letter tasks in the order they finish, so which
    // 8 of the 10 left is not fixed).
    let chosen = entries[0]["task_id"].as_str().unwrap().to_owned();
    let target = entries[0]["id"].as_str().unwrap().to_owned();
    // Without the key the archive can be listed, not read.
    let (code, out, err) = env.cli(&["dlq", "archive", "show", &target], &refs(&s3.vars()));
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("encrypted") && err.contains("encryption_key"),
        "{err}"
    );
    // Restore through the admin stream (a member runs it once, audited).
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "archive",
            "restore",
            &target,
            "--reason",
            "customer asked",
        ],
        &refs(&vars),
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("restored 1 archived dead letters"), "{out}");
    let back = env.dead_letters("acme").await;
    let mut restored = back
        .iter()
        .find(|d| d["task_id"] == chosen.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        restored.remove("restored_from").as_deref(),
        target.split('/').nth(1)
    );
    assert_eq!(restored, before[&chosen], "every field back byte for byte");
    let shown = format!("acme/{chosen}");
    let (code, out, _) = env.cli(&["task", "show", &shown], &refs(&vars));
    assert_eq!(code, 0);
    assert!(
        out.contains("dead_lettered") && out.contains("restored from"),
        "{out}"
    );
    let (code, out, _) = env.cli(&["dlq", "archive", "show", &target, "--json"], &refs(&vars));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(shown["archive"]["restored_as"].as_str().is_some(), "{out}");
    // Again: nothing new.
    let (code, out, err) = env.cli(
        &["dlq", "archive", "restore", &target, "--reason", "again"],
        &refs(&vars),
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("1 restored before"), "{out}");
    let copies = env
        .dead_letters("acme")
        .await
        .iter()
        .filter(|d| d["task_id"] == chosen.as_str())
        .count();
    assert_eq!(copies, 1);
    let (code, out, _) = env.cli(&["admin", "audit", "--json"], &refs(&vars));
    assert_eq!(code, 0);
    assert!(
        out.contains("restore") && out.contains("customer asked"),
        "{out}"
    );
    assert!(m.stop().success());
}

#[tokio::test]
async fn a_member_killed_between_upload_and_removal_is_finished_under_the_same_name_in_a_directory()
{
    let env = TestEnv::new();
    let dir = env.dir.join("local-archive");
    let extra = vec![(
        "REDRIVE_ARCHIVE__URL".to_owned(),
        format!("file://{}", dir.display()),
    )];
    let vars = member_vars(&extra, &[("REDRIVE_DEAD_LETTER__MAX_LEN", "10")]);
    let broker = env.broker().await;
    // The dead letters arrive first, with the archive off, so the crash hits a full batch.
    let mut off = env.member(
        "loader",
        &refs(&member_vars(
            &extra,
            &[("REDRIVE_ARCHIVE__ENABLED", "false")],
        )),
    );
    let tasks = failing(&env, "acme", 0, 60).await;
    env.wait_drained(&["acme"], LONG).await;
    assert!(off.stop().success());
    assert_eq!(broker.dlq_len("acme").await.unwrap(), 60);
    let mut crash = vars.clone();
    crash.push(("REDRIVE_FAILPOINT".into(), "archive_uploaded".into()));
    let mut m1 = env.member("m1", &refs(&crash));
    let status = m1.wait_exit(LONG);
    assert!(!status.success(), "m1 killed itself after its upload");
    let (object, ids) = recorded_batch(&env, "acme")
        .await
        .expect("the batch stays recorded");
    assert_eq!(ids.len(), 25);
    let path = dir.join(&object);
    assert!(
        path.exists(),
        "uploaded before the kill: {}",
        path.display()
    );
    let uploaded = std::fs::read(&path).unwrap();
    assert_eq!(
        broker.dlq_len("acme").await.unwrap(),
        60,
        "nothing removed yet"
    );
    // Another member takes the tenant over once m1's lease has expired.
    let mut m2 = env.member("m2", &refs(&vars));
    eventually(LONG, "archived down to the cap", || async {
        broker.dlq_len("acme").await.unwrap() == 10 && recorded_batch(&env, "acme").await.is_none()
    })
    .await;
    assert!(m2.stop().success());
    let log = m2.log_text();
    assert!(
        log.contains("resuming a recorded archive batch") && log.contains(&object),
        "{log}"
    );
    // The same object, written again with the same entries (no second copy anywhere).
    assert_eq!(
        std::fs::read(&path).unwrap(),
        uploaded,
        "the same bytes again"
    );
    let (in_redis, archived) = nothing_lost(&env, "acme", &tasks, &vars).await;
    assert_eq!((in_redis, archived), (10, 50));
    let list = archive_list(&env, "acme", &vars);
    let in_object = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object"] == object.as_str())
        .count();
    assert_eq!(in_object, 25);
}

/// Writes a manifest the archiver's way (`<tenant>/<yyyy>/<mm>/<dd>/<class>/<first>_<last>.
/// manifest.json`) with `n` entries whose ids start at `ms`; returns the entries' ids.
fn write_manifest(
    root: &Path,
    tenant: &str,
    day: (u32, u32, u32),
    ms: u64,
    n: usize,
) -> Vec<String> {
    let (y, m, d) = day;
    let ids: Vec<String> = (0..n).map(|i| format!("{ms}-{i}")).collect();
    let dir = root.join(format!("{tenant}/{y:04}/{m:02}/{d:02}/dead_letter"));
    std::fs::create_dir_all(&dir).unwrap();
    let stem = format!("{}_{}", ids[0], ids[n - 1]);
    let object = format!("{tenant}/{y:04}/{m:02}/{d:02}/dead_letter/{stem}.jsonl.gz");
    let manifest = json!({
        "v": 1,
        "tenant": tenant,
        "class": "dead_letter",
        "object": object,
        "begun_at_ms": ms,
        "count": n,
        "bytes": 0,
        "sha256": "",
        "entries": ids.iter().map(|id| json!({
            "id": id,
            "source_id": id,
            "task_id": format!("{tenant}-{id}"),
            "kind": "triage",
            "failure_class": "schema_mismatch",
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join(format!("{stem}.manifest.json")),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    ids
}

#[tokio::test]
async fn archive_list_pages_a_large_archive_reading_only_what_a_page_needs() {
    let env = TestEnv::new();
    let dir = env.dir.join("big-archive");
    let vars = vec![(
        "REDRIVE_ARCHIVE__URL".to_owned(),
        format!("file://{}", dir.display()),
    )];
    // 3 tenants × 40 days (across a month's end) × 25 batches × 20 entries: 3,000 manifests,
    // 60,000 archived dead letters.
    const PER: usize = 20;
    let mut expected = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        for day in 0..40u32 {
            let date = if day < 17 {
                (2026, 10, 15 + day)
            } else {
                (2026, 11, day - 16)
            };
            for b in 0..25u64 {
                let ms = 1_790_000_000_000 + u64::from(day) * 86_400_000 + b * 1_000;
                for id in write_manifest(&dir, tenant, date, ms, PER) {
                    expected.push(format!("{tenant}/{id}"));
                }
            }
        }
    }
    let list = |args: &[&str]| -> Value {
        let mut all = vec!["dlq", "archive", "list", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = env.cli(&all, &refs(&vars));
        assert_eq!(code, 0, "{args:?}: {out} {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    // A first page costs its own manifests, not the archive's 3,000.
    let started = Instant::now();
    let first = list(&["--limit", "100"]);
    let first_took = started.elapsed();
    assert_eq!(first["entries"].as_array().unwrap().len(), 100);
    assert_eq!(first["manifests_read"], 5, "{}", first["manifests_read"]);
    assert_eq!(first["entries"][0]["id"], expected[0]);
    // Every entry exactly once, in order, a page at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    let started = Instant::now();
    loop {
        let mut args = vec!["--limit", "1000"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = list(&args);
        pages += 1;
        assert!(pages <= 61, "the walk ends");
        let entries = page["entries"].as_array().unwrap();
        assert!(
            page["manifests_read"].as_u64().unwrap() <= (1000 / PER as u64) + 1,
            "a page reads only the manifests it shows: {}",
            page["manifests_read"]
        );
        seen.extend(entries.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let all_took = started.elapsed();
    assert_eq!(seen.len(), expected.len());
    assert_eq!(
        seen, expected,
        "every archived dead letter once, in the archive's order"
    );
    eprintln!(
        "archive list: first page of 100 in {first_took:?}; {} entries in {pages} pages of 1,000 in {all_took:?}",
        seen.len()
    );
    // A page cut inside a manifest resumes inside it.
    let a = list(&["--tenant", "globex", "--limit", "30"]);
    let next = a["next"].as_str().unwrap().to_owned();
    let b = list(&["--tenant", "globex", "--limit", "30", "--after", &next]);
    let ids: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["entries"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let globex: Vec<&str> = expected
        .iter()
        .filter(|i| i.starts_with("globex/"))
        .take(60)
        .map(String::as_str)
        .collect();
    assert_eq!(ids, globex);
    // A range of days opens only those days.
    let range = list(&[
        "--tenant",
        "initech",
        "--since",
        "2026-11-01T00:00:00Z",
        "--until",
        "2026-11-02T12:00:00Z",
        "--limit",
        "100000",
    ]);
    let entries = range["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2 * 25 * PER);
    assert!(entries
        .iter()
        .all(|e| e["day"] == "2026-11-01" || e["day"] == "2026-11-02"));
    assert_eq!(range["manifests_read"], 50);
    assert!(range["next"].is_null());
    // A cursor that is not one is refused with what to pass.
    let (code, out, err) = env.cli(
        &["dlq", "archive", "list", "--after", "nonsense"],
        &refs(&vars),
    );
    assert_eq!(code, 64, "{out} {err}");
    assert!(err.contains("not an archive cursor"), "{err}");
}
