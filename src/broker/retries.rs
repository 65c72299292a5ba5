//! The retry schedule and the deferred set of a tenant: promoting due items back into the
//! lane, and counting them.

use redis::Value;

use super::connect::Broker;
use super::error::is_code;
use super::scripts::scripts;
use super::settle::Promoted;
use crate::error::{Error, Result};

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
        Ok(promoted(moved, recorded, wait))
    }

    /// [`Broker::promote_due`] for each of `tenants`, in one pipeline of `EVALSHA`s (one round
    /// trip per master on a cluster; a node that lacks the script gets it from the tenant's
    /// own call after); each tenant's own answer or error, in order.
    pub(crate) async fn promote_due_many(
        &self,
        tenants: &[std::sync::Arc<str>],
        limit: usize,
        records: bool,
    ) -> Result<Vec<Result<Promoted>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in tenants {
            let mut inv = scripts().promote.key(self.keys.retry(t));
            inv.key(self.keys.lane(t)).key(self.keys.deferred(t));
            self.record_keys(&mut inv, t, records, false);
            inv.arg(limit);
            pipe.invoke_script(&inv);
        }
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "promote.lua answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        let mut out = Vec::with_capacity(tenants.len());
        for (t, r) in tenants.iter().zip(replies) {
            out.push(match r {
                // Not loaded on that node (a restart, a failover, a new master): this tenant's
                // call loads it and runs alone.
                Err(e) if is_code(&e, "NOSCRIPT") => self.promote_due(t, limit, records).await,
                Err(e) => Err(e.into()),
                Ok(v) => redis::from_redis_value::<(u64, u64, i64)>(v)
                    .map(|(moved, recorded, wait)| promoted(moved, recorded, wait))
                    .map_err(|e| Error::Protocol(format!("promote.lua answered {e}"))),
            });
        }
        Ok(out)
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

/// A promote.lua answer: moved, records written, and when the earliest item left is due (ms
/// from now; negative when none).
fn promoted(moved: u64, recorded: u64, wait: i64) -> Promoted {
    Promoted {
        moved,
        recorded,
        wait: u64::try_from(wait)
            .ok()
            .map(std::time::Duration::from_millis),
    }
}
