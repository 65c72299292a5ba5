//! What a member has settled, per tenant, and who hears about each ack batch.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Per-tenant counts of what this member settled.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TenantTally {
    /// Tasks acked as done.
    pub completed: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Dead letters written, by class.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Pending ids whose entry was gone.
    pub tombstones: u64,
    /// Settles another member had already done.
    pub settle_lost: u64,
    /// Settles a later try found already done after an earlier try's reply was lost (that
    /// try most likely did them).
    pub settle_reply_lost: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Completed tasks that had failed before (or were replayed).
    pub recovered: u64,
    /// Entries claimed from stale members.
    pub reclaimed: u64,
    /// Entries held back unattempted because the tenant's breaker was not closed.
    pub deferred: u64,
    /// Entries acked without running because their task was already done.
    pub duplicates: u64,
}

/// What a member has settled so far, per tenant. Shared with the demo and tests.
#[derive(Debug, Default)]
pub struct FleetStats {
    tallies: Mutex<BTreeMap<String, TenantTally>>,
}

impl FleetStats {
    pub(crate) fn with(&self, tenant: &str, f: impl FnOnce(&mut TenantTally)) {
        if let Ok(mut t) = self.tallies.lock() {
            f(t.entry(tenant.to_owned()).or_default());
        }
    }

    /// A copy of the per-tenant tallies.
    pub fn snapshot(&self) -> BTreeMap<String, TenantTally> {
        self.tallies.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Tasks settled for good (completed or dead-lettered), over all tenants.
    pub fn settled(&self) -> u64 {
        self.snapshot()
            .values()
            .map(|t| t.completed + t.dead_lettered.values().sum::<u64>())
            .sum()
    }
}

/// Sees completed entries the moment their ack went through. Called on the settler's task:
/// keep it short.
pub trait AckObserver: Send + Sync {
    /// `entry_ids` of `tenant`'s lane were acked as done.
    fn acked(&self, tenant: &str, entry_ids: &[&str]);
}
