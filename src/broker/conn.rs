//! The shared connection of every non-blocking command, to one Redis or to a Redis Cluster,
//! behind the client's one connection trait so every verb keeps its code whichever it is.
//!
//! On a cluster a single command goes where its key's slot lives (the cluster client routes it
//! and follows MOVED, ASK, TRYAGAIN and CLUSTERDOWN with bounded backoff). A pipeline is split:
//! the cluster client only sends pipelines whose keys share one slot, while redrive pipelines
//! the same verb over many tenants (depth figures, breaker states, stats, the periodic loops'
//! looks). Commands without a key (`SCRIPT LOAD`, `TIME`) go first, one by one, where the
//! cluster client routes them (`SCRIPT LOAD` to every master, so the scripts that follow find
//! it); then one pipeline per *master* (every slot a master serves, by the slot map this
//! connection keeps from `CLUSTER SLOTS`), all at once, each in the order it was written; the
//! replies come back in the order of the whole pipeline. So a pipeline over 1,000 tenants costs
//! one round trip per shard, not one per tenant. A command a master answers MOVED, ASK,
//! TRYAGAIN or CLUSTERDOWN (the map was stale: a failover, a reshard) was not run: it is sent
//! again alone, through the cluster client's own routing and retries, and the map is fetched
//! afresh next time. Order holds within a slot (a tenant), not across slots. A transaction
//! (`MULTI`, atomic or written out as commands) is never split: its keys must share one slot,
//! and the cluster refuses it otherwise (CROSSSLOT).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisFuture, ServerErrorKind, Value};

/// A connection: a single server's auto-reconnecting manager (the shared connection), a plain
/// connection of one server (a dedicated connection for blocking reads), or a cluster client's
/// connection (one multiplexed connection per node, topology refreshed on MOVED; shared, or
/// dedicated to one reader). Cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One Redis, shared.
    Single(ConnectionManager),
    /// One Redis, a connection of its own.
    Node(MultiplexedConnection),
    /// A Redis Cluster, with the slot map its pipelines are grouped by.
    Cluster(ClusterConnection, SlotMap),
}

/// Which master serves each slot, as `CLUSTER SLOTS` said when last asked (shared by the clones
/// of one connection). Only pipelines are grouped by it; a stale map costs a re-send, never a
/// wrong answer (the master refuses a slot it does not serve with MOVED).
#[derive(Clone, Default)]
pub(crate) struct SlotMap(Arc<Mutex<Option<Owners>>>);

/// The slot map's content.
struct Owners {
    /// The index of each slot's master in the `CLUSTER SLOTS` reply, `u16::MAX` when unserved.
    node_of: Arc<[u16]>,
    /// When it was asked.
    at: Instant,
}

/// How long a slot map is used before it is asked again (a MOVED answer drops it sooner).
const SLOT_MAP_AGE: Duration = Duration::from_secs(30);

impl SlotMap {
    /// The master index of every slot: the map kept, or asked afresh when there is none, it is
    /// old or was dropped; `None` when the cluster cannot say (then every slot is its own group).
    async fn owners(&self, c: &mut ClusterConnection) -> Option<Arc<[u16]>> {
        if let Ok(guard) = self.0.lock() {
            if let Some(o) = guard.as_ref().filter(|o| o.at.elapsed() < SLOT_MAP_AGE) {
                return Some(Arc::clone(&o.node_of));
            }
        }
        let reply = c
            .req_packed_command(&redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await;
        let shards = super::cluster_slots::parse_slots(reply.ok()?).ok()?;
        let mut node_of = vec![u16::MAX; 16384];
        for (i, shard) in shards.iter().enumerate() {
            for &(a, b) in &shard.slots {
                for slot in a..=b.min(16383) {
                    node_of[usize::from(slot)] = i as u16;
                }
            }
        }
        // Shared by every pipeline until it is dropped: a pipeline reads it, never copies it.
        let node_of: Arc<[u16]> = node_of.into();
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some(Owners {
                node_of: Arc::clone(&node_of),
                at: Instant::now(),
            });
        }
        Some(node_of)
    }

    /// Forgets the map (a master answered MOVED: it is stale).
    fn drop_map(&self) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = None;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, map) => Box::pin(cluster_pipeline(c, map, pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(..) => 0,
        }
    }
}

/// The broker's shared connection lent to tests (`Broker::raw_connection`), to seed and read
/// state with raw commands on one Redis and on a cluster alike (pipelines split per slot as
/// the broker's own).
#[cfg(feature = "testkit")]
#[doc(hidden)]
#[derive(Clone)]
pub struct RawConnection(pub(super) Conn);

#[cfg(feature = "testkit")]
impl ConnectionLike for RawConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Sends `pipeline` on a cluster: whole when it is a transaction or its keys share one slot,
/// else split per master as the module says.
async fn cluster_pipeline(
    c: &mut ClusterConnection,
    map: &SlotMap,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    // A transaction, atomic or written out (MULTI … EXEC as commands), goes whole.
    let written_out = pipeline
        .cmd_iter()
        .any(|c| matches!(c.args_iter().next(), Some(Arg::Simple(n)) if n.eq_ignore_ascii_case(b"MULTI")));
    if pipeline.is_transaction() || written_out {
        return c.req_packed_commands(pipeline, offset, count).await;
    }
    let slots: Vec<Option<u16>> = pipeline.cmd_iter().map(command_slot).collect();
    let mut keyed = slots.iter().flatten();
    let single = match keyed.next() {
        Some(first) => keyed.all(|s| s == first),
        None => true,
    };
    if single {
        return c.req_packed_commands(pipeline, offset, count).await;
    }
    let owners = map.owners(c).await;
    let group_of = |slot: u16| -> u32 {
        match owners.as_ref().map(|o| o[usize::from(slot)]) {
            Some(node) if node != u16::MAX => u32::from(node),
            // Unknown owner: the slot is its own group.
            _ => 0x1_0000 + u32::from(slot),
        }
    };
    let mut replies: Vec<Option<Value>> = vec![None; slots.len()];
    // Per group: its pipeline, the slot it is routed by (its first command's), and where its
    // replies go.
    let mut groups: BTreeMap<u32, (Pipeline, u16, Vec<usize>)> = BTreeMap::new();
    for (i, (cmd, slot)) in pipeline.cmd_iter().zip(&slots).enumerate() {
        match slot {
            None => replies[i] = Some(c.req_packed_command(cmd).await?),
            Some(s) => {
                let (sub, _, at) = groups
                    .entry(group_of(*s))
                    .or_insert_with(|| (redis::pipe(), *s, Vec::new()));
                sub.add_command(cmd.clone());
                at.push(i);
            }
        }
    }
    let sent = groups.into_values().map(|(sub, slot, at)| {
        let mut c = c.clone();
        async move {
            let n = sub.len();
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
            let got = c.route_pipeline(sub.clone(), 0, n, route).await?;
            Ok::<_, redis::RedisError>((sub, got, at))
        }
    });
    let mut redirected = false;
    for (sub, got, at) in try_join_all(sent).await? {
        for ((v, i), cmd) in got.into_iter().zip(at).zip(sub.cmd_iter()) {
            replies[i] = Some(if not_served_here(&v) {
                // Not run on that master: sent again alone, routed and retried by the client.
                redirected = true;
                c.req_packed_command(cmd).await?
            } else {
                v
            });
        }
    }
    if redirected {
        map.drop_map();
    }
    let out: Vec<Value> = replies
        .into_iter()
        .map(|v| v.unwrap_or(Value::Nil))
        .collect();
    Ok(out.into_iter().skip(offset).take(count).collect())
}

/// Whether a reply says the master did not run the command because it does not serve its slot
/// now (MOVED, ASK), or could not (TRYAGAIN, CLUSTERDOWN): safe to send again.
fn not_served_here(v: &Value) -> bool {
    match v {
        Value::ServerError(e) => matches!(
            e.kind(),
            Some(
                ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        ),
        _ => false,
    }
}

/// The slot of the key a command is routed by, `None` for a command without one (those the
/// cluster client routes to a random node or to every master).
pub(crate) fn command_slot(cmd: &Cmd) -> Option<u16> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(b) => b,
            _ => &b"0"[..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let n: u64 = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if n == 0 {
                return None;
            }
            args.get(3)?
        }
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        b"XGROUP" | b"XINFO" | b"OBJECT" => args.get(2)?,
        b"MEMORY" if args.get(1)?.eq_ignore_ascii_case(b"USAGE") => args.get(2)?,
        b"SCRIPT" | b"TIME" | b"PING" | b"INFO" | b"CLUSTER" | b"CLIENT" | b"COMMAND"
        | b"CONFIG" | b"PUBLISH" | b"WAIT" | b"WAITAOF" | b"DBSIZE" | b"ECHO" | b"FLUSHALL"
        | b"FLUSHDB" | b"SCAN" | b"MULTI" | b"EXEC" | b"DISCARD" | b"KEYS" | b"RANDOMKEY"
        | b"FUNCTION" | b"SLOWLOG" | b"LATENCY" | b"MEMORY" | b"SUBSCRIBE" | b"UNSUBSCRIBE"
        | b"PSUBSCRIBE" | b"PUNSUBSCRIBE" | b"ACL" | b"HELLO" | b"AUTH" | b"READONLY"
        | b"READWRITE" | b"LASTSAVE" | b"SAVE" | b"BGSAVE" | b"ROLE" | b"SWAPDB" | b"SELECT"
        | b"QUIT" | b"RESET" | b"MODULE" | b"DEBUG" | b"SHUTDOWN" => return None,
        _ => args.get(1)?,
    };
    Some(key_slot(key))
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag — the bytes between the first
/// `{` and the next `}` when there are some — or of the whole key, modulo 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(key)) % 16384
}

/// CRC16 with polynomial 0x1021, initial value 0 (XMODEM), as Redis Cluster hashes keys.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{foo}bar"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"{}foo"), key_slot(b"{}foo"));
        assert_ne!(key_slot(b"{}foo"), key_slot(b"foo"));
        assert_eq!(key_slot(b"a{foo}{bar}"), 12182);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn commands_are_routed_by_the_key_redis_routes_them_by() {
        let slot = |c: &Cmd| command_slot(c);
        let t = key_slot(b"{t1}");
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc")
            .arg(2)
            .arg("p:{t1}:lane")
            .arg("p:{t1}:retry")
            .arg("x");
        assert_eq!(slot(&c), Some(t));
        let mut c = redis::cmd("evalsha");
        c.arg("abc").arg(0).arg("x");
        assert_eq!(slot(&c), None);
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP").arg("g").arg("c").arg("COUNT").arg(1);
        c.arg("STREAMS").arg("p:{t1}:lane").arg(">");
        assert_eq!(slot(&c), Some(t));
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE").arg("p:{t1}:lane").arg("g").arg("0");
        assert_eq!(slot(&c), Some(t));
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg("return 1");
        assert_eq!(slot(&c), None);
        assert_eq!(slot(&redis::cmd("TIME")), None);
        let mut c = redis::cmd("HGET");
        c.arg("p:{t1}:breaker").arg("state");
        assert_eq!(slot(&c), Some(t));
    }
}
