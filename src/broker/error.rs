//! The Redis client's errors as the crate's [`Error`]: only `broker/` names the client.

use crate::error::{Error, RedisFailure};

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        let code = e.code().map(str::to_owned);
        Error::Redis(RedisFailure::new(e.to_string(), code))
    }
}
