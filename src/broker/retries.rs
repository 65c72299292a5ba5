//! The retry schedule and the deferred set of a tenant: promoting due items back into the
//! lane, and counting them.

use super::connect::Broker;
use super::scripts::scripts;
use super::settle::Promoted;
use crate::error::Result;

impl Broker {
    /// Moves up to `limit` due retries and held-back tasks of `tenant` back into its lane
    /// (scripts/promote.lua); with `records`, each moved task's record says `queued` with its
    /// new entry. Returns how many moved, how many records were written and how long until
    /// the earliest item left is due.
    pub(crate) async fn promote_due(
        &self,
        tenant: &str,
        limit: usize,
        records: bool,
    ) -> Result<Promoted> {
        let mut inv = scripts().promote.key(self.keys.retry(tenant));
        inv.key(self.keys.lane(tenant))
            .key(self.keys.deferred(tenant));
        self.record_keys(&mut inv, tenant, records, false);
        inv.arg(limit);
        let (moved, recorded, wait): (u64, u64, i64) = inv.invoke_async(&mut self.con()).await?;
        Ok(Promoted {
            moved,
            recorded,
            wait: u64::try_from(wait)
                .ok()
                .map(std::time::Duration::from_millis),
        })
    }

    /// Retries scheduled for a tenant (due or not), tasks held back by its breaker included.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn retry_len(&self, tenant: &str) -> Result<u64> {
        let (retries, deferred): (u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.keys.retry(tenant))
            .cmd("ZCARD")
            .arg(self.keys.deferred(tenant))
            .query_async(&mut self.con())
            .await?;
        Ok(retries + deferred)
    }
}
