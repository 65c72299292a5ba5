//! Liveness and readiness of a member: what /healthz and /readyz serve. The fleet's loops
//! report progress into it; the endpoint only reads it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
        }
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

    /// `Ok(())` when ready, else why not. Not ready: not serving yet; Redis not answering; or
    /// "healthy but stuck": work waits, yet neither a read nor a settle happened for
    /// `metrics.stall_after_ms` (every slot held by attempts that do not finish, or a reader
    /// that does not come back).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Relaxed) {
            return Err("not serving: starting or stopping".into());
        }
        if !self.redis_ok.load(Ordering::Relaxed) {
            return Err("redis does not answer".into());
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
}
