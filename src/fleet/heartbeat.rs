//! The heartbeat: every third of `reclaim.min_idle_ms`, refreshes the idle time of every entry
//! this member holds (owner-checked), so a slow but live task is never reclaimed; entries it
//! finds lost to another member are marked so their attempts stop and never settle here.
//!
//! A beat races the settler: an entry in the beat's snapshot may be acked by this member
//! before the script runs. The script therefore tells entries another consumer owns (lost)
//! apart from entries pending for nobody, and one of those is lost only while this member
//! still holds it without having handed it to the settler (see [`lost_after_beat`]).

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Holding, Shared};
use crate::broker::{Beat, Broker};
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// Ids per heartbeat script call.
const CHUNK: usize = 500;

/// The heartbeat loop's settings and handles.
pub(crate) struct Heartbeat {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub period: Duration,
}

impl Heartbeat {
    /// Beats every `period` until `shutdown` fires.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            self.step().await;
        }
    }

    /// One heartbeat over every held entry.
    pub(crate) async fn step(&mut self) {
        for (tenant, ids) in self.shared.inflight_by_tenant() {
            for chunk in ids.chunks(CHUNK) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                match self
                    .broker
                    .heartbeat(&tenant, &self.shared.member, &refs)
                    .await
                {
                    Ok(beat) => {
                        let mut asked = beat.taken.clone();
                        asked.extend(beat.gone.iter().cloned());
                        if asked.is_empty() {
                            continue;
                        }
                        let holding = self.shared.holding(&tenant, &asked);
                        let lost = lost_after_beat(beat, |id| {
                            holding.get(id).copied().unwrap_or(Holding::Released)
                        });
                        if !lost.is_empty() {
                            events::claims::ownership_lost(&tenant, lost.len());
                            self.shared.mark_lost(&tenant, &lost);
                        }
                    }
                    Err(e) => {
                        events::claims::heartbeat_failed(&tenant, &e);
                    }
                }
            }
        }
    }
}

/// The entries a beat proves lost, judged after its reply: one another consumer owns, unless
/// this member has released it meanwhile (its own settle already found that out); one pending
/// for nobody only while this member still holds it unsettled, since a settlement handed to
/// the settler before the beat's reply may have removed it (the settler marks an entry before
/// any Redis call for it, so a removal by this member's own hand is always seen here), and so
/// may a start mark in flight, which drops a deleted entry from the PEL (the executor marks
/// the entry `Starting` before it sends the mark and keeps that until its settlement).
pub(crate) fn lost_after_beat(beat: Beat, holding: impl Fn(&str) -> Holding) -> Vec<String> {
    let taken = beat
        .taken
        .into_iter()
        .filter(|id| holding(id) != Holding::Released);
    let gone = beat
        .gone
        .into_iter()
        .filter(|id| holding(id) == Holding::Unsettled);
    taken.chain(gone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(taken: &[&str], gone: &[&str]) -> Beat {
        Beat {
            taken: taken.iter().map(|s| s.to_string()).collect(),
            gone: gone.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_entry_settled_here_while_the_beat_ran_is_not_lost() {
        // The settler acked 1-1 (handed over before the beat's reply) and 1-2 (released too).
        let lost = lost_after_beat(beat(&[], &["1-1", "1-2"]), |id| match id {
            "1-1" => Holding::Settling,
            _ => Holding::Released,
        });
        assert!(lost.is_empty(), "{lost:?}");
    }

    #[test]
    fn an_entry_gone_while_still_unsettled_here_was_settled_elsewhere() {
        let lost = lost_after_beat(beat(&[], &["1-1"]), |_| Holding::Unsettled);
        assert_eq!(lost, ["1-1"]);
    }

    #[test]
    fn an_entry_whose_start_mark_dropped_it_is_not_lost() {
        // The start mark (XCLAIM in start.lua, the fast window's XCLAIM or begin.lua) found
        // 1-1 deleted and dropped it from the PEL; its Tombstone settlement has not reached
        // the settler yet when the beat's reply is judged.
        let lost = lost_after_beat(beat(&[], &["1-1"]), |_| Holding::Starting);
        assert!(lost.is_empty(), "{lost:?}");
        // Taken by another consumer is lost whatever the start mark found.
        let lost = lost_after_beat(beat(&["1-2"], &[]), |_| Holding::Starting);
        assert_eq!(lost, ["1-2"]);
    }

    #[test]
    fn an_entry_another_consumer_owns_is_lost_even_while_settling() {
        let lost = lost_after_beat(beat(&["1-1", "1-2", "1-3"], &[]), |id| match id {
            "1-1" => Holding::Unsettled,
            "1-2" => Holding::Settling,
            _ => Holding::Released,
        });
        assert_eq!(lost, ["1-1", "1-2"]);
    }
}
