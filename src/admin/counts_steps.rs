//! The dead-letter counts (scripts/lib/dlq_counts.lua) against a private redis-server: dead
//! letters written by dead_letter.lua, then replayed, resolved, discarded, purged and trimmed
//! by the real scripts (the commands executed as `--local` executes them), with task records on
//! and off; after every move the counts equal a recount of the stream. Counts made stale by
//! hand are rebuilt by the upkeep step while dead letters keep coming and going. Review records
//! and folds end with their dead letters, whoever removes them (the cap, a purge).

use std::collections::BTreeMap;
use std::time::Duration;

use super::exec::{run_command, AdminContext, Ran};
use super::select::{DlId, Filter, Selection};
use super::{AdminCommand, Envelope, PurgeSpec, RemoveSpec, ReplaySpec};
use crate::broker::{Broker, CountsStep, DlqCounts, ReadFrom};
use crate::config::{RawConfig, Settings};
use crate::deadletter::DeadLetter;
use crate::embedded::RedisServer;
use crate::handler::FailureClass;
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::{Limits, NewTask, Task};

const TENANT: &str = "acme";
const MEMBER: &str = "counts-member";

struct Env {
    _redis: RedisServer,
    settings: Settings,
    broker: Broker,
}

async fn env(f: impl FnOnce(&mut RawConfig)) -> Env {
    let redis = RedisServer::start().unwrap();
    let mut raw = RawConfig::defaults().unwrap();
    raw.redis.url = redis.url();
    f(&mut raw);
    let settings = Settings::from_raw(raw).unwrap();
    let broker = Broker::connect(&settings).await.unwrap();
    Env {
        _redis: redis,
        settings,
        broker,
    }
}

/// The causes dead letters get, in turn: (class, kind, error).
const CAUSES: [(FailureClass, &str, &str); 4] = [
    (FailureClass::Timeout, "triage", "timed out after 30 s"),
    (FailureClass::Timeout, "score", "timed out after 30 s"),
    (
        FailureClass::SchemaMismatch,
        "triage",
        "field answer missing",
    ),
    (
        FailureClass::RateLimited,
        "triage",
        "rate limited, retry in 5 s",
    ),
];

impl Env {
    /// `n` tasks enqueued, read by a consumer and dead-lettered through dead_letter.lua, their
    /// causes in turn from [`CAUSES`] starting at `first`. Returns the dead letters' ids.
    async fn dead_letters(&self, n: usize, first: usize) -> Vec<String> {
        let records = self.settings.tasks().enabled;
        let producer = Producer::new(self.broker.clone(), &self.settings);
        let tasks = (0..n)
            .map(|i| {
                NewTask::new(
                    TENANT,
                    CAUSES[(first + i) % CAUSES.len()].1,
                    serde_json::json!({ "i": i }),
                )
            })
            .collect();
        producer.enqueue_batch(tasks).await.unwrap();
        self.broker.ensure_group(TENANT).await.unwrap();
        let mut reader = self
            .broker
            .reader(MEMBER, Duration::from_millis(10))
            .await
            .unwrap();
        let lane = self.broker.keys().lane(TENANT);
        let read = reader
            .read(std::slice::from_ref(&lane), ReadFrom::New, n, None)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for (i, e) in read.into_iter().flat_map(|(_, es)| es).enumerate() {
            let fields = e.fields.unwrap();
            let task = Task::from_fields(TENANT, &e.id, &fields, &Limits::default()).unwrap();
            let (class, _, error) = CAUSES[(first + i) % CAUSES.len()];
            let dl = DeadLetter {
                orig_lane: lane.clone(),
                orig_id: e.id.clone(),
                task: Some(task.clone()),
                raw: None,
                class,
                error: error.into(),
                detail: None,
                steps: Vec::new(),
                failed_step: None,
                partial_output: None,
                member: MEMBER.into(),
                first_failed_at_ms: 0,
                dead_lettered_at_ms: 0,
            };
            let moved = self
                .broker
                .dead_letter(
                    TENANT,
                    &e.id,
                    self.settings.retention.hard_max_len,
                    Some(MEMBER),
                    Duration::ZERO,
                    Some(&task.task_id),
                    records,
                    None,
                    &dl.to_fields(),
                )
                .await
                .unwrap();
            assert!(moved.moved);
            ids.push(moved.id);
        }
        ids
    }

    /// Counts the stream itself: what the counts must say.
    async fn recount(&self) -> DlqCounts {
        let mut groups: BTreeMap<(String, String, String), (u64, String)> = BTreeMap::new();
        let mut total = 0;
        let mut from = "-".to_owned();
        loop {
            let page = self
                .broker
                .dlq_range(TENANT, &from, "+", 500)
                .await
                .unwrap();
            for e in &page {
                let f = e.fields.clone().unwrap_or_default();
                let get = |name: &str| super::select::field_str(&f, name).unwrap_or("").to_owned();
                let key = (get("fingerprint"), get("class"), get("kind"));
                let g = groups.entry(key).or_insert((0, get("error")));
                g.0 += 1;
                total += 1;
            }
            match page.last() {
                Some(l) if page.len() == 500 => from = format!("({}", l.id),
                _ => break,
            }
        }
        DlqCounts {
            total,
            groups: groups
                .into_iter()
                .map(
                    |((fingerprint, class, kind), (count, sample))| crate::broker::DlqGroup {
                        fingerprint,
                        class,
                        kind,
                        count,
                        sample,
                    },
                )
                .collect(),
        }
    }

    /// The whole counts, which must be there and equal a recount (samples: one of the group's
    /// errors, here all alike per fingerprint).
    async fn assert_counts_exact(&self, when: &str) {
        let got = self
            .broker
            .dlq_counts_of(&[TENANT.to_owned()])
            .await
            .unwrap();
        let want = self.recount().await;
        assert_eq!(got[0].as_ref(), Some(&want), "{when}");
    }

    fn ctx(&self) -> AdminContext {
        AdminContext {
            broker: self.broker.clone(),
            settings: self.settings.admin.clone(),
            limits: self.settings.limits,
            dlq_ceiling: self.settings.retention.hard_max_len,
            executor: "local@test".into(),
            tasks: self.settings.tasks().clone(),
            archive: self.settings.archive.clone(),
        }
    }

    /// Executes `command` as `--local` does; its outcome must be `ok`.
    async fn run(&self, command: AdminCommand) {
        let env = Envelope {
            id: super::new_command_id(),
            operator: "tester".into(),
            reason: "counts test".into(),
            issued_at_ms: 0,
            deadline_ms: 0,
            command,
        };
        let entry = format!("local:{}", env.id);
        match run_command(&self.ctx(), &env, &entry, &Shutdown::new())
            .await
            .unwrap()
        {
            Ran::Result(r) => assert_eq!(r.outcome, "ok", "{}", r.message),
            other => panic!("{other:?}"),
        }
    }
}

fn ids(list: &[String]) -> Selection {
    Selection::Ids(
        list.iter()
            .map(|id| DlId {
                tenant: TENANT.into(),
                id: id.clone(),
            })
            .collect(),
    )
}

/// Every move of a dead letter keeps the counts exact: dead-lettering, replay, resolve and
/// discard by ids and by filter, purge — with task records on and off.
#[tokio::test]
async fn the_counts_follow_every_move_with_records_on_and_off() {
    for records in [true, false] {
        let env = env(|c| {
            c.tasks.enabled = records;
            c.admin.rate = 0;
        })
        .await;
        let dead = env.dead_letters(40, 0).await;
        env.assert_counts_exact("after 40 dead letters").await;
        env.run(AdminCommand::Replay(ReplaySpec {
            select: Some(ids(&dead[..5])),
            ..ReplaySpec::default()
        }))
        .await;
        env.assert_counts_exact("after a replay of 5").await;
        env.run(AdminCommand::Resolve(RemoveSpec {
            select: ids(&dead[5..9]),
        }))
        .await;
        env.assert_counts_exact("after resolving 4").await;
        env.run(AdminCommand::Discard(RemoveSpec {
            select: Selection::Filter(Filter {
                tenants: vec![TENANT.into()],
                classes: vec!["rate_limited".into()],
                ..Filter::default()
            }),
        }))
        .await;
        env.assert_counts_exact("after discarding a class").await;
        env.run(AdminCommand::Replay(ReplaySpec {
            select: Some(Selection::Filter(Filter {
                tenants: vec![TENANT.into()],
                kinds: vec!["score".into()],
                ..Filter::default()
            })),
            ..ReplaySpec::default()
        }))
        .await;
        env.assert_counts_exact("after a replay by kind").await;
        let more = env.dead_letters(10, 1).await;
        env.assert_counts_exact("after 10 more").await;
        let cutoff = crate::admin::select::id_ms(&more[0]);
        env.run(AdminCommand::Purge(PurgeSpec {
            tenant: TENANT.into(),
            before_ms: cutoff,
        }))
        .await;
        env.assert_counts_exact("after a purge").await;
        let left = env.recount().await;
        assert!(
            left.total >= 10 && left.total < 50,
            "records {records}: {left:?}"
        );
        env.run(AdminCommand::Resolve(RemoveSpec {
            select: Selection::Filter(Filter {
                tenants: vec![TENANT.into()],
                ..Filter::default()
            }),
        }))
        .await;
        let c = env
            .broker
            .dlq_counts_of(&[TENANT.to_owned()])
            .await
            .unwrap();
        assert_eq!(c[0], Some(DlqCounts::default()), "empty groups are removed");
    }
}

/// The hard ceiling (the archive unreachable: nothing archived the stream down to its cap)
/// trims the oldest dead letters in batches (at most a tenth over the ceiling) and takes them
/// out of the counts; the trim and drop counters say how many. The cap alone trims nothing:
/// only the archiver removes, after the archive confirmed.
#[tokio::test]
async fn the_hard_ceiling_trims_in_batches_and_the_counts_see_it() {
    let env = env(|c| {
        c.dead_letter.max_len = 10;
        c.dead_letter.hard_max_len = 20;
    })
    .await;
    env.dead_letters(95, 0).await;
    env.assert_counts_exact("after 95 dead letters over a ceiling of 20")
        .await;
    let len = env.broker.dlq_len(TENANT).await.unwrap();
    assert!((20..=22).contains(&len), "{len} kept with a ceiling of 20");
    let (trimmed, dropped) = env.broker.dlq_left_counts(TENANT).await.unwrap();
    assert_eq!(len + trimmed, 95);
    assert_eq!(dropped, trimmed, "every trim past the ceiling is a drop");
    // By default there is no ceiling: nothing leaves without an archive.
    let env = env_default_ceiling().await;
    env.dead_letters(60, 0).await;
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 60);
    assert_eq!(env.broker.dlq_left_counts(TENANT).await.unwrap(), (0, 0));
}

async fn env_default_ceiling() -> Env {
    env(|c| c.dead_letter.max_len = 15).await
}

/// Counts made stale by hand (an XADD, an XDEL) are noticed by readers (they get none) and
/// rebuilt by the upkeep in steps, while dead letters keep being added and removed between the
/// steps; then they are exact again. A stream older than its counts is counted the same way.
#[tokio::test]
async fn stale_counts_are_rebuilt_while_dead_letters_come_and_go() {
    let env = env(|c| c.admin.rate = 0).await;
    let dead = env.dead_letters(30, 0).await;
    env.assert_counts_exact("before").await;
    assert_eq!(
        env.broker.dlq_counts_step(TENANT, 7).await.unwrap(),
        CountsStep::Ok
    );
    env.broker
        .dlq_append_raw(
            TENANT,
            "*",
            &[("class", "unknown".into()), ("error", "by hand".into())],
        )
        .await
        .unwrap();
    let c = env
        .broker
        .dlq_counts_of(&[TENANT.to_owned()])
        .await
        .unwrap();
    assert_eq!(c[0], None, "stale counts are not offered");
    assert_eq!(
        env.broker.dlq_counts_step(TENANT, 7).await.unwrap(),
        CountsStep::Started
    );
    // Between steps: new dead letters (after the rebuild's end), a replay of one the rebuild
    // has counted, one it has not reached, and a resolve.
    env.dead_letters(5, 2).await;
    env.run(AdminCommand::Replay(ReplaySpec {
        select: Some(ids(&[dead[1].clone(), dead[25].clone()])),
        ..ReplaySpec::default()
    }))
    .await;
    let mut steps = 1;
    loop {
        steps += 1;
        match env.broker.dlq_counts_step(TENANT, 7).await.unwrap() {
            CountsStep::Rebuilding => {
                if steps == 3 {
                    env.run(AdminCommand::Resolve(RemoveSpec {
                        select: ids(&[dead[3].clone(), dead[29].clone()]),
                    }))
                    .await;
                }
            }
            CountsStep::Complete => break,
            other => panic!("step {steps}: {other:?}"),
        }
        assert!(steps < 50);
    }
    assert!(steps >= 4, "a rebuild in pages of 7: {steps} steps");
    env.assert_counts_exact("after the rebuild").await;
    assert_eq!(
        env.broker.dlq_counts_step(TENANT, 7).await.unwrap(),
        CountsStep::Ok
    );
    // Counts gone altogether (dead letters older than them): a new dead letter does not
    // start them; the upkeep does.
    env.broker.dlq_counts_delete(TENANT).await.unwrap();
    env.dead_letters(3, 0).await;
    let c = env
        .broker
        .dlq_counts_of(&[TENANT.to_owned()])
        .await
        .unwrap();
    assert_eq!(c[0], None);
    while env.broker.dlq_counts_step(TENANT, 1_000).await.unwrap() != CountsStep::Complete {}
    env.assert_counts_exact("after counting an older stream")
        .await;
}

/// Review records and folds end with their dead letters whoever removes them: the cap trims a
/// reviewed dead letter and a fold's representative (the fold dissolves, the unowned scan starts
/// over), a purge deletes the rest; the counts by state follow, and the unowned step finds the
/// oldest dead letter nobody owns behind its cursor.
#[tokio::test]
async fn review_records_and_folds_end_with_their_dead_letters() {
    use super::{FoldSpec, ReviewSpec};
    use crate::broker::Unowned;
    // The cap and the hard ceiling both 20: past it the script itself trims (no archiver runs
    // here), and the review records must go with what it trims.
    let env = env(|c| {
        c.dead_letter.max_len = 20;
        c.dead_letter.hard_max_len = 20;
    })
    .await;
    let dead = env.dead_letters(20, 0).await;
    let one = |i: usize| {
        vec![DlId {
            tenant: TENANT.into(),
            id: dead[i].clone(),
        }]
    };
    env.run(AdminCommand::Assign(ReviewSpec {
        ids: one(0),
        to: "ana".into(),
        text: String::new(),
    }))
    .await;
    env.run(AdminCommand::Note(ReviewSpec {
        ids: one(1),
        to: String::new(),
        text: "seen".into(),
    }))
    .await;
    env.run(AdminCommand::Escalate(ReviewSpec {
        ids: one(2),
        to: "team-a".into(),
        text: String::new(),
    }))
    .await;
    let fp = env
        .broker
        .dlq_entries(TENANT, &[dead[3].as_str()])
        .await
        .unwrap()[0]
        .as_ref()
        .and_then(|e| e.fields.as_ref())
        .and_then(|f| super::select::field_str(f, "fingerprint").map(str::to_owned))
        .unwrap();
    env.run(AdminCommand::Fold(FoldSpec {
        tenant: TENANT.into(),
        fingerprint: fp.clone(),
    }))
    .await;
    let folds = env.broker.dlq_folds_of(&[TENANT.into()]).await.unwrap();
    assert_eq!(
        folds[0].get(&fp),
        Some(&dead[3]),
        "the oldest of the fingerprint represents it"
    );
    let states = super::triage::by_state(&env.broker, &[TENANT.into()])
        .await
        .unwrap()
        .unwrap();
    // 20 dead letters, 4 causes in turn: 5 with the folded fingerprint, its representative new.
    assert_eq!(states["in_review"], 1);
    assert_eq!(states["escalated"], 1);
    assert_eq!(states["folded"], 4);
    assert_eq!(states["new"], 14);
    // The oldest unowned: dead[1] (a note does not own it); the cursor stays at dead[0].
    let t: std::sync::Arc<str> = TENANT.into();
    let step = env
        .broker
        .dlq_unowned(std::slice::from_ref(&t), 100)
        .await
        .unwrap();
    assert_eq!(step, [Unowned::Found(dead[1].clone())]);
    let raw = env.broker.dlq_review_raw(TENANT).await.unwrap();
    assert_eq!(raw.get("unowned_to"), Some(&dead[0]));
    // Nine more: the ceiling (20, trimmed in batches past a slack of 2) trims the nine oldest, and
    // with them their records; the representative's fold dissolves.
    let more = env.dead_letters(9, 20).await;
    env.assert_counts_exact("after the cap trimmed").await;
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 20);
    let raw = env.broker.dlq_review_raw(TENANT).await.unwrap();
    assert!(
        raw.is_empty(),
        "records, counts and cursor gone with their dead letters: {raw:?}"
    );
    let folds = env.broker.dlq_folds_of(&[TENANT.into()]).await.unwrap();
    assert!(
        folds[0].is_empty(),
        "the fold dissolved with its representative"
    );
    let step = env
        .broker
        .dlq_unowned(std::slice::from_ref(&t), 100)
        .await
        .unwrap();
    assert_eq!(step, [Unowned::Found(dead[9].clone())]);
    // Owned all: none unowned; then a purge deletes them with their records.
    let all: Vec<DlId> = dead[9..]
        .iter()
        .chain(&more)
        .map(|id| DlId {
            tenant: TENANT.into(),
            id: id.clone(),
        })
        .collect();
    env.run(AdminCommand::Assign(ReviewSpec {
        ids: all,
        to: "bo".into(),
        text: String::new(),
    }))
    .await;
    let step = env
        .broker
        .dlq_unowned(std::slice::from_ref(&t), 100)
        .await
        .unwrap();
    assert_eq!(step, [Unowned::None]);
    let states = super::triage::by_state(&env.broker, &[TENANT.into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((states["in_review"], states["new"]), (20, 0));
    env.run(AdminCommand::Purge(PurgeSpec {
        tenant: TENANT.into(),
        before_ms: u64::MAX / 2,
    }))
    .await;
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 0);
    let raw = env.broker.dlq_review_raw(TENANT).await.unwrap();
    assert!(raw.keys().all(|k| k == "unowned_to"), "{raw:?}");
}
