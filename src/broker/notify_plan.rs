//! What the scripts record for each tenant's notification targets: the plan the configuration
//! sets on the broker (kept apart from the verbs in notify.rs, which use the broker itself).

use std::collections::HashMap;

/// An event a script records for a tenant's notification targets (breaker transitions come
/// from the breaker's own log, copied by the delivery tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyEvent {
    /// Tasks dead-lettered (a digest per interval).
    DeadLettered,
    /// A dead letter escalated to the tenant.
    Escalated,
}

/// What one tenant's targets want recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// Dead letters, into the digest.
    pub dead_lettered: bool,
    /// Escalations to the tenant.
    pub escalated: bool,
    /// Breaker transitions.
    pub breaker: bool,
}

impl Wants {
    /// Whether `event` is wanted.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        match event {
            NotifyEvent::DeadLettered => self.dead_lettered,
            NotifyEvent::Escalated => self.escalated,
        }
    }
}

/// Which tenants' events the scripts record for their notification targets (built from
/// `[[notify.targets]]` by the configuration; empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyPlan {
    /// Per tenant, what its targets want.
    pub tenants: HashMap<String, Wants>,
}
