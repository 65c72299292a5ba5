//! The application's own settings: `[demo]`, `[demo_agent]` and `[serve]` (defaults in `config/app.toml`,
//! layered right after the library's), and the handler types it registers besides the
//! library's (`demo`, `noop`), which `[[handlers]]` entries and `fleet.handler` may name. The
//! library neither reads nor validates them; every `redrive` command does, with the same
//! messages and exit code 78 as the library's settings.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub(crate) use crate::app::demo_agent::DemoAgentSettings;
use crate::app::serve::config::{RawServe, ServeSettings};
use crate::config::check::check_range;
use crate::config::{layers, section, RawConfig, Settings};
use crate::error::{Error, Result};
use crate::handler::{Handlers, NoopHandler};

/// The application's defaults, compiled in after the library's.
pub(crate) const APP_TOML: &str = include_str!("../../config/app.toml");

/// The application's sections, known to the loader besides the library's.
pub(crate) const APP_SECTIONS: &[&str] = &["demo", "demo_agent", "serve"];

/// The `[demo]` section as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    /// Number of synthetic tasks.
    pub tasks: usize,
    /// Tenants of the demo.
    pub tenants: Vec<String>,
}

/// The application's sections as written.
#[derive(Debug, Clone, Serialize)]
struct RawApp {
    /// `[demo]`
    demo: RawDemo,
    /// `[demo_agent]`
    demo_agent: DemoAgentSettings,
    /// `[serve]`
    serve: RawServe,
}

/// Everything `redrive` loads, before validation: the library's sections and its own.
#[derive(Debug, Clone)]
pub(crate) struct AppRaw {
    /// The library's sections.
    pub(crate) lib: RawConfig,
    /// `[demo]`
    pub(crate) demo: RawDemo,
    /// `[demo_agent]`
    pub(crate) demo_agent: DemoAgentSettings,
    /// `[serve]`
    pub(crate) serve: RawServe,
}

impl AppRaw {
    /// Loads the layers: the library's defaults, the application's, `file` (if any), then the
    /// environment (`REDRIVE_DEMO__TASKS` is a setting too).
    pub(crate) fn load(file: Option<&Path>) -> Result<AppRaw> {
        let fig = layers::figment(file, &[APP_TOML])?;
        Ok(AppRaw {
            lib: RawConfig::from_figment(&fig, APP_SECTIONS)?,
            demo: section(&fig, "demo")?,
            demo_agent: section(&fig, "demo_agent")?,
            serve: section(&fig, "serve")?,
        })
    }

    /// The settings as TOML, the password in redis.url replaced by `***`: the library's
    /// sections, then the application's.
    pub(crate) fn redacted_toml(&self) -> String {
        let app = RawApp {
            demo: self.demo.clone(),
            demo_agent: self.demo_agent.clone(),
            serve: self.serve.clone(),
        };
        let app =
            toml::to_string(&app).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"));
        format!("{}\n{app}", self.lib.redacted_toml())
    }
}

/// `[demo]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct DemoSettings {
    /// Number of synthetic tasks.
    pub(crate) tasks: usize,
    /// Tenants of the demo.
    pub(crate) tenants: Vec<String>,
}

/// The application's sections, validated.
#[derive(Debug, Clone)]
pub(crate) struct AppSettings {
    /// `[demo]`
    pub(crate) demo: DemoSettings,
    /// `[demo_agent]`: the simulated agent.
    pub(crate) demo_agent: DemoAgentSettings,
    /// `[serve]`: the HTTP API.
    pub(crate) serve: ServeSettings,
}

/// The handler types `redrive` registers besides the library's (`http`, `pool`, `exec`):
/// `demo` (the simulated agent, built only when configured) and `noop`.
pub(crate) fn handlers(agent: DemoAgentSettings) -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .register_simple("demo", move || {
            crate::app::demo_agent::handler(agent.clone())
        })
        .register_simple("noop", || Ok(std::sync::Arc::new(NoopHandler)));
    handlers
}

/// Validates everything `redrive` loaded: the library's settings, then that every handler type
/// the routing table names is known ([`handlers`] or the library's), then `[demo]`,
/// `[demo_agent]` and `[serve]` (which, enabled in members, needs a token).
pub(crate) fn validate(raw: AppRaw) -> Result<(Settings, AppSettings)> {
    let settings = Settings::from_raw(raw.lib)?;
    handlers(raw.demo_agent.clone()).check(&settings)?;
    let demo = validate_demo(&raw.demo)?;
    let demo_agent = validate_demo_agent(&raw.demo_agent)?;
    let serve = crate::app::serve::config::validate(&raw.serve)?;
    if serve.enabled && serve.tokens.is_empty() {
        return Err(Error::Config(
            "serve.enabled = true starts the HTTP API in every member, and it needs at least one              [[serve.tokens]] entry: create one with `redrive serve token --name NAME`"
                .into(),
        ));
    }
    if serve.request_timeout <= settings.admin.reply_timeout {
        return Err(Error::Config(format!(
            "serve.request_timeout_ms = {} is not above admin.reply_timeout_ms = {}: a change that \
             waits for its result would be cut off before the result can come; raise \
             serve.request_timeout_ms",
            serve.request_timeout.as_millis(),
            settings.admin.reply_timeout.as_millis()
        )));
    }
    Ok((
        settings,
        AppSettings {
            demo,
            demo_agent,
            serve,
        },
    ))
}

/// Validates `[demo]`.
fn validate_demo(raw: &RawDemo) -> Result<DemoSettings> {
    check_range("demo.tasks", raw.tasks, 1, 10_000_000)?;
    if raw.tenants.is_empty() {
        return Err(Error::Config(
            "demo.tenants must name at least one tenant".into(),
        ));
    }
    for t in &raw.tenants {
        crate::task::validate_tenant(t).map_err(|e| Error::Config(format!("demo.tenants: {e}")))?;
    }
    Ok(DemoSettings {
        tasks: raw.tasks,
        tenants: raw.tenants.clone(),
    })
}

/// Validates `[demo_agent]`: probabilities that add up to at most 1, and work bounds in order.
fn validate_demo_agent(a: &DemoAgentSettings) -> Result<DemoAgentSettings> {
    let rates = [
        ("demo_agent.rate_limited", a.rate_limited),
        ("demo_agent.timeout", a.timeout),
        ("demo_agent.malformed_output", a.malformed_output),
        ("demo_agent.context_overflow", a.context_overflow),
        ("demo_agent.tool_failure", a.tool_failure),
        ("demo_agent.panic", a.panic),
        ("demo_agent.silent", a.silent),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Config(format!(
                "{name} = {rate} must be a probability between 0 and 1"
            )));
        }
    }
    let sum: f64 = rates.iter().map(|(_, r)| r).sum();
    if sum > 1.0 + 1e-9 {
        return Err(Error::Config(format!(
            "the demo_agent failure probabilities add up to {sum:.3}; their sum must not exceed 1"
        )));
    }
    if a.min_work_ms > a.max_work_ms {
        return Err(Error::Config(format!(
            "demo_agent.min_work_ms = {} exceeds demo_agent.max_work_ms = {}",
            a.min_work_ms, a.max_work_ms
        )));
    }
    Ok(a.clone())
}

/// Logging, the tenant label cap and panics as log lines, then warnings about ignored
/// variables (the application's sections included).
pub(crate) fn install_logging(settings: &Settings) {
    settings
        .telemetry()
        .install_logging(settings.log_format, &settings.log_level, env_warnings());
}

/// Near-miss warnings for `REDRIVE_*` variables, the application's sections included.
pub(crate) fn env_warnings() -> Vec<String> {
    layers::env_warnings(&[APP_TOML])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> AppRaw {
        let fig = layers::defaults(&[APP_TOML]);
        AppRaw {
            lib: RawConfig::from_figment(&fig, APP_SECTIONS).unwrap(),
            demo: section(&fig, "demo").unwrap(),
            demo_agent: section(&fig, "demo_agent").unwrap(),
            serve: section(&fig, "serve").unwrap(),
        }
    }

    #[test]
    fn defaults_are_valid_and_print_every_section() {
        let (settings, app) = validate(defaults()).unwrap();
        assert!(
            settings.handlers().is_empty(),
            "no handler runs unless configured"
        );
        assert_eq!(app.demo.tasks, 3000);
        let text = defaults().redacted_toml();
        let at = |s: &str| text.find(s).unwrap_or(usize::MAX);
        assert!(
            at("[metrics]") < at("[demo]")
                && at("[demo]") < at("[demo_agent]")
                && at("[demo_agent]") < at("[serve]"),
            "{text}"
        );
    }

    #[test]
    fn contradictions_name_the_setting() {
        type Edit = fn(&mut AppRaw);
        let cases: &[(Edit, &str)] = &[
            (
                |c| c.lib.fleet.handler = "gpt".into(),
                "fleet.handler = 'gpt' is unknown: the handlers are demo, noop",
            ),
            (
                |c| {
                    c.lib.handlers =
                        vec![serde_json::from_str(r#"{"kinds": ["a"], "type": "gpt"}"#).unwrap()]
                },
                "handlers[0].type = 'gpt' is unknown: the known types are demo, noop",
            ),
            (
                |c| c.demo_agent.panic = 1.5,
                "demo_agent.panic = 1.5 must be a probability",
            ),
            (|c| c.demo_agent.rate_limited = 0.99, "add up to"),
            (
                |c| c.demo_agent.min_work_ms = 99,
                "demo_agent.min_work_ms = 99 exceeds",
            ),
            (
                |c| c.demo.tenants = vec!["no way".into()],
                "demo.tenants: tenant 'no way'",
            ),
            (
                |c| c.serve.listen = "nowhere".into(),
                "serve.listen = 'nowhere'",
            ),
            (
                |c| c.serve.enabled = true,
                "serve.enabled = true starts the HTTP API in every member, and it needs",
            ),
            (
                |c| c.serve.request_timeout_ms = 30_000,
                "serve.request_timeout_ms = 30000 is not above admin.reply_timeout_ms = 30000",
            ),
        ];
        for (edit, want) in cases {
            let mut raw = defaults();
            edit(&mut raw);
            let err = validate(raw).unwrap_err();
            assert_eq!(err.exit_code(), 78);
            let err = err.to_string();
            assert!(err.contains(want), "wanted {want:?} in {err:?}");
        }
    }

    #[test]
    fn the_library_alone_accepts_any_handler_name_and_refuses_app_sections() {
        let mut raw = RawConfig::defaults().unwrap();
        raw.fleet.handler = "summarise".into();
        assert!(Settings::from_raw(raw).is_ok());
        let fig = layers::defaults(&[APP_TOML]);
        let err = RawConfig::from_figment(&fig, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field: found `demo`"), "{err}");
    }
}
