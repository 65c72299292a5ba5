//! [`Telemetry`]: what an embedder calls to get redrive's logs, metrics and health endpoint
//! without copying the application's set-up: logging (format, filter, panics as log lines),
//! the tenant label cap, then on demand the Prometheus recorder and the HTTP endpoint
//! (/metrics, /healthz, /readyz). `Telemetry::install(&Settings)` is defined next to the
//! settings (`src/config/mod.rs`), because telemetry sits below config.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint;
use super::events::storm;
use super::health::Health;
use super::logging::{self, LogFormat};
use super::recorder;
use super::settings::MetricsSettings;
use crate::error::Result;
use crate::shutdown::Shutdown;

/// Logging and metrics of one process, installed from the settings.
///
/// ```no_run
/// # async fn doc(handlers: redrive::Handlers) -> redrive::Result<()> {
/// let settings = redrive::Settings::load(None)?;
/// let telemetry = redrive::Telemetry::install(&settings);
/// // Before the fleet is built: its handlers register their series as they are built.
/// telemetry.install_metrics()?;
/// let broker = redrive::Broker::connect(&settings).await?;
/// let fleet = redrive::Fleet::routed(broker, &settings, &handlers)?;
/// let shutdown = redrive::Shutdown::new();
/// telemetry.serve_metrics(fleet.health(), shutdown.clone()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Label cap, gauge refresh and stall detection.
    metrics: MetricsSettings,
    /// Where to serve the endpoint (`metrics.listen`); `None` turns it off.
    listen: Option<SocketAddr>,
    /// Window of storm-proof logging (`log.storm_interval_ms`; zero: every line).
    storm_interval: Duration,
}

impl Telemetry {
    /// The metrics half, with nothing installed yet.
    pub(crate) fn new(
        metrics: MetricsSettings,
        listen: Option<SocketAddr>,
        storm_interval: Duration,
    ) -> Telemetry {
        Telemetry {
            metrics,
            listen,
            storm_interval,
        }
    }

    /// Installs the global log subscriber (`RUST_LOG` overrides `level`) with its storm
    /// interval, the tenant label cap and the panic hook, then logs each of `warnings`
    /// (settings that were ignored).
    pub(crate) fn install_logging(&self, format: LogFormat, level: &str, warnings: Vec<String>) {
        logging::init_logging(format, level);
        storm::set_interval(self.storm_interval);
        recorder::set_tenant_label_cap(self.metrics.max_tenant_labels);
        logging::install_panic_hook();
        for w in warnings {
            tracing::warn!("{w}");
        }
    }

    /// When `metrics.listen` is set: installs the Prometheus recorder (nothing otherwise).
    /// Call it before building the fleet: metric handles resolved while no recorder is
    /// installed record nowhere, and the handlers of `[[handlers]]` resolve theirs (their
    /// series registered at 0) when they are built. Idempotent; [`Telemetry::serve_metrics`]
    /// installs it too, for whoever did not.
    pub fn install_metrics(&self) -> Result<()> {
        if self.listen.is_some() {
            recorder::install_prometheus(self.metrics.refresh_interval * 3)?;
        }
        Ok(())
    }

    /// When `metrics.listen` is set: installs the Prometheus recorder (unless
    /// [`Telemetry::install_metrics`] did), binds the address (a taken port fails here,
    /// clearly) and serves /metrics, /healthz and /readyz (readiness from `health`, e.g.
    /// [`crate::Fleet::health`]) until `shutdown`. Returns the bound address, or `None` when
    /// the endpoint is off. Call it once per process.
    pub async fn serve_metrics(
        &self,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> Result<Option<SocketAddr>> {
        let Some(addr) = self.listen else {
            return Ok(None);
        };
        let handle = recorder::install_prometheus(self.metrics.refresh_interval * 3)?;
        let listener = endpoint::bind(addr).await?;
        let bound = listener.local_addr().ok();
        let shown = bound.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listen = %shown, "serving /metrics, /healthz and /readyz");
        tokio::spawn(endpoint::MetricsEndpoint::new(listener, handle, health).run(shutdown));
        Ok(bound.or(Some(addr)))
    }
}
