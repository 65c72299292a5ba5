//! The one module that talks to Redis. Its methods speak the domain (enqueue, read, ack,
//! dead-letter, lease) and hide command names, connection types and scripts from the rest.
//!
//! Connections: one shared auto-reconnecting [`ConnectionManager`] carries every non-blocking
//! command; each [`LaneReader`] owns a dedicated connection for its blocking XREADGROUP, with a
//! response timeout longer than the block time (the redis crate's default of 500 ms would fail
//! a long BLOCK client-side while the server still delivers, stranding entries).

pub mod admin;
mod connect;
mod error;
pub mod raw;
pub mod reply;
pub mod tenants;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script, Value};

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::task::Task;
pub use admin::{BeginCommand, FingerprintTally, FinishMode, Withdraw, STATS_KEEP};
pub use connect::{check_url, redact_url, RedisSettings};
pub use reply::{Entry, Fields};
pub use tenants::{BreakerInfo, BreakerTransition, DeferItem, Deferred, ProbeVerdict};

struct Scripts {
    ack: Script,
    fast_ack: Script,
    oom_probe: Script,
    dead_letter: Script,
    retry: Script,
    promote: Script,
    claim: Script,
    autoclaim: Script,
    depths: Script,
    begin: Script,
    start: Script,
    heartbeat: Script,
    lease_renew: Script,
    lease_release: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            ack: Script::new(include_str!("scripts/ack.lua")),
            fast_ack: Script::new(include_str!("scripts/fast_ack.lua")),
            oom_probe: Script::new(include_str!("scripts/oom_probe.lua")),
            dead_letter: Script::new(include_str!("scripts/dead_letter.lua")),
            retry: Script::new(include_str!("scripts/retry.lua")),
            promote: Script::new(include_str!("scripts/promote.lua")),
            claim: Script::new(include_str!("scripts/claim.lua")),
            autoclaim: Script::new(include_str!("scripts/autoclaim.lua")),
            depths: Script::new(include_str!("scripts/depths.lua")),
            begin: Script::new(include_str!("scripts/begin.lua")),
            start: Script::new(include_str!("scripts/start.lua")),
            heartbeat: Script::new(include_str!("scripts/heartbeat.lua")),
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

/// One step of a claim scan.
///
/// The counts are, for a tenant's lane ([`Broker::claim_own`], [`Broker::reclaim`]), how many
/// times the entry started on a member (its delivery count minus the read, see
/// scripts/start.lua); for the admin stream, its delivery count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimStep {
    /// Where the next step starts, or `None` when the scan is complete.
    pub next: Option<String>,
    /// Entries now owned by the claimer: (id, count so far). Not yet re-delivered:
    /// [`Broker::begin`] does that when one starts.
    pub claimed: Vec<(String, u64)>,
    /// Entries at or past the poison threshold: (id, count). Still pending, owned by the
    /// claimer, not to be run: they go to the dead letters as crash loops.
    pub poison: Vec<(String, u64)>,
    /// Pending ids whose entry was gone; the claim removed them from the PEL.
    pub tombstones: usize,
}

/// One tenant's depth figures, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDepth {
    /// The tenant.
    pub tenant: Arc<str>,
    /// Entries in the lane (waiting or pending).
    pub lane: u64,
    /// Entries delivered and not settled.
    pub pending: u64,
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Scheduled retries.
    pub retries: u64,
    /// Scheduled retries already due.
    pub overdue: u64,
    /// Dead letters.
    pub dlq: u64,
}

/// One failed attempt to schedule again: its entry, its delay and the next attempt's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryItem {
    /// The entry id in the lane.
    pub entry_id: String,
    /// How long from now (server clock) the next attempt is due.
    pub delay: Duration,
    /// The schedule member: a JSON array [field, value, …] of the next attempt.
    pub member: String,
}

impl RetryItem {
    /// Encodes the next attempt's `fields` for the schedule.
    pub fn new<K: AsRef<str>>(
        entry_id: &str,
        delay: Duration,
        fields: &[(K, String)],
    ) -> Result<RetryItem> {
        let flat: Vec<&str> = fields
            .iter()
            .flat_map(|(k, v)| [k.as_ref(), v.as_str()])
            .collect();
        let member = serde_json::to_string(&flat)
            .map_err(|e| Error::Protocol(format!("cannot encode a retry: {e}")))?;
        Ok(RetryItem {
            entry_id: entry_id.to_owned(),
            delay,
            member,
        })
    }
}

impl ClaimStep {
    /// A lane's step with its delivery counts turned into starts (count − 1: the read itself
    /// is no start).
    fn into_starts(mut self) -> ClaimStep {
        for (_, n) in self.claimed.iter_mut().chain(self.poison.iter_mut()) {
            *n = n.saturating_sub(1);
        }
        self
    }
}

/// What [`Broker::start`] found for a batch of entries about to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Starts {
    /// Entries whose start is now recorded: they may run.
    pub started: Vec<String>,
    /// Entries that were deleted while pending (tombstones, now gone from the PEL too).
    pub gone: Vec<String>,
    /// Entries no longer pending for this consumer (reclaimed or settled elsewhere): they
    /// must not run here.
    pub lost: Vec<String>,
}

/// What one heartbeat found besides the entries it refreshed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Beat {
    /// Entries now pending for another consumer: lost to a reclaim.
    pub taken: Vec<String>,
    /// Entries pending for nobody: settled, by this member (a settle racing the beat) or by
    /// another one after a reclaim.
    pub gone: Vec<String>,
}

/// The smallest and largest of stream ids (by their numeric parts).
fn id_range<'a>(ids: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let key = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse().unwrap_or(u64::MAX),
            seq.parse().unwrap_or(u64::MAX),
        )
    };
    let lo = ids.iter().min_by_key(|id| key(id))?;
    let hi = ids.iter().max_by_key(|id| key(id))?;
    Some((lo, hi))
}

/// Parses the reply of claim.lua or autoclaim.lua.
fn claim_step(reply: redis::RedisResult<Value>) -> Result<ClaimStep> {
    let v = match reply {
        Ok(v) => v,
        Err(e) if is_code(&e, "NOGROUP") => return Ok(ClaimStep::default()),
        Err(e) => return Err(e.into()),
    };
    let Value::Array(parts) = v else {
        return Err(Error::Protocol("claim script returned a non-array".into()));
    };
    let mut parts = parts.into_iter();
    let next = match parts.next() {
        Some(Value::BulkString(b)) if !b.is_empty() => {
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    };
    let claimed = id_counts(parts.next())?;
    let poison = id_counts(parts.next())?;
    let tombstones = match parts.next() {
        Some(Value::Int(n)) => n.max(0) as usize,
        other => {
            return Err(Error::Protocol(format!(
                "claim script returned {other:?} for the tombstone count"
            )))
        }
    };
    Ok(ClaimStep {
        next,
        claimed,
        poison,
        tombstones,
    })
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

/// At most 200 characters of a server's error text.
fn bounded(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// One bounded error for the refusals of a transaction that wrote nothing (`nothing` says so):
/// [`Error::OutOfMemory`] when Redis refused for memory, else the first refusal and the count.
fn refused(errors: &[&redis::ServerError], nothing: &str) -> Error {
    let oom = errors.iter().find(|e| e.code() == "OOM");
    let first = oom.unwrap_or(&errors[0]);
    let said = bounded(
        format!("{} {}", first.code(), first.details().unwrap_or_default()).trim_end_matches('.'),
    );
    match oom {
        Some(_) => Error::OutOfMemory(format!(
            "{nothing}. Redis said: {said}. Free memory in Redis (or raise maxmemory), then run \
             it again"
        )),
        None => Error::Protocol(format!(
            "redis refused the write ({} refusals, first: {said}); {nothing}",
            errors.len()
        )),
    }
}

/// A bounded error for a pipelined write that Redis refused in part: how many of `total`
/// commands were refused and the first refusal ([`Error::OutOfMemory`] when for memory).
fn pipeline_refused(e: redis::RedisError, total: usize) -> Error {
    let Some(errors) = e.clone().into_server_errors() else {
        return Error::from(e);
    };
    let Some((index, first)) = errors
        .iter()
        .find(|(_, e)| e.code() == "OOM")
        .or(errors.first())
    else {
        return Error::from(e);
    };
    let said = bounded(
        format!("{} {}", first.code(), first.details().unwrap_or_default()).trim_end_matches('.'),
    );
    let what = format!(
        "{} of {total} commands of a pipelined enqueue were refused (first at command {index}), \
         the others were written; Redis said: {said}",
        errors.len()
    );
    if first.code() == "OOM" {
        Error::OutOfMemory(what)
    } else {
        Error::Protocol(what)
    }
}

/// Whether Redis refused a command because it is over `maxmemory` (with `noeviction`, or when
/// nothing more can be evicted): `-OOM command not allowed when used memory > 'maxmemory'`.
pub(crate) fn is_oom(e: &Error) -> bool {
    match e {
        Error::OutOfMemory(_) => true,
        Error::Redis(r) => {
            r.code() == Some("OOM")
                || r.to_string()
                    .contains("command not allowed when used memory")
        }
        _ => false,
    }
}

/// Whether a call that failed with `e` may nevertheless have run in Redis: its reply was lost
/// (a response timeout, a connection reset or closed while the request may have been sent), or
/// a reply came that redrive could not read. A refusal Redis answered (out of memory, any other
/// error reply) and a connection that could not be opened are clean: nothing ran.
pub(crate) fn may_have_run(e: &Error) -> bool {
    match e {
        Error::Redis(r) => r.may_have_run(),
        Error::Protocol(_) => true,
        _ => false,
    }
}

/// How long the per-minute settle counts are kept (the settle scripts set it on new buckets).
fn stats_keep_ms() -> u64 {
    STATS_KEEP.as_millis() as u64
}

impl Broker {
    /// Connects to `url` and checks that the server answers.
    pub(crate) async fn connect_to(
        url: &str,
        settings: &RedisSettings,
        group: &str,
    ) -> Result<Broker> {
        let client = redis::Client::open(url)?;
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
                    format!("{} ({e})", redact_url(url)),
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
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The consumer group name.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    fn con(&self) -> ConnectionManager {
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
        match self
            .scripts
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

    // ---- enqueue -------------------------------------------------------------------------

    /// Appends tasks to their tenants' lanes in one pipelined round trip, registering the
    /// tenants first. Returns the new entry ids, in order. Tasks must be validated already.
    pub(crate) async fn enqueue(&self, tasks: &[Task]) -> Result<Vec<String>> {
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
                cmd.arg(k.as_ref()).arg(v);
            }
        }
        let ids: Vec<String> = pipe
            .query_async(&mut self.con())
            .await
            .map_err(|e| pipeline_refused(e, tasks.len() + 1))?;
        Ok(ids)
    }

    /// Appends tasks to their tenants' lanes and registers the tenants in one MULTI/EXEC:
    /// all of them or none. Returns the new entry ids, in order. Tasks must be validated
    /// already. A Redis at `maxmemory` (noeviction) refuses the whole transaction:
    /// [`Error::OutOfMemory`], nothing written. Error messages are bounded: the first refusal
    /// and how many there were, never the commands.
    pub(crate) async fn enqueue_atomic(&self, tasks: &[Task]) -> Result<Vec<String>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tenants: Vec<&str> = tasks.iter().map(|t| t.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        // MULTI and EXEC as plain commands of one pipeline (one write on the connection, so
        // nothing else interleaves), every reply kept, so each refusal can be told apart.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("MULTI");
        pipe.cmd("SADD").arg(self.keys.tenants()).arg(&tenants);
        for task in tasks {
            let cmd = pipe.cmd("XADD").arg(self.keys.lane(&task.tenant)).arg("*");
            for (k, v) in task.to_fields() {
                cmd.arg(k).arg(v);
            }
        }
        pipe.cmd("EXEC");
        let mut replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let n = tasks.len();
        let nothing = if n == 1 {
            "nothing was written".to_owned()
        } else {
            format!("none of the {n} tasks was written (they are one transaction)")
        };
        let exec = replies.pop();
        let queued: Vec<&redis::ServerError> = replies
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(e),
                _ => None,
            })
            .collect();
        if let Some(Value::ServerError(e)) = &exec {
            if queued.is_empty() || e.code() == "OOM" {
                return Err(refused(&[e], &nothing));
            }
        }
        if !queued.is_empty() {
            return Err(refused(&queued, &nothing));
        }
        let Some(Value::Array(mut results)) = exec else {
            return Err(Error::Protocol(format!(
                "EXEC of an enqueue answered {}",
                exec.map(|v| format!("{v:?}").chars().take(100).collect::<String>())
                    .unwrap_or_default()
            )));
        };
        if results.len() != n + 1 {
            return Err(Error::Protocol(format!(
                "EXEC of an enqueue of {n} tasks answered {} results",
                results.len()
            )));
        }
        results.remove(0);
        let failed: Vec<&redis::ServerError> = results
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(e),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            // Redis does not roll a transaction back: a command failing inside EXEC (a lane
            // key holding another type) leaves the others written. Say so exactly.
            return Err(Error::Protocol(format!(
                "{} of {n} XADDs failed inside the transaction, the other {} tasks were written; \
                 first error: {}",
                failed.len(),
                n - failed.len(),
                bounded(&failed[0].to_string())
            )));
        }
        results
            .into_iter()
            .map(|v| {
                redis::from_redis_value::<String>(v)
                    .map_err(|e| Error::Protocol(format!("an XADD answered {e}")))
            })
            .collect()
    }

    // ---- tenants and groups --------------------------------------------------------------

    /// Every registered tenant.
    pub(crate) async fn tenants(&self) -> Result<Vec<String>> {
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?;
        t.sort_unstable();
        Ok(t)
    }

    /// How many tenants are registered (O(1), for cheap change detection).
    pub(crate) async fn tenant_count(&self) -> Result<u64> {
        Ok(redis::cmd("SCARD")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?)
    }

    /// Creates the fleet's group on a tenant's lane if it is missing. The group starts at id 0,
    /// so entries written before it existed are delivered too.
    pub(crate) async fn ensure_group(&self, tenant: &str) -> Result<()> {
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
    pub(crate) async fn reader(&self, consumer: &str, block: Duration) -> Result<LaneReader> {
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

    /// Acks and deletes completed entries of one lane that `consumer` still owns, and counts
    /// them in the tenant's stats bucket (the first `recovered` of `ids` as recovered too).
    /// Returns how many it acked; the rest were settled or reclaimed elsewhere.
    pub(crate) async fn ack(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
        recovered: usize,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let key = |id: &str| -> (u64, u64) {
            let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
            (
                ms.parse().unwrap_or(u64::MAX),
                seq.parse().unwrap_or(u64::MAX),
            )
        };
        let (Some(lo), Some(hi)) = (
            ids.iter().min_by_key(|id| key(id)),
            ids.iter().max_by_key(|id| key(id)),
        ) else {
            return Ok(0);
        };
        let mut inv = self.scripts.ack.key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant))
            .arg(&*self.group)
            .arg(consumer)
            .arg(*lo)
            .arg(*hi)
            .arg(stats_keep_ms())
            .arg(recovered.min(ids.len()))
            .arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Acks and deletes completed entries that no other consumer can have taken over (see
    /// the settler's fast-ack window), without ack.lua's owner check, and counts them in the
    /// tenant's stats bucket (the first `recovered` of `ids` as recovered too): one script
    /// (scripts/fast_ack.lua), which Redis runs even while over `maxmemory` (a MULTI would be
    /// refused). Returns how many were acked.
    pub(crate) async fn ack_unclaimable(
        &self,
        tenant: &str,
        ids: &[&str],
        recovered: usize,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts.fast_ack.key(self.keys.lane(tenant));
        inv.key(self.keys.stats_prefix(tenant))
            .arg(&*self.group)
            .arg(stats_keep_ms())
            .arg(recovered.min(ids.len()))
            .arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Acks only (no delete): for tombstones, whose entry is already gone.
    pub(crate) async fn ack_only(&self, tenant: &str, ids: &[&str]) -> Result<u64> {
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
    /// atomically, counted in the tenant's stats bucket (see scripts/dead_letter.lua). With
    /// `owner`, only if that consumer owns it; with `min_idle`, only if it has been idle that
    /// long. Refused as a whole (an OOM error, see [`is_oom`]) while Redis is over `maxmemory`.
    pub(crate) async fn dead_letter(
        &self,
        tenant: &str,
        entry_id: &str,
        max_len: u64,
        owner: Option<&str>,
        min_idle: Duration,
        fields: &[(&str, String)],
    ) -> Result<DeadLettered> {
        let mut inv = self.scripts.dead_letter.key(self.keys.lane(tenant));
        inv.key(self.keys.dlq(tenant))
            .key(self.keys.dlq_trimmed(tenant))
            .key(self.keys.stats_prefix(tenant))
            .arg(&*self.group)
            .arg(entry_id)
            .arg(max_len)
            .arg(owner.unwrap_or(""))
            .arg(min_idle.as_millis() as u64)
            .arg(stats_keep_ms());
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

    /// Acks and removes a failed attempt owned by `consumer` and schedules the next one
    /// (`fields`) `delay` from now by the server's clock. Returns the due time in ms, or `None`
    /// when `consumer` no longer owns the entry (nothing was written).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn schedule_retry(
        &self,
        tenant: &str,
        consumer: &str,
        entry_id: &str,
        delay: Duration,
        fields: &[(&str, String)],
    ) -> Result<Option<u64>> {
        let item = RetryItem::new(entry_id, delay, fields)?;
        let mut due = self
            .schedule_retries(tenant, consumer, std::slice::from_ref(&item))
            .await?;
        Ok(due.pop().flatten())
    }

    /// [`Broker::schedule_retry`] for a batch of one tenant's entries, in one atomic script
    /// that also counts them in the tenant's stats bucket. Returns one due time per item,
    /// `None` for entries `consumer` no longer owns. Refused as a whole (an OOM error, see
    /// [`is_oom`]) while Redis is over `maxmemory`.
    pub(crate) async fn schedule_retries(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[RetryItem],
    ) -> Result<Vec<Option<u64>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.retry.key(self.keys.lane(tenant));
        inv.key(self.keys.retry(tenant))
            .key(self.keys.stats_prefix(tenant))
            .arg(&*self.group)
            .arg(consumer)
            .arg(stats_keep_ms());
        for item in items {
            inv.arg(&item.entry_id)
                .arg(item.delay.as_millis() as u64)
                .arg(&item.member);
        }
        let due: Vec<i64> = inv.invoke_async(&mut self.con()).await?;
        if due.len() != items.len() {
            return Err(Error::Protocol(format!(
                "retry script answered {} times for {} entries",
                due.len(),
                items.len()
            )));
        }
        Ok(due
            .into_iter()
            .map(|d| (d >= 0).then_some(d as u64))
            .collect())
    }

    /// Moves up to `limit` due retries and held-back tasks of `tenant` back into its lane.
    /// Returns how many moved.
    pub(crate) async fn promote_due(&self, tenant: &str, limit: usize) -> Result<u64> {
        let mut inv = self.scripts.promote.key(self.keys.retry(tenant));
        inv.key(self.keys.lane(tenant))
            .key(self.keys.deferred(tenant))
            .arg(limit);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Retries scheduled for a tenant (due or not), tasks held back by its breaker included.
    pub(crate) async fn retry_len(&self, tenant: &str) -> Result<u64> {
        let (retries, deferred): (u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.keys.retry(tenant))
            .cmd("ZCARD")
            .arg(self.keys.deferred(tenant))
            .query_async(&mut self.con())
            .await?;
        Ok(retries + deferred)
    }

    /// One step of a member's drain of its own pending entries in `tenant`'s lane (see
    /// scripts/claim.lua). `start` is `-` or the `next` of the previous step; `skip` lists ids
    /// the member already has in flight. Entries that started `max_starts` times are poison;
    /// the step's counts are starts (see [`ClaimStep`]).
    pub(crate) async fn claim_own(
        &self,
        tenant: &str,
        consumer: &str,
        start: &str,
        count: usize,
        max_starts: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = self.scripts.claim.key(self.keys.lane(tenant));
        // A lane's delivery count is 1 + starts (scripts/start.lua).
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(start)
            .arg(count)
            .arg(max_starts.saturating_add(1))
            .arg(skip);
        claim_step(inv.invoke_async(&mut self.con()).await).map(ClaimStep::into_starts)
    }

    /// One step of a reclaim scan over `tenant`'s lane with XAUTOCLAIM (see
    /// scripts/autoclaim.lua): entries idle for at least `min_idle` at any consumer are taken
    /// over by `consumer`. `cursor` is `0-0` or the `next` of the previous step; `skip` lists ids
    /// the claimer already has in flight. Entries that started `max_starts` times are poison;
    /// the step's counts are starts (see [`ClaimStep`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn reclaim(
        &self,
        tenant: &str,
        consumer: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
        max_starts: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = self.scripts.autoclaim.key(self.keys.lane(tenant));
        // A lane's delivery count is 1 + starts (scripts/start.lua).
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg(count)
            .arg(max_starts.saturating_add(1))
            .arg(skip);
        claim_step(inv.invoke_async(&mut self.con()).await).map(ClaimStep::into_starts)
    }

    /// Records that entries of `tenant`'s lane read fresh by `consumer` start now (see
    /// scripts/start.lua: owner check + delivery count + 1, one call for the batch). Only the
    /// returned `started` ones may run.
    pub(crate) async fn start(&self, tenant: &str, consumer: &str, ids: &[&str]) -> Result<Starts> {
        let Some((lo, hi)) = id_range(ids) else {
            return Ok(Starts::default());
        };
        let mut inv = self.scripts.start.key(self.keys.lane(tenant));
        inv.arg(&*self.group).arg(consumer).arg(lo).arg(hi).arg(ids);
        let (started, gone): (Vec<String>, Vec<String>) = inv.invoke_async(&mut self.con()).await?;
        let seen: std::collections::HashSet<&str> =
            started.iter().chain(&gone).map(String::as_str).collect();
        let lost = ids
            .iter()
            .filter(|id| !seen.contains(**id))
            .map(|id| id.to_string())
            .collect();
        Ok(Starts {
            started,
            gone,
            lost,
        })
    }

    /// Starts a taken-over entry: checks `consumer` still owns it and records the delivery.
    pub(crate) async fn begin(&self, tenant: &str, consumer: &str, id: &str) -> Result<Begin> {
        self.begin_on(self.keys.lane(tenant), consumer, id).await
    }

    /// begin.lua on any stream read through the fleet's group (a lane or the admin stream).
    pub(crate) async fn begin_on(&self, stream: String, consumer: &str, id: &str) -> Result<Begin> {
        let mut inv = self.scripts.begin.key(stream);
        inv.arg(&*self.group).arg(consumer).arg(id);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let Value::Array(parts) = v else {
            return Err(Error::Protocol("begin script returned a non-array".into()));
        };
        let mut parts = parts.into_iter();
        match parts.next() {
            Some(Value::Int(0)) => Ok(Begin::Lost),
            Some(Value::Int(1)) => Ok(Begin::Tombstone),
            Some(Value::Int(2)) => {
                let entries = reply::entries(Value::Array(vec![Value::Array(vec![
                    Value::BulkString(id.as_bytes().to_vec()),
                    parts.next().unwrap_or(Value::Nil),
                ])]))?;
                Ok(Begin::Run(
                    entries
                        .into_iter()
                        .next()
                        .and_then(|e| e.fields)
                        .unwrap_or_default(),
                ))
            }
            other => Err(Error::Protocol(format!("begin script returned {other:?}"))),
        }
    }

    /// Records the start of fresh entries that no other consumer can have taken over yet (read
    /// by `consumer` within the fast window, see the settler's fast ack, so their delivery count
    /// is still the read's 1): one `XCLAIM … RETRYCOUNT 2 JUSTID`, without start.lua's owner
    /// check. Ids not claimed were deleted while pending (`gone`).
    pub(crate) async fn start_unclaimable(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> Result<Starts> {
        if ids.is_empty() {
            return Ok(Starts::default());
        }
        let started: Vec<String> = redis::cmd("XCLAIM")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("RETRYCOUNT")
            .arg(2)
            .arg("JUSTID")
            .query_async(&mut self.con())
            .await?;
        let seen: std::collections::HashSet<&str> = started.iter().map(String::as_str).collect();
        let gone = ids
            .iter()
            .filter(|id| !seen.contains(**id))
            .map(|id| id.to_string())
            .collect();
        Ok(Starts {
            started,
            gone,
            lost: Vec::new(),
        })
    }

    /// Refreshes the idle time of the entries `consumer` still owns; reports the others, those
    /// another consumer took apart from those no longer pending at all.
    pub(crate) async fn heartbeat(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> Result<Beat> {
        if ids.is_empty() {
            return Ok(Beat::default());
        }
        let mut inv = self.scripts.heartbeat.key(self.keys.lane(tenant));
        inv.arg(&*self.group).arg(consumer).arg(ids);
        let (taken, gone) = inv.invoke_async(&mut self.con()).await?;
        Ok(Beat { taken, gone })
    }

    /// One entry of a tenant's lane, if it still exists.
    pub(crate) async fn lane_entry(&self, tenant: &str, id: &str) -> Result<Option<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.lane(tenant))
            .arg(id)
            .arg(id)
            .query_async(&mut self.con())
            .await?;
        Ok(reply::entries(v)?.into_iter().next())
    }

    // ---- member lease --------------------------------------------------------------------

    /// Takes the lease on `member_id` for `ttl` if nobody holds it. Returns whether it was taken.
    pub(crate) async fn acquire_lease(
        &self,
        member_id: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
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
    pub(crate) async fn lease_remaining(&self, member_id: &str) -> Result<Option<Duration>> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.keys.member(member_id))
            .query_async(&mut self.con())
            .await?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Extends the lease if `token` still holds it. Returns whether it did.
    pub(crate) async fn renew_lease(
        &self,
        member_id: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut inv = self.scripts.lease_renew.key(self.keys.member(member_id));
        inv.arg(token).arg(ttl.as_millis() as u64);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    /// Gives up the lease if `token` still holds it.
    pub(crate) async fn release_lease(&self, member_id: &str, token: &str) -> Result<bool> {
        let mut inv = self.scripts.lease_release.key(self.keys.member(member_id));
        inv.arg(token);
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    // ---- inspection ----------------------------------------------------------------------

    /// Entries in a tenant's lane (waiting, pending, or settled-but-not-deleted).
    pub(crate) async fn lane_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.lane(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Entries of a tenant's lane delivered to the group but not settled yet.
    pub(crate) async fn pending_count(&self, tenant: &str) -> Result<u64> {
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

    /// Deletes every key of `tenant` (lane, retry schedule, deferred set, dead letters, trim counter, breaker,
    /// in-flight reservations) and removes it from the registry. For benchmarks that clean up
    /// after themselves; there is no way back.
    pub(crate) async fn drop_tenant(&self, tenant: &str) -> Result<()> {
        let _: Value = redis::cmd("DEL")
            .arg(self.keys.lane(tenant))
            .arg(self.keys.retry(tenant))
            .arg(self.keys.deferred(tenant))
            .arg(self.keys.dlq(tenant))
            .arg(self.keys.dlq_trimmed(tenant))
            .arg(self.keys.breaker(tenant))
            .arg(self.keys.breaker_window(tenant))
            .arg(self.keys.breaker_log(tenant))
            .arg(self.keys.slots(tenant))
            .query_async(&mut self.con())
            .await?;
        let _: Value = redis::cmd("SREM")
            .arg(self.keys.tenants())
            .arg(tenant)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Depth figures of each of `tenants` (one script per tenant, all in one pipeline).
    pub(crate) async fn tenant_depths(&self, tenants: &[Arc<str>]) -> Result<Vec<TenantDepth>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.depths).ignore();
        for t in tenants {
            let mut inv = self.scripts.depths.key(self.keys.lane(t));
            inv.key(self.keys.retry(t))
                .key(self.keys.dlq(t))
                .key(self.keys.deferred(t))
                .arg(&*self.group);
            pipe.invoke_script(&inv);
        }
        let rows: Vec<Vec<i64>> = pipe.query_async(&mut self.con()).await?;
        if rows.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "depth read answered {} rows for {} tenants",
                rows.len(),
                tenants.len()
            )));
        }
        rows.into_iter()
            .zip(tenants)
            .map(|(r, t)| match r[..] {
                [lane, pending, lag, retries, overdue, dlq] => Ok(TenantDepth {
                    tenant: t.clone(),
                    lane: lane.max(0) as u64,
                    pending: pending.max(0) as u64,
                    lag: lag.max(0) as u64,
                    retries: retries.max(0) as u64,
                    overdue: overdue.max(0) as u64,
                    dlq: dlq.max(0) as u64,
                }),
                _ => Err(Error::Protocol(format!("depth read of {t} returned {r:?}"))),
            })
            .collect()
    }

    /// Deletes the admin command stream and the live-member set of this prefix (benchmarks
    /// that clean up after themselves; nothing else should call it).
    pub(crate) async fn drop_admin_stream(&self) -> Result<()> {
        let _: Value = redis::cmd("DEL")
            .arg(self.keys.admin_commands())
            .arg(self.keys.admin_members())
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// `Redis <version>` from INFO server.
    pub(crate) async fn server_version(&self) -> Result<String> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.con())
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("(unknown version)")
            .trim()
            .to_owned();
        Ok(format!("Redis {version}"))
    }

    /// Entries in a tenant's dead-letter stream.
    pub(crate) async fn dlq_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.dlq(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Dead letters of a tenant from `start` to `end` (stream ids, `-`/`+` for the ends).
    pub(crate) async fn dlq_range(
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

/// What [`Broker::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Another consumer owns the entry now.
    Lost,
    /// The entry was deleted; its pending id is gone too.
    Tombstone,
    /// The entry's fields; it may run.
    Run(Fields),
}

fn id_counts(v: Option<Value>) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    if let Some(Value::Array(flat)) = v {
        let mut it = flat.into_iter();
        while let (Some(id), Some(n)) = (it.next(), it.next()) {
            let id: String = redis::from_redis_value(id).map_err(redis::RedisError::from)?;
            let n: u64 = redis::from_redis_value(n).map_err(redis::RedisError::from)?;
            out.push((id, n));
        }
    }
    Ok(out)
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries never delivered to the group (`>`).
    New,
}

/// A dedicated connection for one member's XREADGROUP calls.
pub struct LaneReader {
    conn: MultiplexedConnection,
    group: Arc<str>,
    consumer: String,
}

/// Whether an error means the group or stream is gone (deleted lane, new lane).
pub(crate) fn is_missing_group(e: &Error) -> bool {
    match e {
        Error::Redis(r) => matches!(r.code(), Some("NOGROUP" | "UNBLOCKED")),
        _ => false,
    }
}

impl LaneReader {
    /// Reads up to `count` entries from each of `lanes` (stream keys). With `block`, waits up to
    /// that long when none has anything. Returns `(lane key, entries)` pairs with entries.
    pub(crate) async fn read(
        &mut self,
        lanes: &[String],
        from: ReadFrom,
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
        };
        for _ in lanes {
            cmd.arg(id);
        }
        let v: Value = cmd.query_async(&mut self.conn).await?;
        reply::streams(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::from(redis::RedisError::from(std::io::Error::from(kind)))
    }

    #[test]
    fn a_lost_reply_may_have_run_a_refusal_did_not() {
        // No reply: the request may have run.
        assert!(may_have_run(&io(std::io::ErrorKind::TimedOut)));
        assert!(may_have_run(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(may_have_run(&io(std::io::ErrorKind::BrokenPipe)));
        // A reply redrive could not read: it ran.
        assert!(may_have_run(&Error::Protocol(
            "retry script answered 1 times".into()
        )));
        // Never sent, or refused by Redis: it did not.
        assert!(!may_have_run(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(!may_have_run(&Error::OutOfMemory("nothing written".into())));
        let oom = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "OOM",
            "command not allowed when used memory > 'maxmemory'".to_owned(),
        ));
        assert!(!may_have_run(&Error::from(oom)));
    }
}
