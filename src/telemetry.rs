//! Logging setup and the catalogue of metric names. Every metric redrive emits is named here,
//! so dashboards, alert rules and tests have one list to agree with.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use crate::config::LogFormat;

/// Metric names, all with the `redrive_` prefix.
pub mod names {
    /// Counter{tenant}: entries read from lanes (first delivery or redelivery).
    pub const TASKS_READ: &str = "redrive_tasks_read_total";
    /// Counter{tenant}: tasks acked as done.
    pub const TASKS_COMPLETED: &str = "redrive_tasks_completed_total";
    /// Counter{tenant,class}: failed attempts.
    pub const TASKS_FAILED: &str = "redrive_tasks_failed_total";
    /// Counter{tenant,class}: tasks moved to the dead letters.
    pub const DEAD_LETTERED: &str = "redrive_dead_lettered_total";
    /// Counter{tenant}: dead letters removed by the per-tenant cap.
    pub const DLQ_TRIMMED: &str = "redrive_dlq_trimmed_total";
    /// Counter{tenant}: pending ids whose entry was deleted (payload lost before it ran).
    pub const TOMBSTONES: &str = "redrive_tombstones_total";
    /// Counter{tenant}: settles that found the entry already settled by someone else.
    pub const SETTLE_LOST: &str = "redrive_settle_lost_total";
    /// Counter{tenant}: settles whose call was tried again after a reply was lost (a timeout,
    /// a dropped connection) and then found the entry no longer pending: most likely settled
    /// by the earlier try (its Redis stats counted it), not by another member.
    pub const SETTLE_REPLY_LOST: &str = "redrive_settle_reply_lost_total";
    /// Counter{tenant,class}: failed attempts scheduled for another attempt.
    pub const TASKS_RETRIED: &str = "redrive_tasks_retried_total";
    /// Counter{tenant}: tasks completed after an earlier failure or a replay.
    pub const TASKS_RECOVERED: &str = "redrive_tasks_recovered_total";
    /// Counter{tenant}: scheduled retries moved back into their lane.
    pub const RETRIES_PROMOTED: &str = "redrive_retries_promoted_total";
    /// Counter{tenant}: stale entries taken over from another member.
    pub const RECLAIMED: &str = "redrive_reclaimed_total";
    /// Counter{tenant}: entries a heartbeat found taken over by another member.
    pub const OWNERSHIP_LOST: &str = "redrive_ownership_lost_total";
    /// Counter: events counted under the `__other__` tenant because the label cap was reached.
    pub const TENANT_LABEL_OVERFLOW: &str = "redrive_tenant_label_overflow_total";
    /// Histogram: handler run time of one attempt, seconds.
    pub const TASK_DURATION: &str = "redrive_task_duration_seconds";
    /// Histogram: time from enqueue to the start of an attempt, seconds.
    pub const QUEUE_WAIT: &str = "redrive_queue_wait_seconds";
    /// Gauge: attempts running in this member.
    pub const IN_FLIGHT: &str = "redrive_in_flight";
    /// Counter: errors talking to Redis, by operation.
    pub const REDIS_ERRORS: &str = "redrive_redis_errors_total";
    /// Gauge{tenant}: entries in the lane (waiting or pending), top tenants + `__other__`.
    pub const LANE_DEPTH: &str = "redrive_lane_depth";
    /// Gauge{tenant}: entries delivered and not yet settled.
    pub const PENDING: &str = "redrive_pending";
    /// Gauge{tenant}: entries not yet delivered to the group (Redis 7 consumer-group lag).
    pub const LAG: &str = "redrive_lag";
    /// Gauge{tenant}: retries scheduled.
    pub const RETRIES_SCHEDULED: &str = "redrive_retries_scheduled";
    /// Gauge{tenant}: scheduled retries already due (the recovery loop is behind when this grows).
    pub const RETRIES_OVERDUE: &str = "redrive_retries_overdue";
    /// Gauge{tenant}: entries in the dead-letter stream; non-empty streams only.
    pub const DLQ_DEPTH: &str = "redrive_dlq_depth";
    /// Gauge{version}: always 1.
    pub const BUILD_INFO: &str = "redrive_build_info";
    /// Gauge: 1 while this member is ready (Redis answers, reads or settles progress).
    pub const READY: &str = "redrive_ready";
    /// Gauge: 1 while Redis refuses writes for memory (over `maxmemory`), as this member sees
    /// it: acks go on, retries, dead letters and deferrals wait (pending) until it is 0 again.
    pub const REDIS_OOM: &str = "redrive_redis_oom";

    /// Gauge{tenant,state}: 1 while the tenant's breaker is `open` or `half_open`, as this
    /// member last saw it; set to 0 when it closes and then no longer updated, so the series
    /// exists only while the breaker is not closed.
    pub const BREAKER_STATE: &str = "redrive_breaker_state";
    /// Counter{tenant,from,to,reason}: breaker transitions this member made (each transition
    /// is made by exactly one script call, so `sum` over members counts each once; operators'
    /// transitions are in the tenant's breaker log). reason: failure_threshold,
    /// cooldown_elapsed, probe_succeeded, probe_failed.
    pub const BREAKER_TRANSITIONS: &str = "redrive_breaker_transitions_total";
    /// Counter{tenant}: tasks held back unattempted (deferred to the retry schedule) because
    /// their tenant's breaker was not closed.
    pub const TASKS_DEFERRED: &str = "redrive_tasks_deferred_total";
    /// Gauge{tenant}: the tenant's entries this member holds (read, not settled); `sum by
    /// (tenant)` over members is the fleet-wide in-flight the cap applies to.
    pub const TENANT_IN_FLIGHT: &str = "redrive_tenant_in_flight";
    /// Counter{tenant}: attempts that ran to an outcome (added once per isolation refresh, so
    /// the hot path takes no label lock). Share of work:
    /// `sum by (tenant) (rate(X[5m])) / on () group_left sum(rate(X[5m]))`.
    pub const TENANT_ATTEMPTS: &str = "redrive_tenant_attempts_total";
    /// Counter{tenant}: reads that asked for more of a tenant's slots than its fleet-wide cap
    /// left (the tenant waited for its share).
    pub const TENANT_CAPPED: &str = "redrive_tenant_capped_total";
    /// Counter{command,outcome}: admin commands executed (by a fleet member or `--local`).
    pub const ADMIN_COMMANDS: &str = "redrive_admin_commands_total";
    /// Counter{tenant}: dead letters replayed into their lane.
    pub const DLQ_REPLAYED: &str = "redrive_dlq_replayed_total";

    /// Buckets of the task-duration histogram, seconds (agent calls: ms to minutes).
    pub const DURATION_BUCKETS: [f64; 14] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    /// Buckets of the queue-wait histogram, seconds.
    pub const WAIT_BUCKETS: [f64; 14] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
    ];
}

/// Installs the Prometheus recorder (explicit histogram buckets; gauges that stop being
/// updated are dropped after `gauge_idle`, so a tenant that leaves the top list disappears).
/// Returns the handle that renders the text format.
pub fn install_prometheus(
    gauge_idle: std::time::Duration,
) -> crate::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use metrics_util::MetricKindMask;
    let err = |e: metrics_exporter_prometheus::BuildError| {
        crate::Error::Config(format!("cannot install the metrics recorder: {e}"))
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::TASK_DURATION.into()),
            &names::DURATION_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full(names::QUEUE_WAIT.into()),
            &names::WAIT_BUCKETS,
        )
        .map_err(err)?
        .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
        .install_recorder()
        .map_err(err)?;
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Series known in advance start at 0, so dashboards and alerts see them before the first event.
    metrics::counter!(names::TENANT_LABEL_OVERFLOW).increment(0);
    for op in REDIS_OPS {
        metrics::counter!(names::REDIS_ERRORS, "op" => op).increment(0);
    }
    Ok(handle)
}

/// The `op` label values of `names::REDIS_ERRORS` (registered at 0 when the recorder is installed).
pub const REDIS_OPS: [&str; 22] = [
    "read",
    "start",
    "depths",
    "oom_probe",
    "heartbeat",
    "promote",
    "reclaim",
    "ack",
    "ack_tombstone",
    "schedule_retry",
    "read_entry",
    "dead_letter",
    "defer",
    "breaker_probe",
    "breaker_probe_done",
    "breaker_record",
    "breaker_read",
    "slots",
    "stats",
    "admin_read",
    "admin_beat",
    "admin_command",
];

/// Registers a tenant's counter series at 0 the first time it is seen, so that the first
/// increments show in `increase()` (a series first scraped at 4 reads as no increase).
pub fn register_tenant(tenant: &str) {
    let label = tenant_label(tenant);
    if label == OTHER_TENANT {
        return;
    }
    for name in [
        names::TASKS_READ,
        names::TASKS_COMPLETED,
        names::TASKS_RECOVERED,
        names::RECLAIMED,
        names::TOMBSTONES,
        names::SETTLE_LOST,
        names::SETTLE_REPLY_LOST,
        names::OWNERSHIP_LOST,
        names::RETRIES_PROMOTED,
        names::DLQ_TRIMMED,
        names::TASKS_DEFERRED,
        names::TENANT_ATTEMPTS,
        names::TENANT_CAPPED,
        names::DLQ_REPLAYED,
    ] {
        metrics::counter!(name, "tenant" => label.clone()).increment(0);
    }
    for class in crate::handler::FailureClass::ALL.map(|c| c.as_str()) {
        for name in [names::DEAD_LETTERED, names::TASKS_FAILED] {
            metrics::counter!(name, "tenant" => label.clone(), "class" => class).increment(0);
        }
    }
    // Only transient classes are retried.
    for class in crate::handler::FailureClass::ALL
        .into_iter()
        .filter(|c| c.is_transient())
    {
        metrics::counter!(names::TASKS_RETRIED, "tenant" => label.clone(), "class" => class.as_str())
            .increment(0);
    }
}

/// The label value used for tenants beyond the cap.
pub const OTHER_TENANT: &str = "__other__";

static TENANT_LABELS: OnceLock<Mutex<(usize, HashSet<String>)>> = OnceLock::new();

/// Caps how many distinct tenant label values this process emits (the first `max` tenants seen
/// keep their own series; later ones are counted as `__other__`).
pub fn set_tenant_label_cap(max: usize) {
    let m = TENANT_LABELS.get_or_init(|| Mutex::new((max, HashSet::new())));
    if let Ok(mut g) = m.lock() {
        g.0 = max;
    }
}

/// The label value for `tenant`, respecting the cap.
pub fn tenant_label(tenant: &str) -> String {
    let m = TENANT_LABELS.get_or_init(|| Mutex::new((100, HashSet::new())));
    let Ok(mut g) = m.lock() else {
        return OTHER_TENANT.to_owned();
    };
    if g.1.contains(tenant) {
        return tenant.to_owned();
    }
    if g.1.len() < g.0 {
        g.1.insert(tenant.to_owned());
        return tenant.to_owned();
    }
    metrics::counter!(names::TENANT_LABEL_OVERFLOW).increment(1);
    OTHER_TENANT.to_owned()
}

/// Installs the global tracing subscriber writing to stderr. `RUST_LOG` overrides `level`.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Routes panics through tracing (one structured line) instead of the default stderr dump.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %msg, %location, "panic");
    }));
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
