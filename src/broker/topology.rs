//! A Redis Cluster's shape as redrive needs it: which masters serve which slots
//! (`CLUSTER SLOTS`, asked afresh each time: a failover or a reshard changes it), and commands
//! sent to one chosen node (the probe of each master, the out-of-memory check of each master,
//! the clock of the admin keys' node). On a single Redis there is one "master": the server.

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::Value;

use super::cluster_slots::{parse_slots, Shard};
use super::conn::Conn;
use super::connect::{info_text, Broker};
use super::server::ServerInfo;
use crate::error::Result;

impl Broker {
    /// Whether this broker talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The masters of the cluster and their slots, asked now; empty on a single Redis.
    pub(crate) async fn shards(&self) -> Result<Vec<Shard>> {
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        let v: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.con())
            .await?;
        parse_slots(v)
    }

    /// Sends `cmd` to the master at `shard` (to the server on a single Redis).
    pub(crate) async fn on_shard(&self, shard: &Shard, cmd: redis::Cmd) -> Result<Value> {
        match self.con() {
            Conn::Cluster(mut c, _) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: shard.host.clone(),
                    port: shard.port,
                });
                Ok(c.route_command(cmd, routing).await?)
            }
            mut c => Ok(cmd.query_async(&mut c).await?),
        }
    }

    /// Sends `cmd` to the master of `key`'s slot (to the server on a single Redis): for
    /// key-less commands whose answer must come from that node (its clock).
    pub(crate) async fn on_key_node(&self, key: &str, cmd: redis::Cmd) -> Result<Value> {
        match self.con() {
            Conn::Cluster(mut c, _) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                Ok(c.route_command(cmd, routing).await?)
            }
            mut c => Ok(cmd.query_async(&mut c).await?),
        }
    }

    /// How many keys match `pattern` (SCAN, on every master of a cluster: each holds its
    /// own slots' keys).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn count_keys(&self, pattern: &str) -> Result<u64> {
        Ok(self.scan_keys(pattern).await?.len() as u64)
    }

    /// The keys that match `pattern` (SCAN, on every master of a cluster).
    #[cfg(any(test, feature = "testkit"))]
    #[doc(hidden)]
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>> {
        let one = |cursor: u64| {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            c
        };
        let mut nodes: Vec<Option<Shard>> = self.shards().await?.into_iter().map(Some).collect();
        if nodes.is_empty() {
            nodes.push(None);
        }
        let mut out = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let v = match &node {
                    Some(shard) => self.on_shard(shard, one(cursor)).await?,
                    None => one(cursor).query_async(&mut self.con()).await?,
                };
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(v)
                    .map_err(|e| crate::error::Error::Protocol(format!("SCAN answered {e}")))?;
                out.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// The probe of every master, kept at the least of them (a rolling upgrade mixes
    /// versions: a newer command is used only when every master has it), and each distinct
    /// (flavor, version) found.
    pub(super) async fn probe_masters(&self) -> (ServerInfo, Vec<ServerInfo>) {
        let Ok(shards) = self.shards().await else {
            return (ServerInfo::unknown(), vec![ServerInfo::unknown()]);
        };
        let mut least: Option<ServerInfo> = None;
        let mut all: Vec<ServerInfo> = Vec::new();
        for shard in shards {
            let mut info = redis::cmd("INFO");
            info.arg("server");
            let mut table = redis::cmd("COMMAND");
            table.arg("INFO").arg("XACKDEL").arg("HSETEX");
            let text = self
                .on_shard(&shard, info)
                .await
                .map(info_text)
                .unwrap_or_default();
            let probed = ServerInfo::from_info(&text);
            let found = match self.on_shard(&shard, table).await {
                Ok(t) => probed.with_command_table(&t),
                Err(_) => probed,
            };
            all.push(found.clone());
            least = Some(match least {
                None => found,
                Some(l) => l.least(found),
            });
        }
        let least = least.unwrap_or_else(ServerInfo::unknown);
        let mut distinct = distinct_servers(all);
        if distinct.is_empty() {
            distinct.push(least.clone());
        }
        (least, distinct)
    }

    /// A connection of its own for blocking or long reads whose replies may take up to
    /// `block` plus the response timeout: a plain connection on a single Redis, a cluster
    /// connection of its own on a cluster (its own socket to each node, so a read waiting on
    /// one node holds back nothing else; it follows MOVED and failovers like the shared one).
    pub(crate) async fn dedicated(&self, block: std::time::Duration) -> Result<Conn> {
        match &self.cluster {
            Some(cluster) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.connect_timeout)
                    .set_response_timeout(block + self.response_timeout);
                Ok(Conn::Cluster(
                    cluster.get_async_connection_with_config(cfg).await?,
                    super::conn::SlotMap::default(),
                ))
            }
            None => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(block + self.response_timeout));
                Ok(Conn::Node(
                    self.client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
        }
    }

    /// A client of a live master (on a single Redis: the server's), for a subscription: a
    /// plain `PUBLISH` reaches every node of a cluster, so any master hears it; the first
    /// seed may be the node that failed.
    pub(crate) async fn subscription_client(&self) -> Result<redis::Client> {
        if !self.is_cluster() {
            return Ok(self.client.clone());
        }
        let shards = self.shards().await?;
        let pick = shards.get(fastrand::usize(..shards.len().max(1)));
        match pick {
            Some(s) => super::client::node_client(&self.client, &s.host, s.port),
            None => Ok(self.client.clone()),
        }
    }
}

/// Each distinct (flavor, version label) of `all`, in the order first seen.
pub(crate) fn distinct_servers(all: Vec<ServerInfo>) -> Vec<ServerInfo> {
    let mut out: Vec<ServerInfo> = Vec::new();
    for s in all {
        if !out
            .iter()
            .any(|o| o.flavor == s.flavor && o.version_label() == s.version_label())
        {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rolling upgrade: two masters on 7.0.15, one on 8.2.3 — two `redrive_redis_info`
    /// series, not only the lowest.
    #[test]
    fn each_distinct_flavor_and_version_is_kept() {
        let info = |v: &str| ServerInfo::from_info(&format!("redis_version:{v}\r\n"));
        let valkey = ServerInfo::from_info(
            "redis_version:7.2.4\r\nvalkey_version:8.0.1\r\nserver_name:valkey\r\n",
        );
        let got = distinct_servers(vec![
            info("7.0.15"),
            info("8.2.3"),
            info("7.0.15"),
            valkey.clone(),
        ]);
        let labels: Vec<(String, String)> = got
            .iter()
            .map(|s| (s.flavor.as_str().to_owned(), s.version_label()))
            .collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert_eq!(labels[0], ("redis".to_owned(), "7.0.15".to_owned()));
        assert_eq!(labels[1], ("redis".to_owned(), "8.2.3".to_owned()));
        assert_eq!(labels[2].0, valkey.flavor.as_str());
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_replies_give_each_master_its_ranges() {
        let node = |h: &str, p: i64| Value::Array(vec![bulk(h), Value::Int(p), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7001),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![Value::Int(1)]),
            Value::Nil,
        ]);
        let shards = parse_slots(reply).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(
            (shards[0].host.as_str(), shards[0].port),
            ("127.0.0.1", 7000)
        );
        assert_eq!(shards[0].slots, vec![(0, 5460), (10923, 16383)]);
        assert_eq!(
            (shards[1].port, shards[1].slots.clone()),
            (7001, vec![(5461, 10922)])
        );
        assert!(parse_slots(Value::Nil).is_err());
    }
}
