//! The layers settings are read from, later wins: the built-in defaults (the library's
//! `config/default.toml`, then any an application adds for its own sections), a TOML file, the
//! `REDRIVE_<SECTION>__<KEY>` variables, and `REDRIVE_REDIS_URL` for `redis.url`.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use crate::error::{Error, Result};

/// The library's documented defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Variables under the `REDRIVE_` prefix that are read elsewhere, never as
/// `REDRIVE_<SECTION>__<KEY>` settings.
pub const OTHER_VARS: &[&str] = &[
    "REDRIVE_CONFIG",
    "REDRIVE_REDIS_URL",
    "REDRIVE_FAILPOINT",
    "REDRIVE_OPERATOR",
];

/// The built-in defaults: the library's, then `extra_defaults` (an application's sections).
pub(crate) fn defaults(extra_defaults: &[&str]) -> Figment {
    extra_defaults
        .iter()
        .fold(Figment::from(Toml::string(DEFAULT_TOML)), |fig, toml| {
            fig.merge(Toml::string(toml))
        })
}

/// Every layer: the defaults, then `file` (if any), then the environment.
pub(crate) fn figment(file: Option<&Path>, extra_defaults: &[&str]) -> Result<Figment> {
    let mut fig = defaults(extra_defaults);
    if let Some(path) = file {
        if !path.is_file() {
            return Err(Error::Config(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file(path));
    }
    let sections = sections(extra_defaults);
    Ok(fig
        .merge(
            Env::prefixed("REDRIVE_")
                .filter(move |key| is_setting_var(key.as_str(), &sections))
                .split("__"),
        )
        .merge(
            Env::raw()
                .only(&["REDRIVE_REDIS_URL"])
                .map(|_| "redis.url".into()),
        ))
}

/// Each defaults file as a TOML table (a file that does not parse counts as empty).
fn default_tables(extra_defaults: &[&str]) -> Vec<toml::Table> {
    std::iter::once(DEFAULT_TOML)
        .chain(extra_defaults.iter().copied())
        .filter_map(|text| text.parse::<toml::Table>().ok())
        .collect()
}

/// The top-level sections of the settings (`redis`, `fleet`, …), from the built-in defaults.
fn sections(extra_defaults: &[&str]) -> Vec<String> {
    default_tables(extra_defaults)
        .iter()
        .flat_map(|t| t.keys().cloned())
        .collect()
}

/// Whether `key` (a variable's name after `REDRIVE_`) has the settings form
/// `<SECTION>__<KEY>` with a real section. Anything else under the prefix (Kubernetes'
/// `REDRIVE_PORT`, `REDRIVE_SERVICE_HOST`, …) is not a setting and is left alone; a wrong key
/// inside a real section still fails validation.
fn is_setting_var(key: &str, sections: &[String]) -> bool {
    match key.split_once("__") {
        Some((section, rest)) => {
            !rest.is_empty() && sections.iter().any(|s| s.eq_ignore_ascii_case(section))
        }
        None => false,
    }
}

/// Every setting's variable name (`REDRIVE_FLEET__CONCURRENCY`, …) with its dotted path.
fn setting_vars(extra_defaults: &[&str]) -> Vec<(String, String)> {
    fn walk(table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
        for (k, v) in table {
            path.push(k.clone());
            match v {
                toml::Value::Table(t) if !t.is_empty() => walk(t, path, out),
                _ => out.push((
                    format!("REDRIVE_{}", path.join("__").to_ascii_uppercase()),
                    path.join("."),
                )),
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    for t in default_tables(extra_defaults) {
        walk(&t, &mut Vec::new(), &mut out);
    }
    out
}

/// Warnings for the variables among `names` that start with `REDRIVE_`, are not settings
/// (so they are ignored) and differ from a real setting's variable only in underscores, e.g.
/// `REDRIVE_FLEET_CONCURRENCY` for `REDRIVE_FLEET__CONCURRENCY`. Values are never shown.
pub(crate) fn env_near_misses<I, S>(names: I, extra_defaults: &[&str]) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let sections = sections(extra_defaults);
    let settings: Vec<(String, String, String)> = setting_vars(extra_defaults)
        .into_iter()
        .map(|(var, path)| (squash(&var), var, path))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let name = name.as_ref();
        let Some(rest) = name
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("REDRIVE_"))
            .and_then(|_| name.get(8..))
        else {
            continue;
        };
        if is_setting_var(rest, &sections)
            || OTHER_VARS.iter().any(|o| o.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let squashed = squash(name);
        if let Some((_, var, path)) = settings.iter().find(|(s, _, _)| *s == squashed) {
            out.push(format!(
                "environment variable {name} is not a setting and is ignored: did you mean {var} \
                 ({path})? Section and key are separated by two underscores"
            ));
        }
    }
    out
}

/// [`env_near_misses`] over this process's environment.
pub(crate) fn env_warnings(extra_defaults: &[&str]) -> Vec<String> {
    env_near_misses(
        std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        extra_defaults,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_section_key_variables_are_settings_and_near_misses_are_named() {
        let sections = sections(&[]);
        for (key, want) in [
            ("FLEET__CONCURRENCY", true),
            ("fleet__concurrency", true),
            ("FLEET__CONCURENCY", true), // a real section: its typo fails validation
            ("ISOLATION__BREAKER__MIN_FAILURES", true),
            ("PORT", false),
            ("SERVICE_HOST", false),
            ("PORT_9464_TCP_ADDR", false),
            ("FLEET_CONCURRENCY", false),
            ("REDIS_URL", false),
            ("NOPE__X", false),
            ("FLEET__", false),
        ] {
            assert_eq!(is_setting_var(key, &sections), want, "{key}");
        }
        let warnings = env_near_misses(
            [
                "REDRIVE_FLEET_CONCURRENCY",
                "REDRIVE_ISOLATION_BREAKER_MIN_FAILURES",
                "REDRIVE_PORT",
                "REDRIVE_SERVICE_HOST",
                "REDRIVE_PORT_9464_TCP_ADDR",
                "REDRIVE_REDIS_URL",
                "REDRIVE_CONFIG",
                "REDRIVE_FAILPOINT",
                "REDRIVE_FLEET__CONCURRENCY",
                "PATH",
            ],
            &[],
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("REDRIVE_FLEET_CONCURRENCY")
                && warnings[0]
                    .contains("did you mean REDRIVE_FLEET__CONCURRENCY (fleet.concurrency)"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("REDRIVE_ISOLATION__BREAKER__MIN_FAILURES"),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_applications_sections_are_settings_too() {
        let app = "[demo]\ntasks = 1\n";
        assert!(is_setting_var("DEMO__TASKS", &sections(&[app])));
        assert!(!is_setting_var("DEMO__TASKS", &sections(&[])));
        let warnings = env_near_misses(["REDRIVE_DEMO_TASKS"], &[app]);
        assert!(
            warnings.len() == 1 && warnings[0].contains("did you mean REDRIVE_DEMO__TASKS"),
            "{warnings:?}"
        );
    }
}
