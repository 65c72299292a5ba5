//! The archiver loop: moves dead letters out of Redis into the archive (a directory or
//! S3-compatible storage, src/archive/) without ever losing one — past the cap or the
//! retention, and resolved or discarded ones after their grace period.
//!
//! One member at a time archives a tenant: it holds the tenant's archiver lease
//! (scripts/archive_lease.lua, renewed every batch). A batch moves in four steps:
//!
//! 1. **record** it in Redis (scripts/archive_begin.lua: its source, class, object name and
//!    ids) before anything is uploaded;
//! 2. **write** its entries as one gzip-compressed JSON Lines object, then its manifest;
//! 3. **confirm**: look at both (their sizes must be what was written);
//! 4. **remove** exactly those ids from Redis in one script on the tenant's hash tag
//!    (scripts/dlq_archived.lua: counts, trim counter, records), which also forgets the batch.
//!
//! A failure at 2 or 3 removes nothing; a crash anywhere leaves the batch recorded, and whoever
//! archives the tenant next (this member after a restart, another after the lease expires)
//! uploads the same entries again under the same object name — never a differently cut batch —
//! before it removes them. Object names come from the batch's first and last id and the day it
//! was begun (recorded), so a retried upload overwrites, never duplicates.
//!
//! While the archive is unreachable nothing leaves Redis: the dead-letter stream grows past
//! its cap up to the hard ceiling (dead_letter.lua trims beyond it, counted loudly). The
//! backlog and how long it has been waiting are gauges (`redrive_dlq_archive_backlog`,
//! `redrive_dlq_archive_backlog_age_seconds`); after a failed upload the member waits one
//! interval before it tries any tenant's upload again, so an unreachable archive costs one
//! request timeout per interval, not one per tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rotation::{budget, Rotation};
use super::shared::Shared;
use crate::archive::format::{self, ArchiveClass, ArchivedEntry, BatchName};
use crate::archive::{ArchiveSettings, ArchiveStore, Retention};
use crate::broker::{
    ArchiveRemoval, ArchiveSource, ArchivedItem, BatchBegin, Broker, Entry, PendingBatch,
};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// Batches one visit of a tenant archives at most (the next visit goes on).
const BATCHES_PER_VISIT: usize = 20;

/// The archiver's settings and handles.
pub(crate) struct Archiver {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub store: ArchiveStore,
    pub settings: ArchiveSettings,
    pub retention: Retention,
    /// This member's lease token (its member id: a restarted member resumes at once).
    pub token: String,
    /// Per tenant: when it was last visited and since when its backlog waits.
    pub tenants: HashMap<String, TenantView>,
    /// No upload is tried before this (set after a failed write or confirmation).
    pub store_down_until: Option<Instant>,
    /// The longest pause between two ticks: the metrics refresh interval, so the backlog
    /// gauges are set again before the recorder drops them as idle.
    pub republish: Duration,
    /// Whose visit is next: at most [`LOOKS_PER_SECOND`](super::rotation::LOOKS_PER_SECOND)
    /// tenants are visited per second, so an idle member's Redis work does not grow with the
    /// number of tenants (with many, each is visited less often than `archive.interval_ms`).
    pub turn: Rotation,
    /// Tests only: runs once between a batch's confirmed upload and its removal (what another
    /// process could do in that window).
    #[cfg(test)]
    pub before_remove: Option<BeforeRemove>,
}

/// What the archiver remembers of one tenant.
#[derive(Debug, Default)]
pub(crate) struct TenantView {
    /// When it was last visited.
    pub last: Option<Instant>,
    /// Since when its backlog has been non-empty (as this member saw it).
    pub backlog_since: Option<Instant>,
    /// Whether this member held its lease at the last visit.
    pub leased: bool,
    /// The backlog seen at the last visit (entries), published with its age at every tick.
    pub backlog: u64,
}

/// What one [`Archiver::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArchiveStep {
    /// Batches archived and removed.
    pub batches: usize,
    /// Entries removed from Redis after their batch was confirmed.
    pub removed: u64,
    /// Failures (nothing removed for them).
    pub failed: usize,
}

/// What a test runs between a batch's upload and its removal.
#[cfg(test)]
pub(crate) type BeforeRemove =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// How many times a batch is written and its removal tried while review records keep
/// changing under it, in one visit.
const REVIEW_TRIES: usize = 3;

/// How one batch ended.
enum BatchEnd {
    /// Archived and removed (`removed` entries).
    Done(u64),
    /// Another member finished it first.
    Elsewhere,
}

impl Archiver {
    /// Builds the loop; the store is opened by the caller (a bad directory fails the start).
    pub(crate) fn new(
        broker: Broker,
        shared: Arc<Shared>,
        store: ArchiveStore,
        settings: ArchiveSettings,
        retention: Retention,
    ) -> Archiver {
        let token = shared.member.to_string();
        Archiver {
            broker,
            shared,
            store,
            settings,
            retention,
            token,
            tenants: HashMap::new(),
            store_down_until: None,
            republish: Duration::from_secs(1),
            turn: Rotation::default(),
            #[cfg(test)]
            before_remove: None,
        }
    }

    /// A step now, then one per tick (at most `archive.interval_ms`, at most the metrics
    /// refresh interval) until shutdown; a step cut short by shutdown leaves its batch
    /// recorded, to be resumed. Gives the leases it holds up when it stops.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        let tick = self
            .settings
            .interval
            .min(self.republish)
            .max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.step() => {}
            }
            self.publish();
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        for (tenant, v) in &self.tenants {
            if v.leased {
                let _ = self.broker.archive_lease_release(tenant, &self.token).await;
            }
        }
    }

    /// Visits each tenant not visited for `archive.interval_ms`, in turn, at most
    /// [`LOOKS_PER_SECOND`](super::rotation::LOOKS_PER_SECOND) tenants a second.
    pub(crate) async fn step(&mut self) -> ArchiveStep {
        let now = Instant::now();
        let mut sum = ArchiveStep::default();
        let lanes = self.shared.lanes();
        let tick = self.settings.interval.min(self.republish);
        let turn: Vec<Arc<str>> = self
            .turn
            .pick(&lanes, budget(tick))
            .into_iter()
            .map(|(_, t)| t.clone())
            .collect();
        for tenant in turn {
            let view = self.tenants.entry(tenant.to_string()).or_default();
            if view
                .last
                .is_some_and(|t| now.duration_since(t) < self.settings.interval)
            {
                continue;
            }
            view.last = Some(now);
            self.visit(&tenant, &mut sum).await;
        }
        sum
    }

    /// Sets the backlog gauges of the tenants whose lease this member held at their last
    /// visit again (the recorder drops a gauge left idle).
    pub(crate) fn publish(&self) {
        for (tenant, v) in &self.tenants {
            if v.leased {
                let age = v.backlog_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
                events::archive::backlog(tenant, v.backlog, age);
            }
        }
    }

    fn uploads_paused(&self) -> bool {
        self.store_down_until.is_some_and(|t| Instant::now() < t)
    }

    /// One tenant's visit: the lease, a recorded batch resumed, then new batches while due.
    async fn visit(&mut self, tenant: &str, sum: &mut ArchiveStep) {
        for _ in 0..BATCHES_PER_VISIT {
            match self
                .broker
                .archive_lease(tenant, &self.token, self.settings.lease_ttl)
                .await
            {
                Ok(true) => self.view(tenant).leased = true,
                Ok(false) => {
                    self.view(tenant).leased = false;
                    return;
                }
                Err(e) => {
                    events::archive::failed(tenant, "read", &e);
                    sum.failed += 1;
                    return;
                }
            }
            let pending = match self.broker.archive_pending(tenant).await {
                Ok(p) => p,
                Err(e) => {
                    events::archive::failed(tenant, "read", &e);
                    sum.failed += 1;
                    return;
                }
            };
            let pending = match pending {
                Some(p) => {
                    events::archive::resumed(tenant, &p.object, p.ids.len());
                    p
                }
                None => match self.next_batch(tenant).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return,
                    Err(e) => {
                        events::archive::failed(tenant, "read", &e);
                        sum.failed += 1;
                        return;
                    }
                },
            };
            if self.uploads_paused() {
                return;
            }
            match self.archive(tenant, &pending).await {
                Ok(BatchEnd::Done(n)) => {
                    sum.batches += 1;
                    sum.removed += n;
                }
                Ok(BatchEnd::Elsewhere) => {}
                Err((op, e)) => {
                    events::archive::failed(tenant, op, &e);
                    sum.failed += 1;
                    if op == "write" || op == "confirm" {
                        self.store_down_until = Some(Instant::now() + self.settings.interval);
                    }
                    return;
                }
            }
        }
    }

    fn view(&mut self, tenant: &str) -> &mut TenantView {
        self.tenants.entry(tenant.to_owned()).or_default()
    }

    /// Reads what is due, publishes the backlog, and records the next batch: the oldest dead
    /// letters due, else the oldest removed ones past the grace period with the same action.
    /// `None` when nothing is due (or another member took the lease meanwhile).
    async fn next_batch(&mut self, tenant: &str) -> Result<Option<PendingBatch>> {
        let now_ms = self.broker.server_time_ms().await?;
        let ms = |d: Duration| d.as_millis() as u64;
        let retention_before = self
            .retention
            .retention_of(tenant)
            .map(|r| now_ms.saturating_sub(ms(r)));
        let removed_before = now_ms.saturating_sub(ms(self.retention.removed_grace));
        let due = self
            .broker
            .archive_due(
                tenant,
                self.retention.max_len,
                retention_before,
                removed_before,
                self.settings.batch,
            )
            .await?;
        let backlog = due.dead_letters_due + due.removed.len() as u64;
        let view = self.view(tenant);
        view.backlog = backlog;
        let age = if backlog == 0 {
            view.backlog_since = None;
            0.0
        } else {
            view.backlog_since
                .get_or_insert_with(Instant::now)
                .elapsed()
                .as_secs_f64()
        };
        events::archive::backlog(tenant, backlog, age);
        let (source, class, entries) = if !due.dead_letters.is_empty() {
            (
                ArchiveSource::Dlq,
                ArchiveClass::DeadLetter,
                due.dead_letters,
            )
        } else if let Some(first) = due.removed.first() {
            let action = |e: &Entry| field(e, "removed_action").and_then(ArchiveClass::of_removal);
            let class = action(first).unwrap_or(ArchiveClass::Discarded);
            let same: Vec<Entry> = due
                .removed
                .into_iter()
                .take_while(|e| action(e).unwrap_or(ArchiveClass::Discarded) == class)
                .collect();
            (ArchiveSource::Removed, class, same)
        } else {
            return Ok(None);
        };
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let name = BatchName {
            tenant: tenant.to_owned(),
            begun_at_ms: now_ms,
            class,
            first: first.id.clone(),
            last: last.id.clone(),
        };
        let batch = PendingBatch {
            source,
            class: class.as_str().to_owned(),
            object: name.object(),
            begun_ms: now_ms,
            ids: entries.iter().map(|e| e.id.clone()).collect(),
        };
        match self
            .broker
            .archive_begin(tenant, &self.token, &batch)
            .await?
        {
            BatchBegin::Recorded => Ok(Some(batch)),
            // Recorded by someone since we looked: resume it (read again).
            BatchBegin::Pending => Ok(self.broker.archive_pending(tenant).await?),
            BatchBegin::NotLeased => Ok(None),
        }
    }

    /// Writes, confirms and removes one recorded batch. An error names its step.
    async fn archive(
        &mut self,
        tenant: &str,
        batch: &PendingBatch,
    ) -> std::result::Result<BatchEnd, (&'static str, Error)> {
        let class = ArchiveClass::parse(&batch.class).ok_or_else(|| {
            (
                "read",
                Error::Protocol(format!(
                    "the archive batch of tenant {tenant} has an unknown class '{}'",
                    batch.class
                )),
            )
        })?;
        // A review move between the read and the removal makes the removal refuse: the object
        // is written again (same name) with the records as they are now. Bounded: a record
        // that keeps changing leaves the batch recorded for the next visit.
        for _ in 0..REVIEW_TRIES {
            let found = self
                .broker
                .archive_entries(tenant, batch.source, &batch.ids)
                .await
                .map_err(|e| ("read", e))?;
            let mut entries: Vec<ArchivedEntry> = found
                .into_iter()
                .flatten()
                .map(|e| archived_entry(tenant, batch.source, class, e))
                .collect();
            // The review record each archived copy carries, as read ("" for none).
            let mut live = vec![String::new(); entries.len()];
            if batch.source == ArchiveSource::Dlq {
                // A dead letter's review (assignee, escalation, notes) goes into the archive with
                // it: dlq_archived.lua ends the record when the entry leaves Redis. (A removed
                // one's copy carries its review already: dlq_remove.lua stamps it.)
                let ids: Vec<&str> = entries.iter().map(|e| e.source_id.as_str()).collect();
                let reviews = self
                    .broker
                    .dlq_review_records(tenant, &ids)
                    .await
                    .map_err(|e| ("read", e))?;
                for ((e, review), seen) in entries.iter_mut().zip(reviews).zip(live.iter_mut()) {
                    if let Some(r) = review {
                        seen.clone_from(&r);
                        // Last of its name, so it is the one read back (a restored dead letter
                        // carries the review it was archived with before it).
                        e.fields.push((b"review".to_vec(), r.into_bytes()));
                    }
                }
            }
            // Writes happen only under this member's lease, renewed right before them: the two
            // writes (each bounded by archive.timeout_ms, the lease at least three times that)
            // end before another member could take the tenant over, so two members never write one batch at once
            // and an older copy never overwrites a newer one.
            if !self
                .broker
                .archive_lease(tenant, &self.token, self.settings.lease_ttl)
                .await
                .map_err(|e| ("read", e))?
            {
                self.view(tenant).leased = false;
                return Ok(BatchEnd::Elsewhere);
            }
            let key = self.settings.key.as_ref();
            let mut bytes = 0u64;
            if !entries.is_empty() {
                let name = batch_name(tenant, batch, class, &entries);
                let object = format::encode_object(&entries, key).map_err(|e| {
                    (
                        "write",
                        Error::Archive(format!("encoding {}: {e}", batch.object)),
                    )
                })?;
                let manifest = format::manifest(&name, &entries, &object, key);
                let manifest = serde_json::to_vec_pretty(&manifest)
                    .map_err(|e| ("write", Error::Archive(format!("encoding a manifest: {e}"))))?;
                bytes = object.len() as u64;
                let sizes = (object.len() as u64, manifest.len() as u64);
                self.store
                    .put(&batch.object, object)
                    .await
                    .map_err(|e| ("write", e))?;
                let manifest_path = format::manifest_of(&batch.object);
                self.store
                    .put(&manifest_path, manifest)
                    .await
                    .map_err(|e| ("write", e))?;
                let seen = (
                    self.store
                        .size(&batch.object)
                        .await
                        .map_err(|e| ("confirm", e))?,
                    self.store
                        .size(&manifest_path)
                        .await
                        .map_err(|e| ("confirm", e))?,
                );
                if seen != (Some(sizes.0), Some(sizes.1)) {
                    return Err((
                        "confirm",
                        Error::Archive(format!(
                            "{} in {}: written {} and {} bytes, found {:?} and {:?}",
                            batch.object,
                            self.store.describe(),
                            sizes.0,
                            sizes.1,
                            seen.0,
                            seen.1
                        )),
                    ));
                }
            }
            // The crash tests stop here: written and confirmed, not yet removed from Redis.
            crate::failpoint::hit("archive_uploaded");
            #[cfg(test)]
            if let Some(f) = self.before_remove.take() {
                f().await;
            }
            let tasks = &self.shared.tasks;
            let items: Vec<ArchivedItem> = entries
                .iter()
                .zip(live)
                .map(|(e, review)| {
                    let task_id = e
                        .field("task_id")
                        .filter(|t| crate::task::validate_task_id(t).is_ok())
                        .map(str::to_owned);
                    ArchivedItem {
                        source_id: e.source_id.clone(),
                        dead_letter_id: e.id.clone(),
                        task_id,
                        retention: tasks.retention_for(tenant, e.field("kind").unwrap_or("")),
                        review,
                    }
                })
                .collect();
            let removed = self
                .broker
                .archive_remove(tenant, batch.source, &batch.object, &items, tasks.enabled)
                .await
                .map_err(|e| ("remove", e))?;
            let ids = match removed {
                ArchiveRemoval::Removed(ids, _records) => ids,
                ArchiveRemoval::Elsewhere => return Ok(BatchEnd::Elsewhere),
                ArchiveRemoval::ReviewChanged(changed) => {
                    events::archive::review_changed(tenant, &batch.object, changed.len());
                    continue;
                }
            };
            events::archive::archived(
                tenant,
                class.as_str(),
                &batch.object,
                bytes,
                entries.len() as u64,
                ids.len() as u64,
            );
            return Ok(BatchEnd::Done(ids.len() as u64));
        }
        Err((
            "remove",
            Error::Archive(format!(
                "the review records of the batch {} kept changing while it was archived; \
                 it stays recorded and is tried again",
                batch.object
            )),
        ))
    }
}

/// The text of a field of a stream entry.
fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.fields
        .as_ref()?
        .iter()
        .rev()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A stream entry as the archive keeps it: a removed one under its dead-letter id.
fn archived_entry(
    tenant: &str,
    source: ArchiveSource,
    class: ArchiveClass,
    e: Entry,
) -> ArchivedEntry {
    let id = match source {
        ArchiveSource::Dlq => e.id.clone(),
        ArchiveSource::Removed => field(&e, "dead_letter_id")
            .filter(|d| format::parse_id(d).is_some())
            .unwrap_or(&e.id)
            .to_owned(),
    };
    ArchivedEntry {
        tenant: tenant.to_owned(),
        id,
        source_id: e.id,
        class,
        fields: e.fields.unwrap_or_default(),
    }
}

/// The name a recorded batch was given (its object path is recorded; the manifest repeats it).
fn batch_name(
    tenant: &str,
    batch: &PendingBatch,
    class: ArchiveClass,
    entries: &[ArchivedEntry],
) -> BatchName {
    BatchName {
        tenant: tenant.to_owned(),
        begun_at_ms: batch.begun_ms,
        class,
        first: batch.ids.first().cloned().unwrap_or_else(|| {
            entries
                .first()
                .map(|e| e.source_id.clone())
                .unwrap_or_default()
        }),
        last: batch.ids.last().cloned().unwrap_or_else(|| {
            entries
                .last()
                .map(|e| e.source_id.clone())
                .unwrap_or_default()
        }),
    }
}
