//! `[serve]`: where the HTTP API listens, under which path, whether it may change anything,
//! its TLS certificate, and the tokens it accepts. Read like the other application sections
//! (defaults in `config/app.toml`, `REDRIVE_SERVE__LISTEN`, …) and validated here with
//! messages that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::{Role, Scope, TokenEntry};
use super::proxy::TrustedProxies;
use crate::error::{Error, Result};

/// `[serve]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    /// `redrive run` starts the API inside the member too.
    pub enabled: bool,
    /// The address to listen on.
    pub listen: String,
    /// The path every route lives under (behind a reverse proxy), `/` for none.
    pub base_path: String,
    /// Refuse every change.
    pub read_only: bool,
    /// PEM certificate chain; with `tls_key`, the server terminates TLS itself.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Mark the session cookie `Secure` although this server speaks plain HTTP (a proxy in
    /// front terminates TLS). With `tls_cert` it is always `Secure`.
    pub cookie_secure: bool,
    /// A browser session ends after this long without a request, ms.
    pub session_ttl_ms: u64,
    /// A browser session ends this long after its login whatever its use, ms.
    pub session_max_age_ms: u64,
    /// Login attempts one client address may make per minute.
    pub login_per_ip_per_minute: u32,
    /// Login attempts every client together may make per minute.
    pub login_global_per_minute: u32,
    /// The reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A connection that has not sent a request's whole head within this long is closed, ms.
    pub header_read_timeout_ms: u64,
    /// A request not answered (its head) within this long gets a 408, ms.
    pub request_timeout_ms: u64,
    /// The tokens the API accepts.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

/// One `[[serve.tokens]]` entry as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Who holds it: written into the audit trail as the operator of every change it makes.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// The tenants it may see, or `["*"]` for all.
    pub tenants: Vec<String>,
    /// The token's SHA-256, hex (the token itself is never stored).
    pub sha256: String,
    /// A viewer sees payloads and outputs only with this (operators and admins always do).
    #[serde(default)]
    pub see_payloads: bool,
}

/// `[serve]`, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// `redrive run` starts the API inside the member too.
    pub enabled: bool,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The path prefix of every route: `""` for none, else `/a/b` (no trailing slash).
    pub base_path: String,
    /// Refuse every change.
    pub read_only: bool,
    /// The certificate and key files when the server terminates TLS itself.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether the session cookie is `Secure` (TLS here, or `cookie_secure`).
    pub cookie_secure: bool,
    /// Browser sessions: idle timeout, maximum age.
    pub sessions: SessionLimits,
    /// Login attempts per minute: per client address, and every client together.
    pub login_per_ip_per_minute: u32,
    /// Login attempts per minute of every client together.
    pub login_global_per_minute: u32,
    /// The reverse proxies whose `X-Forwarded-For` names the client (the login's per-address
    /// limit and its log); empty: the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// How long a connection may take to send a request's head.
    pub header_read_timeout: Duration,
    /// How long a request may take to be answered (its head).
    pub request_timeout: Duration,
    /// The tokens the API accepts.
    pub tokens: Vec<TokenEntry>,
}

/// How long browser sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Without a request for this long, a session ends.
    pub idle: Duration,
    /// This long after its login, a session ends whatever its use.
    pub max_age: Duration,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            idle: Duration::from_secs(8 * 3600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Validates `[serve]`.
pub fn validate(raw: &RawServe) -> Result<ServeSettings> {
    let cfg = |m: String| Error::Config(m);
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        cfg(format!(
            "serve.listen = '{}' is not an address like 127.0.0.1:8089",
            raw.listen
        ))
    })?;
    let base_path = base_path(&raw.base_path).map_err(cfg)?;
    let tls =
        match (raw.tls_cert.is_empty(), raw.tls_key.is_empty()) {
            (true, true) => None,
            (false, false) => Some((PathBuf::from(&raw.tls_cert), PathBuf::from(&raw.tls_key))),
            _ => return Err(cfg(
                "serve.tls_cert and serve.tls_key go together: set both (the server terminates \
                 TLS) or neither (plain HTTP, behind a proxy that terminates it)"
                    .into(),
            )),
        };
    let mut tokens: Vec<TokenEntry> = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.iter().enumerate() {
        let entry = token(i, t).map_err(cfg)?;
        if let Some(other) = tokens.iter().find(|o| o.name == entry.name) {
            return Err(cfg(format!(
                "serve.tokens[{i}].name = '{}' is used by another token already; names go into \
                 the audit trail, so each token needs its own",
                other.name
            )));
        }
        if tokens.iter().any(|o| o.hash == entry.hash) {
            return Err(cfg(format!(
                "serve.tokens[{i}].sha256 is the hash of another token too; create a token per \
                 holder with `redrive serve token --name NAME`"
            )));
        }
        tokens.push(entry);
    }
    let ms = |name: &str, v: u64, min: u64, max: u64| {
        if v < min || v > max {
            Err(cfg(format!(
                "serve.{name} = {v} must be between {min} and {max} (milliseconds)"
            )))
        } else {
            Ok(Duration::from_millis(v))
        }
    };
    const DAY: u64 = 24 * 3600 * 1000;
    let sessions = SessionLimits {
        idle: ms("session_ttl_ms", raw.session_ttl_ms, 1_000, 30 * DAY)?,
        max_age: ms(
            "session_max_age_ms",
            raw.session_max_age_ms,
            1_000,
            30 * DAY,
        )?,
    };
    if sessions.max_age < sessions.idle {
        return Err(cfg(format!(
            "serve.session_max_age_ms = {} is shorter than serve.session_ttl_ms = {}: a session \
             could never stay idle that long; raise the maximum age or lower the idle timeout",
            raw.session_max_age_ms, raw.session_ttl_ms
        )));
    }
    let per_minute = |name: &str, v: u32| {
        if v == 0 || v > 100_000 {
            Err(cfg(format!(
                "serve.{name} = {v} must be between 1 and 100000 login attempts a minute"
            )))
        } else {
            Ok(v)
        }
    };
    Ok(ServeSettings {
        enabled: raw.enabled,
        listen,
        base_path,
        read_only: raw.read_only,
        cookie_secure: raw.cookie_secure || tls.is_some(),
        tls,
        sessions,
        login_per_ip_per_minute: per_minute(
            "login_per_ip_per_minute",
            raw.login_per_ip_per_minute,
        )?,
        login_global_per_minute: per_minute(
            "login_global_per_minute",
            raw.login_global_per_minute,
        )?,
        trusted_proxies: TrustedProxies::parse(&raw.trusted_proxies).map_err(cfg)?,
        header_read_timeout: ms(
            "header_read_timeout_ms",
            raw.header_read_timeout_ms,
            100,
            600_000,
        )?,
        request_timeout: ms("request_timeout_ms", raw.request_timeout_ms, 100, DAY)?,
        tokens,
    })
}

/// `serve.base_path` normalised: `""` for `/`, else `/seg/seg` of URL-safe segments.
fn base_path(text: &str) -> std::result::Result<String, String> {
    let bad = |why: &str| format!("serve.base_path = '{text}' {why}");
    if !text.starts_with('/') {
        return Err(bad("must start with '/' (e.g. /redrive)"));
    }
    let trimmed = text.trim_end_matches('/');
    for seg in trimmed.split('/').skip(1) {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(bad("has an empty, '.' or '..' segment"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(bad(
                "may hold only ASCII letters, digits, '-', '_', '.', '~' between slashes",
            ));
        }
    }
    if trimmed.len() > 200 {
        return Err(bad("is longer than 200 bytes"));
    }
    Ok(trimmed.to_owned())
}

/// Checks one token entry as the config file's are checked (`redrive serve token` prints only
/// entries that load).
pub fn check_token(raw: &RawToken) -> std::result::Result<(), String> {
    token(0, raw).map(|_| ())
}

/// One token entry, validated.
fn token(i: usize, t: &RawToken) -> std::result::Result<TokenEntry, String> {
    let at = |field: &str| format!("serve.tokens[{i}].{field}");
    if t.name.is_empty()
        || t.name.len() > 64
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "{} = '{}' is invalid: use 1 to 64 ASCII letters, digits, '-', '_', '.', '@' (it is \
             the operator the audit trail names)",
            at("name"),
            t.name
        ));
    }
    let role = Role::parse(&t.role).ok_or_else(|| {
        format!(
            "{} = '{}' is not a role; the roles are viewer, operator, admin",
            at("role"),
            t.role
        )
    })?;
    let scope = if t.tenants.iter().any(|x| x == "*") {
        if t.tenants.len() > 1 {
            return Err(format!(
                "{} mixes \"*\" with tenant names; write [\"*\"] for every tenant or list them",
                at("tenants")
            ));
        }
        Scope::All
    } else if t.tenants.is_empty() {
        return Err(format!(
            "{} is empty: list the tenants the token may see, or [\"*\"] for all",
            at("tenants")
        ));
    } else {
        for name in &t.tenants {
            crate::task::validate_tenant(name).map_err(|e| format!("{}: {e}", at("tenants")))?;
        }
        Scope::Tenants(t.tenants.iter().cloned().collect())
    };
    let hash = parse_hex32(&t.sha256).ok_or_else(|| {
        format!(
            "{} is not a SHA-256 in hex (64 characters 0-9 a-f); `redrive serve token --name {}` \
             prints a token and its hash",
            at("sha256"),
            t.name
        )
    })?;
    Ok(TokenEntry {
        name: t.name.clone(),
        role,
        scope,
        see_payloads: t.see_payloads || role >= Role::Operator,
        hash,
    })
}

/// 64 hex digits as 32 bytes.
fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawServe {
        RawServe {
            enabled: false,
            listen: "127.0.0.1:8089".into(),
            base_path: "/".into(),
            read_only: false,
            tls_cert: String::new(),
            tls_key: String::new(),
            cookie_secure: false,
            session_ttl_ms: 8 * 3600 * 1000,
            session_max_age_ms: 24 * 3600 * 1000,
            login_per_ip_per_minute: 10,
            login_global_per_minute: 100,
            trusted_proxies: vec![],
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            tokens: vec![RawToken {
                name: "ops".into(),
                role: "operator".into(),
                tenants: vec!["*".into()],
                sha256: "ab".repeat(32),
                see_payloads: false,
            }],
        }
    }

    #[test]
    fn defaults_and_a_token_validate() {
        let s = validate(&raw()).unwrap();
        assert_eq!(s.base_path, "");
        assert_eq!(s.tokens[0].role, Role::Operator);
        assert!(s.tokens[0].see_payloads, "operators see payloads");
        assert_eq!(s.tokens[0].hash, [0xab; 32]);
        let mut r = raw();
        r.base_path = "/redrive/api/".into();
        assert_eq!(validate(&r).unwrap().base_path, "/redrive/api");
        assert!(!s.cookie_secure, "plain HTTP");
        assert!(s.trusted_proxies.is_empty(), "nobody is trusted by default");
        let mut p = raw();
        p.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        let trusted = validate(&p).unwrap().trusted_proxies;
        assert!(trusted.trusts("10.2.3.4".parse().unwrap()));
        assert!(!trusted.trusts("127.0.0.2".parse().unwrap()));
        assert_eq!(s.sessions, SessionLimits::default());
        r.cookie_secure = true;
        assert!(validate(&r).unwrap().cookie_secure, "behind a TLS proxy");
    }

    #[test]
    fn bad_values_name_the_setting() {
        type Edit = fn(&mut RawServe);
        let cases: &[(Edit, &str)] = &[
            (
                |r| r.listen = "localhost".into(),
                "serve.listen = 'localhost'",
            ),
            (|r| r.base_path = "redrive".into(), "must start with '/'"),
            (|r| r.base_path = "/a//b".into(), "empty, '.' or '..'"),
            (|r| r.base_path = "/a/../b".into(), "empty, '.' or '..'"),
            (|r| r.base_path = "/a b".into(), "may hold only"),
            (|r| r.tls_cert = "cert.pem".into(), "go together"),
            (
                |r| r.session_ttl_ms = 10,
                "serve.session_ttl_ms = 10 must be between 1000",
            ),
            (
                |r| r.session_max_age_ms = 3_600_000,
                "serve.session_max_age_ms = 3600000 is shorter than serve.session_ttl_ms",
            ),
            (
                |r| r.login_per_ip_per_minute = 0,
                "serve.login_per_ip_per_minute = 0 must be between 1",
            ),
            (
                |r| r.trusted_proxies = vec!["10.0.0.0/8".into(), "proxy".into()],
                "serve.trusted_proxies[1] = 'proxy' is not an IP address or a CIDR range",
            ),
            (
                |r| r.header_read_timeout_ms = 0,
                "serve.header_read_timeout_ms = 0",
            ),
            (
                |r| r.tokens[0].name = "a b".into(),
                "serve.tokens[0].name = 'a b'",
            ),
            (|r| r.tokens[0].role = "root".into(), "is not a role"),
            (|r| r.tokens[0].tenants = vec![], "is empty"),
            (
                |r| r.tokens[0].tenants = vec!["*".into(), "acme".into()],
                "mixes \"*\"",
            ),
            (
                |r| r.tokens[0].tenants = vec!["no way".into()],
                "serve.tokens[0].tenants: tenant 'no way'",
            ),
            (|r| r.tokens[0].sha256 = "abc".into(), "is not a SHA-256"),
            (|r| r.tokens[0].sha256 = "zz".repeat(32), "is not a SHA-256"),
            (
                |r| {
                    let mut t = r.tokens[0].clone();
                    t.sha256 = "cd".repeat(32);
                    r.tokens.push(t);
                },
                "serve.tokens[1].name = 'ops' is used by another token",
            ),
            (
                |r| {
                    let mut t = r.tokens[0].clone();
                    t.name = "other".into();
                    r.tokens.push(t);
                },
                "serve.tokens[1].sha256 is the hash of another token",
            ),
        ];
        for (edit, want) in cases {
            let mut r = raw();
            edit(&mut r);
            let err = validate(&r).unwrap_err();
            assert_eq!(err.exit_code(), 78);
            let err = err.to_string();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        }
    }

    #[test]
    fn a_viewer_sees_payloads_only_when_allowed() {
        let mut r = raw();
        r.tokens[0].role = "viewer".into();
        assert!(!validate(&r).unwrap().tokens[0].see_payloads);
        r.tokens[0].see_payloads = true;
        assert!(validate(&r).unwrap().tokens[0].see_payloads);
    }
}
