//! One test per loop kind that calls its `step` directly, against a private redis-server
//! (never port 6379), with the member's shared state built as `Fleet::run` builds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::admin::{AdminLoop, AdminStep};
use super::executor::{Dispatch, Executor, ExecutorSettings};
use super::health::DepthRefresher;
use super::heartbeat::Heartbeat;
use super::isolation_sync::IsolationSync;
use super::lease::{Lease, LeaseKeeper};
use super::reader::{ReadStep, Reader};
use super::reclaimer::Reclaimer;
use super::recoverer::Recoverer;
use super::router::Router;
use super::settlement::{Aside, Settlement};
use super::settler::{SettleLoop, Settler};
use super::shared::{Job, Lost, Shared, SharedParts, Work};
use super::stats::FleetStats;
use crate::broker::{Broker, ReadFrom};
use crate::config::{RawConfig, Settings};
use crate::embedded::RedisServer;
use crate::handler::{FailureClass, Handler, HandlerSpec, NoopHandler};
use crate::isolation::BreakerView;
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::{NewTask, Task};
use crate::telemetry::Health;

pub(super) const MEMBER: &str = "step-member";
pub(super) const TENANT: &str = "acme";

/// A private Redis, settings pointed at it, a broker and a member's shared state.
pub(super) struct Env {
    _redis: RedisServer,
    pub(super) settings: Settings,
    pub(super) broker: Broker,
    pub(super) shared: Arc<Shared>,
}

pub(super) async fn env() -> Env {
    env_with(|_| {}).await
}

/// [`env`] with settings changed by `f` (after the private Redis and member id are set).
pub(super) async fn env_with(f: impl FnOnce(&mut RawConfig)) -> Env {
    let redis = RedisServer::start().unwrap();
    let mut raw = RawConfig::defaults().unwrap();
    raw.redis.url = redis.url();
    raw.fleet.member_id = MEMBER.into();
    f(&mut raw);
    let settings = Settings::from_raw(raw).unwrap();
    let broker = Broker::connect(&settings).await.unwrap();
    let shared = Arc::new(Shared::new(
        &settings.fleet,
        SharedParts {
            member: MEMBER.into(),
            isolation: Arc::new(settings.isolation.clone()),
            stats: Arc::new(FleetStats::default()),
            limits: settings.limits,
            ack_observer: None,
            health: Arc::new(Health::new(settings.metrics.stall_after)),
            tasks: Arc::new(settings.tasks().clone()),
        },
    ));
    Env {
        _redis: redis,
        settings,
        broker,
        shared,
    }
}

/// A task of `kind` with id `task_id`, as a member reads it.
pub(super) fn a_task(task_id: &str, kind: &str) -> Arc<Task> {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = [("task_id", task_id), ("kind", kind), ("payload", "{}")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    Arc::new(Task::from_fields(TENANT, "1-0", &fields, &crate::task::Limits::default()).unwrap())
}

impl Env {
    /// Enqueues `n` tasks for the tenant and makes its lane known to the member.
    async fn enqueue(&self, n: usize) {
        let producer = Producer::new(self.broker.clone(), &self.settings);
        for i in 0..n {
            producer
                .enqueue(NewTask::new(
                    TENANT,
                    "triage",
                    serde_json::json!({ "i": i }),
                ))
                .await
                .unwrap();
        }
        self.broker.ensure_group(TENANT).await.unwrap();
        if let Ok(mut lanes) = self.shared.lanes.write() {
            if lanes.is_empty() {
                lanes.push((self.broker.keys().lane(TENANT), TENANT.into()));
            }
        }
    }

    /// Delivers up to `n` new entries of the lane to `consumer`; returns their ids.
    pub(super) async fn deliver(&self, consumer: &str, n: usize) -> Vec<String> {
        let mut reader = self
            .broker
            .reader(consumer, Duration::from_millis(10))
            .await
            .unwrap();
        let lane = self.broker.keys().lane(TENANT);
        let streams = reader.read(&[lane], ReadFrom::New, n, None).await.unwrap();
        streams
            .into_iter()
            .flat_map(|(_, entries)| entries.into_iter().map(|e| e.id))
            .collect()
    }

    pub(super) fn settler(&self) -> Settler {
        Settler {
            broker: self.broker.clone(),
            shared: self.shared.clone(),
            ack_batch: self.settings.fleet.ack_batch,
            dlq_ceiling: self.settings.retention.hard_max_len,
            policies: Arc::new(self.settings.policies.clone()),
            log_payloads: false,
            max_deliveries: self.settings.fleet.reclaim.max_deliveries,
            fast_ack_window: Duration::ZERO,
        }
    }
}

#[tokio::test]
async fn reader_step_reads_new_entries_into_the_local_queue() {
    let env = env().await;
    env.enqueue(2).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut reader = Reader::new(
        env.broker.clone(),
        env.shared.clone(),
        tx,
        &env.settings.fleet,
    );
    let shutdown = Shutdown::new();
    let mut found = 0;
    // The first step drains the (empty) own PEL and discovers the tenant, then reads.
    for _ in 0..3 {
        if let ReadStep::Read(cycle) = reader.step(&shutdown).await.unwrap() {
            found += cycle.found;
        }
        if found == 2 {
            break;
        }
    }
    assert_eq!(found, 2);
    assert_eq!(env.shared.queued(), 2);
    assert_eq!(env.shared.unsettled(), 2);
}

#[tokio::test]
async fn executor_step_drops_a_job_lost_to_another_member() {
    let env = env().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut executor = Executor::new(ExecutorSettings {
        broker: env.broker.clone(),
        shared: env.shared.clone(),
        router: Arc::new(Router::new(
            vec![(
                HandlerSpec::catch_all("noop", Duration::from_secs(5), 2),
                Arc::new(NoopHandler) as Arc<dyn Handler>,
            )],
            true,
        )),
        policies: Arc::new(env.settings.policies.clone()),
        classifier: Arc::new(env.settings.classifier.clone()),
        settle: tx,
        concurrency: 2,
        grace: Duration::from_secs(1),
        fast_start_window: Duration::ZERO,
    });
    let lost = Arc::new(Lost::default());
    lost.mark();
    let job = Job {
        tenant: TENANT.into(),
        entry_id: "1-0".into(),
        work: Work::Suspect(None),
        deliveries: 0,
        lost,
        read_at: None,
    };
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    let done = executor.step(job, permit, &Shutdown::new()).await;
    assert_eq!(done, Dispatch::Dropped);
    match rx.try_recv() {
        Ok(Settlement::Aside(Aside::Lost { entry_id, .. })) => assert_eq!(entry_id, "1-0"),
        other => panic!("expected a lost settlement, got {other:?}"),
    }
}

#[tokio::test]
async fn settler_step_acks_a_completed_entry() {
    let env = env().await;
    env.enqueue(1).await;
    let ids = env.deliver(MEMBER, 1).await;
    let id = ids[0].clone();
    let tenant: Arc<str> = TENANT.into();
    assert!(env.shared.admit(&tenant, &id).is_some());
    let (_tx, rx) = mpsc::unbounded_channel();
    let mut settle = SettleLoop::new(env.settler(), rx);
    settle
        .step(Settlement::Done {
            tenant: tenant.clone(),
            entry_id: id,
            recovered: false,
            read_at: None,
            steps: false,
            task: a_task("t-1", "triage"),
            output: None,
            started_ms: 0,
        })
        .await;
    // The flush waits for the first try of its ack; the task then releases the slot.
    settle.drain().await;
    assert_eq!(env.broker.pending_count(TENANT).await.unwrap(), 0);
    assert_eq!(env.shared.unsettled(), 0);
    assert_eq!(env.shared.stats.snapshot()[TENANT].completed, 1);
}

#[tokio::test]
async fn reclaimer_step_takes_over_a_stale_entry() {
    let env = env().await;
    env.enqueue(1).await;
    let ids = env.deliver("dead-member", 1).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut cfg = env.settings.fleet.reclaim.clone();
    cfg.min_idle = Duration::ZERO;
    let mut reclaimer = Reclaimer::new(env.broker.clone(), env.shared.clone(), tx, cfg);
    assert_eq!(reclaimer.step().await, 1);
    assert_eq!(env.shared.queued(), 1);
    let job = env.shared.pop().unwrap();
    assert_eq!(job.entry_id, ids[0]);
    assert!(matches!(job.work, Work::Suspect(_)));
}

#[tokio::test]
async fn recoverer_step_promotes_a_due_retry() {
    let env = env().await;
    env.enqueue(1).await;
    let ids = env.deliver(MEMBER, 1).await;
    let due = env
        .broker
        .schedule_retry(
            TENANT,
            MEMBER,
            &ids[0],
            Duration::ZERO,
            &[("kind", "triage".to_owned())],
        )
        .await
        .unwrap();
    assert!(due.is_some());
    assert_eq!(env.broker.retry_len(TENANT).await.unwrap(), 1);
    let before = env.broker.lane_len(TENANT).await.unwrap();
    let mut recoverer = Recoverer {
        broker: env.broker.clone(),
        shared: env.shared.clone(),
        interval: Duration::from_secs(1),
        idle_look: Duration::from_secs(3600),
        next_look: std::collections::HashMap::new(),
        batch: 10,
        sweep: None,
        counts: super::recoverer::CountsUpkeep::new(),
    };
    assert_eq!(
        recoverer.step().await,
        1,
        "a tenant's first look is at once"
    );
    assert_eq!(env.broker.retry_len(TENANT).await.unwrap(), 0);
    assert_eq!(env.broker.lane_len(TENANT).await.unwrap(), before + 1);
}

/// The recovery loop looks at a tenant when something there is due that it knows of — a
/// wake (a retry this member scheduled, a breaker it saw close) or the earliest item its last
/// look found — and otherwise only at the periodic look, not on every tick.
#[tokio::test]
async fn recoverer_looks_when_something_is_due_not_on_every_tick() {
    let env = env().await;
    env.enqueue(3).await;
    let ids = env.deliver(MEMBER, 3).await;
    let tenant: Arc<str> = TENANT.into();
    let mut recoverer = Recoverer {
        broker: env.broker.clone(),
        shared: env.shared.clone(),
        interval: Duration::from_millis(10),
        idle_look: Duration::from_secs(3600),
        next_look: std::collections::HashMap::new(),
        batch: 10,
        sweep: None,
        counts: super::recoverer::CountsUpkeep::new(),
    };
    let schedule = |id: String, delay: Duration| {
        let b = env.broker.clone();
        async move {
            b.schedule_retry(TENANT, MEMBER, &id, delay, &[("kind", "triage".to_owned())])
                .await
                .unwrap()
                .unwrap()
        }
    };
    // The first look finds an empty schedule: the next is the periodic one, an hour away.
    assert_eq!(recoverer.step().await, 0);
    // A retry nobody told this member of (another member's) waits for that look...
    schedule(ids[0].clone(), Duration::ZERO).await;
    assert_eq!(recoverer.step().await, 0, "not looked at on every tick");
    assert_eq!(env.broker.retry_len(TENANT).await.unwrap(), 1);
    // ...or for a wake: then it is promoted on the next tick.
    env.shared.promote_wakes.due(&tenant, Duration::ZERO);
    assert_eq!(recoverer.step().await, 1);
    // A look that finds an item due later comes back when it is due, without a wake.
    schedule(ids[1].clone(), Duration::from_millis(300)).await;
    env.shared.promote_wakes.due(&tenant, Duration::ZERO);
    assert_eq!(recoverer.step().await, 0, "not due yet");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut moved = 0;
    while moved == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        moved = recoverer.step().await;
    }
    assert_eq!(
        moved, 1,
        "promoted once due, by the wait the last look returned"
    );
    assert_eq!(env.broker.retry_len(TENANT).await.unwrap(), 0);
    // The periodic look reaches a tenant whatever it knows.
    schedule(ids[2].clone(), Duration::ZERO).await;
    recoverer.idle_look = Duration::from_millis(10);
    recoverer
        .next_look
        .insert(tenant.clone(), std::time::Instant::now());
    assert_eq!(recoverer.step().await, 1);
}

#[tokio::test]
async fn heartbeat_step_marks_an_entry_another_member_took_as_lost() {
    let env = env().await;
    env.enqueue(2).await;
    let mine = env.deliver(MEMBER, 1).await;
    let theirs = env.deliver("other-member", 1).await;
    let tenant: Arc<str> = TENANT.into();
    let kept = env.shared.admit(&tenant, &mine[0]).unwrap();
    // Held here, but delivered to (owned by) another consumer.
    let taken = env.shared.admit(&tenant, &theirs[0]).unwrap();
    let mut heartbeat = Heartbeat {
        broker: env.broker.clone(),
        shared: env.shared.clone(),
        period: Duration::from_secs(1),
    };
    heartbeat.step().await;
    assert!(taken.is_set());
    assert!(!kept.is_set());
}

#[tokio::test]
async fn lease_keeper_step_renews_until_another_process_holds_the_id() {
    let env = env().await;
    let member: Arc<str> = MEMBER.into();
    let ttl = Duration::from_secs(30);
    let lease = Lease::acquire(&env.broker, &member, ttl, &Shutdown::new())
        .await
        .unwrap();
    let token = lease.token().to_owned();
    let mut keeper = LeaseKeeper::new(lease, env.broker.clone(), ttl / 3);
    assert!(keeper.step().await);
    assert!(env.broker.lease_remaining(MEMBER).await.unwrap().is_some());
    // The lease is gone (expired) and another process takes the id.
    env.broker.release_lease(MEMBER, &token).await.unwrap();
    assert!(env
        .broker
        .acquire_lease(MEMBER, "someone-else", ttl)
        .await
        .unwrap());
    assert!(!keeper.step().await);
}

#[tokio::test]
async fn isolation_sync_step_reports_outcomes_and_reads_the_breaker() {
    let env = env().await;
    env.enqueue(1).await;
    let tenant: Arc<str> = TENANT.into();
    for _ in 0..100 {
        env.shared
            .isolation
            .record(&tenant, Err(FailureClass::UpstreamUnavailable));
    }
    let mut sync = IsolationSync::new(env.broker.clone(), env.shared.clone());
    sync.step().await;
    // Every reported attempt failed: the breaker opened in Redis, and this member sees it.
    let info = env.broker.breaker_info(TENANT).await.unwrap();
    assert_eq!(info.state, "open", "{info:?}");
    assert_ne!(env.shared.isolation.view(TENANT), BreakerView::CLOSED);
}

#[tokio::test]
async fn depth_refresher_step_marks_redis_answering() {
    let env = env().await;
    env.enqueue(1).await;
    let health = env.shared.health.clone();
    health.set_serving(true);
    health.set_redis(false);
    assert!(health.readiness().is_err());
    let mut depths = DepthRefresher {
        broker: env.broker.clone(),
        shared: env.shared.clone(),
        health: health.clone(),
        cfg: env.settings.metrics,
        dlq_published: Default::default(),
        unowned: Default::default(),
        known: Default::default(),
        turn: Default::default(),
    };
    depths.step().await;
    assert_eq!(health.readiness(), Ok(()));
}

#[tokio::test]
async fn admin_loop_step_beats_into_the_live_members_set() {
    let env = env().await;
    let mut admin = AdminLoop::new(
        crate::admin::exec::AdminContext {
            broker: env.broker.clone(),
            settings: env.settings.admin.clone(),
            limits: env.settings.limits,
            dlq_ceiling: env.settings.retention.hard_max_len,
            executor: MEMBER.to_owned(),
            tasks: env.settings.tasks().clone(),
            archive: env.settings.archive.clone(),
        },
        Duration::from_millis(10),
        Duration::from_secs(1),
    );
    assert_eq!(admin.step().await, AdminStep::Read(0));
    let live = env
        .broker
        .admin_live_members(env.settings.admin.member_ttl)
        .await
        .unwrap();
    assert!(live.iter().any(|m| m == MEMBER), "{live:?}");
}
