//! The one module that talks to Redis. Its methods speak the domain (enqueue, read, ack,
//! dead-letter, lease) and hide command names, connection types and scripts from the rest.
//!
//! One file per kind of data the broker owns; each adds its verbs to [`Broker`] (defined in
//! `connect.rs`). All Lua scripts are in one registry (`scripts.rs`) and every reply is parsed
//! by the one set of parsers in `reply.rs`. This file only declares and re-exports.
//!
//! Connections: one shared connection carries every non-blocking command (`conn.rs`: an
//! auto-reconnecting connection manager on one Redis, the cluster client's connection on a
//! Redis Cluster, whose shape `topology.rs` reads); each [`LaneReader`] owns a dedicated connection for its blocking XREADGROUP, with a
//! response timeout longer than the block time (the redis crate's default of 500 ms would fail
//! a long BLOCK client-side while the server still delivers, stranding entries).

// Plumbing shared by the verbs.
mod client;
mod cluster_slots;
mod conn;
mod connect;
mod error;
pub(crate) mod reply;
mod scripts;
mod server;
mod topology;

// The verbs, by the data they own.
mod archive;
mod breakers;
mod claims;
#[cfg(test)]
mod cluster_scripts;
mod commands;
mod dead_letters;
mod jobs;
mod lanes;
mod lease;
mod notify;
mod notify_plan;
mod records;
mod replicas;
mod retries;
mod review;
mod running;
mod sessions;
mod settle;
mod slots;
mod stats;
mod steps;
mod stream_read;

// Verbs only `redrive bench` uses.
#[cfg(feature = "app")]
mod bench;

pub use archive::{
    ArchiveRemoval, ArchiveSource, ArchivedItem, BatchBegin, PendingBatch, RestoreItem,
    RestoreOutcome,
};
#[cfg(feature = "app")]
pub(crate) use bench::{raw_ceiling, RawCeiling, ServerWork};
pub use breakers::{BreakerInfo, BreakerTransition, ProbeVerdict};
pub use claims::{ClaimStep, ReclaimScan};
pub use client::{
    check_url, redact_url, seed_urls, PasswordSource, RedisPassword, RedisSettings, RedisTls,
    WaitReplicas,
};
pub(crate) use client::{open_client, open_cluster_client};
pub use commands::{BeginCommand, FinishMode, Withdraw};
#[cfg(feature = "testkit")]
pub(crate) use conn::key_slot;
#[cfg(feature = "testkit")]
pub use conn::RawConnection;
pub use connect::Broker;
pub use dead_letters::{
    CountsStep, DlqCounts, DlqGroup, FingerprintTally, PageScan, RecordTarget, Removal, ReplayItem,
    ScanStep,
};
pub(crate) use error::{is_missing_group, is_oom, may_have_run};
pub(crate) use lanes::{Landed, Signal, TenantSignals};
pub use lanes::{LaneReader, ReadFrom, TenantDepth};
pub use notify::{Attempt, Delivery, OutboxEvent};
pub use notify_plan::{NotifyPlan, Wants};
pub use records::{
    IndexedTask, Located, Place, RecordRead, Searched, SweepStep, TaskCursor, TaskFilter,
};
pub use reply::{Entry, Fields};
pub use review::{FoldOutcome, ReviewMove, ReviewOutcome, Unowned};
pub use running::{Beat, Begin, StartEntry, StartRecords, Starts};
#[cfg_attr(not(feature = "testkit"), allow(unused_imports))]
pub use server::{ServerFlavor, ServerInfo, ServerVersion};
pub use settle::{AckEntry, DeferItem, Deferred, RetryItem};
pub use stats::STATS_KEEP;
pub use steps::{StepWrite, StepsRecorded};
