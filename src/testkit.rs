//! What the integration tests in tests/ need from the crate's internals. Hidden from the
//! documentation, compiled only with the `testkit` feature, and imported by nothing in src/.

pub use crate::admin::time::format_time;
pub use crate::broker::reply::{entries, streams};
pub use crate::broker::BreakerInfo;
pub use crate::broker::{
    BreakerTransition, ClaimStep, DeferItem, Deferred, Entry, RetryItem, Starts,
};
pub use crate::broker::{RawConnection, ServerFlavor, ServerInfo, ServerVersion};
pub use crate::deadletter::DeadLetter;
pub use crate::embedded::{find_redis_server, RedisServer, ServerTls};
pub use crate::failpoint::POINTS;
pub use crate::task::{now_ms, Limits};

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use crate::broker::Broker;
use crate::error::Result;

/// The broker verbs the tests read state with (and a few they seed it with). On the
/// production [`Broker`] they are crate-private; this trait lends them to tests/ under the
/// same names, so a test reads `broker.lane_len(t)` as before.
pub trait BrokerExt {
    /// Tenants in the registry, sorted.
    fn tenants(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Creates a tenant lane's consumer group (and the stream) when absent.
    fn ensure_group(&self, tenant: &str) -> impl Future<Output = Result<()>> + Send;
    /// Entries in a tenant's lane.
    fn lane_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Entries of a tenant's lane delivered to the group but not settled yet.
    fn pending_count(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Scheduled retries plus deferred tasks of a tenant.
    fn retry_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Dead letters of a tenant.
    fn dlq_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send;
    /// Dead letters of a tenant from `start` to `end`.
    fn dlq_range(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;
    /// The archive of removed dead letters of a tenant, from `start`.
    fn dlq_removed_range(
        &self,
        tenant: &str,
        start: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;
    /// What the server is, as probed when the broker connected.
    fn server_info(&self) -> ServerInfo;
    /// Time left on a member's lease.
    fn lease_remaining(
        &self,
        member_id: &str,
    ) -> impl Future<Output = Result<Option<Duration>>> + Send;
    /// Schedules the retry of one failed attempt (retry.lua for one entry).
    fn schedule_retry(
        &self,
        tenant: &str,
        consumer: &str,
        entry_id: &str,
        delay: Duration,
        fields: &[(&str, String)],
    ) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// Defers held-back entries (defer.lua).
    fn defer(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[DeferItem],
    ) -> impl Future<Output = Result<Vec<Deferred>>> + Send;
    /// A tenant's breaker.
    fn breaker_info(&self, tenant: &str) -> impl Future<Output = Result<BreakerInfo>> + Send;
    /// The latest transitions of a tenant's breaker, newest first.
    fn breaker_log(
        &self,
        tenant: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<BreakerTransition>>> + Send;
    /// A tenant's fleet-wide in-flight entries and the highest total ever reserved.
    fn in_flight(&self, tenant: &str) -> impl Future<Output = Result<(u64, u64)>> + Send;
    /// Appends an entry to the admin command stream.
    fn admin_submit(
        &self,
        fields: &[(&str, String)],
    ) -> impl Future<Output = Result<String>> + Send;
    /// Members whose admin loop beat within `ttl`.
    fn admin_live_members(&self, ttl: Duration)
        -> impl Future<Output = Result<Vec<String>>> + Send;
    /// A replay job's record.
    fn job_get(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>>> + Send;
    /// Records the start of fresh entries (start.lua).
    fn start(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<Starts>> + Send;
    /// Schedules the retries of a batch of one tenant's entries (retry.lua).
    fn schedule_retries(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[RetryItem],
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send;
    /// Owner-checked acks of a batch, the first `recovered` counted as recovered (ack.lua,
    /// records off, like every seeding verb here).
    fn ack(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
        recovered: usize,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Acks without the owner check (fast_ack.lua).
    fn ack_unclaimable(
        &self,
        tenant: &str,
        ids: &[&str],
        recovered: usize,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// The steps recorded in Redis for a lane entry, in the order they were written.
    fn recorded_steps(
        &self,
        tenant: &str,
        entry_id: &str,
    ) -> impl Future<Output = Result<Vec<crate::task::Step>>> + Send;
    /// How many steps hashes exist under the key prefix.
    fn steps_keys(&self) -> impl Future<Output = Result<u64>> + Send;
    /// One step of a member's drain of its own pending entries (claim.lua).
    fn claim_own(
        &self,
        tenant: &str,
        consumer: &str,
        start: &str,
        count: usize,
        max_starts: u64,
        skip: &[String],
    ) -> impl Future<Output = Result<ClaimStep>> + Send;
}

impl BrokerExt for Broker {
    fn tenants(&self) -> impl Future<Output = Result<Vec<String>>> + Send {
        Broker::tenants(self)
    }
    fn ensure_group(&self, tenant: &str) -> impl Future<Output = Result<()>> + Send {
        Broker::ensure_group(self, tenant)
    }
    fn lane_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send {
        Broker::lane_len(self, tenant)
    }
    fn pending_count(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send {
        Broker::pending_count(self, tenant)
    }
    fn retry_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send {
        Broker::retry_len(self, tenant)
    }
    fn dlq_len(&self, tenant: &str) -> impl Future<Output = Result<u64>> + Send {
        Broker::dlq_len(self, tenant)
    }
    fn dlq_range(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send {
        Broker::dlq_range(self, tenant, start, end, count)
    }
    fn dlq_removed_range(
        &self,
        tenant: &str,
        start: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send {
        Broker::dlq_removed_range(self, tenant, start, count)
    }
    fn server_info(&self) -> ServerInfo {
        self.server().clone()
    }
    fn lease_remaining(
        &self,
        member_id: &str,
    ) -> impl Future<Output = Result<Option<Duration>>> + Send {
        Broker::lease_remaining(self, member_id)
    }
    fn schedule_retry(
        &self,
        tenant: &str,
        consumer: &str,
        entry_id: &str,
        delay: Duration,
        fields: &[(&str, String)],
    ) -> impl Future<Output = Result<Option<u64>>> + Send {
        Broker::schedule_retry(self, tenant, consumer, entry_id, delay, fields)
    }
    fn defer(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[DeferItem],
    ) -> impl Future<Output = Result<Vec<Deferred>>> + Send {
        Broker::defer(self, tenant, consumer, items, false)
    }
    fn breaker_info(&self, tenant: &str) -> impl Future<Output = Result<BreakerInfo>> + Send {
        Broker::breaker_info(self, tenant)
    }
    fn breaker_log(
        &self,
        tenant: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<BreakerTransition>>> + Send {
        Broker::breaker_log(self, tenant, count)
    }
    fn in_flight(&self, tenant: &str) -> impl Future<Output = Result<(u64, u64)>> + Send {
        Broker::in_flight(self, tenant)
    }
    fn admin_submit(
        &self,
        fields: &[(&str, String)],
    ) -> impl Future<Output = Result<String>> + Send {
        Broker::admin_submit(self, fields)
    }
    fn admin_live_members(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        Broker::admin_live_members(self, ttl)
    }
    fn job_get(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>>> + Send {
        Broker::job_get(self, job)
    }
    async fn start(&self, tenant: &str, consumer: &str, ids: &[&str]) -> Result<Starts> {
        {
            let entries: Vec<crate::broker::StartEntry<'_>> = ids
                .iter()
                .map(|id| crate::broker::StartEntry {
                    id,
                    task_id: "",
                    attempt: 1,
                    kind: "",
                    recorded: false,
                })
                .collect();
            let records = crate::broker::StartRecords::default();
            Broker::start(self, tenant, consumer, &entries, records).await
        }
    }
    fn schedule_retries(
        &self,
        tenant: &str,
        consumer: &str,
        items: &[RetryItem],
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send {
        Broker::schedule_retries(self, tenant, consumer, items, false)
    }
    async fn ack(
        &self,
        tenant: &str,
        consumer: &str,
        ids: &[&str],
        recovered: usize,
    ) -> Result<u64> {
        {
            let entries: Vec<crate::broker::AckEntry<'_>> = ids
                .iter()
                .map(|id| crate::broker::AckEntry::bare(id))
                .collect();
            let a = Broker::ack(self, tenant, consumer, &entries, recovered, &[], false).await?;
            Ok(a.acked)
        }
    }
    async fn ack_unclaimable(&self, tenant: &str, ids: &[&str], recovered: usize) -> Result<u64> {
        {
            let entries: Vec<crate::broker::AckEntry<'_>> = ids
                .iter()
                .map(|id| crate::broker::AckEntry::bare(id))
                .collect();
            Broker::ack_unclaimable(self, tenant, "", &entries, recovered, &[], false).await
        }
    }
    fn recorded_steps(
        &self,
        tenant: &str,
        entry_id: &str,
    ) -> impl Future<Output = Result<Vec<crate::task::Step>>> + Send {
        Broker::recorded_steps(self, tenant, entry_id)
    }
    fn steps_keys(&self) -> impl Future<Output = Result<u64>> + Send {
        Broker::steps_keys(self)
    }
    fn claim_own(
        &self,
        tenant: &str,
        consumer: &str,
        start: &str,
        count: usize,
        max_starts: u64,
        skip: &[String],
    ) -> impl Future<Output = Result<ClaimStep>> + Send {
        Broker::claim_own(self, tenant, consumer, start, count, max_starts, skip)
    }
}

// ------------------------------------------------------------ the `http` agent handler

/// Builds the handler of a `type = "http"` `[[handlers]]` entry, as the registry does.
pub fn http_handler(
    spec: &crate::handler::HandlerSpec,
) -> Result<std::sync::Arc<dyn crate::handler::Handler>> {
    crate::agents::http::build(spec)
}

/// Whether a `Redrive-Signature` header signs `body` under one of `secrets` at unix second
/// `now` (PROTOCOL.md, "Signature").
pub fn verify_signature(secrets: &[String], header: &str, body: &[u8], now: u64) -> bool {
    crate::agents::protocol::verify_signature(secrets, header, body, now)
}

/// The task a lane entry's fields stand for (with the default limits), or why it is malformed.
pub fn task_from_fields(
    tenant: &str,
    entry_id: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> std::result::Result<crate::task::Task, String> {
    crate::task::Task::from_fields(tenant, entry_id, fields, &Limits::default())
        .map_err(|m| format!("{m:?}"))
}

/// The Prometheus recorder the fleet installs (explicit buckets), for tests that render it.
pub use crate::telemetry::install_prometheus;
/// Builds the `pool` handler of a `[[handlers]]` entry (tests/agent_pool.rs drives it directly).
pub fn build_pool_handler(
    spec: &crate::handler::HandlerSpec,
) -> Result<std::sync::Arc<dyn crate::handler::Handler>> {
    crate::agents::pool::build(spec)
}

/// Builds the `exec` handler of a `[[handlers]]` entry.
pub fn build_exec_handler(
    spec: &crate::handler::HandlerSpec,
) -> Result<std::sync::Arc<dyn crate::handler::Handler>> {
    crate::agents::exec::build(spec)
}

/// Installs the Prometheus recorder in this test process (once) and returns its handle, so a
/// test can render what the code under test emitted.
pub fn prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let h = crate::telemetry::install_prometheus(Duration::from_secs(3600))?;
    Ok(HANDLE.get_or_init(|| h).clone())
}

/// Redis Cluster's slot of `key` (CRC16/XMODEM of its hash tag, mod 16384), as the broker
/// computes it.
pub fn key_slot(key: &str) -> u16 {
    crate::broker::key_slot(key.as_bytes())
}
