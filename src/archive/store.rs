//! The archive's storage: a local directory or an S3-compatible bucket, one code path through
//! the `object_store` crate (`LocalFileSystem` or `AmazonS3`). Paths are relative to the
//! archive's root (the directory, or `bucket/prefix`).
//!
//! S3 requests go through a reqwest client built here: rustls with the ring provider (as every
//! other TLS client of redrive), the webpki roots, bounded connect and request times, and
//! object_store's own retries limited to two within the request time, so an unreachable
//! archive is an error within a bounded time and the archiver tries again on its next turn.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::settings::{ArchiveSettings, Location};
use crate::error::{Error, Result};

/// An object in the archive: its path (relative to the root) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The path, relative to the archive's root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The archive's storage.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    /// The prefix every path gets (a bucket's prefix; empty for a directory).
    root: String,
    /// The location as people read it, for messages.
    describe: String,
    /// Whether listings come in path order (S3) — a directory's walk does not.
    ordered: bool,
}

/// Builds the reqwest client of S3 requests (see the module doc).
#[derive(Debug)]
struct RingConnector {
    timeout: Duration,
}

impl HttpConnector for RingConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |e: &dyn std::fmt::Display| object_store::Error::Generic {
            store: "S3",
            source: e.to_string().into(),
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| generic(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .retry(reqwest::retry::never())
            .connect_timeout(self.timeout.min(Duration::from_secs(5)))
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("redrive/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| generic(&e))?;
        Ok(HttpClient::new(client))
    }
}

impl ArchiveStore {
    /// Opens the configured location (a directory is created when missing). Nothing is sent
    /// to S3 yet: an unreachable bucket shows at the first request.
    pub fn open(settings: &ArchiveSettings) -> Result<ArchiveStore> {
        let describe = settings.location.describe();
        match &settings.location {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Config(format!(
                        "archive.url: the directory {} cannot be created: {e}",
                        dir.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    Error::Config(format!(
                        "archive.url: the directory {} cannot be used: {e}",
                        dir.display()
                    ))
                })?;
                Ok(ArchiveStore {
                    store: Arc::new(fs),
                    root: String::new(),
                    describe,
                    ordered: false,
                })
            }
            Location::S3(s) => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_allow_http(s.allow_http)
                    .with_http_connector(RingConnector {
                        timeout: settings.timeout,
                    })
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: settings.timeout,
                        ..RetryConfig::default()
                    });
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                if let Some(id) = &s.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(secret) = &s.secret_access_key {
                    b = b.with_secret_access_key(secret.expose());
                }
                let store = b
                    .build()
                    .map_err(|e| Error::Config(format!("archive: cannot use {describe}: {e}")))?;
                Ok(ArchiveStore {
                    store: Arc::new(store),
                    root: s.prefix.clone(),
                    describe,
                    ordered: true,
                })
            }
        }
    }

    /// The location as people read it.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(&self, rel: &str) -> Path {
        if self.root.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.root))
        }
    }

    fn rel(&self, p: &Path) -> String {
        let s = p.as_ref();
        if self.root.is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(&self.root)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_owned()
        }
    }

    fn fail(&self, what: &str, rel: &str, e: object_store::Error) -> Error {
        Error::Archive(format!("{what} {rel} in {}: {e}", self.describe))
    }

    /// Writes `bytes` at `rel`, replacing what is there (an upload tried again writes the same
    /// object again). Returns when the storage confirmed the write.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.fail("writing", rel, e))
    }

    /// The size of the object at `rel`, `None` when there is none.
    pub async fn size(&self, rel: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path(rel)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("looking at", rel, e)),
        }
    }

    /// The object at `rel`, `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let got = match self.store.get(&self.path(rel)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail("reading", rel, e)),
        };
        got.bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| self.fail("reading", rel, e))
    }

    /// Up to `max` objects under `rel_prefix` (`""` for all) whose path sorts after `after`
    /// (every one when `None`), in path order. On S3 the listing starts there (`start-after`)
    /// and stops after `max` keys, so its cost is set by `max`, not by the archive; a directory
    /// is walked and sorted (names only, nothing read).
    pub async fn list_after(
        &self,
        rel_prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<Listed>> {
        if !self.ordered {
            let mut all = self.list(rel_prefix).await?;
            all.retain(|l| after.is_none_or(|a| l.path.as_str() > a));
            all.truncate(max);
            return Ok(all);
        }
        let prefix = self.prefix(rel_prefix);
        let mut stream = match after {
            Some(a) => self.store.list_with_offset(prefix.as_ref(), &self.path(a)),
            None => self.store.list(prefix.as_ref()),
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = stream.next().await else {
                break;
            };
            let meta = item.map_err(|e| self.fail("listing", rel_prefix, e))?;
            out.push(Listed {
                path: self.rel(&meta.location),
                size: meta.size,
            });
        }
        // S3 lists keys in their bytes' order, as `str` compares them.
        Ok(out)
    }

    fn prefix(&self, rel_prefix: &str) -> Option<Path> {
        match (self.root.is_empty(), rel_prefix.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Path::from(self.root.as_str())),
            _ => Some(self.path(rel_prefix)),
        }
    }

    /// Every object under `rel_prefix` (a directory-like prefix, `""` for all), at any depth.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<Listed>> {
        let prefix = self.prefix(rel_prefix);
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.fail("listing", rel_prefix, e))?;
            out.push(Listed {
                path: self.rel(&meta.location),
                size: meta.size,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
