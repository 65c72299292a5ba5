//! `[tasks]`: task records (src/records.rs) — whether they are kept, how long a finished one
//! lives, how much of a result it holds, and duplicate refusal; per tenant and kind overrides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::error::{Error, Result};
use crate::records::TaskOverride;
pub use crate::records::TasksSettings;
use crate::task::validate_tenant;

/// The largest `tasks.max_output_bytes` accepted (a record is one Redis hash value).
pub const MAX_OUTPUT_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// The `[tasks]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTasks {
    /// Whether task records are written at all (producers and members must agree).
    pub enabled: bool,
    /// How long a finished record is kept, ms.
    pub retention_ms: u64,
    /// The most bytes of a handler's output a record keeps.
    pub max_output_bytes: usize,
    /// Whether a task_id with a live record is refused as a duplicate.
    pub dedup: bool,
    /// Per tenant and/or kind exceptions, first match wins.
    #[serde(default)]
    pub overrides: Vec<RawTaskOverride>,
}

/// One `[[tasks.overrides]]` entry as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTaskOverride {
    /// The tenant it applies to (exact); absent: every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The kinds it applies to (exact or a `*`/`?` glob); absent: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The retention of finished records, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Whether the handler's output is kept in the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_output: Option<bool>,
    /// Whether duplicates are refused (a tenant-wide setting: only valid without `kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<bool>,
}

/// Validates `[tasks]`.
pub(crate) fn validate(raw: &RawTasks) -> Result<TasksSettings> {
    const DAY: u64 = 86_400_000;
    check_range("tasks.retention_ms", raw.retention_ms, 1_000, 365 * DAY)?;
    check_range(
        "tasks.max_output_bytes",
        raw.max_output_bytes,
        0,
        MAX_OUTPUT_BYTES_LIMIT,
    )?;
    let mut overrides = Vec::with_capacity(raw.overrides.len());
    for (i, o) in raw.overrides.iter().enumerate() {
        let at = format!("tasks.overrides[{i}]");
        if let Some(t) = &o.tenant {
            validate_tenant(t).map_err(|e| Error::Config(format!("{at}.tenant: {e}")))?;
        }
        if let Some(k) = &o.kind {
            let ok = !k.is_empty()
                && k.len() <= 128
                && k.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '_' | '-' | '.' | ':' | '/' | '*' | '?')
                });
            if !ok {
                return Err(Error::Config(format!(
                    "{at}.kind = '{k}' is invalid: use a kind or a glob of one (letters, digits, \
                     '_', '-', '.', ':', '/', '*', '?'; at most 128)"
                )));
            }
        }
        if o.tenant.is_none() && o.kind.is_none() {
            return Err(Error::Config(format!(
                "{at} names neither a tenant nor a kind: set the [tasks] defaults instead"
            )));
        }
        if o.dedup.is_some() && o.kind.is_some() {
            return Err(Error::Config(format!(
                "{at}.dedup is per tenant: an override with `kind` cannot set it (a task_id is \
                 unique within its tenant, whatever its kind)"
            )));
        }
        if let Some(ms) = o.retention_ms {
            check_range(&format!("{at}.retention_ms"), ms, 1_000, 365 * DAY)?;
        }
        if o.retention_ms.is_none() && o.store_output.is_none() && o.dedup.is_none() {
            return Err(Error::Config(format!(
                "{at} changes nothing: set retention_ms, store_output or dedup"
            )));
        }
        overrides.push(TaskOverride {
            tenant: o.tenant.clone(),
            kind: o.kind.clone(),
            retention: o.retention_ms.map(Duration::from_millis),
            store_output: o.store_output,
            dedup: o.dedup,
        });
    }
    Ok(TasksSettings {
        enabled: raw.enabled,
        retention: Duration::from_millis(raw.retention_ms),
        max_output_bytes: raw.max_output_bytes,
        dedup: raw.dedup,
        overrides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawTasks {
        RawTasks {
            enabled: true,
            retention_ms: 86_400_000,
            max_output_bytes: 65_536,
            dedup: true,
            overrides: Vec::new(),
        }
    }

    #[test]
    fn overrides_apply_first_match_by_tenant_and_kind() {
        let mut r = raw();
        r.overrides = vec![
            RawTaskOverride {
                tenant: Some("acme".into()),
                kind: Some("report.*".into()),
                retention_ms: Some(7_200_000),
                store_output: Some(false),
                dedup: None,
            },
            RawTaskOverride {
                tenant: Some("acme".into()),
                retention_ms: Some(3_600_000),
                dedup: Some(false),
                ..Default::default()
            },
        ];
        let s = validate(&r).unwrap();
        assert_eq!(
            s.retention_for("acme", "report.daily"),
            Duration::from_secs(7_200)
        );
        assert_eq!(
            s.retention_for("acme", "triage"),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            s.retention_for("other", "triage"),
            Duration::from_secs(86_400)
        );
        assert!(!s.stores_output("acme", "report.daily"));
        assert!(s.stores_output("acme", "triage"));
        assert!(!s.dedup_for("acme"));
        assert!(s.dedup_for("other"));
        assert_eq!(s.shortest_retention(), Duration::from_secs(3_600));
        // The sweep's rules give what retention_for gives, kind by kind.
        let (rules, rest) = s.retention_rules("acme");
        assert_eq!(
            rules,
            vec![("report.*".to_owned(), Duration::from_secs(7_200))]
        );
        assert_eq!(rest, Duration::from_secs(3_600));
        assert_eq!(
            s.retention_rules("other"),
            (Vec::new(), Duration::from_secs(86_400))
        );
    }

    #[test]
    fn off_means_no_output_and_no_dedup() {
        let mut r = raw();
        r.enabled = false;
        let s = validate(&r).unwrap();
        assert!(!s.stores_output("a", "k") && !s.dedup_for("a"));
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let mut r = raw();
        r.retention_ms = 10;
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .contains("tasks.retention_ms"));
        let mut r = raw();
        r.overrides = vec![RawTaskOverride {
            kind: Some("x".into()),
            dedup: Some(false),
            ..Default::default()
        }];
        assert!(validate(&r).unwrap_err().to_string().contains("per tenant"));
        let mut r = raw();
        r.overrides = vec![RawTaskOverride {
            tenant: Some("bad tenant".into()),
            retention_ms: Some(5_000),
            ..Default::default()
        }];
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .contains("tasks.overrides[0].tenant"));
        let mut r = raw();
        r.overrides = vec![RawTaskOverride {
            tenant: Some("a".into()),
            ..Default::default()
        }];
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .contains("changes nothing"));
    }
}
