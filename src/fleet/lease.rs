//! The member lease: a Redis key that says "a live process runs as member X". Consumer names
//! must be stable across restarts, so two live processes must never share one: they would
//! re-read each other's pending entries and run them twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// A held lease on a member id.
#[derive(Debug)]
pub struct Lease {
    member: Arc<str>,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// Takes the lease on `member`. If a previous process holds it (for example one killed
    /// with SIGKILL), waits for it to expire, at most `ttl` plus a second.
    pub async fn acquire(
        broker: &Broker,
        member: &Arc<str>,
        ttl: Duration,
        shutdown: &Shutdown,
    ) -> Result<Lease> {
        let token = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        let give_up = Instant::now() + ttl + Duration::from_secs(1);
        let mut said = false;
        loop {
            if broker.acquire_lease(member, &token, ttl).await? {
                return Ok(Lease {
                    member: member.clone(),
                    token,
                    ttl,
                });
            }
            let remaining = broker.lease_remaining(member).await?;
            if Instant::now() >= give_up {
                return Err(Error::MemberBusy(format!(
                    "member id '{member}' is held by another live process (its lease still runs {} ms); \
                     give each fleet member its own fleet.member_id",
                    remaining.map(|d| d.as_millis()).unwrap_or(0)
                )));
            }
            if !said {
                tracing::info!(member = %member, remaining_ms = remaining.map(|d| d.as_millis() as u64), "member id is leased by an earlier process; waiting for the lease to expire");
                said = true;
            }
            let pause = remaining
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_millis(250));
            tokio::select! {
                _ = shutdown.wait() => return Err(Error::MemberBusy(format!("stopped while waiting for the lease on member id '{member}'"))),
                _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// The lease's token (tests stand in for another process with it).
    #[cfg(test)]
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Gives the lease up so that a restart under the same id need not wait.
    pub async fn release(self, broker: &Broker) {
        if let Err(e) = broker.release_lease(&self.member, &self.token).await {
            tracing::warn!(member = %self.member, error = %e, "cannot release member lease; it expires by itself");
        }
    }
}

/// The lease keeper loop: renews the member's lease every third of its TTL.
pub(crate) struct LeaseKeeper {
    lease: Lease,
    broker: Broker,
    period: Duration,
}

impl LeaseKeeper {
    /// A keeper renewing `lease` through `broker` every `period`.
    pub(crate) fn new(lease: Lease, broker: Broker, period: Duration) -> LeaseKeeper {
        LeaseKeeper {
            lease,
            broker,
            period,
        }
    }

    /// Renews the lease until shutdown, then hands it back for release. If another process
    /// took the id, fires shutdown: this member must not go on under a name someone else holds.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Lease {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return self.lease,
                _ = tokio::time::sleep(self.period) => {}
            }
            if !self.step().await {
                shutdown.trigger();
                return self.lease;
            }
        }
    }

    /// One renewal (re-acquiring a lease that expired). False when another process holds the
    /// member id now; a Redis error is logged and counts as still held (the next step retries).
    pub(crate) async fn step(&mut self) -> bool {
        let lease = &self.lease;
        match self
            .broker
            .renew_lease(&lease.member, &lease.token, lease.ttl)
            .await
        {
            Ok(true) => true,
            Ok(false) => match self
                .broker
                .acquire_lease(&lease.member, &lease.token, lease.ttl)
                .await
            {
                Ok(true) => {
                    tracing::warn!(member = %lease.member, "member lease had expired; re-acquired it");
                    true
                }
                Ok(false) => {
                    tracing::error!(member = %lease.member, "another process took this member id; stopping");
                    false
                }
                Err(e) => {
                    tracing::warn!(member = %lease.member, error = %e, "cannot renew member lease");
                    true
                }
            },
            Err(e) => {
                tracing::warn!(member = %lease.member, error = %e, "cannot renew member lease");
                true
            }
        }
    }
}
