//! Telemetry as events: one function per observable event, which both logs the event and
//! records its metrics, so the two cannot drift. Grouped by area. An event keeps the log
//! target of the code that used to log it (`target: "redrive::fleet::settler"` and so on),
//! because log filters name those targets.

pub mod admin;
pub mod agent_http;
pub mod agent_process;
pub mod api;
pub mod archive;
pub mod attempt;
pub mod claims;
pub mod health;
pub mod isolation;
pub mod notify;
pub mod producer;
pub mod read;
pub mod records;
pub mod redis_calls;
pub mod redis_server;
pub mod replication;
pub mod settle;
pub mod storm;
pub mod task_records;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use crate::isolation::BreakerState;

    /// Collects the target and level of every event.
    struct Targets(Arc<Mutex<Vec<(String, tracing::Level)>>>);

    impl<S: tracing::Subscriber> Layer<S> for Targets {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if let Ok(mut seen) = self.0.lock() {
                let meta = event.metadata();
                seen.push((meta.target().to_owned(), *meta.level()));
            }
        }
    }

    /// An event to emit, the target and the level it must log with.
    type Case = (Box<dyn FnOnce()>, &'static str, tracing::Level);

    fn targets_of(emit: impl FnOnce()) -> Vec<(String, tracing::Level)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Targets(seen.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        seen
    }

    #[test]
    fn events_log_under_the_target_of_the_code_that_reports_them() {
        use tracing::Level;
        let err = crate::Error::Config("boom".into());
        let cases: Vec<Case> = vec![
            (
                Box::new(|| super::read::tombstones_found("lane", "t", 1)),
                "redrive::fleet::reader",
                Level::ERROR,
            ),
            (
                Box::new(|| super::settle::tasks_deferred("t", 2)),
                "redrive::fleet::settler",
                Level::INFO,
            ),
            (
                Box::new(|| super::claims::ownership_lost("t", 1)),
                "redrive::fleet::heartbeat",
                Level::WARN,
            ),
            (
                Box::new(|| super::isolation::breaker_transition("t", "closed", "open", "r", "")),
                "redrive::fleet::isolation",
                Level::WARN,
            ),
            (
                Box::new(|| super::attempt::steps_fenced("t", "1-0", 2)),
                "redrive::fleet::executor",
                Level::WARN,
            ),
            (
                Box::new(move || super::health::depths_failed(&err)),
                "redrive::fleet::health",
                Level::WARN,
            ),
            (
                Box::new(|| super::records::member_duplicate("t", "task-1", "1-0")),
                "redrive::fleet::settler",
                Level::INFO,
            ),
            (
                Box::new(|| super::admin::command_duplicate("id", "op", "pause")),
                "redrive::admin::exec",
                Level::INFO,
            ),
            (
                Box::new(|| {
                    super::producer::duplicate_refused("t", "t-1", crate::TaskState::Done, "1-0")
                }),
                "redrive::producer",
                Level::DEBUG,
            ),
            (
                Box::new(|| super::redis_server::tls_insecure("rediss://h:6380")),
                "redrive::broker::connect",
                Level::WARN,
            ),
        ];
        for (emit, target, level) in cases {
            assert_eq!(targets_of(emit), vec![(target.to_owned(), level)]);
        }
        // Gauges, and counts of records written, log nothing.
        assert!(targets_of(|| super::records::written("t", "done", 2)).is_empty());
        assert!(
            targets_of(|| super::isolation::breaker_state("t", BreakerState::Open, true))
                .is_empty()
        );
    }
}
