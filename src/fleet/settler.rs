//! The settler: turns outcomes into Redis state. Completed entries are acked (and deleted) in
//! batches; every other move is one atomic script per entry, run concurrently so that a slow
//! failure path never holds acks back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Settlement, Shared};
use crate::broker::Broker;
use crate::deadletter::DeadLetter;
use crate::error::Result;
use crate::handler::FailureClass;
use crate::task::now_ms;
use crate::telemetry::{names, tenant_label};

/// The settler loop's settings and handles.
#[derive(Clone)]
pub(crate) struct Settler {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub ack_batch: usize,
    pub dlq_max_len: u64,
}

impl Settler {
    /// Settles until every sender is gone, then flushes what is left.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Settlement>) {
        let mut acks: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        let mut moves = JoinSet::new();
        while let Some(first) = rx.recv().await {
            let mut batched = 0;
            let mut next = Some(first);
            // Take what is already queued, up to a batch, so acks ride together.
            while let Some(s) = next.take() {
                match s {
                    Settlement::Done { tenant, entry_id } => {
                        acks.entry(tenant).or_default().push(entry_id);
                        batched += 1;
                    }
                    other => {
                        let me = self.clone();
                        moves.spawn(async move { me.settle_other(other).await });
                    }
                }
                if batched < self.ack_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(&mut acks).await;
            while moves.try_join_next().is_some() {}
        }
        self.flush(&mut acks).await;
        while moves.join_next().await.is_some() {}
    }

    async fn flush(&self, acks: &mut HashMap<Arc<str>, Vec<String>>) {
        if acks.is_empty() {
            return;
        }
        let batches: Vec<_> = acks.drain().collect();
        // Each tenant's batch is one script call; issued together they share round trips on
        // the multiplexed connection.
        let calls = batches.iter().map(|(tenant, ids)| {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let broker = &self.broker;
            async move { self.with_retry("ack", || broker.ack(tenant, &refs)).await }
        });
        let results = futures_util::future::join_all(calls).await;
        for ((tenant, ids), result) in batches.iter().zip(results) {
            if let Some(acked) = result {
                let label = tenant_label(tenant);
                metrics::counter!(names::TASKS_COMPLETED, "tenant" => label.clone())
                    .increment(acked);
                let lost = ids.len() as u64 - acked.min(ids.len() as u64);
                if lost > 0 {
                    metrics::counter!(names::SETTLE_LOST, "tenant" => label).increment(lost);
                    tracing::warn!(tenant = %tenant, lost, "acked entries were already settled by another member");
                }
                self.shared.stats.with(tenant, |t| {
                    t.completed += acked;
                    t.settle_lost += lost;
                });
            }
            // Released even when the ack was abandoned at shutdown: the entries stay pending
            // in Redis and are redelivered, so nothing is lost.
            self.shared.release(tenant, ids.iter().map(String::as_str));
        }
    }

    /// Retries a Redis call with backoff until it succeeds or shutdown has run past its grace.
    async fn with_retry<T, F, Fut>(&self, what: &'static str, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(50);
        loop {
            match call().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    metrics::counter!(names::REDIS_ERRORS, "op" => what).increment(1);
                    if self.shared.past_hard_deadline() {
                        tracing::error!(op = what, error = %e, "giving up at shutdown; the entries stay pending and will be redelivered");
                        return None;
                    }
                    tracing::warn!(op = what, error = %e, retry_in_ms = delay.as_millis() as u64, "redis call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn settle_other(&self, s: Settlement) {
        match s {
            Settlement::Done { .. } => unreachable!("acks are batched by run()"),
            Settlement::Tombstone { tenant, entry_id } => {
                tracing::error!(tenant = %tenant, entry_id = %entry_id, "pending entry was deleted before it ran: payload lost");
                metrics::counter!(names::TOMBSTONES, "tenant" => tenant_label(&tenant))
                    .increment(1);
                let ids = [entry_id.as_str()];
                if self
                    .with_retry("ack_tombstone", || self.broker.ack_only(&tenant, &ids))
                    .await
                    .is_some()
                {
                    self.shared.stats.with(&tenant, |t| t.tombstones += 1);
                }
                self.shared.release(&tenant, [entry_id.as_str()]);
            }
            Settlement::Malformed {
                tenant,
                lane,
                entry_id,
                reason,
                fields,
            } => {
                tracing::warn!(tenant = %tenant, entry_id = %entry_id, class = "malformed_entry", error = %reason, "malformed entry set aside");
                let raw = fields
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(&k).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                let now = now_ms();
                let dl = DeadLetter {
                    orig_lane: lane,
                    orig_id: entry_id.clone(),
                    task: None,
                    raw: Some(raw),
                    class: FailureClass::MalformedEntry,
                    error: reason,
                    detail: None,
                    deliveries: None,
                    steps: Vec::new(),
                    partial_output: None,
                    member: self.shared.member.to_string(),
                    first_failed_at_ms: now,
                    dead_lettered_at_ms: now,
                };
                self.dead_letter(&tenant, &entry_id, dl).await;
            }
            Settlement::Failed {
                job,
                class,
                reason,
                retry_after: _,
                poison,
                progress,
                duration,
            } => {
                let task = &job.task;
                metrics::counter!(names::TASKS_FAILED, "tenant" => tenant_label(&job.tenant), "class" => class.as_str())
                    .increment(1);
                tracing::warn!(
                    tenant = %job.tenant, task_id = %task.task_id, kind = %task.kind, class = %class,
                    attempt = task.attempt, duration_ms = duration.as_millis() as u64, poison, error = %reason,
                    "task attempt failed"
                );
                self.shared
                    .stats
                    .with(&job.tenant, |t| t.failed_attempts += 1);
                let now = now_ms();
                let mut steps = task.steps.clone();
                steps.extend(progress.steps);
                let dl = DeadLetter {
                    orig_lane: self.broker.keys().lane(&job.tenant),
                    orig_id: job.entry_id.clone(),
                    task: Some((**task).clone()),
                    raw: None,
                    class,
                    error: reason,
                    detail: None,
                    deliveries: None,
                    steps,
                    partial_output: progress.partial_output,
                    member: self.shared.member.to_string(),
                    first_failed_at_ms: crate::deadletter::first_failed_at(&task.history, now),
                    dead_lettered_at_ms: now,
                };
                self.dead_letter(&job.tenant, &job.entry_id, dl).await;
            }
        }
    }

    async fn dead_letter(&self, tenant: &Arc<str>, entry_id: &str, dl: DeadLetter) {
        let fields = dl.to_fields();
        let result = self
            .with_retry("dead_letter", || {
                self.broker
                    .dead_letter(tenant, entry_id, self.dlq_max_len, &fields)
            })
            .await;
        if let Some(r) = result {
            let label = tenant_label(tenant);
            if r.moved {
                metrics::counter!(names::DEAD_LETTERED, "tenant" => label.clone(), "class" => dl.class.as_str())
                    .increment(1);
                tracing::warn!(
                    tenant = %tenant, task_id = dl.task.as_ref().map(|t| t.task_id.as_str()).unwrap_or(""),
                    class = %dl.class, dead_letter_id = %r.id, action = dl.action().as_str(), "task dead-lettered"
                );
                self.shared.stats.with(tenant, |t| {
                    *t.dead_lettered
                        .entry(dl.class.as_str().to_owned())
                        .or_default() += 1
                });
            } else {
                metrics::counter!(names::SETTLE_LOST, "tenant" => label.clone()).increment(1);
                self.shared.stats.with(tenant, |t| t.settle_lost += 1);
            }
            if r.trimmed > 0 {
                metrics::counter!(names::DLQ_TRIMMED, "tenant" => label).increment(r.trimmed);
                tracing::warn!(tenant = %tenant, trimmed = r.trimmed, "dead-letter cap trimmed the oldest dead letters");
            }
        }
        self.shared.release(tenant, [entry_id]);
    }
}
