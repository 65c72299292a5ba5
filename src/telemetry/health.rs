//! Liveness and readiness of a member: what /healthz and /readyz serve. The fleet's loops
//! report progress into it; the endpoint only reads it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::names;

/// What /healthz and /readyz report. Updated by the reader, the settler and the refresh loop.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// ms since `epoch` of the last completed read (0: none yet).
    last_read: AtomicU64,
    /// ms since `epoch` of the last settle.
    last_settle: AtomicU64,
    /// Whether the member has started serving (lease held, loops running).
    serving: AtomicBool,
    /// Whether the last Redis check answered.
    redis_ok: AtomicBool,
    /// Whether work was waiting at the last look (local queue or lanes).
    work_waiting: AtomicBool,
    stall_after: Duration,
    /// Whether Redis refuses writes for memory, and what waits for it.
    oom: Mutex<Oom>,
    /// Masters (`host:port`) the last write probe did not reach (a cluster's shard down).
    unreachable: Mutex<Vec<String>>,
}

/// An out-of-memory episode: Redis over `maxmemory` refuses every write that may grow memory.
/// Acks free memory and go on; retries, dead letters and deferrals wait (their entries stay
/// pending) until Redis accepts writes again.
#[derive(Debug, Default)]
struct Oom {
    /// When the current episode started; `None` while Redis accepts writes.
    since: Option<Instant>,
    /// When the last observation of an OOM refusal was received.
    last_refusal: Option<Instant>,
    /// When the probe that ended the last episode was received.
    last_accepted: Option<Instant>,
    /// Entries whose settle was refused and waits to be tried again, by settle kind.
    waiting: BTreeMap<&'static str, u64>,
    /// Refused calls during the current episode, by settle kind (or `probe`).
    refused: BTreeMap<&'static str, u64>,
    /// The masters (`host:port`) the last probe found over `maxmemory`.
    shards: Vec<String>,
}

/// `kind=n kind=n …`, or `none`.
fn counts_text(m: &BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

impl Health {
    /// A member that has not started yet.
    pub(crate) fn new(stall_after: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            last_read: AtomicU64::new(0),
            last_settle: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            redis_ok: AtomicBool::new(false),
            work_waiting: AtomicBool::new(false),
            stall_after,
            oom: Mutex::new(Oom::default()),
            unreachable: Mutex::new(Vec::new()),
        }
    }

    /// The write probe found `shards` (`host:port` of each master, the server on a single
    /// Redis) over `maxmemory`: an episode as [`Health::redis_refused`], /readyz naming them.
    pub(crate) fn redis_refused_on(&self, shards: Vec<String>, sent: Instant) {
        if let Ok(mut o) = self.oom.lock() {
            o.shards = shards;
        }
        self.redis_refused("probe", sent);
    }

    /// The masters (`host:port`) the last write probe did not reach; empty when it reached
    /// every one. /readyz is not ready while one is named.
    pub(crate) fn set_unreachable(&self, shards: Vec<String>) {
        if let Ok(mut u) = self.unreachable.lock() {
            *u = shards;
        }
    }

    /// Redis refused a call sent at `sent` because it is over `maxmemory` (`what`: the settle
    /// kind, or `probe`). Starts an episode (one log line, the gauge at 1) unless one runs, or
    /// the refusal predates the probe that ended the last one.
    pub(crate) fn redis_refused(&self, what: &'static str, sent: Instant) {
        let Ok(mut o) = self.oom.lock() else { return };
        let now = Instant::now();
        o.last_refusal = Some(now);
        if o.since.is_none() && o.last_accepted.is_none_or(|a| sent > a) {
            o.since = Some(now);
            o.refused.clear();
            metrics::gauge!(names::REDIS_OOM).set(1.0);
            tracing::error!(
                waiting = %counts_text(&o.waiting),
                first_refused = what,
                "redis is out of memory (over maxmemory): acks go on; retries, dead letters and deferrals wait, pending, until it accepts writes again"
            );
        }
        if o.since.is_some() {
            *o.refused.entry(what).or_default() += 1;
        }
    }

    /// Redis accepted a write that may grow memory, sent at `sent`. Ends the episode (one log
    /// line, the gauge at 0) unless a refusal was received after it was sent.
    pub(crate) fn redis_accepts(&self, sent: Instant) {
        let Ok(mut o) = self.oom.lock() else { return };
        if o.last_refusal.is_some_and(|r| sent <= r) {
            return;
        }
        if let Some(since) = o.since.take() {
            o.last_accepted = Some(Instant::now());
            o.shards.clear();
            metrics::gauge!(names::REDIS_OOM).set(0.0);
            tracing::info!(
                duration_ms = since.elapsed().as_millis() as u64,
                refused = %counts_text(&o.refused),
                waiting = %counts_text(&o.waiting),
                "redis accepts writes again: the settles that waited go through"
            );
        }
    }

    /// `entries` of settle kind `what` now wait for Redis to accept writes (`add`), or no longer
    /// do (`!add`: settled, or given up at shutdown and left pending).
    pub(crate) fn settle_waiting(&self, what: &'static str, entries: u64, add: bool) {
        let Ok(mut o) = self.oom.lock() else { return };
        let n = o.waiting.entry(what).or_default();
        *n = if add {
            *n + entries
        } else {
            n.saturating_sub(entries)
        };
    }

    /// Whether an out-of-memory episode runs.
    pub(crate) fn redis_oom(&self) -> bool {
        self.oom.lock().map(|o| o.since.is_some()).unwrap_or(false)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A read completed (with or without entries).
    pub(crate) fn read_done(&self) {
        self.last_read.store(self.now(), Ordering::Relaxed);
        self.redis_ok.store(true, Ordering::Relaxed);
    }

    /// Something was settled.
    pub(crate) fn settled(&self) {
        self.last_settle.store(self.now(), Ordering::Relaxed);
    }

    /// The member serves (or stopped serving).
    pub(crate) fn set_serving(&self, on: bool) {
        if on {
            // Start the stall clocks now, not at process start.
            self.read_done();
            self.settled();
        }
        self.serving.store(on, Ordering::Relaxed);
    }

    /// The latest Redis check.
    pub(crate) fn set_redis(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Whether work waits for this member.
    pub(crate) fn set_work_waiting(&self, waiting: bool) {
        self.work_waiting.store(waiting, Ordering::Relaxed);
    }

    /// `Ok(())` when ready, else why not. Not ready: not serving yet; Redis not answering;
    /// Redis out of memory (it refuses writes that grow memory, so retries, dead letters and
    /// deferrals wait); or "healthy but stuck": work waits, yet neither a read nor a settle
    /// happened for `metrics.stall_after_ms` (every slot held by attempts that do not finish,
    /// or a reader that does not come back).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Relaxed) {
            return Err("not serving: starting or stopping".into());
        }
        if !self.redis_ok.load(Ordering::Relaxed) {
            return Err("redis does not answer".into());
        }
        if let Ok(u) = self.unreachable.lock() {
            if !u.is_empty() {
                return Err(format!(
                    "redis does not answer on {}: its tenants are not served",
                    u.join(", ")
                ));
            }
        }
        if let Ok(o) = self.oom.lock() {
            if let Some(since) = o.since {
                let on = if o.shards.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", o.shards.join(", "))
                };
                return Err(format!(
                    "redis out of memory (over maxmemory){on} for {:.1} s: acks go on; settles waiting: {}",
                    since.elapsed().as_secs_f64(),
                    counts_text(&o.waiting)
                ));
            }
        }
        let now = self.now();
        let read_age = now.saturating_sub(self.last_read.load(Ordering::Relaxed));
        let settle_age = now.saturating_sub(self.last_settle.load(Ordering::Relaxed));
        let limit = self.stall_after.as_millis() as u64;
        if read_age > limit && settle_age > limit && self.work_waiting.load(Ordering::Relaxed) {
            return Err(format!(
                "stuck: work is waiting but nothing was read for {:.1} s and nothing settled for {:.1} s",
                read_age as f64 / 1000.0,
                settle_age as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_ready_only_while_serving_with_redis_and_progress() {
        let h = Health::new(Duration::from_millis(100));
        assert!(h.readiness().unwrap_err().contains("not serving"));
        h.set_serving(true);
        h.set_redis(true);
        assert!(h.readiness().is_ok());
        h.set_redis(false);
        assert!(h.readiness().unwrap_err().contains("redis"));
        h.set_redis(true);
        std::thread::sleep(Duration::from_millis(150));
        // Idle with nothing waiting: still ready.
        assert!(h.readiness().is_ok());
        h.set_work_waiting(true);
        assert!(h.readiness().unwrap_err().contains("stuck"));
        h.settled();
        assert!(h.readiness().is_ok(), "a settle is progress");
    }

    #[test]
    fn an_oom_episode_starts_on_a_refusal_and_ends_only_on_a_later_accepted_write() {
        let h = Health::new(Duration::from_secs(60));
        h.set_serving(true);
        h.set_redis(true);
        let before = Instant::now();
        h.settle_waiting("retry", 3, true);
        h.redis_refused("retry", Instant::now());
        let why = h.readiness().unwrap_err();
        assert!(why.contains("redis out of memory"), "{why}");
        assert!(why.contains("retry=3"), "{why}");
        // A probe sent before the refusal was received proves nothing.
        h.redis_accepts(before);
        assert!(h.redis_oom());
        h.settle_waiting("retry", 3, false);
        h.redis_accepts(Instant::now());
        assert!(!h.redis_oom());
        assert!(h.readiness().is_ok());
        // A late refusal, sent before the episode ended, does not start another one.
        h.redis_refused("dead_letter", before);
        assert!(!h.redis_oom());
    }

    /// On a cluster the probe names the master over `maxmemory`, and the one it did not
    /// reach: /readyz says which shard.
    #[test]
    fn readiness_names_the_shard_that_refuses_writes_or_does_not_answer() {
        let h = Health::new(Duration::from_secs(60));
        h.set_serving(true);
        h.set_redis(true);
        h.redis_refused_on(vec!["127.0.0.1:7002".into()], Instant::now());
        let why = h.readiness().unwrap_err();
        assert!(
            why.contains("out of memory") && why.contains("on 127.0.0.1:7002"),
            "{why}"
        );
        h.redis_accepts(Instant::now());
        assert!(h.readiness().is_ok());
        h.set_unreachable(vec!["127.0.0.1:7001".into()]);
        let why = h.readiness().unwrap_err();
        assert!(why.contains("does not answer on 127.0.0.1:7001"), "{why}");
        h.set_unreachable(Vec::new());
        assert!(h.readiness().is_ok());
        // A refusal of a settle names no shard (the probe does, at its next look).
        h.redis_refused("retry", Instant::now());
        let why = h.readiness().unwrap_err();
        assert!(!why.contains(" on "), "{why}");
    }
}
