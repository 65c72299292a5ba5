//! Waiting for replicas (`redis.wait_replicas`): after an enqueue or a settle write, `WAIT
//! <n> <ms>` on the node that took it, so that an acknowledged write is on `n` replicas before
//! redrive goes on — a failover then promotes a replica that has it.
//!
//! `WAIT` counts the replicas that acknowledged every write sent *before it on the same
//! connection* (Redis keeps, per client, the replication offset of its last write). Every
//! write of this process to a node goes over one multiplexed connection (the shared
//! connection on one Redis; the cluster client's connection to that node on a cluster), in
//! order, so a `WAIT` sent after a write's reply covers that write and every other write this
//! process sent on it before — stronger, never weaker. It is routed by the tenant's slot on a
//! cluster (the cluster client would otherwise send it to every node and answer the least);
//! the tenants of a batch that share a master get one `WAIT`.
//!
//! Its cost: one round trip plus the replica's acknowledgement per write batch; while a
//! replica is down each `WAIT` blocks its connection for up to `redis.wait_timeout_ms` (Redis
//! answers a blocked client's later commands after it), which is why the timeout is bounded.
//! A short answer never fails the write (it is in Redis, and will reach the replicas when they
//! catch up): the caller counts and logs it. Not covered: a connection that was replaced between
//! the write and the `WAIT` (a reconnect) has no write of its own, so its `WAIT` answers at once.

use std::collections::BTreeMap;

use redis::Value;

use super::cluster_slots::Shard;
use super::conn::key_slot;
use super::connect::Broker;

/// What the `WAIT`s after a write answered, when `redis.wait_replicas` is on.
#[derive(Debug)]
pub(crate) struct Replicated {
    /// Replicas asked for.
    pub(crate) asked: u64,
    /// The fewest replicas any of the write's nodes confirmed (0 when a `WAIT` failed).
    pub(crate) confirmed: u64,
    /// Why a `WAIT` got no answer (its error), when one did not: the connection to the node
    /// was lost, so the write may not have reached any replica — nor survive the node.
    pub(crate) error: Option<crate::Error>,
}

impl Replicated {
    /// Whether fewer replicas than asked confirmed the write.
    pub(crate) fn short(&self) -> bool {
        self.confirmed < self.asked
    }
}

impl Broker {
    /// Whether writes wait for replicas (`redis.wait_replicas` > 0).
    pub(crate) fn waits_for_replicas(&self) -> bool {
        self.wait.is_some()
    }

    /// After a write of `tenants`' keys: `WAIT` on each node that took it (one per master of a
    /// cluster; the one connection on a single Redis). `None` when `redis.wait_replicas` is
    /// off. Never fails: a `WAIT` that errs counts as confirmed by none (the write itself
    /// succeeded, the caller reports the shortfall).
    pub(crate) async fn wait_written(&self, tenants: &[&str]) -> Option<Replicated> {
        let wait = self.wait?;
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wait.replicas).arg(wait.timeout.as_millis() as u64);
        let answers = if self.is_cluster() {
            self.wait_on_masters(tenants, &cmd).await
        } else {
            vec![cmd
                .query_async::<Value>(&mut self.con())
                .await
                .map_err(crate::Error::from)]
        };
        let mut out = Replicated {
            asked: wait.replicas,
            confirmed: u64::MAX,
            error: None,
        };
        for answer in answers {
            let got = match answer {
                Ok(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
                Ok(other) => {
                    out.error = Some(crate::Error::Protocol(format!("WAIT answered {other:?}")));
                    0
                }
                Err(e) => {
                    out.error = Some(e);
                    0
                }
            };
            out.confirmed = out.confirmed.min(got);
        }
        if out.confirmed == u64::MAX {
            out.confirmed = wait.replicas;
        }
        Some(out)
    }

    /// One `WAIT` per master holding some of `tenants`, all at once, routed by a tenant's slot
    /// (the cluster client's connection to that node: the one the write went over). A few
    /// slots get one `WAIT` each; more are grouped by master as `CLUSTER SLOTS` says (one
    /// `WAIT` per slot when it cannot be read).
    async fn wait_on_masters(
        &self,
        tenants: &[&str],
        cmd: &redis::Cmd,
    ) -> Vec<crate::error::Result<Value>> {
        // A key of each distinct slot (every tenant key has the `{t}` tag: its slot is the
        // tenant's).
        let mut by_slot: BTreeMap<u16, String> = BTreeMap::new();
        for t in tenants {
            let key = self.keys.lane(t);
            by_slot.entry(key_slot(key.as_bytes())).or_insert(key);
        }
        let mut keys: Vec<String> = by_slot.values().cloned().collect();
        if by_slot.len() > FEW_SLOTS {
            if let Ok(shards) = self.shards().await {
                let mut one: BTreeMap<(String, u16), String> = BTreeMap::new();
                for (slot, key) in by_slot {
                    let node = match shards.iter().find(|s| owns(s, slot)) {
                        Some(s) => (s.host.clone(), s.port),
                        None => (key.clone(), 0),
                    };
                    one.entry(node).or_insert(key);
                }
                keys = one.into_values().collect();
            }
        }
        futures_util::future::join_all(keys.iter().map(|key| self.on_key_node(key, cmd.clone())))
            .await
    }
}

/// Up to this many distinct slots get one `WAIT` each, without asking for the slot map.
const FEW_SLOTS: usize = 3;

/// Whether `shard` serves `slot`.
fn owns(shard: &Shard, slot: u16) -> bool {
    shard.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
}
