//! The keys of a `type = "http"` entry of `[[handlers]]` (PROTOCOL.md, "Routing"), read and
//! validated: every message names the setting (`handlers[2].url`) and never repeats a secret or
//! a configured header's value.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::handler::HandlerSpec;

/// The keys an `http` entry takes besides the common ones (`kinds`, `type`, `timeout_ms`,
/// `max_concurrent`, which the spec carries already).
pub(crate) const KEYS: [&str; 8] = [
    "url",
    "headers",
    "secret",
    "secrets",
    "max_reply_bytes",
    "ca_file",
    "connect_timeout_ms",
    "max_idle_per_host",
];

/// Default for `max_reply_bytes`: a JSON reply, or one line of a streamed one (1 MiB).
pub(crate) const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Bounds of `max_reply_bytes`.
const REPLY_BYTES_RANGE: (u64, u64) = (1024, 64 * 1024 * 1024);
/// Default for `connect_timeout_ms`.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds of `connect_timeout_ms`.
const CONNECT_TIMEOUT_RANGE_MS: (u64, u64) = (1, 600_000);
/// Upper bound of `max_idle_per_host`.
const MAX_IDLE_LIMIT: u64 = 100_000;

/// Header names the handler sets itself (PROTOCOL.md, "HTTP headers"), the ones the HTTP
/// client manages, and the hop-by-hop ones (RFC 9110 §7.6.1): configured `headers` cannot
/// name them. Every `Redrive-*` name is reserved too.
const REFUSED_HEADERS: [&str; 16] = [
    "content-type",
    "content-length",
    "accept",
    "user-agent",
    "host",
    "traceparent",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// A validated `http` entry.
pub(crate) struct HttpOptions {
    /// Where every attempt is POSTed.
    pub url: reqwest::Url,
    /// `scheme://host:port` of `url`: what messages and logs show (a path or query may carry
    /// a token, as webhook URLs do).
    pub endpoint: String,
    /// The configured headers, marked sensitive (never printed by the HTTP stack).
    pub headers: HeaderMap,
    /// Secrets signing each request, in order (empty: unsigned).
    pub secrets: Vec<String>,
    /// The most bytes of a JSON reply or of one NDJSON line.
    pub max_reply_bytes: usize,
    /// Certificates of `ca_file`, trusted on top of the built-in roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// How long establishing a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How many idle keep-alive connections the pool keeps.
    pub max_idle_per_host: usize,
}

impl std::fmt::Debug for HttpOptions {
    /// Names only: no secret and no header value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            )
            .field("secrets", &self.secrets.len())
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("ca_certs", &self.ca_certs.len())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .finish()
    }
}

/// A configuration error about `handlers[i].<key>`.
fn err(spec: &HandlerSpec, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "handlers[{}].{key} (type {}): {msg}",
        spec.index, spec.type_name
    ))
}

impl HttpOptions {
    /// Reads and validates `spec.options`: unknown keys and bad values are configuration
    /// errors naming the setting.
    pub(crate) fn from_spec(spec: &HandlerSpec) -> Result<HttpOptions> {
        let o = &spec.options;
        if let Some(unknown) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                spec,
                unknown,
                format!(
                    "unknown key; an http handler takes {} (besides kinds, type, timeout_ms, \
                     max_concurrent)",
                    KEYS.join(", ")
                ),
            ));
        }
        let (url, endpoint) = url(spec)?;
        let headers = headers(spec)?;
        let secrets = secrets(spec)?;
        let max_reply_bytes = match integer(spec, "max_reply_bytes", REPLY_BYTES_RANGE)? {
            Some(n) => n as usize,
            None => DEFAULT_MAX_REPLY_BYTES,
        };
        let connect_timeout = match integer(spec, "connect_timeout_ms", CONNECT_TIMEOUT_RANGE_MS)? {
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        // One idle connection per attempt that may run at once, so a steady load reuses them all.
        let max_idle_per_host = match integer(spec, "max_idle_per_host", (0, MAX_IDLE_LIMIT))? {
            Some(n) => n as usize,
            None => spec.max_concurrent.min(MAX_IDLE_LIMIT as usize),
        };
        let ca_certs = ca_file(spec)?;
        Ok(HttpOptions {
            url,
            endpoint,
            headers,
            secrets,
            max_reply_bytes,
            ca_certs,
            connect_timeout,
            max_idle_per_host,
        })
    }
}

fn string<'a>(spec: &'a HandlerSpec, key: &str) -> Result<Option<&'a str>> {
    match spec.options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(spec, key, "must be a string")),
    }
}

fn integer(spec: &HandlerSpec, key: &str, (min, max): (u64, u64)) -> Result<Option<u64>> {
    let Some(v) = spec.options.get(key) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Some(n) => Err(err(
            spec,
            key,
            format!("{n} is out of range: it must be between {min} and {max}"),
        )),
        None => Err(err(
            spec,
            key,
            format!("must be an integer between {min} and {max}"),
        )),
    }
}

fn url(spec: &HandlerSpec) -> Result<(reqwest::Url, String)> {
    let Some(text) = string(spec, "url")? else {
        return Err(err(
            spec,
            "url",
            "is required: the agent's endpoint, e.g. \"http://127.0.0.1:8000/redrive\"",
        ));
    };
    // Not echoed: a URL may carry a token.
    let url =
        reqwest::Url::parse(text).map_err(|e| err(spec, "url", format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(
            spec,
            "url",
            format!(
                "scheme '{}' is not supported: use http or https",
                url.scheme()
            ),
        ));
    }
    let Some(host) = url.host_str() else {
        return Err(err(spec, "url", "has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            spec,
            "url",
            "must not carry credentials: send them in `headers` (e.g. Authorization)",
        ));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let endpoint = format!("{}://{host}:{port}", url.scheme());
    Ok((url, endpoint))
}

fn headers(spec: &HandlerSpec) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let Some(v) = spec.options.get("headers") else {
        return Ok(map);
    };
    let Value::Object(table) = v else {
        return Err(err(
            spec,
            "headers",
            "must be a table of header names to string values",
        ));
    };
    for (name, value) in table {
        let key = format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| err(spec, &key, "is not a valid HTTP header name"))?;
        let lower = header.as_str();
        if REFUSED_HEADERS.contains(&lower) || lower.starts_with("redrive-") {
            return Err(err(
                spec,
                &key,
                "cannot be configured: redrive sets it, the HTTP client manages it, or it is \
                 hop-by-hop (Redrive-* names are reserved)",
            ));
        }
        let Value::String(text) = value else {
            return Err(err(spec, &key, "must be a string"));
        };
        // The value is never echoed: it is often a credential.
        let mut value = HeaderValue::from_str(text).map_err(|_| {
            err(
                spec,
                &key,
                "is not a valid header value (visible ASCII and spaces only, no line breaks)",
            )
        })?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

fn secrets(spec: &HandlerSpec) -> Result<Vec<String>> {
    let one = spec.options.get("secret");
    let many = spec.options.get("secrets");
    match (one, many) {
        (Some(_), Some(_)) => Err(err(
            spec,
            "secret",
            "give either `secret` or `secrets` (a list, for rotation), not both",
        )),
        (Some(Value::String(s)), None) if !s.is_empty() => Ok(vec![s.clone()]),
        (Some(_), None) => Err(err(spec, "secret", "must be a non-empty string")),
        (None, Some(Value::Array(list))) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(err(
                    spec,
                    &format!("secrets[{i}]"),
                    "must be a non-empty string",
                )),
            })
            .collect(),
        (None, Some(_)) => Err(err(
            spec,
            "secrets",
            "must be a non-empty list of non-empty strings",
        )),
        (None, None) => Ok(Vec::new()),
    }
}

fn ca_file(spec: &HandlerSpec) -> Result<Vec<CertificateDer<'static>>> {
    let Some(path) = string(spec, "ca_file")? else {
        return Ok(Vec::new());
    };
    let path = PathBuf::from(path);
    let text = std::fs::read(&path).map_err(|e| {
        err(
            spec,
            "ca_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                spec,
                "ca_file",
                format!("{} is not a PEM file of certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            spec,
            "ca_file",
            format!(
                "{} holds no certificate (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")",
                path.display()
            ),
        ));
    }
    // Each must be usable as a trust anchor.
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots.add(c.clone()).map_err(|e| {
            err(
                spec,
                "ca_file",
                format!(
                    "certificate {} of {} cannot be trusted: {e}",
                    i + 1,
                    path.display()
                ),
            )
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(options: Value) -> HandlerSpec {
        let mut s = HandlerSpec::catch_all("http", Duration::from_secs(30), 16);
        s.index = 2;
        s.options = options.as_object().cloned().unwrap_or_default();
        s
    }

    fn error(options: Value) -> String {
        match HttpOptions::from_spec(&spec(options)) {
            Ok(o) => panic!("accepted: {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_a_full_entry() {
        let o =
            HttpOptions::from_spec(&spec(json!({"url": "http://127.0.0.1:8000/redrive"}))).unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:8000");
        assert_eq!(o.max_reply_bytes, DEFAULT_MAX_REPLY_BYTES);
        assert_eq!(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(o.max_idle_per_host, 16);
        assert!(o.secrets.is_empty() && o.headers.is_empty() && o.ca_certs.is_empty());

        let o = HttpOptions::from_spec(&spec(json!({
            "url": "https://agents.example/run?token=abc",
            "headers": {"Authorization": "Bearer s3cret", "X-Team": "ops"},
            "secrets": ["new", "old"],
            "max_reply_bytes": 4096,
            "connect_timeout_ms": 250,
            "max_idle_per_host": 0,
        })))
        .unwrap();
        assert_eq!(o.endpoint, "https://agents.example:443");
        assert_eq!(o.secrets, ["new", "old"]);
        assert_eq!(o.max_reply_bytes, 4096);
        assert_eq!(o.connect_timeout, Duration::from_millis(250));
        assert_eq!(o.max_idle_per_host, 0);
        assert!(o.headers["authorization"].is_sensitive());
        let shown = format!("{o:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("new") && !shown.contains("abc"));
    }

    #[test]
    fn bad_entries_are_refused_naming_the_setting_without_echoing_secrets() {
        let cases = [
            (json!({}), "handlers[2].url (type http): is required"),
            (
                json!({"url": "http://a", "urll": 1}),
                "handlers[2].urll (type http): unknown key",
            ),
            (json!({"url": "ftp://a/x"}), "scheme 'ftp' is not supported"),
            (
                json!({"url": "not a url"}),
                "handlers[2].url (type http): is not a URL",
            ),
            (
                json!({"url": 5}),
                "handlers[2].url (type http): must be a string",
            ),
            (
                json!({"url": "http://u:pw@a/"}),
                "must not carry credentials",
            ),
            (
                json!({"url": "http://a", "headers": {"Content-Type": "x"}}),
                "handlers[2].headers.Content-Type (type http): cannot be configured",
            ),
            (
                json!({"url": "http://a", "headers": {"Redrive-Tenant": "x"}}),
                "handlers[2].headers.Redrive-Tenant",
            ),
            (
                json!({"url": "http://a", "headers": {"Connection": "close"}}),
                "cannot be configured",
            ),
            (
                json!({"url": "http://a", "headers": {"X-Key": "line\nbreak-s3cret"}}),
                "handlers[2].headers.X-Key (type http): is not a valid header value",
            ),
            (
                json!({"url": "http://a", "headers": {"X-Key": 1}}),
                "headers.X-Key (type http): must be a string",
            ),
            (
                json!({"url": "http://a", "headers": "x"}),
                "must be a table",
            ),
            (
                json!({"url": "http://a", "secret": "s3cret", "secrets": ["s3cret"]}),
                "not both",
            ),
            (json!({"url": "http://a", "secret": ""}), "non-empty string"),
            (json!({"url": "http://a", "secrets": []}), "non-empty list"),
            (
                json!({"url": "http://a", "secrets": ["ok", 3]}),
                "handlers[2].secrets[1] (type http)",
            ),
            (
                json!({"url": "http://a", "max_reply_bytes": 10}),
                "max_reply_bytes (type http): 10 is out of range",
            ),
            (
                json!({"url": "http://a", "connect_timeout_ms": "5s"}),
                "connect_timeout_ms (type http): must be an integer",
            ),
            (
                json!({"url": "http://a", "ca_file": "/nonexistent/ca.pem"}),
                "handlers[2].ca_file (type http): cannot read /nonexistent/ca.pem",
            ),
        ];
        for (options, want) in cases {
            let got = error(options.clone());
            assert!(got.contains(want), "{options}: {got}");
            assert!(!got.contains("s3cret"), "{got}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("redrive-ca-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let got = error(json!({"url": "https://a", "ca_file": empty.to_str().unwrap()}));
        assert!(got.contains("holds no certificate"), "{got}");
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let got = error(json!({"url": "https://a", "ca_file": bad.to_str().unwrap()}));
        assert!(got.contains("cannot be trusted"), "{got}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
