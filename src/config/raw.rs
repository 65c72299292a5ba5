//! [`RawConfig`]: every section of the library's settings as loaded, before validation.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::admin::RawAdmin;
use super::archive::RawArchive;
use super::classify::RawClassify;
use super::connection::RawRedis;
use super::fleet::RawFleet;
use super::handlers::{redact, RawHandler};
use super::isolation::RawIsolation;
use super::layers;
use super::limits::{RawDeadLetter, RawLimits};
use super::log::RawLog;
use super::metrics::RawMetrics;
use super::notify::RawNotify;
use super::reclaim::RawReclaim;
use super::retry::RawRetry;
use super::tasks::RawTasks;
use crate::broker::redact_url;
use crate::error::{Error, Result};

/// The library's sections (`[[handlers]]` included), in the order they are read.
pub(crate) const SECTIONS: [&str; 15] = [
    "redis",
    "fleet",
    "retry",
    "reclaim",
    "classify",
    "isolation",
    "limits",
    "dead_letter",
    "archive",
    "tasks",
    "admin",
    "log",
    "metrics",
    "handlers",
    "notify",
];

/// Every setting as loaded, before validation. An embedder may edit it before
/// [`crate::Settings::from_raw`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[[handlers]]`: the routing table, each entry as written.
    #[serde(default)]
    pub handlers: Vec<RawHandler>,
    /// `[redis]`
    pub redis: RawRedis,
    /// `[fleet]`
    pub fleet: RawFleet,
    /// `[retry]`
    pub retry: RawRetry,
    /// `[reclaim]`
    pub reclaim: RawReclaim,
    /// `[classify]`
    pub classify: RawClassify,
    /// `[isolation]`
    pub isolation: RawIsolation,
    /// `[limits]`
    pub limits: RawLimits,
    /// `[dead_letter]`
    pub dead_letter: RawDeadLetter,
    /// `[archive]`
    pub archive: RawArchive,
    /// `[tasks]`
    pub tasks: RawTasks,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[log]`
    pub log: RawLog,
    /// `[metrics]`
    pub metrics: RawMetrics,
    /// `[notify]` and `[[notify.targets]]`
    pub notify: RawNotify,
}

impl RawConfig {
    /// The built-in defaults alone, without any file or environment.
    pub fn defaults() -> Result<RawConfig> {
        RawConfig::from_figment(&layers::defaults(&[]), &[])
    }

    /// Loads the layers: built-in defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<RawConfig> {
        RawConfig::from_figment(&layers::figment(file, &[])?, &[])
    }

    /// Reads the library's sections out of `fig`. A top-level section that is neither one of
    /// them nor among `other_sections` (an application's own) is refused.
    pub(crate) fn from_figment(
        fig: &Figment,
        other_sections: &'static [&'static str],
    ) -> Result<RawConfig> {
        check_sections(fig, other_sections)?;
        Ok(RawConfig {
            handlers: section(fig, "handlers")?,
            redis: section(fig, "redis")?,
            fleet: section(fig, "fleet")?,
            retry: section(fig, "retry")?,
            reclaim: section(fig, "reclaim")?,
            classify: section(fig, "classify")?,
            isolation: section(fig, "isolation")?,
            limits: section(fig, "limits")?,
            dead_letter: section(fig, "dead_letter")?,
            archive: section(fig, "archive")?,
            tasks: section(fig, "tasks")?,
            admin: section(fig, "admin")?,
            log: section(fig, "log")?,
            metrics: section(fig, "metrics")?,
            notify: section(fig, "notify")?,
        })
    }

    /// The settings as TOML with the password in redis.url replaced by `***`, the secrets
    /// of `[[handlers]]` entries (secrets, tokens, passwords, keys, header values) by
    /// `<redacted>`, and the paths of notification targets' URLs cut.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        copy.redis.url = redact_url(&copy.redis.url);
        copy.handlers = copy.handlers.iter().map(redact).collect();
        copy.notify.targets = copy
            .notify
            .targets
            .iter()
            .map(super::notify::redact)
            .collect();
        toml::to_string(&copy).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// One section, with figment's message on a wrong or unknown key ("unknown field: found
/// `concurency` … for key "default.fleet.concurency" in fleet.toml TOML file").
pub(crate) fn section<T: DeserializeOwned>(fig: &Figment, name: &str) -> Result<T> {
    fig.extract_inner::<T>(name).map_err(|e| {
        // extract_inner appends the section to the key path ("concurency.fleet"); put it
        // first, where a whole-config extraction names it ("fleet.concurency").
        let fixed = e
            .into_iter()
            .map(|mut err| {
                if err.path.last().map(String::as_str) == Some(name) {
                    err.path.rotate_right(1);
                }
                err
            })
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .reduce(|later, err| later.chain(err));
        Error::Config(fixed.map(|e| e.to_string()).unwrap_or_default())
    })
}

/// Refuses a top-level section nobody reads, with the message a whole-config extraction gives
/// ("unknown field: found `flet`, expected `one of `redis`, …`` for key "default.flet" …").
fn check_sections(fig: &Figment, other_sections: &'static [&'static str]) -> Result<()> {
    let top: BTreeMap<String, IgnoredAny> =
        fig.extract().map_err(|e| Error::Config(e.to_string()))?;
    let known = |name: &str| SECTIONS.contains(&name) || other_sections.contains(&name);
    let Some(unknown) = top.keys().find(|k| !known(k)) else {
        return Ok(());
    };
    // figment's error kind wants the expected names as a 'static list; it is built once, on
    // the way to a configuration error that ends the command.
    let expected: Vec<&'static str> = SECTIONS
        .iter()
        .copied()
        .chain(other_sections.iter().copied())
        .collect();
    let mut err = figment::Error::from(figment::error::Kind::UnknownField(
        unknown.clone(),
        Box::leak(expected.into_boxed_slice()),
    ));
    err.profile = Some(figment::Profile::Default);
    err.path = vec![unknown.clone()];
    err.metadata = fig.find_metadata(unknown).cloned();
    Err(Error::Config(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    #[test]
    fn wrong_keys_and_sections_are_named_as_a_whole_config_would_name_them() {
        let fig = layers::defaults(&[]).merge(Toml::string("[fleet]\nconcurency = 8\n"));
        let err = RawConfig::from_figment(&fig, &[]).unwrap_err().to_string();
        assert!(
            err.contains("unknown field: found `concurency`")
                && err.contains("for key \"default.fleet.concurency\""),
            "{err}"
        );
        let fig = layers::defaults(&[]).merge(Toml::string("[flet]\nx = 1\n"));
        let err = RawConfig::from_figment(&fig, &["demo"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field: found `flet`, expected `one of `redis`, `fleet`")
                && err.contains("`metrics`, `handlers`, `notify`, `demo``")
                && err.contains("for key \"default.flet\""),
            "{err}"
        );
    }
}
