//! The step recorder of one attempt: takes the step events its [`TaskContext`] accepts (the
//! sink) and writes them to the entry's steps hash in Redis as they arrive (one fenced script
//! call per batch of events already waiting), so a completed step survives a crash of the
//! agent or the member right after it.
//!
//! An attempt that reports no step costs no recorder: [`AttemptSteps`] holds only what a
//! recorder needs, and the attempt's first step event starts one (a task of its own, with the
//! channel its events travel on). When the attempt ends the executor [finishes] it: the
//! recorder writes what was sent before the end and stops, and the attempt's settlement is
//! sent only after that, so no step record lands after the entry is settled. A write refused
//! by the fence (another member owns the entry now) is logged once and ends the recording; a
//! Redis error is logged and counted, and recording goes on.
//!
//! [`TaskContext`]: crate::handler::TaskContext
//! [finishes]: AttemptSteps::finish

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::{Broker, StepWrite, StepsRecorded};
use crate::handler::{StepEvent, StepSink};
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

/// One attempt's step sink: idle (what a recorder needs) until the first event starts the
/// recorder, then the channel to it.
#[derive(Debug)]
pub(crate) struct AttemptSteps {
    state: Mutex<Lazy>,
}

#[derive(Debug)]
enum Lazy {
    /// No event yet.
    Idle(Target),
    /// The recorder runs; its events go through `tx`.
    Running {
        tx: mpsc::UnboundedSender<Box<StepEvent>>,
        done: JoinHandle<Recording>,
    },
    /// The attempt ended: later events are not recorded.
    Finished,
}

/// The entry an attempt's steps are recorded for, and how.
#[derive(Debug)]
struct Target {
    /// Shared (a `Broker` is ~350 bytes of handles).
    broker: Arc<Broker>,
    tenant: Arc<str>,
    member: Arc<str>,
    entry_id: String,
    /// The recorder is spawned here, whatever thread the handler reports its step from.
    runtime: tokio::runtime::Handle,
}

impl AttemptSteps {
    /// The sink of an attempt of entry `entry_id` of `tenant`, run by `member`; the recorder
    /// starts on the current runtime when the first event comes.
    pub fn new(
        broker: Arc<Broker>,
        tenant: Arc<str>,
        member: Arc<str>,
        entry_id: String,
    ) -> AttemptSteps {
        AttemptSteps {
            state: Mutex::new(Lazy::Idle(Target {
                broker,
                tenant,
                member,
                entry_id,
                runtime: tokio::runtime::Handle::current(),
            })),
        }
    }

    /// Ends the recording: waits until the recorder (if one started) has written every event
    /// sent before this call, and returns what it did. Events sent later are not recorded.
    pub async fn finish(&self) -> Recording {
        let state = match self.state.lock() {
            Ok(mut st) => std::mem::replace(&mut *st, Lazy::Finished),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), Lazy::Finished),
        };
        match state {
            Lazy::Running { tx, done } => {
                // The recorder drains what was sent, then sees the channel closed.
                drop(tx);
                done.await.unwrap_or(Recording {
                    // It died mid-way: a write may have landed.
                    sent: true,
                    fenced: false,
                })
            }
            Lazy::Idle(_) | Lazy::Finished => Recording::default(),
        }
    }
}

impl StepSink for AttemptSteps {
    fn send(&self, event: StepEvent) {
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Lazy::Idle(_) = &*st {
            let Lazy::Idle(target) = std::mem::replace(&mut *st, Lazy::Finished) else {
                return;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let Target {
                broker,
                tenant,
                member,
                entry_id,
                runtime,
            } = target;
            let recorder = StepRecorder {
                broker,
                tenant,
                member,
                entry_id,
                rx,
                recording: Recording::default(),
            };
            let done = runtime.spawn(recorder.run());
            *st = Lazy::Running { tx, done };
        }
        if let Lazy::Running { tx, .. } = &*st {
            let _ = tx.send(Box::new(event));
        }
    }
}

/// Records one attempt's step events for its entry.
struct StepRecorder {
    broker: Arc<Broker>,
    tenant: Arc<str>,
    member: Arc<str>,
    entry_id: String,
    rx: mpsc::UnboundedReceiver<Box<StepEvent>>,
    recording: Recording,
}

impl StepRecorder {
    /// Writes events as they arrive until the channel closes (the attempt finished and every
    /// event sent before is written), and returns what it did.
    async fn run(mut self) -> Recording {
        while let Some(first) = self.rx.recv().await {
            let batch = self.batch(*first);
            self.write(batch).await;
        }
        self.recording
    }

    /// `first` and the events already waiting, up to a batch.
    fn batch(&mut self, first: StepEvent) -> Vec<StepWrite> {
        let mut out = vec![write_of(first)];
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
