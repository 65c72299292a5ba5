//! Tenant notifications end to end: a real receiver (a hyper HTTP/1 server on 127.0.0.1:0) the
//! test starts, real member processes configured with `[[notify.targets]]`, the real CLI. A
//! storm of 1,000 dead letters arrives as a handful of digests; escalations and the breaker's
//! opening and closing are notified; every request's signature is checked by the Python SDK's
//! helper; a receiver that is down gets its events once it is back; one that never answers is
//! given up into a visible `failed`; a member SIGKILLed about to send leaves its tenant's
//! events to another member.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::agents::{repo, venv_python};
use common::{eventually, http_get, TestEnv};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redrive::NewTask;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const LONG: Duration = Duration::from_secs(90);
const SECRET: &str = "n0tify-test-s3cret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// The test's receiver: answers 204 to everything (with `Connection: close`, so nothing stays
/// connected while it is down) and keeps what it got.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listening on `port` (0: any free one).
    async fn start(port: u16, got: Arc<Mutex<Vec<Got>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn({
            let got = got.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let got = got.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                let got = got.clone();
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let headers = parts
                                        .headers
                                        .iter()
                                        .map(|(k, v)| {
                                            (
                                                k.as_str().to_owned(),
                                                v.to_str().unwrap_or("").to_owned(),
                                            )
                                        })
                                        .collect();
                                    got.lock().unwrap().push(Got {
                                        headers,
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                    });
                                    let resp = Response::builder()
                                        .status(204)
                                        .header("connection", "close")
                                        .body(Full::new(bytes_empty()))
                                        .unwrap();
                                    Ok::<_, Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Receiver {
            addr,
            got,
            accept: Some(accept),
        }
    }

    /// Stops listening: the port refuses connections until a receiver starts on it again.
    async fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/redrive?token=t0ken", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies of the requests of event type `kind`, as JSON.
    fn of(&self, kind: &str) -> Vec<Value> {
        self.got()
            .iter()
            .map(Got::json)
            .filter(|v| v["type"] == kind)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(a) = &self.accept {
            a.abort();
        }
    }
}

fn bytes_empty() -> hyper::body::Bytes {
    hyper::body::Bytes::new()
}

/// A config file with `[notify]` settings and one target per `(name, url)` of tenant `acme`.
fn config(env: &TestEnv, notify: &str, targets: &[(&str, String)]) -> String {
    let secret = env.dir.join("hook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut toml = format!("[notify]\n{notify}\n");
    for (name, url) in targets {
        toml.push_str(&format!(
            "\n[[notify.targets]]\nname = \"{name}\"\ntenant = \"acme\"\nurl = \"{url}\"\n\
             secret_file = \"{}\"\n",
            secret.display()
        ));
    }
    env.config_file("notify.toml", &toml)
}

/// `n` tasks of `tenant` the demo agent fails permanently (schema_mismatch).
fn bad(tenant: &str, n: usize, tag: &str) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            NewTask::new(
                tenant,
                "triage",
                json!({"simulate": "malformed_output", "n": i}),
            )
            .with_task_id(format!("{tenant}-{tag}-{i}"))
        })
        .collect()
}

fn run(env: &TestEnv, cfg: &str, args: &[&str]) -> (i32, String) {
    let (code, out, err) = env.cli(args, &[("REDRIVE_CONFIG", cfg)]);
    (code, format!("{out}{err}"))
}

fn json_of(env: &TestEnv, cfg: &str, args: &[&str]) -> Value {
    let (code, out, err) = env.cli(args, &[("REDRIVE_CONFIG", cfg)]);
    assert_eq!(code, 0, "{args:?}: {out} {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Checks every request with the Python SDK's helper (redrive.notify.verify_notification):
/// returns how many verified, and whether a tampered copy of the first was refused.
fn verified_by_python(env: &TestEnv, got: &[Got]) -> (usize, bool) {
    let file = env.dir.join("requests.json");
    let list: Vec<Value> = got
        .iter()
        .map(|g| json!({"headers": g.headers, "body": g.body}))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let script = r#"
import json, sys
from redrive.notify import InvalidNotification, verify_notification
reqs = json.load(open(sys.argv[1]))
ok = 0
for r in reqs:
    n = verify_notification(sys.argv[2], r["headers"], r["body"].encode("utf-8"))
    assert n.id == r["headers"]["redrive-event-id"] and n.type == r["headers"]["redrive-event"]
    ok += 1
first = reqs[0]
try:
    verify_notification(sys.argv[2], first["headers"], first["body"].replace("acme", "evil").encode())
    tampered = "accepted"
except InvalidNotification:
    tampered = "refused"
print(ok, tampered)
"#;
    let out = std::process::Command::new(venv_python())
        .args(["-c", script, file.to_str().unwrap(), SECRET])
        .current_dir(repo())
        .output()
        .expect("run the Python SDK");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parts = text.split_whitespace();
    let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (n, parts.next() == Some("refused"))
}

/// The value of a counter or gauge `name{labels…}` on a member's /metrics (the first series
/// whose label text contains every one of `labels`).
fn metric(addr: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_storm_is_a_few_signed_digests_and_escalations_and_breaker_moves_are_notified() {
    let env = TestEnv::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got).await;
    let cfg = config(
        &env,
        "digest_interval_ms = 500\npoll_interval_ms = 100\nlease_ms = 3000\ntimeout_ms = 1000",
        &[("ops-hook", receiver.url())],
    );
    let member = env.member(
        "m1",
        &[
            ("REDRIVE_CONFIG", cfg.as_str()),
            ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
            ("REDRIVE_FLEET__CONCURRENCY", "64"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "200"),
        ],
    );
    let metrics = member.metrics_addr();

    // A storm: 1,000 dead letters, told as a few digests that add up to all of them.
    env.enqueue_tasks(bad("acme", 1_000, "storm")).await;
    eventually(LONG, "1,000 dead letters", || async {
        env.dead_letters("acme").await.len() == 1_000
    })
    .await;
    eventually(LONG, "digests of all 1,000", || async {
        receiver
            .of("dead_lettered")
            .iter()
            .map(|d| d["data"]["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 1_000
    })
    .await;
    let digests = receiver.of("dead_lettered");
    eprintln!("1,000 dead letters → {} digest calls", digests.len());
    assert!(
        digests.len() <= 20,
        "a handful of calls, not one per dead letter: {}",
        digests.len()
    );
    let first = &digests[0]["data"];
    assert!(
        first["by_class"]["schema_mismatch"].as_u64().unwrap() > 0,
        "{first}"
    );
    let sample = &first["samples"][0];
    assert_eq!(sample["class"], "schema_mismatch");
    assert!(sample["task_id"]
        .as_str()
        .unwrap()
        .starts_with("acme-storm-"));
    assert!(sample.get("payload").is_none(), "never a payload: {sample}");

    // An escalation to the tenant, and the breaker held open and closed by an operator.
    let ids: Vec<String> = json_of(&env, &cfg, &["dlq", "list", "--json", "--limit", "2"])
        ["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let (code, out) = run(
        &env,
        &cfg,
        &[
            "dlq",
            "escalate",
            &ids[0],
            &ids[1],
            "--to",
            "tenant",
            "--reason",
            "your input",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 notification(s) queued"), "{out}");
    for action in ["open", "close"] {
        let (code, out) = run(
            &env,
            &cfg,
            &["breaker", action, "acme", "--reason", "drill"],
        );
        assert_eq!(code, 0, "{out}");
    }
    eventually(LONG, "the escalation and the breaker moves", || async {
        !receiver.of("escalated").is_empty()
            && !receiver.of("breaker_opened").is_empty()
            && !receiver.of("breaker_closed").is_empty()
    })
    .await;
    let esc = &receiver.of("escalated")[0];
    let listed: Vec<&str> = esc["data"]["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{esc}");
    assert!(
        ids.iter()
            .all(|i| listed.contains(&i.split('/').nth(1).unwrap())),
        "{esc}"
    );
    assert_eq!(esc["data"]["reason"], "your input");
    let opened = &receiver.of("breaker_opened")[0];
    assert_eq!(opened["data"]["reason"], "operator");
    assert_eq!(opened["data"]["detail"], "drill");

    // Every request is signed as the SDK's helper checks it; a tampered body is refused.
    let all = receiver.got();
    assert!(all.iter().all(|g| g.headers["redrive-tenant"] == "acme"));
    let (verified, tampered_refused) = verified_by_python(&env, &all);
    assert_eq!(verified, all.len());
    assert!(tampered_refused);

    // The delivery log and the outbox, as the CLI shows them; the metrics counted them.
    let log = json_of(
        &env,
        &cfg,
        &[
            "notify", "log", "--tenant", "acme", "--json", "--limit", "100",
        ],
    );
    let entries = log.as_array().unwrap();
    assert_eq!(entries.len(), all.len(), "{log}");
    assert!(entries
        .iter()
        .all(|e| e["outcome"] == "sent" && e["target"] == "ops-hook"));
    let status = json_of(&env, &cfg, &["notify", "status", "--json"]);
    assert_eq!(status[0]["outbox"], 0, "{status}");
    assert_eq!(status[0]["delivered_by"], "m1");
    let (code, shown) = run(&env, &cfg, &["config", "check"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("name = \"ops-hook\""), "{shown}");
    assert!(
        !shown.contains("t0ken") && !shown.contains(SECRET),
        "{shown}"
    );
    eventually(LONG, "the sent counter", || async {
        metric(
            &metrics,
            "redrive_notify_sent_total",
            &["tenant=\"acme\"", "event=\"dead_lettered\""],
        ) == Some(digests.len() as f64)
    })
    .await;
    assert!(!member.log_text().contains(SECRET) && !member.log_text().contains("t0ken"));
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_its_events_once_it_is_back() {
    let env = TestEnv::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = Receiver::start(0, got.clone()).await;
    let port = receiver.addr.port();
    let url = receiver.url();
    receiver.stop().await;
    let cfg = config(
        &env,
        "poll_interval_ms = 100\nlease_ms = 3000\ntimeout_ms = 1000\nretry_base_ms = 200\n\
         retry_max_ms = 400\nmax_attempts = 1000",
        &[("ops-hook", url)],
    );
    let _member = env.member("m1", &[("REDRIVE_CONFIG", cfg.as_str())]);
    env.enqueue_tasks(bad("acme", 1, "one")).await;
    eventually(LONG, "a dead letter", || async {
        env.dead_letters("acme").await.len() == 1
    })
    .await;
    let id = json_of(&env, &cfg, &["dlq", "list", "--json"])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out) = run(
        &env,
        &cfg,
        &[
            "dlq", "escalate", &id, "--to", "tenant", "--reason", "yours",
        ],
    );
    assert_eq!(code, 0, "{out}");
    // Down: attempts fail and are retried, each in the delivery log.
    eventually(LONG, "failed attempts, retried", || async {
        let (_, out) = run(
            &env,
            &cfg,
            &["notify", "log", "--json", "--outcome", "retry"],
        );
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .is_some_and(|n| n >= 2)
    })
    .await;
    let status = json_of(&env, &cfg, &["notify", "status", "--json"]);
    assert!(status[0]["outbox"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        status[0]["targets"][0]["attempts"].as_u64().unwrap() >= 2,
        "{status}"
    );
    // Back on the same port: delivered, the outbox empties.
    let receiver = Receiver::start(port, got).await;
    eventually(
        LONG,
        "the escalation, once the receiver is back",
        || async { !receiver.of("escalated").is_empty() },
    )
    .await;
    eventually(LONG, "the outbox emptied", || async {
        json_of(&env, &cfg, &["notify", "status", "--json"])[0]["outbox"] == 0
    })
    .await;
    let log = json_of(&env, &cfg, &["notify", "log", "--json"]);
    let sent: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "sent")
        .collect();
    assert_eq!(sent.len(), 1, "{log}");
    assert!(sent[0]["attempt"].as_u64().unwrap() >= 3, "{log}");
}

#[tokio::test]
async fn a_killed_member_leaves_its_tenant_to_another_and_a_dead_target_is_given_up() {
    let env = TestEnv::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got).await;
    // A target nobody listens on: its events are given up after three attempts.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(
        &env,
        "poll_interval_ms = 100\nlease_ms = 2500\ntimeout_ms = 1000\nretry_base_ms = 100\n\
         retry_max_ms = 200\nmax_attempts = 3",
        &[
            ("ops-hook", receiver.url()),
            ("gone-hook", format!("http://127.0.0.1:{closed}/")),
        ],
    );
    // Member a takes the tenant's delivery lease first, and kills itself about to send.
    let mut a = env.member(
        "a",
        &[
            ("REDRIVE_CONFIG", cfg.as_str()),
            ("REDRIVE_FAILPOINT", "notify_before_send"),
        ],
    );
    let raw = env.raw().await;
    let lease = format!("{}:{{acme}}:notify:lease", env.prefix);
    eventually(LONG, "member a holds acme's delivery lease", || {
        let lease = lease.clone();
        let mut raw = raw.clone();
        async move {
            redis::cmd("GET")
                .arg(&lease)
                .query_async::<Option<String>>(&mut raw)
                .await
                .unwrap()
                .as_deref()
                == Some("a")
        }
    })
    .await;
    let b = env.member("b", &[("REDRIVE_CONFIG", cfg.as_str())]);
    env.enqueue_tasks(bad("acme", 1, "one")).await;
    eventually(LONG, "a dead letter", || async {
        env.dead_letters("acme").await.len() == 1
    })
    .await;
    let id = json_of(&env, &cfg, &["dlq", "list", "--json"])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out) = run(
        &env,
        &cfg,
        &[
            "dlq", "escalate", &id, "--to", "tenant", "--reason", "yours",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let status = a.wait_exit(LONG);
    assert_eq!(status.code(), None, "a was killed: {}", a.log_text());
    assert!(a.log_text().contains("failpoint reached"));
    // b takes over once a's lease runs out, and delivers.
    eventually(LONG, "the escalation, delivered by b", || async {
        !receiver.of("escalated").is_empty()
    })
    .await;
    eventually(LONG, "the dead target given up", || async {
        let log = json_of(
            &env,
            &cfg,
            &["notify", "log", "--json", "--outcome", "failed"],
        );
        log.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    let log = json_of(&env, &cfg, &["notify", "log", "--json"]);
    let entries = log.as_array().unwrap();
    let failed: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(failed[0]["target"], "gone-hook");
    assert_eq!(failed[0]["attempt"], 3);
    assert!(
        entries
            .iter()
            .any(|e| e["outcome"] == "sent" && e["target"] == "ops-hook"),
        "{log}"
    );
    let status = json_of(&env, &cfg, &["notify", "status", "--json"]);
    assert_eq!(status[0]["delivered_by"], "b", "{status}");
    assert_eq!(
        status[0]["outbox"], 0,
        "given up and delivered: nothing left"
    );
    let gone = status[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gone-hook")
        .unwrap()
        .clone();
    assert_eq!(gone["failed"], 1, "{status}");
    assert!(b
        .log_text()
        .contains("notification given up after its last attempt"));
}

#[tokio::test]
async fn a_tenants_rate_holds_events_back_without_dropping_them() {
    let env = TestEnv::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got).await;
    let cfg = config(
        &env,
        "poll_interval_ms = 100\nlease_ms = 3000\ntimeout_ms = 1000\nrate_per_minute = 2",
        &[("ops-hook", receiver.url())],
    );
    let member = env.member(
        "m1",
        &[
            ("REDRIVE_CONFIG", cfg.as_str()),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "200"),
        ],
    );
    let metrics = member.metrics_addr();
    let held = || {
        metric(
            &metrics,
            "redrive_notify_rate_limited_total",
            &["tenant=\"acme\""],
        )
        .is_some_and(|n| n >= 1.0)
    };
    // Distinct events (a retried delivery may arrive twice: at least once).
    let delivered = || {
        let mut ids: Vec<String> = ["breaker_opened", "breaker_closed"]
            .iter()
            .flat_map(|kind| receiver.of(kind))
            .map(|v| v["id"].to_string())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    // The tenant is registered by a task; the member delivers its notifications (from its first
    // tick on, breaker moves are news, not history).
    env.enqueue_tasks(vec![NewTask::new(
        "acme",
        "triage",
        json!({"simulate": "ok"}),
    )])
    .await;
    eventually(LONG, "m1 delivers acme's notifications", || async {
        json_of(&env, &cfg, &["notify", "status", "--json"])[0]["delivered_by"] == "m1"
    })
    .await;
    // Four breaker moves a round, two requests a minute: held back, unless the round happens to
    // straddle a minute (then all four go, and the next round finds the new minute spent).
    let mut events = 0;
    for _ in 0..2 {
        for action in ["open", "close", "open", "close"] {
            let (code, out) = run(
                &env,
                &cfg,
                &["breaker", action, "acme", "--reason", "drill"],
            );
            assert_eq!(code, 0, "{out}");
        }
        events += 4;
        eventually(
            LONG,
            "events held back by the rate, or all delivered",
            || async { held() || delivered() == events },
        )
        .await;
        if held() {
            break;
        }
    }
    assert!(held(), "the rate held events back");
    // A snapshot: the status read between two equal counts of what arrived (a delivery landing
    // while the status is read would count twice).
    let mut snapshot = None;
    for _ in 0..50 {
        let before = delivered();
        let status = json_of(&env, &cfg, &["notify", "status", "--json"]);
        if delivered() == before {
            snapshot = Some((before, status));
            break;
        }
    }
    let (arrived, status) = snapshot.expect("a quiet moment to read the status in");
    let waiting = status[0]["outbox"].as_u64().unwrap() as usize;
    assert!(waiting >= 1, "{status}");
    assert_eq!(arrived + waiting, events, "held, not dropped: {status}");
}

#[tokio::test]
async fn a_member_stopping_cleanly_gives_its_delivery_lease_up_at_once() {
    let env = TestEnv::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got).await;
    // A lease far longer than the test's patience: b can deliver within it only if a gives
    // the lease up when it stops.
    let cfg = config(
        &env,
        "poll_interval_ms = 100\nlease_ms = 60000\ntimeout_ms = 1000",
        &[("ops-hook", receiver.url())],
    );
    let mut a = env.member("a", &[("REDRIVE_CONFIG", cfg.as_str())]);
    let raw = env.raw().await;
    let lease = format!("{}:{{acme}}:notify:lease", env.prefix);
    let holder = || {
        let lease = lease.clone();
        let mut raw = raw.clone();
        async move {
            redis::cmd("GET")
                .arg(&lease)
                .query_async::<Option<String>>(&mut raw)
                .await
                .unwrap()
        }
    };
    env.enqueue_tasks(bad("acme", 1, "one")).await;
    eventually(LONG, "member a holds acme's delivery lease", || async {
        holder().await.as_deref() == Some("a")
    })
    .await;
    let b = env.member("b", &[("REDRIVE_CONFIG", cfg.as_str())]);
    eventually(LONG, "a dead letter", || async {
        env.dead_letters("acme").await.len() == 1
    })
    .await;
    // b is up and ticking (it answers the CLI's fleet check) before a stops.
    eventually(LONG, "b is a live member", || async {
        b.log_text().contains("tenant notifications: delivering")
    })
    .await;
    let status = a.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "a stopped cleanly: {}",
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains("notification delivery leases given up"),
        "{}",
        a.log_text()
    );
    // Well inside the 60 s lease: b takes the tenant over and delivers what happens next.
    let stopped = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "b holds acme's delivery lease",
        || async { holder().await.as_deref() == Some("b") },
    )
    .await;
    let id = json_of(&env, &cfg, &["dlq", "list", "--json"])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out) = run(
        &env,
        &cfg,
        &[
            "dlq", "escalate", &id, "--to", "tenant", "--reason", "yours",
        ],
    );
    assert_eq!(code, 0, "{out}");
    eventually(
        Duration::from_secs(10),
        "the escalation, delivered by b",
        || async { !receiver.of("escalated").is_empty() },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "taken over long before the lease would have run out: {:?}",
        stopped.elapsed()
    );
    let status = json_of(&env, &cfg, &["notify", "status", "--json"]);
    assert_eq!(status[0]["delivered_by"], "b", "{status}");
}
