//! Which dead letters a command works on: addresses (`TENANT/ENTRY-ID`), filters shared by
//! `list`, `stats`, `export`, `replay`, `resolve` and `discard`, and the order of stream ids.
//! Pure.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::broker::Fields;
use crate::deadletter::field as dl;
use crate::handler::FailureClass;
use crate::task::field;

/// A dead letter's address: its tenant and its entry id in the tenant's dead-letter stream,
/// written `TENANT/ENTRY-ID` (for example `acme/1763800000000-0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DlId {
    /// The tenant.
    pub tenant: String,
    /// The entry id in the tenant's dead-letter stream.
    pub id: String,
}

impl DlId {
    /// Parses `TENANT/ENTRY-ID`, or a bare `ENTRY-ID` when `default_tenant` is given.
    pub fn parse(text: &str, default_tenant: Option<&str>) -> Result<DlId, String> {
        let (tenant, id) = match text.split_once('/') {
            Some((t, id)) => (t, id),
            None => match default_tenant {
                Some(t) => (t, text),
                None => {
                    return Err(format!(
                        "'{text}' is not a dead-letter id: write TENANT/ENTRY-ID as `dlq list` prints it \
                         (for example acme/1763800000000-0)"
                    ))
                }
            },
        };
        crate::task::validate_tenant(tenant)
            .map_err(|e| format!("'{text}' is not a dead-letter id: {e}"))?;
        let Some((ms, seq)) = parse_stream_id(id) else {
            return Err(format!(
                "'{text}' is not a dead-letter id: '{id}' is not a stream entry id like 1763800000000-0"
            ));
        };
        // Canonical form, so `acme/01-0` and `acme/1-0` are recognised as the same entry.
        Ok(DlId {
            tenant: tenant.to_owned(),
            id: format!("{ms}-{seq}"),
        })
    }

    /// The chronological sort key: entry id first, then tenant.
    pub fn order(&self, other: &DlId) -> Ordering {
        compare_ids(&self.id, &other.id).then_with(|| self.tenant.cmp(&other.tenant))
    }
}

impl fmt::Display for DlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

impl TryFrom<String> for DlId {
    type Error = String;
    fn try_from(s: String) -> Result<DlId, String> {
        DlId::parse(&s, None)
    }
}

impl From<DlId> for String {
    fn from(d: DlId) -> String {
        d.to_string()
    }
}

/// The ids without repeats, in the order they were first given: an id listed twice (or once
/// with its tenant and once bare under `--tenant`) is one dead letter, selected once.
pub fn dedup(ids: Vec<DlId>) -> Vec<DlId> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.into_iter().filter(|d| seen.insert(d.clone())).collect()
}

/// Parses a complete stream entry id `ms-seq`.
pub fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    if ms.is_empty() || seq.is_empty() {
        return None;
    }
    if !ms.bytes().all(|b| b.is_ascii_digit()) || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The millisecond part of a stream entry id (0 when unreadable).
pub fn id_ms(id: &str) -> u64 {
    parse_stream_id(id).map(|(ms, _)| ms).unwrap_or(0)
}

/// Orders stream entry ids numerically (unreadable ones first).
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    parse_stream_id(a).cmp(&parse_stream_id(b))
}

/// The value of field `name` in raw entry fields, if present and UTF-8.
pub fn field_str<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Criteria on dead letters. Values of one criterion are alternatives (OR); criteria combine
/// with AND. Times are the dead-letter stream ids' times (the Redis server's clock when the
/// task was dead-lettered), `since` and `until` both inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Tenants; empty means every registered tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Failure classes (wire names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Task kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Error fingerprints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<String>,
    /// Dead-lettered at or after this time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Dead-lettered at or before this time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Payload criteria, `field=value`: the payload's value at `field` (a top-level field, or
    /// a dotted path into objects: `customer.id`) equals `value` (a string's text, any other
    /// JSON value's JSON text: `count=3`, `vip=true`). Alternatives, like the other criteria.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload: Vec<String>,
}

impl Filter {
    /// Checks every value; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.tenants {
            crate::task::validate_tenant(t).map_err(|e| format!("--tenant: {e}"))?;
        }
        for c in &self.classes {
            if FailureClass::parse(c).is_none() {
                return Err(format!(
                    "--class '{c}' is not a failure class; the classes are {}",
                    FailureClass::ALL.map(|c| c.as_str()).join(", ")
                ));
            }
        }
        for k in &self.kinds {
            crate::task::validate_kind(k).map_err(|e| format!("--kind: {e}"))?;
        }
        for f in &self.fingerprints {
            if f.is_empty() || f.len() > 32 || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "--fingerprint '{f}' is not a fingerprint (hex digits, as `dlq stats` prints them)"
                ));
            }
        }
        for p in &self.payload {
            match p.split_once('=') {
                Some((field, value))
                    if !field.is_empty()
                        && field.len() <= 200
                        && value.len() <= 1024
                        && field.split('.').all(|s| !s.is_empty()) => {}
                _ => {
                    return Err(format!(
                        "--payload '{p}' is not FIELD=VALUE (a payload field or dotted path of at \
                         most 200 bytes, a value of at most 1024)"
                    ))
                }
            }
        }
        if let (Some(s), Some(u)) = (self.since_ms, self.until_ms) {
            if s > u {
                return Err("--since is later than --until: nothing can match".into());
            }
        }
        Ok(())
    }

    /// Whether the filter has no criterion at all (it selects every dead letter).
    pub fn is_everything(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether dead letters of this class, kind and fingerprint satisfy the class, kind and
    /// fingerprint criteria (`""` for a field a dead letter lacks, which no criterion names).
    pub fn selects(&self, class: &str, kind: &str, fingerprint: &str) -> bool {
        let ok = |wanted: &[String], v: &str| wanted.is_empty() || wanted.iter().any(|w| w == v);
        ok(&self.classes, class) && ok(&self.kinds, kind) && ok(&self.fingerprints, fingerprint)
    }

    /// Whether a dead letter's fields satisfy the class, kind, fingerprint and payload criteria
    /// (tenant and time are applied by where and how far the scan reads).
    pub fn matches(&self, fields: &Fields) -> bool {
        let ok = |wanted: &[String], name: &str| {
            wanted.is_empty()
                || field_str(fields, name).is_some_and(|v| wanted.iter().any(|w| w == v))
        };
        ok(&self.classes, dl::CLASS)
            && ok(&self.kinds, field::KIND)
            && ok(&self.fingerprints, dl::FINGERPRINT)
            && self.payload_matches(fields)
    }

    /// Whether the payload satisfies a payload criterion (true without any). The payload is
    /// parsed only when there is one.
    fn payload_matches(&self, fields: &Fields) -> bool {
        if self.payload.is_empty() {
            return true;
        }
        let Some(payload) = field_str(fields, field::PAYLOAD)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        else {
            return false;
        };
        self.payload.iter().any(|criterion| {
            let Some((path, want)) = criterion.split_once('=') else {
                return false;
            };
            let found = path.split('.').try_fold(&payload, |v, key| v.get(key));
            match found {
                Some(serde_json::Value::String(s)) => s == want,
                // A number by its value (`3`, `3.0` and `3e0` are one number), as the list's
                // server-side scan (scripts/dlq_page.lua) compares it.
                Some(serde_json::Value::Number(n)) => n
                    .as_f64()
                    .zip(want.trim().parse::<f64>().ok())
                    .is_some_and(|(have, want)| have == want),
                Some(other) => serde_json::to_string(other).is_ok_and(|text| text == want),
                None => false,
            }
        })
    }

    /// The XRANGE bounds of the time criteria (`-`/`+` when open).
    pub fn range(&self) -> (String, String) {
        (
            self.since_ms
                .map(|ms| format!("{ms}-0"))
                .unwrap_or_else(|| "-".into()),
            self.until_ms
                .map(|ms| format!("{ms}-{}", u64::MAX))
                .unwrap_or_else(|| "+".into()),
        )
    }
}

/// What a command works on: listed dead letters, or every dead letter a filter matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// These dead letters.
    Ids(Vec<DlId>),
    /// Every dead letter the filter matches.
    Filter(Filter),
}

impl Selection {
    /// Checks the selection's values.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Selection::Ids(ids) if ids.is_empty() => Err("no dead-letter id given".into()),
            Selection::Ids(_) => Ok(()),
            Selection::Filter(f) => f.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn ids_parse_with_and_without_tenant() {
        let d = DlId::parse("acme/1763800000000-3", None).unwrap();
        assert_eq!(
            (d.tenant.as_str(), d.id.as_str()),
            ("acme", "1763800000000-3")
        );
        assert_eq!(d.to_string(), "acme/1763800000000-3");
        assert_eq!(
            DlId::parse("5-0", Some("acme")).unwrap(),
            DlId::parse("acme/5-0", None).unwrap()
        );
        for bad in ["5-0", "acme/5", "ac me/5-0", "acme/x-1", "acme/-1", "/5-0"] {
            assert!(DlId::parse(bad, None).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"acme/1763800000000-3\"");
        assert!(serde_json::from_str::<DlId>("\"nope\"").is_err());
    }

    #[test]
    fn repeated_ids_are_one_selection_in_first_order() {
        let p = |t: &str, d: Option<&str>| DlId::parse(t, d).unwrap();
        let ids = vec![
            p("b/9-0", None),
            p("acme/5-0", None),
            p("9-0", Some("b")),
            p("acme/005-0", None),
            p("b/10-0", None),
        ];
        assert_eq!(p("acme/005-0", None).id, "5-0");
        let got: Vec<String> = dedup(ids).iter().map(|d| d.to_string()).collect();
        assert_eq!(got, ["b/9-0", "acme/5-0", "b/10-0"]);
    }

    #[test]
    fn ids_order_numerically_then_by_tenant() {
        let a = DlId::parse("b/9-0", None).unwrap();
        let b = DlId::parse("a/10-0", None).unwrap();
        let c = DlId::parse("b/10-0", None).unwrap();
        assert_eq!(a.order(&b), Ordering::Less);
        assert_eq!(b.order(&c), Ordering::Less);
        assert_eq!(compare_ids("10-2", "10-10"), Ordering::Less);
    }

    #[test]
    fn payload_criteria_compare_the_value_at_a_path() {
        let f = Filter {
            payload: vec!["customer.id=acme-7".into(), "count=3".into()],
            ..Filter::default()
        };
        f.validate().unwrap();
        let with = |p: &str| fields(&[("class", "timeout"), ("payload", p)]);
        assert!(f.matches(&with(r#"{"customer": {"id": "acme-7"}}"#)));
        assert!(
            f.matches(&with(r#"{"count": 3}"#)),
            "a number by its JSON text"
        );
        assert!(f.matches(&with(r#"{"count": 3.0}"#)), "or by its value");
        assert!(!f.matches(&with(r#"{"customer": {"id": "acme-8"}, "count": "4"}"#)));
        assert!(!f.matches(&with(r#"{"customer": "acme-7"}"#)));
        assert!(!f.matches(&with("not json")));
        assert!(!f.matches(&fields(&[("class", "timeout")])), "no payload");
        let vip = Filter {
            payload: vec!["vip=true".into(), "note=a=b".into()],
            ..Filter::default()
        };
        assert!(vip.matches(&with(r#"{"vip": true}"#)));
        assert!(
            vip.matches(&with(r#"{"note": "a=b"}"#)),
            "the first '=' splits"
        );
        for bad in ["novalue", "=x", "a..b=1"] {
            let f = Filter {
                payload: vec![bad.into()],
                ..Filter::default()
            };
            assert!(f.validate().unwrap_err().contains("FIELD=VALUE"), "{bad}");
        }
    }

    #[test]
    fn filters_match_and_bound() {
        let f = Filter {
            classes: vec!["timeout".into(), "rate_limited".into()],
            kinds: vec!["triage".into()],
            since_ms: Some(100),
            until_ms: Some(200),
            ..Filter::default()
        };
        f.validate().unwrap();
        assert!(f.matches(&fields(&[("class", "timeout"), ("kind", "triage")])));
        assert!(!f.matches(&fields(&[("class", "timeout"), ("kind", "score")])));
        assert!(!f.matches(&fields(&[("class", "timeout")])));
        assert_eq!(f.range(), ("100-0".into(), format!("200-{}", u64::MAX)));
        assert_eq!(Filter::default().range(), ("-".into(), "+".into()));
        assert!(Filter::default().is_everything() && !f.is_everything());
        let bad_class = Filter {
            classes: vec!["flaky".into()],
            ..Filter::default()
        };
        assert!(bad_class
            .validate()
            .unwrap_err()
            .contains("not a failure class"));
        let backwards = Filter {
            since_ms: Some(5),
            until_ms: Some(4),
            ..Filter::default()
        };
        assert!(backwards.validate().is_err());
        let bad_fp = Filter {
            fingerprints: vec!["zz".into()],
            ..Filter::default()
        };
        assert!(bad_fp.validate().is_err());
    }
}
