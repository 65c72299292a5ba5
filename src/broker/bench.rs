//! Verbs only `redrive bench` uses (compiled with the `app` feature only): dropping what a
//! run created, the server's version, and the raw ceiling of the same Redis (the least a
//! consumer can do per entry, measured in the same run as the fleet so every fleet figure has
//! a reference: pipelined XADD of task-shaped entries, then one consumer doing XREADGROUP
//! COUNT 500 and one XACK per batch).

use std::time::{Duration, Instant};

use redis::Value;

use super::connect::Broker;
use super::reply::entry_ids;
use crate::error::{Error, Result};

impl Broker {
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
}

/// What the raw loop achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawCeiling {
    /// Entries appended per second (pipelines of 1,000 XADDs).
    pub enqueue_per_s: f64,
    /// Entries read and acked per second (XREADGROUP COUNT 500 + one XACK per batch).
    pub consume_per_s: f64,
    /// Time the consume loop took.
    pub consume_time: Duration,
}

/// Runs the raw loop on stream `key` (created here, deleted afterwards) with `n` entries whose
/// payload is `payload`.
pub(crate) async fn raw_ceiling(
    url: &str,
    key: &str,
    n: usize,
    payload: &str,
) -> Result<RawCeiling> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let _: Value = redis::cmd("DEL").arg(key).query_async(&mut con).await?;

    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let chunk = (n - sent).min(1000);
        let mut pipe = redis::pipe();
        for i in sent..sent + chunk {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("task_id")
                .arg(format!("raw-{i}"))
                .arg("tenant")
                .arg("raw")
                .arg("kind")
                .arg("bench")
                .arg("payload")
                .arg(payload)
                .arg("attempt")
                .arg(1)
                .arg("enqueued_at")
                .arg(0)
                .ignore();
        }
        let _: Value = pipe.query_async(&mut con).await?;
        sent += chunk;
    }
    let enqueue_time = started.elapsed();

    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("raw")
        .arg("0")
        .query_async(&mut con)
        .await?;
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c1")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut con)
            .await?;
        let ids = entry_ids(v)?;
        if ids.is_empty() {
            return Err(Error::Protocol(format!(
                "raw loop: the stream ran dry after {got} of {n} entries"
            )));
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(key).arg("raw");
        for id in &ids {
            ack.arg(id.as_slice());
        }
        let _: Value = ack.query_async(&mut con).await?;
        got += ids.len();
    }
    let consume_time = started.elapsed();
    let _: Value = redis::cmd("DEL").arg(key).query_async(&mut con).await?;
    Ok(RawCeiling {
        enqueue_per_s: n as f64 / enqueue_time.as_secs_f64().max(1e-9),
        consume_per_s: n as f64 / consume_time.as_secs_f64().max(1e-9),
        consume_time,
    })
}
