//! One slot's supervisor: starts its process, feeds it request lines, routes what it writes on
//! stdout to the attempts in flight, forwards its stderr to the member's log, and when it ends
//! (exit, protocol break, a kill) fails what was in flight in it and starts a new one with
//! backoff (100 ms doubling to 10 s; reset after 60 s up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::state::{Kill, Pool};
use crate::agents::process::{
    bounded_text, is_blank, kill_group, spawn, Exit, LineReader, Next, Tail, STDERR_LINE_BYTES,
};
use crate::agents::protocol::{apply_event, parse_line, reply_outcome, Line};
use crate::handler::{FailureClass, Outcome};
use crate::telemetry::events::agent_process::EndReason;

/// The first restart delay.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest restart delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process up this long resets the backoff.
pub(crate) const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// After a process exits, how long lines already in its stdout pipe are still read (a reply
/// written just before exiting counts).
const DRAIN: Duration = Duration::from_millis(200);
/// After its stdout closed, how long a process may take to exit on its own before its group is
/// killed.
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// How much of a crashed process's stderr its attempts' reasons quote.
const CRASH_TAIL_BYTES: usize = 1024;

/// Runs slot `slot` until the pool closes.
pub(crate) async fn supervise(pool: Arc<Pool>, slot: usize) {
    let mut stop = pool.stop_signal();
    let mut backoff = BACKOFF_START;
    while !pool.is_closed() {
        pool.starting(slot);
        let restart_in = match spawn(pool.command.clone()).await {
            Err(e) => {
                let why = format!("cannot start {:?}: {e}", pool.command.program());
                pool.meters.spawn_failed(slot, &why, Some(backoff));
                pool.start_failed(slot, backoff, why);
                backoff
            }
            Ok(child) => {
                let ran = run_process(&pool, slot, child, backoff).await;
                if ran >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                backoff
            }
        };
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if pool.is_closed() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(restart_in) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Runs one process to its end; returns how long it ran. `restart_in` is the delay its
/// replacement will wait (reset when the process ran long enough).
async fn run_process(
    pool: &Arc<Pool>,
    slot: usize,
    mut child: tokio::process::Child,
    restart_in: Duration,
) -> Duration {
    let started = Instant::now();
    let Some(pid) = child.id() else {
        // Already reaped: nothing to run.
        let _ = child.wait().await;
        return started.elapsed();
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
        return started.elapsed();
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(line) = rx.recv().await {
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let tail = Arc::new(Mutex::new(Tail::new(CRASH_TAIL_BYTES)));
    let stderr_task = {
        let pool = pool.clone();
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::truncating(stderr, STDERR_LINE_BYTES);
            while let Ok(Next::Line(line)) = lines.next().await {
                let text = bounded_text(&line, STDERR_LINE_BYTES);
                pool.meters
                    .stderr_line(slot, pid, pool.only_task(slot).as_ref(), &text);
                if let Ok(mut t) = tail.lock() {
                    t.push(text);
                }
            }
        })
    };
    if pool.process_up(slot, pid, tx).is_none() {
        // The pool closed while this process started.
        kill_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
        writer.abort();
        stderr_task.abort();
        return started.elapsed();
    }
    pool.meters.process_started(slot, pid);

    let mut stdout = LineReader::strict(stdout, pool.settings.max_reply_bytes);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut status = None;
    let mut broke: Option<String> = None;
    loop {
        tokio::select! {
            next = stdout.next() => match next {
                Ok(Next::Line(line)) => {
                    if let Err(why) = route(pool, slot, &line) {
                        broke = Some(why);
                        break;
                    }
                }
                Ok(Next::TooLong) => {
                    broke = Some(format!(
                        "a stdout line over max_reply_bytes = {}",
                        pool.settings.max_reply_bytes
                    ));
                    break;
                }
                // Stdout closed: the process is ending (or useless); see below.
                Ok(Next::Eof) | Err(_) => break,
            },
            s = child.wait() => {
                pool.ending(slot);
                status = s.ok();
                // Lines already in the pipe still count (a reply written right before the exit).
                let drained = tokio::time::timeout(DRAIN, async {
                    loop {
                        match stdout.next().await {
                            Ok(Next::Line(line)) => route(pool, slot, &line)?,
                            Ok(Next::TooLong) => return Err(format!(
                                "a stdout line over max_reply_bytes = {}",
                                pool.settings.max_reply_bytes
                            )),
                            Ok(Next::Eof) | Err(_) => return Ok(()),
                        }
                    }
                })
                .await;
                if let Ok(Err(why)) = drained {
                    broke = Some(why);
                }
                break;
            }
            _ = tick.tick() => pool.meters.refresh(),
        }
    }
    pool.ending(slot);
    if let Some(why) = &broke {
        pool.kill(slot, Kill::Protocol(why.clone()));
    }
    if status.is_none() && broke.is_none() {
        // Stdout closed: give the process a moment to exit by itself, for its exit status.
        if let Ok(s) = tokio::time::timeout(EXIT_WAIT, child.wait()).await {
            status = s.ok();
        }
    }
    // Nothing of the group outlives its leader (a grandchild holding stdout included).
    kill_group(pid, libc::SIGKILL);
    if status.is_none() {
        status = child.wait().await.ok();
    }
    let exit = status.map(Exit::of);
    writer.abort();
    // The stderr pipe closes once the group is gone; what it still holds is logged.
    let _ = tokio::time::timeout(Duration::from_millis(500), stderr_task).await;
    let ran = started.elapsed();
    let next = if ran >= BACKOFF_RESET_AFTER {
        BACKOFF_START
    } else {
        restart_in
    };
    let how = match exit {
        Some(e) => format!("the agent process (pid {pid}) {e}"),
        None => format!("the agent process (pid {pid}) ended"),
    };
    let ended = pool.process_down(slot, next, how.clone());
    let (reason, class, why) = match &ended.kill {
        Some(Kill::Protocol(p)) => (
            EndReason::Protocol,
            FailureClass::AgentCrashed,
            format!(
                "the agent process (pid {pid}) broke the stdio protocol: {p}; it was killed and is being replaced"
            ),
        ),
        Some(Kill::Timeout(_)) | Some(Kill::Abandoned(_)) => (
            EndReason::Timeout,
            FailureClass::UpstreamUnavailable,
            format!(
                "another attempt in the same agent process (pid {pid}) timed out; its process \
                 group was killed and is being replaced (not this task's fault)"
            ),
        ),
        Some(Kill::Shutdown) => (
            EndReason::Shutdown,
            FailureClass::UpstreamUnavailable,
            format!("the member is shutting down: the agent process (pid {pid}) was stopped"),
        ),
        None => {
            let tail = tail.lock().map(|t| t.text()).unwrap_or_default();
            let mut why = format!("{how} while the attempt was in flight");
            if !tail.is_empty() {
                why.push_str("; its last stderr: ");
                why.push_str(&tail);
            }
            (EndReason::Exit, FailureClass::AgentCrashed, why)
        }
    };
    let detail = match &ended.kill {
        Some(Kill::Protocol(p)) => p.clone(),
        Some(Kill::Timeout(id)) => format!("attempt {id} timed out"),
        Some(Kill::Abandoned(id)) => format!("attempt {id} was abandoned"),
        Some(Kill::Shutdown) => "shutdown".into(),
        None => how,
    };
    pool.meters.process_ended(
        slot,
        pid,
        reason,
        &detail,
        ended.in_flight.len(),
        (!pool.is_closed()).then_some(next),
    );
    for p in ended.in_flight {
        let _ = p.reply.send(Outcome::fail(class, why.clone()));
    }
    ran
}

/// Routes one stdout line of `slot`'s process to its attempt. An error is a protocol break.
fn route(pool: &Pool, slot: usize, line: &[u8]) -> Result<(), String> {
    if is_blank(line) {
        return Ok(());
    }
    let quote = || bounded_text(line, 200);
    let framed = parse_line(line).map_err(|e| {
        format!(
            "a stdout line is not an event or a reply ({e}): {}",
            quote()
        )
    })?;
    let Some(id) = framed.id else {
        return Err(format!(
            "a stdout line without a string \"id\": {}",
            quote()
        ));
    };
    match framed.line {
        Line::Event(event) => {
            let ctx = pool
                .context(slot, &id)
                .ok_or_else(|| format!("an event for unknown request id {id:?}"))?;
            // A refused step is remembered by the context: the attempt concludes as
            // schema_mismatch.
            let _ = apply_event(&ctx, event);
        }
        Line::Reply(reply) => {
            let pending = pool
                .take(slot, &id)
                .ok_or_else(|| format!("a reply for unknown request id {id:?}"))?;
            let outcome = reply_outcome(&pending.ctx, reply);
            let _ = pending.reply.send(outcome);
        }
    }
    Ok(())
}
