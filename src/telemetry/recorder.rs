//! The Prometheus recorder (explicit buckets, series known in advance registered at 0) and the
//! bounded tenant label.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use super::names;
use super::redis_op::RedisOp;

/// The recorder this process installed, once it has.
static INSTALLED: Mutex<Option<metrics_exporter_prometheus::PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder (explicit histogram buckets; gauges that stop being
/// updated are dropped after `gauge_idle`, so a tenant that leaves the top list disappears).
/// Returns the handle that renders the text format. Idempotent: a second call returns the
/// first call's handle (the recorder is global).
///
/// Metric handles resolved before the recorder exists record nowhere, for good: install it
/// before building what resolves handles up front (the handlers of `[[handlers]]` register
/// their series at 0 when they are built).
pub fn install_prometheus(
    gauge_idle: std::time::Duration,
) -> crate::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = build_prometheus(gauge_idle)?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// [`install_prometheus`]'s first call.
fn build_prometheus(
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
            Matcher::Full(names::HTTP_ATTEMPT_DURATION.into()),
            &names::DURATION_BUCKETS,
        )
        .map_err(err)?
        .set_buckets_for_metric(
            Matcher::Full(names::API_REQUEST_DURATION.into()),
            &names::API_BUCKETS,
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
    for op in RedisOp::ALL {
        metrics::counter!(names::REDIS_ERRORS, "op" => op.as_str()).increment(0);
    }
    for what in super::events::replication::WHAT {
        metrics::counter!(names::REDIS_WAIT_SHORT, "what" => what).increment(0);
    }
    for result in ["recorded", "fenced", "failed"] {
        metrics::counter!(names::STEP_RECORDS, "result" => result).increment(0);
    }
    for found in ["record", "located", "none"] {
        metrics::counter!(names::TASK_LOOKUPS, "found" => found).increment(0);
    }
    for result in super::events::api::LOGIN_RESULTS {
        metrics::counter!(names::API_LOGINS, "result" => result).increment(0);
    }
    super::events::storm::register_series();
    Ok(handle)
}

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
        names::TASK_RECORDS_EXPIRED,
    ] {
        metrics::counter!(name, "tenant" => label.clone()).increment(0);
    }
    metrics::counter!(names::DLQ_ARCHIVED_BYTES, "tenant" => label.clone()).increment(0);
    for class in crate::archive::ArchiveClass::ALL {
        metrics::counter!(names::DLQ_ARCHIVED, "tenant" => label.clone(), "class" => class.as_str())
            .increment(0);
    }
    for op in ARCHIVE_OPS {
        metrics::counter!(names::DLQ_ARCHIVE_ERRORS, "tenant" => label.clone(), "op" => op)
            .increment(0);
    }
    // A member's side of the duplicates (a producer counts its own side where it runs).
    metrics::counter!(names::DUPLICATES, "tenant" => label.clone(), "side" => "member")
        .increment(0);
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

/// The `op` labels of the archive's failures (`events::archive::failed`), registered at 0 per
/// tenant.
pub const ARCHIVE_OPS: [&str; 4] = ["read", "write", "confirm", "remove"];

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
