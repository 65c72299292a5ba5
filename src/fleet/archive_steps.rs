//! The archiver's steps against a private redis-server and a local archive directory: the cap
//! and the retention move dead letters out only after their object is written, every task_id
//! stays in Redis or in the archive, a batch left by a crash is uploaded again under the same
//! name, resolved ones follow after their grace period, and a restore (with and without
//! encryption) puts a dead letter back byte for byte, once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::archiver::{ArchiveStep, Archiver};
use super::loop_steps::{env_with, Env, MEMBER, TENANT};
use crate::admin::select::DlId;
use crate::admin::RestoreSpec;
use crate::archive::format::{self, ArchiveClass};
use crate::archive::{read, ArchiveStore};
use crate::broker::{ArchiveSource, PendingBatch, ReadFrom, Removal};
use crate::config::RawConfig;
use crate::deadletter::DeadLetter;
use crate::handler::FailureClass;
use crate::producer::Producer;
use crate::task::{Limits, NewTask, Task};

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("redrive-archive-steps-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A member env archiving into a fresh directory with `f`'s settings.
async fn archive_env(f: impl FnOnce(&mut RawConfig)) -> (Env, PathBuf) {
    let dir = scratch();
    let url = dir.join("archive").to_string_lossy().into_owned();
    let env = env_with(|c| {
        c.archive.url = url;
        c.archive.batch = 8;
        c.archive.interval_ms = 50;
        f(c)
    })
    .await;
    if let Ok(mut lanes) = env.shared.lanes.write() {
        lanes.push((env.broker.keys().lane(TENANT), TENANT.into()));
    }
    (env, dir)
}

fn archiver(env: &Env) -> Archiver {
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    let mut a = Archiver::new(
        env.broker.clone(),
        env.shared.clone(),
        store,
        env.settings.archive.clone(),
        env.settings.retention.clone(),
    );
    // Every step visits (the tests call step directly, without waiting for the interval).
    a.settings.interval = Duration::ZERO;
    a
}

/// `n` tasks enqueued, read, and dead-lettered through dead_letter.lua. Returns their task ids.
async fn dead_letters(env: &Env, n: usize) -> Vec<String> {
    let producer = Producer::new(env.broker.clone(), &env.settings);
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask::new(TENANT, "triage", serde_json::json!({ "i": i, "f": 1.50 })))
        .collect();
    producer.enqueue_batch(tasks).await.unwrap();
    env.broker.ensure_group(TENANT).await.unwrap();
    let mut reader = env
        .broker
        .reader(MEMBER, Duration::from_millis(10))
        .await
        .unwrap();
    let lane = env.broker.keys().lane(TENANT);
    let read = reader
        .read(std::slice::from_ref(&lane), ReadFrom::New, n, None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for e in read.into_iter().flat_map(|(_, es)| es) {
        let task =
            Task::from_fields(TENANT, &e.id, &e.fields.unwrap(), &Limits::default()).unwrap();
        ids.push(task.task_id.clone());
        let dl = DeadLetter {
            orig_lane: lane.clone(),
            orig_id: e.id.clone(),
            task: Some(task.clone()),
            raw: None,
            class: FailureClass::SchemaMismatch,
            error: "field answer missing".into(),
            detail: None,
            steps: Vec::new(),
            failed_step: None,
            partial_output: None,
            member: MEMBER.into(),
            first_failed_at_ms: 0,
            dead_lettered_at_ms: 0,
        };
        let moved = env
            .broker
            .dead_letter(
                TENANT,
                &e.id,
                env.settings.retention.hard_max_len,
                Some(MEMBER),
                Duration::ZERO,
                Some(&task.task_id),
                true,
                None,
                &dl.to_fields(),
            )
            .await
            .unwrap();
        assert!(moved.moved);
    }
    ids
}

/// task_id → how many times it is in the tenant's dead-letter stream and in the archive.
async fn where_tasks_are(
    env: &Env,
    store: &ArchiveStore,
) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut in_redis = HashMap::new();
    for e in env
        .broker
        .dlq_range(TENANT, "-", "+", 100_000)
        .await
        .unwrap()
    {
        let f = e.fields.unwrap();
        let t = f.iter().find(|(k, _)| k == b"task_id").unwrap();
        *in_redis
            .entry(String::from_utf8(t.1.clone()).unwrap())
            .or_default() += 1;
    }
    let mut archived = HashMap::new();
    for (_, m) in read::manifests(store, Some(TENANT), None, None)
        .await
        .unwrap()
    {
        for e in read::object_entries(store, &m.object, None).await.unwrap() {
            *archived
                .entry(e.field("task_id").unwrap().to_owned())
                .or_default() += 1;
        }
    }
    (in_redis, archived)
}

#[tokio::test]
async fn the_cap_archives_before_it_removes_and_loses_nothing() {
    let (env, dir) = archive_env(|c| {
        c.dead_letter.max_len = 10;
        c.dead_letter.hard_max_len = 100;
    })
    .await;
    let tasks = dead_letters(&env, 30).await;
    // Past the cap but below the ceiling: nothing was trimmed without an archive.
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 30);
    // The oldest is under review: its review goes into the archive with it.
    let oldest = env.broker.dlq_range(TENANT, "-", "+", 1).await.unwrap()[0]
        .id
        .clone();
    let mv = crate::broker::ReviewMove {
        action: "assign",
        arg: "ana",
        operator: "ops",
        reason: "look",
        command_id: "c-review",
    };
    env.broker
        .dlq_review(TENANT, &mv, &[oldest.as_str()])
        .await
        .unwrap();
    let mut a = archiver(&env);
    let mut sum = ArchiveStep::default();
    for _ in 0..5 {
        let s = a.step().await;
        sum.batches += s.batches;
        sum.removed += s.removed;
        assert_eq!(s.failed, 0);
    }
    assert_eq!((sum.batches, sum.removed), (3, 20), "batches of 8, 8 and 4");
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 10);
    let (trimmed, dropped) = env.broker.dlq_left_counts(TENANT).await.unwrap();
    assert_eq!((trimmed, dropped), (20, 0));
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    let (in_redis, archived) = where_tasks_are(&env, &store).await;
    for t in &tasks {
        let n = in_redis.get(t).copied().unwrap_or(0) + archived.get(t).copied().unwrap_or(0);
        assert_eq!(n, 1, "{t}: in redis {in_redis:?}, archived {archived:?}");
    }
    // The counts agree with the stream; archived records name their object and now expire.
    let counts = env
        .broker
        .dlq_counts_of(&[TENANT.to_owned()])
        .await
        .unwrap();
    assert_eq!(counts[0].as_ref().map(|c| c.total), Some(10));
    let archived_task = archived.keys().next().unwrap();
    let rec = env
        .broker
        .task_record(TENANT, archived_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.record.fields.get("state").map(String::as_str),
        Some("dead_lettered")
    );
    let object = rec.record.fields.get("archived").cloned().unwrap();
    assert!(
        object.starts_with("acme/") && object.contains("/dead_letter/"),
        "{object}"
    );
    assert!(
        rec.expires_in.is_some(),
        "an archived dead letter's record expires"
    );
    let kept_task = in_redis.keys().next().unwrap();
    let rec = env
        .broker
        .task_record(TENANT, kept_task)
        .await
        .unwrap()
        .unwrap();
    assert!(!rec.record.fields.contains_key("archived") && rec.expires_in.is_none());
    // Nothing is left recorded.
    assert!(env.broker.archive_pending(TENANT).await.unwrap().is_none());
    // The reviewed dead letter's record left Redis with it, into its archived entry.
    assert_eq!(
        env.broker
            .dlq_review_records(TENANT, &[oldest.as_str()])
            .await
            .unwrap(),
        [None]
    );
    let mut review = None;
    for (_, m) in read::manifests(&store, Some(TENANT), None, None)
        .await
        .unwrap()
    {
        for e in read::object_entries(&store, &m.object, None).await.unwrap() {
            if e.id == oldest {
                review = e.field("review").map(str::to_owned);
            }
        }
    }
    let review = review.expect("the archived entry carries its review");
    assert!(
        review.contains("ana") && review.contains("in_review"),
        "{review}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_batch_left_by_a_crash_is_uploaded_again_under_its_name_then_removed() {
    let (env, dir) = archive_env(|c| c.dead_letter.max_len = 5).await;
    dead_letters(&env, 9).await;
    // A member recorded the 4 oldest as a batch, wrote half an object and died (its lease has
    // expired by now).
    let old = env.broker.dlq_range(TENANT, "-", "+", 4).await.unwrap();
    let ids: Vec<String> = old.iter().map(|e| e.id.clone()).collect();
    let name = format::BatchName {
        tenant: TENANT.into(),
        begun_at_ms: 1_700_000_000_000,
        class: ArchiveClass::DeadLetter,
        first: ids[0].clone(),
        last: ids[3].clone(),
    };
    assert!(env
        .broker
        .archive_lease(TENANT, "dead-member", Duration::from_millis(1))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pending = PendingBatch {
        source: ArchiveSource::Dlq,
        class: "dead_letter".into(),
        object: name.object(),
        begun_ms: name.begun_at_ms,
        ids: ids.clone(),
    };
    // The lease is gone: a batch cannot be recorded without it.
    assert_eq!(
        env.broker
            .archive_begin(TENANT, "dead-member", &pending)
            .await
            .unwrap(),
        crate::broker::BatchBegin::NotLeased
    );
    assert!(env
        .broker
        .archive_lease(TENANT, "dead-member", Duration::from_millis(1))
        .await
        .unwrap());
    assert_eq!(
        env.broker
            .archive_begin(TENANT, "dead-member", &pending)
            .await
            .unwrap(),
        crate::broker::BatchBegin::Recorded
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    store
        .put(&name.object(), b"\x1f\x8b half an upload".to_vec())
        .await
        .unwrap();
    let mut a = archiver(&env);
    let s = a.step().await;
    assert_eq!(s.failed, 0);
    // The recorded batch went first, under its recorded name (the day of 2023-11-14).
    let got = read::object_entries(&store, &name.object(), None)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    assert!(
        name.object().contains("/2023/11/14/dead_letter/"),
        "{}",
        name.object()
    );
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 5);
    // No object holds an entry twice.
    let mut seen = HashMap::new();
    for (_, m) in read::manifests(&store, Some(TENANT), None, None)
        .await
        .unwrap()
    {
        for e in m.entries {
            *seen.entry(e.id).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 4);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn resolved_ones_follow_after_their_grace_and_restores_are_byte_exact_and_once() {
    let key_dir = scratch();
    let key_file = key_dir.join("key");
    std::fs::write(&key_file, "0f".repeat(32)).unwrap();
    let key_path = key_file.to_string_lossy().into_owned();
    let (env, dir) = archive_env(|c| {
        c.dead_letter.removed_grace_ms = 0;
        c.dead_letter.retention_ms = 1_000;
        c.archive.encryption_key_file = key_path;
    })
    .await;
    let tasks = dead_letters(&env, 3).await;
    let all = env.broker.dlq_range(TENANT, "-", "+", 10).await.unwrap();
    let before: HashMap<String, crate::archive::format::RawFields> = all
        .iter()
        .map(|e| (e.id.clone(), e.fields.clone().unwrap()))
        .collect();
    // One resolved by an operator; the other two wait for their retention (1 s).
    let ctx = crate::admin::exec::AdminContext {
        broker: env.broker.clone(),
        settings: env.settings.admin.clone(),
        limits: env.settings.limits,
        dlq_ceiling: env.settings.retention.hard_max_len,
        executor: MEMBER.to_owned(),
        tasks: env.settings.tasks().clone(),
        archive: env.settings.archive.clone(),
    };
    let target = crate::admin::mutate::record_target(&ctx, TENANT, &all[0].id, Some(&all[0]));
    let stamp = Removal {
        action: "resolved",
        operator: "ops",
        reason: "fixed upstream",
        command_id: "c-1",
    };
    env.broker
        .dlq_remove(TENANT, &[target], &stamp, ctx.dlq_ceiling, true)
        .await
        .unwrap();
    // The grace period (0 here) counts from the removal, by the server's clock, to the ms.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut a = archiver(&env);
    a.step().await;
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    let ms = read::manifests(&store, Some(TENANT), None, None)
        .await
        .unwrap();
    assert_eq!(ms.len(), 1, "only the resolved one so far");
    assert_eq!(ms[0].1.class, ArchiveClass::Resolved);
    assert_eq!(
        ms[0].1.entries[0].id, all[0].id,
        "listed under its dead-letter id"
    );
    assert!(env
        .broker
        .dlq_removed_range(TENANT, "-", 10)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    a.step().await;
    assert_eq!(
        env.broker.dlq_len(TENANT).await.unwrap(),
        0,
        "past the retention"
    );
    // Encrypted at rest: no payload in the objects' text.
    for (_, m) in read::manifests(&store, Some(TENANT), None, None)
        .await
        .unwrap()
    {
        let raw = store.get(&m.object).await.unwrap().unwrap();
        let text = format::object_lines(&raw).unwrap().join("\n");
        assert!(!text.contains("1.50") && text.contains("\"enc\""), "{text}");
        assert!(read::object_entries(&store, &m.object, None).await.is_err());
    }
    // Restore all three (the resolved one too): byte for byte, without the removal's stamps.
    let ids: Vec<DlId> = all
        .iter()
        .map(|e| DlId {
            tenant: TENANT.into(),
            id: e.id.clone(),
        })
        .collect();
    let spec = RestoreSpec { ids: ids.clone() };
    let (msg, _) = crate::admin::restore::restore(&ctx, &spec).await.unwrap();
    assert!(msg.starts_with("restored 3 "), "{msg}");
    let back = env.broker.dlq_range(TENANT, "-", "+", 10).await.unwrap();
    assert_eq!(back.len(), 3);
    for e in &back {
        let mut f = e.fields.clone().unwrap();
        let (k, from) = f.pop().unwrap();
        assert_eq!(k, b"restored_from");
        let from = String::from_utf8(from).unwrap();
        assert_eq!(&f, &before[&from], "restored byte for byte");
    }
    let rec = env
        .broker
        .task_record(TENANT, &tasks[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.record.fields.get("state").map(String::as_str),
        Some("dead_lettered")
    );
    assert_eq!(rec.record.fields.get("restored_from"), Some(&all[0].id));
    assert!(rec.expires_in.is_none());
    let counts = env
        .broker
        .dlq_counts_of(&[TENANT.to_owned()])
        .await
        .unwrap();
    assert_eq!(counts[0].as_ref().map(|c| c.total), Some(3));
    // A second restore of the same ids writes nothing.
    let (msg, _) = crate::admin::restore::restore(&ctx, &spec).await.unwrap();
    assert!(msg.contains("3 restored before"), "{msg}");
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 3);
    // An id the archive does not hold changes nothing.
    let missing = RestoreSpec {
        ids: vec![DlId::parse("acme/1-0", None).unwrap()],
    };
    assert!(matches!(
        crate::admin::restore::restore(&ctx, &missing).await,
        Err(crate::Error::NotFound(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(key_dir);
}

/// A review move (a note) that lands after the archiver read a dead letter's review record and
/// uploaded it, but before the removal: the note must not vanish with the record — the removal
/// is refused, the object is written again with the note, then removed.
#[tokio::test]
async fn a_note_made_while_its_dead_letter_is_being_archived_is_archived_too() {
    let (env, _dir) = archive_env(|c| {
        c.dead_letter.max_len = 2;
        c.dead_letter.hard_max_len = 100;
    })
    .await;
    dead_letters(&env, 5).await;
    let oldest = env.broker.dlq_range(TENANT, "-", "+", 1).await.unwrap()[0]
        .id
        .clone();
    let mut a = archiver(&env);
    let broker = env.broker.clone();
    let id = oldest.clone();
    a.before_remove = Some(Box::new(move || {
        Box::pin(async move {
            let mv = crate::broker::ReviewMove {
                action: "note",
                arg: "customer called: keep this one",
                operator: "ops",
                reason: "note",
                command_id: "c-late-note",
            };
            broker
                .dlq_review(TENANT, &mv, &[id.as_str()])
                .await
                .unwrap();
        })
    }));
    let s = a.step().await;
    assert_eq!((s.batches, s.removed, s.failed), (1, 3, 0), "{s:?}");
    assert!(a.before_remove.is_none(), "the note landed mid-batch");
    // The dead letter left Redis; its archived copy carries the note.
    assert!(env
        .broker
        .dlq_review_records(TENANT, &[oldest.as_str()])
        .await
        .unwrap()[0]
        .is_none());
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    let (object, e) = read::find(&store, None, TENANT, &oldest)
        .await
        .unwrap()
        .expect("archived");
    let review = e.field("review").unwrap_or("");
    assert!(
        review.contains("customer called: keep this one"),
        "the note is in the archive ({object}): {review:?}"
    );
    // One object for the batch: written again under the same name, never a second one.
    let objects: Vec<_> = store
        .list(TENANT)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.path.ends_with(".jsonl.gz"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
}

/// A member whose lease another took over while it archived (its lease ran out mid-batch)
/// writes nothing more: its second pass (a note forced one) stops before uploading, and the
/// new holder finishes the batch with the note.
#[tokio::test]
async fn a_member_that_lost_its_lease_mid_batch_writes_nothing_more() {
    let (env, _dir) = archive_env(|c| {
        c.dead_letter.max_len = 2;
        c.dead_letter.hard_max_len = 100;
    })
    .await;
    dead_letters(&env, 5).await;
    let oldest = env.broker.dlq_range(TENANT, "-", "+", 1).await.unwrap()[0]
        .id
        .clone();
    let mut a = archiver(&env);
    let broker = env.broker.clone();
    let id = oldest.clone();
    let ttl = env.settings.archive.lease_ttl;
    a.before_remove = Some(Box::new(move || {
        Box::pin(async move {
            // a's lease runs out and another member takes the tenant; a note lands.
            broker.archive_lease_release(TENANT, MEMBER).await.unwrap();
            assert!(broker.archive_lease(TENANT, "other", ttl).await.unwrap());
            let mv = crate::broker::ReviewMove {
                action: "note",
                arg: "late note",
                operator: "ops",
                reason: "note",
                command_id: "c-late",
            };
            broker
                .dlq_review(TENANT, &mv, &[id.as_str()])
                .await
                .unwrap();
        })
    }));
    let s = a.step().await;
    assert_eq!((s.batches, s.removed, s.failed), (0, 0, 0), "{s:?}");
    assert_eq!(env.broker.dlq_len(TENANT).await.unwrap(), 5, "nothing left");
    assert!(env.broker.archive_pending(TENANT).await.unwrap().is_some());
    // The new holder finishes the same batch, with the note.
    let mut b = archiver(&env);
    b.token = "other".into();
    let s = b.step().await;
    assert_eq!((s.batches, s.removed, s.failed), (1, 3, 0), "{s:?}");
    let store = ArchiveStore::open(&env.settings.archive).unwrap();
    let (_, e) = read::find(&store, None, TENANT, &oldest)
        .await
        .unwrap()
        .expect("archived");
    assert!(e.field("review").unwrap_or("").contains("late note"));
}
