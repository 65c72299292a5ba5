//! The per-minute settle counts behind `health` (`{t}:stats:<minute>`): how long they live
//! and their sums. The settle scripts write them (settle.rs, dead_letters.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::pairs;
use super::scripts::scripts;
use crate::error::Result;

/// How long the per-minute settle counts are kept (health and stats windows reach back 24 h).
pub const STATS_KEEP: Duration = Duration::from_secs(2 * 86_400);

/// How long the per-minute settle counts are kept (the settle scripts set it on new buckets).
pub(super) fn stats_keep_ms() -> u64 {
    STATS_KEEP.as_millis() as u64
}

impl Broker {
    /// The sums of each of `tenants`' settle counts over the minutes `from..=to` (at most 1,442
    /// minutes), summed on the server (scripts/stats_window.lua), every tenant in one
    /// pipelined round trip.
    pub(crate) async fn stats_sums(
        &self,
        tenants: &[String],
        from: u64,
        to: u64,
    ) -> Result<Vec<BTreeMap<String, u64>>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().stats_window).ignore();
        for t in tenants {
            let mut inv = scripts().stats_window.key(self.keys.stats_prefix(t));
            inv.arg(from).arg(to);
            pipe.invoke_script(&inv);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != tenants.len() {
            return Err(crate::error::Error::Protocol(format!(
                "stats_window.lua answered {} times for {} tenants",
                replies.len(),
                tenants.len()
            )));
        }
        replies
            .into_iter()
            .map(|v| {
                Ok(pairs(v, "stats_window.lua")?
                    .into_iter()
                    .collect::<BTreeMap<String, u64>>())
            })
            .collect()
    }
}
