//! The Redis client's errors as the crate's [`Error`]: only `broker/` names the client.

use crate::error::{Error, RedisFailure};

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        let code = e.code().map(str::to_owned);
        // A refusal Redis answered and a connection that could not be opened are clean: nothing
        // ran. A lost or unreadable reply may hide a request that did run.
        let lost = match e.kind() {
            redis::ErrorKind::Io => !e.is_connection_refusal(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => true,
            _ => false,
        };
        let failure = RedisFailure::new(e.to_string(), code);
        Error::Redis(if lost { failure.reply_lost() } else { failure })
    }
}
