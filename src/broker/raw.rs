//! The raw ceiling for `redrive bench`: the least a consumer of this Redis can do per entry,
//! measured in the same run as the fleet so every fleet figure has a reference. Pipelined XADD
//! of task-shaped entries, then one consumer doing XREADGROUP COUNT 500 and one XACK per batch.

use std::time::{Duration, Instant};

use redis::Value;

use crate::error::{Error, Result};

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
pub async fn raw_ceiling(url: &str, key: &str, n: usize, payload: &str) -> Result<RawCeiling> {
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

/// The entry ids of an XREADGROUP reply over one stream (RESP2: [[key, [[id, fields]…]]]).
fn entry_ids(v: Value) -> Result<Vec<Vec<u8>>> {
    let bad = || Error::Protocol("raw loop: unexpected XREADGROUP reply".into());
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        _ => return Err(bad()),
    };
    let mut ids = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else {
            return Err(bad());
        };
        let Some(Value::Array(entries)) = pair.pop() else {
            return Err(bad());
        };
        for e in entries {
            let Value::Array(mut idf) = e else {
                return Err(bad());
            };
            if idf.is_empty() {
                return Err(bad());
            }
            match idf.swap_remove(0) {
                Value::BulkString(id) => ids.push(id),
                _ => return Err(bad()),
            }
        }
    }
    Ok(ids)
}
