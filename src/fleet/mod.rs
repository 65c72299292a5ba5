//! A fleet member: the loops that read tasks, run them and settle them.
//!
//! ```text
//!  lanes ──XREADGROUP──▶ reader ──▶ FairQueue ──▶ executor ──▶ handler
//!                          │ (malformed, tombstones)          │ (outcome)
//!                          └──────────────▶ settler ◀─────────┘
//!                                             │ ack batches / dead-letter scripts
//!                                             ▼
//!                                           Redis
//! ```
//!
//! * [`reader`] owns a dedicated connection, discovers tenants from the registry, drains its
//!   own pending entries on start, then reads new entries across lanes sized to free capacity.
//! * [`discovery`] hears producers announce new tenants (pub/sub) and has the reader take them
//!   in at once, ending its blocking read; the reader's periodic look is the fallback.
//! * [`executor`] pops tasks round-robin across tenants and runs each attempt on its route
//!   ([`router`]: the handler, timeout and concurrency cap of the first `[[handlers]]` entry
//!   matching its kind) with a timeout, catching panics; [`steps`] records the attempt's step
//!   checkpoints in Redis as they arrive.
//! * [`settler`] acks completed entries in batches and moves failures to their destination in
//!   one atomic script each.
//! * [`lease`] holds the member id so that two processes never share one consumer name.
//! * [`admin`] executes operators' admin commands from the admin stream (replays, removals)
//!   and beats so that CLIs know a fleet is alive. The per-minute settle counts `redrive
//!   health` reads are written by the settle scripts themselves, in the step that settles.
//! * [`isolation`] keeps the member's view of every tenant's breaker and its share of each
//!   tenant's fleet-wide in-flight cap; [`isolation_sync`] syncs it with Redis once per refresh.
//! * [`health`] refreshes the Redis-derived gauges and the readiness inputs.
//! * [`log_summaries`] writes the summaries of log lines a storm repeated (the first of each
//!   cause per `log.storm_interval_ms` is written, the rest counted) when their windows end.
//! * [`notifier`] delivers tenants' notifications (`[[notify.targets]]`) from their outboxes
//!   in Redis, one member at a time per tenant, at least once.
//! * [`reclaimer`] takes over stale entries of dead or stuck members, [`recoverer`] promotes
//!   due retries, [`heartbeat`] keeps held entries fresh.
//! * [`archiver`] moves dead letters past the cap or the retention, and resolved or discarded
//!   ones past their grace period, into the archive — written and confirmed before they leave
//!   Redis — one member per tenant at a time.
//! * [`shared`] is the member's state every loop shares, [`settlement`] the messages the
//!   settler takes, [`stats`] the tallies; [`next_move`] and [`read_plan`] are the pure
//!   decisions of the settler and the reader.
//!
//! Every loop has one shape: a struct owning its state, `run(self, shutdown)` that paces it,
//! and one `step` that does one pass and never sleeps (tests call it directly, see
//! `loop_steps`): `Reader`, `Executor`, `SettleLoop` (ends when its channel closes, not on
//! shutdown), `Reclaimer`, `Recoverer`, `Heartbeat`, `LeaseKeeper`, `IsolationSync`,
//! `DepthRefresher`, `AdminLoop`, `LogSummaries`, `Archiver`, `TenantWatch` (its step waits for an
//! announcement and may retry the reader's unblock briefly, bounded by `fleet.block_ms`).
//!
//! Shutdown order: stop reading (tasks and admin commands; a running replay stops after its
//! current step and stays pending, to be resumed), stop starting tasks, let running tasks finish
//! within the grace period (the rest stay pending for reclaim), shut every route's handler down,
//! flush settlements, report the
//! last attempt outcomes and give back the member's in-flight
//! reservations, write the summaries of the log lines not written one by one, release the
//! lease. [`Loops::stop_in_order`] spells this out, one line per stage.

pub(crate) mod admin;
#[cfg(test)]
mod archive_steps;
pub(crate) mod archiver;
#[cfg(test)]
mod checkpoint_steps;
pub(crate) mod discovery;
pub(crate) mod executor;
pub(crate) mod fair;
pub(crate) mod health;
pub(crate) mod heartbeat;
pub(crate) mod isolation;
pub(crate) mod isolation_sync;
pub(crate) mod lease;
pub(crate) mod log_summaries;
#[cfg(test)]
mod loop_steps;
pub(crate) mod next_move;
pub(crate) mod notifier;
pub(crate) mod read_plan;
pub(crate) mod reader;
pub(crate) mod reclaimer;
#[cfg(test)]
mod record_steps;
pub(crate) mod recoverer;
pub(crate) mod rotation;
pub(crate) mod router;
pub(crate) mod settlement;
pub(crate) mod settler;
pub(crate) mod shared;
pub(crate) mod stats;
pub(crate) mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::classify::Classifier;
use crate::config::{AdminSettings, FleetSettings, MetricsSettings, Settings};
use crate::error::Result;
use crate::handler::{Handler, HandlerSpec, Handlers};
use crate::policy::Policies;
use crate::shutdown::Shutdown;
use crate::task::Limits;
use crate::telemetry::Health;
use settlement::Settlement;
use shared::{Shared, SharedParts};
pub(crate) use stats::{AckObserver, FleetStats, TenantTally};

/// A fleet member, ready to run.
pub struct Fleet {
    broker: Broker,
    settings: FleetSettings,
    limits: Limits,
    dlq_ceiling: u64,
    policies: Arc<Policies>,
    classifier: Arc<Classifier>,
    router: Arc<router::Router>,
    stats: Arc<FleetStats>,
    ack_observer: Option<Arc<dyn AckObserver>>,
    metrics: MetricsSettings,
    health: Arc<Health>,
    log_payloads: bool,
    fast_ack_window: Duration,
    admin: AdminSettings,
    isolation: Arc<crate::isolation::IsolationSettings>,
    tasks: Arc<crate::config::TasksSettings>,
    /// `[archive]`: where dead letters go when they leave Redis.
    archive: crate::archive::ArchiveSettings,
    /// `[dead_letter]`: when they leave (cap, retention, grace).
    retention: crate::archive::Retention,
    notify: Arc<crate::config::NotifySettings>,
}

impl Fleet {
    /// A member reading through `broker`'s group that runs every task with `handler` (one
    /// catch-all route: `fleet.task_timeout_ms`, at most `fleet.concurrency` at once),
    /// configured by `settings`; its `[[handlers]]` are not used (see [`Fleet::routed`]).
    pub fn new(broker: Broker, settings: &Settings, handler: Arc<dyn Handler>) -> Fleet {
        let name = match settings.fleet.handler.as_str() {
            "" => "custom",
            named => named,
        };
        let spec = HandlerSpec::catch_all(
            name,
            settings.fleet.task_timeout,
            settings.fleet.concurrency,
        );
        Fleet::with_router(
            broker,
            settings,
            router::Router::new(vec![(spec, handler)], true),
        )
    }

    /// A member that routes each task by its kind to the handlers the routing table of
    /// `settings` configures (`[[handlers]]`, or the one entry `fleet.handler` stands for),
    /// each built by `handlers` (an application's registrations, then the library's own types).
    /// Refuses a table that names an unknown type, a handler whose factory refuses its entry,
    /// and an empty table (with the message that says how to configure one): configuration
    /// errors, exit code 78.
    pub fn routed(broker: Broker, settings: &Settings, handlers: &Handlers) -> Result<Fleet> {
        let routes = handlers.build_routes(&settings.routing)?;
        let router = router::Router::new(routes, settings.routing.shorthand);
        Ok(Fleet::with_router(broker, settings, router))
    }

    fn with_router(broker: Broker, settings: &Settings, router: router::Router) -> Fleet {
        Fleet {
            broker,
            settings: settings.fleet.clone(),
            limits: settings.limits,
            dlq_ceiling: settings.retention.hard_max_len,
            policies: Arc::new(settings.policies.clone()),
            classifier: Arc::new(settings.classifier.clone()),
            router: Arc::new(router),
            stats: Arc::new(FleetStats::default()),
            ack_observer: None,
            metrics: settings.metrics,
            health: Arc::new(Health::new(settings.metrics.stall_after)),
            log_payloads: settings.log_payloads,
            fast_ack_window: (settings.fleet.reclaim.min_idle / 2)
                .saturating_sub(settings.redis.response_timeout),
            admin: settings.admin.clone(),
            isolation: Arc::new(settings.isolation.clone()),
            tasks: Arc::new(settings.tasks().clone()),
            archive: settings.archive.clone(),
            retention: settings.retention.clone(),
            notify: Arc::new(settings.notify.clone()),
        }
    }

    /// The member's liveness and readiness, for /healthz and /readyz.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Reports every successful ack batch to `observer`.
    pub(crate) fn with_ack_observer(mut self, observer: Arc<dyn AckObserver>) -> Fleet {
        self.ack_observer = Some(observer);
        self
    }

    /// The member's live tallies.
    pub(crate) fn stats(&self) -> Arc<FleetStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` fires (or the member loses its id), then stops in order.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        let s = &self.settings;
        let member: Arc<str> = s.member_id.as_str().into();
        // A directory that cannot be made, or S3 settings object_store refuses, fail the start
        // (exit code 78) rather than leaving dead letters to pile up unarchived.
        let archive = if self.archive.enabled {
            Some(crate::archive::ArchiveStore::open(&self.archive)?)
        } else {
            None
        };
        let lease = lease::Lease::acquire(&self.broker, &member, s.lease_ttl, &shutdown).await?;
        tracing::info!(member = %member, group = self.broker.group(), concurrency = s.concurrency, "fleet member started");
        // The probe's least (what the fleet uses), then one info series per distinct
        // (flavor, version) of a cluster's masters.
        let server = self.broker.server();
        crate::telemetry::events::redis_server::server_probed(
            server.flavor.as_str(),
            &server.version_label(),
            server.xackdel,
            server.hsetex,
        );
        for other in self.broker.servers() {
            crate::telemetry::events::redis_server::server_info(
                other.flavor.as_str(),
                &other.version_label(),
            );
        }
        let shared = Arc::new(Shared::new(
            s,
            SharedParts {
                member: member.clone(),
                isolation: self.isolation.clone(),
                stats: self.stats.clone(),
                limits: self.limits,
                ack_observer: self.ack_observer.clone(),
                health: self.health.clone(),
                tasks: self.tasks.clone(),
            },
        ));
        let loops = Loops::spawn(&self, lease, shared.clone(), &shutdown, archive);
        shutdown.wait().await;
        self.health.set_serving(false);
        tracing::info!(member = %member, "stopping: no new reads, finishing in-flight tasks");
        let _ = shared
            .hard_deadline
            .set(Instant::now() + s.shutdown_grace + Duration::from_secs(2));
        let result = loops.stop_in_order(&self.broker, &self.router).await;
        let left = shared.unsettled();
        tracing::info!(member = %member, left_pending = left, "fleet member stopped");
        result
    }

    /// The settler, settling through the member's state.
    fn settler(&self, shared: &Arc<Shared>) -> settler::Settler {
        settler::Settler {
            broker: self.broker.clone(),
            shared: shared.clone(),
            ack_batch: self.settings.ack_batch,
            dlq_ceiling: self.dlq_ceiling,
            policies: self.policies.clone(),
            log_payloads: self.log_payloads,
            max_deliveries: self.settings.reclaim.max_deliveries,
            fast_ack_window: self.fast_ack_window,
        }
    }

    /// The executor, handing outcomes to `settle`.
    fn executor(
        &self,
        shared: &Arc<Shared>,
        settle: &mpsc::UnboundedSender<Settlement>,
    ) -> executor::Executor {
        let s = &self.settings;
        executor::Executor::new(executor::ExecutorSettings {
            broker: self.broker.clone(),
            shared: shared.clone(),
            router: self.router.clone(),
            policies: self.policies.clone(),
            classifier: self.classifier.clone(),
            settle: settle.clone(),
            concurrency: s.concurrency,
            grace: s.shutdown_grace,
            fast_start_window: self.fast_ack_window,
        })
    }

    /// The depth refresher, feeding the member's health.
    fn depth_refresher(&self, shared: &Arc<Shared>) -> health::DepthRefresher {
        health::DepthRefresher {
            broker: self.broker.clone(),
            shared: shared.clone(),
            health: self.health.clone(),
            cfg: self.metrics,
            dlq_published: Default::default(),
            unowned: Default::default(),
            known: Default::default(),
            turn: Default::default(),
        }
    }

    /// The admin loop, executing commands as this member.
    fn admin_loop(&self, shared: &Arc<Shared>) -> admin::AdminLoop {
        admin::AdminLoop::new(
            crate::admin::exec::AdminContext {
                broker: self.broker.clone(),
                settings: self.admin.clone(),
                limits: self.limits,
                dlq_ceiling: self.dlq_ceiling,
                executor: shared.member.to_string(),
                tasks: (*self.tasks).clone(),
                archive: self.archive.clone(),
            },
            self.settings.block,
            self.settings.shutdown_grace,
        )
    }
}

/// The running loops of one member, held so they can be stopped in the documented order.
struct Loops {
    reader: JoinHandle<Result<()>>,
    watch: Option<JoinHandle<()>>,
    admin: JoinHandle<()>,
    notifier: Option<JoinHandle<()>>,
    reclaimer: JoinHandle<()>,
    recoverer: JoinHandle<()>,
    archiver: Option<JoinHandle<()>>,
    executor: JoinHandle<()>,
    settler: JoinHandle<()>,
    heartbeat: Option<JoinHandle<()>>,
    depths: JoinHandle<()>,
    isolation: JoinHandle<()>,
    summaries: JoinHandle<()>,
    lease: JoinHandle<lease::Lease>,
    /// Stops the background loops (heartbeat, depth refresher, isolation sync, log summaries),
    /// which keep
    /// running after the executor has drained, so heartbeats keep running tasks' entries fresh
    /// through the grace period.
    background: Shutdown,
}

impl Loops {
    /// Spawns every loop of the member. The reader, executor, reclaimer, recoverer, admin loop
    /// and lease keeper stop on `shutdown`; the settler when every sender is gone; the rest on
    /// their own background signal (see [`Loops::stop_in_order`]).
    fn spawn(
        fleet: &Fleet,
        lease: lease::Lease,
        shared: Arc<Shared>,
        shutdown: &Shutdown,
        archive: Option<crate::archive::ArchiveStore>,
    ) -> Loops {
        let s = &fleet.settings;
        let broker = &fleet.broker;
        let (settle_tx, settle_rx) = mpsc::unbounded_channel::<Settlement>();
        let background = Shutdown::new();
        let lease_period = s.lease_ttl / 3;
        let lease = tokio::spawn(
            lease::LeaseKeeper::new(lease, broker.clone(), lease_period).run(shutdown.clone()),
        );
        let settler = tokio::spawn(fleet.settler(&shared).run(settle_rx));
        let executor = tokio::spawn(fleet.executor(&shared, &settle_tx).run(shutdown.clone()));
        let recoverer = tokio::spawn(
            recoverer::Recoverer {
                broker: broker.clone(),
                shared: shared.clone(),
                interval: s.retry_poll_interval,
                idle_look: s.retry_idle_look,
                next_look: std::collections::HashMap::new(),
                batch: s.promote_batch,
                sweep: fleet
                    .tasks
                    .enabled
                    .then(|| recoverer::RecordSweep::new((*fleet.tasks).clone())),
                counts: recoverer::CountsUpkeep::new(),
            }
            .run(shutdown.clone()),
        );
        let archiver = archive.map(|store| {
            let mut a = archiver::Archiver::new(
                broker.clone(),
                shared.clone(),
                store,
                fleet.archive.clone(),
                fleet.retention.clone(),
            );
            a.republish = fleet.metrics.refresh_interval;
            tokio::spawn(a.run(shutdown.clone()))
        });
        let reclaimer = tokio::spawn(
            reclaimer::Reclaimer::new(
                broker.clone(),
                shared.clone(),
                settle_tx.clone(),
                s.reclaim.clone(),
            )
            .run(shutdown.clone()),
        );
        let heartbeat = s.reclaim.heartbeat.then(|| {
            tokio::spawn(
                heartbeat::Heartbeat {
                    broker: broker.clone(),
                    shared: shared.clone(),
                    period: s.reclaim.min_idle / 3,
                }
                .run(background.clone()),
            )
        });
        // Runs until the settler has flushed, so the last outcomes are reported and the
        // member's reservations are given back at the very end.
        let isolation = tokio::spawn(
            isolation_sync::IsolationSync::new(broker.clone(), shared.clone())
                .run(background.clone()),
        );
        let reader = tokio::spawn(
            reader::Reader::new(broker.clone(), shared.clone(), settle_tx, s).run(shutdown.clone()),
        );
        let watch = s.tenant_signals.then(|| {
            tokio::spawn(
                discovery::TenantWatch {
                    broker: broker.clone(),
                    shared: shared.clone(),
                    block: s.block,
                }
                .run(shutdown.clone()),
            )
        });
        let depths = tokio::spawn(fleet.depth_refresher(&shared).run(background.clone()));
        // Runs to the end too: what the last settles logged is summarised when it stops.
        let summaries = tokio::spawn(log_summaries::LogSummaries.run(background.clone()));
        fleet.health.set_serving(true);
        let admin = tokio::spawn(fleet.admin_loop(&shared).run(shutdown.clone()));
        let notifier = if fleet.notify.targets.is_empty() {
            None
        } else {
            match notifier::Notifier::new(
                broker.clone(),
                shared.member.clone(),
                fleet.notify.clone(),
            ) {
                Ok(n) => Some(tokio::spawn(n.run(shutdown.clone()))),
                Err(e) => {
                    tracing::error!(error = %e, "tenant notifications cannot start: no HTTP client");
                    None
                }
            }
        };
        Loops {
            reader,
            watch,
            admin,
            notifier,
            reclaimer,
            recoverer,
            archiver,
            executor,
            settler,
            heartbeat,
            depths,
            isolation,
            summaries,
            lease,
            background,
        }
    }

    /// Waits for the loops in the documented order once shutdown has fired; the reader's
    /// result is the member's.
    async fn stop_in_order(self, broker: &Broker, router: &router::Router) -> Result<()> {
        // 1. Stop reading tasks, then admin commands (a running replay stays pending), then
        //    delivering notifications.
        let reader = self.reader.await;
        if let Some(w) = self.watch {
            let _ = w.await;
        }
        let _ = self.admin.await;
        if let Some(n) = self.notifier {
            // It ends after the request in flight and gives its tenants' delivery leases up,
            // so another member delivers at its next tick.
            let _ = n.await;
        }
        // 2. Stop taking over entries, promoting retries and archiving (a batch in flight
        //    stays recorded in Redis, to be uploaded again and removed by whoever is next).
        let _ = self.reclaimer.await;
        let _ = self.recoverer.await;
        if let Some(a) = self.archiver {
            let _ = a.await;
        }
        // 3. Let running tasks finish within the grace period, then let every route's handler
        //    release what it holds (child processes, connections).
        let _ = self.executor.await;
        router.shutdown().await;
        // 4. Flush settlements (the settler ends when its last sender is gone).
        let _ = self.settler.await;
        // 5. Stop the background loops: heartbeat, depths, then isolation's last report and
        //    the release of the member's reservations, then the summaries of every log line
        //    not written one by one.
        self.background.trigger();
        if let Some(h) = self.heartbeat {
            let _ = h.await;
        }
        let _ = self.depths.await;
        let _ = self.isolation.await;
        let _ = self.summaries.await;
        // 6. Release the lease.
        if let Ok(lease) = self.lease.await {
            lease.release(broker).await;
        }
        match reader {
            Ok(r) => r,
            Err(e) => Err(crate::error::Error::Protocol(format!(
                "reader task failed: {e}"
            ))),
        }
    }
}
