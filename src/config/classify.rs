//! `[classify]`: rules for errors a handler returns without a class.

use serde::{Deserialize, Serialize};

use crate::classify::{Classifier, Rule};
use crate::error::{Error, Result};

/// The `[classify]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassify {
    /// Rules for untyped errors: whole words (`contains`) or status codes (`status`).
    pub rules: Vec<Rule>,
}

/// Validates `[classify]`.
pub(crate) fn validate(raw: &RawClassify) -> Result<Classifier> {
    Classifier::new(&raw.rules).map_err(Error::Config)
}
