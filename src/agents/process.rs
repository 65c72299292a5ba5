//! Child-process plumbing shared by the `pool` and `exec` handlers (PROTOCOL.md, "Stdio
//! framing"): the command options, a hardened spawn, process-group kills, bounded line reading,
//! exit descriptions and the request line.
//!
//! # How a child is started
//!
//! Every agent process is started
//!
//! * in its own **process group** (`process_group(0)`), so a kill reaches whatever it started
//!   too (a grandchild, a shell pipeline): [`kill_group`] signals the whole group;
//! * with a **parent-death signal** (`prctl(PR_SET_PDEATHSIG, SIGKILL)` in `pre_exec`), so the
//!   kernel kills it when the member dies, even by SIGKILL. Right after the `prctl` the child
//!   checks `getppid()` against the member's pid: had the member died between `fork` and the
//!   `prctl`, the signal would never come, and the child gives up instead of running orphaned.
//!
//! Linux delivers the parent-death signal when the **thread** that forked the child exits, not
//! only when the process does. A child spawned from a tokio worker thread would die whenever
//! tokio retires that thread (blocking-pool threads are retired after 10 s idle, and a worker
//! that ran `block_in_place` becomes one). So [`spawn`] never forks on the caller's thread: it
//! hands the command to one dedicated spawner thread that lives as long as the process
//! (`redrive-agent-spawner`), and only the process's death ends it. The unit test
//! `a_child_dies_with_the_thread_that_spawned_it` shows the hazard and that the signal is set.
//!
//! # What a child inherits
//!
//! The member's environment, minus the member's own configuration and secrets: every
//! `REDRIVE_*` variable (`REDRIVE_REDIS_URL` may carry the Redis password, `REDRIVE_REDIS__*`
//! the TLS key and credential settings) and every variable the member read a secret from
//! ([`withhold_variable`]: `redis.password_env`'s) are removed, unless the route's `env` sets
//! one explicitly. An agent is user code handling untrusted input (a prompt injection can make
//! it print its environment): it gets Redis access only when its route gives it.
//!
//! The parent-death signal reaches the direct child only. A grandchild the agent started
//! survives a SIGKILL of the member unless the agent ties it to its own life; a clean stop
//! ([`kill_group`] from `shutdown`, a timeout, a replaced process) reaches the whole group.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::error::{Error, Result};
use crate::handler::HandlerSpec;

/// The default limit of one stdout line (`max_reply_bytes`).
pub(crate) const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;

/// How much of one stderr line is logged; the rest of the line is dropped.
pub(crate) const STDERR_LINE_BYTES: usize = 4 * 1024;

/// Keys every `[[handlers]]` entry has, read by the registry; tolerated in `options` should they
/// be passed along.
const COMMON_KEYS: [&str; 4] = ["kinds", "type", "timeout_ms", "max_concurrent"];

/// What to run: argv (no shell), extra environment, working directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandSpec {
    /// The program (resolved at build: an absolute path when it was given as a path) and its
    /// arguments.
    pub argv: Vec<String>,
    /// Variables added to the member's environment.
    pub env: Vec<(String, String)>,
    /// The working directory; the member's when `None`.
    pub cwd: Option<PathBuf>,
}

impl CommandSpec {
    /// The program, for messages.
    pub fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }
}

/// Reads and checks a handler entry's options, naming `handlers[<i>].<key>` in every error.
pub(crate) struct Options<'a> {
    spec: &'a HandlerSpec,
}

impl<'a> Options<'a> {
    /// The options of `spec`, refusing any key not in `allowed` (or the common keys).
    pub fn new(spec: &'a HandlerSpec, allowed: &[&str]) -> Result<Options<'a>> {
        let mut unknown: Vec<&str> = spec
            .options
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k) && !COMMON_KEYS.contains(k))
            .collect();
        unknown.sort_unstable();
        if let Some(k) = unknown.first() {
            return Err(Error::Config(format!(
                "handlers[{}].{k} (type {}): unknown key; the keys of this type are {}",
                spec.index,
                spec.type_name,
                allowed.join(", ")
            )));
        }
        Ok(Options { spec })
    }

    /// A configuration error about `key`.
    pub fn error(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "handlers[{}].{key} (type {}): {msg}",
            self.spec.index, self.spec.type_name
        ))
    }

    /// An integer option in `min..=max`, `default` when absent.
    pub fn integer(&self, key: &str, default: usize, min: usize, max: usize) -> Result<usize> {
        match self.spec.options.get(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min as u64..=max as u64).contains(&n) => Ok(n as usize),
                _ => Err(self.error(
                    key,
                    format!("must be an integer from {min} to {max}, got {v}"),
                )),
            },
        }
    }

    /// The command options: `command` (required), `env`, `cwd`. The program must exist now: a
    /// path to an executable file, or a name found on `PATH` (the `env` entry's `PATH` when it
    /// sets one).
    pub fn command(&self) -> Result<CommandSpec> {
        let argv: Vec<String> = match self.spec.options.get("command") {
            None => {
                return Err(self.error(
                    "command",
                    "missing: the program and its arguments, as an array of strings (no shell)",
                ))
            }
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) if !s.contains('\0') => Ok(s.to_owned()),
                    _ => Err(self.error(
                        "command",
                        format!("every item must be a string without NUL characters, got {v}"),
                    )),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(self.error(
                    "command",
                    format!("must be a non-empty array of strings (argv, no shell), got {other}"),
                ))
            }
        };
        if argv[0].is_empty() {
            return Err(self.error("command", "the program (the first item) is empty"));
        }
        let env: Vec<(String, String)> = match self.spec.options.get("env") {
            None => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(self.error("env", format!("{k:?} is not a variable name")));
                    }
                    match v.as_str() {
                        Some(s) if !s.contains('\0') => Ok((k.clone(), s.to_owned())),
                        _ => Err(self
                            .error("env", format!("the value of {k} must be a string, got {v}"))),
                    }
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(self.error("env", format!("must be a table of strings, got {other}")))
            }
        };
        let cwd = match self.spec.options.get("cwd") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => {
                let p = PathBuf::from(s);
                if !p.is_dir() {
                    return Err(self.error("cwd", format!("{s:?} is not a directory")));
                }
                Some(p)
            }
            Some(other) => {
                return Err(self.error("cwd", format!("must be a directory path, got {other}")))
            }
        };
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));
        let program = resolve_program(&argv[0], cwd.as_deref(), path_var)
            .map_err(|why| self.error("command", why))?;
        let mut argv = argv;
        argv[0] = program;
        Ok(CommandSpec { argv, env, cwd })
    }
}

/// Checks that `program` can be run: a path (relative ones are taken from `cwd`, else from the
/// member's working directory, and made absolute) to an executable file, or a name found on
/// `path_var`. Returns what to run.
fn resolve_program(
    program: &str,
    cwd: Option<&Path>,
    path_var: Option<OsString>,
) -> std::result::Result<String, String> {
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let mut p = PathBuf::from(program);
        if p.is_relative() {
            let base = match cwd {
                Some(c) => c.to_path_buf(),
                None => std::env::current_dir()
                    .map_err(|e| format!("cannot resolve {program:?}: {e}"))?,
            };
            p = base.join(p);
        }
        if !p.exists() {
            return Err(format!("{program:?} does not exist ({})", p.display()));
        }
        if !executable(&p) {
            return Err(format!(
                "{program:?} is not an executable file ({})",
                p.display()
            ));
        }
        return p
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{program:?} is not a UTF-8 path"));
    }
    let found = path_var
        .as_ref()
        .map(|v| std::env::split_paths(v).any(|dir| executable(&dir.join(program))))
        .unwrap_or(false);
    if found {
        Ok(program.to_owned())
    } else {
        Err(format!(
            "{program:?} was not found on PATH (give a path, or set PATH in `env`)"
        ))
    }
}

/// Variables the member read a secret from (other than `REDRIVE_*` ones): never passed to
/// an agent unless its route's `env` sets them.
static WITHHELD: Mutex<Vec<OsString>> = Mutex::new(Vec::new());

/// Marks `name` as holding a secret of this process (`redis.password_env` names one): agent
/// processes started from now on do not inherit it (see the module documentation).
pub(crate) fn withhold_variable(name: &str) {
    let name = OsString::from(name);
    let mut w = WITHHELD.lock().unwrap_or_else(|e| e.into_inner());
    if !w.contains(&name) {
        w.push(name);
    }
}

/// Of the member's variables `inherited`, the ones a child must not get: `REDRIVE_*` and the
/// `withheld` ones, except those the route's `env` sets (it wins: it is set explicitly).
fn scrubbed(
    inherited: impl Iterator<Item = OsString>,
    withheld: &[OsString],
    route_env: &[(String, String)],
) -> Vec<OsString> {
    inherited
        .filter(|k| {
            k.as_encoded_bytes().starts_with(b"REDRIVE_") || withheld.iter().any(|w| w == k)
        })
        .filter(|k| !route_env.iter().any(|(name, _)| k == name.as_str()))
        .collect()
}

/// The hardened command: own process group, parent-death signal with the parent re-checked,
/// stdio piped, the member's environment without its configuration and secrets, the route's
/// extra environment and working directory.
pub(crate) fn command(spec: &CommandSpec) -> std::process::Command {
    let mut cmd = std::process::Command::new(spec.program());
    {
        let withheld = WITHHELD.lock().unwrap_or_else(|e| e.into_inner());
        for k in scrubbed(std::env::vars_os().map(|(k, _)| k), &withheld, &spec.env) {
            cmd.env_remove(k);
        }
    }
    cmd.args(spec.argv.iter().skip(1))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing (errors are raw OS errors).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The member died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

/// Spawns `spec` on the calling thread (which must be inside a tokio runtime). The child's
/// parent-death signal is tied to this thread: see the module documentation; use [`spawn`].
pub(crate) fn spawn_here(spec: &CommandSpec) -> io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::from(command(spec));
    cmd.kill_on_drop(true);
    cmd.spawn()
}

/// A request to the spawner thread.
struct SpawnJob {
    spec: Arc<CommandSpec>,
    runtime: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// The spawner thread's queue; the thread lives as long as the process.
static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<SpawnJob>>>> = OnceLock::new();

fn spawner() -> Option<mpsc::Sender<SpawnJob>> {
    let cell = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("redrive-agent-spawner".into())
            .spawn(move || {
                for job in rx {
                    let _rt = job.runtime.enter();
                    let result = spawn_here(&job.spec);
                    if let Err(Ok(child)) = job.reply.send(result) {
                        // Nobody waits for it any more (the attempt was abandoned meanwhile).
                        if let Some(pid) = child.id() {
                            kill_group(pid, libc::SIGKILL);
                        }
                    }
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    });
    cell.lock().ok().and_then(|g| g.clone())
}

/// Spawns `spec` from the dedicated spawner thread (see the module documentation), on the
/// caller's tokio runtime.
pub(crate) async fn spawn(spec: Arc<CommandSpec>) -> io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("no tokio runtime to spawn on: {e}")))?;
    let Some(queue) = spawner() else {
        return Err(io::Error::other(
            "the agent spawner thread could not be started",
        ));
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    queue
        .send(SpawnJob {
            spec,
            runtime,
            reply,
        })
        .map_err(|_| io::Error::other("the agent spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

/// Sends `signal` to the process group led by `pid` (a child spawned by [`command`], whose
/// group id is its pid). Refuses pids 0 and 1, which would name the caller's group or every
/// process.
pub(crate) fn kill_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether any process of the group led by `pid` is still alive (zombies excepted), read from
/// /proc.
#[cfg(test)]
pub(crate) fn group_alive(pid: u32) -> bool {
    group_members(pid)
        .into_iter()
        .any(|(_, state)| state != 'Z' && state != 'X')
}

/// The processes (pid, state letter) whose process group is `pgid`, read from /proc.
#[cfg(test)]
pub(crate) fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let pgrp = fields.nth(1).and_then(|s| s.parse::<u32>().ok());
        if pgrp == Some(pgid) {
            out.push((pid, state));
        }
    }
    out
}

/// How a child ended, for messages and outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The exit of `status`.
    pub fn of(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match signal_name(*s) {
                Some(name) => write!(f, "was killed by signal {s} ({name})"),
                None => write!(f, "was killed by signal {s}"),
            },
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// What [`LineReader::next`] read.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// One line, without its newline (in truncating mode, at most the limit's bytes of it).
    Line(Vec<u8>),
    /// A line longer than the limit (strict mode); the reader should not be used again.
    TooLong,
    /// The end of the stream.
    Eof,
}

/// Reads newline-terminated lines with a bound on their length, cancel-safely (a partial line
/// stays in the reader when a `select!` drops the future).
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max: usize,
    /// Truncating mode: an over-long line is returned cut at `max`, the rest dropped.
    truncate: bool,
    /// Dropping the rest of a line already returned truncated.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader that reports a line over `max` bytes as [`Next::TooLong`].
    pub fn strict(inner: R, max: usize) -> Self {
        LineReader::new(inner, max, false)
    }

    /// A reader that cuts lines at `max` bytes and drops the rest of them.
    pub fn truncating(inner: R, max: usize) -> Self {
        LineReader::new(inner, max, true)
    }

    fn new(inner: R, max: usize, truncate: bool) -> Self {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
            max,
            truncate,
            skipping: false,
        }
    }

    /// The next line.
    pub async fn next(&mut self) -> io::Result<Next> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                self.skipping = false;
                if self.buf.is_empty() {
                    return Ok(Next::Eof);
                }
                // A last line without its newline.
                return Ok(Next::Line(std::mem::take(&mut self.buf)));
            }
            let newline = chunk.iter().position(|b| *b == b'\n');
            let end = newline.unwrap_or(chunk.len());
            if !self.skipping {
                let keep = if self.truncate {
                    end.min(self.max.saturating_sub(self.buf.len()))
                } else {
                    end
                };
                self.buf.extend_from_slice(&chunk[..keep]);
            }
            let consumed = newline.map_or(chunk.len(), |i| i + 1);
            self.inner.consume(consumed);
            if newline.is_some() {
                if std::mem::take(&mut self.skipping) {
                    // The end of a line already returned cut.
                    continue;
                }
                if !self.truncate && self.buf.len() > self.max {
                    self.buf.clear();
                    return Ok(Next::TooLong);
                }
                return Ok(Next::Line(std::mem::take(&mut self.buf)));
            }
            if self.skipping {
                continue;
            }
            if self.truncate && self.buf.len() >= self.max {
                self.skipping = true;
                return Ok(Next::Line(std::mem::take(&mut self.buf)));
            }
            if !self.truncate && self.buf.len() > self.max {
                self.buf.clear();
                return Ok(Next::TooLong);
            }
        }
    }
}

/// The request line of one attempt: `{"id":"<id>","task":<body>}` and a newline. The body is
/// the request object as built by `protocol::request_body`; a payload written across several
/// lines keeps its bytes, except that its newlines (whitespace between JSON tokens: a JSON
/// string cannot hold a raw one) become spaces, so the request stays one line.
pub(crate) fn request_line(id: &str, body: &[u8]) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let mut line = Vec::with_capacity(body.len() + id.len() + 20);
    line.extend_from_slice(b"{\"id\":");
    line.extend_from_slice(id.as_bytes());
    line.extend_from_slice(b",\"task\":");
    line.extend(
        body.iter()
            .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b }),
    );
    line.extend_from_slice(b"}\n");
    line
}

/// A stdout line that carries nothing (empty or only whitespace): skipped, not a protocol
/// break.
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// A line cut to at most `max` bytes as text (invalid UTF-8 replaced).
pub(crate) fn bounded_text(line: &[u8], max: usize) -> String {
    let cut = &line[..line.len().min(max)];
    let text = String::from_utf8_lossy(cut);
    text.trim_end_matches(['\r', '\n']).to_owned()
}

/// The last lines of a stream, bounded in bytes: what an exec reason quotes of stderr.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    max: usize,
}

impl Tail {
    /// A tail of at most `max` bytes of text.
    pub fn new(max: usize) -> Tail {
        Tail {
            max,
            ..Tail::default()
        }
    }

    /// Adds a line, dropping the oldest ones over the bound.
    pub fn push(&mut self, line: String) {
        let line = if line.len() > self.max {
            let mut cut = line.len() - self.max;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line[cut..].to_owned()
        } else {
            line
        };
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.max + 1 && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }

    /// The lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> CommandSpec {
        CommandSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: Vec::new(),
            cwd: None,
        }
    }

    /// PDEATHSIG fires when the *thread* that forked the child exits: a child spawned from a
    /// short-lived thread dies with it. This is why [`spawn`] forks on one dedicated thread
    /// that lives as long as the process; it also proves the signal is set.
    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let spec = sh("sleep 30");
        let mut child = std::thread::spawn(move || command(&spec).spawn())
            .join()
            .unwrap()
            .unwrap();
        // The spawning thread has exited: the kernel sends the child SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the child outlived its spawning thread"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// A child spawned through [`spawn`] lives on after the thread that asked for it exits, and
    /// leads its own process group.
    #[test]
    fn spawned_children_outlive_the_asking_thread_and_lead_their_group() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let spec = Arc::new(sh("sleep 30"));
        let child = std::thread::spawn(move || handle.block_on(spawn(spec)))
            .join()
            .unwrap()
            .unwrap();
        let pid = child.id().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(group_alive(pid), "the child died with the asking thread");
        assert_eq!(group_members(pid).first().map(|m| m.0), Some(pid));
        kill_group(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_alive(pid) {
            assert!(Instant::now() < deadline, "the group survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(child);
        drop(rt);
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let input: &[u8] = b"short\n0123456789abcdef\n\nlast";
        let mut strict = LineReader::strict(input, 10);
        assert_eq!(strict.next().await.unwrap(), Next::Line(b"short".to_vec()));
        assert_eq!(strict.next().await.unwrap(), Next::TooLong);
        let mut cut = LineReader::truncating(input, 10);
        let mut got = Vec::new();
        loop {
            match cut.next().await.unwrap() {
                Next::Line(l) => got.push(String::from_utf8(l).unwrap()),
                Next::Eof => break,
                Next::TooLong => panic!("truncating mode"),
            }
        }
        assert_eq!(got, ["short", "0123456789", "", "last"]);
        // A line of exactly the limit is a line.
        let mut exact = LineReader::strict(&b"0123456789\n"[..], 10);
        assert_eq!(
            exact.next().await.unwrap(),
            Next::Line(b"0123456789".to_vec())
        );
        assert_eq!(exact.next().await.unwrap(), Next::Eof);
    }

    #[test]
    fn request_lines_are_one_line() {
        let line = request_line("r7", b"{\"payload\": {\n  \"a\": \"x\\ny\"\r\n}}");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], "r7");
        assert_eq!(v["task"]["payload"]["a"], "x\ny");
    }

    #[test]
    fn tails_keep_the_last_bytes() {
        let mut t = Tail::new(10);
        for l in ["aaaa", "bbbb", "cccc"] {
            t.push(l.into());
        }
        assert_eq!(t.text(), "bbbb\ncccc");
        t.push("x".repeat(30));
        assert_eq!(t.text(), "x".repeat(10));
    }

    #[test]
    fn exits_describe_themselves() {
        assert_eq!(Exit::Code(3).to_string(), "exited with code 3");
        assert_eq!(
            Exit::Signal(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn programs_are_resolved_at_build() {
        assert!(resolve_program("sh", None, std::env::var_os("PATH")).is_ok());
        let err = resolve_program("no-such-agent-xyz", None, std::env::var_os("PATH"));
        assert!(err.unwrap_err().contains("not found on PATH"));
        assert_eq!(
            resolve_program("./sh", Some(Path::new("/bin")), None).unwrap(),
            "/bin/./sh"
        );
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        assert!(resolve_program(manifest, None, None)
            .unwrap_err()
            .contains("not an executable"));
    }

    #[test]
    fn children_do_not_inherit_the_members_configuration_or_secrets() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let inherited = os(&[
            "PATH",
            "HOME",
            "REDRIVE_REDIS_URL",
            "REDRIVE_REDIS__TLS_KEY_FILE",
            "REDRIVE_LOG__LEVEL",
            "REDIS_PASS",
            "REDRIVE",
        ]);
        let route = vec![("REDRIVE_LOG__LEVEL".to_owned(), "debug".to_owned())];
        assert_eq!(
            scrubbed(inherited.into_iter(), &os(&["REDIS_PASS"]), &route),
            os(&[
                "REDRIVE_REDIS_URL",
                "REDRIVE_REDIS__TLS_KEY_FILE",
                "REDIS_PASS"
            ]),
            "every REDRIVE_* and withheld variable but the ones the route sets"
        );
        withhold_variable("REDRIVE_TEST_WITHHELD");
        withhold_variable("REDRIVE_TEST_WITHHELD");
        let w = WITHHELD.lock().unwrap();
        assert_eq!(
            w.iter().filter(|v| *v == "REDRIVE_TEST_WITHHELD").count(),
            1
        );
    }
}
