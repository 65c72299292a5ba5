//! The notifier: delivers each tenant's notifications from its outbox in Redis to the tenant's
//! webhook targets (`[[notify.targets]]`), at least once.
//!
//! Every member with targets runs it; one member at a time delivers a tenant's (the lease that
//! each tick takes or renews, scripts/notify_tick.lua), so a member that dies — mid-request
//! included — leaves the tenant to another once its lease runs out, and nothing is lost: an
//! event leaves the outbox only after every target had it (sent, or given up), recorded by
//! scripts/notify_ack.lua after the request. A crash between a request and its ack sends that
//! event again: receivers drop duplicates by `Redrive-Event-Id`. Per target, events go in
//! order; a failed request is tried again after a backoff, and after `notify.max_attempts` the
//! event is given up as `failed` (the delivery log, a metric, a warning) and the next one goes.
//! The tenant's requests per minute are capped (`notify.rate_per_minute`): events wait.
//!
//! A member stopping cleanly finishes the event in flight (acked), sends nothing more, and
//! gives up the leases it holds (only while still its own, one atomic step), so another member
//! delivers at its next tick instead of after the lease's time to live.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agents::webhook::{Notification, Webhook};
use crate::broker::{Attempt, Broker, Delivery, OutboxEvent, Wants};
use crate::config::{NotifySettings, NotifyTarget};
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// Events one target gets per tick at most (a backlog drains over a few ticks, and one
/// tenant's backlog does not hold the member's other tenants back for long).
const PER_TICK: usize = 20;

/// One tenant's targets.
#[derive(Debug, Clone)]
struct Tenant {
    name: String,
    targets: Vec<NotifyTarget>,
    names: Vec<String>,
    wants: Wants,
}

/// The notifier's settings and handles.
pub(crate) struct Notifier {
    broker: Broker,
    member: Arc<str>,
    settings: Arc<NotifySettings>,
    webhook: Webhook,
    tenants: Vec<Tenant>,
    /// Tenants whose lease the last tick found this member holding (given up at shutdown).
    held: Mutex<HashSet<String>>,
    /// Fired when the member stops: no new request is sent once it has.
    stopping: Shutdown,
}

/// What one step did (tests read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StepReport {
    /// Tenants whose lease this member held.
    pub held: usize,
    /// Events delivered.
    pub sent: u64,
    /// Attempts that failed (retried later or given up).
    pub failed_attempts: u64,
}

impl Notifier {
    /// The notifier of member `member` for `settings`' targets.
    pub(crate) fn new(
        broker: Broker,
        member: Arc<str>,
        settings: Arc<NotifySettings>,
    ) -> Result<Notifier> {
        let webhook = Webhook::new(settings.timeout)?;
        let plan = settings.plan();
        let tenants = settings
            .by_tenant()
            .into_iter()
            .map(|(name, targets)| Tenant {
                names: targets.iter().map(|t| t.name.clone()).collect(),
                wants: plan.tenants.get(&name).copied().unwrap_or_default(),
                name,
                targets,
            })
            .collect();
        Ok(Notifier {
            broker,
            member,
            settings,
            webhook,
            tenants,
            held: Mutex::new(HashSet::new()),
            stopping: Shutdown::new(),
        })
    }

    /// One step every `notify.poll_interval_ms` until shutdown.
    /// A step cut short by shutdown ends after the request in flight (its ack written); then
    /// the leases this member holds are given up.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        self.stopping = shutdown.clone();
        for t in &self.tenants {
            events::notify::registered(&t.name);
        }
        events::notify::started(self.tenants.len(), self.settings.targets.len());
        loop {
            self.step().await;
            if shutdown.is_triggered() {
                break;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        self.release().await;
    }

    /// Gives up every tenant's delivery lease the last tick held (each only while still this
    /// member's); returns how many were released.
    pub(crate) async fn release(&self) -> usize {
        let held: Vec<String> = match self.held.lock() {
            Ok(mut h) => h.drain().collect(),
            Err(_) => return 0,
        };
        let results = futures_util::future::join_all(
            held.iter()
                .map(|t| self.broker.notify_release(t, &self.member)),
        )
        .await;
        let mut released = 0;
        for (t, r) in held.iter().zip(results) {
            match r {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => events::notify::redis_failed(t, &e),
            }
        }
        events::notify::released(released);
        released
    }

    /// One tick of every tenant, the tenants at once.
    pub(crate) async fn step(&self) -> StepReport {
        let results =
            futures_util::future::join_all(self.tenants.iter().map(|t| self.tenant_step(t))).await;
        let mut report = StepReport::default();
        for (t, r) in self.tenants.iter().zip(results) {
            match r {
                Ok(r) => {
                    report.held += r.held;
                    report.sent += r.sent;
                    report.failed_attempts += r.failed_attempts;
                }
                Err(e) => events::notify::redis_failed(&t.name, &e),
            }
        }
        report
    }

    /// One tick of tenant `t`: the lease, new events into the outbox, then what each target is
    /// due.
    async fn tenant_step(&self, t: &Tenant) -> Result<StepReport> {
        let s = &self.settings;
        let names: Vec<&str> = t.names.iter().map(String::as_str).collect();
        let digest = if t.wants.dead_lettered {
            s.digest_interval
        } else {
            Duration::ZERO
        };
        let tick = self
            .broker
            .notify_tick(
                &t.name,
                &self.member,
                s.lease,
                digest,
                t.wants.breaker,
                &names,
            )
            .await?;
        let mut report = StepReport::default();
        if let Ok(mut held) = self.held.lock() {
            if tick.held {
                held.insert(t.name.clone());
            } else {
                held.remove(&t.name);
            }
        }
        if !tick.held {
            return Ok(report);
        }
        report.held = 1;
        let age = tick.oldest.as_deref().map_or(0, |o| {
            tick.now_ms.saturating_sub(crate::admin::select::id_ms(o)) / 1000
        });
        events::notify::outbox(&t.name, tick.depth, age);
        let mut budget = u64::from(s.rate_per_minute).saturating_sub(tick.sent_this_minute);
        for (target, pos) in t.targets.iter().zip(tick.targets) {
            if pos.wait_until_ms > tick.now_ms {
                continue;
            }
            let mut cursor = pos.cursor;
            let mut attempts = pos.attempts;
            let mut next = pos.next;
            let mut handled = 0;
            while let Some(ev) = next.take() {
                if handled >= PER_TICK {
                    break;
                }
                handled += 1;
                if !target.wants_kind(&ev.kind) {
                    match self
                        .ack(t, target, &cursor, &ev, Delivery::Skipped, 0, false, "")
                        .await?
                    {
                        Some(n) => {
                            cursor = ev.id.clone();
                            next = n;
                            continue;
                        }
                        None => return Ok(report),
                    }
                }
                if budget == 0 {
                    events::notify::rate_limited(&t.name);
                    return Ok(report);
                }
                if self.stopping.is_triggered() {
                    // Stopping: the event stays where it is, for the next holder.
                    return Ok(report);
                }
                budget -= 1;
                crate::failpoint::hit("notify_before_send");
                let attempt = attempts + 1;
                let outcome = self.send(t, target, &ev).await;
                let (delivery, detail) = match &outcome {
                    Ok(status) if (200..300).contains(status) => {
                        (Delivery::Sent, format!("HTTP {status}"))
                    }
                    failure => {
                        let why = match failure {
                            Ok(status) => format!("HTTP {status} from {}", target.endpoint),
                            Err(why) => format!("{}: {why}", target.endpoint),
                        };
                        report.failed_attempts += 1;
                        if attempt >= s.max_attempts {
                            (Delivery::Failed, why)
                        } else {
                            (Delivery::Retry(s.backoff(attempt)), why)
                        }
                    }
                };
                let acked = self
                    .ack(t, target, &cursor, &ev, delivery, attempt, true, &detail)
                    .await?;
                match delivery {
                    Delivery::Sent => {
                        report.sent += 1;
                        let status = outcome.as_ref().copied().unwrap_or(0);
                        events::notify::sent(&t.name, &target.name, &ev.kind, &ev.id, status);
                    }
                    Delivery::Failed => events::notify::failed(
                        &t.name,
                        &target.name,
                        &target.endpoint,
                        &ev.kind,
                        &ev.id,
                        &detail,
                    ),
                    Delivery::Retry(d) => events::notify::retry(
                        &t.name,
                        &target.name,
                        &target.endpoint,
                        &ev.kind,
                        attempt,
                        d.as_millis() as u64,
                        &detail,
                    ),
                    Delivery::Skipped => {}
                }
                let Some(n) = acked else {
                    // The lease or the cursor moved: another member delivers now.
                    return Ok(report);
                };
                if let Delivery::Retry(_) = delivery {
                    break;
                }
                cursor = ev.id.clone();
                attempts = 0;
                next = n;
            }
        }
        Ok(report)
    }

    /// POSTs `ev` to `target`: the status, or why nothing came back.
    async fn send(
        &self,
        t: &Tenant,
        target: &NotifyTarget,
        ev: &OutboxEvent,
    ) -> std::result::Result<u16, String> {
        let id = format!("{}/{}", t.name, ev.id);
        let data: serde_json::Value =
            serde_json::from_str(&ev.body).unwrap_or(serde_json::Value::String(ev.body.clone()));
        let body = serde_json::json!({
            "id": id,
            "type": ev.kind,
            "tenant": t.name,
            "at": ev.at_ms,
            "data": data,
        })
        .to_string();
        self.webhook
            .send(
                &target.url,
                target.secret.expose(),
                &Notification {
                    id: &id,
                    kind: &ev.kind,
                    tenant: &t.name,
                    body: body.as_bytes(),
                },
            )
            .await
    }

    /// Records what became of an attempt (scripts/notify_ack.lua); `None` when refused.
    #[allow(clippy::too_many_arguments)]
    async fn ack(
        &self,
        t: &Tenant,
        target: &NotifyTarget,
        cursor: &str,
        ev: &OutboxEvent,
        delivery: Delivery,
        attempt: u32,
        requested: bool,
        detail: &str,
    ) -> Result<Option<Option<OutboxEvent>>> {
        let names: Vec<&str> = t.names.iter().map(String::as_str).collect();
        self.broker
            .notify_ack(
                &t.name,
                &self.member,
                self.settings.lease,
                &Attempt {
                    target: &target.name,
                    cursor,
                    event: ev,
                    delivery,
                    attempt,
                    requested,
                    detail,
                },
                self.settings.log_max_len,
                &names,
            )
            .await
    }
}
