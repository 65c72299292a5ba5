//! Helpers for the end-to-end tests that run real agents: the SDKs' interpreters (prepared by
//! `scripts/setup.sh`, never skipped when missing), agent servers as child processes, a plain
//! HTTP POST, the member's /metrics and the process table (/proc).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics (never skips) when a prerequisite of the SDK tests is missing.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({}): run scripts/setup.sh first",
        path.display()
    );
}

/// The Python SDK's venv interpreter (sdk/python/.venv, made by scripts/setup.sh).
pub fn venv_python() -> String {
    let py = repo().join("sdk/python/.venv/bin/python");
    require(&py, "the Python SDK's venv");
    py.display().to_string()
}

/// The `node` executable, with the Node SDK built and the example's dependencies installed.
pub fn node() -> String {
    require(&repo().join("sdk/node/dist/index.js"), "the built Node SDK");
    require(
        &repo().join("examples/node-agent/node_modules/@redrive/sdk"),
        "the Node example's node_modules",
    );
    let out = Command::new("node")
        .args(["-e", "process.stdout.write(process.execPath)"])
        .output()
        .expect("node is needed by these tests: run scripts/setup.sh");
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && !path.is_empty(),
        "node did not start: run scripts/setup.sh"
    );
    path
}

/// A free loopback port (bound, then released for the agent to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent process started by a test (an HTTP server), killed when dropped.
pub struct AgentProcess {
    child: Child,
    /// Its `host:port` once it listens.
    pub addr: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts `cmd` (output to `log`) and waits until it accepts connections: on `port`, or,
    /// when `port` is 0, on the address it names in a `… on http://host:port…` log line.
    pub fn start(mut cmd: Command, log: PathBuf, port: u16) -> AgentProcess {
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("start the agent");
        let mut agent = AgentProcess {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited ({status}): {}", agent.log_text());
            }
            let addr = if port != 0 {
                Some(format!("127.0.0.1:{port}"))
            } else {
                agent.log_text().lines().find_map(|l| {
                    let rest = l.split(" on http://").nth(1)?;
                    Some(rest.split('/').next()?.to_owned())
                })
            };
            if let Some(addr) = addr {
                if std::net::TcpStream::connect(&addr).is_ok() {
                    agent.addr = addr;
                    return agent;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not listen within 30 s: {}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python SDK serving `module:agent` over HTTP (`python -m redrive http`) from `cwd` on a
/// port it picks, with `REDRIVE_SECRETS` = `secret` and `env`.
pub fn python_http_agent(
    module: &str,
    cwd: &Path,
    secret: &str,
    env: &[(&str, &str)],
    log: PathBuf,
) -> AgentProcess {
    let mut cmd = Command::new(venv_python());
    cmd.args(["-m", "redrive", "http", module, "--host", "127.0.0.1"])
        .args(["--port", "0"])
        .current_dir(cwd)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("REDRIVE_SECRETS", secret)
        .envs(env.iter().copied());
    AgentProcess::start(cmd, log, 0)
}

/// A plain HTTP/1.0 POST on loopback: (status, body).
pub fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The sum of the samples of metric `name` in a Prometheus text exposition whose labels
/// include every `key="value"` of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            let matches = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if matches {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

// ------------------------------------------------------------------------------------ /proc

/// One process's (state, parent pid, process group) from /proc/<pid>/stat.
pub fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _, _)) if s != 'Z' && s != 'X')
}

/// Live processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(
            |pid| matches!(proc_stat(*pid), Some((s, _, g)) if g == pgid && s != 'Z' && s != 'X'),
        )
        .collect()
}

/// The live children of `pid` (from /proc/<pid>/task/*/children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .filter(|p| alive(*p)),
        );
    }
    out.sort_unstable();
    out
}

/// Waits (bounded) until `cond` holds; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `s` as a TOML string (JSON's escapes are TOML's).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `items` as a TOML array of strings.
pub fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// The command of a `pool` entry serving `module:agent` with the Python SDK.
pub fn python_pool_command(module: &str) -> String {
    toml_list(&[venv_python().as_str(), "-m", "redrive", "pool", module])
}
