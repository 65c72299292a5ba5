//! The pool's shared state: its process slots, the attempts in flight in each process, and the
//! moves between them (assign an attempt, route a line, time out or abandon an attempt, end a
//! process, close). One mutex guards it; nothing awaits while holding it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::settings::PoolSettings;
use crate::agents::process::{kill_group, CommandSpec};
use crate::handler::{Outcome, TaskContext};
use crate::telemetry::events::agent_process::AgentMeters;
use crate::telemetry::tasklog::TaskLog;

/// How long an attempt waits for a pool with no running process when the next start is due
/// this soon (the first restarts after a crash); past it, the attempt fails at once as
/// `upstream_unavailable`.
pub(crate) const RESTART_WAIT: Duration = Duration::from_secs(1);

/// An attempt in flight in a process.
pub(crate) struct Pending {
    /// The attempt's context: events are applied to it as they arrive.
    pub ctx: TaskContext,
    /// Where its outcome goes.
    pub reply: oneshot::Sender<Outcome>,
    /// Its task, for stderr lines.
    pub log: TaskLog,
}

/// Why the pool killed a process (set before the signal, read when the process is reaped).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kill {
    /// It broke the stdio protocol.
    Protocol(String),
    /// Attempt `id` in it timed out.
    Timeout(String),
    /// Attempt `id` in it was abandoned by the fleet (its own timeout, the entry taken over).
    Abandoned(String),
    /// The handler is shutting down.
    Shutdown,
}

/// A running process.
struct Live {
    /// Which start of the slot this is.
    generation: u64,
    pid: u32,
    /// Request lines to its stdin; `None` once stdin is closed.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    in_flight: HashMap<String, Pending>,
    kill: Option<Kill>,
}

/// One of the pool's `processes`.
#[derive(Default)]
struct Slot {
    live: Option<Live>,
    /// When the next start is due (`None` while starting or running, and before the first
    /// start).
    next_start: Option<Instant>,
    /// Why the last process ended or could not start.
    last_error: Option<String>,
    generation: u64,
}

struct State {
    slots: Vec<Slot>,
    closed: bool,
}

/// Where an attempt went.
pub(crate) enum Assign {
    /// Sent to process `slot` (start `generation`); the outcome comes on `rx`.
    Sent {
        slot: usize,
        generation: u64,
        rx: oneshot::Receiver<Outcome>,
    },
    /// No process has room now: wait for a change (at most until the instant, when given).
    Wait(Option<Instant>),
    /// No process runs and none will soon: fail the attempt with this reason.
    Unavailable(String),
}

/// What a process's end leaves to settle.
pub(crate) struct Ended {
    /// Attempts still in flight in it.
    pub in_flight: Vec<Pending>,
    /// Why the pool killed it, if it did.
    pub kill: Option<Kill>,
}

/// A pool: settings, slots, and the signals between attempts and supervisors.
pub(crate) struct Pool {
    /// The validated settings.
    pub settings: PoolSettings,
    /// What each process runs (shared with the spawner).
    pub command: Arc<CommandSpec>,
    /// Telemetry.
    pub meters: AgentMeters,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Woken on every change of capacity or liveness.
    changed: Notify,
    /// `true` once the pool is closing: supervisors stop.
    stop: watch::Sender<bool>,
}

impl Pool {
    /// A pool of `settings.processes` empty slots.
    pub fn new(settings: PoolSettings) -> Pool {
        let slots = (0..settings.processes).map(|_| Slot::default()).collect();
        Pool {
            command: Arc::new(settings.command.clone()),
            meters: AgentMeters::new(&settings.label, true),
            settings,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                slots,
                closed: false,
            }),
            changed: Notify::new(),
            stop: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants are
        // broken half-way), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh request id (`r1`, `r2`, …).
    pub fn next_id(&self) -> String {
        format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The change notifier (capacity freed, a process up or down, closed).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Subscribes to the stop signal.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Sends the attempt `id` (its request `line`) to the running process with the most room,
    /// or says why not.
    pub fn assign(
        &self,
        id: &str,
        line: Vec<u8>,
        ctx: &TaskContext,
        log: &TaskLog,
        now: Instant,
        deadline: Instant,
    ) -> Assign {
        let mut st = self.lock();
        if st.closed {
            return Assign::Unavailable(format!(
                "{} is shut down: the member is stopping",
                self.settings.name
            ));
        }
        let concurrency = self.settings.concurrency;
        let best = st
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.live.as_mut().map(|l| (i, l)))
            .filter(|(_, l)| {
                l.kill.is_none() && l.stdin.is_some() && l.in_flight.len() < concurrency
            })
            .min_by_key(|(_, l)| l.in_flight.len());
        if let Some((slot, live)) = best {
            let (tx, rx) = oneshot::channel();
            live.in_flight.insert(
                id.to_owned(),
                Pending {
                    ctx: ctx.clone(),
                    reply: tx,
                    log: log.clone(),
                },
            );
            // A closed writer means the process is ending: the attempt fails with it.
            if let Some(stdin) = &live.stdin {
                let _ = stdin.send(line);
            }
            return Assign::Sent {
                slot,
                generation: live.generation,
                rx,
            };
        }
        // A process runs (busy) or is starting: wait for a change.
        if st
            .slots
            .iter()
            .any(|s| s.live.is_some() || s.next_start.is_none())
        {
            return Assign::Wait(None);
        }
        // Every slot waits for its restart: wait for one due soon (its supervisor marks it
        // starting when the delay is over), else fail now.
        let soonest = st
            .slots
            .iter()
            .filter_map(|s| s.next_start)
            .min()
            .unwrap_or(now);
        if soonest <= now {
            return Assign::Wait(None);
        }
        if soonest <= now + RESTART_WAIT && soonest < deadline {
            return Assign::Wait(Some(soonest));
        }
        let why = st
            .slots
            .iter()
            .find_map(|s| s.last_error.clone())
            .unwrap_or_else(|| "not started".into());
        Assign::Unavailable(format!(
            "no process of {} is running (restarting in {} ms; last: {why})",
            self.settings.name,
            soonest.saturating_duration_since(now).as_millis()
        ))
    }

    /// A process started in `slot`: attempts may go to it. Returns its generation, or `None`
    /// when the pool closed meanwhile (the caller kills it).
    pub fn process_up(
        &self,
        slot: usize,
        pid: u32,
        stdin: mpsc::UnboundedSender<Vec<u8>>,
    ) -> Option<u64> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let s = st.slots.get_mut(slot)?;
        s.generation += 1;
        s.next_start = None;
        s.live = Some(Live {
            generation: s.generation,
            pid,
            stdin: Some(stdin),
            in_flight: HashMap::new(),
            kill: None,
        });
        let generation = s.generation;
        drop(st);
        self.changed.notify_waiters();
        Some(generation)
    }

    /// The context of attempt `id` in flight in `slot`'s process.
    pub fn context(&self, slot: usize, id: &str) -> Option<TaskContext> {
        let st = self.lock();
        let live = st.slots.get(slot)?.live.as_ref()?;
        live.in_flight.get(id).map(|p| p.ctx.clone())
    }

    /// Takes attempt `id` out of `slot`'s process (its reply arrived).
    pub fn take(&self, slot: usize, id: &str) -> Option<Pending> {
        let mut st = self.lock();
        let live = st.slots.get_mut(slot)?.live.as_mut()?;
        let p = live.in_flight.remove(id);
        drop(st);
        if p.is_some() {
            self.changed.notify_waiters();
        }
        p
    }

    /// The task of the one attempt in flight in `slot`'s process, when exactly one is.
    pub fn only_task(&self, slot: usize) -> Option<TaskLog> {
        let st = self.lock();
        let live = st.slots.get(slot)?.live.as_ref()?;
        if live.in_flight.len() == 1 {
            live.in_flight.values().next().map(|p| p.log.clone())
        } else {
            None
        }
    }

    /// Records why the pool kills `slot`'s process (the first reason wins) and kills its group.
    pub fn kill(&self, slot: usize, why: Kill) {
        let mut st = self.lock();
        let Some(live) = st.slots.get_mut(slot).and_then(|s| s.live.as_mut()) else {
            return;
        };
        live.kill.get_or_insert(why);
        kill_group(live.pid, libc::SIGKILL);
    }

    /// Attempt `id` (sent to `slot`, start `generation`) got no reply in time, or was
    /// abandoned: when it is still in flight, it is taken out and its process group killed
    /// (`why`). Returns whether it was still in flight.
    pub fn give_up(&self, slot: usize, generation: u64, id: &str, why: Kill) -> bool {
        let mut st = self.lock();
        let Some(live) = st.slots.get_mut(slot).and_then(|s| s.live.as_mut()) else {
            return false;
        };
        if live.generation != generation || live.in_flight.remove(id).is_none() {
            return false;
        }
        live.kill.get_or_insert(why);
        kill_group(live.pid, libc::SIGKILL);
        true
    }

    /// `slot`'s process is gone: returns what was in flight in it and why it was killed, and
    /// schedules the next start after `restart_in` (`last_error` says why it ended).
    pub fn process_down(&self, slot: usize, restart_in: Duration, last_error: String) -> Ended {
        let mut st = self.lock();
        let ended = match st.slots.get_mut(slot) {
            Some(s) => {
                s.next_start = Some(Instant::now() + restart_in);
                s.last_error = Some(last_error);
                match s.live.take() {
                    Some(live) => Ended {
                        in_flight: live.in_flight.into_values().collect(),
                        kill: live.kill,
                    },
                    None => Ended {
                        in_flight: Vec::new(),
                        kill: None,
                    },
                }
            }
            None => Ended {
                in_flight: Vec::new(),
                kill: None,
            },
        };
        drop(st);
        self.changed.notify_waiters();
        ended
    }

    /// `slot`'s supervisor starts a process now.
    pub fn starting(&self, slot: usize) {
        let mut st = self.lock();
        if let Some(s) = st.slots.get_mut(slot) {
            s.next_start = None;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// `slot`'s process could not be started: the next try is after `restart_in`.
    pub fn start_failed(&self, slot: usize, restart_in: Duration, error: String) {
        let mut st = self.lock();
        if let Some(s) = st.slots.get_mut(slot) {
            s.next_start = Some(Instant::now() + restart_in);
            s.last_error = Some(error);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Whether the pool is closing.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The process of `slot` is ending (it exited, or closed its stdout): no new attempt goes to
    /// it from now on; attempts still in flight there end with it. New attempts wait for its
    /// restart instead of being written into a process that will never answer.
    pub fn ending(&self, slot: usize) {
        let mut st = self.lock();
        if let Some(live) = st.slots.get_mut(slot).and_then(|s| s.live.as_mut()) {
            live.stdin = None;
        }
    }

    /// Closes the pool: no new attempt is taken, supervisors stop restarting, every running
    /// process is marked as stopped by the pool and its stdin closed. Returns their pids.
    pub fn close(&self) -> Vec<u32> {
        let mut st = self.lock();
        st.closed = true;
        let mut pids = Vec::new();
        for live in st.slots.iter_mut().filter_map(|s| s.live.as_mut()) {
            live.kill.get_or_insert(Kill::Shutdown);
            live.stdin = None;
            pids.push(live.pid);
        }
        drop(st);
        self.stop.send_replace(true);
        self.changed.notify_waiters();
        pids
    }

    /// The pids of the processes still running.
    pub fn live_pids(&self) -> Vec<u32> {
        self.lock()
            .slots
            .iter()
            .filter_map(|s| s.live.as_ref().map(|l| l.pid))
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for pid in self.live_pids() {
            kill_group(pid, libc::SIGKILL);
        }
    }
}
