//! Flags shared by several subcommands: the dead-letter filter and the flags of every command
//! that changes something, validated into the values they stand for.

use std::time::Duration;

use clap::Args;

use super::common::usage;
use crate::admin::select::Filter;
use crate::admin::time::{parse_duration, parse_time};
use crate::admin::{new_command_id, validate_command_id, validate_operator, validate_reason};
use crate::app::report;
use crate::config::Settings;
use crate::error::{Error, Result};

/// Filters shared by list, stats, export, replay, resolve and discard. Values of one flag are
/// alternatives; different flags must all match.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this tenant (repeatable; default: every tenant).
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
    /// Only this failure class (repeatable), e.g. schema_mismatch.
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<String>,
    /// Only this task kind (repeatable).
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Only this error fingerprint (repeatable), as `dlq stats` prints it.
    #[arg(long = "fingerprint", value_name = "FP")]
    pub fingerprints: Vec<String>,
    /// Dead-lettered at or after: a duration ago (2h, 7d), an RFC 3339 time, or epoch ms.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Dead-lettered at or before: a duration ago, an RFC 3339 time, or epoch ms.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only dead letters whose payload has this value: FIELD is a top-level field or a dotted
    /// path (`customer.id`); a string is compared as text, a number by its value, another
    /// JSON value as its JSON text, e.g. `--payload customer_id=42` (repeatable: any of them).
    #[arg(long = "payload", value_name = "FIELD=VALUE")]
    pub payload: Vec<String>,
}

impl FilterArgs {
    /// The validated filter; relative times count back from `now_ms` (the server's clock).
    pub fn to_filter(&self, now_ms: u64) -> Result<Filter> {
        let time = |flag: &str, v: &Option<String>| -> Result<Option<u64>> {
            v.as_deref()
                .map(|t| parse_time(t, now_ms).map_err(|e| Error::Usage(format!("{flag}: {e}"))))
                .transpose()
        };
        let f = Filter {
            tenants: self.tenants.clone(),
            classes: self.classes.clone(),
            kinds: self.kinds.clone(),
            fingerprints: self.fingerprints.clone(),
            since_ms: time("--since", &self.since)?,
            until_ms: time("--until", &self.until)?,
            payload: self.payload.clone(),
        };
        f.validate().map_err(Error::Usage)?;
        Ok(f)
    }
}

/// Flags of every command that changes something.
#[derive(Debug, Args, Clone, Default)]
pub struct MutationArgs {
    /// Why you do this; kept in the audit trail (required).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who you are, for the audit trail (default: $USER@host).
    #[arg(long, env = "REDRIVE_OPERATOR")]
    pub operator: Option<String>,
    /// Send under this command id. Re-sending an id that ran already prints its first result
    /// and executes nothing again.
    #[arg(long, value_name = "ID")]
    pub command_id: Option<String>,
    /// Execute in this process instead of on a fleet member (same records and audit).
    #[arg(long)]
    pub local: bool,
    /// How long to wait for a member to pick the command up, or for a sign of life from it
    /// (default: admin.reply_timeout_ms), e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The values every mutating command needs, validated.
pub struct Mutation {
    /// Who asks.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// The command id.
    pub command_id: String,
    /// How long to wait for the result.
    pub timeout: Duration,
}

pub fn mutation(
    m: &MutationArgs,
    settings: &Settings,
    default_reason: Option<&str>,
) -> Result<Mutation> {
    let reason = m
        .reason
        .clone()
        .or_else(|| default_reason.map(str::to_owned))
        .ok_or_else(|| usage("--reason is required: say why, it goes into the audit trail"))?;
    validate_reason(&reason).map_err(usage)?;
    let operator = m
        .operator
        .clone()
        .unwrap_or_else(crate::admin::default_operator);
    validate_operator(&operator).map_err(usage)?;
    let command_id = match &m.command_id {
        Some(id) => {
            validate_command_id(id).map_err(usage)?;
            id.clone()
        }
        None => new_command_id(),
    };
    let timeout = match &m.timeout {
        Some(t) => {
            let d = parse_duration(t).map_err(|e| usage(format!("--timeout: {e}")))?;
            if d < Duration::from_millis(100) {
                return Err(usage("--timeout must be at least 100ms"));
            }
            d
        }
        None => settings.admin.reply_timeout,
    };
    Ok(Mutation {
        operator,
        reason,
        command_id,
        timeout,
    })
}

/// The `--window` flag: between 1m and 24h.
pub fn window(text: &str) -> Result<Duration> {
    let d = parse_duration(text).map_err(|e| usage(format!("--window: {e}")))?;
    if d.is_zero() || d > report::MAX_WINDOW {
        return Err(usage("--window must be between 1m and 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_text_is_checked() {
        assert!(crate::admin::validate_reason("incident 42").is_ok());
        for (bad, want) in [
            ("", "must say why"),
            ("a\nb", "control characters"),
            (&"x".repeat(1025), "at most 1024 bytes"),
        ] {
            let e = crate::admin::validate_reason(bad).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
