//! The per-minute settle counts behind `health` (`{t}:stats:<minute>`): how long they live
//! and their sums. The settle scripts write them (settle.rs, dead_letters.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::hash;
use crate::error::Result;

/// How long the per-minute settle counts are kept (health and stats windows reach back 24 h).
pub const STATS_KEEP: Duration = Duration::from_secs(2 * 86_400);

/// How long the per-minute settle counts are kept (the settle scripts set it on new buckets).
pub(super) fn stats_keep_ms() -> u64 {
    STATS_KEEP.as_millis() as u64
}

impl Broker {
    /// The sums of a tenant's settle counts over the minutes `from..=to`.
    pub(crate) async fn stats_sum(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, u64>> {
        let mut pipe = redis::pipe();
        for minute in from..=to {
            pipe.cmd("HGETALL").arg(self.keys.stats(tenant, minute));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let mut out = BTreeMap::new();
        for v in replies {
            for (k, n) in hash(v).unwrap_or_default() {
                *out.entry(k).or_insert(0) += n.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(out)
    }
}
