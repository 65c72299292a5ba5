//! `[[handlers]]`: which handler runs which kinds, validated into [`HandlerSpec`]s (the routing
//! table, first match wins), the shorthand `fleet.handler = "<type>"` (one catch-all entry), the
//! library's own handler types, and the routing table as `redrive config check` shows it,
//! secrets redacted.
//!
//! ```toml
//! [[handlers]]
//! kinds = ["triage_*", "score_lead"]  # exact names and globs: `*` any run, `?` one character
//! type = "http"                       # a library type (http, pool, exec) or a registered one
//! timeout_ms = 60000                  # default: fleet.task_timeout_ms
//! max_concurrent = 32                 # default: fleet.concurrency
//! url = "http://127.0.0.1:8000/redrive"   # every other key is the type's own (`options`)
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::check::check_range;
use super::fleet::FleetSettings;
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerSpec, Handlers};

/// One `[[handlers]]` entry as written: every key, for [`validate`] to read.
pub type RawHandler = Map<String, Value>;

/// Builds the handler of one `[[handlers]]` entry of a library type.
pub(crate) type BuildFn = fn(&HandlerSpec) -> Result<Arc<dyn Handler>>;

/// The handler types the library itself provides, looked up after the names an application
/// registered in its [`Handlers`] (so a registration can replace one).
///
/// The one list of library handler types (PROTOCOL.md): each a
/// `fn(&HandlerSpec) -> Result<Arc<dyn Handler>>` that validates its entry's options.
pub(crate) fn builtin_types() -> &'static [(&'static str, BuildFn)] {
    &[
        ("http", crate::agents::http::build),
        ("pool", crate::agents::pool::build),
        ("exec", crate::agents::exec::build),
    ]
}

/// The keys of an entry that the routing itself reads; every other key is the type's own.
const ROUTING_KEYS: [&str; 4] = ["kinds", "type", "timeout_ms", "max_concurrent"];

/// Longest kind pattern, in characters.
const MAX_PATTERN_LEN: usize = 128;

/// The validated routing table and where it came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routing {
    /// The entries, in order: the first whose kinds match a task's kind runs it.
    pub specs: Vec<HandlerSpec>,
    /// True when the table is the one catch-all entry `fleet.handler` stands for.
    pub shorthand: bool,
}

/// Validates `[[handlers]]` (or the shorthand `fleet.handler`, never both) with the fleet's
/// defaults for the timeout and the concurrency cap. No entry at all is valid here: `redrive
/// run` and [`crate::Fleet::routed`] refuse to start without one, other commands do not care.
pub(crate) fn validate(raw: &[RawHandler], fleet: &FleetSettings) -> Result<Routing> {
    if !fleet.handler.is_empty() {
        if !raw.is_empty() {
            return Err(Error::Config(format!(
                "fleet.handler = '{}' and [[handlers]] are both set: use one of them \
                 (fleet.handler is a shorthand for one [[handlers]] entry with kinds = [\"*\"])",
                fleet.handler
            )));
        }
        return Ok(Routing {
            specs: vec![HandlerSpec::catch_all(
                &fleet.handler,
                fleet.task_timeout,
                fleet.concurrency,
            )],
            shorthand: true,
        });
    }
    let mut specs: Vec<HandlerSpec> = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let spec = entry_spec(index, entry, fleet)?;
        if let Some(all) = specs.iter().find(|s| s.matches_everything()) {
            return Err(Error::Config(format!(
                "handlers[{index}] is never used: handlers[{}] before it matches every kind \
                 (kinds = [\"*\"]); put the catch-all entry last",
                all.index
            )));
        }
        specs.push(spec);
    }
    Ok(Routing {
        specs,
        shorthand: false,
    })
}

/// One entry: its routing keys checked, the rest kept as the type's options.
fn entry_spec(index: usize, entry: &RawHandler, fleet: &FleetSettings) -> Result<HandlerSpec> {
    let at = |key: &str| format!("handlers[{index}].{key}");
    let bad = |key: &str, why: &str| Error::Config(format!("{} {why}", at(key)));
    let kinds = match entry.get("kinds") {
        None => {
            return Err(bad(
                "kinds",
                "is missing: list the kinds this handler runs, e.g. kinds = [\"triage_*\"]",
            ))
        }
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(bad("kinds", "must list at least one kind or glob"))
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(p) => check_pattern(&at(&format!("kinds[{i}]")), p),
                other => Err(Error::Config(format!(
                    "{} = {other} must be a string",
                    at(&format!("kinds[{i}]"))
                ))),
            })
            .collect::<Result<Vec<String>>>()?,
        Some(other) => {
            return Err(bad(
                "kinds",
                &format!("= {other} must be a list of kinds and globs"),
            ))
        }
    };
    let type_name = match entry.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(bad("type", "must not be empty")),
        Some(other) => return Err(bad("type", &format!("= {other} must be a string"))),
        None => {
            return Err(bad(
                "type",
                "is missing: name the handler type, e.g. type = \"http\"",
            ))
        }
    };
    let int = |key: &str| -> Result<Option<u64>> {
        match entry.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(key, &format!("= {v} must be a whole number"))),
        }
    };
    let timeout = match int("timeout_ms")? {
        None => fleet.task_timeout,
        Some(ms) => {
            check_range(&at("timeout_ms"), ms, 1, 86_400_000)?;
            Duration::from_millis(ms)
        }
    };
    let max_concurrent = match int("max_concurrent")? {
        None => fleet.concurrency,
        Some(n) => {
            check_range(&at("max_concurrent"), n, 1, 100_000)?;
            n as usize
        }
    };
    let options: Map<String, Value> = entry
        .iter()
        .filter(|(k, _)| !ROUTING_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(HandlerSpec {
        index,
        type_name,
        kinds,
        timeout,
        max_concurrent,
        options,
    })
}

/// A kind pattern: 1–128 of the characters a kind may hold (`A-Z a-z 0-9 _ - . : /`) and the
/// globs `*` and `?`.
fn check_pattern(setting: &str, p: &str) -> Result<String> {
    let ok = !p.is_empty()
        && p.chars().count() <= MAX_PATTERN_LEN
        && p.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '*' | '?')
        });
    if ok {
        Ok(p.to_owned())
    } else {
        Err(Error::Config(format!(
            "{setting} = '{p}' is invalid: use 1 to {MAX_PATTERN_LEN} of A-Z a-z 0-9 _ - . : / \
             (the characters of a kind) and the globs * (any run) and ? (one character)"
        )))
    }
}

/// What a value of a secret-looking key prints as.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether the value of `key` is a secret: `secret`, `secrets`, or a name containing `token`,
/// `password`, `key` or `auth` (any case).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "secret"
        || k == "secrets"
        || ["token", "password", "key", "auth"]
            .iter()
            .any(|w| k.contains(w))
}

/// `options` with every secret replaced by [`REDACTED`], at any depth: the value of a
/// secret-looking key (see `secret_key`) whatever its type, and every value of a `headers` or
/// `env` table (its names kept: environment values routinely carry credentials under any name,
/// `DATABASE_URL=postgres://user:password@…`).
pub(crate) fn redact(options: &Map<String, Value>) -> Map<String, Value> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if secret_key(k) {
                Value::String(REDACTED.into())
            } else if k.eq_ignore_ascii_case("headers") || k.eq_ignore_ascii_case("env") {
                match v {
                    Value::Object(h) => Value::Object(
                        h.keys()
                            .map(|name| (name.clone(), Value::String(REDACTED.into())))
                            .collect(),
                    ),
                    _ => Value::String(REDACTED.into()),
                }
            } else {
                redact_value(v)
            };
            (k.clone(), shown)
        })
        .collect()
}

fn redact_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(redact(m)),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

/// The routing table as `redrive config check` prints it (TOML comments, so the output stays
/// valid TOML): one line per entry with its index, kinds, type, timeout, concurrency cap and
/// its options, secrets redacted.
pub(crate) fn routing_table(routing: &Routing) -> String {
    if routing.specs.is_empty() {
        return "# routing table: no handler configured; `redrive run` refuses to start \
                (see README, \"Plug in your agents\")\n"
            .to_owned();
    }
    let mut out = format!(
        "# routing table{} (first match wins):\n",
        if routing.shorthand {
            ", from fleet.handler"
        } else {
            ""
        }
    );
    for s in &routing.specs {
        let options = Value::Object(redact(&s.options));
        out.push_str(&format!(
            "#   [{}] kinds = {}  type = {}  timeout_ms = {}  max_concurrent = {}  options = {}\n",
            s.index,
            s.kinds.join(", "),
            s.type_name,
            s.timeout.as_millis(),
            s.max_concurrent,
            options
        ));
    }
    out
}

/// Why a member cannot start without a handler, and how to configure one.
pub(crate) fn no_handler_message() -> String {
    "no handler is configured, so this member would run nothing. Route kinds to your agents \
     in the config file, e.g.\n\n  [[handlers]]\n  kinds = [\"*\"]\n  type = \"http\"\n  url = \
     \"http://127.0.0.1:8000/redrive\"\n\n(see README, \"Plug in your agents\"); `redrive demo` \
     runs the simulated agent, and fleet.handler = \"demo\" names it explicitly"
        .to_owned()
}

impl Handlers {
    /// Every type an entry may name: the registered ones, then the library's own not replaced
    /// by a registration.
    pub fn known_types(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names().into_iter().map(str::to_owned).collect();
        for (name, _) in builtin_types() {
            if !self.contains(name) {
                names.push((*name).to_owned());
            }
        }
        names
    }

    /// Builds the handler of one entry: the registered factory of its type, else the
    /// library's; an unknown type is a configuration error listing the known ones.
    pub fn build(&self, spec: &HandlerSpec) -> Result<Arc<dyn Handler>> {
        if let Some(built) = self.build_registered(spec) {
            return built;
        }
        match builtin_types().iter().find(|(n, _)| *n == spec.type_name) {
            Some((_, build)) => build(spec),
            None => Err(self.unknown(spec, false)),
        }
    }

    /// The error for an entry whose type nobody provides.
    fn unknown(&self, spec: &HandlerSpec, shorthand: bool) -> Error {
        let known = self.known_types().join(", ");
        if shorthand {
            Error::Config(format!(
                "fleet.handler = '{}' is unknown: the handlers are {known}",
                spec.type_name
            ))
        } else {
            Error::Config(format!(
                "handlers[{}].type = '{}' is unknown: the known types are {known}",
                spec.index, spec.type_name
            ))
        }
    }

    /// Refuses a routing table that names a type nobody provides (without building anything).
    pub(crate) fn check_types(&self, routing: &Routing) -> Result<()> {
        let known = self.known_types();
        match routing.specs.iter().find(|s| !known.contains(&s.type_name)) {
            Some(s) => Err(self.unknown(s, routing.shorthand)),
            None => Ok(()),
        }
    }

    /// Builds every entry's handler, in order: the routes of a member. Refuses an empty table
    /// (with the message that says how to configure one) and an unknown type.
    pub(crate) fn build_routes(
        &self,
        routing: &Routing,
    ) -> Result<Vec<(HandlerSpec, Arc<dyn Handler>)>> {
        if routing.specs.is_empty() {
            return Err(Error::Config(no_handler_message()));
        }
        self.check_types(routing)?;
        routing
            .specs
            .iter()
            .map(|s| Ok((s.clone(), self.build(s)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, Settings};
    use crate::handler::NoopHandler;
    use figment::providers::{Format, Toml};
    use serde_json::json;

    fn settings(toml: &str) -> Result<Settings> {
        let fig = crate::config::layers::defaults(&[]).merge(Toml::string(toml));
        Settings::from_raw(RawConfig::from_figment(&fig, &[])?)
    }

    #[test]
    fn entries_become_specs_with_fleet_defaults_and_their_own_options() {
        let s = settings(
            r#"
[fleet]
concurrency = 16
task_timeout_ms = 5000

[[handlers]]
kinds = ["triage_*", "score_lead"]
type = "http"
timeout_ms = 60000
max_concurrent = 4
url = "http://127.0.0.1:8000/redrive"
headers = { Authorization = "Bearer x" }

[[handlers]]
kinds = ["*"]
type = "noop"
"#,
        )
        .unwrap();
        let r = &s.routing;
        assert!(!r.shorthand);
        assert_eq!(r.specs.len(), 2);
        let a = &r.specs[0];
        assert_eq!(
            (a.index, a.type_name.as_str(), a.kinds.clone()),
            (
                0,
                "http",
                vec!["triage_*".to_owned(), "score_lead".to_owned()]
            )
        );
        assert_eq!((a.timeout, a.max_concurrent), (Duration::from_secs(60), 4));
        assert_eq!(
            Value::Object(a.options.clone()),
            json!({"url": "http://127.0.0.1:8000/redrive", "headers": {"Authorization": "Bearer x"}})
        );
        let b = &r.specs[1];
        assert_eq!(
            (b.index, b.timeout, b.max_concurrent),
            (1, Duration::from_secs(5), 16)
        );
        assert!(b.options.is_empty());
    }

    #[test]
    fn the_shorthand_is_one_catch_all_entry_and_never_combines_with_a_table() {
        let s = settings("[fleet]\nhandler = \"noop\"\n").unwrap();
        assert!(s.routing.shorthand);
        assert_eq!(s.routing.specs.len(), 1);
        assert!(s.routing.specs[0].matches_everything());
        assert_eq!(s.routing.specs[0].max_concurrent, s.fleet.concurrency);
        let none = settings("").unwrap();
        assert!(none.routing.specs.is_empty(), "no default handler any more");
        let err =
            settings("[fleet]\nhandler = \"noop\"\n[[handlers]]\nkinds = [\"a\"]\ntype = \"x\"\n")
                .unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(
            err.to_string()
                .contains("fleet.handler = 'noop' and [[handlers]] are both set"),
            "{err}"
        );
    }

    #[test]
    fn bad_entries_name_the_key() {
        let cases = [
            ("type = \"http\"", "handlers[0].kinds is missing"),
            (
                "kinds = []\ntype = \"http\"",
                "handlers[0].kinds must list at least one",
            ),
            (
                "kinds = \"a\"\ntype = \"http\"",
                "handlers[0].kinds = \"a\" must be a list",
            ),
            (
                "kinds = [\"ok\", \"tri age\"]\ntype = \"http\"",
                "handlers[0].kinds[1] = 'tri age' is invalid",
            ),
            (
                "kinds = [\"a{b}\"]\ntype = \"http\"",
                "handlers[0].kinds[0] = 'a{b}' is invalid",
            ),
            (
                "kinds = [1]\ntype = \"http\"",
                "handlers[0].kinds[0] = 1 must be a string",
            ),
            ("kinds = [\"a\"]", "handlers[0].type is missing"),
            (
                "kinds = [\"a\"]\ntype = \"\"",
                "handlers[0].type must not be empty",
            ),
            (
                "kinds = [\"a\"]\ntype = 3",
                "handlers[0].type = 3 must be a string",
            ),
            (
                "kinds = [\"a\"]\ntype = \"x\"\ntimeout_ms = 0",
                "handlers[0].timeout_ms = 0 is out of range",
            ),
            (
                "kinds = [\"a\"]\ntype = \"x\"\ntimeout_ms = \"5s\"",
                "handlers[0].timeout_ms = \"5s\" must be a whole number",
            ),
            (
                "kinds = [\"a\"]\ntype = \"x\"\nmax_concurrent = 0",
                "handlers[0].max_concurrent = 0 is out of range",
            ),
            (
                "kinds = [\"a\"]\ntype = \"x\"\nmax_concurrent = -1",
                "handlers[0].max_concurrent = -1 must be a whole number",
            ),
        ];
        for (entry, want) in cases {
            let err = settings(&format!("[[handlers]]\n{entry}\n")).unwrap_err();
            assert_eq!(err.exit_code(), 78, "{entry}");
            assert!(err.to_string().contains(want), "wanted {want:?} in {err}");
        }
        let err = settings(
            "[[handlers]]\nkinds = [\"*\"]\ntype = \"a\"\n[[handlers]]\nkinds = [\"x\"]\ntype = \"b\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("handlers[1] is never used: handlers[0]"),
            "{err}"
        );
    }

    #[test]
    fn unknown_types_list_the_known_ones_and_no_table_says_how_to_configure_one() {
        let mut h = Handlers::new();
        h.register_simple("noop", || Ok(Arc::new(NoopHandler)));
        let s = settings("[[handlers]]\nkinds = [\"a\"]\ntype = \"noop\"\n[[handlers]]\nkinds = [\"b\"]\ntype = \"gpt\"\n")
            .unwrap();
        let err = h.build_routes(&s.routing).err().unwrap();
        assert_eq!(err.exit_code(), 78);
        let text = err.to_string();
        assert!(
            text.contains("handlers[1].type = 'gpt' is unknown: the known types are noop"),
            "{text}"
        );
        let short = settings("[fleet]\nhandler = \"gpt\"\n").unwrap();
        let text = h.check_types(&short.routing).unwrap_err().to_string();
        assert!(
            text.contains("fleet.handler = 'gpt' is unknown: the handlers are noop"),
            "{text}"
        );
        let empty = settings("").unwrap();
        let text = h.build_routes(&empty.routing).err().unwrap().to_string();
        assert!(
            text.contains("[[handlers]]") && text.contains("Plug in your agents"),
            "{text}"
        );
        let ok = settings("[[handlers]]\nkinds = [\"a\"]\ntype = \"noop\"\n").unwrap();
        let routes = h.build_routes(&ok.routing).unwrap();
        assert_eq!(routes.len(), 1);
    }

    #[test]
    fn resolve_builds_the_one_handler_of_the_shorthand_only() {
        let mut h = Handlers::new();
        h.register_simple("noop", || Ok(Arc::new(NoopHandler)));
        assert!(h
            .resolve(&settings("[fleet]\nhandler = \"noop\"\n").unwrap())
            .is_ok());
        let table = settings("[[handlers]]\nkinds = [\"a\"]\ntype = \"noop\"\n").unwrap();
        let err = h.resolve(&table).err().unwrap();
        assert!(err.to_string().contains("Fleet::routed"), "{err}");
        assert!(h.check(&table).is_ok());
        let none = h.resolve(&settings("").unwrap()).err().unwrap();
        assert!(
            none.to_string().contains("no handler is configured"),
            "{none}"
        );
    }

    #[test]
    fn secrets_are_redacted_at_any_depth_and_headers_keep_their_names() {
        let options = json!({
            "url": "http://x",
            "secret": "s3cr3t-1",
            "secrets": ["s3cr3t-2", "s3cr3t-3"],
            "headers": {"Authorization": "Bearer s3cr3t-4", "X-Trace": "s3cr3t-5"},
            "api_token": "s3cr3t-6",
            "env": {"OPENAI_API_KEY": "s3cr3t-7", "DATABASE_URL": "postgres://u:s3cr3t-10@db", "DB_PASSWORD": "s3cr3t-8"},
            "Auth_Mode": "s3cr3t-9",
            "command": ["python", "agent.py"],
        });
        let Value::Object(map) = options else {
            unreachable!()
        };
        let shown = Value::Object(redact(&map)).to_string();
        for i in 1..=10 {
            assert!(!shown.contains(&format!("s3cr3t-{i}")), "{shown}");
        }
        assert!(
            shown.contains("Authorization") && shown.contains("X-Trace"),
            "{shown}"
        );
        assert!(
            shown.contains("DATABASE_URL") && shown.contains("agent.py"),
            "names and the command stay: {shown}"
        );
        let s = settings(
            "[[handlers]]\nkinds = [\"t_*\"]\ntype = \"http\"\nsecret = \"s3cr3t-1\"\nurl = \"http://a\"\n",
        )
        .unwrap();
        let table = routing_table(&s.routing);
        assert!(!table.contains("s3cr3t"), "{table}");
        assert!(
            table.contains("[0] kinds = t_*  type = http  timeout_ms = 30000  max_concurrent = 64"),
            "{table}"
        );
        assert!(table.lines().all(|l| l.starts_with('#')), "{table}");
    }
}
