//! Fault injection for crash tests: `REDRIVE_FAILPOINT=<point>[:<n>]` makes the process kill
//! itself with SIGKILL the n-th time (default 1st) it reaches the named point, so tests can
//! prove that a crash at any step of a settle loses nothing. Unset (the normal case) it costs
//! one relaxed atomic load per call.
//!
//! Points: `after_read` (entries read, none run yet), `before_ack` (attempts done, their ack
//! batch not yet sent), `after_ack` (acks sent, not yet recorded locally), `before_retry`,
//! `before_dead_letter` (just before those scripts), `after_claim` (entries reclaimed, not
//! yet run), `archive_uploaded` (an archive batch written and confirmed, its entries not yet
//! removed from Redis), `notify_before_send` (a tenant's delivery lease held, a notification
//! about to be sent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// The settle path's points (tests/failure.rs kills a member at each).
pub const POINTS: [&str; 6] = [
    "after_read",
    "before_ack",
    "after_ack",
    "before_retry",
    "before_dead_letter",
    "after_claim",
];

/// Points outside the settle path (the crash tests of each feature name theirs):
/// `archive_uploaded`, `notify_before_send`.
pub const OTHER_POINTS: [&str; 2] = ["archive_uploaded", "notify_before_send"];

static ARMED: AtomicBool = AtomicBool::new(true);
static HITS: AtomicU64 = AtomicU64::new(0);
static CONFIG: OnceLock<Option<(String, u64)>> = OnceLock::new();

fn config() -> &'static Option<(String, u64)> {
    CONFIG.get_or_init(|| {
        let v = std::env::var("REDRIVE_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (v.clone(), 1),
        };
        if !POINTS.contains(&name.as_str()) && !OTHER_POINTS.contains(&name.as_str()) {
            tracing::error!(failpoint = %v, known = ?POINTS, others = ?OTHER_POINTS, "REDRIVE_FAILPOINT names no known point; ignored");
            return None;
        }
        tracing::warn!(failpoint = %name, hit = n, "fault injection armed: this process will SIGKILL itself");
        Some((name, n.max(1)))
    })
}

/// Kills the process with SIGKILL if `point` is the armed failpoint and this is its n-th hit.
pub fn hit(point: &str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some((name, n)) = config() else {
        ARMED.store(false, Ordering::Relaxed);
        return;
    };
    if name != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    tracing::error!(failpoint = point, "failpoint reached: SIGKILL");
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // SIGKILL is delivered asynchronously; never run past the point.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
