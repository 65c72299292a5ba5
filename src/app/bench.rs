//! `redrive bench`: throughput and latency of the real fleet, each figure next to the raw
//! ceiling of the same Redis measured in the same run (see benches/README.md for the method).
//!
//! Every scenario runs on a private redis-server started here (or on `REDRIVE_REDIS_URL`, under
//! a fresh key prefix it deletes afterwards), with 200-byte JSON payloads and a no-op handler
//! unless it says otherwise. The fleet runs in this process (one member, as `redrive run`
//! would), except where a process must be killed or weighed: those use a child `redrive run`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::bench_agent::AgentProcess;
use crate::app::bench_cost::CostProbe;
use crate::app::bench_logs::LogTally;
use crate::app::bench_python::PythonAgent;
use crate::broker::{raw_ceiling, RawCeiling};
use crate::broker::{Broker, PasswordSource, RedisSettings};
use crate::config::{RawConfig, Settings};
use crate::embedded::{LocalCluster, RedisServer};
use crate::error::{Error, Result};
use crate::fleet::{AckObserver, Fleet, FleetStats};
use crate::handler::{
    FailureClass, Handler, HandlerFuture, HandlerSpec, NoopHandler, Outcome, TaskContext,
};
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::{NewTask, Task};

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Pipelined XADD, then XREADGROUP COUNT 500 + one XACK per batch: this machine's limit.
    Raw,
    /// Producer throughput, one task per call and batched.
    Enqueue,
    /// Pre-enqueued tasks of one tenant drained by one member.
    Drain,
    /// The same over 100 tenants.
    Drain100,
    /// The same over 1,000 tenants.
    Drain1000,
    /// A producer and the fleet at once, flat out.
    E2e,
    /// A producer at a fixed offered rate (`--rate`) and the fleet.
    E2eRate,
    /// 10% of tasks always fail (transient), 3 attempts, zero backoff.
    Failure,
    /// A member killed mid-batch: how long until its entries run again.
    Reclaim,
    /// A small tenant's latency while a large tenant's backlog drains.
    Fairness,
    /// Peak RSS of a member with 10,000 tasks in flight.
    Memory,
    /// Redis memory of task records: bytes per queued record, per done record with and
    /// without a 200-byte output, per index entry and per events entry.
    Records,
    /// The `http` handler draining one tenant against the bench's Rust agent (a keep-alive
    /// hyper server in a child process), next to the no-op drain of the same run.
    Http,
    /// Peak RSS of this process (the member) with 10,000 `http` attempts in flight.
    HttpMemory,
    /// The `http` handler against the Python SDK's own HTTP server (a no-op agent), next to
    /// the no-op drain of the same run.
    HttpPython,
    /// The `pool` handler with two Python SDK worker processes (a no-op async agent), next to
    /// the no-op drain of the same run.
    PoolPython,
    /// Log lines and bytes a child member writes at the default level while every task fails
    /// (three causes, ten tenants), with storm summaries on (the default) and off.
    LogVolume,
    /// How soon an idle member serves a tenant it has never seen: 200 new tenants, one task
    /// each, with producers' announcements on (the default) and off (the periodic look only).
    Discovery,
    /// The HTTP API's reads (overview, dead-letter pages with and without rare filters,
    /// cursor pages, stats, one dead letter) over 100,000 dead letters across 100 tenants:
    /// p50/p99 per page type and what each request costs Redis.
    ApiLoad,
    /// What an idle member costs Redis, in commands per second, with 10, 100 and 1,000 known
    /// tenants (each ran one task; nothing is pending).
    Idle,
    /// What `redis.wait_replicas = 1` costs: the enqueue and 1-tenant drain scenarios on a
    /// private redis-server with one replica, without and with WAIT, side by side.
    Wait,
    /// Drain throughput of `--tasks` tasks over 100 tenants on one private redis-server and on
    /// a private 3-master Redis Cluster, side by side (same machine, same run).
    Shards,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 22] = [
        Scenario::Raw,
        Scenario::Enqueue,
        Scenario::Drain,
        Scenario::Drain100,
        Scenario::Drain1000,
        Scenario::E2e,
        Scenario::E2eRate,
        Scenario::Failure,
        Scenario::Reclaim,
        Scenario::Fairness,
        Scenario::Memory,
        Scenario::Records,
        Scenario::Http,
        Scenario::HttpMemory,
        Scenario::HttpPython,
        Scenario::PoolPython,
        Scenario::LogVolume,
        Scenario::Discovery,
        Scenario::ApiLoad,
        Scenario::Idle,
        Scenario::Wait,
        Scenario::Shards,
    ];
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tasks per throughput scenario.
    pub tasks: usize,
    /// Offered rate of `e2e-rate`, tasks/s.
    pub rate: u64,
    /// How long `e2e-rate` offers load.
    pub rate_seconds: u64,
    /// How often each throughput scenario runs; the median run is reported.
    pub repeat: usize,
    /// fleet.concurrency of the in-process member.
    pub concurrency: usize,
    /// fleet.read_batch of the in-process member.
    pub read_batch: usize,
    /// The scenarios to run (the raw ceiling always runs first).
    pub scenarios: Vec<Scenario>,
    /// Run on a private 3-master Redis Cluster the bench starts itself (`--cluster`).
    pub cluster: bool,
}

/// One line of results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Scenario name.
    pub scenario: String,
    /// Tasks involved.
    pub tasks: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Tasks per second, where throughput is the point.
    pub per_second: Option<f64>,
    /// `per_second` over the raw consume ceiling of the same run.
    pub ratio_to_raw: Option<f64>,
    /// Latency percentiles, ms (p50, p99, p99.9), where latency is the point.
    pub latency_ms: Option<Percentiles>,
    /// What else was measured or checked.
    pub note: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `samples` given in microseconds; `None` when there are none.
    pub fn of_micros(mut samples: Vec<u64>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        Some(Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1] as f64 / 1000.0,
        })
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Redis version and where it ran.
    pub redis: String,
    /// CPU cores this process may use.
    pub cores: usize,
    /// Whether this is an optimised build (figures from debug builds mean little).
    pub release_build: bool,
    /// The raw ceiling of this run.
    pub raw: Option<RawFigures>,
    /// One row per scenario result.
    pub results: Vec<BenchRow>,
}

/// The raw ceiling, as reported.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawFigures {
    /// Entries appended per second.
    pub enqueue_per_second: f64,
    /// Entries read and acked per second.
    pub consume_per_second: f64,
}

/// A 200-byte JSON payload; `extra` (`"t_us":…,"fail":…`) is spliced in for scenarios that
/// need it, and the padding shrinks to keep the size.
fn payload(extra: &str) -> String {
    let head = format!("{{{extra}\"text\":\"");
    let pad = 200usize.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Microseconds since `epoch`.
fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// The `"t_us":N` value in a payload, without parsing the whole document.
fn sent_at(payload: &str) -> Option<u64> {
    let rest = &payload[payload.find("\"t_us\":")? + 7..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Records enqueue→start (from the payload's send time) and enqueue→done (from acks).
struct Probe {
    epoch: Instant,
    /// Only this tenant's tasks are recorded, when set.
    tenant: Option<String>,
    starts: Mutex<Vec<u64>>,
    sent: Mutex<HashMap<String, u64>>,
    acked: Mutex<Vec<(String, u64)>>,
}

impl Probe {
    fn new(epoch: Instant, tenant: Option<&str>) -> Arc<Probe> {
        Arc::new(Probe {
            epoch,
            tenant: tenant.map(str::to_owned),
            starts: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
            acked: Mutex::new(Vec::new()),
        })
    }

    fn record_sent(&self, entry_ids: impl IntoIterator<Item = String>, at: u64) {
        if let Ok(mut m) = self.sent.lock() {
            for id in entry_ids {
                m.insert(id, at);
            }
        }
    }

    fn start_latencies(&self) -> Vec<u64> {
        self.starts.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn done_latencies(&self) -> Vec<u64> {
        let sent = self.sent.lock().map(|m| m.clone()).unwrap_or_default();
        let acked = self.acked.lock().map(|v| v.clone()).unwrap_or_default();
        acked
            .into_iter()
            .filter_map(|(id, at)| Some(at.saturating_sub(*sent.get(&id)?)))
            .collect()
    }
}

impl AckObserver for Probe {
    fn acked(&self, tenant: &str, entry_ids: &[&str]) {
        if self.tenant.as_deref().is_some_and(|t| t != tenant) {
            return;
        }
        let now = micros(self.epoch);
        if let Ok(mut v) = self.acked.lock() {
            v.extend(entry_ids.iter().map(|id| (id.to_string(), now)));
        }
    }
}

/// The benchmark handler: records when a task starts, and fails the tasks whose payload says
/// `"fail":1` with a transient class.
struct ProbeHandler {
    probe: Arc<Probe>,
}

impl Handler for ProbeHandler {
    fn handle(&self, task: Arc<Task>, _ctx: TaskContext) -> HandlerFuture {
        let now = micros(self.probe.epoch);
        let recorded = self
            .probe
            .tenant
            .as_deref()
            .is_none_or(|t| t == task.tenant);
        if recorded && task.attempt == 1 {
            if let Some(sent) = sent_at(&task.payload) {
                if let Ok(mut v) = self.probe.starts.lock() {
                    v.push(now.saturating_sub(sent));
                }
            }
        }
        let fail = task.payload.contains("\"fail\":1");
        Box::pin(async move {
            if fail {
                Outcome::fail(
                    FailureClass::UpstreamUnavailable,
                    "bench: this task always fails",
                )
            } else {
                Outcome::Done
            }
        })
    }
}

/// A child `redrive run` process.
struct Child {
    child: std::process::Child,
}

impl Child {
    fn rss_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean stop), then waits up to `limit` for the exit; whether it exited
    /// successfully in time.
    async fn terminate(&mut self, limit: Duration) -> bool {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid (> 1); no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < limit {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Shared state of one bench run.
struct Bench {
    url: String,
    /// The `[redis]` settings the bench was started with (TLS, credentials): every member,
    /// in process or child, connects with them.
    redis: RedisSettings,
    prefix: String,
    epoch: Instant,
    exe: PathBuf,
    opts: BenchOptions,
    raw: Option<RawCeiling>,
    run: u32,
    /// The agent the drain of an agent scenario runs against.
    drain_agent: Option<DrainAgent>,
    /// Whether members and producers of the next runs keep task records (`tasks.enabled`).
    records: bool,
}

impl Bench {
    /// A fresh key prefix for the next scenario.
    fn next_prefix(&mut self) -> String {
        self.run += 1;
        format!("{}-{}", self.prefix, self.run)
    }

    /// Settings of an in-process member: the no-op handler named explicitly, the defaults
    /// otherwise, then `tweak`.
    fn settings(&self, prefix: &str, tweak: impl FnOnce(&mut RawConfig)) -> Result<Settings> {
        let mut raw = RawConfig::defaults()?;
        raw.redis.url = self.url.clone();
        raw.redis.cluster = self.redis.cluster;
        raw.redis.key_prefix = prefix.to_owned();
        raw.fleet.member_id = format!("bench-{}", self.run);
        raw.fleet.handler = "noop".into();
        raw.fleet.concurrency = self.opts.concurrency;
        raw.fleet.read_batch = self.opts.read_batch;
        raw.fleet.discovery_interval_ms = 100;
        raw.tasks.enabled = self.records;
        tweak(&mut raw);
        let mut settings = Settings::from_raw(raw)?;
        settings.redis = RedisSettings {
            url: Some(self.url.clone()),
            key_prefix: settings.redis.key_prefix.clone(),
            ..self.redis.clone()
        };
        Ok(settings)
    }

    async fn broker(&self, settings: &Settings) -> Result<Broker> {
        Broker::connect_at(&self.url, settings).await
    }

    fn ratio(&self, per_second: f64) -> Option<f64> {
        self.raw.map(|r| per_second / r.consume_per_s.max(1e-9))
    }

    fn new_tasks(&self, tenant: &str, n: usize, extra: &str) -> Vec<NewTask> {
        let body: serde_json::Value =
            serde_json::from_str(&payload(extra)).unwrap_or(serde_json::Value::Null);
        (0..n)
            .map(|_| NewTask::new(tenant, "bench", body.clone()))
            .collect()
    }

    /// Starts the fleet in this process; returns its stats, its stop signal and its task.
    fn start_fleet(
        &self,
        broker: Broker,
        settings: &Settings,
        handler: Arc<dyn Handler>,
        observer: Option<Arc<Probe>>,
    ) -> RunningFleet {
        let mut fleet = Fleet::new(broker, settings, handler);
        if let Some(o) = observer {
            fleet = fleet.with_ack_observer(o);
        }
        let stats = fleet.stats();
        let stop = Shutdown::new();
        let task = tokio::spawn(fleet.run(stop.clone()));
        RunningFleet { stats, stop, task }
    }

    /// A child `redrive run` member.
    fn spawn_member(&self, prefix: &str, id: &str, env: &[(&str, &str)]) -> Result<Child> {
        let child = self
            .member_command(prefix, id, env)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.exe.display()), e))?;
        Ok(Child { child })
    }

    /// The command of a child `redrive run` member: the demo agent with every random failure
    /// off, logging errors only, output discarded; `env` adds or overrides variables.
    fn member_command(
        &self,
        prefix: &str,
        id: &str,
        env: &[(&str, &str)],
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("run")
            .env("REDRIVE_REDIS_URL", &self.url)
            .envs(redis_env(&self.redis))
            .env("REDRIVE_REDIS__KEY_PREFIX", prefix)
            .env("REDRIVE_FLEET__MEMBER_ID", id)
            // Child members run the simulated agent, named explicitly (no default handler).
            .env("REDRIVE_FLEET__HANDLER", "demo")
            .env("REDRIVE_FLEET__DISCOVERY_INTERVAL_MS", "100")
            .env("REDRIVE_LOG__LEVEL", "error")
            .env_remove("REDRIVE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in [
            "RATE_LIMITED",
            "TIMEOUT",
            "MALFORMED_OUTPUT",
            "CONTEXT_OVERFLOW",
            "TOOL_FAILURE",
            "PANIC",
            "SILENT",
        ]
        .iter()
        .map(|k| (format!("REDRIVE_DEMO_AGENT__{k}"), "0"))
        {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

struct RunningFleet {
    stats: Arc<FleetStats>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningFleet {
    /// Waits until `n` tasks settled, polling the member's own tallies (no Redis traffic).
    async fn until_settled(&self, n: u64, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        while self.stats.settled() < n {
            if started.elapsed() > limit || self.task.is_finished() {
                return Err(Error::Protocol(format!(
                    "bench: only {} of {n} tasks settled within {limit:?}",
                    self.stats.settled()
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(started.elapsed())
    }

    async fn stop(self, broker: &Broker) -> Result<()> {
        self.stop.trigger();
        let r = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Protocol(format!("bench fleet task failed: {e}"))),
        };
        broker.drop_admin_stream().await?;
        r
    }
}

const LIMIT: Duration = Duration::from_secs(600);

/// The `REDRIVE_REDIS__*` variables that give a child member the TLS settings and the
/// credentials' sources of `redis` (never a password itself: the child reads the same file or
/// variable).
fn redis_env(redis: &RedisSettings) -> Vec<(&'static str, String)> {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (file, var) = match &redis.password_source {
        Some(PasswordSource::File(f)) => (f.to_string_lossy().into_owned(), String::new()),
        Some(PasswordSource::Env(v)) => (String::new(), v.clone()),
        None => (String::new(), String::new()),
    };
    vec![
        ("REDRIVE_REDIS__TLS_CA_FILE", path(&redis.tls.ca_file)),
        ("REDRIVE_REDIS__TLS_CERT_FILE", path(&redis.tls.cert_file)),
        ("REDRIVE_REDIS__TLS_KEY_FILE", path(&redis.tls.key_file)),
        (
            "REDRIVE_REDIS__TLS_INSECURE",
            redis.tls.insecure.to_string(),
        ),
        (
            "REDRIVE_REDIS__USERNAME",
            redis.username.clone().unwrap_or_default(),
        ),
        ("REDRIVE_REDIS__PASSWORD_FILE", file),
        ("REDRIVE_REDIS__PASSWORD_ENV", var),
        ("REDRIVE_REDIS__CLUSTER", redis.cluster.to_string()),
    ]
}

/// Runs the benchmark and returns the report. `settings.redis.url` set: that server, else a
/// private one (with `opts.cluster`: a private 3-master cluster, never one someone else runs).
pub async fn run(settings: &Settings, opts: BenchOptions) -> Result<BenchReport> {
    let mut _server = None;
    let mut _cluster = None;
    let mut redis_settings = settings.redis.clone();
    let url = match &settings.redis.url {
        Some(_) if opts.cluster => {
            return Err(Error::Config(
                "redrive bench --cluster starts a private cluster of its own: unset redis.url \
                 (REDRIVE_REDIS_URL)"
                    .into(),
            ))
        }
        Some(url) => url.clone(),
        None if opts.cluster => {
            eprintln!("bench: starting a private Redis Cluster of 3 masters…");
            let c = LocalCluster::start(3)?;
            let url = c.url();
            _cluster = Some(c);
            redis_settings.cluster = true;
            url
        }
        None => {
            let s = RedisServer::start()?;
            let url = s.url();
            _server = Some(s);
            url
        }
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("locating redrive", e))?;
    // Measure the member as it runs in production: with the Prometheus recorder installed
    // (rendered by nobody here, but every counter and histogram update is real).
    let _metrics = crate::telemetry::install_prometheus(Duration::from_secs(60))?;
    let mut bench = Bench {
        url: url.clone(),
        redis: redis_settings,
        prefix: format!(
            "{}:bench-{}",
            settings.redis.key_prefix,
            crate::task::now_ms()
        ),
        epoch: Instant::now(),
        exe,
        opts,
        raw: None,
        run: 0,
        drain_agent: None,
        records: true,
    };
    let probe_settings = bench.settings("bench-probe", |_| {})?;
    let probe = bench.broker(&probe_settings).await?;
    let redis = probe.server().to_string();
    let mut results = Vec::new();

    eprintln!("bench: raw ceiling ({} entries)…", bench.opts.tasks);
    let raw_key = format!("{}:raw", bench.prefix);
    let mut raws = Vec::new();
    for _ in 0..bench.opts.repeat.max(1) {
        raws.push(raw_ceiling(&probe, &raw_key, bench.opts.tasks, &payload("")).await?);
    }
    raws.sort_by(|a, b| a.consume_per_s.total_cmp(&b.consume_per_s));
    let raw = raws[raws.len() / 2];
    let spread = format!(
        "median of {}: {:.0}–{:.0}/s",
        raws.len(),
        raws[0].consume_per_s,
        raws[raws.len() - 1].consume_per_s
    );
    bench.raw = Some(raw);
    results.push(BenchRow {
        scenario: "raw ceiling: XADD pipelined".into(),
        tasks: bench.opts.tasks as u64,
        seconds: bench.opts.tasks as f64 / raw.enqueue_per_s,
        per_second: Some(raw.enqueue_per_s),
        ratio_to_raw: None,
        latency_ms: None,
        note: "pipelines of 1,000".into(),
    });
    results.push(BenchRow {
        scenario: "raw ceiling: XREADGROUP 500 + XACK".into(),
        tasks: bench.opts.tasks as u64,
        seconds: raw.consume_time.as_secs_f64(),
        per_second: Some(raw.consume_per_s),
        ratio_to_raw: Some(1.0),
        latency_ms: None,
        note: format!("one consumer, one round trip per read and per ack; {spread}"),
    });

    let mut scenarios = bench.opts.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    for s in scenarios {
        if s == Scenario::Raw {
            continue;
        }
        eprintln!("bench: {s:?}…");
        let rows = match s {
            Scenario::Raw => Vec::new(),
            Scenario::Enqueue => enqueue(&mut bench).await?,
            Scenario::Drain => records_on_off(&mut bench, drain_one).await?,
            Scenario::Drain100 => vec![repeated(&mut bench, drain_hundred).await?],
            Scenario::Drain1000 => vec![repeated(&mut bench, drain_thousand).await?],
            Scenario::E2e => vec![end_to_end(&mut bench, None).await?],
            Scenario::E2eRate => {
                let rate = bench.opts.rate;
                vec![end_to_end(&mut bench, Some(rate)).await?]
            }
            Scenario::Failure => records_on_off(&mut bench, failure_path).await?,
            Scenario::Reclaim => vec![reclaim(&mut bench).await?],
            Scenario::Fairness => vec![fairness(&mut bench).await?],
            Scenario::Memory => vec![memory(&mut bench).await?],
            Scenario::Records => records(&mut bench).await?,
            Scenario::Http => http(&mut bench).await?,
            Scenario::HttpMemory => vec![http_memory(&mut bench).await?],
            Scenario::HttpPython => http_python(&mut bench).await?,
            Scenario::PoolPython => pool_python(&mut bench).await?,
            Scenario::LogVolume => log_volume(&mut bench).await?,
            Scenario::Discovery => vec![
                new_tenants(&mut bench, true).await?,
                new_tenants(&mut bench, false).await?,
            ],
            Scenario::ApiLoad => api_load(&mut bench).await?,
            Scenario::Idle => idle(&mut bench).await?,
            Scenario::Wait => wait_cost(&mut bench).await?,
            Scenario::Shards => shards(&mut bench).await?,
        };
        results.extend(rows);
    }
    Ok(BenchReport {
        redis,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        release_build: !cfg!(debug_assertions),
        raw: bench.raw.map(|r| RawFigures {
            enqueue_per_second: r.enqueue_per_s,
            consume_per_second: r.consume_per_s,
        }),
        results,
    })
}

type RowFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<BenchRow>> + 'a>>;

fn drain_one(b: &mut Bench) -> RowFuture<'_> {
    Box::pin(drain(b, 1, None))
}

fn drain_hundred(b: &mut Bench) -> RowFuture<'_> {
    Box::pin(drain(b, 100, None))
}

fn drain_thousand(b: &mut Bench) -> RowFuture<'_> {
    Box::pin(drain(b, 1000, None))
}

fn drain_one_agent(b: &mut Bench) -> RowFuture<'_> {
    let agent = b.drain_agent.clone();
    Box::pin(drain(b, 1, agent))
}

fn failure_path(b: &mut Bench) -> RowFuture<'_> {
    Box::pin(failure(b))
}

/// Runs a throughput scenario with task records on (the default) and off, alternating run by
/// run so drift hits both alike; two rows, the records-on row saying what records cost.
async fn records_on_off(
    bench: &mut Bench,
    scenario: for<'a> fn(&'a mut Bench) -> RowFuture<'a>,
) -> Result<Vec<BenchRow>> {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..bench.opts.repeat.max(1) {
        bench.records = true;
        on.push(scenario(bench).await?);
        bench.records = false;
        let row = scenario(bench).await;
        bench.records = true;
        off.push(row?);
    }
    let mut on = median(on);
    let mut off = median(off);
    off.scenario = format!("{} (records off)", off.scenario);
    if let (Some(a), Some(b)) = (on.per_second, off.per_second) {
        let ratio = a / b.max(1e-9);
        on.note = format!(
            "records on: {ratio:.3}× records off ({:+.1}%); {}",
            (ratio - 1.0) * 100.0,
            on.note
        );
    }
    Ok(vec![on, off])
}

/// The median row of `rows` by rate, its note saying the spread.
fn median(mut rows: Vec<BenchRow>) -> BenchRow {
    rows.sort_by(|a, b| {
        a.per_second
            .unwrap_or(0.0)
            .total_cmp(&b.per_second.unwrap_or(0.0))
    });
    let n = rows.len();
    let (lo, hi) = (
        rows.first().and_then(|r| r.per_second).unwrap_or(0.0),
        rows.last().and_then(|r| r.per_second).unwrap_or(0.0),
    );
    let mut row = rows.swap_remove(n / 2);
    if n > 1 {
        row.note = format!("median of {n}: {lo:.0}–{hi:.0}/s; {}", row.note);
    }
    row
}

/// Runs a throughput scenario `repeat` times and reports the median run, with the spread.
async fn repeated(
    bench: &mut Bench,
    scenario: for<'a> fn(&'a mut Bench) -> RowFuture<'a>,
) -> Result<BenchRow> {
    let mut rows = Vec::new();
    for _ in 0..bench.opts.repeat.max(1) {
        rows.push(scenario(bench).await?);
    }
    Ok(median(rows))
}

/// `enqueue`, `--repeat` times (the median of each row): a single awaited enqueue, the raw
/// ceiling of its round trip on the same connection (the same `EVALSHA` of enqueue.lua, built
/// beforehand; a `PING`), and the batched enqueue.
async fn enqueue(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let runs = bench.opts.repeat.max(1);
    let mut rows: Vec<Vec<BenchRow>> = vec![Vec::new(); 4];
    for _ in 0..runs {
        for (i, row) in enqueue_once(bench).await?.into_iter().enumerate() {
            if let Some(r) = rows.get_mut(i) {
                r.push(row);
            }
        }
    }
    Ok(rows.into_iter().map(median).collect())
}

/// One run of `enqueue`: its four rows.
async fn enqueue_once(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let single_n = (bench.opts.tasks / 10).max(1);
    // The raw ceiling first, on the tenant the single enqueues use after it (already
    // registered then, as for any producer past its first enqueue).
    let raw_tasks = bench
        .new_tasks("t", single_n, "")
        .into_iter()
        .map(|t| t.into_task(&settings.limits, crate::task::now_ms()))
        .collect::<Result<Vec<_>>>()?;
    let (evalsha, ping) = broker
        .raw_single_enqueue(&raw_tasks, settings.tasks())
        .await?;
    let tasks = bench.new_tasks("t", single_n, "");
    let started = Instant::now();
    for t in tasks {
        producer.enqueue(t).await?;
    }
    let single = started.elapsed();
    let tasks = bench.new_tasks("t", bench.opts.tasks, "");
    let started = Instant::now();
    producer.enqueue_batch(tasks).await?;
    let batched = started.elapsed();
    broker.drop_tenant("t").await?;
    let row = |scenario: &str, n: usize, took: Duration, note: &str| {
        let rate = n as f64 / took.as_secs_f64().max(1e-9);
        BenchRow {
            scenario: scenario.into(),
            tasks: n as u64,
            seconds: took.as_secs_f64(),
            per_second: Some(rate),
            ratio_to_raw: bench.ratio(rate),
            latency_ms: None,
            note: note.into(),
        }
    };
    Ok(vec![
        row(
            "enqueue: one task per call",
            single_n,
            single,
            "Producer::enqueue awaited one at a time: validate + EVALSHA enqueue.lua, one round trip (the registry SADD in it once a second per tenant)",
        ),
        row(
            "enqueue: raw EVALSHA, one per call",
            single_n,
            evalsha,
            "ceiling of the above: the same EVALSHA (built beforehand) awaited one at a time on the same connection",
        ),
        row(
            "enqueue: raw PING, one per call",
            single_n,
            ping,
            "the bare round trip on the same connection",
        ),
        row(
            "enqueue: batched",
            bench.opts.tasks,
            batched,
            "one call, pipelines of 1,000",
        ),
    ])
}

/// The `http` handler of a bench scenario: every kind to `url`.
fn http_handler(url: &str, timeout: Duration, concurrency: usize) -> Result<Arc<dyn Handler>> {
    let mut spec = HandlerSpec::catch_all("http", timeout, concurrency);
    spec.options
        .insert("url".into(), serde_json::Value::String(url.to_owned()));
    crate::agents::http::build(&spec)
}

/// What an agent scenario's drain runs its tasks on.
#[derive(Clone)]
enum DrainAgent {
    /// The `http` handler against `url`; `what` names the agent in the row.
    Http { url: String, what: &'static str },
    /// The `pool` handler running `command` in `dir`: `processes` × `concurrency`.
    Pool {
        command: Vec<String>,
        dir: PathBuf,
        processes: usize,
        concurrency: usize,
    },
}

impl DrainAgent {
    /// A fresh handler for one drain (a pool's processes end with its fleet).
    fn handler(&self, concurrency: usize) -> Result<Arc<dyn Handler>> {
        match self {
            DrainAgent::Http { url, .. } => http_handler(url, Duration::from_secs(30), concurrency),
            DrainAgent::Pool {
                command,
                dir,
                processes,
                concurrency: per_process,
            } => {
                let mut spec = HandlerSpec::catch_all(
                    "pool",
                    Duration::from_secs(30),
                    processes * per_process,
                );
                let o = &mut spec.options;
                o.insert("command".into(), serde_json::json!(command));
                o.insert("cwd".into(), serde_json::json!(dir.display().to_string()));
                o.insert("processes".into(), serde_json::json!(processes));
                o.insert("concurrency".into(), serde_json::json!(per_process));
                crate::agents::pool::build(&spec)
            }
        }
    }

    /// How the row names it.
    fn label(&self) -> String {
        match self {
            DrainAgent::Http { what, .. } => format!("http handler, {what}"),
            DrainAgent::Pool {
                processes,
                concurrency,
                ..
            } => format!("pool handler, {processes} Python processes × {concurrency}"),
        }
    }
}

/// Drains `tasks` pre-enqueued tasks over `tenants` tenants with the no-op handler, or with an
/// agent's handler.
async fn drain(bench: &mut Bench, tenants: usize, agent: Option<DrainAgent>) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let per = bench.opts.tasks / tenants;
    let names: Vec<String> = (0..tenants).map(|i| format!("t{i:03}")).collect();
    let mut all = Vec::with_capacity(per * tenants);
    for name in &names {
        all.extend(bench.new_tasks(name, per, ""));
    }
    let total = all.len() as u64;
    producer.enqueue_batch(all).await?;
    let handler: Arc<dyn Handler> = match &agent {
        Some(a) => a.handler(settings.fleet.concurrency)?,
        None => Arc::new(NoopHandler),
    };
    let cost = CostProbe::start(&broker).await?;
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, None);
    let took = fleet.until_settled(total, LIMIT).await?;
    let cost = cost.finish(&broker, total).await?;
    fleet.stop(&broker).await?;
    let mut left = 0;
    for name in &names {
        left += broker.lane_len(name).await? + broker.pending_count(name).await?;
        broker.drop_tenant(name).await?;
    }
    let rate = total as f64 / took.as_secs_f64();
    Ok(BenchRow {
        scenario: if let Some(a) = &agent {
            format!("drain: {tenants} tenant, {}", a.label())
        } else if tenants == 1 {
            "drain: 1 tenant".into()
        } else {
            format!("drain: {tenants} tenants")
        },
        tasks: total,
        seconds: took.as_secs_f64(),
        per_second: Some(rate),
        ratio_to_raw: bench.ratio(rate),
        latency_ms: None,
        note: format!(
            "one member, concurrency {}, read_batch {}, member start-up included; {left} left in Redis; {cost}",
            settings.fleet.concurrency,
            settings.fleet.read_batch
        ),
    })
}

/// The `wait` scenario: a private redis-server with one replica (whatever server the bench was
/// given: the figure needs a replica that acknowledges), then `enqueue` and the 1-tenant
/// `drain` without WAIT and with `redis.wait_replicas = 1` (`wait_timeout_ms` 100), runs
/// alternating so drift hits both alike. Each row says which.
async fn wait_cost(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let primary = RedisServer::start()?;
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port])?;
    let saved = (bench.url.clone(), bench.redis.clone());
    bench.url = primary.url();
    bench.redis.url = Some(primary.url());
    let one = crate::broker::WaitReplicas {
        replicas: 1,
        timeout: Duration::from_millis(100),
    };
    // The replica linked and acknowledging before anything is measured.
    bench.redis.wait = Some(one);
    let probe_settings = bench.settings("bench-wait-probe", |_| {})?;
    let probe = bench.broker(&probe_settings).await;
    let linked = Instant::now();
    let mut confirmed = false;
    if let Ok(probe) = &probe {
        while linked.elapsed() < Duration::from_secs(20) {
            if probe
                .wait_written(&["probe"])
                .await
                .is_some_and(|r| !r.short())
            {
                confirmed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if !confirmed {
        (bench.url, bench.redis) = saved;
        return Err(Error::Timeout(
            "bench wait: the replica did not acknowledge within 20 s".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut result = Ok(());
    // The runs alternate here, one run of each inner scenario at a time (`enqueue` would
    // otherwise repeat itself too).
    let repeat = bench.opts.repeat.max(1);
    bench.opts.repeat = 1;
    for _ in 0..repeat {
        for wait in [None, Some(one)] {
            bench.redis.wait = wait;
            let label = if wait.is_some() {
                "wait_replicas=1"
            } else {
                "wait_replicas=0"
            };
            let got = async {
                let mut got = enqueue(bench).await?;
                got.push(drain(bench, 1, None).await?);
                Ok::<_, Error>(got)
            }
            .await;
            match got {
                Ok(got) => rows.extend(got.into_iter().map(|mut r| {
                    r.scenario = format!("{} ({label}, 1 replica)", r.scenario);
                    r
                })),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    (bench.url, bench.redis) = saved;
    bench.opts.repeat = repeat;
    drop(replica);
    drop(primary);
    result?;
    // The median run of each row when repeated.
    let mut by_name: Vec<(String, Vec<BenchRow>)> = Vec::new();
    for r in rows {
        match by_name.iter_mut().find(|(n, _)| *n == r.scenario) {
            Some((_, v)) => v.push(r),
            None => by_name.push((r.scenario.clone(), vec![r])),
        }
    }
    Ok(by_name.into_iter().map(|(_, v)| median(v)).collect())
}

/// How long the `idle` scenario counts an idle member's Redis commands.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// The `idle` scenario: a member that has served `n` tenants one task each, then idles; Redis's
/// own per-command call counts (`INFO commandstats`, script-inner commands included) over
/// [`IDLE_WINDOW`], for n = 10, 100 and 1,000. The figure should not grow with n.
async fn idle(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for tenants in [10usize, 100, 1000, 3000] {
        let prefix = bench.next_prefix();
        let settings = bench.settings(&prefix, |_| {})?;
        let broker = bench.broker(&settings).await?;
        let producer = Producer::new(broker.clone(), &settings);
        let names: Vec<String> = (0..tenants).map(|i| format!("t{i:04}")).collect();
        let mut tasks = Vec::with_capacity(tenants);
        for name in &names {
            tasks.extend(bench.new_tasks(name, 1, ""));
        }
        producer.enqueue_batch(tasks).await?;
        let fleet = bench.start_fleet(broker.clone(), &settings, Arc::new(NoopHandler), None);
        fleet.until_settled(tenants as u64, LIMIT).await?;
        // The start-up's own work (discovery, the first rounds of every loop) passes first,
        // and so does the tasks' own recency: a tenant whose entries the member held within
        // `ACTIVE_FOR` has its breaker read on every isolation pass, which is work for tenants
        // that were just busy, not idle work.
        tokio::time::sleep(crate::fleet::isolation_sync::ACTIVE_FOR + Duration::from_secs(1)).await;
        broker.reset_server_stats().await?;
        tokio::time::sleep(IDLE_WINDOW).await;
        let calls = broker.command_calls().await?;
        let reads = broker.socket_reads().await?;
        fleet.stop(&broker).await?;
        for name in &names {
            broker.drop_tenant(name).await?;
        }
        // The bench's own INFO is not the member's.
        let calls: Vec<(String, u64)> = calls.into_iter().filter(|(c, _)| c != "info").collect();
        let total: u64 = calls.iter().map(|(_, n)| n).sum();
        let secs = IDLE_WINDOW.as_secs_f64();
        let top: Vec<String> = calls
            .iter()
            .take(6)
            .map(|(c, n)| format!("{c} {:.1}/s", *n as f64 / secs))
            .collect();
        let per_master: Vec<String> = reads
            .iter()
            .map(|n| format!("{:.0}", *n as f64 / secs))
            .collect();
        rows.push(BenchRow {
            scenario: format!("idle member, Redis commands/s: {tenants} tenants"),
            tasks: tenants as u64,
            seconds: secs,
            per_second: Some(total as f64 / secs),
            ratio_to_raw: None,
            latency_ms: None,
            note: format!(
                "commands per second (not tasks), script-inner ones included, over {:.0} s; \
                 round trips (socket reads)/s per master: {}; most called: {}",
                secs,
                per_master.join(" + "),
                top.join(", ")
            ),
        });
    }
    Ok(rows)
}

/// The `shards` scenario: `--tasks` tasks over 100 tenants drained by one member on a private
/// redis-server, then on a private 3-master cluster (masters only), alternating run by run so
/// drift hits both alike; one row each, the median of `--repeat` runs.
async fn shards(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let single = RedisServer::start()?;
    let cluster = LocalCluster::start(3)?;
    let saved = (bench.url.clone(), bench.redis.cluster);
    let mut one = Vec::new();
    let mut three = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..bench.opts.repeat.max(1) {
        for (url, on_cluster) in [(single.url(), false), (cluster.url(), true)] {
            bench.url = url;
            bench.redis.cluster = on_cluster;
            match drain(bench, 100, None).await {
                Ok(row) if on_cluster => three.push(row),
                Ok(row) => one.push(row),
                Err(e) => outcome = Err(e),
            }
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_err() {
            break;
        }
    }
    (bench.url, bench.redis.cluster) = saved;
    outcome?;
    let mut one = median(one);
    let mut three = median(three);
    one.scenario = "shards: 100 tenants, 1 redis-server".into();
    three.scenario = "shards: 100 tenants, 3-master cluster".into();
    for r in [&mut one, &mut three] {
        r.ratio_to_raw = None;
    }
    if let (Some(a), Some(b)) = (one.per_second, three.per_second) {
        three.note = format!("{:.2}× one server; {}", b / a.max(1e-9), three.note);
    }
    Ok(vec![one, three])
}

/// The `api-load` scenario ([`crate::app::bench_api`]): `--tasks` dead letters, at most
/// 100,000, over 100 tenants; breakers off and one attempt, so every task is dead-lettered at
/// its first failure.
async fn api_load(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |c| {
        c.retry.max_attempts = 1;
        c.isolation.breaker.enabled = false;
    })?;
    let broker = bench.broker(&settings).await?;
    let n = bench.opts.tasks.min(100_000);
    Ok(crate::app::bench_api::run(&settings, &broker, n)
        .await?
        .into_iter()
        .map(|r| BenchRow {
            scenario: r.name,
            tasks: n as u64,
            seconds: r.samples_us.iter().sum::<u64>() as f64 / 1e6,
            per_second: None,
            ratio_to_raw: None,
            latency_ms: Percentiles::of_micros(r.samples_us),
            note: r.note,
        })
        .collect())
}

async fn end_to_end(bench: &mut Bench, rate: Option<u64>) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let probe = Probe::new(bench.epoch, None);
    let handler = Arc::new(ProbeHandler {
        probe: probe.clone(),
    });
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, Some(probe.clone()));
    // Let the member discover nothing and settle into its idle read before load starts.
    broker.ensure_group("t").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let total = match rate {
        Some(r) => (r * bench.opts.rate_seconds) as usize,
        None => bench.opts.tasks,
    };
    let epoch = bench.epoch;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        let want = match rate {
            Some(r) => {
                tick.tick().await;
                ((started.elapsed().as_secs_f64() * r as f64) as usize).min(total) - sent
            }
            None => (total - sent).min(500),
        };
        if want == 0 {
            continue;
        }
        let now = micros(epoch);
        let tasks = bench.new_tasks("t", want, &format!("\"t_us\":{now},"));
        let done = producer.enqueue_batch(tasks).await?;
        probe.record_sent(done.into_iter().map(|e| e.entry_id), now);
        sent += want;
    }
    fleet.until_settled(total as u64, LIMIT).await?;
    let took = started.elapsed();
    fleet.stop(&broker).await?;
    broker.drop_tenant("t").await?;
    let start = Percentiles::of_micros(probe.start_latencies());
    let done = Percentiles::of_micros(probe.done_latencies());
    let per_second = total as f64 / took.as_secs_f64();
    let fmt = |p: Option<Percentiles>| {
        p.map(|p| {
            format!(
                "p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms",
                p.p50, p.p99, p.p999, p.max
            )
        })
        .unwrap_or_else(|| "n/a".into())
    };
    Ok(BenchRow {
        scenario: match rate {
            Some(r) => format!("end to end at {r}/s offered"),
            None => "end to end, flat out".into(),
        },
        tasks: total as u64,
        seconds: took.as_secs_f64(),
        per_second: Some(per_second),
        ratio_to_raw: bench.ratio(per_second),
        latency_ms: start,
        note: format!(
            "latency column: enqueue→start; enqueue→done (acked): {}",
            fmt(done)
        ),
    })
}

async fn failure(bench: &mut Bench) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |c| {
        c.retry.max_attempts = 3;
        c.retry.backoff = crate::policy::Backoff::Tiered;
        c.retry.delays_ms = vec![0];
        c.retry.jitter = crate::policy::Jitter::None;
        c.retry.poll_interval_ms = 10;
        c.retry.promote_batch = 1000;
    })?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let n = bench.opts.tasks;
    let failing = n / 10;
    let mut tasks = bench.new_tasks("t", n - failing, "");
    tasks.extend(bench.new_tasks("t", failing, "\"fail\":1,"));
    // Interleave: every tenth task fails.
    let mut mixed = Vec::with_capacity(n);
    let (ok, bad) = tasks.split_at(n - failing);
    let mut ok = ok.iter();
    let mut bad = bad.iter();
    for i in 0..n {
        let next = if i % 10 == 9 { bad.next() } else { ok.next() };
        if let Some(t) = next.or_else(|| ok.next()).or_else(|| bad.next()) {
            mixed.push(t.clone());
        }
    }
    producer.enqueue_batch(mixed).await?;
    let probe = Probe::new(bench.epoch, None);
    let handler = Arc::new(ProbeHandler { probe });
    let cost = CostProbe::start(&broker).await?;
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, None);
    let took = fleet.until_settled(n as u64, LIMIT).await?;
    let cost = cost.finish(&broker, n as u64).await?;
    let tally = fleet.stats.snapshot();
    fleet.stop(&broker).await?;
    let dead = broker.dlq_len("t").await?;
    let t = tally.get("t").cloned().unwrap_or_default();
    broker.drop_tenant("t").await?;
    if dead != failing as u64 {
        return Err(Error::Protocol(format!(
            "bench failure path: {dead} dead letters, expected exactly {failing}"
        )));
    }
    let rate = n as f64 / took.as_secs_f64();
    Ok(BenchRow {
        scenario: "failure path: 10% fail, 3 attempts".into(),
        tasks: n as u64,
        seconds: took.as_secs_f64(),
        per_second: Some(rate),
        ratio_to_raw: bench.ratio(rate),
        latency_ms: None,
        note: format!(
            "{} completed, {} retries, {dead} dead-lettered (expected {failing}: exact); {cost}",
            t.completed, t.retried
        ),
    })
}

async fn reclaim(bench: &mut Bench) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let idle_ms = 2_000;
    let settings = bench.settings(&prefix, |c| {
        c.reclaim.min_idle_ms = idle_ms;
        c.fleet.task_timeout_ms = 30_000;
    })?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let n = 500;
    // The victim (demo agent) works a minute on each; the survivor's probe handler finishes
    // them at once and records when each started again ("t_us":0 makes the recorded latency
    // the start time itself).
    let slow: serde_json::Value =
        serde_json::json!({"simulate": "ok", "work_ms": 60_000, "t_us": 0});
    let tasks = (0..n)
        .map(|_| NewTask::new("t", "bench", slow.clone()))
        .collect();
    producer.enqueue_batch(tasks).await?;
    let mut victim = bench.spawn_member(
        &prefix,
        "victim",
        &[
            ("REDRIVE_FLEET__CONCURRENCY", "500"),
            ("REDRIVE_RECLAIM__MIN_IDLE_MS", &idle_ms.to_string()),
        ],
    )?;
    let started = Instant::now();
    while broker.pending_count("t").await? < n as u64 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(Error::Protocol(
                "bench: the victim member never took its tasks".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The survivor is up and idle before the kill.
    let probe = Probe::new(bench.epoch, None);
    let handler = Arc::new(ProbeHandler {
        probe: probe.clone(),
    });
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill9();
    let killed = Instant::now();
    let killed_us = micros(bench.epoch);
    fleet.until_settled(n as u64, LIMIT).await?;
    let all_done = killed.elapsed();
    fleet.stop(&broker).await?;
    broker.drop_tenant("t").await?;
    let restarts: Vec<u64> = probe
        .start_latencies()
        .into_iter()
        .map(|at| at.saturating_sub(killed_us))
        .collect();
    let first = restarts.iter().min().copied().unwrap_or(0) as f64 / 1e6;
    let last = restarts.iter().max().copied().unwrap_or(0) as f64 / 1e6;
    Ok(BenchRow {
        scenario: "reclaim after SIGKILL".into(),
        tasks: n as u64,
        seconds: last,
        per_second: None,
        ratio_to_raw: None,
        latency_ms: None,
        note: format!(
            "the killed member's {n} entries ran again {first:.2}–{last:.2} s after the kill, all done at {:.2} s; \
             reclaim.min_idle_ms = {idle_ms}, interval {} ms (target ≤ idle + 1 s = {:.1} s)",
            all_done.as_secs_f64(),
            settings.fleet.reclaim.interval.as_millis(),
            idle_ms as f64 / 1000.0 + 1.0
        ),
    })
}

async fn fairness(bench: &mut Bench) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let big = bench.opts.tasks;
    producer
        .enqueue_batch(bench.new_tasks("big", big, ""))
        .await?;
    // The small tenant is known before the member starts (one unmeasured task), so the figure
    // is about sharing, not about discovering a new tenant (up to fleet.discovery_interval_ms).
    producer
        .enqueue_batch(bench.new_tasks("small", 1, ""))
        .await?;
    let probe = Probe::new(bench.epoch, Some("small"));
    let handler = Arc::new(ProbeHandler {
        probe: probe.clone(),
    });
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, Some(probe.clone()));
    // Wait until the large backlog is draining, then trickle the small tenant's tasks in.
    while fleet.stats.settled() < (big / 10) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let small = 200;
    let started = Instant::now();
    let mut backlog_during = Vec::new();
    for _ in 0..small {
        let now = micros(bench.epoch);
        let done = producer
            .enqueue_batch(bench.new_tasks("small", 1, &format!("\"t_us\":{now},")))
            .await?;
        probe.record_sent(done.into_iter().map(|e| e.entry_id), now);
        backlog_during.push(big as u64 - fleet.stats.settled().min(big as u64));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sent_for = started.elapsed();
    fleet.until_settled((big + small + 1) as u64, LIMIT).await?;
    fleet.stop(&broker).await?;
    broker.drop_tenant("big").await?;
    broker.drop_tenant("small").await?;
    let min_backlog = backlog_during.iter().copied().min().unwrap_or(0);
    Ok(BenchRow {
        scenario: "fairness: small tenant vs backlog".into(),
        tasks: small as u64,
        seconds: sent_for.as_secs_f64(),
        per_second: None,
        ratio_to_raw: None,
        latency_ms: Percentiles::of_micros(probe.start_latencies()),
        note: format!(
            "small tenant's enqueue→start while a {big}-task backlog drained (≥ {min_backlog} still waiting at every small enqueue)"
        ),
    })
}

/// New tenants of the `discovery` scenario, and the pause between two of them.
const NEW_TENANTS: usize = 200;
const NEW_TENANT_EVERY: Duration = Duration::from_millis(5);

/// `discovery`: a member idles with one known tenant (its read blocked, as a quiet fleet's
/// is); then [`NEW_TENANTS`] tenants it has never seen enqueue one task each, one every
/// [`NEW_TENANT_EVERY`]; each task's enqueue→start. With `signals` the producer announces each
/// new tenant and the member serves it at once; without, the member finds it at its next
/// periodic look (`fleet.discovery_interval_ms` at its default, 500 ms).
async fn new_tenants(bench: &mut Bench, signals: bool) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |raw| {
        raw.fleet.tenant_signals = signals;
        raw.fleet.discovery_interval_ms = 500;
    })?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    producer
        .enqueue_batch(bench.new_tasks("known", 1, ""))
        .await?;
    let probe = Probe::new(bench.epoch, None);
    let handler = Arc::new(ProbeHandler {
        probe: probe.clone(),
    });
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, Some(probe.clone()));
    fleet.until_settled(1, LIMIT).await?;
    // Idle: the reader is now blocked on the one lane it knows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for i in 0..NEW_TENANTS {
        let now = micros(bench.epoch);
        let tenant = format!("new-{i}");
        let done = producer
            .enqueue_batch(bench.new_tasks(&tenant, 1, &format!("\"t_us\":{now},")))
            .await?;
        probe.record_sent(done.into_iter().map(|e| e.entry_id), now);
        tokio::time::sleep(NEW_TENANT_EVERY).await;
    }
    let sent_for = started.elapsed();
    fleet.until_settled((NEW_TENANTS + 1) as u64, LIMIT).await?;
    fleet.stop(&broker).await?;
    broker.drop_tenant("known").await?;
    for i in 0..NEW_TENANTS {
        broker.drop_tenant(&format!("new-{i}")).await?;
    }
    let how = if signals {
        "announced by the producer (fleet.tenant_signals = true, the default)"
    } else {
        "found by the periodic look only (tenant_signals = false, discovery_interval_ms = 500)"
    };
    Ok(BenchRow {
        scenario: format!(
            "discovery: new tenant, {}",
            if signals { "announced" } else { "polled" }
        ),
        tasks: NEW_TENANTS as u64,
        seconds: sent_for.as_secs_f64(),
        per_second: None,
        ratio_to_raw: None,
        latency_ms: Percentiles::of_micros(probe.start_latencies()),
        note: format!("a never-seen tenant's first task, enqueue→start; {how}"),
    })
}

/// What the tasks of the `log-volume` storm fail with (the demo agent's forced outcome) and
/// whether that class is retried (three attempts) or dead-lettered at once.
const STORM_CAUSES: [(&str, bool); 3] = [
    ("rate_limited", true),
    ("malformed_output", false),
    ("context_overflow", false),
];
/// Tenants of the `log-volume` storm.
const STORM_TENANTS: usize = 10;

/// `log-volume`: the storm with summaries on (the default) and off (every line, as before).
async fn log_volume(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let on = log_storm(bench, None).await?;
    let off = log_storm(bench, Some(0)).await?;
    Ok(vec![on, off])
}

/// Every task fails (a third each of [`STORM_CAUSES`], over [`STORM_TENANTS`] tenants; three
/// attempts, no backoff, breakers off so the storm runs straight through) in a child member at
/// the default log level, `log.storm_interval_ms` = `interval_ms` (the default when `None`).
/// Its stderr is counted to the end of a clean stop.
async fn log_storm(bench: &mut Bench, interval_ms: Option<u64>) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let n = bench.opts.tasks;
    let tenants: Vec<String> = (0..STORM_TENANTS).map(|i| format!("t{i}")).collect();
    let mut tasks = Vec::with_capacity(n);
    let mut transient = 0u64;
    for i in 0..n {
        let (simulate, retried) = STORM_CAUSES[i % STORM_CAUSES.len()];
        transient += retried as u64;
        // Payloads of varying length make the context overflow's message differ per task
        // (its fingerprint's pattern masks the number).
        let body = serde_json::json!({
            "simulate": simulate,
            "work_ms": 0,
            "text": "x".repeat(120 + i % 80),
        });
        tasks.push(NewTask::new(&tenants[i % STORM_TENANTS], "bench", body));
    }
    // A transient task fails three times and is retried twice; every task ends dead-lettered.
    let failed_attempts = n as u64 + 2 * transient;
    let retries = 2 * transient;
    let events = failed_attempts + retries + n as u64;
    producer.enqueue_batch(tasks).await?;
    let (concurrency, read_batch) = (
        bench.opts.concurrency.to_string(),
        bench.opts.read_batch.to_string(),
    );
    let interval = interval_ms.map(|ms| ms.to_string());
    let mut env = vec![
        // The default level (the bench's children log errors only otherwise).
        ("REDRIVE_LOG__LEVEL", "info"),
        ("REDRIVE_FLEET__CONCURRENCY", concurrency.as_str()),
        ("REDRIVE_FLEET__READ_BATCH", read_batch.as_str()),
        ("REDRIVE_RETRY__DELAYS_MS", "[0]"),
        ("REDRIVE_RETRY__JITTER", "none"),
        ("REDRIVE_RETRY__POLL_INTERVAL_MS", "10"),
        ("REDRIVE_RETRY__PROMOTE_BATCH", "1000"),
        ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
    ];
    if let Some(ms) = &interval {
        env.push(("REDRIVE_LOG__STORM_INTERVAL_MS", ms.as_str()));
    }
    let mut cmd = bench.member_command(&prefix, "storm", &env);
    cmd.env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped());
    let mut member = Child {
        child: cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bench.exe.display()), e))?,
    };
    let stderr = member
        .child
        .stderr
        .take()
        .ok_or_else(|| Error::Protocol("bench: the storm member has no stderr".into()))?;
    let counting = LogTally::spawn(stderr);
    let started = Instant::now();
    let mut dead = 0;
    while dead < n as u64 {
        if started.elapsed() > LIMIT || member.child.try_wait().ok().flatten().is_some() {
            return Err(Error::Protocol(format!(
                "bench log volume: {dead} of {n} tasks dead-lettered when the member stopped or {LIMIT:?} passed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        dead = 0;
        for t in &tenants {
            dead += broker.dlq_len(t).await?;
        }
    }
    let took = started.elapsed();
    let clean = member.terminate(Duration::from_secs(30)).await;
    let tally = counting
        .join()
        .map_err(|_| Error::Protocol("bench: the log counter panicked".into()))?;
    for t in &tenants {
        broker.drop_tenant(t).await?;
    }
    broker.drop_admin_stream().await?;
    if dead != n as u64 || !clean {
        return Err(Error::Protocol(format!(
            "bench log volume: {dead} dead letters for {n} tasks, clean stop: {clean}"
        )));
    }
    let accounted = tally.failure_lines + tally.suppressed;
    let mode = match interval_ms {
        None => format!(
            "summaries every {} s (default)",
            settings.log_storm_interval.as_secs_f64()
        ),
        Some(_) => "summaries off (log.storm_interval_ms = 0: every line, as before)".to_owned(),
    };
    Ok(BenchRow {
        scenario: match interval_ms {
            None => "log volume: every task fails, default level".into(),
            Some(_) => "log volume: every task fails, summaries off".into(),
        },
        tasks: n as u64,
        seconds: took.as_secs_f64(),
        per_second: None,
        ratio_to_raw: None,
        latency_ms: None,
        note: format!(
            "{} log lines ({} at WARN), {:.1} KiB, for {events} failure events ({failed_attempts} failed attempts, \
             {retries} retries, {n} dead letters: exact) over {STORM_TENANTS} tenants and {} causes; \
             {} failure lines in full + {} summarised in {} summaries = {accounted} ({}); {mode}; \
             {:.2} lines per 1,000 tasks",
            tally.lines,
            tally.warn,
            tally.bytes as f64 / 1024.0,
            STORM_CAUSES.len(),
            tally.failure_lines,
            tally.suppressed,
            tally.summaries,
            if accounted == events { "every event accounted for" } else { "MISMATCH" },
            tally.lines as f64 * 1000.0 / n as f64,
        ),
    })
}

async fn memory(bench: &mut Bench) -> Result<BenchRow> {
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let n = 10_000;
    let mut member = bench.spawn_member(
        &prefix,
        "weighed",
        &[
            ("REDRIVE_FLEET__CONCURRENCY", "10000"),
            ("REDRIVE_FLEET__READ_BATCH", "1000"),
            ("REDRIVE_FLEET__TASK_TIMEOUT_MS", "600000"),
            ("REDRIVE_RECLAIM__MIN_IDLE_MS", "700000"),
        ],
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = member.rss_kib();
    let body = payload("\"simulate\":\"ok\",\"work_ms\":600000,");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let tasks = (0..n)
        .map(|_| NewTask::new("t", "bench", body.clone()))
        .collect();
    producer.enqueue_batch(tasks).await?;
    let started = Instant::now();
    while broker.pending_count("t").await? < n as u64 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(Error::Protocol(
                "bench: the member never took all 10,000 tasks".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = member.rss_kib();
    member.kill9();
    broker.drop_tenant("t").await?;
    let mib = |k: u64| k as f64 / 1024.0;
    let note = match (idle, loaded) {
        (Some((_, idle_rss)), Some((hwm, rss))) => format!(
            "peak RSS {:.1} MiB with {n} tasks in flight (RSS now {:.1} MiB; idle member {:.1} MiB; {:.1} KiB per in-flight task)",
            mib(hwm),
            mib(rss),
            mib(idle_rss),
            (rss.saturating_sub(idle_rss)) as f64 / n as f64
        ),
        _ => "RSS not readable on this system (/proc)".into(),
    };
    Ok(BenchRow {
        scenario: "memory: 10,000 in flight".into(),
        tasks: n as u64,
        seconds: started.elapsed().as_secs_f64(),
        per_second: None,
        ratio_to_raw: None,
        latency_ms: None,
        note,
    })
}

/// A handler that succeeds with a 200-byte JSON output (what a record keeps as the result).
struct OutputHandler;

impl Handler for OutputHandler {
    fn handle(&self, _task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            ctx.output(serde_json::json!({
                "label": "billing",
                "confidence": 0.93,
                "summary": "x".repeat(150),
            }));
            Outcome::Done
        })
    }
}

/// Redis memory of task records: 10,000 tasks enqueued (queued records), drained with a
/// 200-byte output (done records with a result), and again without output; `MEMORY USAGE` of
/// every record, of the index and of the events stream.
async fn records(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let n = 10_000usize;
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |_| {})?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    let mut rows = Vec::new();
    let retention = settings.tasks().retention.as_secs_f64();
    for (tenant, handler, what) in [
        (
            "with-output",
            Arc::new(OutputHandler) as Arc<dyn Handler>,
            "done, 200-byte output",
        ),
        ("no-output", Arc::new(NoopHandler), "done, no output"),
    ] {
        producer
            .enqueue_batch(bench.new_tasks(tenant, n, ""))
            .await?;
        let queued = broker.record_memory(tenant).await?;
        let fleet = bench.start_fleet(broker.clone(), &settings, handler, None);
        let took = fleet.until_settled(n as u64, LIMIT).await?;
        fleet.stop(&broker).await?;
        let done = broker.record_memory(tenant).await?;
        broker.drop_tenant(tenant).await?;
        if tenant == "with-output" {
            rows.push(BenchRow {
                scenario: "records: queued".into(),
                tasks: queued.records,
                seconds: 0.0,
                per_second: None,
                ratio_to_raw: None,
                latency_ms: None,
                note: format!(
                    "{:.0} bytes per record + {:.0} per index entry (10,000 records, MEMORY USAGE)",
                    queued.per_record(),
                    queued.per_index_entry()
                ),
            });
        }
        let per_task = done.per_record()
            + done.per_record_in_logs()
            + done.per_index_entry()
            + done.per_event();
        rows.push(BenchRow {
            scenario: format!("records: {what}"),
            tasks: done.records,
            seconds: took.as_secs_f64(),
            per_second: None,
            ratio_to_raw: None,
            latency_ms: None,
            note: format!(
                "{:.0} bytes per record + {:.0} in done logs ({} logs) + {:.0} per index entry + \
                 {:.0} per events entry = {per_task:.0} per finished task; at 100 tasks/s kept \
                 {:.0} h: {:.2} GiB",
                done.per_record(),
                done.per_record_in_logs(),
                done.done_logs,
                done.per_index_entry(),
                done.per_event(),
                retention / 3600.0,
                per_task * 100.0 * retention / (1024.0 * 1024.0 * 1024.0)
            ),
        });
    }
    Ok(rows)
}

/// The `http` handler against the bench's Rust agent, next to the no-op drain of the same run
/// (both against the raw ceiling).
async fn http(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let agent = AgentProcess::start(&bench.exe)?;
    let noop = repeated(bench, drain_one).await?;
    bench.drain_agent = Some(DrainAgent::Http {
        url: agent.url("/ok"),
        what: "Rust agent",
    });
    let row = repeated(bench, drain_one_agent).await;
    bench.drain_agent = None;
    let mut row = row?;
    if let (Some(h), Some(n)) = (row.per_second, noop.per_second) {
        row.note = format!(
            "{:.2}× the no-op drain of this run; one POST per task over kept-alive \
             connections to a hyper agent in a child process; {}",
            h / n.max(1e-9),
            row.note
        );
    }
    Ok(vec![noop, row])
}

/// The `http` handler against the Python SDK's HTTP server, next to the no-op drain.
async fn http_python(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let py = PythonAgent::prepare()?;
    let (_server, url) = py.serve_http()?;
    let noop = repeated(bench, drain_one).await?;
    bench.drain_agent = Some(DrainAgent::Http {
        url,
        what: "Python SDK server",
    });
    let row = repeated(bench, drain_one_agent).await;
    bench.drain_agent = None;
    let rate = noop.per_second;
    Ok(vec![noop, compared(row?, rate, "one POST per task to the Python SDK's threaded stdlib server (a sync no-op handler), kept-alive")])
}

/// The `pool` handler with two Python SDK processes, next to the no-op drain.
async fn pool_python(bench: &mut Bench) -> Result<Vec<BenchRow>> {
    let py = PythonAgent::prepare()?;
    let concurrency = 32;
    let noop = repeated(bench, drain_one).await?;
    bench.drain_agent = Some(DrainAgent::Pool {
        command: py.pool_command(concurrency),
        dir: py.dir.clone(),
        processes: 2,
        concurrency,
    });
    let row = repeated(bench, drain_one_agent).await;
    bench.drain_agent = None;
    let rate = noop.per_second;
    Ok(vec![noop, compared(row?, rate, "one JSON line each way per task over stdio to `python -m redrive pool` (an async no-op handler), processes started inside the timed drain")])
}

/// `row` with its rate relative to the no-op drain and `how` in front of its note.
fn compared(mut row: BenchRow, noop: Option<f64>, how: &str) -> BenchRow {
    if let (Some(r), Some(n)) = (row.per_second, noop) {
        row.note = format!(
            "{:.2}× the no-op drain of this run; {how}; {}",
            r / n.max(1e-9),
            row.note
        );
    }
    row
}

/// VmHWM and VmRSS of this process, KiB.
fn own_rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The soft limit on open files of this process.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Peak RSS of this process — the member — with 10,000 `http` attempts in flight against an
/// agent (a child process) that holds every request until told to answer.
async fn http_memory(bench: &mut Bench) -> Result<BenchRow> {
    let n = 10_000usize;
    let scenario = "memory: 10,000 http in flight".to_owned();
    // One socket per attempt here and in the agent.
    if let Some(limit) = open_file_limit().filter(|l| *l < n as u64 + 1_000) {
        return Ok(BenchRow {
            scenario,
            tasks: 0,
            seconds: 0.0,
            per_second: None,
            ratio_to_raw: None,
            latency_ms: None,
            note: format!(
                "not run: the open-file limit is {limit} (ulimit -n); it needs {}",
                n + 1_000
            ),
        });
    }
    let agent = AgentProcess::start(&bench.exe)?;
    let prefix = bench.next_prefix();
    let settings = bench.settings(&prefix, |c| {
        c.fleet.concurrency = n;
        c.fleet.read_batch = 1_000;
        c.fleet.task_timeout_ms = 600_000;
        c.reclaim.min_idle_ms = 700_000;
    })?;
    let broker = bench.broker(&settings).await?;
    let producer = Producer::new(broker.clone(), &settings);
    producer.enqueue_batch(bench.new_tasks("t", n, "")).await?;
    // The peak from here on (Linux: "5" resets VmHWM), not the earlier scenarios'.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let idle = own_rss_kib();
    let handler = http_handler(&agent.url("/hold"), Duration::from_secs(600), n)?;
    let started = Instant::now();
    let fleet = bench.start_fleet(broker.clone(), &settings, handler, None);
    while agent.held().await? < n {
        if started.elapsed() > Duration::from_secs(120) || fleet.task.is_finished() {
            let held = agent.held().await.unwrap_or(0);
            agent.release().await?;
            fleet.stop(&broker).await?;
            broker.drop_tenant("t").await?;
            return Err(Error::Protocol(format!(
                "bench: only {held} of {n} http attempts reached the agent within 120 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_in_flight = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = own_rss_kib();
    agent.release().await?;
    fleet.until_settled(n as u64, LIMIT).await?;
    let took = started.elapsed();
    fleet.stop(&broker).await?;
    broker.drop_tenant("t").await?;
    let mib = |k: u64| k as f64 / 1024.0;
    let note = match (idle, loaded) {
        (Some((_, idle_rss)), Some((hwm, rss))) => format!(
            "peak RSS {:.1} MiB {} with {n} http attempts in flight (RSS then {:.1} MiB; before \
             the member started {:.1} MiB; {:.1} KiB per in-flight attempt); all in flight \
             after {:.2} s, all answered and settled at {:.2} s",
            mib(hwm),
            if reset {
                "since the scenario began"
            } else {
                "since the bench began (clear_refs refused)"
            },
            mib(rss),
            mib(idle_rss),
            rss.saturating_sub(idle_rss) as f64 / n as f64,
            all_in_flight.as_secs_f64(),
            took.as_secs_f64()
        ),
        _ => "RSS not readable on this system (/proc)".into(),
    };
    Ok(BenchRow {
        scenario,
        tasks: n as u64,
        seconds: took.as_secs_f64(),
        per_second: None,
        ratio_to_raw: None,
        latency_ms: None,
        note,
    })
}

/// The report as a table.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "redrive bench — {} on this machine ({} cores){}\n\n",
        report.redis,
        report.cores,
        if report.release_build {
            ""
        } else {
            " — DEBUG BUILD: figures are not meaningful, use --release"
        }
    ));
    out.push_str(&format!(
        "{:<36} {:>8} {:>8} {:>11} {:>6}  {:>8} {:>8} {:>8}  notes\n",
        "scenario", "tasks", "seconds", "tasks/s", "× raw", "p50 ms", "p99 ms", "p99.9"
    ));
    for r in &report.results {
        let lat = |f: fn(&Percentiles) -> f64| {
            r.latency_ms
                .as_ref()
                .map(|p| format!("{:.2}", f(p)))
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "{:<36} {:>8} {:>8.2} {:>11} {:>6}  {:>8} {:>8} {:>8}  {}\n",
            r.scenario,
            r.tasks,
            r.seconds,
            r.per_second.map(|v| format!("{v:.0}")).unwrap_or_default(),
            r.ratio_to_raw
                .map(|v| format!("{v:.2}"))
                .unwrap_or_default(),
            lat(|p| p.p50),
            lat(|p| p.p99),
            lat(|p| p.p999),
            r.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_200_bytes_of_json_with_their_extras() {
        for extra in ["", "\"t_us\":123456789,", "\"fail\":1,"] {
            let p = payload(extra);
            assert_eq!(p.len(), 200, "{p}");
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            assert!(v.get("text").is_some());
        }
        assert_eq!(sent_at(&payload("\"t_us\":42,")), Some(42));
        assert_eq!(sent_at(&payload("")), None);
    }

    #[test]
    fn percentiles_pick_the_right_samples() {
        let p = Percentiles::of_micros((1..=1000).collect()).unwrap();
        assert_eq!(p.p50, 0.5);
        assert_eq!(p.p99, 0.99);
        assert_eq!(p.p999, 0.999);
        assert_eq!(p.max, 1.0);
        assert!(Percentiles::of_micros(Vec::new()).is_none());
    }
}
