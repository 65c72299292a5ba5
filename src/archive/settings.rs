//! What the archive needs to know, validated (by config/archive.rs and config/limits.rs): where
//! it is and how it is reached ([`ArchiveSettings`]), and when dead letters leave Redis for it
//! ([`Retention`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::crypt::ArchiveKey;

/// Where archived dead letters go.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// A local directory (the embedded default): the archive's root.
    Dir(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Location),
}

impl Location {
    /// The location as people read it (`s3://bucket/prefix`, or the directory), without
    /// credentials.
    pub fn describe(&self) -> String {
        match self {
            Location::Dir(p) => p.display().to_string(),
            Location::S3(s) => {
                let mut t = format!("s3://{}", s.bucket);
                if !s.prefix.is_empty() {
                    t.push('/');
                    t.push_str(&s.prefix);
                }
                if let Some(e) = &s.endpoint {
                    t.push_str(&format!(" at {e}"));
                }
                t
            }
        }
    }
}

/// A bucket, a prefix inside it, and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The prefix every object's path starts with (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// An S3-compatible server's URL (path-style requests); `None`: AWS.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// Whether an `http://` endpoint is allowed.
    pub allow_http: bool,
    /// The access key id; `None`: the standard AWS sources (variables, instance profile).
    pub access_key_id: Option<String>,
    /// The secret access key; `None`: the standard AWS sources.
    pub secret_access_key: Option<Secret>,
}

/// A secret setting's value; `Debug` says `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `[archive]`, validated.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// Whether members archive at all. Off: entries past the cap or the retention and removed
    /// ones past the grace period stay in Redis, up to the hard ceiling.
    pub enabled: bool,
    /// Where.
    pub location: Location,
    /// Entries per archive object (one batch).
    pub batch: usize,
    /// How often a member looks at each tenant.
    pub interval: Duration,
    /// How long a member's archiver lease on a tenant lasts without renewal.
    pub lease_ttl: Duration,
    /// The longest one request to the archive may take.
    pub timeout: Duration,
    /// The key the archived fields are encrypted with; `None`: not encrypted.
    pub key: Option<ArchiveKey>,
}

/// When dead letters leave Redis (`[dead_letter]`, validated): past the cap or the retention
/// (archived first), and removed ones after the grace period; past the hard ceiling the oldest
/// are deleted without an archive, counted loudly.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// The cap: a stream longer than this has its oldest archived down to it.
    pub max_len: u64,
    /// The hard ceiling: past it the oldest are trimmed without an archive (counted);
    /// `u64::MAX` (the default) when there is none.
    pub hard_max_len: u64,
    /// The default retention; `None`: kept until handled.
    pub retention: Option<Duration>,
    /// Per-tenant retention overrides (`None`: kept until handled).
    pub tenants: BTreeMap<String, Option<Duration>>,
    /// How long resolved and discarded dead letters stay in Redis before they are archived.
    pub removed_grace: Duration,
}

impl Retention {
    /// The retention of `tenant`'s dead letters; `None`: kept until handled (or the cap).
    pub fn retention_of(&self, tenant: &str) -> Option<Duration> {
        match self.tenants.get(tenant) {
            Some(r) => *r,
            None => self.retention,
        }
    }
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_len: 100_000,
            hard_max_len: u64::MAX,
            retention: None,
            tenants: BTreeMap::new(),
            removed_grace: Duration::from_secs(86_400),
        }
    }
}
