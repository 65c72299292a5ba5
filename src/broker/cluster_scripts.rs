//! The fleet's Lua scripts on a real Redis Cluster (a private one of 3 masters, started here),
//! through the broker's own verbs, for a tenant on each master: each verb's state move is
//! asserted, and every master's MONITOR stream is read to check that each script run touched
//! keys of one slot only. Redis 7 lets a script without flags (the fleet's) touch a key of
//! another slot *on the same node* without an error, so only watching the commands a script
//! runs can catch that; keys on another node are refused by the server, which fails the verb.
//! Which scripts ran is read from the same streams (`EVALSHA <sha>`, matched with
//! `scripts::hashes`): every script file must have run, or be named in [`NOT_YET`], so a new
//! script without cluster coverage fails this test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::key_slot;
use super::scripts::{hashes, OOM_PROBE};
use super::*;
use crate::embedded::LocalCluster;
use crate::records::{TaskState, TasksSettings};
use crate::task::{now_ms, Limits, NewTask};

/// Script files this test does not run yet (each would still run on the cluster in the
/// `cluster` nextest profile's fleet, failure, isolation and admin tests, but without the
/// per-run slot check of this one). Empty: every script runs here; adding one needs a reason.
const NOT_YET: &[&str] = &[];

/// One master's MONITOR stream, collected by a thread until the socket is shut.
struct Monitor {
    stream: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim_end(), "+OK", "MONITOR on {port}");
        let sink = lines.clone();
        let thread = std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push(line.trim_end().to_owned());
                line.clear();
            }
        });
        Monitor {
            stream,
            lines,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<String> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// The quoted arguments of a MONITOR line (`+ts [db source] "CMD" "arg" …`), unescaped
/// enough to hash keys (`\"`, `\\`, `\xHH` kept as the byte), and whether a script ran it.
fn monitor_args(line: &str) -> (bool, Vec<Vec<u8>>) {
    let by_script = line.contains(" lua] ");
    let mut args = Vec::new();
    let Some(open) = line.find("] ") else {
        return (by_script, args);
    };
    let b = &line.as_bytes()[open + 2..];
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                match b[i + 1] {
                    b'x' if i + 3 < b.len() => {
                        let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("3f");
                        arg.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                        i += 4;
                    }
                    b'n' => {
                        arg.push(b'\n');
                        i += 2;
                    }
                    b'r' => {
                        arg.push(b'\r');
                        i += 2;
                    }
                    b't' => {
                        arg.push(b'\t');
                        i += 2;
                    }
                    c => {
                        arg.push(c);
                        i += 2;
                    }
                }
            } else {
                arg.push(b[i]);
                i += 1;
            }
        }
        args.push(arg);
        i += 1;
    }
    (by_script, args)
}

/// The script runs in one master's stream whose keys hash to more than one slot, as text. A
/// run is an `EVAL`/`EVALSHA` call (its declared keys) and the `lua` lines right after it (the
/// commands it ran: Redis logs the call, then what the script does, atomically). Key-like
/// arguments are those starting with `prefix`.
fn cross_slot_runs(lines: &[String], prefix: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut run: Vec<(u16, String)> = Vec::new();
    let mut check = |run: &mut Vec<(u16, String)>| {
        if run.iter().any(|(s, _)| *s != run[0].0) {
            bad.push(format!("{run:?}"));
        }
        run.clear();
    };
    let key_like = |a: &[u8]| a.starts_with(prefix.as_bytes());
    for line in lines {
        let (by_script, args) = monitor_args(line);
        if by_script {
            for a in args.iter().skip(1).filter(|a| key_like(a)) {
                run.push((key_slot(a), String::from_utf8_lossy(a).into_owned()));
            }
            continue;
        }
        check(&mut run);
        let is_call = args
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"EVALSHA") || c.eq_ignore_ascii_case(b"EVAL"));
        if is_call {
            let n: usize = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                .unwrap_or(0);
            for a in args.iter().skip(3).take(n).filter(|a| key_like(a)) {
                run.push((key_slot(a), String::from_utf8_lossy(a).into_owned()));
            }
        }
    }
    check(&mut run);
    bad
}

/// The script files whose SHA1 (or, for the key-less OOM probe sent with EVAL, whose text)
/// one of `lines` ran.
fn scripts_run(lines: &[String]) -> std::collections::BTreeSet<&'static str> {
    let table = hashes();
    let probe_head = &OOM_PROBE.as_bytes()[..OOM_PROBE.len().min(60)];
    let mut out = std::collections::BTreeSet::new();
    for line in lines {
        let (_, args) = monitor_args(line);
        let Some(cmd) = args.first() else { continue };
        if cmd.eq_ignore_ascii_case(b"EVALSHA") {
            let sha = String::from_utf8_lossy(args.get(1).map_or(&[][..], |a| a));
            if let Some((name, _)) = table.iter().find(|(_, h)| h.contains(&sha.to_string())) {
                out.insert(*name);
            }
        } else if cmd.eq_ignore_ascii_case(b"EVAL")
            && args.get(1).is_some_and(|s| s.starts_with(probe_head))
        {
            out.insert("oom_probe");
        }
    }
    out
}

/// Three tenant names whose slots are on three different masters of `cluster` (by the
/// cluster's even split: masters serve 0–5460, 5461–10921, 10922–16383).
fn tenant_per_master() -> Vec<String> {
    let per = 16_384 / 3;
    let mut picked: Vec<Option<String>> = vec![None, None, None];
    for i in 0..1_000 {
        let t = format!("t{i}");
        let m = (usize::from(key_slot(t.as_bytes())) / per).min(2);
        if picked[m].is_none() {
            picked[m] = Some(t);
        }
        if picked.iter().all(Option::is_some) {
            break;
        }
    }
    picked.into_iter().map(|t| t.unwrap()).collect()
}

/// A broker on the cluster at `url` under `prefix`, built from the broker's own settings (the
/// test stays below the config layer: `broker` does not depend on `config`).
async fn cluster_broker(url: &str, prefix: &str) -> Broker {
    super::connect::test_broker(url, prefix, true).await
}

/// Enqueues one task of kind `k` with its record through the verb the producer uses
/// (enqueue.lua); its task_id.
async fn enqueue(b: &Broker, t: &str, payload: serde_json::Value) -> String {
    let limits = Limits {
        max_payload_bytes: 1 << 20,
    };
    let task = NewTask::new(t, "k", payload)
        .into_task(&limits, now_ms())
        .unwrap();
    let a = b
        .enqueue(std::slice::from_ref(&task), &[t], &TasksSettings::default())
        .await
        .unwrap();
    assert!(
        matches!(a.landed.as_slice(), [Landed::Appended(_)]),
        "{t}: {:?}",
        a.landed
    );
    task.task_id
}

/// The dead-letter scripts on tenant `t`: four new dead letters (fingerprints fp1, fp1, fp2,
/// fp2) counted, paged, reviewed, folded, removed, archived and restored, each move asserted.
async fn dead_letter_scripts(b: &Broker, reader: &mut LaneReader, t: &str) {
    let on = StartRecords {
        on: true,
        refuse_done: false,
    };
    let mut task_ids = Vec::new();
    for i in 0..4 {
        task_ids.push(enqueue(b, t, serde_json::json!({ "d": i })).await);
    }
    let read = reader
        .read(&[b.keys().lane(t)], ReadFrom::New, 4, None)
        .await
        .unwrap();
    let entries: Vec<String> = read
        .into_iter()
        .flat_map(|(_, e)| e.into_iter().map(|e| e.id))
        .collect();
    assert_eq!(entries.len(), 4, "{t}");
    let starts: Vec<StartEntry<'_>> = entries
        .iter()
        .zip(&task_ids)
        .map(|(id, task_id)| StartEntry {
            id,
            task_id,
            attempt: 1,
            kind: "k",
            recorded: true,
        })
        .collect();
    assert_eq!(
        b.start(t, "m1", &starts, on).await.unwrap().started.len(),
        4
    );
    let mut dl = Vec::new();
    for (i, (e, task)) in entries.iter().zip(&task_ids).enumerate() {
        let fp = if i < 2 { "fp1" } else { "fp2" };
        let d = b
            .dead_letter(
                t,
                e,
                1_000,
                Some("m1"),
                Duration::ZERO,
                Some(task),
                true,
                None,
                &[("error", "boom".into()), ("fingerprint", fp.into())],
            )
            .await
            .unwrap();
        assert!(d.moved, "{t}: {d:?}");
        dl.push(d.id);
    }
    assert_eq!(b.dlq_len(t).await.unwrap(), 4, "{t}");
    // dlq_tally.lua: counted by fingerprint.
    let tally = b.dlq_tally(t, "-", "+", 100, "{}").await.unwrap();
    assert_eq!(tally.matched, 4, "{t}: {tally:?}");
    assert!(
        tally
            .fingerprints
            .iter()
            .any(|f| f.fingerprint == "fp1" && f.count == 2),
        "{t}: {tally:?}"
    );
    // dlq_page.lua: a filtered page with the review keys.
    let pages = b
        .dlq_pages(&[PageScan {
            tenant: t,
            newest_first: false,
            start: "-".into(),
            end: "+",
            budget: 100,
            want: 100,
            filter_json: r#"{"fingerprints":["fp2"]}"#,
            fields: &[],
            review: true,
        }])
        .await
        .unwrap();
    let ids: Vec<&str> = pages[0].matches.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [dl[2].as_str(), dl[3].as_str()], "{t}: {pages:?}");
    // dlq_counts.lua until whole, then dlq_counts_read.lua.
    let mut whole = false;
    for _ in 0..20 {
        if b.dlq_counts_step(t, 100).await.unwrap() == CountsStep::Ok {
            whole = true;
            break;
        }
    }
    assert!(whole, "{t}: the counts never became whole");
    let counts = b.dlq_counts_of(&[t.to_owned()]).await.unwrap();
    assert_eq!(
        counts[0].as_ref().map(|c| c.total),
        Some(4),
        "{t}: {counts:?}"
    );
    // dlq_unowned.lua: the oldest nobody owns; dlq_review.lua: assigned, the next is oldest.
    let tenant: Arc<str> = Arc::from(t);
    let unowned = b
        .dlq_unowned(std::slice::from_ref(&tenant), 100)
        .await
        .unwrap();
    assert_eq!(unowned, [Unowned::Found(dl[0].clone())], "{t}");
    let mv = ReviewMove {
        action: "assign",
        arg: "ann",
        operator: "ops",
        reason: "look",
        command_id: "c",
    };
    let reviewed = b.dlq_review(t, &mv, &[&dl[0]]).await.unwrap();
    assert_eq!(
        reviewed,
        ReviewOutcome::Done {
            moved: vec![(dl[0].clone(), true)],
            event: None
        },
        "{t}"
    );
    let unowned = b
        .dlq_unowned(std::slice::from_ref(&tenant), 100)
        .await
        .unwrap();
    assert_eq!(unowned, [Unowned::Found(dl[1].clone())], "{t}");
    // dlq_fold.lua: fp1 folded under its oldest; its other dead letter is owned now.
    let records = b.dlq_review_ids_of(t, "fp1").await.unwrap();
    let folded = b
        .dlq_fold(t, "fp1", &dl[0], "ops", "same", "c", &records)
        .await
        .unwrap();
    assert!(
        matches!(&folded, FoldOutcome::Folded { representative, .. } if *representative == dl[0]),
        "{t}: {folded:?}"
    );
    let unowned = b
        .dlq_unowned(std::slice::from_ref(&tenant), 100)
        .await
        .unwrap();
    assert_eq!(unowned, [Unowned::Found(dl[2].clone())], "{t}");
    // dlq_remove.lua: one resolved, into the stream of removed ones.
    let retention = Duration::from_secs(60);
    let target = |i: usize| RecordTarget {
        dlq_id: dl[i].clone(),
        task_id: Some(task_ids[i].clone()),
        kind: "k".into(),
        retention,
    };
    let removed = b
        .dlq_remove(
            t,
            &[target(2)],
            &Removal {
                action: "resolved",
                operator: "ops",
                reason: "fixed",
                command_id: "c",
            },
            10_000,
            true,
        )
        .await
        .unwrap();
    assert_eq!(removed.0, [dl[2].clone()], "{t}: {removed:?}");
    assert_eq!(b.dlq_len(t).await.unwrap(), 3, "{t}");
    // archive_lease.lua, archive_begin.lua, dlq_archived.lua: one dead letter archived.
    assert!(b.archive_lease(t, "tok", retention).await.unwrap());
    assert!(!b.archive_lease(t, "other", retention).await.unwrap());
    let batch = PendingBatch {
        source: ArchiveSource::Dlq,
        class: "dead_letter".into(),
        object: "obj1".into(),
        begun_ms: 1,
        ids: vec![dl[3].clone()],
    };
    assert_eq!(
        b.archive_begin(t, "tok", &batch).await.unwrap(),
        BatchBegin::Recorded
    );
    assert_eq!(
        b.archive_begin(t, "other", &batch).await.unwrap(),
        BatchBegin::NotLeased
    );
    let gone = b
        .archive_remove(
            t,
            ArchiveSource::Dlq,
            "obj1",
            &[ArchivedItem {
                source_id: dl[3].clone(),
                dead_letter_id: dl[3].clone(),
                task_id: Some(task_ids[3].clone()),
                retention,
                review: String::new(),
            }],
            true,
        )
        .await
        .unwrap();
    assert_eq!(gone, ArchiveRemoval::Removed(vec![dl[3].clone()], 1), "{t}");
    assert_eq!(b.dlq_len(t).await.unwrap(), 2, "{t}");
    assert!(b.archive_pending(t).await.unwrap().is_none(), "{t}");
    b.archive_lease_release(t, "tok").await.unwrap();
    // dlq_restore.lua: the archived one back, once.
    let item = RestoreItem {
        archived_id: dl[3].clone(),
        task_id: Some(task_ids[3].clone()),
        kind: "k".into(),
        fields: vec![
            (b"task_id".to_vec(), task_ids[3].clone().into_bytes()),
            (b"kind".to_vec(), b"k".to_vec()),
            (b"error".to_vec(), b"boom".to_vec()),
        ],
    };
    let restored = b
        .dlq_restore(t, 10_000, true, std::slice::from_ref(&item))
        .await
        .unwrap();
    assert!(
        matches!(restored[..], [RestoreOutcome::Restored(_)]),
        "{t}: {restored:?}"
    );
    let again = b
        .dlq_restore(t, 10_000, true, std::slice::from_ref(&item))
        .await
        .unwrap();
    assert!(
        matches!(again[..], [RestoreOutcome::Already(_)]),
        "{t}: {again:?}"
    );
    assert_eq!(b.dlq_len(t).await.unwrap(), 3, "{t}");
}

#[tokio::test]
async fn every_script_runs_on_a_cluster_in_its_tenants_slot() {
    let cluster = LocalCluster::start(3).unwrap();
    let prefix = format!("cs{}", fastrand::u32(..));
    let b = cluster_broker(&cluster.url(), &prefix).await;
    assert!(b.is_cluster());
    let monitors: Vec<Monitor> = cluster.ports().into_iter().map(Monitor::start).collect();
    let records = TasksSettings::default();
    let on = StartRecords {
        on: true,
        refuse_done: false,
    };
    let tenants = tenant_per_master();
    // Both builds of the acking scripts where the server has XACKDEL (Redis ≥ 8.2): the
    // tenants take turns between the broker as probed and one held to XACK + XDEL.
    let mut plain = b.clone();
    plain.server = Arc::new(super::server::ServerInfo {
        xackdel: false,
        ..b.server().clone()
    });
    let builds: Vec<Broker> = if b.server().xackdel {
        vec![b.clone(), plain]
    } else {
        vec![b.clone()]
    };

    // The detector catches what it must: a script touching a key of another slot on its own
    // node (allowed by the server without flags) is flagged below.
    let mut con = b.con();
    let tag = &tenants[0];
    let foreign = (0..10_000)
        .map(|i| format!("x{i}"))
        .find(|t| {
            key_slot(t.as_bytes()) != key_slot(tag.as_bytes())
                && usize::from(key_slot(t.as_bytes())) / (16_384 / 3)
                    == usize::from(key_slot(tag.as_bytes())) / (16_384 / 3)
        })
        .unwrap();
    let _: i64 = redis::Script::new("redis.call('SET', ARGV[1], 1) return 1")
        .key(format!("{prefix}:{{{tag}}}:probe"))
        .arg(format!("{prefix}:{{{foreign}}}:probe"))
        .invoke_async(&mut con)
        .await
        .unwrap();

    for (n, t) in tenants.iter().enumerate() {
        let acking = &builds[n % builds.len()];
        // enqueue.lua: four tasks with their records.
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(enqueue(&b, t, serde_json::json!({ "i": i })).await);
        }
        assert_eq!(b.lane_len(t).await.unwrap(), 6, "{t}");
        b.ensure_group(t).await.unwrap();
        let mut reader = b.reader("m1", Duration::from_millis(10)).await.unwrap();
        let read = reader
            .read(&[b.keys().lane(t)], ReadFrom::New, 6, None)
            .await
            .unwrap();
        let entries: Vec<String> = read
            .into_iter()
            .flat_map(|(_, e)| e.into_iter().map(|e| e.id))
            .collect();
        assert_eq!(entries.len(), 6);
        let task_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let starts: Vec<StartEntry<'_>> = entries
            .iter()
            .zip(&task_ids)
            .map(|(id, task_id)| StartEntry {
                id,
                task_id,
                attempt: 1,
                kind: "k",
                recorded: true,
            })
            .collect();
        // start.lua on four, start_fast.lua on two.
        let s = b.start(t, "m1", &starts[..4], on).await.unwrap();
        assert_eq!(s.started.len(), 4, "{t}: {s:?}");
        // (Entries without `recorded` go through the script, the others through XCLAIM.)
        let fast: Vec<StartEntry<'_>> = starts[4..]
            .iter()
            .map(|e| StartEntry {
                recorded: false,
                ..*e
            })
            .collect();
        let s = b.start_unclaimable(t, "m1", &fast, on).await.unwrap();
        assert_eq!(s.started.len(), 2, "{t}: {s:?}");
        // heartbeat.lua: still ours.
        let beat = b.heartbeat(t, "m1", &[&entries[0]]).await.unwrap();
        assert!(beat.taken.is_empty(), "{t}: {beat:?}");
        // ack.lua and fast_ack.lua: acked and deleted.
        let acked = acking
            .ack(t, "m1", &[AckEntry::bare(&entries[0])], 0, &[], true)
            .await
            .unwrap();
        assert_eq!(acked.acked, 1, "{t}");
        // fast_ack.lua puts this one's done in its done log (its entry carries the expiry of
        // its record); task_read.lua reads it back as done.
        let marked: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(b.keys().lane(t))
            .arg(&entries[1])
            .arg(&entries[1])
            .query_async(&mut b.con())
            .await
            .unwrap();
        let till: u64 = marked[0]
            .1
            .iter()
            .find(|(k, _)| k == "recorded")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap();
        let logged = AckEntry {
            task_id: task_ids[1],
            retention: Duration::from_secs(3_600),
            recorded: true,
            record_until: till,
            ..AckEntry::bare(&entries[1])
        };
        let acked = acking
            .ack_unclaimable(t, "m1", &[logged], 0, &[], true)
            .await
            .unwrap();
        assert_eq!(acked, 1, "{t}");
        assert_eq!(b.lane_len(t).await.unwrap(), 4, "{t}");
        let read = b.task_record(t, task_ids[1]).await.unwrap().unwrap();
        assert_eq!(read.record.state, Some(TaskState::Done), "{t}: {read:?}");
        assert_eq!(
            read.record.fields.get("member").map(String::as_str),
            Some("m1"),
            "{t}: {read:?}"
        );
        // retry.lua: out of the lane into the schedule; promote.lua: back.
        let due = acking
            .schedule_retry(
                t,
                "m1",
                &entries[2],
                Duration::ZERO,
                &[("attempt", "2".into())],
            )
            .await
            .unwrap();
        assert!(due.is_some(), "{t}");
        assert_eq!(b.retry_len(t).await.unwrap(), 1, "{t}");
        assert_eq!(b.lane_len(t).await.unwrap(), 3, "{t}");
        let promoted = b.promote_due(t, 10, true).await.unwrap();
        assert_eq!(promoted.moved, 1, "{t}: {promoted:?}");
        assert_eq!(b.retry_len(t).await.unwrap(), 0, "{t}");
        assert_eq!(b.lane_len(t).await.unwrap(), 4, "{t}");
        // defer.lua: held back into the deferred set.
        let deferred = b
            .defer(
                t,
                "m1",
                &[DeferItem {
                    entry_id: entries[3].clone(),
                    delay: Duration::from_secs(60),
                }],
                true,
            )
            .await
            .unwrap();
        assert!(matches!(deferred[0], Deferred::Due(_)), "{t}: {deferred:?}");
        assert_eq!(b.retry_len(t).await.unwrap(), 1, "{t}");
        // dead_letter.lua: to the dead letters.
        let dl = b
            .dead_letter(
                t,
                &entries[4],
                1_000,
                Some("m1"),
                Duration::ZERO,
                Some(task_ids[4]),
                true,
                None,
                &[("error", "boom".into())],
            )
            .await
            .unwrap();
        assert!(dl.moved, "{t}: {dl:?}");
        assert_eq!(b.dlq_len(t).await.unwrap(), 1, "{t}");
        // depths.lua (pipelined over the tenants below too).
        let d = b.tenant_depths(&[Arc::from(t.as_str())]).await.unwrap();
        assert_eq!(d[0].dlq, 1, "{t}: {d:?}");
        // replay.lua: the dead letter back into the lane.
        let dead = b.dlq_range(t, "-", "+", 10).await.unwrap();
        let replayed = b
            .replay(
                t,
                0,
                Duration::from_secs(60),
                true,
                &[ReplayItem {
                    dlq_id: dead[0].id.clone(),
                    task_id: Some(task_ids[4].to_owned()),
                    kind: "k".into(),
                    fields: vec![
                        ("task_id".into(), task_ids[4].to_owned()),
                        ("kind".into(), "k".into()),
                        ("payload".into(), "{}".into()),
                    ],
                }],
            )
            .await
            .unwrap();
        assert_eq!(replayed.1, 1, "{t}: {replayed:?}");
        assert_eq!(b.dlq_len(t).await.unwrap(), 0, "{t}");
        // dlq_purge.lua: a second dead letter deleted for good.
        let dl = b
            .dead_letter(
                t,
                &entries[5],
                1_000,
                Some("m1"),
                Duration::ZERO,
                Some(task_ids[5]),
                true,
                None,
                &[("error", "boom".into())],
            )
            .await
            .unwrap();
        assert!(dl.moved);
        let purged = b
            .dlq_purge_entries(
                t,
                &[RecordTarget {
                    dlq_id: dl.id.clone(),
                    task_id: Some(task_ids[5].to_owned()),
                    kind: "k".into(),
                    retention: Duration::from_secs(60),
                }],
                true,
            )
            .await
            .unwrap();
        assert_eq!(purged.0, 1, "{t}: {purged:?}");
        assert_eq!(b.dlq_len(t).await.unwrap(), 0, "{t}");
        // claim.lua: the member's own pending entries (the promoted and replayed ones are
        // new, not pending; the deferred one was acked): none left but what it holds.
        let fresh = reader
            .read(&[b.keys().lane(t)], ReadFrom::New, 10, None)
            .await
            .unwrap();
        let fresh: Vec<String> = fresh
            .into_iter()
            .flat_map(|(_, e)| e.into_iter().map(|e| e.id))
            .collect();
        assert_eq!(fresh.len(), 2, "{t}: the promoted and the replayed");
        let own = b.claim_own(t, "m1", "0-0", 10, 100, &[]).await.unwrap();
        assert_eq!(own.claimed.len(), 2, "{t}: {own:?}");
        // autoclaim.lua: another member takes them over; begin.lua re-delivers one there.
        let taken = b
            .reclaim(
                t,
                "m2",
                ReclaimScan {
                    min_idle: Duration::ZERO,
                    cursor: "0-0",
                    count: 10,
                    max_starts: 100,
                    skip: &[],
                },
            )
            .await
            .unwrap();
        assert_eq!(taken.claimed.len(), 2, "{t}: {taken:?}");
        let begun = b.begin(t, "m2", &fresh[0], on, Some("m1")).await.unwrap();
        assert!(matches!(begun, Begin::Run(_)), "{t}: {begun:?}");
        // step.lua: a checkpoint recorded while m2 owns the entry.
        let rec = b
            .record_steps(
                t,
                "m2",
                &fresh[1],
                &[super::steps::StepWrite::Done(crate::task::Step::completed(
                    "s1",
                    serde_json::json!(1),
                ))],
            )
            .await
            .unwrap();
        assert_eq!(rec, super::steps::StepsRecorded::Applied(1), "{t}");
        assert_eq!(
            b.recorded_steps(t, &fresh[1]).await.unwrap().len(),
            1,
            "{t}"
        );
        // slots.lua: two of three wanted under a cap of two.
        let grant = b
            .slots(t, "m1", 0, 3, 2, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!((grant.granted, grant.total), (2, 2), "{t}: {grant:?}");
        // stats_window.lua: the acks above are counted in this minute's bucket.
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 60;
        let sums = b
            .stats_sums(std::slice::from_ref(t), minute - 2, minute + 1)
            .await
            .unwrap();
        assert!(sums[0].values().sum::<u64>() > 0, "{t}: {sums:?}");
        // breaker_record.lua: opened by failures; breaker_probe.lua: past a zero cool-down the
        // caller holds the probe; breaker_probe_done.lua: its success closes the breaker.
        let th = crate::isolation::Thresholds {
            window: Duration::from_secs(60),
            min_failures: 1,
            failure_rate: 0.5,
            cooldown: Duration::ZERO,
        };
        // notify_tick.lua: the first tick takes the delivery lease and starts at the breaker
        // log's end.
        let tick = b
            .notify_tick(
                t,
                "m1",
                Duration::from_secs(30),
                Duration::ZERO,
                true,
                &["hook"],
            )
            .await
            .unwrap();
        assert!(tick.held && tick.depth == 0, "{t}: {tick:?}");
        let rec = b.breaker_record(t, 5, 5, &th, "m1").await.unwrap();
        assert!(rec.opened, "{t}: {rec:?}");
        assert_eq!(b.breaker_info(t).await.unwrap().state, "open", "{t}");
        let (verdict, _) = b
            .breaker_probe(t, "m1", &fresh[0], Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            matches!(verdict, ProbeVerdict::Probe { .. }),
            "{t}: {verdict:?}"
        );
        let (state, _) = b
            .breaker_probe_done(t, "m1", &fresh[0], Some(true), Duration::ZERO, "ok")
            .await
            .unwrap();
        assert_eq!(state, "closed", "{t}");
        // breaker_set.lua: held open by an operator.
        b.breaker_set(t, true, "ops", "test").await.unwrap();
        assert_eq!(b.breaker_info(t).await.unwrap().state, "open", "{t}");
        // notify_tick.lua: the transitions since (opened, closed, opened) into the outbox;
        // notify_ack.lua: the first sent, the target moves on to the next.
        let tick = b
            .notify_tick(
                t,
                "m1",
                Duration::from_secs(30),
                Duration::ZERO,
                true,
                &["hook"],
            )
            .await
            .unwrap();
        assert_eq!(tick.depth, 3, "{t}: {tick:?}");
        let first = tick.targets[0].next.clone().unwrap();
        assert_eq!(first.kind, "breaker_opened", "{t}: {tick:?}");
        let acked = b
            .notify_ack(
                t,
                "m1",
                Duration::from_secs(30),
                &Attempt {
                    target: "hook",
                    cursor: &tick.targets[0].cursor,
                    event: &first,
                    delivery: Delivery::Sent,
                    attempt: 1,
                    requested: false,
                    detail: "200",
                },
                100,
                &["hook"],
            )
            .await
            .unwrap();
        let next = acked.flatten().unwrap();
        assert_eq!(next.kind, "breaker_closed", "{t}: {next:?}");
        // records_sweep.lua: the index entry of a record gone (deleted here, and indexed as
        // created two minutes ago: the sweep looks only at entries older than the retention)
        // is removed.
        let _: i64 = redis::cmd("ZADD")
            .arg(b.keys().tasks(t))
            .arg("XX")
            .arg(crate::task::now_ms() - 120_000)
            .arg(task_ids[0])
            .query_async(&mut b.con())
            .await
            .unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(b.keys().task(t, task_ids[0]))
            .query_async(&mut b.con())
            .await
            .unwrap();
        let mut removed = 0;
        for _ in 0..20 {
            let step = b
                .records_sweep(t, 1_000, Duration::from_secs(60), &[], Duration::ZERO)
                .await
                .unwrap();
            removed += step.removed;
            if step.pass_done {
                break;
            }
        }
        assert_eq!(removed, 1, "{t}");
        dead_letter_scripts(&b, &mut reader, t).await;
    }
    // lease_renew.lua and lease_release.lua (the member's own key).
    assert!(b
        .acquire_lease("m1", "tok", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(b
        .renew_lease("m1", "tok", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(b.lease_remaining("m1").await.unwrap().unwrap() > Duration::from_secs(5));
    assert!(b.release_lease("m1", "tok").await.unwrap());
    assert_eq!(b.lease_remaining("m1").await.unwrap(), None);
    // admin_begin.lua, admin_beat.lua, admin_live.lua, admin_finish.lua, admin_withdraw.lua:
    // a command read from the admin stream by m1, run and finished; another withdrawn.
    b.admin_ensure_group().await.unwrap();
    let entry = b.admin_submit(&[("cmd", "noop".into())]).await.unwrap();
    let mut admin_reader = b.reader("m1", Duration::from_millis(10)).await.unwrap();
    let got = admin_reader
        .read(&[b.keys().admin_commands()], ReadFrom::New, 10, None)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|(_, e)| e.len()).sum::<usize>(), 1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let keep = Duration::from_secs(60);
    let begun = b
        .admin_begin("c1", &entry, "m1", now_ms + 60_000, keep, "[]")
        .await
        .unwrap();
    assert!(matches!(begun, BeginCommand::Run(_)), "{begun:?}");
    let lost = b
        .admin_beat(Some("m1"), keep, &[("c1".into(), entry.clone())])
        .await
        .unwrap();
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(b.admin_live_members(keep).await.unwrap(), vec!["m1"]);
    assert!(b
        .admin_finish(
            "c1",
            &entry,
            FinishMode::Result("{}"),
            keep,
            100,
            &[("by", "m1".into())]
        )
        .await
        .unwrap());
    let rec = b.admin_record("c1").await.unwrap().unwrap();
    assert_eq!(
        rec.get("state").map(String::as_str),
        Some("done"),
        "{rec:?}"
    );
    assert_eq!(b.admin_command_entry(&entry).await.unwrap(), None);
    assert_eq!(
        b.admin_withdraw("c2", keep).await.unwrap(),
        Withdraw::Withdrawn
    );
    let begun = b
        .admin_begin("c2", "0-1", "m1", 0, keep, "[]")
        .await
        .unwrap();
    assert!(matches!(begun, BeginCommand::Expired(_)), "{begun:?}");
    // session_open.lua and session_touch.lua.
    let opened = b
        .session_open("sid", "tok", "chk", "csrf", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(opened > 0);
    let touched = b
        .session_touch("sid", Duration::from_secs(60), Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (touched.csrf.as_str(), touched.created_ms),
        ("csrf", opened)
    );
    // job_cancel.lua: a running job gets the cancel request.
    b.job_set("j1", &[("state", "running".into())], &[])
        .await
        .unwrap();
    assert_eq!(
        b.job_cancel("j1", "c1").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(
        b.job_get("j1")
            .await
            .unwrap()
            .unwrap()
            .get("cancel")
            .map(String::as_str),
        Some("c1")
    );
    assert_eq!(b.job_cancel("nope", "c1").await.unwrap(), None);
    // oom_probe.lua, on every master.
    let check = b.write_check().await;
    assert!(
        check.refusing.is_empty() && check.unreachable.is_empty(),
        "{check:?}"
    );
    let _ = records;

    let streams: Vec<Vec<String>> = monitors.into_iter().map(Monitor::stop).collect();
    let mut ran = std::collections::BTreeSet::new();
    let shas: String = streams
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    for (name, builds_of) in hashes() {
        if ["ack", "fast_ack", "retry"].contains(&name) {
            let want = if b.server().xackdel { 2 } else { 1 };
            let seen = builds_of
                .iter()
                .filter(|h| shas.contains(h.as_str()))
                .count();
            assert_eq!(seen, want, "{name}: builds run on {}", b.server());
        }
    }
    let mut crossed = Vec::new();
    for (i, lines) in streams.iter().enumerate() {
        let on_master = scripts_run(lines);
        // The tenant verbs ran on each master (each has one of the tenants).
        for s in [
            "enqueue",
            "start",
            "ack",
            "retry",
            "promote",
            "dead_letter",
            "replay",
        ] {
            assert!(
                on_master.contains(s),
                "master {i} never ran {s}: {on_master:?}"
            );
        }
        ran.extend(on_master);
        crossed.extend(cross_slot_runs(lines, &prefix));
    }
    // The detector's own check: the one deliberate cross-slot run, nothing else.
    assert_eq!(
        crossed.len(),
        1,
        "script runs touching two slots: {crossed:#?}"
    );
    assert!(crossed[0].contains(&foreign), "{crossed:?}");
    // Coverage: every script file ran here, or is listed as not yet covered.
    let missing: Vec<&str> = hashes()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !ran.contains(n) && !NOT_YET.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "scripts without cluster coverage: {missing:?}"
    );
    let stale: Vec<&&str> = NOT_YET.iter().filter(|n| ran.contains(**n)).collect();
    assert!(
        stale.is_empty(),
        "covered now, remove from NOT_YET: {stale:?}"
    );
}

/// A pipeline over many tenants is split per master, not per slot: 300 tenants' reads cost
/// each master a couple of socket reads (`total_reads_processed`), not ~100, and the replies
/// come back in the order asked.
#[tokio::test]
async fn a_pipeline_over_many_tenants_costs_one_round_trip_per_master() {
    let cluster = LocalCluster::start(3).unwrap();
    let b = cluster_broker(&cluster.url(), "redrive").await;
    let mut con = b.con();
    let mut set = redis::pipe();
    for i in 0..300 {
        set.cmd("SET").arg(format!("p:{{t{i}}}:k")).arg(i).ignore();
    }
    let () = set.query_async(&mut con).await.unwrap();
    // Warm the slot map, then count.
    let _: Vec<Option<i64>> = redis::pipe()
        .cmd("GET")
        .arg("p:{t0}:k")
        .cmd("GET")
        .arg("p:{t1}:k")
        .query_async(&mut con)
        .await
        .unwrap();
    let ports = cluster.ports();
    for &p in &ports {
        crate::embedded::node_command(p, &["CONFIG", "RESETSTAT"]).unwrap();
    }
    let mut get = redis::pipe();
    for i in 0..300 {
        get.cmd("GET").arg(format!("p:{{t{i}}}:k"));
    }
    let got: Vec<i64> = get.query_async(&mut con).await.unwrap();
    assert_eq!(got, (0..300).collect::<Vec<i64>>());
    for &p in &ports {
        let stats = crate::embedded::node_command(p, &["INFO", "stats"]).unwrap();
        let reads: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap();
        // The pipeline's read(s) and this INFO's own.
        assert!(
            reads <= 4,
            "master {p}: {reads} socket reads for 300 tenants' GETs"
        );
    }
}
