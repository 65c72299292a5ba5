//! [`Outcome`]: what one attempt came to, and so what the fleet does next.

use std::time::Duration;

use super::class::FailureClass;

/// What one attempt of a task came to, and so what the fleet does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task is finished: ack it.
    Done,
    /// The attempt failed; `class` and `reason` explain why. Transient classes are retried
    /// under the retry policy; the others go to the dead letters.
    Fail {
        /// What kind of failure this was.
        class: FailureClass,
        /// A human-readable explanation.
        reason: String,
        /// A delay the upstream asked for (a 429's Retry-After); it wins over the policy's.
        retry_after: Option<Duration>,
    },
    /// The task must never be attempted again: dead-letter it now.
    Poison {
        /// Why.
        reason: String,
    },
    /// The attempt failed with an error that carries no class; the fleet classifies its text
    /// with the configured rules (`[classify]`).
    Error {
        /// The error message.
        message: String,
    },
}

impl Outcome {
    /// A failure of the given class.
    pub fn fail(class: FailureClass, reason: impl Into<String>) -> Outcome {
        Outcome::Fail {
            class,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A transient failure whose upstream asked to wait `after` before retrying.
    pub fn retry_after(class: FailureClass, reason: impl Into<String>, after: Duration) -> Outcome {
        Outcome::Fail {
            class,
            reason: reason.into(),
            retry_after: Some(after),
        }
    }
}
