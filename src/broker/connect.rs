//! Connecting to Redis: the [`Broker`] handle itself (its connection, key names and group,
//! from a client `client.rs` built), what a failed TLS connection should make the user check,
//! and what every caller may ask of the server (ping, clock, whether it accepts writes, what it
//! is: the capability probe at connect, whose findings `server.rs` reads).
//!
//! Connections: one shared connection (`conn.rs`: an auto-reconnecting [`ConnectionManager`]
//! on one Redis, the cluster client's connection on a cluster) carries every non-blocking
//! command; each `LaneReader` (lanes.rs) owns a dedicated connection for its reads, made from
//! the same client (on a cluster, a client of each master: `client::node_client`).
//!
//! On a cluster the probe asks every master and keeps the least of them (a newer command is
//! used only when every master knows it), the out-of-memory check asks every master (any one
//! refusing writes is "not accepting"), and the clock is the clock of the master of the admin
//! keys (`{@admin}`): one clock for every comparison a process makes. Scripts compare times on
//! their own node; the nodes' clocks differ by what NTP leaves between them.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::client::{is_tls_url, open_client, open_cluster_client, redact_url, RedisSettings};
use super::conn::Conn;
use super::error::is_oom;
use super::scripts::{scripts, OOM_PROBE};
use super::server::ServerInfo;
use crate::error::{Error, Result};
use crate::keys::Keys;

/// What to check when a TLS connection failed: the client certificate when the server sent
/// an alert (it refused the handshake), the authority when this side refused the server's
/// certificate, the port when the server did not answer in TLS at all.
fn tls_hint(url: &str, e: &redis::RedisError) -> &'static str {
    if !is_tls_url(url) {
        return "";
    }
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("alert") && text.contains("certificaterequired") {
        "; the server requires a client certificate: set redis.tls_cert_file and \
         redis.tls_key_file"
    } else if text.contains("alert") {
        "; the server refused the TLS handshake: if it checks client certificates, set \
         redis.tls_cert_file and redis.tls_key_file to one its authority signed"
    } else if text.contains("certificate") {
        "; the server's TLS certificate was not accepted: set redis.tls_ca_file to the PEM of \
         the authority that signed it (and check the URL's host is a name in it)"
    } else if text.contains("corrupt") || text.contains("invalid") {
        "; is the server listening with TLS on that port? (rediss:// needs its tls-port)"
    } else {
        ""
    }
}

/// A handle on Redis for one key prefix and consumer group. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    /// The client, for the dedicated connections of blocking reads and the announcements'
    /// subscription (on a cluster: of the first seed node, whose TLS and credentials the
    /// clients of the other nodes copy; announcements reach every node of a cluster).
    pub(super) client: redis::Client,
    /// The shared connection of every non-blocking command.
    pub(super) conn: Conn,
    /// The cluster client, in cluster mode: for the dedicated connections of readers.
    pub(super) cluster: Option<redis::cluster::ClusterClient>,
    /// What wakes this process's readers on a cluster, where they cannot block on the lanes
    /// (one read over several tenants' lanes is cross-slot): each reads its lanes without
    /// blocking and waits on its own `Notify`, up to its block time, for an entry signal or a
    /// new tenant ([`Broker::unblock`] wakes them all, lanes.rs).
    pub(super) lane_wake: Arc<std::sync::Mutex<Vec<std::sync::Weak<tokio::sync::Notify>>>>,
    /// The key names under this broker's prefix.
    pub(super) keys: Keys,
    /// The fleet's consumer group.
    pub(super) group: Arc<str>,
    /// Connect timeout of new connections.
    pub(super) connect_timeout: Duration,
    /// Response timeout of non-blocking commands.
    pub(super) response_timeout: Duration,
    /// What the server is and which newer commands it knows, probed at connect.
    pub(super) server: Arc<ServerInfo>,
    /// Each distinct (flavor, version) among the masters (the one server on a single Redis).
    pub(super) servers: Arc<Vec<ServerInfo>>,
    /// Whether enqueue.lua is known to be in the server's script cache (set by a load, cleared
    /// by a NOSCRIPT answer): an enqueue then sends no SCRIPT LOAD of its ~10 KiB text.
    pub(super) enqueue_loaded: Arc<std::sync::atomic::AtomicBool>,
    /// Which tenants' events the scripts record for their notification targets (notify.rs).
    pub(super) notify: Arc<super::notify_plan::NotifyPlan>,
    /// The replicas each enqueue and settle write waits for (`redis.wait_replicas`), `None`
    /// when off (replicas.rs).
    pub(super) wait: Option<super::client::WaitReplicas>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.keys.prefix())
            .field("group", &self.group)
            .finish()
    }
}

impl Broker {
    /// Connects to `url` and checks that the server answers.
    pub(crate) async fn connect_to(
        url: &str,
        settings: &RedisSettings,
        group: &str,
    ) -> Result<Broker> {
        let connect_error = |e: redis::RedisError| {
            Error::from(redis::RedisError::from((
                redis::ErrorKind::Io,
                "cannot connect to redis",
                format!("{} ({e}){}", redact_url(url), tls_hint(url, &e)),
            )))
        };
        let (client, conn, cluster) = if settings.cluster {
            let (cluster, base) = open_cluster_client(url, settings)?;
            let conn = tokio::time::timeout(
                settings.connect_timeout * 2 + settings.response_timeout,
                cluster.get_async_connection(),
            )
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "connecting to the redis cluster {} took too long",
                    redact_url(url)
                ))
            })?
            .map_err(connect_error)?;
            (
                base,
                Conn::Cluster(conn, super::conn::SlotMap::default()),
                Some(cluster),
            )
        } else {
            let client = open_client(url, settings)?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(2));
            let conn = ConnectionManager::new_with_config(client.clone(), cfg)
                .await
                .map_err(connect_error)?;
            (client, Conn::Single(conn), None)
        };
        let mut broker = Broker {
            client,
            conn,
            cluster,
            lane_wake: Arc::default(),
            keys: Keys::new(settings.key_prefix.clone()),
            group: group.into(),
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            enqueue_loaded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            server: Arc::new(ServerInfo::unknown()),
            servers: Arc::new(Vec::new()),
            notify: Arc::default(),
            wait: settings.wait,
        };
        broker.ping().await?;
        let (least, all) = broker.probe_server().await;
        broker.server = Arc::new(least);
        broker.servers = Arc::new(all);
        Ok(broker)
    }

    /// A client like this broker's (same URL, TLS and credentials), for tests that seed
    /// state with raw commands.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn redis_client(&self) -> redis::Client {
        self.client.clone()
    }

    /// This broker's shared connection, for tests that seed and read state with raw commands
    /// (on a cluster too).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn raw_connection(&self) -> super::conn::RawConnection {
        super::conn::RawConnection(self.con())
    }

    /// The key names this broker uses.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The consumer group name.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// The shared connection (a cheap clone).
    pub(super) fn con(&self) -> Conn {
        self.conn.clone()
    }

    /// Checks that Redis answers.
    pub(crate) async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Whether each master (the server on a single Redis) accepts writes that grow memory:
    /// the ones over `maxmemory`, and the ones the probe did not reach, by address (an out of
    /// memory episode is per shard, and so is an unreachable master: /readyz names them).
    pub(crate) async fn write_check(&self) -> WriteCheck {
        let mut check = WriteCheck::default();
        if self.is_cluster() {
            let shards = match self.shards().await {
                Ok(s) => s,
                Err(e) => {
                    check.unreachable.push(("the cluster".into(), e));
                    return check;
                }
            };
            for shard in shards {
                let at = format!("{}:{}", shard.host, shard.port);
                let mut probe = redis::cmd("EVAL");
                probe.arg(OOM_PROBE).arg(0);
                match self.on_shard(&shard, probe).await {
                    Ok(_) => {}
                    Err(e) if is_oom(&e) => check.refusing.push(at),
                    Err(e) => check.unreachable.push((at, e)),
                }
            }
            return check;
        }
        match scripts()
            .oom_probe
            .prepare_invoke()
            .invoke_async::<i64>(&mut self.con())
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let e = Error::from(e);
                if is_oom(&e) {
                    check.refusing.push(self.address());
                } else {
                    check.unreachable.push((self.address(), e));
                }
            }
        }
        check
    }

    /// `host:port` of the server this broker's client connects to (the first seed of a
    /// cluster).
    fn address(&self) -> String {
        match &self.client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p)
            | redis::ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                format!("{h}:{p}")
            }
            other => other.to_string(),
        }
    }

    /// The Redis server's clock, ms since the epoch. Times that several processes compare (the
    /// dead-letter ids, beats, deadlines) all come from this clock.
    /// On a cluster: the clock of the admin keys' master.
    pub(crate) async fn server_time_ms(&self) -> Result<u64> {
        let v = self
            .on_key_node(&self.keys.admin_members(), redis::cmd("TIME"))
            .await?;
        let (s, us): (u64, u64) =
            redis::from_redis_value(v).map_err(|e| Error::Protocol(format!("TIME: {e}")))?;
        Ok(s * 1000 + us / 1000)
    }
}

/// What [`Broker::write_check`] found: the masters (`host:port`) that refuse writes for
/// memory and those the probe did not reach, with why. Both empty: every master accepts.
#[derive(Debug, Default)]
pub(crate) struct WriteCheck {
    /// Masters over `maxmemory`.
    pub(crate) refusing: Vec<String>,
    /// Masters that did not answer the probe.
    pub(crate) unreachable: Vec<(String, Error)>,
}

impl Broker {
    /// Asks the server what it is (`INFO server`) and which newer commands it knows
    /// (`COMMAND INFO`), in one round trip. Never fails: what the server refuses to say is
    /// unknown ([`ServerInfo::unknown`]'s parts). On a cluster, every master: what all of them
    /// can do, and each distinct (flavor, version) among them.
    pub(super) async fn probe_server(&self) -> (ServerInfo, Vec<ServerInfo>) {
        if !self.is_cluster() {
            let one = self.probe_node().await;
            return (one.clone(), vec![one]);
        }
        self.probe_masters().await
    }

    /// The probe of the one server.
    async fn probe_node(&self) -> ServerInfo {
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server");
        pipe.cmd("COMMAND").arg("INFO").arg("XACKDEL").arg("HSETEX");
        let replies: redis::RedisResult<Vec<redis::RedisResult<Value>>> =
            pipe.ignore_errors().query_async(&mut self.con()).await;
        let Ok(replies) = replies else {
            return ServerInfo::unknown();
        };
        let mut replies = replies.into_iter();
        let info = match replies.next() {
            Some(Ok(v)) => info_text(v),
            _ => String::new(),
        };
        let probed = ServerInfo::from_info(&info);
        match replies.next() {
            Some(Ok(table)) => probed.with_command_table(&table),
            _ => probed,
        }
    }

    /// What the server is and can do, as probed when this broker connected (on a cluster:
    /// what every master can do, at the lowest version).
    pub(crate) fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// Each distinct (flavor, version) among the masters as probed when this broker
    /// connected (a rolling upgrade mixes them): one `redrive_redis_info` series each.
    pub(crate) fn servers(&self) -> &[ServerInfo] {
        &self.servers
    }
}

/// The text of an `INFO` reply.
pub(super) fn info_text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        Value::SimpleString(s) => s,
        _ => String::new(),
    }
}

/// A broker on `url` under `prefix` for the crate's own tests, built from the broker's own
/// settings (below the config layer).
#[cfg(test)]
pub(crate) async fn test_broker(url: &str, prefix: &str, cluster: bool) -> Broker {
    let settings = RedisSettings {
        url: Some(url.to_owned()),
        cluster,
        key_prefix: prefix.to_owned(),
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(10),
        tls: super::client::RedisTls::default(),
        username: None,
        password: None,
        password_source: None,
        wait: None,
    };
    match Broker::connect_to(url, &settings, "redrive").await {
        Ok(b) => b,
        Err(e) => panic!("connect to {url}: {e}"),
    }
}
