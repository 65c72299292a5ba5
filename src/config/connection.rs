//! `[redis]`: the connection (named `connection`, as only `src/broker/` names the Redis client).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{check_ident, check_range};
use crate::broker::{
    check_url, open_client, open_cluster_client, redact_url, seed_urls, PasswordSource,
    RedisPassword, RedisSettings, RedisTls, WaitReplicas,
};
use crate::error::{Error, Result};

/// The `[redis]` section as written. `Debug` shows the URL with its password redacted.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Connection URL; empty means not configured. With `cluster`, the seed nodes' URLs
    /// separated by commas.
    pub url: String,
    /// Redis Cluster mode: `url` lists seed nodes.
    pub cluster: bool,
    /// Prefix of every key.
    pub key_prefix: String,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Timeout of non-blocking commands.
    pub response_timeout_ms: u64,
    /// PEM file of the authority that signed the server's certificate (`rediss://` only);
    /// empty: the public roots compiled in.
    pub tls_ca_file: String,
    /// PEM file of the client certificate for mutual TLS; empty: none.
    pub tls_cert_file: String,
    /// PEM file of the client certificate's private key; empty: none.
    pub tls_key_file: String,
    /// Skip the verification of the server's certificate (warned about at every start).
    pub tls_insecure: bool,
    /// ACL user, when not in the URL; empty: the URL's (or `default`).
    pub username: String,
    /// File holding the password (one line), when not in the URL; empty: none.
    pub password_file: String,
    /// Name of an environment variable holding the password, when not in the URL; empty: none.
    pub password_env: String,
    /// Replicas that must confirm each enqueue and settle write (`WAIT <n> <ms>` after it);
    /// 0: off (no WAIT).
    pub wait_replicas: u64,
    /// How long one `WAIT` may block, ms (with `wait_replicas` > 0).
    pub wait_timeout_ms: u64,
}

impl std::fmt::Debug for RawRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRedis")
            .field("url", &redact_url(&self.url))
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_insecure", &self.tls_insecure)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .finish()
    }
}

/// A path setting: empty means unset.
fn path(value: &str) -> Option<PathBuf> {
    let v = value.trim();
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// The password of `password_file` or `password_env` (at most one of them), and where it
/// came from. A file's one trailing line ending is not part of the password. Errors name the
/// setting, never the value.
fn password(r: &RawRedis) -> Result<Option<(RedisPassword, PasswordSource)>> {
    let file = path(&r.password_file);
    let var = r.password_env.trim();
    let (password, source) = match (file, var.is_empty()) {
        (Some(_), false) => {
            return Err(Error::Config(
                "redis.password_file and redis.password_env are both set: read the password \
                 from one of them"
                    .into(),
            ))
        }
        (None, true) => return Ok(None),
        (Some(file), true) => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Error::Config(format!(
                    "redis.password_file = '{}' cannot be read: {e}",
                    file.display()
                ))
            })?;
            let text = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_owned();
            (text, PasswordSource::File(file))
        }
        (None, false) => match std::env::var(var) {
            Ok(v) => {
                // The variable holds a secret: agent processes must not inherit it.
                crate::agents::process::withhold_variable(var);
                (v, PasswordSource::Env(var.to_owned()))
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(Error::Config(format!(
                    "redis.password_env = '{var}' names a variable that is not set"
                )))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::Config(format!(
                    "redis.password_env = '{var}' names a variable that is not valid UTF-8"
                )))
            }
        },
    };
    if password.is_empty() || password.contains(['\n', '\r']) {
        let place = match &source {
            PasswordSource::File(f) => format!("redis.password_file = '{}'", f.display()),
            PasswordSource::Env(v) => format!("redis.password_env = '{v}'"),
        };
        return Err(Error::Config(format!(
            "{place}: the password is empty or spans several lines"
        )));
    }
    Ok(Some((RedisPassword::new(password), source)))
}

/// The replicas to wait for after each write (`redis.wait_replicas`, `redis.wait_timeout_ms`),
/// `None` when off. A timeout of 0 is refused: `WAIT n 0` blocks until the replicas answer,
/// forever when one is down, which would stall every enqueue and settle.
fn wait(r: &RawRedis) -> Result<Option<WaitReplicas>> {
    if r.wait_replicas == 0 {
        return Ok(None);
    }
    check_range("redis.wait_replicas", r.wait_replicas, 0, 16)?;
    if r.wait_timeout_ms == 0 {
        return Err(Error::Config(format!(
            "redis.wait_timeout_ms = 0 with redis.wait_replicas = {}: WAIT would block every \
             write until the replicas answer, forever while one is down; give a bound in ms \
             (e.g. 100)",
            r.wait_replicas
        )));
    }
    check_range("redis.wait_timeout_ms", r.wait_timeout_ms, 1, 60_000)?;
    Ok(Some(WaitReplicas {
        replicas: r.wait_replicas,
        timeout: Duration::from_millis(r.wait_timeout_ms),
    }))
}

/// Validates `[redis]`: an empty URL means "not configured"; any other must parse. TLS
/// settings need a `rediss://` URL and are checked by building the client once (files read,
/// certificates parsed); credentials come from one place each.
pub(crate) fn validate(r: &RawRedis) -> Result<RedisSettings> {
    let url = if r.url.trim().is_empty() {
        None
    } else {
        let seeds = seed_urls(&r.url);
        if seeds.len() > 1 && !r.cluster {
            return Err(Error::Config(format!(
                "redis.url = '{}' lists {} servers: set redis.cluster = true for the seed nodes \
                 of a Redis Cluster, or give one URL",
                redact_url(&r.url),
                seeds.len()
            )));
        }
        if seeds.is_empty() {
            return Err(Error::Config(format!(
                "redis.url = '{}' names no server",
                redact_url(&r.url)
            )));
        }
        for seed in &seeds {
            check_url(seed).map_err(|e| {
                Error::Config(format!(
                    "redis.url = '{}' is not a valid Redis URL: {e}",
                    redact_url(seed)
                ))
            })?;
        }
        Some(r.url.trim().to_owned())
    };
    check_ident("redis.key_prefix", &r.key_prefix, &[':'])?;
    check_range(
        "redis.connect_timeout_ms",
        r.connect_timeout_ms,
        10,
        600_000,
    )?;
    check_range(
        "redis.response_timeout_ms",
        r.response_timeout_ms,
        10,
        600_000,
    )?;
    let wait = wait(r)?;
    let tls = RedisTls {
        ca_file: path(&r.tls_ca_file),
        cert_file: path(&r.tls_cert_file),
        key_file: path(&r.tls_key_file),
        insecure: r.tls_insecure,
    };
    let username = (!r.username.trim().is_empty()).then(|| r.username.trim().to_owned());
    let (password, password_source) = match password(r)? {
        Some((p, s)) => (Some(p), Some(s)),
        None => (None, None),
    };
    let settings = RedisSettings {
        url,
        cluster: r.cluster,
        key_prefix: r.key_prefix.clone(),
        connect_timeout: Duration::from_millis(r.connect_timeout_ms),
        response_timeout: Duration::from_millis(r.response_timeout_ms),
        tls,
        username,
        password,
        password_source,
        wait,
    };
    match settings.url.as_deref() {
        Some(url) => {
            for seed in seed_urls(url) {
                open_client(seed, &settings)?;
            }
            if settings.cluster {
                open_cluster_client(url, &settings)?;
            }
        }
        None => {
            if settings.cluster {
                return Err(Error::Config(
                    "redis.cluster = true but redis.url is not set: set it to the seed nodes, \
                     e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000"
                        .into(),
                ));
            }
            if settings.tls.any_set() {
                return Err(Error::Config(
                    "redis.tls_* settings are set but redis.url is not: set a rediss:// URL".into(),
                ));
            }
            if settings.username.is_some() || settings.password.is_some() {
                return Err(Error::Config(
                    "redis.username, redis.password_file or redis.password_env is set but \
                     redis.url is not: set the URL of the server they are for"
                        .into(),
                ));
            }
        }
    }
    Ok(settings)
}
