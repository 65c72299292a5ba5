//! Verbs only `redrive bench` uses (compiled with the `app` feature only): dropping what a
//! run created, the server's version, and the raw ceiling of the same Redis (the least a
//! consumer can do per entry, measured in the same run as the fleet so every fleet figure has
//! a reference: pipelined XADD of task-shaped entries, then one consumer doing XREADGROUP
//! COUNT 500 and one XACK per batch).

use std::time::{Duration, Instant};

use redis::Value;

use super::connect::Broker;
use super::reply::entry_ids;
use super::scripts::scripts;
use crate::error::{Error, Result};
use crate::records::TasksSettings;
use crate::task::Task;

impl Broker {
    /// The raw ceiling of a single awaited enqueue, on the shared connection the producer
    /// uses: each of `tasks` (validated) as one `EVALSHA` of enqueue.lua — the producer's own
    /// invocation, built before the clock starts — awaited before the next is sent; then as
    /// many `PING`s, one at a time. Returns how long each loop took.
    pub(crate) async fn raw_single_enqueue(
        &self,
        tasks: &[Task],
        records: &TasksSettings,
    ) -> Result<(Duration, Duration)> {
        let mut con = self.con();
        let _: Vec<Value> = redis::pipe()
            .load_script(&scripts().enqueue)
            .query_async(&mut con)
            .await?;
        let calls: Vec<redis::Pipeline> = tasks
            .iter()
            .map(|t| {
                let mut p = redis::pipe();
                p.invoke_script(&self.enqueue_invocation(t, records));
                p
            })
            .collect();
        let started = Instant::now();
        for call in &calls {
            let _: Vec<Value> = call.query_async(&mut con).await?;
        }
        let evalsha = started.elapsed();
        let ping = redis::cmd("PING");
        let started = Instant::now();
        for _ in tasks {
            let _: Value = ping.query_async(&mut con).await?;
        }
        Ok((evalsha, started.elapsed()))
    }

    /// Deletes every key of `tenant` (task records and their index and events, lane, retry
    /// schedule, deferred set, dead letters, trim counter, breaker, in-flight reservations) and
    /// removes it from the registry. For benchmarks that clean up
    /// after themselves; there is no way back.
    pub(crate) async fn drop_tenant(&self, tenant: &str) -> Result<()> {
        // The task records, found through their index, a page at a time.
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.tasks(tenant))
                .arg(0)
                .arg(999)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            pipe.cmd("UNLINK")
                .arg(
                    ids.iter()
                        .map(|id| self.keys.task(tenant, id))
                        .collect::<Vec<_>>(),
                )
                .ignore();
            pipe.cmd("ZREM")
                .arg(self.keys.tasks(tenant))
                .arg(&ids)
                .ignore();
            let () = pipe.query_async(&mut self.con()).await?;
        }
        let _: Value = redis::cmd("DEL")
            .arg(self.keys.lane(tenant))
            .arg(self.keys.retry(tenant))
            .arg(self.keys.deferred(tenant))
            .arg(self.keys.dlq(tenant))
            .arg(self.keys.dlq_trimmed(tenant))
            .arg(self.keys.dlq_dropped(tenant))
            .arg(self.keys.dlq_removed(tenant))
            .arg(self.keys.dlq_restored(tenant))
            .arg(self.keys.archive_lease(tenant))
            .arg(self.keys.archive_batch(tenant))
            .arg(self.keys.dlq_counts(tenant))
            .arg(self.keys.breaker(tenant))
            .arg(self.keys.breaker_window(tenant))
            .arg(self.keys.breaker_log(tenant))
            .arg(self.keys.slots(tenant))
            .arg(self.keys.tasks(tenant))
            .arg(self.keys.tasks_sweep(tenant))
            .arg(self.keys.tasks_sweep_lane(tenant))
            .arg(self.keys.tasks_sweep_pace(tenant))
            .arg(self.keys.events(tenant))
            .arg(self.recent_done_logs(tenant))
            .query_async(&mut self.con())
            .await?;
        let _: Value = redis::cmd("SREM")
            .arg(self.keys.tenants())
            .arg(tenant)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The names of `tenant`'s done logs of the last hour (one per 100-s window of entry ids,
    /// lib/record.lua): a benchmark's tenant lives less than that, and finding them this way
    /// needs no SCAN (which a cluster would answer per node).
    fn recent_done_logs(&self, tenant: &str) -> Vec<String> {
        let now = crate::task::now_ms() / 100_000;
        let prefix = self.keys.done_prefix(tenant);
        (now.saturating_sub(37)..=now + 1)
            .map(|w| format!("{prefix}{w}"))
            .collect()
    }

    /// `MEMORY USAGE` of every task record of `tenant` (found through the index), of the
    /// index and of the events stream.
    pub(crate) async fn record_memory(&self, tenant: &str) -> Result<RecordMemory> {
        let index = self.keys.tasks(tenant);
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        let mut out = RecordMemory::default();
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(self.keys.task(tenant, id))
                    .arg("SAMPLES")
                    .arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(&mut self.con()).await?;
            for size in sizes.into_iter().flatten() {
                out.records += 1;
                out.record_bytes += size;
            }
        }
        let usage = |key: String| {
            let mut con = self.con();
            async move {
                let v: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0)
                    .query_async(&mut con)
                    .await?;
                Ok::<u64, Error>(v.unwrap_or(0))
            }
        };
        out.index_entries = ids.len() as u64;
        out.index_bytes = usage(index).await?;
        out.events_bytes = usage(self.keys.events(tenant)).await?;
        out.events = redis::cmd("XLEN")
            .arg(self.keys.events(tenant))
            .query_async(&mut self.con())
            .await?;
        for key in self.recent_done_logs(tenant) {
            let bytes = usage(key).await?;
            if bytes > 0 {
                out.done_logs += 1;
                out.done_log_bytes += bytes;
            }
        }
        Ok(out)
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

    /// What Redis has done so far: commands processed (`INFO stats`; a script's own commands
    /// count too) and the CPU time of its main thread, µs (`INFO cpu`), so the bench can say
    /// what one request costs Redis. Each call adds two commands of its own.
    pub(crate) async fn server_work(&self) -> Result<ServerWork> {
        let (stats, cpu): (String, String) = redis::pipe()
            .cmd("INFO")
            .arg("stats")
            .cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.con())
            .await?;
        let field = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let seconds =
            field(&cpu, "used_cpu_user_main_thread:") + field(&cpu, "used_cpu_sys_main_thread:");
        Ok(ServerWork {
            commands: field(&stats, "total_commands_processed:") as u64,
            usec: (seconds * 1e6) as u64,
        })
    }

    /// `cmd` sent to every master (on a single Redis: to the server), their replies.
    async fn on_every_master(&self, cmd: redis::Cmd) -> Result<Vec<Value>> {
        let shards = self.shards().await?;
        if shards.is_empty() {
            return Ok(vec![cmd.query_async(&mut self.con()).await?]);
        }
        let mut out = Vec::with_capacity(shards.len());
        for shard in &shards {
            out.push(self.on_shard(shard, cmd.clone()).await?);
        }
        Ok(out)
    }

    /// Resets the statistics (`CONFIG RESETSTAT`: command counts among them) of the server, or
    /// of every master of a cluster.
    pub(crate) async fn reset_server_stats(&self) -> Result<()> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("RESETSTAT");
        self.on_every_master(cmd).await?;
        Ok(())
    }

    /// Calls per command since the last reset (`INFO commandstats`; commands run by scripts
    /// included), summed over every master of a cluster, most called first. Subcommands are
    /// named `config|resetstat`.
    pub(crate) async fn command_calls(&self) -> Result<Vec<(String, u64)>> {
        let mut calls: Vec<(String, u64)> = self
            .command_stats()
            .await?
            .into_iter()
            .map(|(name, (calls, _))| (name, calls))
            .collect();
        calls.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(calls)
    }

    /// Calls and µs of Redis time per command since the last reset (`INFO commandstats`; a
    /// script's time includes its commands', which are counted under their own names too),
    /// summed over every master of a cluster.
    pub(crate) async fn command_stats(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("commandstats");
        let mut stats: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for v in self.on_every_master(cmd).await? {
            let text = super::connect::info_text(v);
            for l in text.lines() {
                let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
                else {
                    continue;
                };
                let field = |key: &str| -> Option<u64> {
                    rest.split(',')
                        .find_map(|kv| kv.trim().strip_prefix(key))
                        .and_then(|n| n.parse().ok())
                };
                if let (Some(calls), Some(usec)) = (field("calls="), field("usec=")) {
                    let e = stats.entry(name.to_owned()).or_default();
                    e.0 += calls;
                    e.1 += usec;
                }
            }
        }
        Ok(stats)
    }

    /// Socket reads each master has processed since the last reset (`INFO stats`
    /// `total_reads_processed`: one per batch of commands a client sent, so about one per
    /// round trip), one figure per master (one on a single Redis).
    pub(crate) async fn socket_reads(&self) -> Result<Vec<u64>> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("stats");
        Ok(self
            .on_every_master(cmd)
            .await?
            .into_iter()
            .map(|v| {
                super::connect::info_text(v)
                    .lines()
                    .find_map(|l| l.strip_prefix("total_reads_processed:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect())
    }

    /// One round trip of the least a dead-letter page needs: `XREVRANGE … COUNT count` of one
    /// tenant's dead letters (the raw ceiling of the API's page reads).
    pub(crate) async fn raw_dlq_page(&self, tenant: &str, count: usize) -> Result<usize> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(self.keys.dlq(tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        Ok(super::reply::entries(v)?.len())
    }

    /// One pipelined round trip of `XLEN` over every tenant's dead letters (the raw ceiling of
    /// a per-tenant overview).
    pub(crate) async fn raw_dlq_lens(&self, tenants: &[String]) -> Result<u64> {
        let mut pipe = redis::pipe();
        for t in tenants {
            pipe.cmd("XLEN").arg(self.keys.dlq(t));
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.con()).await?;
        Ok(lens.iter().sum())
    }
}

/// Counters of what a Redis server has done ([`Broker::server_work`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerWork {
    /// Commands processed (`total_commands_processed`).
    pub commands: u64,
    /// CPU time of the server's main thread, µs.
    pub usec: u64,
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
    broker: &Broker,
    key: &str,
    n: usize,
    payload: &str,
) -> Result<RawCeiling> {
    // A connection of its own from the broker's client (so with its TLS and credentials).
    // (On a cluster, a cluster connection of its own: the key's node.)
    let mut con = broker.dedicated(Duration::ZERO).await?;
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

/// Redis memory of one tenant's task records (the bench's `records` scenario).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordMemory {
    /// Records measured.
    pub records: u64,
    /// Their bytes, summed.
    pub record_bytes: u64,
    /// Members of the index.
    pub index_entries: u64,
    /// Bytes of the index.
    pub index_bytes: u64,
    /// Entries of the events stream.
    pub events: u64,
    /// Bytes of the events stream.
    pub events_bytes: u64,
    /// Done logs (one per second of entry ids with a task done without a record write).
    pub done_logs: u64,
    /// Bytes of the done logs, summed.
    pub done_log_bytes: u64,
}

impl RecordMemory {
    /// Mean bytes of one record.
    pub fn per_record(&self) -> f64 {
        self.record_bytes as f64 / self.records.max(1) as f64
    }

    /// Bytes of the index per member.
    pub fn per_index_entry(&self) -> f64 {
        self.index_bytes as f64 / self.index_entries.max(1) as f64
    }

    /// Bytes of the events stream per entry.
    pub fn per_event(&self) -> f64 {
        self.events_bytes as f64 / self.events.max(1) as f64
    }

    /// Bytes of the done logs per record.
    pub fn per_record_in_logs(&self) -> f64 {
        self.done_log_bytes as f64 / self.records.max(1) as f64
    }
}
