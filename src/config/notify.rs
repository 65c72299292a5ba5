//! `[notify]` and `[[notify.targets]]`: tenant notifications — per tenant, webhook targets (a
//! URL and a secret, read from a file or a variable, never from the config itself, never shown)
//! for the events they want: a digest of dead letters per interval, escalations to the tenant,
//! the breaker opening and closing. Delivered at least once by one member at a time per tenant
//! (src/fleet/notifier.rs), retried with backoff, given up as `failed` after `max_attempts`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{check_ident, check_range};
use crate::broker::{NotifyPlan, Wants};
use crate::error::{Error, Result};

/// The event names `events` takes.
pub const EVENTS: [&str; 3] = ["dead_lettered", "escalated", "breaker"];

/// The `[notify]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// How long a tenant's dead letters are gathered into one digest, ms.
    pub digest_interval_ms: u64,
    /// How often a member looks at each tenant's outbox, ms.
    pub poll_interval_ms: u64,
    /// How long a member's delivery lease on a tenant lasts without renewal, ms.
    pub lease_ms: u64,
    /// How long one request to a target may take, ms.
    pub timeout_ms: u64,
    /// Attempts at one event before it is given up as `failed`.
    pub max_attempts: u32,
    /// The first retry's delay, ms (doubling each time).
    pub retry_base_ms: u64,
    /// The longest delay between retries, ms.
    pub retry_max_ms: u64,
    /// Requests per minute to one tenant's targets at most.
    pub rate_per_minute: u32,
    /// Approximate cap of each tenant's delivery log.
    pub log_max_len: u64,
    /// The targets.
    #[serde(default)]
    pub targets: Vec<RawTarget>,
}

/// One `[[notify.targets]]` entry as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Its name (unique per tenant; logs, metrics and the delivery log name it).
    #[serde(default)]
    pub name: String,
    /// The tenant whose events it gets.
    #[serde(default)]
    pub tenant: String,
    /// Where events are POSTed (http or https).
    #[serde(default)]
    pub url: String,
    /// A file holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// An environment variable holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The events it wants (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// A signing secret: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated target. Its `Debug` shows the endpoint, never the URL's path or query (a
/// webhook URL often carries a token) nor the secret.
#[derive(Clone)]
pub struct NotifyTarget {
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Where events are POSTed.
    pub url: reqwest::Url,
    /// `scheme://host:port` of the URL: what logs show (a path or query may carry a token).
    pub endpoint: String,
    /// The signing secret.
    pub secret: Secret,
    /// The events it wants.
    pub wants: Wants,
}

impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("endpoint", &self.endpoint)
            .field("secret", &self.secret)
            .field("wants", &self.wants)
            .finish()
    }
}

impl NotifyTarget {
    /// Whether it wants an outbox event of type `kind`.
    pub fn wants_kind(&self, kind: &str) -> bool {
        match kind {
            "dead_lettered" => self.wants.dead_lettered,
            "escalated" => self.wants.escalated,
            "breaker_opened" | "breaker_closed" => self.wants.breaker,
            _ => false,
        }
    }
}

/// Validated `[notify]` settings.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// How long dead letters are gathered into one digest.
    pub digest_interval: Duration,
    /// How often a member looks at each tenant's outbox.
    pub poll_interval: Duration,
    /// The delivery lease's time to live.
    pub lease: Duration,
    /// One request's longest time.
    pub timeout: Duration,
    /// Attempts at one event before it is given up.
    pub max_attempts: u32,
    /// The first retry's delay.
    pub retry_base: Duration,
    /// The longest delay between retries.
    pub retry_max: Duration,
    /// Requests per minute to one tenant's targets at most.
    pub rate_per_minute: u32,
    /// Approximate cap of each tenant's delivery log.
    pub log_max_len: u64,
    /// The targets, in the order written.
    pub targets: Vec<NotifyTarget>,
}

impl NotifySettings {
    /// What the scripts record for each tenant with targets (set on the broker).
    pub fn plan(&self) -> NotifyPlan {
        let mut tenants: HashMap<String, Wants> = HashMap::new();
        for t in &self.targets {
            let w = tenants.entry(t.tenant.clone()).or_default();
            w.dead_lettered |= t.wants.dead_lettered;
            w.escalated |= t.wants.escalated;
            w.breaker |= t.wants.breaker;
        }
        NotifyPlan { tenants }
    }

    /// The tenants with targets, each with its targets, in the order first written.
    pub fn by_tenant(&self) -> Vec<(String, Vec<NotifyTarget>)> {
        let mut out: Vec<(String, Vec<NotifyTarget>)> = Vec::new();
        for t in &self.targets {
            match out.iter_mut().find(|(x, _)| *x == t.tenant) {
                Some((_, v)) => v.push(t.clone()),
                None => out.push((t.tenant.clone(), vec![t.clone()])),
            }
        }
        out
    }

    /// The delay before retry number `attempt` (1 for the first retry): `retry_base` doubled
    /// each time, at most `retry_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.retry_base
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// A configuration error about `notify.targets[i].<key>`.
fn err(i: usize, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("notify.targets[{i}].{key}: {msg}"))
}

/// The URL of target `i`, checked (never echoed: a webhook URL often carries a token).
fn url(i: usize, text: &str) -> Result<(reqwest::Url, String)> {
    if text.is_empty() {
        return Err(err(
            i,
            "url",
            "is required: where events are POSTed, e.g. \"https://hooks.example/redrive\"",
        ));
    }
    let url =
        reqwest::Url::parse(text).map_err(|e| err(i, "url", format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(
            i,
            "url",
            format!(
                "scheme '{}' is not supported: use http or https",
                url.scheme()
            ),
        ));
    }
    let Some(host) = url.host_str() else {
        return Err(err(i, "url", "has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            i,
            "url",
            "must not carry credentials: the requests are signed with the target's secret",
        ));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let endpoint = format!("{}://{host}:{port}", url.scheme());
    Ok((url, endpoint))
}

/// The secret of target `i`, from its file or variable (exactly one of them).
fn secret(i: usize, t: &RawTarget) -> Result<Secret> {
    let text =
        match (&t.secret_file, &t.secret_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    i,
                    "secret_file",
                    "give secret_file or secret_env, not both",
                ))
            }
            (None, None) => return Err(err(
                i,
                "secret_file",
                "a target needs a signing secret: secret_file (a file holding it) or secret_env \
                 (a variable holding it)",
            )),
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| err(i, "secret_file", format!("cannot read {path}: {e}")))?,
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                err(
                    i,
                    "secret_env",
                    format!("the variable {var} is not set (or not UTF-8)"),
                )
            })?,
        };
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.is_empty() {
        let key = if t.secret_file.is_some() {
            "secret_file"
        } else {
            "secret_env"
        };
        return Err(err(i, key, "holds an empty secret"));
    }
    Ok(Secret(text))
}

/// Validates `[notify]`: ranges, the lease against the request timeout, and every target.
pub(crate) fn validate(raw: &RawNotify) -> Result<NotifySettings> {
    check_range(
        "notify.digest_interval_ms",
        raw.digest_interval_ms,
        100,
        86_400_000,
    )?;
    check_range("notify.poll_interval_ms", raw.poll_interval_ms, 10, 600_000)?;
    check_range("notify.timeout_ms", raw.timeout_ms, 100, 600_000)?;
    check_range("notify.lease_ms", raw.lease_ms, 300, 3_600_000)?;
    check_range("notify.max_attempts", raw.max_attempts, 1, 1_000)?;
    check_range("notify.retry_base_ms", raw.retry_base_ms, 10, 3_600_000)?;
    check_range("notify.retry_max_ms", raw.retry_max_ms, 10, 86_400_000)?;
    check_range("notify.rate_per_minute", raw.rate_per_minute, 1, 100_000)?;
    check_range("notify.log_max_len", raw.log_max_len, 10, 10_000_000)?;
    if raw.retry_max_ms < raw.retry_base_ms {
        return Err(Error::Config(format!(
            "notify.retry_max_ms = {} is below notify.retry_base_ms = {}",
            raw.retry_max_ms, raw.retry_base_ms
        )));
    }
    // A request and the acks around it must fit in a lease, or another member takes the
    // tenant over while a request is out (a duplicate, never a loss).
    if raw.lease_ms < 2 * raw.timeout_ms + raw.poll_interval_ms {
        return Err(Error::Config(format!(
            "notify.lease_ms = {} must be at least twice notify.timeout_ms ({}) plus \
             notify.poll_interval_ms ({}): a member's lease must outlast its request",
            raw.lease_ms, raw.timeout_ms, raw.poll_interval_ms
        )));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    let mut names = HashSet::new();
    for (i, t) in raw.targets.iter().enumerate() {
        check_ident(&format!("notify.targets[{i}].name"), &t.name, &[])?;
        crate::task::validate_tenant(&t.tenant).map_err(|e| err(i, "tenant", e))?;
        if !names.insert((t.tenant.clone(), t.name.clone())) {
            return Err(err(
                i,
                "name",
                format!(
                    "'{}' names another target of tenant {} already",
                    t.name, t.tenant
                ),
            ));
        }
        let (url, endpoint) = url(i, &t.url)?;
        let secret = secret(i, t)?;
        let list = t
            .events
            .clone()
            .unwrap_or_else(|| EVENTS.iter().map(|e| (*e).to_owned()).collect());
        if list.is_empty() {
            return Err(err(
                i,
                "events",
                format!("is empty: give some of {}", EVENTS.join(", ")),
            ));
        }
        let mut wants = Wants::default();
        for e in &list {
            match e.as_str() {
                "dead_lettered" => wants.dead_lettered = true,
                "escalated" => wants.escalated = true,
                "breaker" => wants.breaker = true,
                other => {
                    return Err(err(
                        i,
                        "events",
                        format!(
                            "'{other}' is not an event; the events are {}",
                            EVENTS.join(", ")
                        ),
                    ))
                }
            }
        }
        targets.push(NotifyTarget {
            name: t.name.clone(),
            tenant: t.tenant.clone(),
            url,
            endpoint,
            secret,
            wants,
        });
    }
    Ok(NotifySettings {
        digest_interval: Duration::from_millis(raw.digest_interval_ms),
        poll_interval: Duration::from_millis(raw.poll_interval_ms),
        lease: Duration::from_millis(raw.lease_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
        max_attempts: raw.max_attempts,
        retry_base: Duration::from_millis(raw.retry_base_ms),
        retry_max: Duration::from_millis(raw.retry_max_ms),
        rate_per_minute: raw.rate_per_minute,
        log_max_len: raw.log_max_len,
        targets,
    })
}

/// A target as `config show` prints it: the URL cut to its endpoint (its path and query may
/// carry a token).
pub(crate) fn redact(t: &RawTarget) -> RawTarget {
    let mut copy = t.clone();
    if let Ok(u) = reqwest::Url::parse(&t.url) {
        if u.path() != "/" || u.query().is_some() {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            copy.url = format!(
                "{}://{}{port}/<redacted>",
                u.scheme(),
                u.host_str().unwrap_or("")
            );
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(targets: Vec<RawTarget>) -> RawNotify {
        RawNotify {
            digest_interval_ms: 60_000,
            poll_interval_ms: 1_000,
            lease_ms: 15_000,
            timeout_ms: 5_000,
            max_attempts: 10,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            rate_per_minute: 60,
            log_max_len: 1_000,
            targets,
        }
    }

    fn target(url: &str) -> RawTarget {
        RawTarget {
            name: "ops".into(),
            tenant: "acme".into(),
            url: url.into(),
            secret_env: Some("REDRIVE_TEST_NOTIFY_SECRET".into()),
            ..RawTarget::default()
        }
    }

    #[test]
    fn targets_are_validated_without_echoing_secrets_or_urls() {
        std::env::set_var("REDRIVE_TEST_NOTIFY_SECRET", "s3cret\n");
        let s = validate(&raw(vec![target("https://hooks.example/x?token=t0ken")])).unwrap();
        let t = &s.targets[0];
        assert_eq!(t.secret.expose(), "s3cret");
        assert_eq!(t.endpoint, "https://hooks.example:443");
        assert!(t.wants.dead_lettered && t.wants.escalated && t.wants.breaker);
        assert!(t.wants_kind("breaker_closed") && !t.wants_kind("other"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        assert_eq!(
            s.plan().tenants["acme"],
            Wants {
                dead_lettered: true,
                escalated: true,
                breaker: true
            }
        );
        let r = redact(&target("https://hooks.example/x?token=t0ken"));
        assert_eq!(r.url, "https://hooks.example/<redacted>");
        let cases = [
            (target("ftp://a/x"), "scheme 'ftp' is not supported"),
            (target("http://u:p@a/x"), "must not carry credentials"),
            (target(""), "notify.targets[0].url: is required"),
            (
                RawTarget {
                    secret_env: None,
                    ..target("http://a/t0ken")
                },
                "needs a signing secret",
            ),
            (
                RawTarget {
                    secret_env: Some("REDRIVE_TEST_NOTIFY_UNSET".into()),
                    ..target("http://a/t0ken")
                },
                "REDRIVE_TEST_NOTIFY_UNSET is not set",
            ),
            (
                RawTarget {
                    events: Some(vec!["breakers".into()]),
                    ..target("http://a/t0ken")
                },
                "'breakers' is not an event",
            ),
            (
                RawTarget {
                    tenant: "a{b".into(),
                    ..target("http://a/t0ken")
                },
                "notify.targets[0].tenant",
            ),
        ];
        for (t, want) in cases {
            let e = validate(&raw(vec![t])).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("t0ken") && !e.contains("s3cret"), "{e}");
        }
        let e = validate(&raw(vec![target("http://a/"), target("http://b/")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names another target"), "{e}");
        let mut short = raw(vec![]);
        short.lease_ms = 5_000;
        assert!(validate(&short)
            .unwrap_err()
            .to_string()
            .contains("lease_ms"));
    }

    #[test]
    fn retries_back_off_to_the_cap() {
        let s = validate(&raw(vec![])).unwrap();
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(4), Duration::from_secs(8));
        assert_eq!(s.backoff(30), Duration::from_secs(300));
        assert_eq!(s.backoff(1_000), Duration::from_secs(300));
    }
}
