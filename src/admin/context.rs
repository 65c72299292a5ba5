//! What executing an admin command needs ([`AdminContext`]) and how an execution ends
//! ([`Executed`]), shared by the executor and the replay job it runs.

use serde_json::Value;

use crate::broker::Broker;
use crate::config::{AdminSettings, TasksSettings};
use crate::error::Result;
use crate::task::Limits;

/// Everything executing a command needs.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// Redis.
    pub broker: Broker,
    /// `[admin]` settings, migrations included.
    pub settings: AdminSettings,
    /// Task limits (a replayed payload must fit them).
    pub limits: Limits,
    /// The hard ceiling of each tenant's stream of removed dead letters (`dead_letter.hard_max_len`):
    /// past it the oldest are deleted without an archive, counted.
    pub dlq_ceiling: u64,
    /// Who executes: the member id, or `local@host` for `--local`.
    pub executor: String,
    /// `[archive]`: where archived dead letters are read from by a restore.
    pub archive: crate::archive::ArchiveSettings,
    /// `[tasks]`: whether the moves write task records, and their retention.
    pub tasks: TasksSettings,
}

/// How an execution ended.
#[derive(Debug)]
pub enum Executed {
    /// It finished (well or not): its message or error, and details.
    Finished(Result<String>, Value),
    /// The executor is shutting down mid-command: leave it pending so that a restart or
    /// another member resumes it.
    Interrupted,
}

impl Executed {
    /// A finished execution.
    pub fn finished(result: Result<String>, details: Value) -> Executed {
        Executed::Finished(result, details)
    }
}
