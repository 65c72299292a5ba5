//! `[archive]`: where dead letters go when they leave Redis (a local directory by default, or
//! an S3-compatible bucket), how members reach it, and the optional encryption key.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::check_range;
use crate::archive::{ArchiveKey, ArchiveSettings, Location, S3Location, Secret};
use crate::error::{Error, Result};

/// The `[archive]` section as written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// Whether members archive dead letters.
    pub enabled: bool,
    /// A directory (a path, or `file:///…`) or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible server's URL (path-style requests); empty: AWS.
    pub endpoint: String,
    /// The region S3 requests are signed for.
    pub region: String,
    /// Allow an `http://` endpoint.
    pub allow_http: bool,
    /// The S3 access key id; empty: `AWS_ACCESS_KEY_ID` or the instance's credentials.
    pub access_key_id: String,
    /// A file holding the S3 secret access key; empty: none.
    pub secret_access_key_file: String,
    /// A variable holding the S3 secret access key; empty: none (`AWS_SECRET_ACCESS_KEY` is
    /// read anyway when neither is set).
    pub secret_access_key_env: String,
    /// A file holding the encryption key (64 hex digits); empty: none.
    pub encryption_key_file: String,
    /// A variable holding the encryption key (64 hex digits); empty: none.
    pub encryption_key_env: String,
    /// Entries per archive object.
    pub batch: usize,
    /// How often a member looks at each tenant, ms.
    pub interval_ms: u64,
    /// A member's archiver lease on a tenant, ms.
    pub lease_ms: u64,
    /// The longest one request to the archive may take, ms.
    pub timeout_ms: u64,
}

impl std::fmt::Debug for RawArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secret is in the raw section (only where to read them), but keep the shape of the
        // other sections' Debug: every field, by name.
        f.debug_struct("RawArchive")
            .field("enabled", &self.enabled)
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("secret_access_key_env", &self.secret_access_key_env)
            .field("encryption_key_file", &self.encryption_key_file)
            .field("encryption_key_env", &self.encryption_key_env)
            .field("batch", &self.batch)
            .field("interval_ms", &self.interval_ms)
            .field("lease_ms", &self.lease_ms)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A secret read from `file` or the variable `var` (at most one of them), trimmed of a trailing
/// line ending. `what` names the settings in errors; the value never appears in one.
fn secret(what: &str, file: &str, var: &str) -> Result<Option<String>> {
    let file = file.trim();
    let var = var.trim();
    match (file.is_empty(), var.is_empty()) {
        (false, false) => Err(Error::Config(format!(
            "{what}_file and {what}_env are both set: read the value from one of them"
        ))),
        (true, true) => Ok(None),
        (false, true) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::Config(format!("{what}_file = '{file}' cannot be read: {e}"))
            })?;
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            if text.is_empty() {
                return Err(Error::Config(format!("{what}_file = '{file}' is empty")));
            }
            Ok(Some(text))
        }
        (true, false) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            Ok(_) => Err(Error::Config(format!(
                "{what}_env = '{var}' names a variable that is empty"
            ))),
            Err(_) => Err(Error::Config(format!(
                "{what}_env = '{var}' names a variable that is not set (or not UTF-8)"
            ))),
        },
    }
}

/// Where `url` points: a directory or a bucket with a prefix.
fn location(raw: &RawArchive) -> Result<Location> {
    let url = raw.url.trim();
    if url.is_empty() {
        return Err(Error::Config(
            "archive.url is empty: set a directory (e.g. /var/lib/redrive/archive) or \
             s3://bucket/prefix"
                .into(),
        ));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(Error::Config(format!(
                "archive.url = '{url}': '{bucket}' is not a bucket name (3 to 63 lowercase \
                 letters, digits, '-' or '.')"
            )));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|seg| seg == "." || seg == "..") || prefix.contains("//") {
            return Err(Error::Config(format!(
                "archive.url = '{url}': the prefix may not hold empty, '.' or '..' segments"
            )));
        }
        let endpoint = raw.endpoint.trim();
        let endpoint = (!endpoint.is_empty()).then(|| endpoint.trim_end_matches('/').to_owned());
        if let Some(e) = &endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(Error::Config(format!(
                    "archive.endpoint = '{e}' must start with https:// (or http:// with \
                     archive.allow_http = true)"
                )));
            }
            if e.starts_with("http://") && !raw.allow_http {
                return Err(Error::Config(format!(
                    "archive.endpoint = '{e}' is plain http: set archive.allow_http = true to \
                     allow it (requests and credentials then travel unencrypted)"
                )));
            }
        }
        let secret_access_key = secret(
            "archive.secret_access_key",
            &raw.secret_access_key_file,
            &raw.secret_access_key_env,
        )?
        .map(Secret::new);
        let access_key_id = raw.access_key_id.trim();
        return Ok(Location::S3(S3Location {
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            region: raw.region.trim().to_owned(),
            allow_http: raw.allow_http,
            access_key_id: (!access_key_id.is_empty()).then(|| access_key_id.to_owned()),
            secret_access_key,
        }));
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(Error::Config(format!(
            "archive.url = '{url}': use a directory (a path or file:///path) or s3://bucket/prefix"
        )));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.is_empty() {
        return Err(Error::Config(format!(
            "archive.url = '{url}' names no directory"
        )));
    }
    Ok(Location::Dir(PathBuf::from(path)))
}

/// Validates `[archive]`. Reads the secret key and the encryption key from their file or
/// variable; errors name the setting, never a value.
pub(crate) fn validate(raw: &RawArchive) -> Result<ArchiveSettings> {
    check_range("archive.batch", raw.batch, 1, 10_000)?;
    check_range("archive.interval_ms", raw.interval_ms, 50, 3_600_000)?;
    check_range("archive.timeout_ms", raw.timeout_ms, 100, 600_000)?;
    check_range("archive.lease_ms", raw.lease_ms, 1_000, 3_600_000)?;
    if raw.lease_ms < raw.timeout_ms.saturating_mul(3) {
        return Err(Error::Config(format!(
            "archive.lease_ms = {} must be at least three times archive.timeout_ms = {} (a batch \
             writes twice and looks once within one lease)",
            raw.lease_ms, raw.timeout_ms
        )));
    }
    let key = secret(
        "archive.encryption_key",
        &raw.encryption_key_file,
        &raw.encryption_key_env,
    )?
    .map(|text| {
        ArchiveKey::from_hex(&text).map_err(|e| {
            Error::Config(format!(
                "archive.encryption_key_{}: {e}",
                if raw.encryption_key_file.trim().is_empty() {
                    "env"
                } else {
                    "file"
                }
            ))
        })
    })
    .transpose()?;
    Ok(ArchiveSettings {
        enabled: raw.enabled,
        location: location(raw)?,
        batch: raw.batch,
        interval: Duration::from_millis(raw.interval_ms),
        lease_ttl: Duration::from_millis(raw.lease_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn raw() -> RawArchive {
        RawConfig::defaults().unwrap().archive
    }

    #[test]
    fn the_default_is_a_local_directory_without_encryption() {
        let s = validate(&raw()).unwrap();
        assert!(s.enabled && s.key.is_none());
        assert_eq!(s.location, Location::Dir(PathBuf::from("redrive-archive")));
        let mut r = raw();
        r.url = "file:///var/lib/redrive/archive".into();
        assert_eq!(
            validate(&r).unwrap().location,
            Location::Dir(PathBuf::from("/var/lib/redrive/archive"))
        );
    }

    #[test]
    fn s3_urls_endpoints_and_keys_are_checked_without_showing_secrets() {
        let dir = std::env::temp_dir().join(format!("redrive-arch-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "s3cr3t-value\n").unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, "ab".repeat(32)).unwrap();
        let mut r = raw();
        r.url = "s3://dead-letters/prod/eu/".into();
        r.endpoint = "http://127.0.0.1:9000/".into();
        let err = validate(&r).unwrap_err().to_string();
        assert!(err.contains("allow_http"), "{err}");
        r.allow_http = true;
        r.access_key_id = "AKID".into();
        r.secret_access_key_file = secret_file.to_string_lossy().into_owned();
        r.encryption_key_file = key_file.to_string_lossy().into_owned();
        let s = validate(&r).unwrap();
        let Location::S3(loc) = &s.location else {
            panic!("{:?}", s.location)
        };
        assert_eq!(
            (
                loc.bucket.as_str(),
                loc.prefix.as_str(),
                loc.endpoint.as_deref()
            ),
            ("dead-letters", "prod/eu", Some("http://127.0.0.1:9000"))
        );
        assert_eq!(
            loc.secret_access_key.as_ref().unwrap().expose(),
            "s3cr3t-value"
        );
        assert!(s.key.is_some());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("abab"),
            "{shown}"
        );
        // A bad key is refused without being echoed.
        std::fs::write(&key_file, "not-a-key-at-all").unwrap();
        let err = validate(&r).unwrap_err().to_string();
        assert!(
            err.contains("encryption_key_file") && !err.contains("not-a-key"),
            "{err}"
        );
        for bad in ["s3://A", "s3://ok-bucket/../x", "ftp://x/y", ""] {
            let mut r = raw();
            r.url = bad.into();
            assert!(validate(&r).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
