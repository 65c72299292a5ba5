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
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn in_flight(&self, tenant: &str) -> Result<(u64, u64)> {
        Ok(self
            .in_flight_of(&[tenant.to_owned()])
            .await?
            .pop()
            .unwrap_or((0, 0)))
    }

    /// [`Broker::in_flight`] of each of `tenants`, in one pipelined round trip.
    pub(crate) async fn in_flight_of(&self, tenants: &[String]) -> Result<Vec<(u64, u64)>> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for t in tenants {
            pipe.cmd("HGETALL").arg(self.keys().slots(t));
        }
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() + 1 {
            return Err(crate::error::Error::Protocol(format!(
                "in-flight read answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        let maps = replies.split_off(1);
        let (s, us): (u64, u64) = redis::from_redis_value(replies.remove(0))
            .map_err(|e| crate::error::Error::Protocol(format!("TIME answered {e}")))?;
        let now_ms = s * 1000 + us / 1000;
        Ok(maps
            .into_iter()
            .map(|v| {
                let m: HashMap<String, String> = redis::from_redis_value(v).unwrap_or_default();
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
                (total, peak)
            })
            .collect())
    }
}
