//! `[admin]`: the admin command stream, replays and their payload migrations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};

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

/// Validates `[admin]`, with its own rule (claim idle time against the member TTL).
pub(crate) fn validate(ad: &RawAdmin) -> Result<AdminSettings> {
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
    let migrations =
        crate::schema::migrate::Migrations::from_specs(&ad.migrations).map_err(Error::Config)?;
    Ok(AdminSettings {
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
    })
}
