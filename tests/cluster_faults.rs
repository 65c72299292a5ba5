//! Faults of a Redis Cluster under load (issue 16 item 4): a master SIGKILLed while a producer
//! enqueues and a fleet drains, with and without `redis.wait_replicas`. The fleet recovers
//! by itself (no member is restarted). With WAIT on, every enqueue the producer saw succeed
//! ends done or dead-lettered; with WAIT off, the test names every acknowledged task that
//! was lost and checks each was acknowledged within the window asynchronous replication
//! leaves open (README "Replication and failover"). A busy tenant's slot migrated under load
//! loses nothing and runs nothing twice; on one server, writes whose replica is gone are
//! counted short and still succeed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestEnv;
use redrive::{NewTask, TaskState};
use serde_json::json;

/// The harness's `--cluster-node-timeout`: the documented bound of the loss window with WAIT
/// off (a master cut off, not killed, accepts writes for this long before it steps down; a
/// killed one loses what its replica had not received, well inside it).
const NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// One task the producer tried: when its enqueue answered, and whether it succeeded.
#[derive(Debug, Clone)]
struct Sent {
    tenant: String,
    task_id: String,
    acked_at: Instant,
    ok: bool,
    /// The error of a failed enqueue.
    error: Option<String>,
}

/// Enqueues one task at a time over `tenants` from `loops` concurrent loops until `stop`.
fn start_producing(
    env: &TestEnv,
    tenants: Vec<String>,
    loops: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Sent>>>, Vec<tokio::task::JoinHandle<()>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let settings = env.settings();
    let handles = (0..loops)
        .map(|l| {
            let sent = sent.clone();
            let stop = stop.clone();
            let tenants = tenants.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                let broker = redrive::Broker::connect(&settings).await.unwrap();
                let producer = redrive::Producer::new(broker, &settings);
                let mut i = 0usize;
                let deadline = Instant::now() + Duration::from_secs(90);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let tenant = &tenants[(i + l) % tenants.len()];
                    let task_id = format!("p{l}-{i}");
                    let task =
                        NewTask::new(tenant, "test", json!({"simulate": "ok", "work_ms": 0}))
                            .with_task_id(&task_id);
                    let got = producer.enqueue(task).await;
                    let ok = got.is_ok();
                    sent.lock().unwrap().push(Sent {
                        tenant: tenant.clone(),
                        task_id,
                        acked_at: Instant::now(),
                        ok,
                        error: got.err().map(|e| e.to_string()),
                    });
                    i += 1;
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    (sent, handles)
}

/// What became of the acknowledged tasks: those whose record is not done or dead-lettered
/// once the fleet had time to drain (state, or `None` for no record at all).
async fn unfinished(
    env: &TestEnv,
    acked: &[Sent],
    limit: Duration,
) -> Vec<(Sent, Option<TaskState>)> {
    let producer = env.producer().await;
    let deadline = Instant::now() + limit;
    loop {
        let mut left = Vec::new();
        for s in acked {
            let state = match producer.task(&s.tenant, &s.task_id).await {
                Ok(r) => r.and_then(|r| r.state),
                Err(_) => Some(TaskState::Queued),
            };
            if !matches!(state, Some(TaskState::Done | TaskState::DeadLettered)) {
                left.push((s.clone(), state));
            }
        }
        // A task with no record at all is gone: waiting does not bring it back. Others may
        // still be on their way (reclaimed after the failover).
        let waiting = left.iter().any(|(_, st)| st.is_some());
        if !waiting || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Kills the master of the first tenant under load, lets the fleet recover, and returns the
/// acknowledged tasks that did not end done or dead-lettered, with how long before the kill
/// each was acknowledged (negative: after it).
async fn kill_a_master_under_load(wait: bool) -> (Vec<(Sent, Option<TaskState>, f64)>, usize) {
    let mut env = TestEnv::on_cluster();
    if wait {
        env.set_redis("wait_replicas", "1");
        // Bounded, but long enough that a loaded 2-core machine's replica answers in time.
        env.set_redis("wait_timeout_ms", "1000");
    }
    let tenants: Vec<String> = (0..12).map(|i| format!("fo-{i}")).collect();
    // The lease outlives the failover (README: fleet.lease_ttl_ms above the failover time),
    // so no member stops for a lease renewal lost with the killed master.
    let member_env = [
        ("REDRIVE_FLEET__LEASE_TTL_MS", "15000"),
        ("REDRIVE_RECLAIM__MIN_IDLE_MS", "3000"),
    ];
    let mut a = env.member("a", &member_env);
    let mut b = env.member("b", &member_env);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, loops) = start_producing(&env, tenants.clone(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The master of the first tenant, and its replica.
    let cluster = env.cluster.as_mut().unwrap();
    let slot = redrive::testkit::key_slot(&format!("{{{}}}", tenants[0]));
    let masters = cluster.masters();
    let port = *cluster.live_ports().first().unwrap();
    let victim = masters
        .iter()
        .find(|m| serves(port, m.port, slot))
        .cloned()
        .expect("a master serves the tenant's slot");
    let replica = cluster
        .nodes_seen_by(victim.port)
        .unwrap()
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(victim.id.as_str()))
        .expect("the victim has a replica");
    cluster.kill(victim.port);
    let killed_at = Instant::now();
    let took = cluster.wait_promoted(replica.port);
    eprintln!(
        "killed master {} under load; replica {} promoted after {took:?}",
        victim.port, replica.port
    );
    // Load goes on after the failover, then stops.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let acked: Vec<Sent> = sent.iter().filter(|s| s.ok).cloned().collect();
    let failed = sent.len() - acked.len();
    eprintln!(
        "{} enqueues acknowledged, {failed} failed (not acknowledged)",
        acked.len()
    );
    for s in sent.iter().filter(|s| !s.ok).take(5) {
        eprintln!("enqueue of {} failed: {:?}", s.task_id, s.error);
    }
    assert!(acked.len() > 50, "too little load: {}", acked.len());
    let after: Vec<&Sent> = acked
        .iter()
        .filter(|s| s.acked_at > killed_at + took)
        .collect();
    assert!(!after.is_empty(), "no enqueue succeeded after the failover");

    let left = unfinished(&env, &acked, Duration::from_secs(40)).await;
    // The fleet recovered by itself: both members still run.
    assert!(a.try_exit().is_none(), "member a stopped: {}", a.log_text());
    assert!(b.try_exit().is_none(), "member b stopped: {}", b.log_text());
    let out = left
        .into_iter()
        .map(|(s, st)| {
            let before = if s.acked_at <= killed_at {
                (killed_at - s.acked_at).as_secs_f64()
            } else {
                -(s.acked_at - killed_at).as_secs_f64()
            };
            (s, st, before)
        })
        .collect();
    a.stop();
    b.stop();
    (out, acked.len())
}

/// Whether master `master` serves `slot`, as node `asked` says (CLUSTER SLOTS ranges read from
/// CLUSTER NODES lines).
fn serves(asked: u16, master: u16, slot: u16) -> bool {
    let text = common::cluster::command(asked, &["CLUSTER", "NODES"]).unwrap();
    text.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = f
            .get(1)
            .and_then(|a| a.split('@').next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok());
        port == Some(master)
            && f.iter().skip(8).any(|r| match r.split_once('-') {
                Some((lo, hi)) => {
                    lo.parse::<u16>().is_ok_and(|lo| lo <= slot)
                        && hi.parse::<u16>().is_ok_and(|hi| slot <= hi)
                }
                None => r.parse::<u16>() == Ok(slot),
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_with_wait_on_loses_no_acknowledged_enqueue() {
    let (left, acked) = kill_a_master_under_load(true).await;
    for (s, state, before) in &left {
        eprintln!(
            "NOT FINISHED {} {} state {state:?}, acknowledged {before:.3} s before the kill",
            s.tenant, s.task_id
        );
    }
    assert!(
        left.is_empty(),
        "with redis.wait_replicas = 1, {} of {acked} acknowledged enqueues did not end done or \
         dead-lettered: {left:?}",
        left.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_with_wait_off_loses_only_inside_the_window() {
    let (left, acked) = kill_a_master_under_load(false).await;
    let mut by_state: HashMap<String, usize> = HashMap::new();
    for (s, state, before) in &left {
        eprintln!(
            "LOST {} {} (state {state:?}), acknowledged {before:.3} s before the kill",
            s.tenant, s.task_id
        );
        *by_state.entry(format!("{state:?}")).or_default() += 1;
    }
    eprintln!(
        "WAIT off: {} of {acked} acknowledged enqueues lost: {by_state:?}",
        left.len()
    );
    // A loss is an acknowledged task with no record at all (its enqueue never reached the
    // replica), acknowledged by the killed master shortly before it died: never a task
    // acknowledged after the kill, nor long before it, nor one stuck in another state.
    for (s, state, before) in &left {
        assert!(
            state.is_none(),
            "{} {} is stuck in {state:?}, not lost",
            s.tenant,
            s.task_id
        );
        assert!(
            *before >= 0.0 && *before <= NODE_TIMEOUT.as_secs_f64(),
            "{} {} was lost but acknowledged {before:.3} s before the kill, outside the window",
            s.tenant,
            s.task_id
        );
    }
}

/// A plain (non-cluster) connection to one node, for the slot-migration commands.
async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Moves `slot` from master `src` to master `dst` by hand, as `redis-cli --cluster reshard`
/// does: IMPORTING on the target, MIGRATING on the source, MIGRATE of the keys in batches
/// until none is left, then the slot given to the target everywhere. Returns the keys moved
/// and the MIGRATE refusals met (a key already on the target: BUSYKEY).
async fn migrate_slot(
    slot: u16,
    (src, src_id): (u16, &str),
    (dst, dst_id): (u16, &str),
    others: &[u16],
) -> (usize, Vec<String>) {
    let (mut s, mut d) = (node(src).await, node(dst).await);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(src_id)
        .query_async(&mut d)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(dst_id)
        .query_async(&mut s)
        .await
        .unwrap();
    let mut moved = 0;
    let mut refusals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(10)
            .query_async(&mut s)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut m = redis::cmd("MIGRATE");
        m.arg("127.0.0.1")
            .arg(dst)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for k in &keys {
            m.arg(k);
        }
        match m.query_async::<redis::Value>(&mut s).await {
            Ok(_) => moved += keys.len(),
            Err(e) => {
                refusals.push(e.to_string());
                break;
            }
        }
        // Batches apart, so that scripts run while the slot is split between the nodes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for port in [dst, src].iter().chain(others) {
        let mut c = node(*port).await;
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(dst_id)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    (moved, refusals)
}

/// A busy tenant's slot migrated to another master, in batches, while a producer enqueues to
/// it and two members drain it: every acknowledged task ends done, and ran exactly once (the
/// side-effect log), with no member restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenants_slot_migrated_under_load_loses_nothing() {
    let env = TestEnv::on_cluster();
    let busy = "rs-busy".to_owned();
    let member_env = [("REDRIVE_FLEET__LEASE_TTL_MS", "15000")];
    let mut a = env.member("a", &member_env);
    let mut b = env.member("b", &member_env);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, loops) = start_producing(&env, vec![busy.clone()], 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let cluster = env.cluster.as_ref().unwrap();
    let slot = redrive::testkit::key_slot(&format!("{{{busy}}}"));
    let masters = cluster.masters();
    let port = *cluster.live_ports().first().unwrap();
    let src = masters
        .iter()
        .find(|m| serves(port, m.port, slot))
        .cloned()
        .expect("a master serves the tenant's slot");
    let dst = masters
        .iter()
        .find(|m| m.port != src.port)
        .cloned()
        .unwrap();
    let others: Vec<u16> = masters
        .iter()
        .map(|m| m.port)
        .filter(|p| *p != src.port && *p != dst.port)
        .collect();
    let (moved, refusals) =
        migrate_slot(slot, (src.port, &src.id), (dst.port, &dst.id), &others).await;
    eprintln!(
        "slot {slot} of {busy}: {moved} keys moved from {} to {}; refusals: {refusals:?}",
        src.port, dst.port
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert!(serves(port, dst.port, slot), "the slot did not move");
    let sent = sent.lock().unwrap().clone();
    let acked: Vec<Sent> = sent.iter().filter(|s| s.ok).cloned().collect();
    eprintln!(
        "{} enqueues acknowledged, {} failed",
        acked.len(),
        sent.len() - acked.len()
    );
    for s in sent.iter().filter(|s| !s.ok) {
        eprintln!("enqueue of {} failed: {:?}", s.task_id, s.error);
    }
    // What the members met while the slot moved (settle retries and their causes).
    for (m, log) in [("a", a.log_text()), ("b", b.log_text())] {
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(10)
        {
            eprintln!("member {m}: {line}");
        }
    }
    assert!(
        moved > 0 && acked.len() > 50,
        "moved {moved}, acked {}",
        acked.len()
    );
    let left = unfinished(&env, &acked, Duration::from_secs(30)).await;
    for (s, st) in &left {
        eprintln!("NOT DONE {} {} {st:?}", s.tenant, s.task_id);
    }
    let log_a = a.log_text();
    let log_b = b.log_text();
    assert!(
        a.try_exit().is_none() && b.try_exit().is_none(),
        "a member stopped:\n{log_a}\n{log_b}"
    );
    assert!(
        left.is_empty(),
        "{} of {} acknowledged tasks not done: {left:?}",
        left.len(),
        acked.len()
    );
    assert!(refusals.is_empty(), "MIGRATE refused: {refusals:?}");
    // Each ran exactly once.
    let effects = env.side_effects();
    let runs = common::counts(effects.iter().map(|(_, id, _, _)| id.as_str()));
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    let never: Vec<&str> = acked
        .iter()
        .map(|s| s.task_id.as_str())
        .filter(|id| !runs.contains_key(id))
        .collect();
    assert!(never.is_empty(), "acknowledged but never ran: {never:?}");
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    a.stop();
    b.stop();
}

/// The sum of a counter's series with `label` in the metrics text.
fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `redis.wait_replicas = 1` on one server with a replica: enqueues and settles are confirmed
/// (nothing counted short). With the replica gone, enqueues still succeed and the fleet still
/// drains, but every write's WAIT comes back short: counted by what it was for, and logged.
#[tokio::test]
async fn writes_whose_replica_is_gone_are_counted_short_and_still_succeed() {
    let mut env = TestEnv::single();
    env.set_redis("wait_replicas", "1");
    // Long enough that a linked replica answers in time on a loaded machine (a WAIT that times
    // out while the replica is up counts short too).
    env.set_redis("wait_timeout_ms", "1000");
    let server_port = env
        .redis
        .as_ref()
        .expect("TestEnv::single starts a server")
        .port();
    let port = server_port.to_string();
    let mut replica =
        redrive::testkit::RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).unwrap();
    common::eventually(Duration::from_secs(20), "the replica linked", || async {
        common::cluster::command(server_port, &["WAIT", "1", "100"]).is_ok_and(|n| n == "1")
    })
    .await;
    let mut m = env.member("m", &[("REDRIVE_METRICS__LISTEN", "127.0.0.1:0")]);
    let addr = m.metrics_addr();
    env.enqueue("acme", 20, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    env.wait_drained(&["acme"], Duration::from_secs(30)).await;
    let metrics = common::http_get(&addr, "/metrics").1;
    assert!(
        metrics.contains("redrive_redis_wait_short_total"),
        "{metrics}"
    );
    let short = |m: &str, what: &str| {
        counter(
            m,
            "redrive_redis_wait_short_total",
            &format!("what=\"{what}\""),
        )
    };
    assert_eq!(short(&metrics, "settle"), 0.0, "{metrics}");

    // The replica gone: the writes stand, their WAITs come back short.
    replica.kill();
    // Another tenant: the harness's task ids (`<tenant>-<i>`) of acme are done, and would be
    // refused as duplicates.
    let ids = env
        .enqueue("beta", 10, json!({"simulate": "ok", "work_ms": 0}))
        .await;
    assert_eq!(ids.len(), 10);
    env.wait_drained(&["beta"], Duration::from_secs(30)).await;
    common::eventually(Duration::from_secs(10), "settles counted short", || async {
        short(&common::http_get(&addr, "/metrics").1, "settle") >= 1.0
    })
    .await;
    let done = env.side_effects();
    assert_eq!(done.len(), 30, "{done:?}");
    assert!(m.stop().success());
    let log = m.log_text();
    assert!(
        log.contains("write not confirmed by enough replicas") && log.contains("what=\"settle\""),
        "{log}"
    );
}
