//! The `exec` handler (PROTOCOL.md, "Stdio framing"): one process per attempt, for scripts. It
//! writes the one request line, closes stdin, and reads stdout until the process exits. A final
//! reply line decides; without one the exit code does: `0` ok (output `null`), `75`
//! (EX_TEMPFAIL) `upstream_unavailable`, killed by a signal `agent_crashed`, any other code
//! `invalid_input` (with the end of stderr in the reason). No reply within the timeout kills
//! the process group: `timeout`. Nothing the attempt started outlives it: its process group is
//! killed when it ends.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::agents::process::{
    bounded_text, is_blank, kill_group, request_line, spawn, CommandSpec, Exit, LineReader, Next,
    Options, Tail, DEFAULT_MAX_REPLY_BYTES, STDERR_LINE_BYTES,
};
use crate::agents::protocol::{apply_event, parse_line, reply_outcome, request_body, Line};
use crate::error::Result;
use crate::handler::{
    FailureClass, Handler, HandlerFuture, HandlerSpec, Outcome, ShutdownFuture, TaskContext,
};
use crate::task::Task;
use crate::telemetry::events::agent_process::{AgentMeters, EndReason};
use crate::telemetry::tasklog::TaskLog;

/// The keys of an `exec` entry besides the common ones.
const KEYS: [&str; 4] = ["command", "env", "cwd", "max_reply_bytes"];

/// The exit code that means "try again later" (sysexits' EX_TEMPFAIL).
pub(crate) const EX_TEMPFAIL: i32 = 75;

/// How much of stderr a failure's reason quotes.
const STDERR_TAIL_BYTES: usize = 2 * 1024;

/// After the process exits, how long lines already in its stdout pipe are still read.
const DRAIN: Duration = Duration::from_millis(200);

/// After the final reply, how long the process may take to exit before its group is killed
/// (the reply decides either way).
const AFTER_REPLY: Duration = Duration::from_secs(2);

/// How long `shutdown` waits after SIGTERM before it kills what is left.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Builds the `exec` handler of a `[[handlers]]` entry. Options: `command` (argv, no shell;
/// the program must exist now), `env`, `cwd`, `max_reply_bytes` (per stdout line, default
/// 1 MiB). The attempt timeout is the entry's.
pub(crate) fn build(spec: &HandlerSpec) -> Result<Arc<dyn Handler>> {
    let o = Options::new(spec, &KEYS)?;
    let command = o.command()?;
    let max_reply_bytes = o.integer(
        "max_reply_bytes",
        DEFAULT_MAX_REPLY_BYTES,
        64,
        256 * 1024 * 1024,
    )?;
    if spec.timeout.is_zero() {
        return Err(o.error("timeout_ms", "must be more than 0"));
    }
    Ok(Arc::new(ExecHandler {
        inner: Arc::new(Exec {
            name: spec.label(),
            command: Arc::new(command),
            max_reply_bytes,
            timeout: spec.timeout,
            meters: AgentMeters::new(&format!("{}:{}", spec.index, spec.type_name), false),
            next_id: AtomicU64::new(1),
            running: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
        }),
    }))
}

/// The `exec` handler.
pub(crate) struct ExecHandler {
    inner: Arc<Exec>,
}

struct Exec {
    /// `handlers[0] (type exec)`.
    name: String,
    command: Arc<CommandSpec>,
    max_reply_bytes: usize,
    timeout: Duration,
    meters: AgentMeters,
    next_id: AtomicU64,
    /// The process groups of attempts running now.
    running: Mutex<HashSet<u32>>,
    /// Set by `shutdown`: no new attempt starts, and the ones it stops fail as
    /// `upstream_unavailable`.
    closed: AtomicBool,
}

impl Exec {
    fn running(&self) -> Vec<u32> {
        self.running
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Kills the attempt's process group when the attempt ends, however it ends (an outcome, the
/// fleet dropping it): nothing it started outlives it.
struct Group {
    exec: Arc<Exec>,
    pid: u32,
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pid, libc::SIGKILL);
        if let Ok(mut r) = self.exec.running.lock() {
            r.remove(&self.pid);
        }
    }
}

impl Handler for ExecHandler {
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let exec = self.inner.clone();
        Box::pin(async move {
            let outcome = run(&exec, &task, &ctx).await;
            exec.meters.attempt_finished(&outcome);
            outcome
        })
    }

    fn shutdown(&self) -> ShutdownFuture {
        let exec = self.inner.clone();
        Box::pin(async move {
            exec.closed.store(true, Ordering::SeqCst);
            let pids = exec.running();
            for pid in &pids {
                kill_group(*pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            while !exec.running().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let left = exec.running();
            for pid in &left {
                kill_group(*pid, libc::SIGKILL);
            }
            exec.meters
                .stopped(pids.len().saturating_sub(left.len()), left.len());
        })
    }
}

impl Drop for ExecHandler {
    fn drop(&mut self) {
        for pid in self.inner.running() {
            kill_group(pid, libc::SIGKILL);
        }
    }
}

/// What reading the process's stdout came to.
enum Read {
    /// Stdout closed or the process exited (with its status when known).
    Ended(Option<std::process::ExitStatus>),
    /// It broke the protocol.
    Broke(String),
    /// The timeout passed.
    TimedOut,
}

/// One attempt: start the process, send the request, read until it exits.
async fn run(exec: &Arc<Exec>, task: &Task, ctx: &TaskContext) -> Outcome {
    let deadline = tokio::time::Instant::now() + exec.timeout;
    let stopped = || {
        Outcome::fail(
            FailureClass::UpstreamUnavailable,
            format!("{} is shut down: the member is stopping", exec.name),
        )
    };
    if exec.closed.load(Ordering::SeqCst) {
        return stopped();
    }
    let body = match request_body(task, ctx.max_attempts()) {
        Ok(b) => b,
        Err(why) => return Outcome::fail(FailureClass::InvalidInput, why),
    };
    let id = format!("r{}", exec.next_id.fetch_add(1, Ordering::Relaxed));
    let line = request_line(&id, &body);
    let mut child = match spawn(exec.command.clone()).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!(
                "{}: cannot start {:?}: {e}",
                exec.name,
                exec.command.program()
            );
            exec.meters.spawn_failed(0, &why, None);
            return Outcome::fail(FailureClass::UpstreamUnavailable, why);
        }
    };
    let Some(pid) = child.id() else {
        return Outcome::fail(
            FailureClass::AgentCrashed,
            format!(
                "{}: the agent process ended before it could be used",
                exec.name
            ),
        );
    };
    if let Ok(mut r) = exec.running.lock() {
        r.insert(pid);
    }
    let group = Group {
        exec: exec.clone(),
        pid,
    };
    exec.meters.process_started(0, pid);
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        drop(group);
        let _ = child.wait().await;
        exec.meters
            .process_ended(0, pid, EndReason::Exit, "no stdio", 1, None);
        return Outcome::fail(
            FailureClass::AgentCrashed,
            format!("{}: the agent process has no stdio", exec.name),
        );
    };
    // The request, then end of input; a process that does not read it fails by its exit.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&line).await;
        let _ = stdin.shutdown().await;
    });
    let log = TaskLog::of(task);
    let tail = Arc::new(Mutex::new(Tail::new(STDERR_TAIL_BYTES)));
    let stderr_task = {
        let exec = exec.clone();
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::truncating(stderr, STDERR_LINE_BYTES);
            while let Ok(Next::Line(line)) = lines.next().await {
                let text = bounded_text(&line, STDERR_LINE_BYTES);
                exec.meters.stderr_line(0, pid, Some(&log), &text);
                if let Ok(mut t) = tail.lock() {
                    t.push(text);
                }
            }
        })
    };

    let mut stdout = LineReader::strict(stdout, exec.max_reply_bytes);
    let mut reply: Option<Outcome> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let over_limit = || {
        format!(
            "a stdout line over max_reply_bytes = {}",
            exec.max_reply_bytes
        )
    };
    // Once the final reply is in, the process has AFTER_REPLY (within the timeout) to exit.
    let mut settle_by: Option<tokio::time::Instant> = None;
    let read = loop {
        if reply.is_some() && settle_by.is_none() {
            settle_by = Some(deadline.min(tokio::time::Instant::now() + AFTER_REPLY));
        }
        tokio::select! {
            next = stdout.next() => match next {
                Ok(Next::Line(l)) => {
                    if let Err(why) = route(&id, ctx, &l, &mut reply) {
                        break Read::Broke(why);
                    }
                }
                Ok(Next::TooLong) => break Read::Broke(over_limit()),
                Ok(Next::Eof) | Err(_) => break Read::Ended(None),
            },
            s = child.wait() => {
                let drained = tokio::time::timeout(DRAIN, async {
                    loop {
                        match stdout.next().await {
                            Ok(Next::Line(l)) => route(&id, ctx, &l, &mut reply)?,
                            Ok(Next::TooLong) => return Err(over_limit()),
                            Ok(Next::Eof) | Err(_) => return Ok(()),
                        }
                    }
                })
                .await;
                match drained {
                    Ok(Err(why)) => break Read::Broke(why),
                    _ => break Read::Ended(s.ok()),
                }
            }
            _ = tokio::time::sleep_until(settle_by.unwrap_or(deadline)) => {
                // Replied but still running: the reply decides; the group is killed below.
                break if reply.is_some() { Read::Ended(None) } else { Read::TimedOut };
            }
            _ = tick.tick() => exec.meters.refresh(),
        }
    };
    // Stdout closed before the exit: the exit status is still wanted (within the timeout, or
    // the reply's grace).
    let read = match read {
        Read::Ended(None) => {
            if reply.is_some() && settle_by.is_none() {
                settle_by = Some(deadline.min(tokio::time::Instant::now() + AFTER_REPLY));
            }
            tokio::select! {
                s = child.wait() => Read::Ended(s.ok()),
                _ = tokio::time::sleep_until(settle_by.unwrap_or(deadline)) => {
                    if reply.is_some() { Read::Ended(None) } else { Read::TimedOut }
                }
            }
        }
        other => other,
    };
    kill_group(pid, libc::SIGKILL);
    let status = match &read {
        Read::Ended(Some(s)) => Some(*s),
        _ => child.wait().await.ok(),
    };
    writer.abort();
    let _ = tokio::time::timeout(Duration::from_millis(500), stderr_task).await;
    drop(group);
    let tail = tail.lock().map(|t| t.text()).unwrap_or_default();
    let with_tail = |mut why: String| {
        if !tail.is_empty() {
            why.push_str("; its last stderr: ");
            why.push_str(&tail);
        }
        why
    };
    let exit = status.map(Exit::of);
    let (reason, detail) = match (&read, exit) {
        (Read::TimedOut, _) => (EndReason::Timeout, "timed out".to_owned()),
        (Read::Broke(why), _) => (EndReason::Protocol, why.clone()),
        (_, Some(e)) => (EndReason::Exit, e.to_string()),
        (_, None) => (EndReason::Exit, "ended".to_owned()),
    };
    let reason = if exec.closed.load(Ordering::SeqCst) {
        EndReason::Shutdown
    } else {
        reason
    };
    exec.meters.process_ended(0, pid, reason, &detail, 1, None);
    if reason == EndReason::Shutdown && reply.is_none() {
        return stopped();
    }
    match read {
        Read::TimedOut => Outcome::fail(
            FailureClass::Timeout,
            format!(
                "no reply or exit within timeout_ms = {} ({}); the agent's process group was killed",
                exec.timeout.as_millis(),
                exec.name
            ),
        ),
        Read::Broke(why) => Outcome::fail(
            FailureClass::AgentCrashed,
            format!(
                "the agent process (pid {pid}) broke the stdio protocol: {why}; it was killed"
            ),
        ),
        Read::Ended(_) => match (reply, exit) {
            (Some(outcome), _) => outcome,
            (None, Some(Exit::Code(0))) => {
                ctx.output(serde_json::Value::Null);
                Outcome::Done
            }
            (None, Some(Exit::Code(EX_TEMPFAIL))) => Outcome::fail(
                FailureClass::UpstreamUnavailable,
                with_tail(format!(
                    "the agent process (pid {pid}) exited with code {EX_TEMPFAIL} (EX_TEMPFAIL) without a reply"
                )),
            ),
            (None, Some(e @ Exit::Signal(_))) => Outcome::fail(
                FailureClass::AgentCrashed,
                with_tail(format!("the agent process (pid {pid}) {e} without a reply")),
            ),
            (None, Some(e @ Exit::Code(_))) => Outcome::fail(
                FailureClass::InvalidInput,
                with_tail(format!("the agent process (pid {pid}) {e} without a reply")),
            ),
            (None, None) => Outcome::fail(
                FailureClass::AgentCrashed,
                with_tail(format!(
                    "the agent process (pid {pid}) ended without a reply and without an exit status"
                )),
            ),
        },
    }
}

/// Applies one stdout line of the attempt `id`. Lines after the final reply are ignored; an
/// error is a protocol break.
fn route(
    id: &str,
    ctx: &TaskContext,
    line: &[u8],
    reply: &mut Option<Outcome>,
) -> std::result::Result<(), String> {
    if reply.is_some() || is_blank(line) {
        return Ok(());
    }
    let quote = || bounded_text(line, 200);
    let framed = parse_line(line).map_err(|e| {
        format!(
            "a stdout line is not an event or a reply ({e}): {}",
            quote()
        )
    })?;
    match framed.id.as_deref() {
        Some(got) if got == id => {}
        Some(got) => return Err(format!("a line for unknown request id {got:?}")),
        None => {
            return Err(format!(
                "a stdout line without a string \"id\": {}",
                quote()
            ))
        }
    }
    match framed.line {
        Line::Event(event) => {
            let _ = apply_event(ctx, event);
        }
        Line::Reply(r) => *reply = Some(reply_outcome(ctx, r)),
    }
    Ok(())
}
