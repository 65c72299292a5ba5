//! Test harness: a private redis-server per test, fleet members as real processes of the
//! `redrive` binary, and helpers that seed and read back state.
#![allow(dead_code)]

pub mod agents;
pub mod cluster;
pub mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use redrive::testkit::{BrokerExt, RedisServer};
use redrive::Broker;
use redrive::NewTask;
use redrive::Producer;
use redrive::Settings;

/// One test's world: its own redis-server (or Redis Cluster), key prefix and scratch
/// directory.
pub struct TestEnv {
    /// The env's redis-server; `None` on a cluster.
    pub redis: Option<RedisServer>,
    /// A Redis Cluster ([`TestEnv::on_cluster`]), which every process and connection of this
    /// env uses (then no single server is started).
    pub cluster: Option<cluster::RedisCluster>,
    pub prefix: String,
    pub dir: PathBuf,
    /// The certificates of a server that speaks TLS ([`TestEnv::with_tls`]).
    pub tls: Option<tls::TlsFiles>,
    /// `[redis]` settings every process and connection of this env gets (as
    /// `REDRIVE_REDIS__<KEY>` variables for child processes): the TLS files, credentials.
    pub redis_settings: Vec<(String, String)>,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Leave member logs behind for whoever reads the failure.
            eprintln!("test scratch directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl TestEnv {
    /// A private redis-server — or, with `REDRIVE_TEST_CLUSTER=1` in the environment (the
    /// nextest profile `cluster`), a private Redis Cluster ([`TestEnv::on_cluster`]): the same
    /// tests run on both.
    pub fn new() -> TestEnv {
        if std::env::var("REDRIVE_TEST_CLUSTER").is_ok_and(|v| v == "1") {
            return TestEnv::on_cluster();
        }
        TestEnv::single()
    }

    /// An env on one private redis-server, whatever the environment says.
    pub fn single() -> TestEnv {
        TestEnv::single_with(&[])
    }

    /// A private redis-server started with extra arguments (say, a Unix socket), single
    /// whatever the profile.
    pub fn single_with(extra_args: &[&str]) -> TestEnv {
        let redis = RedisServer::start_with(extra_args).expect("start redis-server");
        let (prefix, dir) = scratch();
        TestEnv {
            redis: Some(redis),
            cluster: None,
            prefix,
            dir,
            tls: None,
            redis_settings: Vec::new(),
        }
    }

    /// An env on a Redis Cluster of 3 masters with one replica each (`redis.cluster = true`,
    /// the URL listing every node as a seed).
    pub fn on_cluster() -> TestEnv {
        let (prefix, dir) = scratch();
        let mut env = TestEnv {
            redis: None,
            cluster: Some(cluster::RedisCluster::start(3, 1)),
            prefix,
            dir,
            tls: None,
            redis_settings: Vec::new(),
        };
        env.set_redis("cluster", "true");
        env
    }

    /// An env whose redis-server speaks TLS only (`rediss://`), with certificates made for
    /// it in the env's directory; `mutual`: the server requires client certificates. Every
    /// process and connection of the env trusts the test authority (`redis.tls_ca_file`) and,
    /// with `mutual`, presents the client certificate. `extra_args` go to redis-server (e.g.
    /// `--requirepass`).
    pub fn with_tls(mutual: bool, extra_args: &[&str]) -> TestEnv {
        let (prefix, dir) = scratch();
        let files = tls::generate(&dir.join("tls"));
        let server = redrive::testkit::ServerTls {
            cert_file: files.server_cert.clone(),
            key_file: files.server_key.clone(),
            ca_file: files.ca.clone(),
            auth_clients: mutual,
        };
        let redis = RedisServer::start_tls(server, extra_args).expect("start redis-server (TLS)");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut redis_settings = vec![("tls_ca_file".to_owned(), path(&files.ca))];
        if mutual {
            redis_settings.push(("tls_cert_file".to_owned(), path(&files.client_cert)));
            redis_settings.push(("tls_key_file".to_owned(), path(&files.client_key)));
        }
        TestEnv {
            redis: Some(redis),
            cluster: None,
            prefix,
            dir,
            tls: Some(files),
            redis_settings,
        }
    }

    /// Adds a `[redis]` setting every process and connection of this env gets.
    pub fn set_redis(&mut self, key: &str, value: &str) {
        self.redis_settings.retain(|(k, _)| k != key);
        self.redis_settings.push((key.to_owned(), value.to_owned()));
    }

    /// The `REDRIVE_REDIS__<KEY>` variables of [`TestEnv::redis_settings`].
    pub fn redis_vars(&self) -> Vec<(String, String)> {
        self.redis_settings
            .iter()
            .map(|(k, v)| {
                (
                    format!("REDRIVE_REDIS__{}", k.to_ascii_uppercase()),
                    v.clone(),
                )
            })
            .collect()
    }

    /// The URL (on a cluster: every node's, comma-separated).
    pub fn url(&self) -> String {
        match &self.cluster {
            Some(c) => c.urls().join(","),
            None => self
                .redis
                .as_ref()
                .expect("an env has a redis-server or a cluster")
                .url(),
        }
    }

    /// Settings as a member would load them, pointed at this env.
    pub fn settings(&self) -> Settings {
        let mut raw = redrive::RawConfig::defaults().unwrap();
        raw.redis.url = self.url();
        raw.redis.key_prefix = self.prefix.clone();
        raw.fleet.member_id = "test-harness".into();
        for (k, v) in &self.redis_settings {
            match k.as_str() {
                "tls_ca_file" => raw.redis.tls_ca_file = v.clone(),
                "tls_cert_file" => raw.redis.tls_cert_file = v.clone(),
                "tls_key_file" => raw.redis.tls_key_file = v.clone(),
                "tls_insecure" => raw.redis.tls_insecure = v == "true",
                "cluster" => raw.redis.cluster = v == "true",
                "username" => raw.redis.username = v.clone(),
                "password_file" => raw.redis.password_file = v.clone(),
                "password_env" => raw.redis.password_env = v.clone(),
                "wait_replicas" => raw.redis.wait_replicas = v.parse().unwrap(),
                "wait_timeout_ms" => raw.redis.wait_timeout_ms = v.parse().unwrap(),
                other => panic!("TestEnv: unknown [redis] setting {other}"),
            }
        }
        Settings::from_raw(raw).unwrap()
    }

    pub async fn broker(&self) -> Broker {
        let s = self.settings();
        Broker::connect(&s).await.unwrap()
    }

    pub async fn producer(&self) -> Producer {
        Producer::new(self.broker().await, &self.settings())
    }

    /// Task `task_id`'s record of `tenant` as readers show it (src/broker/scripts/task_read.lua:
    /// running while its entry is pending, done from the done log once its entry left the
    /// lane), and its time to live in ms (-1 kept, -2 none). Empty when there is none.
    pub async fn task_read(&self, tenant: &str, task_id: &str) -> (HashMap<String, String>, i64) {
        let mut raw = self.raw().await;
        let (flat, ttl): (Vec<String>, i64) =
            redis::Script::new(include_str!("../../src/broker/scripts/task_read.lua"))
                .key(format!("{}:{{{tenant}}}:task:{task_id}", self.prefix))
                .key(format!("{}:{{{tenant}}}:lane", self.prefix))
                .key(format!("{}:{{{tenant}}}:done:", self.prefix))
                .arg("redrive")
                .invoke_async(&mut raw)
                .await
                .unwrap();
        let mut out = HashMap::new();
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.insert(k, v);
        }
        (out, ttl)
    }

    /// A plain redis connection, for seeding raw entries as a foreign producer would (with
    /// the env's TLS settings and credentials, from the broker's client, when it has any).
    /// On a cluster, a cluster connection (a pipeline through it must stay in one slot).
    pub async fn raw(&self) -> RawConn {
        if self.cluster.is_some() {
            return RawConn::Cluster(self.broker().await.raw_connection());
        }
        let client = if self.redis_settings.is_empty() {
            redis::Client::open(self.url()).unwrap()
        } else {
            self.broker().await.redis_client()
        };
        RawConn::Single(client.get_multiplexed_async_connection().await.unwrap())
    }

    pub fn side_effect_log(&self) -> PathBuf {
        self.dir.join("side-effects.log")
    }

    /// Lines of the side-effect log: (tenant, task_id, attempt, member), in completion order.
    pub fn side_effects(&self) -> Vec<(String, String, u32, String)> {
        let text = std::fs::read_to_string(self.side_effect_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut p = l.split(' ');
                Some((
                    p.next()?.to_owned(),
                    p.next()?.to_owned(),
                    p.next()?.parse().ok()?,
                    p.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Starts a fleet member process. `env` adds or overrides REDRIVE_* variables.
    pub fn member(&self, id: &str, env: &[(&str, &str)]) -> Member {
        let log = self.dir.join(format!("member-{id}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDRIVE_REDIS_URL", self.url())
            .env("REDRIVE_REDIS__KEY_PREFIX", &self.prefix)
            .env("REDRIVE_FLEET__MEMBER_ID", id)
            .envs(self.redis_vars())
            // The simulated agent, named explicitly: `redrive run` has no default handler. A
            // test routing with [[handlers]] clears it (REDRIVE_FLEET__HANDLER = "").
            .env("REDRIVE_FLEET__HANDLER", "demo")
            .env("REDRIVE_FLEET__BLOCK_MS", "200")
            .env("REDRIVE_FLEET__LEASE_TTL_MS", "2000")
            .env("REDRIVE_FLEET__DISCOVERY_INTERVAL_MS", "100")
            .env("REDRIVE_LOG__LEVEL", "info")
            .env("REDRIVE_DEMO_AGENT__RATE_LIMITED", "0")
            .env("REDRIVE_DEMO_AGENT__TIMEOUT", "0")
            .env("REDRIVE_DEMO_AGENT__MALFORMED_OUTPUT", "0")
            .env("REDRIVE_DEMO_AGENT__CONTEXT_OVERFLOW", "0")
            .env("REDRIVE_DEMO_AGENT__TOOL_FAILURE", "0")
            .env("REDRIVE_DEMO_AGENT__PANIC", "0")
            .env("REDRIVE_DEMO_AGENT__SILENT", "0")
            .env("REDRIVE_DEMO_AGENT__MIN_WORK_MS", "0")
            .env("REDRIVE_DEMO_AGENT__MAX_WORK_MS", "0")
            .env(
                "REDRIVE_DEMO_AGENT__SIDE_EFFECT_LOG",
                self.side_effect_log(),
            )
            // The dead-letter archive in the test's own directory, never the working directory.
            .env("REDRIVE_ARCHIVE__URL", self.dir.join("archive"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn redrive run");
        Member {
            child: Some(child),
            id: id.to_owned(),
            log,
            exited: None,
            started: Instant::now(),
        }
    }

    /// Starts `redrive serve --config <config>` (the HTTP API as a process of its own) against
    /// this env's Redis; its log goes to `serve-<id>.log`. Read its address with
    /// [`Member::listen_addr`]`("serving the HTTP API")`.
    pub fn serve(&self, id: &str, config: &str, env: &[(&str, &str)]) -> Member {
        let log = self.dir.join(format!("serve-{id}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
        cmd.args(["serve", "--config", config])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDRIVE_REDIS_URL", self.url())
            .env("REDRIVE_REDIS__KEY_PREFIX", &self.prefix)
            .envs(self.redis_vars())
            // The members' archive (the test's own directory), never the working directory.
            .env("REDRIVE_ARCHIVE__URL", self.dir.join("archive"))
            .env("REDRIVE_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn redrive serve");
        Member {
            child: Some(child),
            id: id.to_owned(),
            log,
            exited: None,
            started: Instant::now(),
        }
    }

    /// The command [`TestEnv::cli`] runs: the binary with `args`, the env's Redis settings
    /// and `env` added (for a test that runs it in the background).
    pub fn cli_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redrive"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDRIVE_REDIS_URL", self.url())
            .env("REDRIVE_REDIS__KEY_PREFIX", &self.prefix)
            .envs(self.redis_vars())
            .env("REDRIVE_ARCHIVE__URL", self.dir.join("archive"))
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the binary to completion with extra args and env; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = self.cli_command(args, env).output().expect("run redrive");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Reads up to `count` new entries of `tenant`'s lane as `consumer` through the fleet's
    /// group (created if needed), as a member would that then never comes back: they stay
    /// pending there, for a reclaim.
    pub async fn read_as(&self, tenant: &str, consumer: &str, count: usize) -> redis::Value {
        self.broker().await.ensure_group(tenant).await.unwrap();
        let mut raw = self.raw().await;
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("redrive")
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(format!("{}:{{{tenant}}}:lane", self.prefix))
            .arg(">")
            .query_async(&mut raw)
            .await
            .unwrap()
    }

    /// Enqueues `n` tasks for `tenant` with `payload`, through the library producer.
    pub async fn enqueue(&self, tenant: &str, n: usize, payload: serde_json::Value) -> Vec<String> {
        let producer = self.producer().await;
        let tasks = (0..n)
            .map(|i| {
                NewTask::new(tenant, "test", payload.clone()).with_task_id(format!("{tenant}-{i}"))
            })
            .collect();
        producer
            .enqueue_batch(tasks)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.task_id)
            .collect()
    }

    /// Enqueues prepared tasks through the library producer.
    pub async fn enqueue_tasks(&self, tasks: Vec<NewTask>) {
        self.producer().await.enqueue_batch(tasks).await.unwrap();
    }

    /// Writes a config file into the scratch directory; pass its path as REDRIVE_CONFIG.
    pub fn config_file(&self, name: &str, toml: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, toml).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// The dead letters of `tenant`, each as a field map, oldest first.
    pub async fn dead_letters(&self, tenant: &str) -> Vec<HashMap<String, String>> {
        let broker = self.broker().await;
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page = broker.dlq_range(tenant, &start, "+", 1000).await.unwrap();
            let n = page.len();
            for e in page {
                start = format!("({}", e.id);
                out.push(text_fields(e.fields.unwrap_or_default()));
            }
            if n < 1000 {
                return out;
            }
        }
    }

    /// The scheduled retries of `tenant`: (fields of the next attempt, due time in ms).
    pub async fn scheduled_retries(&self, tenant: &str) -> Vec<(HashMap<String, String>, u64)> {
        let mut raw = self.raw().await;
        let items: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{}:{{{tenant}}}:retry", self.prefix))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut raw)
            .await
            .unwrap();
        items
            .into_iter()
            .map(|(member, score)| {
                let flat: Vec<String> = serde_json::from_str(&member).unwrap();
                let fields = flat
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                (fields, score as u64)
            })
            .collect()
    }

    /// Makes every scheduled retry of `tenant` due now (the test's way of letting time pass).
    pub async fn make_retries_due(&self, tenant: &str) -> usize {
        let mut raw = self.raw().await;
        let key = format!("{}:{{{tenant}}}:retry", self.prefix);
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut raw)
            .await
            .unwrap();
        for m in &members {
            let _: () = redis::cmd("ZADD")
                .arg(&key)
                .arg("XX")
                .arg(0)
                .arg(m)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        members.len()
    }

    /// The Redis server's clock, ms.
    pub async fn server_time_ms(&self) -> u64 {
        let mut raw = self.raw().await;
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
        s * 1000 + us / 1000
    }

    /// Waits until every listed tenant's lane is empty and nothing is pending.
    pub async fn wait_drained(&self, tenants: &[&str], timeout: Duration) {
        let broker = self.broker().await;
        eventually(timeout, "lanes drained", || async {
            for t in tenants {
                if broker.lane_len(t).await.unwrap() > 0
                    || broker.pending_count(t).await.unwrap() > 0
                {
                    return false;
                }
            }
            true
        })
        .await;
    }
}

/// A fresh key prefix and its scratch directory.
fn scratch() -> (String, PathBuf) {
    let prefix = format!("t{:08x}", fastrand::u32(..));
    let dir = std::env::temp_dir().join(format!("redrive-test-{}-{}", std::process::id(), prefix));
    std::fs::create_dir_all(&dir).unwrap();
    (prefix, dir)
}

/// A fleet member process.
pub struct Member {
    child: Option<Child>,
    pub id: String,
    pub log: PathBuf,
    /// How the process ended, once reaped by `try_exit`.
    pub exited: Option<ExitStatus>,
    /// When it was started.
    pub started: Instant,
}

impl Member {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The exit status if the process has exited (it is then reaped).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().unwrap()?;
        self.child = None;
        self.exited = Some(status);
        Some(status)
    }

    /// Whether the process is gone (reaped by `try_exit`, `wait_exit` or `kill9`).
    pub fn is_gone(&self) -> bool {
        self.child.is_none()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("member already gone");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "member {} did not exit within {timeout:?}; log: {}",
                self.id,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the member's metrics endpoint (started with
    /// `REDRIVE_METRICS__LISTEN=127.0.0.1:0`), read from its log once it is listening.
    pub fn metrics_addr(&self) -> String {
        self.listen_addr("serving /metrics")
    }

    /// The `listen=` address of the first log line containing `marker` (the process logs it
    /// once it is listening), waiting up to 60 s for it.
    pub fn listen_addr(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log_text();
            if let Some(addr) = log
                .lines()
                .find(|l| l.contains(marker))
                .and_then(|l| l.split("listen=").nth(1))
                .and_then(|r| r.split_whitespace().next())
            {
                return addr.trim_matches('"').to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {marker:?}: {log}",
                self.id
            );
            assert!(
                !log.lines().any(|l| l.starts_with("error: ")),
                "{} failed before it logged {marker:?}: {log}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Keeps `n` members alive: whoever dies is started again under the same id (a restart that
/// finds the dead process's lease waits for it, exiting 75, and is simply started again).
pub struct Supervisor<'a> {
    env: &'a TestEnv,
    pub members: Vec<Member>,
    env_vars: Vec<(String, String)>,
    /// Members that died by a signal (crashed or killed), not counting refused restarts.
    pub crashes: usize,
}

impl<'a> Supervisor<'a> {
    pub fn new(env: &'a TestEnv, n: usize, env_vars: &[(&str, &str)]) -> Supervisor<'a> {
        let env_vars: Vec<(String, String)> = env_vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Supervisor {
            env,
            members: Vec::new(),
            env_vars,
            crashes: 0,
        };
        for i in 0..n {
            let m = s.spawn(&format!("m{}", i + 1));
            s.members.push(m);
        }
        s
    }

    fn spawn(&self, id: &str) -> Member {
        let vars: Vec<(&str, &str)> = self
            .env_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.env.member(id, &vars)
    }

    /// Restarts members that exited (at most one start per member every 250 ms, so a restart
    /// refused while the dead process's lease runs out is not retried in a tight loop).
    pub fn tend(&mut self) {
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if !m.is_gone() {
                if let Some(status) = m.try_exit() {
                    if status.code().is_none() {
                        self.crashes += 1;
                    }
                }
            }
            let m = &self.members[i];
            if m.is_gone() && m.started.elapsed() >= Duration::from_millis(250) {
                let id = m.id.clone();
                self.members[i] = self.spawn(&id);
            }
        }
    }

    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if !m.is_gone() && m.try_exit().is_none() {
                m.stop();
            }
        }
    }
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or the I/O error (for polling a server
/// that may not be up yet). HTTP/1.0, so servers answer without chunked encoding.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// [`try_http_get`] for a server that must be up: panics when it cannot be reached.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Stream fields as text.
pub fn text_fields(fields: Vec<(Vec<u8>, Vec<u8>)>) -> HashMap<String, String> {
    fields
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// Counts how often each task id appears.
pub fn counts<'a>(ids: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id).or_default() += 1;
    }
    m
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// One line of the demo agent's activity log: a "start" line when a handler begins an attempt,
/// an "end" line when it finishes (none when its process is killed mid-attempt).
#[derive(Debug, Clone)]
pub struct Act {
    pub start: bool,
    pub tenant: String,
    pub task_id: String,
    pub attempt: u32,
    pub member: String,
    pub at_ms: u64,
}

impl TestEnv {
    /// Where the demo agent of this env's members writes its activity log
    /// (`REDRIVE_DEMO_AGENT__ACTIVITY_LOG`).
    pub fn activity_log(&self) -> PathBuf {
        self.dir.join("activity.log")
    }

    /// The activity log, in the order its lines were written.
    pub fn activity(&self) -> Vec<Act> {
        let text = std::fs::read_to_string(self.activity_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split(' ').collect();
                if p.len() != 6 {
                    return None;
                }
                Some(Act {
                    start: p[0] == "start",
                    tenant: p[1].to_owned(),
                    task_id: p[2].to_owned(),
                    attempt: p[3].parse().ok()?,
                    member: p[4].to_owned(),
                    at_ms: p[5].parse().ok()?,
                })
            })
            .collect()
    }

    /// The entries of `tenant`'s lane, as text.
    pub async fn lane_entries(&self, tenant: &str) -> Vec<HashMap<String, String>> {
        self.stream_entries(&format!("{{{tenant}}}:lane")).await
    }

    /// The entries of the stream `<prefix>:<key>`, oldest first, as text.
    pub async fn stream_entries(&self, key: &str) -> Vec<HashMap<String, String>> {
        let mut raw = self.raw().await;
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(format!("{}:{key}", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut raw)
            .await
            .unwrap();
        redrive::testkit::entries(v)
            .unwrap()
            .into_iter()
            .map(|e| text_fields(e.fields.unwrap_or_default()))
            .collect()
    }
}

/// A test's raw connection: to the env's redis-server, or to its cluster.
#[derive(Clone)]
pub enum RawConn {
    Single(redis::aio::MultiplexedConnection),
    /// The broker's connection, whose pipelines are split per slot.
    Cluster(redrive::testkit::RawConnection),
}

impl redis::aio::ConnectionLike for RawConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RawConn::Single(c) => c.req_packed_command(cmd),
            RawConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RawConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RawConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
