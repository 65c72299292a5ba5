//! Configuration in two steps: figment layers into [`RawConfig`], then [`Settings::from_raw`]
//! validates it and rejects contradictions with a message that names the setting.
//!
//! `config/default.toml` is compiled in as the first layer, so it is the single list of every
//! setting and its default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

pub use crate::broker::{redact_url, RedisSettings};
use crate::classify::{Classifier, Rule};
use crate::error::{Error, Result};
use crate::handler::FailureClass;
use crate::isolation::{BreakerSettings, IsolationSettings, TenantOverride};
use crate::policy::{Backoff, Jitter, Policies, PolicyOverride, RetryPolicy};
use crate::task::Limits;
pub use crate::telemetry::{LogFormat, MetricsSettings};

/// The documented defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The `[redis]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Connection URL; empty means not configured.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Timeout of non-blocking commands.
    pub response_timeout_ms: u64,
}

/// The `[fleet]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// Consumer name; empty means the host name.
    pub member_id: String,
    /// Consumer group name.
    pub group: String,
    /// Handler name.
    pub handler: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Largest read.
    pub read_batch: usize,
    /// Block time of idle reads.
    pub block_ms: u64,
    /// Per-task timeout.
    pub task_timeout_ms: u64,
    /// Shutdown grace period.
    pub shutdown_grace_ms: u64,
    /// Largest ack batch.
    pub ack_batch: usize,
    /// Registry check period.
    pub discovery_interval_ms: u64,
    /// Lanes per read.
    pub max_lanes_per_read: usize,
    /// Member lease time to live.
    pub lease_ttl_ms: u64,
}

/// The `[retry]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all.
    pub max_attempts: u32,
    /// "tiered" or "exponential".
    pub backoff: Backoff,
    /// Tier delays.
    pub delays_ms: Vec<u64>,
    /// Exponential base.
    pub base_ms: u64,
    /// Exponential factor.
    pub factor: f64,
    /// Delay cap.
    pub max_delay_ms: u64,
    /// Jitter mode.
    pub jitter: Jitter,
    /// Recovery loop period.
    pub poll_interval_ms: u64,
    /// Retries per atomic move.
    pub promote_batch: usize,
    /// Per-kind overrides.
    pub kinds: BTreeMap<String, PolicyOverride>,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, PolicyOverride>,
}

/// The `[reclaim]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReclaim {
    /// Idle time before an entry is reclaimed.
    pub min_idle_ms: u64,
    /// Scan period.
    pub interval_ms: u64,
    /// Entries per claim step.
    pub batch: usize,
    /// Poison threshold on deliveries.
    pub max_deliveries: u64,
    /// Whether members heartbeat their entries.
    pub heartbeat: bool,
}

/// The `[isolation.breaker]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Whether failures open breakers automatically.
    pub enabled: bool,
    /// Fewest failures in the window that open a breaker.
    pub min_failures: u64,
    /// Lowest failure rate that opens it.
    pub failure_rate: f64,
    /// The failure window.
    pub window_ms: u64,
    /// Time an open breaker holds its tenant before one probe.
    pub cooldown_ms: u64,
    /// Failure classes not counted.
    pub ignore_classes: Vec<String>,
}

/// The `[isolation]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIsolation {
    /// Breaker read / outcome flush / reservation renewal period.
    pub refresh_interval_ms: u64,
    /// Lifetime of a member's reservation without renewal.
    pub slot_ttl_ms: u64,
    /// Default fleet-wide cap per tenant (0: none).
    pub max_in_flight: usize,
    /// Default weight.
    pub weight: u32,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, TenantOverride>,
    /// The circuit breaker.
    pub breaker: RawBreaker,
}

/// The `[classify]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassify {
    /// Rules for untyped errors: whole words (`contains`) or status codes (`status`).
    pub rules: Vec<Rule>,
}

/// The `[limits]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest payload in bytes.
    pub max_payload_bytes: usize,
}

/// The `[dead_letter]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// Approximate cap of each tenant's dead-letter stream.
    pub max_len: u64,
}

/// The `[admin]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// How long the CLI waits for a command to be picked up (or to show a sign of life).
    pub reply_timeout_ms: u64,
    /// A member whose admin loop has not beaten for this long counts as gone.
    pub member_ttl_ms: u64,
    /// Commands left pending this long by a member that stopped beating are taken over.
    pub claim_idle_ms: u64,
    /// Admin commands one member runs at once.
    pub concurrency: usize,
    /// Dead letters per atomic replay step.
    pub batch: usize,
    /// Default replay rate per second; 0 means unlimited.
    pub rate: u32,
    /// How long command results and finished jobs are kept.
    pub record_ttl_ms: u64,
    /// Approximate cap of the audit stream.
    pub audit_max_len: u64,
    /// Not used any more (the settle scripts write the settle counts); still accepted.
    pub stats_interval_ms: u64,
    /// Dead letters shown by a dry run.
    pub sample: usize,
    /// Deliveries after which a command that keeps crashing its member is failed.
    pub max_deliveries: u64,
    /// Payload schema migrations applied on replay.
    pub migrations: Vec<crate::schema::migrate::MigrationSpec>,
}

/// The `[log]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "human" or "json".
    pub format: String,
    /// tracing filter directive.
    pub level: String,
    /// Whether payloads may be logged.
    pub log_payloads: bool,
}

/// The `[metrics]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Listen address of /metrics, /healthz, /readyz; empty turns them off.
    pub listen: String,
    /// Most distinct tenant label values per metric family.
    pub max_tenant_labels: usize,
    /// How often Redis-derived gauges (depths, retries, dead letters) are refreshed.
    pub refresh_interval_ms: u64,
    /// /readyz fails when neither a read nor a settle happened for this long.
    pub stall_after_ms: u64,
}

/// The `[demo]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    /// Number of synthetic tasks.
    pub tasks: usize,
    /// Tenants of the demo.
    pub tenants: Vec<String>,
}

/// The `[demo_agent]` section: the simulated agent's behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoAgentSettings {
    /// Probability of a rate-limit answer.
    pub rate_limited: f64,
    /// Probability of a hang past the task timeout.
    pub timeout: f64,
    /// Probability of output that fails validation.
    pub malformed_output: f64,
    /// Probability of a context-window overflow.
    pub context_overflow: f64,
    /// Probability of a tool failing after some steps.
    pub tool_failure: f64,
    /// Probability of a panic in the handler.
    pub panic: f64,
    /// Probability of a success with empty output (a swallowed error).
    pub silent: f64,
    /// Lower bound of simulated work.
    pub min_work_ms: u64,
    /// Upper bound of simulated work.
    pub max_work_ms: u64,
    /// File that records each successful attempt; empty for none.
    pub side_effect_log: String,
    /// File that records the start and end of every attempt; empty for none.
    pub activity_log: String,
}

/// Every setting as loaded, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[redis]`
    pub redis: RawRedis,
    /// `[fleet]`
    pub fleet: RawFleet,
    /// `[retry]`
    pub retry: RawRetry,
    /// `[reclaim]`
    pub reclaim: RawReclaim,
    /// `[classify]`
    pub classify: RawClassify,
    /// `[isolation]`
    pub isolation: RawIsolation,
    /// `[limits]`
    pub limits: RawLimits,
    /// `[dead_letter]`
    pub dead_letter: RawDeadLetter,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[log]`
    pub log: RawLog,
    /// `[metrics]`
    pub metrics: RawMetrics,
    /// `[demo]`
    pub demo: RawDemo,
    /// `[demo_agent]`
    pub demo_agent: DemoAgentSettings,
}

impl RawConfig {
    /// The built-in defaults alone, without any file or environment.
    pub fn defaults() -> Result<RawConfig> {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract::<RawConfig>()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// Loads the layers: built-in defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<RawConfig> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let sections = sections();
        fig = fig
            .merge(
                Env::prefixed("REDRIVE_")
                    .filter(move |key| is_setting_var(key.as_str(), &sections))
                    .split("__"),
            )
            .merge(
                Env::raw()
                    .only(&["REDRIVE_REDIS_URL"])
                    .map(|_| "redis.url".into()),
            );
        fig.extract::<RawConfig>()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The settings as TOML with the password in redis.url replaced by `***`.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        copy.redis.url = redact_url(&copy.redis.url);
        toml::to_string(&copy).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// Variables under the `REDRIVE_` prefix that are read elsewhere, never as
/// `REDRIVE_<SECTION>__<KEY>` settings.
pub const OTHER_VARS: &[&str] = &[
    "REDRIVE_CONFIG",
    "REDRIVE_REDIS_URL",
    "REDRIVE_FAILPOINT",
    "REDRIVE_OPERATOR",
];

/// The top-level sections of the settings (`redis`, `fleet`, …), from the built-in defaults.
fn sections() -> Vec<String> {
    DEFAULT_TOML
        .parse::<toml::Table>()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether `key` (a variable's name after `REDRIVE_`) has the settings form
/// `<SECTION>__<KEY>` with a real section. Anything else under the prefix (Kubernetes'
/// `REDRIVE_PORT`, `REDRIVE_SERVICE_HOST`, …) is not a setting and is left alone; a wrong key
/// inside a real section still fails validation.
fn is_setting_var(key: &str, sections: &[String]) -> bool {
    match key.split_once("__") {
        Some((section, rest)) => {
            !rest.is_empty() && sections.iter().any(|s| s.eq_ignore_ascii_case(section))
        }
        None => false,
    }
}

/// Every setting's variable name (`REDRIVE_FLEET__CONCURRENCY`, …) with its dotted path.
fn setting_vars() -> Vec<(String, String)> {
    fn walk(table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
        for (k, v) in table {
            path.push(k.clone());
            match v {
                toml::Value::Table(t) if !t.is_empty() => walk(t, path, out),
                _ => out.push((
                    format!("REDRIVE_{}", path.join("__").to_ascii_uppercase()),
                    path.join("."),
                )),
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = DEFAULT_TOML.parse::<toml::Table>() {
        walk(&t, &mut Vec::new(), &mut out);
    }
    out
}

/// Warnings for the variables among `names` that start with `REDRIVE_`, are not settings
/// (so they are ignored) and differ from a real setting's variable only in underscores, e.g.
/// `REDRIVE_FLEET_CONCURRENCY` for `REDRIVE_FLEET__CONCURRENCY`. Values are never shown.
pub fn env_near_misses<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let sections = sections();
    let settings: Vec<(String, String, String)> = setting_vars()
        .into_iter()
        .map(|(var, path)| (squash(&var), var, path))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let name = name.as_ref();
        let Some(rest) = name
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("REDRIVE_"))
            .and_then(|_| name.get(8..))
        else {
            continue;
        };
        if is_setting_var(rest, &sections)
            || OTHER_VARS.iter().any(|o| o.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let squashed = squash(name);
        if let Some((_, var, path)) = settings.iter().find(|(s, _, _)| *s == squashed) {
            out.push(format!(
                "environment variable {name} is not a setting and is ignored: did you mean {var} \
                 ({path})? Section and key are separated by two underscores"
            ));
        }
    }
    out
}

/// [`env_near_misses`] over this process's environment.
pub fn env_warnings() -> Vec<String> {
    env_near_misses(
        std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
    )
}

/// Validated fleet settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Consumer name (resolved: never empty).
    pub member_id: String,
    /// Consumer group name.
    pub group: String,
    /// Handler name.
    pub handler: String,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Largest read.
    pub read_batch: usize,
    /// Block time of idle reads.
    pub block: Duration,
    /// Per-task timeout.
    pub task_timeout: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Largest ack batch.
    pub ack_batch: usize,
    /// Registry check period.
    pub discovery_interval: Duration,
    /// Lanes per read.
    pub max_lanes_per_read: usize,
    /// Member lease TTL.
    pub lease_ttl: Duration,
    /// Reclaim of stale entries.
    pub reclaim: ReclaimSettings,
    /// Recovery loop period.
    pub retry_poll_interval: Duration,
    /// Retries per atomic move.
    pub promote_batch: usize,
}

/// Validated reclaim settings.
#[derive(Debug, Clone)]
pub struct ReclaimSettings {
    /// Idle time before an entry is reclaimed.
    pub min_idle: Duration,
    /// Scan period.
    pub interval: Duration,
    /// Entries per claim step.
    pub batch: usize,
    /// Poison threshold on deliveries.
    pub max_deliveries: u64,
    /// Whether members heartbeat their entries.
    pub heartbeat: bool,
}

/// Validated admin settings: the admin command stream, replays and health counts.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// How long the CLI waits for a command to be picked up, or for a sign of life from the
    /// member running it.
    pub reply_timeout: Duration,
    /// A member whose admin loop has not beaten for this long counts as gone.
    pub member_ttl: Duration,
    /// Commands left pending this long by a silent member are taken over by another.
    pub claim_idle: Duration,
    /// Admin commands one member runs at once.
    pub concurrency: usize,
    /// Dead letters per atomic replay step.
    pub batch: usize,
    /// Default replay rate per second (0: unlimited).
    pub rate: u32,
    /// How long command results and finished jobs are kept.
    pub record_ttl: Duration,
    /// Approximate cap of the audit stream (and of each tenant's archive of removed dead
    /// letters, which uses `dead_letter.max_len`).
    pub audit_max_len: u64,

    /// Dead letters shown by a dry run.
    pub sample: usize,
    /// Deliveries after which a command that keeps crashing its member is failed.
    pub max_deliveries: u64,
    /// Payload schema migrations applied on replay.
    pub migrations: crate::schema::migrate::Migrations,
}

/// Every setting, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis connection.
    pub(crate) redis: RedisSettings,
    /// Fleet member behaviour.
    pub(crate) fleet: FleetSettings,
    /// Task limits.
    pub(crate) limits: Limits,
    /// Cap of each dead-letter stream.
    pub(crate) dead_letter_max_len: u64,
    /// Admin commands, replays and health.
    pub(crate) admin: AdminSettings,
    /// Retry policies.
    pub(crate) policies: Policies,
    /// Rules for untyped errors.
    pub(crate) classifier: Classifier,
    /// Tenant isolation: breakers, caps, weights.
    pub(crate) isolation: IsolationSettings,
    /// Log format.
    pub(crate) log_format: LogFormat,
    /// Log filter.
    pub(crate) log_level: String,
    /// Whether payloads may be logged.
    pub(crate) log_payloads: bool,
    /// Metrics endpoint address.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Metrics and health settings besides the address.
    pub(crate) metrics: MetricsSettings,
    /// Demo task count.
    pub(crate) demo_tasks: usize,
    /// Demo tenants.
    pub(crate) demo_tenants: Vec<String>,
    /// Simulated agent behaviour.
    pub(crate) demo_agent: DemoAgentSettings,
    /// What was loaded, for `config check`.
    pub(crate) raw: RawConfig,
}

/// The handler names the binary knows.
pub const HANDLERS: &[&str] = &["demo", "noop"];

/// The host name, sanitised into a valid member id, or "redrive" when it cannot be read.
pub fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "redrive".to_owned()
    } else {
        cleaned
    }
}

fn check_ident(setting: &str, value: &str, extra: &[char]) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || extra.contains(&c)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{setting} = '{value}' is invalid: use 1 to 64 ASCII letters, digits, '_', '-', '.'{}",
            extra.iter().map(|c| format!(", '{c}'")).collect::<String>()
        )))
    }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    setting: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        return Err(Error::Config(format!(
            "{setting} = {value} is out of range: it must be between {min} and {max}"
        )));
    }
    Ok(())
}

impl crate::broker::Broker {
    /// Connects to the configured Redis (`redis.url`) and checks that the server answers; says
    /// how to configure it when no URL is set.
    pub async fn connect(settings: &Settings) -> Result<crate::broker::Broker> {
        let Some(url) = settings.redis.url.as_deref() else {
            return Err(Error::Config(
                "redis.url is not set: set REDRIVE_REDIS_URL=redis://host:port or redis.url in the config file \
                 (only `redrive demo` and `redrive bench` start a private server)"
                    .into(),
            ));
        };
        crate::broker::Broker::connect_to(url, &settings.redis, &settings.fleet.group).await
    }
}

impl Settings {
    /// Loads and validates in one step.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Settings::from_raw(RawConfig::load(file)?)
    }

    /// Validates `raw`, rejecting contradictions with a message that names the setting.
    pub fn from_raw(raw: RawConfig) -> Result<Settings> {
        let r = &raw.redis;
        let url = if r.url.trim().is_empty() {
            None
        } else {
            crate::broker::check_url(&r.url).map_err(|e| {
                Error::Config(format!(
                    "redis.url = '{}' is not a valid Redis URL: {e}",
                    redact_url(&r.url)
                ))
            })?;
            Some(r.url.clone())
        };
        check_ident("redis.key_prefix", &r.key_prefix, &[':'])?;
        check_range(
            "redis.connect_timeout_ms",
            r.connect_timeout_ms,
            10,
            600_000,
        )?;
        check_range(
            "redis.response_timeout_ms",
            r.response_timeout_ms,
            10,
            600_000,
        )?;

        let f = &raw.fleet;
        let member_id = if f.member_id.is_empty() {
            default_member_id()
        } else {
            f.member_id.clone()
        };
        check_ident("fleet.member_id", &member_id, &[])?;
        check_ident("fleet.group", &f.group, &[])?;
        if !HANDLERS.contains(&f.handler.as_str()) {
            return Err(Error::Config(format!(
                "fleet.handler = '{}' is unknown: the handlers are {}",
                f.handler,
                HANDLERS.join(", ")
            )));
        }
        check_range("fleet.concurrency", f.concurrency, 1, 100_000)?;
        check_range("fleet.read_batch", f.read_batch, 1, 10_000)?;
        check_range("fleet.block_ms", f.block_ms, 10, 60_000)?;
        check_range("fleet.task_timeout_ms", f.task_timeout_ms, 1, 86_400_000)?;
        check_range("fleet.shutdown_grace_ms", f.shutdown_grace_ms, 0, 3_600_000)?;
        check_range("fleet.ack_batch", f.ack_batch, 1, 5_000)?;
        check_range(
            "fleet.discovery_interval_ms",
            f.discovery_interval_ms,
            10,
            3_600_000,
        )?;
        check_range("fleet.max_lanes_per_read", f.max_lanes_per_read, 1, 1_000)?;
        check_range("fleet.lease_ttl_ms", f.lease_ttl_ms, 1_000, 3_600_000)?;
        if f.block_ms >= f.shutdown_grace_ms {
            return Err(Error::Config(format!(
                "fleet.block_ms = {} must be shorter than fleet.shutdown_grace_ms = {}: a blocked read \
                 has to return before the shutdown grace period ends",
                f.block_ms, f.shutdown_grace_ms
            )));
        }

        let rt = &raw.retry;
        let default_policy = RetryPolicy {
            max_attempts: rt.max_attempts,
            backoff: rt.backoff.clone(),
            delays: rt
                .delays_ms
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            base: Duration::from_millis(rt.base_ms),
            factor: rt.factor,
            max_delay: Duration::from_millis(rt.max_delay_ms),
            jitter: rt.jitter,
        };
        let policies = Policies::new(
            default_policy,
            rt.kinds.clone().into_iter().collect(),
            rt.tenants.clone().into_iter().collect(),
        )
        .map_err(Error::Config)?;
        check_range("retry.poll_interval_ms", rt.poll_interval_ms, 10, 3_600_000)?;
        check_range("retry.promote_batch", rt.promote_batch, 1, 1_000)?;
        let rc = &raw.reclaim;
        check_range("reclaim.min_idle_ms", rc.min_idle_ms, 100, 86_400_000)?;
        check_range("reclaim.interval_ms", rc.interval_ms, 10, 3_600_000)?;
        check_range("reclaim.batch", rc.batch, 1, 1_000)?;
        check_range("reclaim.max_deliveries", rc.max_deliveries, 2, 1_000)?;
        // Without heartbeats a running task's entry ages from its delivery, so the idle time
        // must outlast the longest attempt. With heartbeats a live attempt keeps its entry fresh
        // and the idle time only has to notice dead or frozen members.
        if !rc.heartbeat && rc.min_idle_ms <= f.task_timeout_ms {
            return Err(Error::Config(format!(
                "reclaim.min_idle_ms = {} must exceed fleet.task_timeout_ms = {} when reclaim.heartbeat = false: \
                 a task still running would be reclaimed and run twice",
                rc.min_idle_ms, f.task_timeout_ms
            )));
        }
        let classifier = Classifier::new(&raw.classify.rules).map_err(Error::Config)?;
        let isolation = isolation_settings(&raw.isolation)?;

        check_range(
            "limits.max_payload_bytes",
            raw.limits.max_payload_bytes,
            1,
            16 * 1024 * 1024,
        )?;
        check_range("dead_letter.max_len", raw.dead_letter.max_len, 1, u64::MAX)?;

        let ad = &raw.admin;
        check_range(
            "admin.reply_timeout_ms",
            ad.reply_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range("admin.member_ttl_ms", ad.member_ttl_ms, 300, 600_000)?;
        check_range("admin.claim_idle_ms", ad.claim_idle_ms, 300, 86_400_000)?;
        check_range("admin.concurrency", ad.concurrency, 1, 64)?;
        check_range("admin.batch", ad.batch, 1, 1_000)?;
        check_range("admin.rate", ad.rate, 0, 1_000_000)?;
        check_range(
            "admin.record_ttl_ms",
            ad.record_ttl_ms,
            60_000,
            90 * 86_400_000,
        )?;
        check_range("admin.audit_max_len", ad.audit_max_len, 1, u64::MAX)?;
        check_range("admin.stats_interval_ms", ad.stats_interval_ms, 50, 60_000)?;
        check_range("admin.sample", ad.sample, 0, 100)?;
        check_range("admin.max_deliveries", ad.max_deliveries, 2, 100)?;
        // Running commands are kept fresh every third of member_ttl_ms; a takeover must not
        // happen between two beats of a live member.
        if ad.claim_idle_ms < ad.member_ttl_ms {
            return Err(Error::Config(format!(
                "admin.claim_idle_ms = {} must be at least admin.member_ttl_ms = {}: a live member's \
                 running command would be taken over between two of its beats",
                ad.claim_idle_ms, ad.member_ttl_ms
            )));
        }
        let migrations = crate::schema::migrate::Migrations::from_specs(&ad.migrations)
            .map_err(Error::Config)?;

        let log_format = match raw.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(Error::Config(format!(
                    "log.format = '{other}' is unknown: use \"human\" or \"json\""
                )))
            }
        };
        tracing_subscriber::EnvFilter::try_new(&raw.log.level).map_err(|e| {
            Error::Config(format!(
                "log.level = '{}' is not a valid filter: {e}",
                raw.log.level
            ))
        })?;
        let metrics_listen = if raw.metrics.listen.is_empty() {
            None
        } else {
            Some(raw.metrics.listen.parse::<SocketAddr>().map_err(|e| {
                Error::Config(format!(
                    "metrics.listen = '{}' is not an address like 0.0.0.0:9464: {e}",
                    raw.metrics.listen
                ))
            })?)
        };

        check_range(
            "metrics.max_tenant_labels",
            raw.metrics.max_tenant_labels,
            1,
            10_000,
        )?;
        check_range(
            "metrics.refresh_interval_ms",
            raw.metrics.refresh_interval_ms,
            50,
            3_600_000,
        )?;
        check_range(
            "metrics.stall_after_ms",
            raw.metrics.stall_after_ms,
            100,
            86_400_000,
        )?;
        let metrics = MetricsSettings {
            max_tenant_labels: raw.metrics.max_tenant_labels,
            refresh_interval: Duration::from_millis(raw.metrics.refresh_interval_ms),
            stall_after: Duration::from_millis(raw.metrics.stall_after_ms),
        };

        check_range("demo.tasks", raw.demo.tasks, 1, 10_000_000)?;
        if raw.demo.tenants.is_empty() {
            return Err(Error::Config(
                "demo.tenants must name at least one tenant".into(),
            ));
        }
        for t in &raw.demo.tenants {
            crate::task::validate_tenant(t)
                .map_err(|e| Error::Config(format!("demo.tenants: {e}")))?;
        }
        let a = &raw.demo_agent;
        let rates = [
            ("demo_agent.rate_limited", a.rate_limited),
            ("demo_agent.timeout", a.timeout),
            ("demo_agent.malformed_output", a.malformed_output),
            ("demo_agent.context_overflow", a.context_overflow),
            ("demo_agent.tool_failure", a.tool_failure),
            ("demo_agent.panic", a.panic),
            ("demo_agent.silent", a.silent),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::Config(format!(
                    "{name} = {rate} must be a probability between 0 and 1"
                )));
            }
        }
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        if sum > 1.0 + 1e-9 {
            return Err(Error::Config(format!(
                "the demo_agent failure probabilities add up to {sum:.3}; their sum must not exceed 1"
            )));
        }
        if a.min_work_ms > a.max_work_ms {
            return Err(Error::Config(format!(
                "demo_agent.min_work_ms = {} exceeds demo_agent.max_work_ms = {}",
                a.min_work_ms, a.max_work_ms
            )));
        }

        Ok(Settings {
            redis: RedisSettings {
                url,
                key_prefix: r.key_prefix.clone(),
                connect_timeout: Duration::from_millis(r.connect_timeout_ms),
                response_timeout: Duration::from_millis(r.response_timeout_ms),
            },
            fleet: FleetSettings {
                member_id,
                group: f.group.clone(),
                handler: f.handler.clone(),
                concurrency: f.concurrency,
                read_batch: f.read_batch,
                block: Duration::from_millis(f.block_ms),
                task_timeout: Duration::from_millis(f.task_timeout_ms),
                shutdown_grace: Duration::from_millis(f.shutdown_grace_ms),
                ack_batch: f.ack_batch,
                discovery_interval: Duration::from_millis(f.discovery_interval_ms),
                max_lanes_per_read: f.max_lanes_per_read,
                lease_ttl: Duration::from_millis(f.lease_ttl_ms),
                reclaim: ReclaimSettings {
                    min_idle: Duration::from_millis(rc.min_idle_ms),
                    interval: Duration::from_millis(rc.interval_ms),
                    batch: rc.batch,
                    max_deliveries: rc.max_deliveries,
                    heartbeat: rc.heartbeat,
                },
                retry_poll_interval: Duration::from_millis(rt.poll_interval_ms),
                promote_batch: rt.promote_batch,
            },
            limits: Limits {
                max_payload_bytes: raw.limits.max_payload_bytes,
            },
            dead_letter_max_len: raw.dead_letter.max_len,
            admin: AdminSettings {
                reply_timeout: Duration::from_millis(ad.reply_timeout_ms),
                member_ttl: Duration::from_millis(ad.member_ttl_ms),
                claim_idle: Duration::from_millis(ad.claim_idle_ms),
                concurrency: ad.concurrency,
                batch: ad.batch,
                rate: ad.rate,
                record_ttl: Duration::from_millis(ad.record_ttl_ms),
                audit_max_len: ad.audit_max_len,
                sample: ad.sample,
                max_deliveries: ad.max_deliveries,
                migrations,
            },
            policies,
            classifier,
            isolation,
            log_format,
            log_level: raw.log.level.clone(),
            log_payloads: raw.log.log_payloads,
            metrics_listen,
            metrics,
            demo_tasks: raw.demo.tasks,
            demo_tenants: raw.demo.tenants.clone(),
            demo_agent: raw.demo_agent.clone(),
            raw,
        })
    }
}

/// Validates the `[isolation]` section.
fn isolation_settings(raw: &RawIsolation) -> Result<IsolationSettings> {
    check_range(
        "isolation.refresh_interval_ms",
        raw.refresh_interval_ms,
        20,
        10_000,
    )?;
    check_range("isolation.slot_ttl_ms", raw.slot_ttl_ms, 1_000, 3_600_000)?;
    if raw.slot_ttl_ms < 4 * raw.refresh_interval_ms {
        return Err(Error::Config(format!(
            "isolation.slot_ttl_ms = {} must be at least 4 × isolation.refresh_interval_ms = {}: \
             members renew their reservations once per refresh, and a late renewal must not let \
             another member take a live member's slots",
            raw.slot_ttl_ms, raw.refresh_interval_ms
        )));
    }
    check_range("isolation.max_in_flight", raw.max_in_flight, 0, 1_000_000)?;
    check_range("isolation.weight", raw.weight, 1, 1_000)?;
    for (tenant, o) in &raw.tenants {
        crate::task::validate_tenant(tenant)
            .map_err(|e| Error::Config(format!("isolation.tenants: {e}")))?;
        if let Some(cap) = o.max_in_flight {
            check_range(
                &format!("isolation.tenants.{tenant}.max_in_flight"),
                cap,
                0,
                1_000_000,
            )?;
        }
        if let Some(w) = o.weight {
            check_range(&format!("isolation.tenants.{tenant}.weight"), w, 1, 1_000)?;
        }
    }
    let b = &raw.breaker;
    check_range(
        "isolation.breaker.min_failures",
        b.min_failures,
        1,
        1_000_000,
    )?;
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err(Error::Config(format!(
            "isolation.breaker.failure_rate = {} must be a fraction above 0 and at most 1 \
             (0.5: half of the attempts in the window failed)",
            b.failure_rate
        )));
    }
    check_range(
        "isolation.breaker.window_ms",
        b.window_ms,
        1_000,
        86_400_000,
    )?;
    check_range(
        "isolation.breaker.cooldown_ms",
        b.cooldown_ms,
        100,
        86_400_000,
    )?;
    let mut ignored = Vec::new();
    for (i, name) in b.ignore_classes.iter().enumerate() {
        let class = FailureClass::parse(name).ok_or_else(|| {
            Error::Config(format!(
                "isolation.breaker.ignore_classes[{i}] = '{name}' is unknown: the classes are {}",
                FailureClass::ALL.map(|c| c.as_str()).join(", ")
            ))
        })?;
        ignored.push(class);
    }
    Ok(IsolationSettings {
        refresh_interval: Duration::from_millis(raw.refresh_interval_ms),
        slot_ttl: Duration::from_millis(raw.slot_ttl_ms),
        max_in_flight: raw.max_in_flight,
        weight: raw.weight,
        tenants: raw.tenants.clone(),
        breaker: BreakerSettings {
            enabled: b.enabled,
            min_failures: b.min_failures,
            failure_rate: b.failure_rate,
            window: Duration::from_millis(b.window_ms),
            cooldown: Duration::from_millis(b.cooldown_ms),
            ignored,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RawConfig {
        Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_raw(defaults()).unwrap();
        assert_eq!(s.fleet.concurrency, 64);
        assert!(s.redis.url.is_none());
        assert!(!s.fleet.member_id.is_empty());
        assert!(s.isolation.breaker.enabled);
        assert_eq!(s.isolation.cap("anyone"), 0);
        assert_eq!(s.isolation.breaker.ignored, [FailureClass::MalformedEntry]);
    }

    #[test]
    fn per_tenant_isolation_overrides_load_from_a_file() {
        let raw: RawConfig = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(
                "[isolation.tenants.acme]\nmax_in_flight = 8\nweight = 3\n",
            ))
            .extract()
            .unwrap();
        let s = Settings::from_raw(raw).unwrap();
        assert_eq!(
            (s.isolation.cap("acme"), s.isolation.weight("acme")),
            (8, 3)
        );
        assert!(s.raw.redacted_toml().contains("[isolation.tenants.acme]"));
    }

    #[test]
    fn migrations_load_from_toml() {
        let toml = r#"
[[admin.migrations]]
kind = "triage"
from = 1
to = 2
rename = { ticket = "ticket_id" }
remove = ["legacy"]
patch = { lang = "en", meta = { source = "replay" } }
"#;
        let raw: RawConfig = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(toml))
            .extract()
            .unwrap();
        let s = Settings::from_raw(raw.clone()).unwrap();
        let out = s
            .admin
            .migrations
            .migrate(
                "triage",
                Some(1),
                serde_json::json!({"ticket": 3, "legacy": 1}),
            )
            .unwrap();
        assert_eq!(
            out.payload,
            serde_json::json!({"ticket_id": 3, "lang": "en", "meta": {"source": "replay"}})
        );
        assert!(raw.redacted_toml().contains("ticket_id"));
    }

    #[test]
    fn only_section_key_variables_are_settings_and_near_misses_are_named() {
        let sections = sections();
        for (key, want) in [
            ("FLEET__CONCURRENCY", true),
            ("fleet__concurrency", true),
            ("FLEET__CONCURENCY", true), // a real section: its typo fails validation
            ("ISOLATION__BREAKER__MIN_FAILURES", true),
            ("PORT", false),
            ("SERVICE_HOST", false),
            ("PORT_9464_TCP_ADDR", false),
            ("FLEET_CONCURRENCY", false),
            ("REDIS_URL", false),
            ("NOPE__X", false),
            ("FLEET__", false),
        ] {
            assert_eq!(is_setting_var(key, &sections), want, "{key}");
        }
        let warnings = env_near_misses([
            "REDRIVE_FLEET_CONCURRENCY",
            "REDRIVE_ISOLATION_BREAKER_MIN_FAILURES",
            "REDRIVE_PORT",
            "REDRIVE_SERVICE_HOST",
            "REDRIVE_PORT_9464_TCP_ADDR",
            "REDRIVE_REDIS_URL",
            "REDRIVE_CONFIG",
            "REDRIVE_FAILPOINT",
            "REDRIVE_FLEET__CONCURRENCY",
            "PATH",
        ]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("REDRIVE_FLEET_CONCURRENCY")
                && warnings[0]
                    .contains("did you mean REDRIVE_FLEET__CONCURRENCY (fleet.concurrency)"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("REDRIVE_ISOLATION__BREAKER__MIN_FAILURES"),
            "{warnings:?}"
        );
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let mut raw = defaults();
        raw.redis.url = "redis://app:hunter2@db:6379".into();
        let text = raw.redacted_toml();
        assert!(
            !text.contains("hunter2") && text.contains("app:***@db"),
            "{text}"
        );
    }

    #[test]
    fn contradictions_name_the_setting() {
        type Edit = fn(&mut RawConfig);
        let cases: &[(Edit, &str)] = &[
            (
                |c| c.fleet.block_ms = 20_000,
                "fleet.block_ms = 20000 must be shorter than fleet.shutdown_grace_ms",
            ),
            (
                |c| c.fleet.concurrency = 0,
                "fleet.concurrency = 0 is out of range",
            ),
            (
                |c| c.fleet.handler = "gpt".into(),
                "fleet.handler = 'gpt' is unknown",
            ),
            (
                |c| c.redis.key_prefix = "a{b}".into(),
                "redis.key_prefix = 'a{b}' is invalid",
            ),
            (
                |c| c.redis.url = "http://x".into(),
                "redis.url = 'http://x' is not a valid Redis URL",
            ),
            (
                |c| c.fleet.member_id = "a b".into(),
                "fleet.member_id = 'a b' is invalid",
            ),
            (
                |c| c.log.format = "xml".into(),
                "log.format = 'xml' is unknown",
            ),
            (
                |c| c.metrics.listen = "nowhere".into(),
                "metrics.listen = 'nowhere'",
            ),
            (
                |c| c.demo_agent.panic = 1.5,
                "demo_agent.panic = 1.5 must be a probability",
            ),
            (|c| c.demo_agent.rate_limited = 0.99, "add up to"),
            (
                |c| c.demo_agent.min_work_ms = 99,
                "demo_agent.min_work_ms = 99 exceeds",
            ),
            (
                |c| c.limits.max_payload_bytes = 0,
                "limits.max_payload_bytes = 0 is out of range",
            ),
            (
                |c| c.fleet.ack_batch = 9999,
                "fleet.ack_batch = 9999 is out of range",
            ),
            (
                |c| c.demo.tenants = vec!["no way".into()],
                "demo.tenants: tenant 'no way'",
            ),
            (
                |c| {
                    c.reclaim.heartbeat = false;
                    c.reclaim.min_idle_ms = 30_000
                },
                "reclaim.min_idle_ms = 30000 must exceed fleet.task_timeout_ms = 30000 when reclaim.heartbeat = false",
            ),
            (
                |c| c.reclaim.max_deliveries = 1,
                "reclaim.max_deliveries = 1 is out of range",
            ),
            (
                |c| c.retry.max_attempts = 0,
                "retry.max_attempts = 0 must be between 1 and 1000",
            ),
            (
                |c| c.retry.delays_ms = vec![],
                "retry.delays_ms must list at least one delay",
            ),
            (
                |c| c.retry.delays_ms = vec![999_999],
                "retry.delays_ms has a delay above retry.max_delay_ms",
            ),
            (
                |c| c.classify.rules[0].class = "flaky".into(),
                "classify.rules[0].class = 'flaky' is unknown",
            ),
            (
                |c| c.admin.batch = 0,
                "admin.batch = 0 is out of range",
            ),
            (
                |c| c.admin.claim_idle_ms = 1_000,
                "admin.claim_idle_ms = 1000 must be at least admin.member_ttl_ms",
            ),
            (
                |c| {
                    c.admin.migrations = vec![crate::schema::migrate::MigrationSpec {
                        kind: "k".into(),
                        from: 3,
                        to: 1,
                        rename: Default::default(),
                        remove: vec![],
                        patch: None,
                    }]
                },
                "admin.migrations[0]: migration of kind 'k' from 3 to 1",
            ),
            (
                |c| c.isolation.refresh_interval_ms = 5,
                "isolation.refresh_interval_ms = 5 is out of range",
            ),
            (
                |c| {
                    c.isolation.refresh_interval_ms = 500;
                    c.isolation.slot_ttl_ms = 1_500
                },
                "isolation.slot_ttl_ms = 1500 must be at least 4 × isolation.refresh_interval_ms = 500",
            ),
            (
                |c| c.isolation.weight = 0,
                "isolation.weight = 0 is out of range",
            ),
            (
                |c| {
                    c.isolation.tenants.insert(
                        "acme".into(),
                        TenantOverride {
                            max_in_flight: None,
                            weight: Some(5_000),
                        },
                    );
                },
                "isolation.tenants.acme.weight = 5000 is out of range",
            ),
            (
                |c| {
                    c.isolation
                        .tenants
                        .insert("a b".into(), TenantOverride::default());
                },
                "isolation.tenants: tenant 'a b'",
            ),
            (
                |c| c.isolation.breaker.failure_rate = 0.0,
                "isolation.breaker.failure_rate = 0 must be a fraction above 0",
            ),
            (
                |c| c.isolation.breaker.failure_rate = 1.5,
                "isolation.breaker.failure_rate = 1.5 must be a fraction",
            ),
            (
                |c| c.isolation.breaker.min_failures = 0,
                "isolation.breaker.min_failures = 0 is out of range",
            ),
            (
                |c| c.isolation.breaker.cooldown_ms = 10,
                "isolation.breaker.cooldown_ms = 10 is out of range",
            ),
            (
                |c| c.isolation.breaker.ignore_classes = vec!["boring".into()],
                "isolation.breaker.ignore_classes[0] = 'boring' is unknown",
            ),
        ];
        for (edit, want) in cases {
            let mut raw = defaults();
            edit(&mut raw);
            let err = Settings::from_raw(raw).unwrap_err().to_string();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        }
    }
}
