//! The step recorder of one attempt: takes the step events its [`TaskContext`] accepts (the
//! sink) and writes them to the entry's steps hash in Redis as they arrive (one fenced script
//! call per batch of events already waiting), so a completed step survives a crash of the
//! agent or the member right after it.
//!
//! It runs next to the attempt, in the same task (no spawn per attempt). When the attempt ends
//! the executor signals it; it writes what was sent before the end and stops: the attempt's
//! settlement is sent only after that, so no step record lands after the entry is settled.
//! A write refused by the fence (another member owns the entry now) is logged once and ends
//! the recording; a Redis error is logged and counted, and recording goes on.
//!
//! [`TaskContext`]: crate::handler::TaskContext

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, StepWrite, StepsRecorded};
use crate::handler::StepEvent;
use crate::telemetry::events;

/// The most step changes one script call carries.
const MAX_BATCH: usize = 64;

/// What an attempt's recording did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recording {
    /// A write was sent (it may have landed even when its reply was an error): the entry may
    /// have a steps hash.
    pub sent: bool,
    /// The fence refused a write: this member no longer owns the entry.
    pub fenced: bool,
}

/// Records one attempt's step events for its entry.
pub(crate) struct StepRecorder {
    /// Shared (a `Broker` is ~350 bytes of handles; one recorder runs beside every attempt).
    broker: Arc<Broker>,
    tenant: Arc<str>,
    member: Arc<str>,
    entry_id: String,
    rx: mpsc::UnboundedReceiver<Box<StepEvent>>,
    recording: Recording,
}

impl StepRecorder {
    /// A recorder for entry `entry_id` of `tenant`, run by `member`, and the sink to give the
    /// attempt's [`TaskContext`](crate::handler::TaskContext).
    pub fn new(
        broker: Arc<Broker>,
        tenant: Arc<str>,
        member: Arc<str>,
        entry_id: String,
    ) -> (StepRecorder, mpsc::UnboundedSender<Box<StepEvent>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = StepRecorder {
            broker,
            tenant,
            member,
            entry_id,
            rx,
            recording: Recording::default(),
        };
        (recorder, tx)
    }

    /// Writes events as they arrive until `finish` fires (or its sender is dropped), then the
    /// events sent before it, and returns what it did.
    pub async fn run(mut self, mut finish: oneshot::Receiver<()>) -> Recording {
        loop {
            tokio::select! {
                biased;
                event = self.rx.recv() => match event {
                    Some(first) => {
                        let batch = self.batch(Some(first));
                        // Boxed: the write's state exists only while a write runs, so the
                        // recorder beside an attempt that reports no steps stays small.
                        Box::pin(self.write(batch)).await;
                    }
                    None => break,
                },
                _ = &mut finish => {
                    // Every event the attempt sent before it ended is queued by now.
                    loop {
                        let batch = self.batch(None);
                        if batch.is_empty() {
                            break;
                        }
                        Box::pin(self.write(batch)).await;
                    }
                    break;
                }
            }
        }
        self.recording
    }

    /// `first` and the events already waiting, up to a batch.
    fn batch(&mut self, first: Option<Box<StepEvent>>) -> Vec<StepWrite> {
        let mut out: Vec<StepWrite> = first.into_iter().map(|e| write_of(*e)).collect();
        while out.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(e) => out.push(write_of(*e)),
                Err(_) => break,
            }
        }
        out
    }

    /// One fenced call for `batch` (nothing once the fence refused).
    async fn write(&mut self, batch: Vec<StepWrite>) {
        if self.recording.fenced || batch.is_empty() {
            return;
        }
        self.recording.sent = true;
        let n = batch.len() as u64;
        match self
            .broker
            .record_steps(&self.tenant, &self.member, &self.entry_id, &batch)
            .await
        {
            Ok(StepsRecorded::Applied(applied)) => events::attempt::steps_recorded(applied),
            Ok(StepsRecorded::Fenced) => {
                self.recording.fenced = true;
                events::attempt::steps_fenced(&self.tenant, &self.entry_id, n);
            }
            Err(e) => events::attempt::steps_failed(&self.tenant, &self.entry_id, n, &e),
        }
    }
}

/// The broker's write for a context's event.
fn write_of(e: StepEvent) -> StepWrite {
    match e {
        StepEvent::Started(s) => StepWrite::Started(s),
        StepEvent::Done(s) => StepWrite::Done(s),
        StepEvent::Failed { name } => StepWrite::Failed(name),
    }
}
