//! Connecting to Redis: the [`Broker`] handle itself (its connection, key names and group,
//! from a client `client.rs` built), what a failed TLS connection should make the user check,
//! and what every caller may ask of the server (ping, clock, whether it accepts writes, what it
//! is: the capability probe at connect, whose findings `server.rs` reads).
//!
//! Connections: one shared auto-reconnecting [`ConnectionManager`] carries every non-blocking
//! command; each `LaneReader` (lanes.rs) owns a dedicated connection for its blocking
//! XREADGROUP, made from the same client.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::client::{is_tls_url, open_client, redact_url, RedisSettings};
use super::error::is_oom;
use super::scripts::scripts;
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
    /// The client, for the dedicated connections of blocking reads.
    pub(super) client: redis::Client,
    /// The shared connection of every non-blocking command.
    pub(super) conn: ConnectionManager,
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
    /// Whether enqueue.lua is known to be in the server's script cache (set by a load, cleared
    /// by a NOSCRIPT answer): an enqueue then sends no SCRIPT LOAD of its ~10 KiB text.
    pub(super) enqueue_loaded: Arc<std::sync::atomic::AtomicBool>,
    /// Which tenants' events the scripts record for their notification targets (notify.rs).
    pub(super) notify: Arc<super::notify_plan::NotifyPlan>,
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
        let client = open_client(url, settings)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(|e| {
                Error::from(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot connect to redis",
                    format!("{} ({e}){}", redact_url(url), tls_hint(url, &e)),
                )))
            })?;
        let mut broker = Broker {
            client,
            conn,
            keys: Keys::new(settings.key_prefix.clone()),
            group: group.into(),
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            enqueue_loaded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            server: Arc::new(ServerInfo::unknown()),
            notify: Arc::default(),
        };
        broker.ping().await?;
        broker.server = Arc::new(broker.probe_server().await);
        Ok(broker)
    }

    /// A client like this broker's (same URL, TLS and credentials), for tests that seed
    /// state with raw commands.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn redis_client(&self) -> redis::Client {
        self.client.clone()
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
    pub(super) fn con(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Checks that Redis answers.
    pub(crate) async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Whether Redis accepts writes that grow memory right now: `false` while it is over
    /// `maxmemory` and refuses them (scripts/oom_probe.lua, which writes nothing).
    pub(crate) async fn accepts_writes(&self) -> Result<bool> {
        match scripts()
            .oom_probe
            .prepare_invoke()
            .invoke_async::<i64>(&mut self.con())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = Error::from(e);
                if is_oom(&e) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The Redis server's clock, ms since the epoch. Times that several processes compare (the
    /// dead-letter ids, beats, deadlines) all come from this clock.
    pub(crate) async fn server_time_ms(&self) -> Result<u64> {
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut self.con()).await?;
        Ok(s * 1000 + us / 1000)
    }
}

impl Broker {
    /// Asks the server what it is (`INFO server`) and which newer commands it knows
    /// (`COMMAND INFO`), in one round trip. Never fails: what the server refuses to say is
    /// unknown ([`ServerInfo::unknown`]'s parts).
    pub(super) async fn probe_server(&self) -> ServerInfo {
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
            Some(Ok(v)) => match v {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::VerbatimString { text, .. } => text,
                Value::SimpleString(s) => s,
                _ => String::new(),
            },
            _ => String::new(),
        };
        let probed = ServerInfo::from_info(&info);
        match replies.next() {
            Some(Ok(table)) => probed.with_command_table(&table),
            _ => probed,
        }
    }

    /// What the server is and can do, as probed when this broker connected.
    pub(crate) fn server(&self) -> &ServerInfo {
        &self.server
    }
}
