//! Fleet-wide in-flight reservations of capped tenants (`{t}:slots`).

use std::collections::HashMap;
use std::time::Duration;

use super::connect::Broker;
use super::scripts::scripts;
use crate::error::Result;

/// The answer of [`Broker::slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    /// How many more entries the member may read.
    pub granted: usize,
    /// The tenant's fleet-wide total reserved after the call.
    pub total: u64,
}

impl Broker {
    /// Reports that `member` holds `held` entries of `tenant` and asks for `wanted` more under
    /// the fleet-wide `cap` (0 for none); the reservation lasts `ttl` unless renewed
    /// (scripts/slots.lua).
    pub(crate) async fn slots(
        &self,
        tenant: &str,
        member: &str,
        held: usize,
        wanted: usize,
        cap: usize,
        ttl: Duration,
    ) -> Result<SlotGrant> {
        let mut inv = scripts().slots.key(self.keys().slots(tenant));
        inv.arg(member)
            .arg(held)
            .arg(wanted)
            .arg(cap)
            .arg(ttl.as_millis() as u64);
        let (granted, total): (i64, i64) = inv.invoke_async(&mut self.con()).await?;
        Ok(SlotGrant {
            granted: granted.max(0) as usize,
            total: total.max(0) as u64,
        })
    }

    /// `tenant`'s fleet-wide in-flight entries (live reservations of every member, as last
    /// reported) and the highest total ever reserved.
    pub(crate) async fn in_flight(&self, tenant: &str) -> Result<(u64, u64)> {
        let (m, now): (HashMap<String, String>, (u64, u64)) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys().slots(tenant))
            .cmd("TIME")
            .query_async(&mut self.con())
            .await?;
        let now_ms = now.0 * 1000 + now.1 / 1000;
        let mut total = 0;
        let mut peak = 0;
        for (k, v) in &m {
            if k == "@peak" {
                peak = v.parse().unwrap_or(0);
                continue;
            }
            let mut parts = v.split(' ');
            let count: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let expiry: u64 = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
            if expiry >= now_ms {
                total += count;
            }
        }
        Ok((total, peak))
    }
}
