//! The observability kit: Prometheus alert rules and their promtool unit tests, the Grafana-managed
//! copies of the alerts, the dashboards, the provisioning, docker-compose.yml — checked with the real
//! tools (promtool, prometheus, docker compose) against real fleet members on a private redis-server.
//!
//! Needs `promtool`, `prometheus` and Docker Compose v2 (engine not needed); `scripts/setup.sh`
//! installs them. Nothing here is skipped when a tool is missing: the test fails and says so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{python_http_agent, python_pool_command, toml_str, AgentProcess};
use common::{eventually, try_http_get, Member, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

/// The datasource uid every panel and Grafana-managed alert refers to.
const DATASOURCE_UID: &str = "redrive-prometheus";

/// Grafana's own variables, always defined.
const GRAFANA_BUILTIN_VARS: [&str; 12] = [
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "__name",
];

const DASHBOARDS: [&str; 3] = [
    "grafana/dashboards/fleet-overview.json",
    "grafana/dashboards/tenant.json",
    "grafana/dashboards/dead-letters.json",
];
const RULES: &str = "prometheus/rules/redrive.yml";
const RULE_TESTS: [&str; 4] = [
    "prometheus/tests/redrive_test.yml",
    "prometheus/tests/recovery_test.yml",
    "prometheus/tests/archive_test.yml",
    "prometheus/tests/review_notify_test.yml",
];
const GRAFANA_RULES: &str = "grafana/provisioning/alerting/redrive-rules.json";
const DATASOURCES: &str = "grafana/provisioning/datasources/prometheus.yaml";
const DASHBOARD_PROVIDER: &str = "grafana/provisioning/dashboards/redrive.yaml";
const PROMETHEUS_CONFIG: &str = "prometheus/prometheus.yml";

/// Every alert the kit must have.
const ALERTS: [&str; 14] = [
    "RedriveTenantPoison",
    "RedriveBreakerOpen",
    "RedriveRecoveryRateLow",
    "RedriveTenantDeadLetterShare",
    "RedriveDeadLettersWaiting",
    "RedriveDeadLettersDropped",
    "RedriveDeadLetterArchiveStalled",
    "RedriveMetricsDown",
    "RedriveRedisOutOfMemory",
    "RedriveRedisWritesNotReplicated",
    "RedriveConsoleLoginsRefused",
    "RedriveDeadLettersUnowned",
    "RedriveNotificationsFailing",
    "RedriveNotificationsDelayed",
];

// ------------------------------------------------------------------------------------ helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// A scratch directory removed on success, kept (and named) on failure.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "redrive-obs-{}-{name}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch directory kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs a tool to completion: (success, stdout + stderr). A missing tool fails the test.
fn run(program: &str, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; scripts/setup.sh installs what the tests need")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    run("promtool", args, cwd)
}

/// `redrive_*` names in `text`, with the histogram suffixes `_bucket`, `_sum`, `_count` removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("redrive_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(base_name(&text[start..end]).to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

fn base_name(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            return b;
        }
    }
    name
}

/// The names catalogued in src/telemetry/names.rs.
fn catalogue() -> BTreeSet<String> {
    let src = read("src/telemetry/names.rs");
    src.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            let name = value.strip_suffix("\";")?;
            name.starts_with("redrive_").then(|| name.to_owned())
        })
        .collect()
}

/// A dashboard query: where it is, and its expression.
#[derive(Debug, Clone)]
struct Query {
    at: String,
    expr: String,
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("dashboard has panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// Every PromQL expression of every dashboard (targets), with the variable queries apart.
fn dashboard_queries() -> (Vec<Query>, Vec<Query>) {
    let mut exprs = Vec::new();
    let mut var_queries = Vec::new();
    for file in DASHBOARDS {
        let dash = read_json(file);
        for p in panels(&dash) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{file}: panel {:?} has a target without an expression",
                    p["title"]
                );
                exprs.push(Query {
                    at: format!("{file}: panel {:?} target {}", p["title"], t["refId"]),
                    expr: expr.to_owned(),
                });
            }
        }
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                let q = v["query"]["query"]
                    .as_str()
                    .or_else(|| v["query"].as_str())
                    .unwrap_or_default();
                var_queries.push(Query {
                    at: format!("{file}: variable {}", v["name"]),
                    expr: q.to_owned(),
                });
            }
        }
    }
    (exprs, var_queries)
}

/// Grafana variables referenced in `text`: `$name`, `${name}`, `${name:format}`, `[[name]]`.
fn referenced_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let rest = &text[i + 1..];
            let name = if let Some(inner) = rest.strip_prefix('{') {
                ident(inner)
            } else {
                ident(rest)
            };
            // `$$` (escaped) and `$1`-style regex groups are not variables.
            if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                out.insert(name);
            }
        } else if b[i..].starts_with(b"[[") {
            // Bytes, not `text[i..]`: `i` walks bytes and may sit inside a multi-byte character
            // of a description; after the ASCII `[[` (or `$`) the slice is on a boundary.
            let name = ident(&text[i + 2..]);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        i += 1;
    }
    out
}

#[test]
fn variables_are_found_in_text_with_multi_byte_characters() {
    let found = referenced_vars("rate … of ${tenant:csv} – see [[job]] and $$ or $1 “quoted”");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["job".to_owned(), "tenant".to_owned()]
    );
}

/// Replaces Grafana's variables by values PromQL accepts.
fn substitute(expr: &str, tenant: &str, range: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("${__range}", range)
        .replace("$__range", range)
        .replace("${tenant}", tenant)
        .replace("$tenant", tenant)
}

/// Writes expressions as recording rules and has promtool parse them; returns the failures.
fn promtool_parse(exprs: &[(String, String)], scratch: &Scratch) -> Vec<String> {
    let rule = |i: usize, expr: &str| {
        format!(
            "      - record: redrive_parse_check_{i}\n        expr: |\n{}\n",
            indent(expr, 10)
        )
    };
    let mut all = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        all.push_str(&rule(i, expr));
    }
    let file = scratch.write("parse/all.yml", &all);
    if promtool(&["check", "rules", file.to_str().unwrap()], &scratch.0).0 {
        return Vec::new();
    }
    // One file per expression, so each failure names its expression.
    let mut failures = Vec::new();
    for (i, (at, expr)) in exprs.iter().enumerate() {
        let file = scratch.write(
            &format!("parse/q{i}.yml"),
            &format!("groups:\n  - name: parse\n    rules:\n{}", rule(i, expr)),
        );
        let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()], &scratch.0);
        if !ok {
            failures.push(format!("{at}: {expr}\n{out}"));
        }
    }
    failures
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The values of every `key: value` line (list items included) whose key is `key`: a deliberately
/// small YAML reader for the flat provisioning and Prometheus files.
fn yaml_value(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            Some(rest.trim().trim_matches('"').trim_matches('\'').to_owned())
        })
        .collect()
}

/// (alert, expression) of every rule in a rules file written like `RULES` (`expr: |` blocks or
/// one-line `expr:`).
fn rule_exprs(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(a) = t
            .strip_prefix("- alert: ")
            .or_else(|| t.strip_prefix("- record: "))
        {
            alert = a.trim().to_owned();
        } else if let Some(e) = t.strip_prefix("expr:") {
            let e = e.trim();
            if e == "|" || e == ">" {
                let depth = line.len() - t.len();
                let mut body = Vec::new();
                while let Some(next) = lines.peek() {
                    let nt = next.trim_start();
                    if !nt.is_empty() && next.len() - nt.len() <= depth {
                        break;
                    }
                    body.push(nt);
                    lines.next();
                }
                out.push((alert.clone(), body.join("\n")));
            } else {
                out.push((alert.clone(), e.to_owned()));
            }
        }
    }
    out
}

/// The rule block of `alert` in a rules file: from its `- alert:` line to the next one.
fn rule_block(rules: &str, alert: &str) -> (usize, usize) {
    let start = rules
        .find(&format!("- alert: {alert}\n"))
        .unwrap_or_else(|| panic!("{RULES} has no alert {alert}"));
    let end = rules[start + 1..]
        .find("- alert: ")
        .map(|e| start + 1 + e)
        .unwrap_or(rules.len());
    (start, end)
}

/// Copies the promtool unit tests into `scratch/tests/`, next to `scratch/rules/redrive.yml`
/// written from `rules` (the tests load `../rules/redrive.yml`). With `drop_annotations`, every
/// `exp_annotations:` line is left out. Returns the test files.
fn stage_rule_tests(scratch: &Scratch, rules: &str, drop_annotations: bool) -> Vec<String> {
    scratch.write("rules/redrive.yml", rules);
    let mut files = Vec::new();
    for t in RULE_TESTS {
        let text = read(t);
        assert!(
            text.contains("\n  - ../rules/redrive.yml\n"),
            "{t} must load ../rules/redrive.yml"
        );
        let text = if drop_annotations {
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("exp_annotations:"))
                .collect();
            assert!(
                kept.len() < text.lines().count(),
                "{t} has no exp_annotations lines"
            );
            kept.join("\n") + "\n"
        } else {
            text
        };
        let name = Path::new(t).file_name().unwrap().to_str().unwrap();
        files.push(
            scratch
                .write(&format!("tests/{name}"), &text)
                .to_string_lossy()
                .into_owned(),
        );
    }
    files
}

fn run_rule_tests(scratch: &Scratch, files: &[String]) -> (bool, String) {
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&args, &scratch.0)
}

// ------------------------------------------------------------------------------------ HTTP

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scrapes a member's /metrics: metric name (histogram suffixes removed) → TYPE.
fn scrape(addr: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok((200, body)) = try_http_get(addr, "/metrics") else {
        return out;
    };
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (p.next(), p.next()) {
                out.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            out.entry(base_name(name).to_owned())
                .or_insert_with(|| "untyped".into());
        }
    }
    out
}

/// Scrapes a member's /metrics: sample name (suffix kept) → sum of its series' values.
fn scrape_sums(addr: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok((200, body)) = try_http_get(addr, "/metrics") else {
        return out;
    };
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// A real Prometheus on a free loopback port.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(scratch: &Scratch, config: &str) -> Prometheus {
        let cfg = scratch.write("prometheus/prometheus.yml", config);
        let data = scratch.path("prometheus/data");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = scratch.path("prometheus/prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start prometheus; scripts/setup.sh installs it");
        Prometheus { child, addr, log }
    }

    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = try_http_get(&self.addr, path).ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// An instant query's result vector (None when Prometheus refuses the query).
    fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let d = self.api(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        d["result"].as_array().cloned()
    }

    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Docker Compose v2 as a command: `docker compose`, or the CLI plugin run on its own.
fn compose() -> Vec<String> {
    if Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return vec!["docker".into(), "compose".into()];
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let plugins = std::env::var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(".docker"))
        .join("cli-plugins/docker-compose");
    if Command::new(&plugins)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return vec![plugins.to_string_lossy().into_owned()];
    }
    panic!(
        "Docker Compose v2 not found (docker compose, {}); scripts/setup.sh installs it",
        plugins.display()
    );
}

fn compose_run(args: &[&str]) -> (bool, String, String) {
    let cmd = compose();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(args)
        .current_dir(repo())
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROFILES")
        .stdin(Stdio::null())
        .output()
        .expect("run docker compose");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------------------------------------ rules

#[test]
fn alert_rules_pass_promtool_lint_and_their_unit_tests() {
    let root = repo();
    let (ok, out) = promtool(
        &["check", "rules", "--lint=all", "--lint-fatal", RULES],
        &root,
    );
    assert!(ok, "promtool check rules:\n{out}");
    let mut args = vec!["test", "rules"];
    args.extend(RULE_TESTS);
    let (ok, out) = promtool(&args, &root);
    assert!(ok, "promtool test rules:\n{out}");

    // Every alert is defined, and every alert has unit tests.
    let rules = read(RULES);
    let tests: String = RULE_TESTS.iter().map(|t| read(t)).collect();
    for alert in ALERTS {
        rule_block(&rules, alert);
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "no promtool unit test for {alert}"
        );
    }
    assert_eq!(
        rules.matches("- alert: ").count(),
        ALERTS.len(),
        "{RULES} has alerts this test does not know; add them to ALERTS and to the unit tests"
    );
    // Each alert also has cases where it must stay silent.
    for alert in ALERTS {
        let silent = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .filter(|case| case.contains("exp_alerts: []"))
            .count();
        assert!(silent > 0, "{alert} has no case where it must not fire");
    }
}

/// Changing any threshold, window, guard or `for` of any alert makes the unit tests fail.
#[test]
fn alert_unit_tests_fail_when_a_threshold_window_guard_or_for_changes() {
    let mutations: &[(&str, &str, &str)] = &[
        ("RedriveTenantPoison", "> 3", "> 2"),
        ("RedriveTenantPoison", "> 3", "> 4"),
        ("RedriveTenantPoison", "> 3", ">= 3"),
        ("RedriveTenantPoison", "[1h]", "[59m]"),
        ("RedriveTenantPoison", "[1h]", "[61m]"),
        ("RedriveTenantPoison", "{tenant!=\"__other__\"}", ""),
        ("RedriveTenantPoison", "sum by (tenant)", "max by (tenant)"),
        (
            "RedriveTenantPoison",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
        ("RedriveBreakerOpen", "for: 30m", "for: 29m"),
        ("RedriveBreakerOpen", "for: 30m", "for: 31m"),
        ("RedriveBreakerOpen", "state!=\"closed\",", ""),
        ("RedriveBreakerOpen", ",tenant!=\"__other__\"", ""),
        (
            "RedriveBreakerOpen",
            "max by (tenant)",
            "max by (tenant, state)",
        ),
        ("RedriveRecoveryRateLow", "< 0.8", "< 0.79"),
        ("RedriveRecoveryRateLow", "< 0.8", "< 0.81"),
        ("RedriveRecoveryRateLow", "< 0.8", "<= 0.8"),
        ("RedriveRecoveryRateLow", ">= 20", ">= 19"),
        ("RedriveRecoveryRateLow", ">= 20", ">= 21"),
        ("RedriveRecoveryRateLow", ">= 20", "> 20"),
        ("RedriveRecoveryRateLow", "[24h]", "[23h]"),
        ("RedriveRecoveryRateLow", "[24h]", "[25h]"),
        ("RedriveRecoveryRateLow", " or vector(0)", ""),
        (
            "RedriveRecoveryRateLow",
            "        labels:",
            "        for: 30m\n        labels:",
        ),
        ("RedriveTenantDeadLetterShare", "> 0.4", "> 0.41"),
        ("RedriveTenantDeadLetterShare", "> 0.4", "> 0.39"),
        ("RedriveTenantDeadLetterShare", "> 0.4", ">= 0.4"),
        ("RedriveTenantDeadLetterShare", ">= 10", ">= 9"),
        ("RedriveTenantDeadLetterShare", ">= 10", ">= 11"),
        ("RedriveTenantDeadLetterShare", ">= 10", "> 10"),
        ("RedriveTenantDeadLetterShare", "[1h]", "[59m]"),
        ("RedriveTenantDeadLetterShare", "[1h]", "[61m]"),
        (
            "RedriveTenantDeadLetterShare",
            "{tenant!=\"__other__\"}",
            "",
        ),
        (
            "RedriveTenantDeadLetterShare",
            "sum(increase(redrive_dead_lettered_total[1h]))",
            "sum(increase(redrive_dead_lettered_total{tenant!=\"__other__\"}[1h]))",
        ),
        (
            "RedriveTenantDeadLetterShare",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
        ("RedriveDeadLettersWaiting", "for: 5m", "for: 4m"),
        ("RedriveDeadLettersWaiting", "for: 5m", "for: 6m"),
        (
            "RedriveDeadLettersWaiting",
            "max by (tenant)",
            "sum by (tenant)",
        ),
        ("RedriveDeadLettersWaiting", "> 0", "> 1"),
        ("RedriveDeadLettersWaiting", "> 0", ">= 0"),
        ("RedriveDeadLettersDropped", "> 0", ">= 0"),
        ("RedriveDeadLettersDropped", "[15m]", "[14m]"),
        ("RedriveDeadLettersDropped", "[15m]", "[16m]"),
        ("RedriveDeadLettersDropped", "sum by (tenant)", "sum"),
        (
            "RedriveDeadLettersDropped",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
        ("RedriveDeadLetterArchiveStalled", "> 900", "> 899"),
        ("RedriveDeadLetterArchiveStalled", "> 900", "> 901"),
        ("RedriveDeadLetterArchiveStalled", "> 900", ">= 900"),
        ("RedriveDeadLetterArchiveStalled", "for: 5m", "for: 4m"),
        ("RedriveDeadLetterArchiveStalled", "for: 5m", "for: 6m"),
        (
            "RedriveDeadLetterArchiveStalled",
            "max by (tenant)",
            "sum by (tenant)",
        ),
        ("RedriveMetricsDown", "for: 1m", "for: 0s"),
        ("RedriveMetricsDown", "for: 1m", "for: 2m"),
        ("RedriveMetricsDown", "{job=\"redrive\"}", ""),
        ("RedriveMetricsDown", "== 0", "== 1"),
        ("RedriveRedisOutOfMemory", "for: 1m", "for: 0s"),
        ("RedriveRedisOutOfMemory", "for: 1m", "for: 2m"),
        ("RedriveRedisOutOfMemory", "> 0", "> 1"),
        ("RedriveRedisOutOfMemory", "> 0", ">= 0"),
        (
            "RedriveRedisOutOfMemory",
            "max(redrive_redis_oom)",
            "min(redrive_redis_oom)",
        ),
        (
            "RedriveRedisOutOfMemory",
            "max(redrive_redis_oom)",
            "max by (instance) (redrive_redis_oom)",
        ),
        ("RedriveRedisWritesNotReplicated", "for: 10m", "for: 9m"),
        ("RedriveRedisWritesNotReplicated", "for: 10m", "for: 11m"),
        ("RedriveRedisWritesNotReplicated", "> 0", ">= 0"),
        ("RedriveRedisWritesNotReplicated", "[5m]", "[7m]"),
        ("RedriveConsoleLoginsRefused", "> 20", "> 19"),
        ("RedriveConsoleLoginsRefused", "> 20", "> 21"),
        ("RedriveConsoleLoginsRefused", "> 20", ">= 20"),
        ("RedriveConsoleLoginsRefused", "[10m]", "[9m]"),
        ("RedriveConsoleLoginsRefused", "[10m]", "[11m]"),
        (
            "RedriveConsoleLoginsRefused",
            "{result=~\"bad_token|rate_limited\"}",
            "",
        ),
        (
            "RedriveConsoleLoginsRefused",
            "result=~\"bad_token|rate_limited\"",
            "result=\"bad_token\"",
        ),
        ("RedriveConsoleLoginsRefused", "sum(", "max("),
        (
            "RedriveConsoleLoginsRefused",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
        ("RedriveDeadLettersUnowned", "> 86400", "> 86399"),
        ("RedriveDeadLettersUnowned", "> 86400", ">= 86400"),
        ("RedriveDeadLettersUnowned", "> 86400", "> 86500"),
        (
            "RedriveDeadLettersUnowned",
            "max by (tenant)",
            "min by (tenant)",
        ),
        (
            "RedriveDeadLettersUnowned",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
        ("RedriveNotificationsFailing", "> 0", "> 1"),
        ("RedriveNotificationsFailing", "> 0", ">= 0"),
        ("RedriveNotificationsFailing", "[1h]", "[59m]"),
        ("RedriveNotificationsFailing", "[1h]", "[61m]"),
        (
            "RedriveNotificationsFailing",
            "sum by (tenant)",
            "max by (tenant)",
        ),
        ("RedriveNotificationsDelayed", "> 1800", "> 1799"),
        ("RedriveNotificationsDelayed", "> 1800", ">= 1800"),
        ("RedriveNotificationsDelayed", "> 1800", "> 1850"),
        (
            "RedriveNotificationsDelayed",
            "max by (tenant)",
            "min by (tenant)",
        ),
        (
            "RedriveNotificationsDelayed",
            "        labels:",
            "        for: 1m\n        labels:",
        ),
    ];
    let rules = read(RULES);
    let scratch = Scratch::new("mutations");
    let files = stage_rule_tests(&scratch, &rules, false);
    let (ok, out) = run_rule_tests(&scratch, &files);
    assert!(ok, "the unmodified rules must pass:\n{out}");

    let mut survived = Vec::new();
    for (alert, from, to) in mutations {
        let (start, end) = rule_block(&rules, alert);
        let block = &rules[start..end];
        assert!(
            block.contains(from),
            "{alert} no longer contains {from:?}: update this test's mutations"
        );
        let mutated = format!(
            "{}{}{}",
            &rules[..start],
            block.replace(from, to),
            &rules[end..]
        );
        scratch.write("rules/redrive.yml", &mutated);
        let (ok, _) = run_rule_tests(&scratch, &files);
        if ok {
            survived.push(format!("{alert}: {from:?} -> {to:?}"));
        }
    }
    assert!(
        survived.is_empty(),
        "the unit tests still pass after these changes to the rules:\n  {}",
        survived.join("\n  ")
    );
}

/// The Grafana-managed alerts (query A, threshold C) behave exactly like the Prometheus rules:
/// rules derived from them as `(A) <op> <threshold>` pass the same promtool unit tests.
#[test]
fn grafana_managed_alerts_are_the_prometheus_alerts() {
    let doc = read_json(GRAFANA_RULES);
    assert_eq!(doc["apiVersion"], 1, "{GRAFANA_RULES}: apiVersion");
    let groups = doc["groups"].as_array().expect("groups");
    let mut derived = String::from("groups:\n  - name: grafana-derived\n    rules:\n");
    let mut titles = BTreeSet::new();
    let mut uids = BTreeSet::new();
    for g in groups {
        for key in ["name", "folder", "interval"] {
            assert!(g[key].is_string(), "rule group lacks {key}: {g}");
        }
        for r in g["rules"].as_array().expect("rules") {
            let title = r["title"].as_str().expect("title");
            assert!(titles.insert(title.to_owned()), "duplicate title {title}");
            let uid = r["uid"].as_str().expect("uid");
            assert!(
                !uid.is_empty() && uid.len() <= 40 && uids.insert(uid.to_owned()),
                "{title}: uid {uid:?} must be unique and at most 40 characters"
            );
            assert!(
                ["OK", "NoData", "Alerting"].contains(&r["noDataState"].as_str().unwrap_or("")),
                "{title}: noDataState"
            );
            assert!(
                ["OK", "Error", "Alerting"].contains(&r["execErrState"].as_str().unwrap_or("")),
                "{title}: execErrState"
            );
            assert!(r["annotations"]["summary"].is_string(), "{title}: summary");
            let data = r["data"].as_array().expect("data");
            let by_ref: BTreeMap<&str, &Value> = data
                .iter()
                .map(|d| (d["refId"].as_str().expect("refId"), d))
                .collect();
            let cond = r["condition"].as_str().expect("condition");
            let c = by_ref
                .get(cond)
                .unwrap_or_else(|| panic!("{title}: condition {cond} is not a refId"));
            assert_eq!(
                c["datasourceUid"], "__expr__",
                "{title}: condition is an expression"
            );
            assert_eq!(
                c["model"]["type"], "threshold",
                "{title}: condition is a threshold"
            );
            let input = c["model"]["expression"].as_str().expect("threshold input");
            let a = by_ref
                .get(input)
                .unwrap_or_else(|| panic!("{title}: threshold reads {input}, not a refId"));
            assert_eq!(
                a["datasourceUid"], DATASOURCE_UID,
                "{title}: query datasource"
            );
            assert_eq!(
                a["model"]["instant"], true,
                "{title}: the query must be instant"
            );
            let expr = a["model"]["expr"].as_str().expect("expr");
            let ev = &c["model"]["conditions"][0]["evaluator"];
            let op = match ev["type"].as_str() {
                Some("gt") => ">",
                Some("lt") => "<",
                other => panic!("{title}: threshold type {other:?} not handled here"),
            };
            let threshold = ev["params"][0].as_f64().expect("threshold value");
            let for_ = r["for"].as_str().unwrap_or("0s");
            derived.push_str(&format!(
                "      - alert: {title}\n        expr: |\n{}\n        for: {for_}\n        labels:\n",
                indent(&format!("({expr}) {op} {threshold}"), 10)
            ));
            for (k, v) in r["labels"].as_object().expect("labels") {
                derived.push_str(&format!("          {k}: {v}\n"));
            }
        }
    }
    let expected: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        titles, expected,
        "Grafana-managed alerts and Prometheus alerts differ"
    );

    let scratch = Scratch::new("grafana-rules");
    let derived_file = scratch.write("derived.yml", &derived);
    let (ok, out) = promtool(
        &["check", "rules", derived_file.to_str().unwrap()],
        &scratch.0,
    );
    assert!(ok, "Grafana alert queries do not parse:\n{out}\n{derived}");
    let files = stage_rule_tests(&scratch, &derived, true);
    let (ok, out) = run_rule_tests(&scratch, &files);
    assert!(
        ok,
        "the Grafana-managed alerts do not pass the unit tests of the Prometheus rules:\n{out}\n{derived}"
    );
}

// ------------------------------------------------------------------------------------ dashboards

#[test]
fn dashboards_parse_and_refer_only_to_defined_datasources_and_variables() {
    let ds = read(DATASOURCES);
    let uids = yaml_value(&ds, "uid");
    assert_eq!(
        uids,
        vec![DATASOURCE_UID],
        "{DATASOURCES}: one datasource with the fixed uid"
    );
    assert_eq!(yaml_value(&ds, "type"), vec!["prometheus"]);

    let mut dash_uids = BTreeSet::new();
    let mut problems = Vec::new();
    for file in DASHBOARDS {
        let dash = read_json(file);
        let uid = dash["uid"].as_str().expect("dashboard uid");
        assert!(
            dash_uids.insert(uid.to_owned()),
            "duplicate dashboard uid {uid}"
        );
        assert!(dash["title"].is_string());
        let vars: BTreeSet<String> = dash["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().expect("variable name").to_owned())
            .chain(GRAFANA_BUILTIN_VARS.iter().map(|s| s.to_string()))
            .collect();
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" && v["datasource"]["uid"] != DATASOURCE_UID {
                problems.push(format!(
                    "{file}: variable {} datasource {}",
                    v["name"], v["datasource"]
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for p in panels(&dash) {
            let title = p["title"].as_str().unwrap_or("");
            if !ids.insert(p["id"].as_i64().expect("panel id")) {
                problems.push(format!("{file}: duplicate panel id {}", p["id"]));
            }
            let kind = p["type"].as_str().unwrap_or("");
            let known = [
                "row",
                "text",
                "timeseries",
                "stat",
                "bargauge",
                "table",
                "gauge",
            ];
            if !known.contains(&kind) {
                problems.push(format!("{file}: panel {title:?} has type {kind:?}"));
            }
            let pos = &p["gridPos"];
            let (x, w) = (
                pos["x"].as_i64().unwrap_or(-1),
                pos["w"].as_i64().unwrap_or(0),
            );
            if x < 0 || w < 1 || x + w > 24 || pos["h"].as_i64().unwrap_or(0) < 1 {
                problems.push(format!("{file}: panel {title:?} gridPos {pos}"));
            }
            let has_targets = p["targets"].as_array().is_some_and(|t| !t.is_empty());
            if has_targets && p["datasource"]["uid"] != DATASOURCE_UID {
                problems.push(format!(
                    "{file}: panel {title:?} datasource {}",
                    p["datasource"]
                ));
            }
            if !["row", "text"].contains(&kind) && !has_targets {
                problems.push(format!("{file}: panel {title:?} ({kind}) has no query"));
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["datasource"]["uid"] != DATASOURCE_UID {
                    problems.push(format!(
                        "{file}: panel {title:?} target {} datasource {}",
                        t["refId"], t["datasource"]
                    ));
                }
            }
            // Variables in everything the panel shows or queries.
            let text = p.to_string();
            for v in referenced_vars(&text) {
                if !vars.contains(&v) {
                    problems.push(format!(
                        "{file}: panel {title:?} uses undefined variable ${v}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n  {}",
        problems.join("\n  ")
    );

    // The tenant drill-down's variable.
    let tenant = read_json("grafana/dashboards/tenant.json");
    let var = &tenant["templating"]["list"][0];
    assert_eq!(var["name"], "tenant");
    assert_eq!(
        var["query"]["query"],
        "label_values(redrive_tasks_read_total, tenant)"
    );

    // Every expression parses (Grafana's variables substituted).
    let (exprs, _) = dashboard_queries();
    let all: Vec<(String, String)> = exprs
        .iter()
        .map(|q| (q.at.clone(), substitute(&q.expr, "x", "1h")))
        .collect();
    for (at, e) in &all {
        assert!(!e.contains('$'), "{at}: unsubstituted variable in {e}");
    }
    let scratch = Scratch::new("dashboards");
    let failures = promtool_parse(&all, &scratch);
    assert!(
        failures.is_empty(),
        "expressions promtool rejects:\n{}",
        failures.join("\n")
    );
}

/// The conventions the dashboards follow: Redis-derived gauges aggregated with max by (tenant)
/// (every member exports the same values), counters summed with rate/increase over
/// $__rate_interval (or a range), quantiles from _bucket series.
#[test]
fn dashboards_aggregate_gauges_with_max_and_counters_with_sum() {
    let redis_gauges = [
        "redrive_lane_depth",
        "redrive_pending",
        "redrive_lag",
        "redrive_retries_scheduled",
        "redrive_retries_overdue",
        "redrive_dlq_depth",
        "redrive_breaker_state",
    ];
    let (exprs, _) = dashboard_queries();
    let mut problems = Vec::new();
    for q in &exprs {
        let e = q.expr.replace(char::is_whitespace, "");
        for g in redis_gauges {
            for (i, _) in e.match_indices(g) {
                let before = &e[..i];
                if !before.ends_with("max by(tenant)(")
                    && !before.ends_with("maxby(tenant)(")
                    && !before.ends_with("maxby(tenant,state)(")
                {
                    problems.push(format!(
                        "{}: {g} not under max by (tenant): {}",
                        q.at, q.expr
                    ));
                }
            }
        }
        for name in metric_names(&q.expr) {
            if name.ends_with("_total") {
                let wrapped = ["rate(", "increase("]
                    .iter()
                    .any(|f| e.contains(&format!("{f}{name}")));
                if !wrapped {
                    problems.push(format!("{}: counter {name} without rate/increase", q.at));
                }
            }
        }
        if e.contains("rate(")
            && !e.contains("[$__rate_interval]")
            && !e.contains("[$__range]")
            && !e.contains("[1h]")
            && !e.contains("[24h]")
        {
            problems.push(format!(
                "{}: rate without $__rate_interval: {}",
                q.at, q.expr
            ));
        }
        if e.contains("histogram_quantile(") && !e.contains("_bucket[") {
            problems.push(format!(
                "{}: histogram_quantile without _bucket: {}",
                q.at, q.expr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------------------------ provisioning

#[test]
fn provisioning_prometheus_config_and_compose_file_fit_together() {
    let root = repo();
    let (ok, out) = promtool(&["check", "config", PROMETHEUS_CONFIG], &root);
    assert!(ok, "promtool check config:\n{out}");
    let prom = read(PROMETHEUS_CONFIG);
    let scrape = yaml_value(&prom, "scrape_interval");
    assert_eq!(
        yaml_value(&read(DATASOURCES), "timeInterval"),
        scrape,
        "the datasource's timeInterval must be the scrape interval ($__rate_interval)"
    );
    assert_eq!(
        yaml_value(&prom, "job_name"),
        vec!["redrive"],
        "the alerts expect job=\"redrive\""
    );

    // Compose validates with the real Compose v2 parser.
    let (ok, _, err) = compose_run(&["config", "-q"]);
    assert!(ok, "docker compose config -q:\n{err}");
    let (ok, out, err) = compose_run(&["--profile", "demo", "config", "--format", "json"]);
    assert!(ok, "docker compose config:\n{err}");
    let c: Value = serde_json::from_str(&out).expect("compose config JSON");
    let svc = |name: &str| -> &Value {
        let s = &c["services"][name];
        assert!(s.is_object(), "docker-compose.yml lacks service {name}");
        s
    };
    let mounts = |s: &Value| -> Vec<(String, String)> {
        s["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let src = v["source"].as_str().unwrap_or("");
                // Bind mounts compared as canonical paths (the checkout may sit behind a symlink).
                let src = std::fs::canonicalize(src)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| src.to_owned());
                (src, v["target"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    };
    let root_s = std::fs::canonicalize(&root)
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // Redis: AOF on, noeviction, data on a volume.
    let redis = svc("redis");
    let cmd = redis["command"].to_string();
    assert!(cmd.contains("\"--appendonly\",\"yes\""), "redis AOF: {cmd}");
    assert!(
        cmd.contains("\"--maxmemory-policy\",\"noeviction\""),
        "redis noeviction: {cmd}"
    );
    assert!(mounts(redis).iter().any(|(_, t)| t == "/data"));

    // Two fleet replicas built from the repo's Dockerfile, distinct member ids.
    let mut ids = BTreeSet::new();
    for name in ["fleet-1", "fleet-2"] {
        let s = svc(name);
        let context = s["build"]["context"].as_str().expect("build context");
        assert_eq!(
            std::fs::canonicalize(context).unwrap().to_string_lossy(),
            root_s.as_str(),
            "{name} builds the repo"
        );
        assert_eq!(s["build"]["dockerfile"], "Dockerfile");
        let env = &s["environment"];
        assert_eq!(env["REDRIVE_REDIS_URL"], "redis://redis:6379", "{name}");
        assert_eq!(env["REDRIVE_METRICS__LISTEN"], "0.0.0.0:9464", "{name}");
        let id = env["REDRIVE_FLEET__MEMBER_ID"].as_str().expect("member id");
        assert!(ids.insert(id.to_owned()), "member ids must differ");
        assert!(
            prom.contains(&format!("- {name}:9464")),
            "{PROMETHEUS_CONFIG} does not scrape {name}:9464"
        );
    }
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(" AS build"), "multi-stage Dockerfile");
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2
    );
    assert!(dockerfile.contains("cargo build --release"));
    assert!(dockerfile.contains("ENTRYPOINT [\"redrive\"]") && dockerfile.contains("CMD [\"run\""));
    assert!(dockerfile.contains("COPY config ") && dockerfile.contains("COPY src "));

    // Prometheus gets this directory (config + rules).
    let p = svc("prometheus");
    assert!(
        mounts(p).contains(&(format!("{root_s}/prometheus"), "/etc/prometheus".into())),
        "prometheus mounts ./prometheus at /etc/prometheus: {:?}",
        mounts(p)
    );
    assert!(p["command"]
        .to_string()
        .contains("--config.file=/etc/prometheus/prometheus.yml"));

    // Grafana gets the provisioning and the dashboards where the provider looks.
    let g = svc("grafana");
    let gm = mounts(g);
    assert!(gm.contains(&(
        format!("{root_s}/grafana/provisioning"),
        "/etc/grafana/provisioning".into()
    )));
    let provider_path = yaml_value(&read(DASHBOARD_PROVIDER), "path");
    assert_eq!(provider_path.len(), 1);
    assert!(
        gm.contains(&(
            format!("{root_s}/grafana/dashboards"),
            provider_path[0].clone()
        )),
        "grafana/dashboards must be mounted at the provider's path {provider_path:?}: {gm:?}"
    );
    assert_eq!(
        yaml_value(&read(DATASOURCES), "url"),
        vec!["http://prometheus:9090"],
        "the datasource points at the compose Prometheus"
    );
    for v in ["redis-data", "prometheus-data", "grafana-data"] {
        assert!(c["volumes"][v].is_object(), "volume {v} declared");
    }
    // Every mounted file or directory of the repo exists.
    for (name, s) in c["services"].as_object().unwrap() {
        for (src, _) in mounts(s) {
            if src.starts_with('/') {
                assert!(Path::new(&src).exists(), "{name} mounts missing {src}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------ fleets

/// Retry quickly so retries are scheduled, promoted and exhausted within a test.
const FAST_RETRY_TOML: &str = "[retry]\ndelays_ms = [100, 100, 100]\npoll_interval_ms = 50\n";

/// The token the members' HTTP API accepts (`[serve] enabled = true` in [`serve_toml`]).
const API_TOKEN: &str = "observability-test-token";

/// The HTTP API inside every member, on a free port, with one viewer token.
fn serve_toml() -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(API_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "\n[serve]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n[[serve.tokens]]\n\
         name = \"grafana-test\"\nrole = \"viewer\"\ntenants = [\"*\"]\nsha256 = \"{hash}\"\n"
    )
}

/// Calls the HTTP API inside `member` (a few reads, one unknown path, a console login with a
/// wrong token), so the API families are emitted; returns the statuses.
fn call_member_api(member: &Member) -> Vec<u16> {
    use std::io::{Read, Write};
    let addr = member.listen_addr("serving the HTTP API");
    [
        "GET /api/v1/tenants",
        "GET /api/v1/health",
        "GET /api/v1/nothing",
        "POST /login",
    ]
    .iter()
    .map(|request| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let body = if request.starts_with("POST") { "token=wrong" } else { "" };
            write!(
                s,
                "{request} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {API_TOKEN}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let head = String::from_utf8_lossy(&raw);
            head.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// A notification target of tenant `storm` on a port nobody listens on, so the notification
/// families are emitted (registered at 0 when the notifier starts, the outbox seen by the
/// member holding the tenant's lease, failed attempts retried).
fn notify_toml(env: &TestEnv) -> String {
    let secret = env.dir.join("notify.secret");
    std::fs::write(&secret, "obs-notify-secret\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    format!(
        "\n[notify]\npoll_interval_ms = 100\n\n[[notify.targets]]\nname = \"obs-hook\"\n\
         tenant = \"storm\"\nurl = \"http://127.0.0.1:{port}/\"\nsecret_file = {}\n",
        toml_str(&secret.display().to_string())
    )
}

/// The agent the members' `http` entry posts to: the Python SDK serving
/// tests/agents/sdk_agent.py (its `echo` handler serves `echo_*`).
fn sdk_agent(env: &TestEnv) -> AgentProcess {
    python_http_agent(
        "sdk_agent:agent",
        &repo().join("tests/agents"),
        "obs-secret",
        &[],
        env.dir.join("agent.log"),
    )
}

/// The members' routing: `echo_http` to `agent` over HTTP, `echo_pool` to a pool of the same
/// SDK agent, everything else to the demo agent; so the handler families are emitted for real.
fn routing_toml(agent: &AgentProcess) -> String {
    let command = python_pool_command("sdk_agent:agent");
    format!(
        "[[handlers]]\nkinds = [\"echo_http\"]\ntype = \"http\"\nurl = \"http://{}/\"\n\
         secret = \"obs-secret\"\n\n\
         [[handlers]]\nkinds = [\"echo_pool\"]\ntype = \"pool\"\ncommand = {command}\ncwd = {}\n\
         env = {{ PYTHONDONTWRITEBYTECODE = \"1\" }}\n\n\
         [[handlers]]\nkinds = [\"*\"]\ntype = \"demo\"\n\n",
        agent.addr,
        toml_str(&repo().join("tests/agents").display().to_string()),
    )
}

/// Two tasks of `tenant` for each agent handler.
fn agent_tasks(tenant: &str) -> Vec<NewTask> {
    ["echo_http", "echo_pool"]
        .iter()
        .flat_map(|kind| {
            (0..2).map(move |i| {
                NewTask::new(tenant, *kind, json!({})).with_task_id(format!("{tenant}-{kind}-{i}"))
            })
        })
        .collect()
}

/// Starts `n` members serving /metrics on free loopback ports, routing as [`routing_toml`]
/// says; returns them with their addresses.
fn metered_members(env: &TestEnv, agent: &AgentProcess, n: usize) -> Vec<(Member, String)> {
    metered_members_with(env, agent, n, &[])
}

/// [`metered_members`] with extra settings.
fn metered_members_with(
    env: &TestEnv,
    agent: &AgentProcess,
    n: usize,
    extra: &[(&str, &str)],
) -> Vec<(Member, String)> {
    let cfg = env.config_file(
        "fleet.toml",
        &format!(
            "{}{FAST_RETRY_TOML}{}{}",
            routing_toml(agent),
            serve_toml(),
            notify_toml(env)
        ),
    );
    (1..=n)
        .map(|i| {
            // Port 0: the member binds a free port itself and logs it (no race for the port).
            let mut vars = vec![
                ("REDRIVE_FLEET__HANDLER", ""),
                ("REDRIVE_CONFIG", cfg.as_str()),
                ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
                ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "200"),
            ];
            vars.extend_from_slice(extra);
            let m = env.member(&format!("m{i}"), &vars);
            let addr = m.metrics_addr();
            (m, addr)
        })
        .collect()
}

fn tasks(tenant: &str, tag: &str, n: usize, payload: Value) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            NewTask::new(tenant, "test", payload.clone())
                .with_task_id(format!("{tenant}-{tag}-{i}"))
        })
        .collect()
}

/// Every metric name the dashboards and the rules (Prometheus and Grafana) use.
fn names_used() -> BTreeMap<String, Vec<String>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (exprs, vars) = dashboard_queries();
    for q in exprs.iter().chain(&vars) {
        for n in metric_names(&q.expr) {
            used.entry(n).or_default().push(q.at.clone());
        }
    }
    for (alert, expr) in rule_exprs(&read(RULES)) {
        for n in metric_names(&expr) {
            used.entry(n).or_default().push(format!("{RULES}: {alert}"));
        }
    }
    let grafana = read_json(GRAFANA_RULES);
    for g in grafana["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            for d in r["data"].as_array().into_iter().flatten() {
                for n in metric_names(d["model"]["expr"].as_str().unwrap_or_default()) {
                    used.entry(n)
                        .or_default()
                        .push(format!("{GRAFANA_RULES}: {}", r["title"]));
                }
            }
        }
    }
    used
}

#[tokio::test]
async fn every_metric_name_in_dashboards_and_rules_is_emitted_by_a_fleet() {
    let catalogue = catalogue();
    let used = names_used();
    let unknown: Vec<&String> = used.keys().filter(|n| !catalogue.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "names used by dashboards or rules that src/telemetry/names.rs does not catalogue: {unknown:?}"
    );

    let env = TestEnv::new();
    let agent = sdk_agent(&env);
    // A breaker that opens on the poison tenant's few failures and probes again soon, so the
    // breaker families are emitted too.
    let members = metered_members_with(
        &env,
        &agent,
        2,
        &[
            ("REDRIVE_ISOLATION__BREAKER__MIN_FAILURES", "4"),
            ("REDRIVE_ISOLATION__BREAKER__COOLDOWN_MS", "300"),
        ],
    );
    let mut batch = tasks("obs-ok", "ok", 20, json!({"simulate": "ok", "work_ms": 0}));
    batch.extend(tasks(
        "obs-poison",
        "bad",
        6,
        json!({"simulate": "malformed_output", "work_ms": 0}),
    ));
    batch.extend(tasks(
        "obs-retry",
        "429",
        3,
        json!({"simulate": "rate_limited", "work_ms": 0}),
    ));
    batch.extend(agent_tasks("obs-ok"));
    env.enqueue_tasks(batch).await;

    let expected: BTreeSet<String> = used.keys().cloned().collect();
    assert!(expected.len() >= 25, "too few names to check: {expected:?}");
    let mut emitted: BTreeMap<String, String> = BTreeMap::new();
    // The traffic moved the families it exercises (sums over both members).
    let activity: [(&str, f64); 10] = [
        ("redrive_tasks_read_total", 29.0 + 4.0),
        ("redrive_tasks_completed_total", 20.0 + 4.0),
        ("redrive_http_attempts_total", 2.0),
        ("redrive_agent_attempts_total", 2.0),
        ("redrive_tasks_failed_total", 6.0 + 9.0),
        ("redrive_tasks_retried_total", 6.0),
        ("redrive_retries_promoted_total", 6.0),
        ("redrive_dead_lettered_total", 6.0 + 3.0),
        ("redrive_task_duration_seconds_count", 29.0),
        ("redrive_queue_wait_seconds_count", 29.0),
    ];
    // An operator replays the poison through the admin command stream, which a member runs:
    // the admin and replay families move too.
    eventually(
        Duration::from_secs(60),
        "the poison reaches the dead letters",
        || async { env.dead_letters("obs-poison").await.len() >= 6 },
    )
    .await;
    let (code, out, err) = env.cli(
        &[
            "dlq",
            "replay",
            "--tenant",
            "obs-poison",
            "--reason",
            "observability test",
        ],
        &[],
    );
    assert_eq!(code, 0, "replay through the fleet: {out} {err}");
    // The HTTP API inside a member answers, so the API families are emitted too.
    assert_eq!(call_member_api(&members[0].0), vec![200, 200, 404, 401]);
    let mut sums = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sums.clear();
        for (_, addr) in &members {
            emitted.extend(scrape(addr));
            for (k, v) in scrape_sums(addr) {
                *sums.entry(k).or_insert(0.0) += v;
            }
        }
        let active = activity
            .iter()
            .all(|(n, min)| sums.get(*n).is_some_and(|v| v >= min));
        if (active && expected.iter().all(|n| emitted.contains_key(n))) || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (n, min) in activity {
        assert!(
            sums.get(n).is_some_and(|v| *v >= min),
            "{n} should reach {min} after the traffic, got {:?}",
            sums.get(n)
        );
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|n| !emitted.contains_key(*n))
        .map(|n| format!("{n} (used by {})", used[n].join(", ")))
        .collect();
    let logs: String = members.iter().map(|(m, _)| m.log_text()).collect();
    assert!(
        missing.is_empty(),
        "metric names used by dashboards or rules that the fleet does not emit:\n  {}\nmember logs:\n{logs}",
        missing.join("\n  ")
    );
    eprintln!(
        "{} metric names used by dashboards and rules, all emitted: {expected:?}",
        expected.len()
    );
    // Quantiles need real histograms (with _bucket series), not summaries; the gauges named
    // in seconds are not quantiles' material.
    const SECONDS_GAUGES: [&str; 1] = ["redrive_dlq_archive_backlog_age_seconds"];
    for n in used.keys() {
        if n.ends_with("_seconds") && !SECONDS_GAUGES.contains(&n.as_str()) {
            assert_eq!(
                emitted.get(n).map(String::as_str),
                Some("histogram"),
                "{n} must be a histogram"
            );
        }
    }
    // Every catalogued name is on a dashboard or in a rule, so nothing is emitted unseen.
    let unused: Vec<&String> = catalogue
        .iter()
        .filter(|n| !used.contains_key(*n))
        .collect();
    assert!(
        unused.is_empty(),
        "catalogued metrics no dashboard or rule uses: {unused:?}"
    );
}

/// The rules of `RULES` with windows, `for` and the group interval shortened for a live test.
fn fast_rules() -> String {
    let mut rules = read(RULES);
    for (from, to) in [
        ("[1h]", "[1m]"),
        ("[24h]", "[1m]"),
        ("interval: 30s", "interval: 1s"),
        ("for: 30m", "for: 1s"),
        ("for: 5m", "for: 1s"),
        ("for: 1m", "for: 1s"),
    ] {
        assert!(
            rules.contains(from),
            "{RULES} no longer contains {from:?}: update fast_rules"
        );
        rules = rules.replace(from, to);
    }
    rules
}

/// A poison storm from one tenant while another works normally, scraped by a real Prometheus
/// every second: the tenant-poison and tenant-share alerts fire for the storming tenant only,
/// and every dashboard query returns data.
#[tokio::test]
async fn a_poison_storm_fires_the_tenant_alerts_and_every_dashboard_query_has_data() {
    let env = TestEnv::new();
    let agent = sdk_agent(&env);
    let members = metered_members(&env, &agent, 2);
    let scratch = Scratch::new("e2e");
    scratch.write("prometheus/rules.yml", &fast_rules());
    let targets: Vec<String> = members.iter().map(|(_, a)| format!("'{a}'")).collect();
    let prom = Prometheus::start(
        &scratch,
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: redrive\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    );
    let limit = Duration::from_secs(90);

    // Both tenants known and their counters scraped at 0 for ten scrapes before the storm, so
    // increase() sees all of it, and extrapolates little (increase() extrapolates to the end of the
    // window: over only two samples one second apart, 2 dead letters can read as up to 4).
    env.enqueue_tasks(tasks(
        "storm",
        "warm",
        1,
        json!({"simulate": "ok", "work_ms": 0}),
    ))
    .await;
    env.enqueue_tasks(tasks(
        "calm",
        "warm",
        1,
        json!({"simulate": "ok", "work_ms": 0}),
    ))
    .await;
    eventually(limit, "Prometheus scrapes both members' zero-registered tenant counters", || async {
        prom.query(r#"count by (instance) (count_over_time(redrive_dead_lettered_total{tenant=~"storm|calm",class="schema_mismatch"}[1m]) >= 10)"#)
            .is_some_and(|r| r.len() == 2)
            && prom
                .query(r#"count(redrive_dead_lettered_total{tenant=~"storm|calm",class="schema_mismatch"})"#)
                .is_some_and(|r| r.first().is_some_and(|v| v["value"][1] == "4"))
    })
    .await;

    // The storm: tenant "storm" floods always-malformed output; "calm" works, with two retries.
    let mut batch = tasks(
        "storm",
        "poison",
        30,
        json!({"simulate": "malformed_output", "work_ms": 0}),
    );
    batch.extend(tasks(
        "calm",
        "ok",
        20,
        json!({"simulate": "ok", "work_ms": 0}),
    ));
    batch.extend(tasks(
        "calm",
        "429",
        2,
        json!({"simulate": "rate_limited", "work_ms": 0}),
    ));
    batch.extend(agent_tasks("calm"));
    env.enqueue_tasks(batch).await;

    let firing = |alerts: &[Value], name: &str, tenant: &str| {
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == name
                && a["labels"]["tenant"] == tenant
                && a["state"] == "firing"
        })
    };
    eventually(
        limit,
        "RedriveTenantPoison, RedriveTenantDeadLetterShare and RedriveDeadLettersWaiting fire for storm",
        || async {
            let alerts = prom.alerts();
            firing(&alerts, "RedriveTenantPoison", "storm")
                && firing(&alerts, "RedriveTenantDeadLetterShare", "storm")
                && firing(&alerts, "RedriveDeadLettersWaiting", "storm")
        },
    )
    .await;
    let alerts = prom.alerts();
    for a in &alerts {
        let name = a["labels"]["alertname"].as_str().unwrap_or("");
        if ["RedriveTenantPoison", "RedriveTenantDeadLetterShare"].contains(&name) {
            assert_eq!(
                a["labels"]["tenant"], "storm",
                "only the storming tenant alerts: {a}"
            );
        }
        assert_ne!(name, "RedriveMetricsDown", "both members are up: {a}");
    }

    // An operator replays part of the storm through the admin command stream (a member runs
    // it), so the admin panels have data too. Part only: replaying all of it would empty the
    // tenant's dead letters, and with its breaker open the replayed tasks wait out the
    // cool-down (30 s) before they are dead-lettered again — meanwhile its dead-letter depth
    // has no series for the dashboards to show.
    let (code, out, err) = env.cli(&["dlq", "list", "--json", "--tenant", "storm"], &[]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .take(5)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "{out}");
    let mut args = vec!["dlq", "replay"];
    args.extend(&ids);
    args.extend(["--rate", "0", "--reason", "observability test"]);
    let (code, out, err) = env.cli(&args, &[]);
    assert_eq!(code, 0, "replay through the fleet: {out} {err}");
    assert!(out.contains("replayed 5 of 5"), "{out}");
    // A few API requests to a member, so the HTTP API panels have data too.
    assert_eq!(call_member_api(&members[0].0), vec![200, 200, 404, 401]);

    // Every dashboard query returns data against this fleet (the storming tenant as $tenant).
    let (exprs, vars) = dashboard_queries();
    let mut no_data = Vec::new();
    for q in &exprs {
        let e = substitute(&q.expr, "storm", "5m");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match prom.query(&e) {
                Some(r) if !r.is_empty() => break,
                other if Instant::now() > deadline => {
                    no_data.push(format!("{}: {e} -> {other:?}", q.at));
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    // The tenant variable lists both tenants.
    for v in &vars {
        let metric = metric_names(&v.expr)
            .into_iter()
            .next()
            .expect("variable metric");
        let body = prom
            .api(&format!(
                "/api/v1/label/tenant/values?match%5B%5D={}",
                urlencode(&metric)
            ))
            .expect("label values");
        let values: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            values.contains(&"storm") && values.contains(&"calm"),
            "{}: {values:?}",
            v.at
        );
    }
    assert!(
        no_data.is_empty(),
        "dashboard queries without data:\n  {}\nprometheus log:\n{}",
        no_data.join("\n  "),
        prom.log_text()
    );
    drop(members);
}

// ------------------------------------------------------------------------------------ unit

#[test]
fn metric_names_are_extracted_from_expressions() {
    let n = metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(redrive_task_duration_seconds_bucket[1m]))) / \
         max by (tenant) (redrive_lag{tenant=\"$tenant\"}) + my_redrive_x + redrive_tasks_read_total",
    );
    let want: BTreeSet<String> = [
        "redrive_task_duration_seconds",
        "redrive_lag",
        "redrive_tasks_read_total",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(n, want);
    assert_eq!(
        referenced_vars("a $tenant ${x} ${y:csv} [[z]] $$ $1 $__rate_interval"),
        ["tenant", "x", "y", "z", "__rate_interval"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(catalogue().contains("redrive_dlq_depth"));
    let exprs = rule_exprs(&read(RULES));
    let alerts: Vec<&str> = exprs.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(alerts, ALERTS);
    assert!(exprs
        .iter()
        .all(|(_, e)| e.contains("redrive_") || e.contains("up{")));
    assert!(exprs[0].1.starts_with("sum by (tenant)") && !exprs[0].1.contains("labels"));
}
