//! A real local Redis Cluster for tests: `masters × (1 + replicas)` redis-server processes
//! started with `--cluster-enabled yes` on free loopback ports (each its own directory, so its
//! own `nodes.conf`), joined by `redis-cli --cluster create … --cluster-replicas N
//! --cluster-yes`, and waited for (bounded) until every node says `cluster_state:ok` and knows
//! every other. Dropping it SIGKILLs and reaps every node and removes their directories.
//!
//! Its node queries speak RESP over a plain socket (no client library), so the harness can
//! look at one node while a test's cluster client talks to all of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redrive::testkit::RedisServer;

/// How long the cluster may take to form, and a failover to complete.
pub const FORM_LIMIT: Duration = Duration::from_secs(60);

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// Flagged `fail` (or `fail?`) by the node asked.
    pub failed: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// How many slots it serves (masters).
    pub slots: usize,
}

/// A running cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts and forms a cluster of `masters` masters with `replicas` replicas each.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let total = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    // Failures noticed in 2 s: a failover completes in a few seconds.
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ])
                .expect("start a cluster node")
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let cli = redis_cli(cluster.nodes[0].binary());
        let mut child = Command::new(&cli)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", cli.display()));
        let deadline = Instant::now() + FORM_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-cli --cluster create did not finish within {FORM_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut out);
        }
        assert!(status.success(), "redis-cli --cluster create failed: {out}");
        cluster.wait_formed(total, masters);
        cluster
    }

    /// Waits until every live node says `cluster_state:ok`, knows `total` nodes, sees every
    /// slot served by `masters` masters and every other node as a replica, and every replica's
    /// link to its master is up (so `WAIT` can count it).
    fn wait_formed(&self, total: usize, masters: usize) {
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            let formed = self.live_ports().iter().all(|&port| {
                let Ok(info) = command(port, &["CLUSTER", "INFO"]) else {
                    return false;
                };
                let Ok(nodes) = self.nodes_seen_by(port) else {
                    return false;
                };
                let me = nodes.iter().find(|n| n.port == port);
                let linked = match me {
                    Some(n) if !n.master => command(port, &["INFO", "replication"])
                        .is_ok_and(|i| i.contains("master_link_status:up")),
                    Some(_) => true,
                    None => false,
                };
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
                    && nodes.iter().filter(|n| n.master && n.slots > 0).count() == masters
                    && nodes.iter().filter(|n| n.master_id.is_some()).count() == total - masters
                    && linked
            });
            if formed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form within {FORM_LIMIT:?}: {:?}",
                self.live_ports()
                    .iter()
                    .map(|&p| command(p, &["CLUSTER", "INFO"]).unwrap_or_default())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URLs of every node (`redis://127.0.0.1:<port>`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(RedisServer::port)
            .collect()
    }

    /// The process ids of the nodes still running.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(RedisServer::pid).collect()
    }

    /// `CLUSTER NODES` as node `port` sees the cluster.
    pub fn nodes_seen_by(&self, port: u16) -> std::io::Result<Vec<NodeLine>> {
        Ok(parse_nodes(&command(port, &["CLUSTER", "NODES"])?))
    }

    /// The masters serving slots, as a live node sees them (failed ones left out).
    pub fn masters(&self) -> Vec<NodeLine> {
        let port = self.live_ports()[0];
        self.nodes_seen_by(port)
            .unwrap()
            .into_iter()
            .filter(|n| n.master && n.slots > 0 && !n.failed)
            .collect()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster");
        node.kill();
    }

    /// Waits until every live node says `cluster_state:ok` and `port` is a master serving
    /// slots in every live node's view (a promoted replica), within [`FORM_LIMIT`].
    pub fn wait_promoted(&self, port: u16) -> Duration {
        let started = Instant::now();
        loop {
            let done = self.live_ports().iter().all(|&p| {
                let ok =
                    command(p, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"));
                let promoted = self.nodes_seen_by(p).is_ok_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n.port == port && n.master && n.slots > 0 && !n.failed)
                });
                ok && promoted
            });
            if done {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < FORM_LIMIT,
                "node {port} was not promoted within {FORM_LIMIT:?}: {:?}",
                self.nodes_seen_by(port)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many keys node `port` holds.
    pub fn dbsize(&self, port: u16) -> u64 {
        command(port, &["DBSIZE"]).unwrap().trim().parse().unwrap()
    }
}

/// `redis-cli` beside the server binary (`valkey-cli` beside `valkey-server`), else on PATH.
fn redis_cli(server: &std::path::Path) -> PathBuf {
    let dir = server.parent().map(PathBuf::from).unwrap_or_default();
    for name in ["redis-cli", "valkey-cli"] {
        let beside = dir.join(name);
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("redis-cli")
}

/// Reads `CLUSTER NODES` text.
pub fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // `127.0.0.1:30001@40001[,hostname]`
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => {
                        b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                    }
                    None => 1,
                })
                .sum();
            Some(NodeLine {
                id: f[0].to_owned(),
                port,
                master: flags.split(',').any(|x| x == "master"),
                failed: flags.split(',').any(|x| x == "fail" || x == "fail?"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// One command to the node on `port` over a fresh plain connection: the reply as text (a
/// bulk or simple string, an integer's digits); an error reply is an `Err`.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let head = head.trim_end();
    let other = |m: String| std::io::Error::other(m);
    match head.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(head[1..].to_owned()),
        Some(b'-') => Err(other(head[1..].to_owned())),
        Some(b'$') => {
            let n: i64 = head[1..].parse().map_err(|_| other(head.to_owned()))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0u8; n as usize + 2];
            r.read_exact(&mut body)?;
            body.truncate(n as usize);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(other(format!("unexpected reply {head:?}"))),
    }
}
