//! The member lease: a member id held exclusively by one process while it lives.

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::scripts::scripts;
use crate::error::Result;

impl Broker {
    /// Takes the lease on `member_id` for `ttl` if nobody holds it. Returns whether it was taken.
    pub(crate) async fn acquire_lease(
        &self,
        member_id: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let v: Value = redis::cmd("SET")
            .arg(self.keys.member(member_id))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.con())
            .await?;
        Ok(v != Value::Nil)
    }

    /// How long the current holder's lease on `member_id` still runs (None when free).
    pub(crate) async fn lease_remaining(&self, member_id: &str) -> Result<Option<Duration>> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.keys.member(member_id))
            .query_async(&mut self.con())
            .await?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Extends the lease if `token` still holds it. Returns whether it did.
    pub(crate) async fn renew_lease(
        &self,
        member_id: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut inv = scripts().lease_renew.key(self.keys.member(member_id));
        inv.arg(token).arg(ttl.as_millis() as u64);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    /// Gives up the lease if `token` still holds it.
    pub(crate) async fn release_lease(&self, member_id: &str, token: &str) -> Result<bool> {
        let mut inv = scripts().lease_release.key(self.keys.member(member_id));
        inv.arg(token);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }
}
