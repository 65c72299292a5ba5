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
    Redis(#[from] redis::RedisError),
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
    /// Something named on the command line does not exist (an unregistered tenant).
    #[error("not found: {0}")]
    NotFound(String),
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
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
            Error::Redis(_) | Error::Embedded(_) => 69,
            Error::Protocol(_) => 76,
            Error::Io { .. } => 74,
            Error::Config(_) => 78,
            Error::MemberBusy(_) => 75,
            Error::NotFound(_) => 66,
        }
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
