//! The crate's error type and how each kind maps to a process exit code.

use std::fmt;

/// Everything that can go wrong in redrive, grouped by who has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing, malformed or contradicts another one.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A task submitted by a producer breaks the task contract (see CONTRACT.md).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// A command-line argument is malformed (beyond what clap checks).
    #[error("invalid argument: {0}")]
    Usage(String),
    /// Redis refused a command or could not be reached.
    #[error("redis: {0}")]
    Redis(RedisFailure),
    /// Redis refused a write because it is out of memory (`maxmemory` reached under the
    /// `noeviction` policy). The message says what was (not) written; it is one bounded line.
    #[error("redis is out of memory: {0}")]
    OutOfMemory(String),
    /// Reading or writing a local file, or starting a process, failed.
    #[error("{context}: {source}")]
    Io {
        /// What redrive was doing when the I/O failed.
        context: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Redis answered with something redrive does not understand.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The embedded redis-server could not be started.
    #[error("{0}")]
    Embedded(String),
    /// Another fleet member already runs under this member id.
    #[error("{0}")]
    MemberBusy(String),
    /// Something named on the command line does not exist (a dead letter, a command, a job).
    #[error("not found: {0}")]
    NotFound(String),
    /// An admin command needs a live fleet member and none is running.
    #[error("{0}")]
    FleetDown(String),
    /// Waiting for an admin command's reply timed out.
    #[error("{0}")]
    Timeout(String),
    /// A guardrail refused the command (for example a partial_execution replay without
    /// `--force`, a purge without `--yes`).
    #[error("refused: {0}")]
    Refused(String),
    /// A batch was cancelled or interrupted before it finished; it can be resumed.
    #[error("{0}")]
    Interrupted(String),
    /// A task waited for finished other than done (dead-lettered, expired, resolved,
    /// discarded): `redrive task wait` exits 1.
    #[error("{0}")]
    TaskFailed(String),
    /// The dead-letter archive (a directory or S3-compatible object storage) could not be read
    /// or written, or holds something unreadable.
    #[error("archive: {0}")]
    Archive(String),
    /// A fleet member reported a failure that maps to no other kind; carries its exit code.
    #[error("{message}")]
    Remote {
        /// The exit code the member's error maps to.
        code: i32,
        /// The member's error message.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// The process exit code for this error, following sysexits(3) where one fits.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 64,
            Error::InvalidTask(_) => 65,
            Error::Redis(_) | Error::Embedded(_) | Error::Archive(_) => 69,
            Error::OutOfMemory(_) => 73,
            Error::Protocol(_) => 76,
            Error::Io { .. } => 74,
            Error::Config(_) => 78,
            Error::MemberBusy(_) => 75,
            Error::NotFound(_) => 66,
            Error::FleetDown(_) => 68,
            Error::Timeout(_) | Error::Interrupted(_) => 75,
            Error::Refused(_) => 77,
            Error::TaskFailed(_) => 1,
            Error::Remote { code, .. } => *code,
        }
    }

    /// A stable name of the error's kind, carried in admin command results.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::InvalidTask(_) => "invalid_task",
            Error::Usage(_) => "usage",
            Error::Redis(_) => "redis",
            Error::OutOfMemory(_) => "redis_oom",
            Error::Io { .. } => "io",
            Error::Protocol(_) => "protocol",
            Error::Embedded(_) => "embedded",
            Error::MemberBusy(_) => "member_busy",
            Error::NotFound(_) => "not_found",
            Error::FleetDown(_) => "fleet_down",
            Error::Timeout(_) => "timeout",
            Error::Refused(_) => "refused",
            Error::Interrupted(_) => "interrupted",
            Error::TaskFailed(_) => "task_failed",
            Error::Archive(_) => "archive",
            Error::Remote { .. } => "remote",
        }
    }

    /// The message without the kind's prefix, for carrying an error in a command result.
    pub fn message(&self) -> String {
        match self {
            Error::Config(m)
            | Error::InvalidTask(m)
            | Error::Usage(m)
            | Error::Protocol(m)
            | Error::Embedded(m)
            | Error::MemberBusy(m)
            | Error::NotFound(m)
            | Error::TaskFailed(m)
            | Error::FleetDown(m)
            | Error::Timeout(m)
            | Error::Refused(m)
            | Error::Interrupted(m)
            | Error::OutOfMemory(m)
            | Error::Archive(m) => m.clone(),
            Error::Remote { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Rebuilds an error reported by a fleet member from its kind, message and exit code.
    pub(crate) fn from_remote(kind: &str, message: String, code: i32) -> Error {
        match kind {
            "config" => Error::Config(message),
            "invalid_task" => Error::InvalidTask(message),
            "usage" => Error::Usage(message),
            "protocol" => Error::Protocol(message),
            "not_found" => Error::NotFound(message),
            "fleet_down" => Error::FleetDown(message),
            "timeout" => Error::Timeout(message),
            "refused" => Error::Refused(message),
            "interrupted" => Error::Interrupted(message),
            "redis_oom" => Error::OutOfMemory(message),
            "archive" => Error::Archive(message),
            _ => Error::Remote { code, message },
        }
    }
}

/// A failure reported by the Redis client: its text and, when the server refused a command,
/// the server's error code (`NOGROUP`, `OOM`, …). Opaque, so that the library's users do not
/// depend on the Redis client's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFailure {
    text: String,
    code: Option<String>,
    /// Whether the request may have run in Redis although it failed (its reply was lost).
    may_have_run: bool,
}

impl RedisFailure {
    /// A failure with this text and server error code.
    pub(crate) fn new(text: String, code: Option<String>) -> RedisFailure {
        RedisFailure {
            text,
            code,
            may_have_run: false,
        }
    }

    /// The same failure, marked as one whose request may have run in Redis (a lost reply).
    pub(crate) fn reply_lost(mut self) -> RedisFailure {
        self.may_have_run = true;
        self
    }

    /// Whether the request may have run in Redis although it failed: its reply was lost (a
    /// response timeout, a connection reset while it may have been sent) or could not be read.
    pub(crate) fn may_have_run(&self) -> bool {
        self.may_have_run
    }

    /// The server's error code, when the server refused a command.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for RedisFailure {}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_round_trip_with_their_exit_code() {
        for e in [
            Error::NotFound("dead letter acme/1-0".into()),
            Error::Refused("needs --force".into()),
            Error::Usage("bad".into()),
            Error::Interrupted("cancelled".into()),
            Error::OutOfMemory("nothing was written".into()),
            Error::Archive("s3://b: connection refused".into()),
            Error::Remote {
                code: 69,
                message: "redis: gone".into(),
            },
        ] {
            let back = Error::from_remote(e.kind(), e.message(), e.exit_code());
            assert_eq!(back.exit_code(), e.exit_code(), "{e}");
            assert_eq!(back.to_string(), e.to_string());
        }
    }
}
