//! Configuration in two steps: figment layers into [`RawConfig`], then [`Settings::from_raw`]
//! validates it section by section and rejects contradictions with a message that names the
//! setting.
//!
//! `config/default.toml` is compiled in as the first layer, so it is the single list of every
//! setting and its default. An application adds its own sections as a further defaults layer
//! and validates them itself (`redrive`'s `[demo]` and `[demo_agent]`, in `src/app/settings.rs`).
//!
//! * `layers` — the defaults, file and environment layers; near-miss variable warnings.
//! * `raw` — [`RawConfig`], one raw struct per section.
//! * one file per section (`connection` for `[redis]`, `fleet`, `retry`, `reclaim`, `classify`, `isolation`,
//!   `limits`, `admin`, `log`, `metrics`, `notify`), each with `validate(raw) -> Result<section>`;
//!   `handlers` for `[[handlers]]` (the routing table, the library's own handler types).
//! * `rules` — rules across sections; `check` — identifier and range checks.

mod admin;
mod archive;
pub(crate) mod check;
mod classify;
mod connection;
mod fleet;
pub(crate) mod handlers;
mod isolation;
pub(crate) mod layers;
mod limits;
mod log;
mod metrics;
pub(crate) mod notify;
mod raw;
mod reclaim;
mod retry;
pub(crate) mod rules;
pub(crate) mod tasks;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use self::admin::{AdminSettings, RawAdmin};
pub use self::archive::RawArchive;
pub use self::classify::RawClassify;
pub use self::connection::RawRedis;
pub use self::fleet::{default_member_id, FleetSettings, RawFleet};
pub use self::handlers::RawHandler;
pub use self::isolation::{RawBreaker, RawIsolation};
pub use self::limits::{RawDeadLetter, RawDeadLetterTenant, RawLimits};
pub use self::log::RawLog;
pub use self::metrics::RawMetrics;
pub use self::notify::{NotifySettings, NotifyTarget, RawNotify, RawTarget};
pub(crate) use self::raw::section;
pub use self::raw::RawConfig;
pub use self::reclaim::{RawReclaim, ReclaimSettings};
pub use self::retry::RawRetry;
pub use self::tasks::{RawTaskOverride, RawTasks, TasksSettings};
pub use crate::broker::{redact_url, RedisSettings};
use crate::classify::Classifier;
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerSpec, Handlers};
use crate::isolation::IsolationSettings;
use crate::policy::Policies;
use crate::task::Limits;
use crate::telemetry::Telemetry;
pub use crate::telemetry::{LogFormat, MetricsSettings};

/// Every setting of the library, validated. It holds no copy of what was loaded: print a
/// [`RawConfig`] for that.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis connection.
    pub(crate) redis: RedisSettings,
    /// Fleet member behaviour.
    pub(crate) fleet: FleetSettings,
    /// Task limits.
    pub(crate) limits: Limits,
    /// When dead letters leave Redis for the archive: cap, hard ceiling, retention, grace.
    pub(crate) retention: crate::archive::Retention,
    /// `[archive]`: where they go.
    pub(crate) archive: crate::archive::ArchiveSettings,
    /// Task records, retention and duplicate refusal.
    pub(crate) tasks: TasksSettings,
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
    /// Window of storm-proof logging (zero: every line).
    pub(crate) log_storm_interval: std::time::Duration,
    /// Metrics endpoint address.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Metrics and health settings besides the address.
    pub(crate) metrics: MetricsSettings,
    /// `[[handlers]]` (or `fleet.handler`): which handler runs which kinds.
    pub(crate) routing: handlers::Routing,
    /// `[notify]`: tenant notification targets and their delivery.
    pub(crate) notify: NotifySettings,
}

impl Settings {
    /// Loads and validates in one step.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Settings::from_raw(RawConfig::load(file)?)
    }

    /// Validates `raw`, section by section, then the rules across sections; every refusal
    /// names the setting.
    pub fn from_raw(raw: RawConfig) -> Result<Settings> {
        let redis = connection::validate(&raw.redis)?;
        let retry = retry::validate(&raw.retry)?;
        let reclaim = reclaim::validate(&raw.reclaim)?;
        let fleet = fleet::validate(&raw.fleet, reclaim, &retry)?;
        rules::reclaim_outlasts_attempts(&fleet)?;
        let routing = handlers::validate(&raw.handlers, &fleet)?;
        let classifier = classify::validate(&raw.classify)?;
        let isolation = isolation::validate(&raw.isolation)?;
        let limits = limits::validate(&raw.limits)?;
        let retention = limits::validate_retention(&raw.dead_letter)?;
        let archive = archive::validate(&raw.archive)?;
        let tasks = tasks::validate(&raw.tasks)?;
        let admin = admin::validate(&raw.admin)?;
        let log = log::validate(&raw.log)?;
        let (metrics_listen, metrics) = metrics::validate(&raw.metrics)?;
        let notify = notify::validate(&raw.notify)?;
        Ok(Settings {
            redis,
            fleet,
            limits,
            retention,
            archive,
            tasks,
            admin,
            policies: retry.policies,
            classifier,
            isolation,
            log_format: log.format,
            log_level: log.level,
            log_payloads: log.payloads,
            log_storm_interval: log.storm_interval,
            metrics_listen,
            metrics,
            routing,
            notify,
        })
    }

    /// The metrics half of [`Telemetry`], with nothing installed (the application installs
    /// logging itself, warning about its own sections' variables too).
    pub(crate) fn telemetry(&self) -> Telemetry {
        Telemetry::new(self.metrics, self.metrics_listen, self.log_storm_interval)
    }

    /// `[tasks]`: task records, their retention and duplicate refusal.
    pub fn tasks(&self) -> &TasksSettings {
        &self.tasks
    }

    /// The configured handler name (`fleet.handler`; empty when not set).
    pub fn handler_name(&self) -> &str {
        &self.fleet.handler
    }

    /// The routing table: `[[handlers]]` in order (the first entry whose kinds match a task's
    /// kind runs it), or the one catch-all entry `fleet.handler` stands for; empty when no
    /// handler is configured.
    pub fn handlers(&self) -> &[HandlerSpec] {
        &self.routing.specs
    }

    /// The routing table as `redrive config check` prints it: TOML comments, secrets
    /// redacted.
    pub fn routing_table(&self) -> String {
        handlers::routing_table(&self.routing)
    }
}

impl Telemetry {
    /// Installs logging as `[log]` says (`RUST_LOG` overrides `log.level`; repeated lines
    /// summarised per `log.storm_interval_ms`), the tenant label
    /// cap of `[metrics]` and panics as log lines, and warns about `REDRIVE_*` variables that
    /// look like settings but are ignored. The endpoint starts with
    /// [`Telemetry::serve_metrics`].
    pub fn install(settings: &Settings) -> Telemetry {
        let telemetry = settings.telemetry();
        telemetry.install_logging(
            settings.log_format,
            &settings.log_level,
            layers::env_warnings(&[]),
        );
        telemetry
    }
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
        crate::broker::Broker::connect_at(url, settings).await
    }

    /// Connects to `url` (a private server's, or the configured one) with the TLS settings
    /// and credentials of `settings.redis`, warning at every connect while
    /// `redis.tls_insecure` is on.
    pub(crate) async fn connect_at(
        url: &str,
        settings: &Settings,
    ) -> Result<crate::broker::Broker> {
        if settings.redis.tls.insecure {
            crate::telemetry::events::redis_server::tls_insecure(&crate::broker::redact_url(url));
        }
        Ok(
            crate::broker::Broker::connect_to(url, &settings.redis, &settings.fleet.group)
                .await?
                .with_notify(settings.notify.plan()),
        )
    }
}

impl Handlers {
    /// Builds the one handler `fleet.handler` names (a member with one catch-all route; see
    /// [`crate::Fleet::routed`] for `[[handlers]]`). Refuses a name nobody provides ("fleet.handler
    /// = 'gpt' is unknown: the handlers are …", exit code 78), no handler at all (with how to
    /// configure one) and a `[[handlers]]` table.
    pub fn resolve(&self, settings: &Settings) -> Result<Arc<dyn Handler>> {
        let routing = &settings.routing;
        if !routing.shorthand && !routing.specs.is_empty() {
            return Err(Error::Config(
                "[[handlers]] routes kinds to handlers: build the member with Fleet::routed, \
                 not one handler"
                    .into(),
            ));
        }
        let mut routes = self.build_routes(routing)?;
        match routes.pop() {
            Some((_, handler)) => Ok(handler),
            None => Err(Error::Config(handlers::no_handler_message())),
        }
    }

    /// Refuses a routing table that names a type nobody provides (neither registered here
    /// nor one of the library's), without building any handler (exit code 78).
    pub fn check(&self, settings: &Settings) -> Result<()> {
        self.check_types(&settings.routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FailureClass;
    use crate::isolation::TenantOverride;
    use figment::providers::{Format, Toml};

    fn defaults() -> RawConfig {
        RawConfig::defaults().unwrap()
    }

    fn with(toml: &str) -> RawConfig {
        let fig = layers::defaults(&[]).merge(Toml::string(toml));
        RawConfig::from_figment(&fig, &[]).unwrap()
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
        // The limiter's own default (before any settings are installed) is the file's.
        assert_eq!(
            s.log_storm_interval,
            crate::telemetry::events::storm::DEFAULT_INTERVAL
        );
        let mut off = defaults();
        off.log.storm_interval_ms = 0;
        let off = Settings::from_raw(off).unwrap();
        assert!(off.log_storm_interval.is_zero());
    }

    #[test]
    fn per_tenant_isolation_overrides_load_from_a_file() {
        let raw = with("[isolation.tenants.acme]\nmax_in_flight = 8\nweight = 3\n");
        let s = Settings::from_raw(raw.clone()).unwrap();
        assert_eq!(
            (s.isolation.cap("acme"), s.isolation.weight("acme")),
            (8, 3)
        );
        assert!(raw.redacted_toml().contains("[isolation.tenants.acme]"));
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
        let raw = with(toml);
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
        // Debug formatting (a `{:?}` anywhere) redacts too, of the raw and of the settings.
        let debug = format!("{raw:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("app:***@db"),
            "{debug}"
        );
        raw.redis.url = "rediss://app:hunter2@db:6380".into();
        let s = Settings::from_raw(raw).unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("app:***@db"),
            "{debug}"
        );
    }

    #[test]
    fn waiting_for_replicas_is_off_by_default_and_bounded() {
        let s = Settings::from_raw(defaults()).unwrap();
        assert_eq!(s.redis.wait, None);
        let s = Settings::from_raw(with("[redis]\nwait_replicas = 1\n")).unwrap();
        assert_eq!(
            s.redis.wait,
            Some(crate::broker::WaitReplicas {
                replicas: 1,
                timeout: std::time::Duration::from_millis(100),
            })
        );
        let s = Settings::from_raw(with("[redis]\nwait_replicas = 2\nwait_timeout_ms = 250\n"))
            .unwrap();
        assert_eq!(
            s.redis.wait.map(|w| (w.replicas, w.timeout.as_millis())),
            Some((2, 250))
        );
        // A timeout of 0 (WAIT would block forever), too many replicas, too long a timeout.
        let e = Settings::from_raw(with("[redis]\nwait_replicas = 1\nwait_timeout_ms = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("redis.wait_timeout_ms = 0") && e.contains("forever"),
            "{e}"
        );
        let e = Settings::from_raw(with("[redis]\nwait_replicas = 17\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("redis.wait_replicas = 17 is out of range"),
            "{e}"
        );
        let e = Settings::from_raw(with(
            "[redis]\nwait_replicas = 1\nwait_timeout_ms = 60001\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("redis.wait_timeout_ms = 60001 is out of range"),
            "{e}"
        );
        // Off ignores the timeout.
        let s = Settings::from_raw(with("[redis]\nwait_timeout_ms = 0\n")).unwrap();
        assert_eq!(s.redis.wait, None);
    }

    #[test]
    fn passwords_from_a_file_or_variable_are_never_shown() {
        let dir = std::env::temp_dir().join(format!("redrive-pw-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret-from-file\n").unwrap();
        let mut raw = defaults();
        raw.redis.url = "rediss://db:6380".into();
        raw.redis.password_file = file.to_string_lossy().into_owned();
        raw.redis.username = "app".into();
        let s = Settings::from_raw(raw.clone()).unwrap();
        assert_eq!(
            s.redis.password,
            Some(crate::broker::RedisPassword::new("s3cret-from-file".into()))
        );
        let shown = format!("{s:?}{raw:?}{}", raw.redacted_toml());
        assert!(!shown.contains("s3cret"), "{shown}");
        // Two sources, a variable that is not set, an empty file: refused, naming the setting.
        raw.redis.password_env = "REDRIVE_TEST_UNSET_PASSWORD_VAR".into();
        let e = Settings::from_raw(raw.clone()).unwrap_err().to_string();
        assert!(e.contains("both set"), "{e}");
        raw.redis.password_file = String::new();
        let e = Settings::from_raw(raw.clone()).unwrap_err().to_string();
        assert!(e.contains("names a variable that is not set"), "{e}");
        raw.redis.password_env = String::new();
        std::fs::write(&file, "\n").unwrap();
        raw.redis.password_file = file.to_string_lossy().into_owned();
        let e = Settings::from_raw(raw.clone()).unwrap_err().to_string();
        assert!(e.contains("empty or spans several lines"), "{e}");
        // A password in the URL and another from a file: one place per credential.
        std::fs::write(&file, "zz-file-pw").unwrap();
        raw.redis.url = "rediss://app:in-url@db:6380".into();
        let e = Settings::from_raw(raw.clone()).unwrap_err().to_string();
        assert!(
            e.contains("one place") && !e.contains("in-url") && !e.contains("zz-file-pw"),
            "{e}"
        );
        // TLS settings without a rediss:// URL.
        let mut raw = defaults();
        raw.redis.url = "redis://db:6379".into();
        raw.redis.tls_insecure = true;
        let e = Settings::from_raw(raw.clone()).unwrap_err().to_string();
        assert!(e.contains("not a rediss:// URL"), "{e}");
        raw.redis.url = String::new();
        let e = Settings::from_raw(raw).unwrap_err().to_string();
        assert!(e.contains("redis.url is not"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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
                |c| c.redis.key_prefix = "a{b}".into(),
                "redis.key_prefix = 'a{b}' is invalid",
            ),
            (
                |c| c.redis.url = "http://x".into(),
                "redis.url = 'http://x' is not a valid Redis URL",
            ),
            (
                |c| c.redis.url = "redis://a:1,redis://b:2".into(),
                "lists 2 servers: set redis.cluster = true",
            ),
            (
                |c| c.redis.cluster = true,
                "redis.cluster = true but redis.url is not set",
            ),
            (
                |c| {
                    c.redis.cluster = true;
                    c.redis.url = "redis://a:1,rediss://b:2".into();
                },
                "mix rediss:// and redis://",
            ),
            (
                |c| {
                    c.redis.cluster = true;
                    c.redis.url = "redis://a:1/3".into();
                },
                "selects database 3: a Redis Cluster has only database 0",
            ),
            (
                |c| {
                    c.redis.cluster = true;
                    c.redis.url = "redis://a:1,http://b".into();
                },
                "redis.url = 'http://b' is not a valid Redis URL",
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
                |c| c.log.storm_interval_ms = 50,
                "log.storm_interval_ms (0 turns summaries off) = 50 is out of range",
            ),
            (
                |c| c.metrics.listen = "nowhere".into(),
                "metrics.listen = 'nowhere'",
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
