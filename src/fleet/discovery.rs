//! The tenant watch: hears producers announce the tenants their enqueue registered for the first
//! time (pub/sub on [`Keys::tenant_signals`](crate::keys::Keys::tenant_signals)) and has the
//! reader take the new lanes in at once: it hands the reader the announced names (the reader
//! checks them against the registry, one `SMISMEMBER`, rather than reading the whole registry)
//! and ends the reader's blocking read (`CLIENT UNBLOCK` of the reader's connection), which would
//! otherwise wait up to `fleet.block_ms` on the lanes it already knows.
//!
//! The registry stays the truth: an announcement only says "look now". Whatever the watch
//! misses (it was not subscribed yet, its connection dropped, a producer that only `SADD`s and
//! `XADD`s as CONTRACT.md allows) the reader's periodic look finds, as before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::broker::{Broker, Signal, TenantSignals};
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// How often a quiet subscription is checked with a `PING` (a connection that died without a
/// word would otherwise keep the watch waiting forever).
const PING_EVERY: Duration = Duration::from_secs(30);

/// The longest pause between two tries to subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The watch loop's state.
pub(crate) struct TenantWatch {
    pub(crate) broker: Broker,
    pub(crate) shared: Arc<Shared>,
    /// The reader's longest blocking read: how long ending it is tried for.
    pub(crate) block: Duration,
}

/// What one wait of the watch ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// An announcement: the reader was asked to look.
    Announcement,
    /// The subscription answered its ping.
    Alive,
    /// The subscription is gone: subscribe again.
    Lost(String),
    /// Shutdown fired.
    Stopped,
}

impl TenantWatch {
    /// Watches until shutdown, subscribing again (with backoff) whenever the subscription is
    /// lost; after subscribing again it has the reader look once, for what it missed.
    pub(crate) async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut again = false;
        while !shutdown.is_triggered() {
            let mut signals = match self.broker.tenant_signals().await {
                Ok(s) => s,
                Err(e) => {
                    events::read::tenant_watch_down(&e, backoff.as_millis() as u64);
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            events::read::tenant_watch_up(again);
            if again {
                self.shared.discovery.want();
                self.wake().await;
            }
            again = true;
            backoff = Duration::from_millis(100);
            loop {
                match self.step(&mut signals, &shutdown).await {
                    Heard::Announcement | Heard::Alive => {}
                    Heard::Stopped => return,
                    Heard::Lost(why) => {
                        events::read::tenant_watch_down(&why, backoff.as_millis() as u64);
                        break;
                    }
                }
            }
        }
    }

    /// Waits for one announcement (and passes it on to the reader), a ping's answer after a
    /// quiet [`PING_EVERY`], the subscription's end, or shutdown.
    pub(crate) async fn step(&self, signals: &mut TenantSignals, shutdown: &Shutdown) -> Heard {
        tokio::select! {
            _ = shutdown.wait() => Heard::Stopped,
            msg = signals.next() => match msg {
                Some(Signal::Tenants(names)) => {
                    self.shared.discovery.want_named(&names);
                    self.wake().await;
                    Heard::Announcement
                }
                // On a cluster: entries for lanes the reader knows; it reads at once.
                Some(Signal::Entries(_)) => {
                    let _ = self.broker.unblock(u64::MAX).await;
                    Heard::Announcement
                }
                None => Heard::Lost("the subscription's connection closed".into()),
            },
            _ = tokio::time::sleep(PING_EVERY) => match signals.ping(self.block).await {
                Ok(()) => Heard::Alive,
                Err(e) => Heard::Lost(e.to_string()),
            },
        }
    }

    /// Has the reader take the wish (set by the caller) now: its blocked read ended.
    /// A reader that is not blocked at this instant (busy, or its read not yet arrived at
    /// Redis) takes the wish before its next read; the unblock is tried again, briefly, only
    /// while the wish is still untaken, so a read that arrives just after is not left waiting.
    pub(crate) async fn wake(&self) {
        let discovery = &self.shared.discovery;
        let deadline = Instant::now() + self.block;
        let mut pause = Duration::from_millis(1);
        while discovery.is_wanted() && Instant::now() < deadline {
            if let Some(id) = discovery.reader_client() {
                match self.broker.unblock(id).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    // Redis is unreachable: the reader's own recovery and periodic look
                    // take over.
                    Err(_) => return,
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
