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

    /// Renews the lease every third of its TTL until shutdown. If another process took the id,
    /// fires shutdown: this member must not go on under a name someone else holds.
    pub async fn keep(self, broker: Broker, shutdown: Shutdown) -> Lease {
        let period = self.ttl / 3;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return self,
                _ = tokio::time::sleep(period) => {}
            }
            match broker
                .renew_lease(&self.member, &self.token, self.ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => match broker
                    .acquire_lease(&self.member, &self.token, self.ttl)
                    .await
                {
                    // The key expired (a Redis restart without persistence, a long stall): take it back.
                    Ok(true) => {
                        tracing::warn!(member = %self.member, "member lease had expired; re-acquired it")
                    }
                    Ok(false) => {
                        tracing::error!(member = %self.member, "another process took this member id; stopping");
                        shutdown.trigger();
                        return self;
                    }
                    Err(e) => {
                        tracing::warn!(member = %self.member, error = %e, "cannot renew member lease")
                    }
                },
                Err(e) => {
                    tracing::warn!(member = %self.member, error = %e, "cannot renew member lease")
                }
            }
        }
    }

    /// Gives the lease up so that a restart under the same id need not wait.
    pub async fn release(self, broker: &Broker) {
        if let Err(e) = broker.release_lease(&self.member, &self.token).await {
            tracing::warn!(member = %self.member, error = %e, "cannot release member lease; it expires by itself");
        }
    }
}
