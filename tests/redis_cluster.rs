//! The foundation of cluster mode: a real local Redis Cluster (3 masters + 3 replicas on
//! loopback ports, made by the harness with `redis-cli --cluster create`), written through the
//! redis crate's async cluster client. Keys of 100 tenant hash tags land on all three masters;
//! a master killed with SIGKILL is replaced by its replica, and the client finds every key
//! again without being restarted; dropping the cluster leaves no process behind.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{parse_nodes, RedisCluster, FORM_LIMIT};
use redis::AsyncCommands;

/// A lane key of tenant `i`, as redrive names it (`<prefix>:{<tenant>}:lane`): the hash tag
/// is the tenant.
fn lane(i: usize) -> String {
    format!("redrive:{{tenant-{i}}}:lane")
}

#[tokio::test]
async fn tenants_spread_over_three_masters_and_a_killed_master_is_replaced() {
    let mut cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let client = redis::cluster::ClusterClientBuilder::new(cluster.urls())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    for i in 0..100 {
        let _: String = con
            .xadd(lane(i), "*", &[("task_id", format!("t-{i}"))])
            .await
            .unwrap();
    }
    // Every master holds some of the tenants, and together exactly all of them.
    let held: Vec<(u16, u64)> = masters
        .iter()
        .map(|m| (m.port, cluster.dbsize(m.port)))
        .collect();
    assert!(held.iter().all(|(_, n)| *n > 0), "{held:?}");
    assert_eq!(held.iter().map(|(_, n)| n).sum::<u64>(), 100, "{held:?}");

    // Kill the first master once its writes are on its replica (WAIT), and wait for the
    // replica to take over.
    let victim = masters[0].clone();
    let seen = cluster.nodes_seen_by(victim.port).unwrap();
    let replica = seen
        .iter()
        .find(|n| n.master_id.as_deref() == Some(victim.id.as_str()))
        .unwrap_or_else(|| panic!("no replica of {victim:?} in {seen:?}"))
        .clone();
    let acked = common::cluster::command(victim.port, &["WAIT", "1", "5000"]).unwrap();
    assert_eq!(acked, "1", "the replica did not acknowledge the writes");
    let victim_keys = cluster.dbsize(victim.port);
    cluster.kill(victim.port);
    let took = cluster.wait_promoted(replica.port);
    eprintln!(
        "replica {} promoted {took:?} after the SIGKILL of {}",
        replica.port, victim.port
    );
    assert_eq!(cluster.dbsize(replica.port), victim_keys);

    // The same client, not restarted, reads every tenant's lane again (it follows the new
    // topology once the old master's connection fails and a MOVED points elsewhere).
    let deadline = Instant::now() + FORM_LIMIT;
    let mut missing = Vec::new();
    loop {
        missing.clear();
        for i in 0..100 {
            let n: redis::RedisResult<u64> = con.xlen(lane(i)).await;
            if n.ok() != Some(1) {
                missing.push(i);
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "tenants not readable after the failover: {missing:?}"
    );
    // And writes to the failed-over slots go to the promoted replica.
    let _: String = con
        .xadd(lane(0), "*", &[("task_id", "after")])
        .await
        .unwrap();

    // Dropping the cluster leaves no process behind.
    let pids = cluster.pids();
    assert_eq!(pids.len(), 5);
    drop(con);
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} outlived the cluster"
        );
    }
}

/// Two tenants whose hash tags map to slots on the same master (found by asking the
/// cluster), as `(tenant, tenant)`.
fn tenants_on_one_master(cluster: &RedisCluster) -> (String, String) {
    let port = cluster.masters()[0].port;
    let slot_of = |t: &str| {
        common::cluster::command(port, &["CLUSTER", "KEYSLOT", t])
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    let mine: Vec<String> = (0..200)
        .map(|i| format!("tenant-{i}"))
        .filter(|t| serves(port, slot_of(t)))
        .take(2)
        .collect();
    assert_eq!(mine.len(), 2, "two tenants on master {port}");
    (mine[0].clone(), mine[1].clone())
}

/// Whether the node on `port` serves `slot` (the slot ranges of its own `CLUSTER NODES`
/// line).
fn serves(port: u16, slot: u16) -> bool {
    let text = common::cluster::command(port, &["CLUSTER", "NODES"]).unwrap();
    text.lines()
        .filter(|l| l.contains("myself"))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(8)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.starts_with('['))
        .any(|r| match r.split_once('-') {
            Some((a, b)) => {
                (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
            }
            None => r.parse() == Ok(slot),
        })
}

/// What cluster mode (CLUSTER-PLAN.md) has to design around, checked on the real cluster:
/// one XREADGROUP over two tenants' lanes is refused (CROSSSLOT) even when both live on the
/// same master; a script that declares one tenant's key may write that tenant's other keys
/// built inside Lua (the stats bucket, records), but a `""` key beside a tenant key (what the
/// settle scripts get for the records prefix with records off) makes the call cross-slot.
#[tokio::test]
async fn what_cluster_mode_must_design_around() {
    let cluster = RedisCluster::start(3, 0);
    let (a, b) = tenants_on_one_master(&cluster);
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    let lane = |t: &str| format!("redrive:{{{t}}}:lane");
    for t in [&a, &b] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(lane(t))
            .arg("g")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let both: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("STREAMS")
        .arg(lane(&a))
        .arg(lane(&b))
        .arg(">")
        .arg(">")
        .query_async(&mut con)
        .await;
    // The client refuses it before sending; the server would too, on the master of both.
    let e = both.expect_err("a read over two tenants' lanes is cross-slot");
    assert_eq!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
        "{e}"
    );
    let port = cluster.masters()[0].port;
    let (la, lb) = (lane(&a), lane(&b));
    let refused = common::cluster::command(
        port,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            &la,
            &lb,
            ">",
            ">",
        ],
    )
    .expect_err("the server refuses it");
    assert!(refused.to_string().contains("CROSSSLOT"), "{refused}");

    let write_undeclared = redis::Script::new(
        "redis.call('HINCRBY', KEYS[2] .. '123', 'completed', 1) \
         return redis.call('XLEN', KEYS[1])",
    );
    let n: i64 = write_undeclared
        .key(lane(&a))
        .key(format!("redrive:{{{a}}}:stats:"))
        .invoke_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let counted: i64 = redis::cmd("HGET")
        .arg(format!("redrive:{{{a}}}:stats:123"))
        .arg("completed")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(counted, 1);
    let refused = common::cluster::command(
        port,
        &["EVAL", "return redis.call('XLEN', KEYS[1])", "2", &la, ""],
    )
    .expect_err("'' beside a tenant key is another slot");
    assert!(refused.to_string().contains("CROSSSLOT"), "{refused}");
}

#[test]
fn cluster_nodes_lines_are_read() {
    let text = "07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n\
                67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922\n\
                e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 12000 [13000-<-abc]\n\
                292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 disconnected\n";
    let nodes = parse_nodes(text);
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes[0].master_id.as_deref(), Some("e7d1"));
    assert!(!nodes[0].master && nodes[0].slots == 0);
    assert_eq!((nodes[1].port, nodes[1].slots), (30002, 5462));
    assert_eq!(nodes[2].slots, 5462);
    assert!(nodes[3].failed && nodes[3].master && nodes[3].slots == 0);
}

/// A fleet on a cluster: 100 tenants spread over the three masters, two members; every task
/// is processed once, and each tenant's poison task is a dead letter of that tenant and no
/// other. Records are on (enqueue.lua, start, ack, dead_letter with their records).
#[tokio::test]
async fn a_fleet_on_a_cluster_processes_100_tenants_and_dead_letters_in_the_right_tenant() {
    use common::TestEnv;
    use redrive::NewTask;
    use serde_json::json;

    let env = TestEnv::on_cluster();
    let tenants: Vec<String> = (0..100).map(|i| format!("tenant-{i}")).collect();
    let mut tasks = Vec::new();
    for t in &tenants {
        for i in 0..3 {
            tasks.push(
                NewTask::new(t, "test", json!({"simulate": "ok", "work_ms": 0}))
                    .with_task_id(format!("{t}-ok-{i}")),
            );
        }
        tasks.push(
            NewTask::new(
                t,
                "test",
                json!({"simulate": "malformed_output", "work_ms": 0}),
            )
            .with_task_id(format!("{t}-poison")),
        );
    }
    env.enqueue_tasks(tasks).await;
    let mut a = env.member("a", &[]);
    let mut b = env.member("b", &[]);
    let refs: Vec<&str> = tenants.iter().map(String::as_str).collect();
    env.wait_drained(&refs, Duration::from_secs(60)).await;
    common::eventually(Duration::from_secs(30), "300 side effects", || async {
        env.side_effects().len() >= 300
    })
    .await;
    let done = env.side_effects();
    let ids: std::collections::HashSet<&str> =
        done.iter().map(|(_, id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 300, "every good task ran");
    for (tenant, id, _, _) in &done {
        assert!(
            id.starts_with(&format!("{tenant}-ok-")),
            "{tenant} ran {id}"
        );
    }
    for t in &tenants {
        let dead = env.dead_letters(t).await;
        assert_eq!(dead.len(), 1, "{t}: {dead:?}");
        assert_eq!(dead[0]["task_id"], format!("{t}-poison"));
        assert_eq!(dead[0]["tenant"], *t);
    }
    assert!(a.stop().success(), "{}", a.log_text());
    assert!(b.stop().success(), "{}", b.log_text());
    // No loop of either member met a refusal of the cluster (a cross-slot call, a command
    // sent to the wrong node).
    for m in [&a, &b] {
        let log = m.log_text();
        for bad in ["CrossSlot", "CROSSSLOT", "redis call failed", "ERROR"] {
            assert!(!log.contains(bad), "member {}: {bad}\n{log}", m.id);
        }
    }
}
