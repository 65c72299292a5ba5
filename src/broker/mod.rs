//! The one module that talks to Redis. Its methods speak the domain (enqueue, read, ack,
//! dead-letter, lease) and hide command names, connection types and scripts from the rest.
//!
//! Connections: one shared auto-reconnecting [`ConnectionManager`] carries every non-blocking
//! command; each [`LaneReader`] owns a dedicated connection for its blocking XREADGROUP, with a
//! response timeout longer than the block time (the redis crate's default of 500 ms would fail
//! a long BLOCK client-side while the server still delivers, stranding entries).

pub mod reply;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script, Value};

use crate::config::RedisSettings;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::task::Task;
pub use reply::{Entry, Fields};

struct Scripts {
    ack: Script,
    dead_letter: Script,
    lease_renew: Script,
    lease_release: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            ack: Script::new(include_str!("scripts/ack.lua")),
            dead_letter: Script::new(include_str!("scripts/dead_letter.lua")),
            lease_renew: Script::new(include_str!("scripts/lease_renew.lua")),
            lease_release: Script::new(include_str!("scripts/lease_release.lua")),
        }
    }
}

/// The result of moving an entry to the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLettered {
    /// False when the entry was no longer pending (another member settled it); nothing was written.
    pub moved: bool,
    /// The dead letter's id in the tenant's dead-letter stream.
    pub id: String,
    /// How many older dead letters the cap trimmed to make room.
    pub trimmed: u64,
}

/// A handle on Redis for one key prefix and consumer group. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    group: Arc<str>,
    scripts: Arc<Scripts>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.keys.prefix())
            .field("group", &self.group)
            .finish()
    }
}

fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

impl Broker {
    /// Connects to `url` and checks that the server answers.
    pub async fn connect(url: &str, settings: &RedisSettings, group: &str) -> Result<Broker> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(|e| {
                Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot connect to redis",
                    format!("{} ({e})", crate::config::redact_url(url)),
                )))
            })?;
        let broker = Broker {
            client,
            conn,
            keys: Keys::new(settings.key_prefix.clone()),
            group: group.into(),
            scripts: Arc::new(Scripts::load()),
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
        };
        broker.ping().await?;
        Ok(broker)
    }

    /// The key names this broker uses.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The consumer group name.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn con(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.con()).await?;
        Ok(())
    }

    // ---- enqueue -------------------------------------------------------------------------

    /// Appends tasks to their tenants' lanes in one pipelined round trip, registering the
    /// tenants first. Returns the new entry ids, in order. Tasks must be validated already.
    pub async fn enqueue(&self, tasks: &[Task]) -> Result<Vec<String>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tenants: Vec<&str> = tasks.iter().map(|t| t.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(self.keys.tenants())
            .arg(&tenants)
            .ignore();
        for task in tasks {
            let cmd = pipe.cmd("XADD").arg(self.keys.lane(&task.tenant)).arg("*");
            for (k, v) in task.to_fields() {
                cmd.arg(k).arg(v);
            }
        }
        let ids: Vec<String> = pipe.query_async(&mut self.con()).await?;
        Ok(ids)
    }

    // ---- tenants and groups --------------------------------------------------------------

    /// Every registered tenant.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?;
        t.sort_unstable();
        Ok(t)
    }

    /// How many tenants are registered (O(1), for cheap change detection).
    pub async fn tenant_count(&self) -> Result<u64> {
        Ok(redis::cmd("SCARD")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?)
    }

    /// Creates the fleet's group on a tenant's lane if it is missing. The group starts at id 0,
    /// so entries written before it existed are delivered too.
    pub async fn ensure_group(&self, tenant: &str) -> Result<()> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con())
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- reading -------------------------------------------------------------------------

    /// A reader with its own connection, for blocking reads of up to `block`.
    pub async fn reader(&self, consumer: &str, block: Duration) -> Result<LaneReader> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(block + self.response_timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        Ok(LaneReader {
            conn,
            group: self.group.clone(),
            consumer: consumer.into(),
        })
    }

    // ---- settling ------------------------------------------------------------------------

    /// Acks and deletes completed entries of one lane. Returns how many were still pending.
    pub async fn ack(&self, tenant: &str, ids: &[&str]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts.ack.key(self.keys.lane(tenant));
        inv.arg(&*self.group).arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Acks only (no delete): for tombstones, whose entry is already gone.
    pub async fn ack_only(&self, tenant: &str, ids: &[&str]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(redis::cmd("XACK")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg(ids)
            .query_async(&mut self.con())
            .await?)
    }

    /// Moves entry `entry_id` of `tenant`'s lane to the tenant's dead letters with `fields`,
    /// atomically (see scripts/dead_letter.lua).
    pub async fn dead_letter(
        &self,
        tenant: &str,
        entry_id: &str,
        max_len: u64,
        fields: &[(&str, String)],
    ) -> Result<DeadLettered> {
        let mut inv = self.scripts.dead_letter.key(self.keys.lane(tenant));
        inv.key(self.keys.dlq(tenant))
            .key(self.keys.dlq_trimmed(tenant))
            .arg(&*self.group)
            .arg(entry_id)
            .arg(max_len);
        for (k, v) in fields {
            inv.arg(*k).arg(v);
        }
        let (moved, id, trimmed): (i64, String, u64) = inv.invoke_async(&mut self.con()).await?;
        Ok(DeadLettered {
            moved: moved == 1,
            id,
            trimmed,
        })
    }

    // ---- member lease --------------------------------------------------------------------

    /// Takes the lease on `member_id` for `ttl` if nobody holds it. Returns whether it was taken.
    pub async fn acquire_lease(&self, member_id: &str, token: &str, ttl: Duration) -> Result<bool> {
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
    pub async fn lease_remaining(&self, member_id: &str) -> Result<Option<Duration>> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.keys.member(member_id))
            .query_async(&mut self.con())
            .await?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Extends the lease if `token` still holds it. Returns whether it did.
    pub async fn renew_lease(&self, member_id: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut inv = self.scripts.lease_renew.key(self.keys.member(member_id));
        inv.arg(token).arg(ttl.as_millis() as u64);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    /// Gives up the lease if `token` still holds it.
    pub async fn release_lease(&self, member_id: &str, token: &str) -> Result<bool> {
        let mut inv = self.scripts.lease_release.key(self.keys.member(member_id));
        inv.arg(token);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    // ---- inspection ----------------------------------------------------------------------

    /// Entries in a tenant's lane (waiting, pending, or settled-but-not-deleted).
    pub async fn lane_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.lane(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Entries of a tenant's lane delivered to the group but not settled yet.
    pub async fn pending_count(&self, tenant: &str) -> Result<u64> {
        let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .query_async(&mut self.con())
            .await;
        match r {
            Ok(Value::Array(items)) => match items.first() {
                Some(Value::Int(n)) => Ok(*n as u64),
                _ => Ok(0),
            },
            Ok(_) => Ok(0),
            Err(e) if is_code(&e, "NOGROUP") => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Entries in a tenant's dead-letter stream.
    pub async fn dlq_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.dlq(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Dead letters of a tenant from `start` to `end` (stream ids, `-`/`+` for the ends).
    pub async fn dlq_range(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq(tenant))
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        reply::entries(v)
    }
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom<'a> {
    /// Entries never delivered to the group (`>`).
    New,
    /// This consumer's own pending entries with an id above the given one.
    OwnPendingAfter(&'a str),
}

/// A dedicated connection for one member's XREADGROUP calls.
pub struct LaneReader {
    conn: MultiplexedConnection,
    group: Arc<str>,
    consumer: String,
}

/// Whether an error means the group or stream is gone (deleted lane, new lane).
pub fn is_missing_group(e: &Error) -> bool {
    match e {
        Error::Redis(r) => is_code(r, "NOGROUP") || is_code(r, "UNBLOCKED"),
        _ => false,
    }
}

impl LaneReader {
    /// Reads up to `count` entries from each of `lanes` (stream keys). With `block`, waits up to
    /// that long when none has anything. Returns `(lane key, entries)` pairs with entries.
    pub async fn read(
        &mut self,
        lanes: &[String],
        from: ReadFrom<'_>,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<Entry>)>> {
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let (ReadFrom::New, Some(b)) = (from, block) {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(lanes);
        let id = match from {
            ReadFrom::New => ">",
            ReadFrom::OwnPendingAfter(id) => id,
        };
        for _ in lanes {
            cmd.arg(id);
        }
        let v: Value = cmd.query_async(&mut self.conn).await?;
        reply::streams(v)
    }
}
