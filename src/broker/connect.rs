//! Connecting to Redis: the validated connection settings, the URL check the config runs, and
//! how a URL is shown (password redacted).

use std::time::Duration;

/// Validated Redis settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Connection URL, or `None` when not configured.
    pub url: Option<String>,
    /// Key prefix.
    pub key_prefix: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response timeout of non-blocking commands.
    pub response_timeout: Duration,
}

/// Checks that `url` is a Redis URL the client accepts; the client's reason otherwise.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
pub fn redact_url(url: &str) -> String {
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
