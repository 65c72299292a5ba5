//! The validated Redis settings, how a URL is shown (password redacted), and the one place a
//! Redis client is built: the URL, then TLS (`rediss://`: a CA file, a client
//! certificate and key for mutual TLS, `insecure` only by its own setting) and the ACL
//! credentials (user and password in the URL, or the password from a file or an environment
//! variable, read by the config). Every connection redrive opens — the shared connection, the
//! dedicated blocking-read connections of lanes and events, the bench's raw loop — comes from
//! a client built here, so TLS and credentials can never be forgotten on one path.
//!
//! Nothing here prints a password: [`RedisPassword`]'s `Debug` says `***`, and errors name
//! the URL only through [`redact_url`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};

use crate::error::{Error, Result};

/// Validated Redis settings. `Debug` shows the URL redacted and never the password.
#[derive(Clone)]
pub struct RedisSettings {
    /// Connection URL, or `None` when not configured. In cluster mode, the seed nodes'
    /// URLs separated by commas ([`seed_urls`]).
    pub url: Option<String>,
    /// Cluster mode (`redis.cluster`): `url` lists seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// Key prefix.
    pub key_prefix: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response timeout of non-blocking commands.
    pub response_timeout: Duration,
    /// TLS of `rediss://` connections.
    pub tls: RedisTls,
    /// ACL user, when not in the URL.
    pub username: Option<String>,
    /// Password read from `password_file` or the variable `password_env` names, when not in
    /// the URL.
    pub password: Option<RedisPassword>,
    /// Where `password` was read from, so child processes (the bench's members) are pointed
    /// at the same place instead of handed the secret.
    pub password_source: Option<PasswordSource>,
    /// The replicas every enqueue and settle write waits for (`WAIT`), `None` when off.
    pub wait: Option<WaitReplicas>,
}

/// `redis.wait_replicas` and `redis.wait_timeout_ms` when on: after each enqueue and settle
/// write, `WAIT replicas timeout` on the node that took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas {
    /// Replicas that must confirm (at least 1).
    pub replicas: u64,
    /// How long one WAIT may block.
    pub timeout: Duration,
}

/// Where a Redis password was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `redis.password_file`.
    File(std::path::PathBuf),
    /// `redis.password_env`: the variable's name.
    Env(String),
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_source", &self.password_source)
            .field("wait", &self.wait)
            .finish()
    }
}

/// Checks that `url` is a Redis URL the client accepts; the client's reason otherwise. TLS
/// URLs (`rediss://`) are accepted; their settings are checked by `open_client`.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The seed nodes' URLs of a cluster-mode `redis.url`: comma-separated, blanks around each
/// ignored, empty parts dropped. A single-node URL is one seed.
pub fn seed_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_owned(),
    };
    format!("{}://{}@{}", &url[..scheme_end], redacted, &rest[at + 1..])
}

/// TLS settings of `rediss://` connections (`[redis] tls_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM file with the certificate(s) of the authority that signed the server's
    /// certificate; `None`: the public roots compiled in (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// PEM file with this client's certificate chain, for servers that require client
    /// certificates (mutual TLS); set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Skip the verification of the server's certificate (and its name). Anyone on the path
    /// can then read and change every task: only by this explicit setting, warned about at
    /// every start.
    pub insecure: bool,
}

impl RedisTls {
    /// Whether any TLS setting is set (they need a `rediss://` URL).
    pub fn any_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.insecure
    }
}

/// A Redis password read from a file or an environment variable. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    /// Wraps a password.
    pub fn new(password: String) -> RedisPassword {
        RedisPassword(password)
    }

    /// The password, for the client only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Whether `url` asks for TLS (`rediss://`, or `valkeys://` which the client reads alike).
pub fn is_tls_url(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or_default();
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// Reads a PEM file the TLS settings name, with the setting in the error.
fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "redis.{setting} = '{}' cannot be read: {e}",
            path.display()
        ))
    })?;
    if !bytes
        .windows(b"-----BEGIN ".len())
        .any(|w| w == b"-----BEGIN ")
    {
        return Err(Error::Config(format!(
            "redis.{setting} = '{}' is not a PEM file (no '-----BEGIN' line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Builds the client for `url` with the TLS settings and credentials of `settings`: the one
/// builder every connection goes through. Reads the TLS files (so a missing or unreadable
/// file, or a certificate that does not parse, is an error here, before any connection);
/// refuses the URL's `#insecure` (`redis.tls_insecure` is the one switch), TLS settings on a
/// plain `redis://` URL, and credentials given twice.
pub(crate) fn open_client(url: &str, settings: &RedisSettings) -> Result<redis::Client> {
    let shown = redact_url(url);
    let info = url.into_connection_info().map_err(|e| {
        Error::Config(format!(
            "redis.url = '{shown}' is not a valid Redis URL: {e}"
        ))
    })?;
    let tls = &settings.tls;
    let info = match info.addr().clone() {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            if insecure {
                return Err(Error::Config(format!(
                    "redis.url = '{shown}' ends in #insecure: remove it and set redis.tls_insecure = \
                     true if the server's certificate must really go unchecked"
                )));
            }
            if tls.insecure && tls.ca_file.is_some() {
                return Err(Error::Config(
                    "redis.tls_insecure = true skips the check redis.tls_ca_file is for: set one \
                     of them"
                        .into(),
                ));
            }
            let certs = tls_certificates(tls)?;
            let with_certs = redis::Client::build_with_tls(info.clone(), certs)
                .map_err(|e| Error::Config(format!("redis TLS settings: {e}")))?;
            let tls_params = match with_certs.get_connection_info().addr() {
                ConnectionAddr::TcpTls { tls_params, .. } => tls_params.clone(),
                _ => None,
            };
            info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: tls.insecure,
                tls_params,
            })
        }
        _ => {
            if tls.any_set() {
                return Err(Error::Config(format!(
                    "redis.tls_* settings are set but redis.url = '{shown}' is not a rediss:// URL: \
                     use rediss:// to connect with TLS, or clear the tls_* settings"
                )));
            }
            info
        }
    };
    let info = with_credentials(info, settings, &shown)?;
    redis::Client::open(info).map_err(|e| Error::Config(format!("redis.url = '{shown}': {e}")))
}

/// The TLS files of `tls` read: the client certificate and key (both or neither) and the
/// authority's certificate. Errors name the setting.
fn tls_certificates(tls: &RedisTls) -> Result<TlsCertificates> {
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem("tls_cert_file", cert)?,
            client_key: read_pem("tls_key_file", key)?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::Config(
                "redis.tls_cert_file is set without redis.tls_key_file: a client \
                 certificate needs its private key"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Config(
                "redis.tls_key_file is set without redis.tls_cert_file: a private key \
                 needs its client certificate"
                    .into(),
            ))
        }
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read_pem("tls_ca_file", path)?),
        None => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The clients of cluster mode: the cluster client over the seed nodes of `url`
/// (comma-separated; each checked as `open_client` checks a URL, so TLS and credentials apply
/// to every node the cluster client finds), and a plain client of the first seed, from which
/// the clients of single nodes are made ([`node_client`]). The seeds must agree on TLS and
/// credentials. MOVED, ASK, TRYAGAIN and CLUSTERDOWN are retried by the cluster client up to
/// 8 times, waiting 20 ms to 1 s between tries (about 4 s in all: a failover with
/// `cluster-node-timeout` 2000 takes 3–4 s).
pub(crate) fn open_cluster_client(
    url: &str,
    settings: &RedisSettings,
) -> Result<(redis::cluster::ClusterClient, redis::Client)> {
    let seeds = seed_urls(url);
    let Some(first) = seeds.first() else {
        return Err(Error::Config(
            "redis.cluster = true but redis.url lists no seed node: set it to \
             redis://host1:port1,redis://host2:port2"
                .into(),
        ));
    };
    let tls = is_tls_url(first);
    let mut infos = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        if is_tls_url(seed) != tls {
            return Err(Error::Config(format!(
                "redis.url = '{}': the seed nodes mix rediss:// and redis:// URLs; every node of \
                 a cluster is reached the same way",
                redact_url(url)
            )));
        }
        let info = open_client(seed, settings)?.get_connection_info().clone();
        let db = info.redis_settings().db();
        if db != 0 {
            return Err(Error::Config(format!(
                "redis.url = '{}' selects database {db}: a Redis Cluster has only database 0",
                redact_url(seed)
            )));
        }
        infos.push(info);
    }
    let base = open_client(first, settings)?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .connection_timeout(settings.connect_timeout)
        .response_timeout(settings.response_timeout)
        .retries(8)
        .min_retry_wait(20)
        .max_retry_wait(1000);
    if tls {
        let t = &settings.tls;
        builder = builder.tls(if t.insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        });
        if t.ca_file.is_some() || t.cert_file.is_some() {
            builder = builder.certs(tls_certificates(t)?);
        }
    }
    let cluster = builder.build().map_err(|e| {
        Error::Config(format!(
            "redis.url = '{}' (cluster seeds): {e}",
            redact_url(url)
        ))
    })?;
    Ok((cluster, base))
}

/// A client of the node at `host:port`, like `base` (a client `open_client` built) in TLS
/// and credentials: for the dedicated connections of one cluster node.
pub(crate) fn node_client(base: &redis::Client, host: &str, port: u16) -> Result<redis::Client> {
    let info = base.get_connection_info().clone();
    let addr = match info.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    redis::Client::open(info.set_addr(addr))
        .map_err(|e| Error::Config(format!("redis node {host}:{port}: {e}")))
}

/// Applies `redis.username` and the password read from a file or variable, refusing either
/// when the URL already carries one (one place per credential).
fn with_credentials(
    info: redis::ConnectionInfo,
    settings: &RedisSettings,
    shown: &str,
) -> Result<redis::ConnectionInfo> {
    let mut redis_info = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        if redis_info.username().is_some_and(|u| u != user) {
            return Err(Error::Config(format!(
                "redis.username = '{user}' and the user in redis.url = '{shown}' differ: set the \
                 user in one place"
            )));
        }
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = &settings.password {
        if redis_info.password().is_some() {
            return Err(Error::Config(format!(
                "redis.url = '{shown}' carries a password and redis.password_file or \
                 redis.password_env gives another: set the password in one place"
            )));
        }
        redis_info = redis_info.set_password(password.expose());
    }
    Ok(info.set_redis_settings(redis_info))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> RedisSettings {
        RedisSettings {
            url: None,
            cluster: false,
            key_prefix: "p".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            tls: RedisTls::default(),
            username: None,
            password: None,
            password_source: None,
            wait: None,
        }
    }

    fn err(url: &str, s: &RedisSettings) -> String {
        match open_client(url, s) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rediss_urls_are_accepted_and_plain_ones_refuse_tls_settings() {
        let s = settings();
        let client = open_client("rediss://h:6380/0", &s).unwrap();
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        let mut tls = settings();
        tls.tls.insecure = true;
        let e = err("redis://h:6379", &tls);
        assert!(e.contains("not a rediss:// URL"), "{e}");
        let client = open_client("rediss://h", &tls).unwrap();
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
    }

    #[test]
    fn the_url_fragment_cannot_turn_verification_off() {
        let e = err("rediss://h:6380/#insecure", &settings());
        assert!(e.contains("redis.tls_insecure"), "{e}");
    }

    #[test]
    fn files_are_checked_before_any_connection() {
        let mut s = settings();
        s.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let e = err("rediss://h", &s);
        assert!(
            e.contains("redis.tls_ca_file = '/nonexistent/ca.pem' cannot be read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("redrive-client-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        s.tls.ca_file = Some(not_pem.clone());
        let e = err("rediss://h", &s);
        assert!(e.contains("is not a PEM file"), "{e}");
        let mut s = settings();
        s.tls.cert_file = Some(not_pem.clone());
        let e = err("rediss://h", &s);
        assert!(e.contains("without redis.tls_key_file"), "{e}");
        let mut s = settings();
        s.tls.insecure = true;
        s.tls.ca_file = Some(not_pem);
        let e = err("rediss://h", &s);
        assert!(e.contains("set one of them"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn credentials_come_from_one_place_and_errors_never_show_them() {
        let mut s = settings();
        s.password = Some(RedisPassword::new("from-file".into()));
        s.username = Some("app".into());
        let client = open_client("redis://h:1", &s).unwrap();
        let info = client.get_connection_info().redis_settings();
        assert_eq!(info.username(), Some("app"));
        assert_eq!(info.password(), Some("from-file"));
        let e = err("redis://app:in-url@h:1", &s);
        assert!(e.contains("set the password in one place"), "{e}");
        assert!(!e.contains("in-url") && !e.contains("from-file"), "{e}");
        s.password = None;
        let e = err("redis://other:pw@h:1", &s);
        assert!(e.contains("differ"), "{e}");
        assert!(!e.contains("pw@"), "{e}");
        assert_eq!(format!("{:?}", RedisPassword::new("x".into())), "***");
    }

    #[test]
    fn cluster_seeds_are_listed_redacted_and_share_tls_and_credentials() {
        assert_eq!(
            seed_urls(" redis://a:1 , redis://b:2,,"),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            redact_url("redis://u:p1@a:1,redis://u:p2@b:2"),
            "redis://u:***@a:1,redis://u:***@b:2"
        );
        let mut s = settings();
        s.cluster = true;
        s.password = Some(RedisPassword::new("from-file".into()));
        let (_, base) = open_cluster_client("redis://a:1,redis://b:2", &s).unwrap();
        assert_eq!(
            base.get_connection_info().redis_settings().password(),
            Some("from-file")
        );
        let node = node_client(&base, "10.0.0.9", 7005).unwrap();
        let info = node.get_connection_info();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("10.0.0.9".into(), 7005));
        assert_eq!(info.redis_settings().password(), Some("from-file"));
        let tls = open_cluster_client("rediss://a:1,rediss://b:2", &settings())
            .unwrap()
            .1;
        let node = node_client(&tls, "h", 1).unwrap();
        assert!(matches!(
            node.get_connection_info().addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        let e = open_cluster_client(" , ", &s).err().unwrap().to_string();
        assert!(e.contains("lists no seed node"), "{e}");
    }

    #[test]
    fn tls_urls_are_told_apart() {
        assert!(is_tls_url("rediss://h"));
        assert!(is_tls_url("REDISS://h"));
        assert!(is_tls_url("valkeys://h"));
        assert!(!is_tls_url("redis://h"));
        assert!(!is_tls_url("h:6379"));
    }
}
