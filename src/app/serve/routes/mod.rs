//! The route handlers, one file per resource. Each reads its input through
//! [`super::extract`], resolves every tenant through the [`super::principal::Principal`], and
//! calls the same code the CLI does (reports, views, the admin command stream).
//!
//! * [`meta`] — who the token is, the OpenAPI document.
//! * [`archive`] — the dead-letter archive: a page, one archived dead letter, restore.
//! * [`tenants`] — the tenants report; [`health`] — health per tenant.
//! * [`dead_letters`] — list, stats, export, show; [`recovery`] — replay (and its dry run),
//!   resolve, discard, purge; [`review`] — assign, escalate, note, fold.
//! * [`breakers`] — list, show, open, close.
//! * [`commands`] — the audit trail, one command's status and progress, cancel.
//! * [`tasks`] — a task by id, a tenant's tasks.

pub mod archive;
pub mod breakers;
pub mod commands;
pub mod dead_letters;
pub mod health;
pub mod meta;
pub mod recovery;
pub mod review;
pub mod tasks;
pub mod tenants;

use std::time::Duration;

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::Params;
use crate::admin::select::Filter;
use crate::admin::time::{parse_duration, parse_time};

/// The longest window of settle counts a report covers.
const MAX_WINDOW: Duration = crate::app::report::MAX_WINDOW;

/// A dead-letter filter as a change's body gives it (the query parameters of the reads, as
/// lists).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    /// Only these tenants (default: every tenant the token may see).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only these failure classes.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Only these kinds.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only these error fingerprints.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// Dead-lettered at or after: a duration ago (2h), an RFC 3339 time, or epoch ms.
    #[serde(default)]
    pub since: Option<String>,
    /// Dead-lettered at or before, likewise.
    #[serde(default)]
    pub until: Option<String>,
    /// Payload criteria, `field=value` (a dotted path into objects; alternatives): the query's
    /// `payload`.
    #[serde(default)]
    pub payload_equals: Vec<String>,
}

impl FilterBody {
    /// The validated filter (not yet narrowed to a token's scope); relative times count back
    /// from `now_ms`.
    pub fn to_filter(&self, now_ms: u64) -> ApiResult<Filter> {
        let time = |name: &str, v: Option<&str>| -> ApiResult<Option<u64>> {
            v.map(|t| {
                parse_time(t, now_ms).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
        };
        let f = Filter {
            tenants: self.tenants.clone(),
            classes: self.classes.clone(),
            kinds: self.kinds.clone(),
            fingerprints: self.fingerprints.clone(),
            since_ms: time("since", self.since.as_deref())?,
            until_ms: time("until", self.until.as_deref())?,
            payload: self.payload_equals.clone(),
        };
        f.validate().map_err(|e| ApiError::bad_request(plain(&e)))?;
        Ok(f)
    }

    /// Whether it names anything at all.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.classes.is_empty()
            && self.kinds.is_empty()
            && self.fingerprints.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.payload_equals.is_empty()
    }
}

/// The dead-letter filter of a read's query: `tenant`, `class`, `kind`, `fingerprint`,
/// `payload` (repeatable: alternatives), `since`, `until`.
pub fn query_filter(q: &mut Params, now_ms: u64) -> ApiResult<Filter> {
    FilterBody {
        tenants: q.all("tenant"),
        classes: q.all("class"),
        kinds: q.all("kind"),
        fingerprints: q.all("fingerprint"),
        payload_equals: q.all("payload"),
        since: q.one("since")?,
        until: q.one("until")?,
    }
    .to_filter(now_ms)
}

/// A message written for the CLI (`--class 'x' is not …`, `--order-by-key must …`), with the
/// API's names (`class 'x' is not …`, `order_by_key must …`).
pub fn plain(message: &str) -> String {
    let mut m = message.to_owned();
    for (flag, name) in [
        ("--order-by-key", "order_by_key"),
        ("--target-kind", "target_kind"),
        ("--older-than", "older_than"),
        ("--task-id", "task_id"),
    ] {
        m = m.replace(flag, name);
    }
    m.replace("--", "")
}

/// The `window` query parameter (default `default`): between 1m and 24h.
pub fn window(q: &mut Params, default: &str) -> ApiResult<Duration> {
    let text = q.one("window")?.unwrap_or_else(|| default.to_owned());
    let d = parse_duration(&text).map_err(|e| ApiError::bad_request(format!("window: {e}")))?;
    if d < Duration::from_secs(60) || d > MAX_WINDOW {
        return Err(ApiError::bad_request(format!(
            "window = '{text}' must be between 1m and 24h"
        )));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_messages_get_the_api_names() {
        assert_eq!(
            plain("--order-by-key must name a payload field; --class 'x' is not a failure class"),
            "order_by_key must name a payload field; class 'x' is not a failure class"
        );
        let mut q = Params::parse("window=30s");
        assert!(window(&mut q, "1h")
            .unwrap_err()
            .message
            .contains("between 1m and 24h"));
        let mut q = Params::parse("class=nope&since=2h");
        let e = query_filter(&mut q, 10_000_000).unwrap_err();
        assert!(
            e.message.starts_with("class 'nope' is not a failure class"),
            "{}",
            e.message
        );
    }
}
