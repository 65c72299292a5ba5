//! The recovery loop: moves due retries back into their lanes, in bounded atomic batches by the
//! server's clock. Any number of members may run it at once.

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::broker::Broker;
use crate::records::TaskState;
use crate::shutdown::Shutdown;
use crate::telemetry::events;

/// The recovery loop's settings and handles.
pub(crate) struct Recoverer {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    pub interval: Duration,
    pub batch: usize,
}

impl Recoverer {
    /// One pass every `retry.poll_interval_ms` until shutdown.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            self.step().await;
        }
    }

    /// Promotes every due retry of every known tenant.
    pub(crate) async fn step(&mut self) -> u64 {
        let mut promoted = 0;
        for (_, tenant) in self.shared.lanes() {
            loop {
                let records = self.shared.tasks.enabled;
                match self.broker.promote_due(&tenant, self.batch, records).await {
                    Ok(p) => {
                        let n = p.moved;
                        promoted += n;
                        if p.recorded > 0 {
                            events::records::written(
                                &tenant,
                                TaskState::Queued.as_str(),
                                p.recorded,
                            );
                        }
                        if n > 0 {
                            events::claims::retries_promoted(&tenant, n);
                        }
                        if (n as usize) < self.batch {
                            break;
                        }
                    }
                    Err(e) => {
                        events::claims::promote_failed(&tenant, &e);
                        break;
                    }
                }
            }
        }
        promoted
    }
}
