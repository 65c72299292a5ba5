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
    /// Cap of each tenant's dead-letter stream (also caps its archive of removed ones).
    pub dlq_max_len: u64,
    /// Who executes: the member id, or `local@host` for `--local`.
    pub executor: String,
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
