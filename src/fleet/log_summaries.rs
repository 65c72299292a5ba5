//! `LogSummaries`: writes the summary lines of storm-proof logging when their windows end, so a
//! storm that stops still gets its counts written (the next line of a cause would otherwise be
//! what writes them), and writes every pending summary when the member stops: no count is lost
//! at a clean stop. The limiter itself lives in the telemetry layer
//! (`telemetry::events::storm`); this loop only paces it.

use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::telemetry::events::storm;

/// The shortest wait between two steps: windows that end within it are summarised together.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// The wait when no window is open and summaries are off.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// The summary loop: sleeps until the earliest open window ends, writes the summaries of those
/// that ended, and at shutdown those of every open window.
pub(crate) struct LogSummaries;

impl LogSummaries {
    pub(crate) async fn run(self, shutdown: Shutdown) {
        loop {
            let wait = self.step();
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        storm::flush_all();
    }

    /// Writes the summaries of the windows that have ended; returns how long to wait before
    /// the next step: until the next open window ends, or a whole interval when none is open
    /// (a window opened meanwhile ends after that).
    pub(crate) fn step(&self) -> Duration {
        match storm::flush_due() {
            Some(next) => next.max(MIN_WAIT),
            None => match storm::interval() {
                d if d.is_zero() => IDLE_WAIT,
                d => d.max(MIN_WAIT),
            },
        }
    }
}
