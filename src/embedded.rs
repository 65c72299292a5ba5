//! A private `redis-server` child on a free loopback port, for `redrive demo`, `redrive bench`
//! and the test harness. It is killed and its directory removed when the value is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to install redis-server, said wherever it is missing.
pub const INSTALL_HINT: &str =
    "install it with `apt-get install -y redis-server` (or run scripts/setup.sh), \
or set REDRIVE_REDIS_URL to use a server you already run";

/// A redis-server child process owned by this value.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    extra_args: Vec<String>,
    tls: Option<ServerTls>,
}

/// The TLS files of a server that listens with TLS only (`--port 0 --tls-port <port>`): its
/// certificate and key, the authority clients' certificates are checked against, and whether
/// clients must present one.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (PEM).
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM).
    pub key_file: PathBuf,
    /// The authority client certificates must chain to (PEM; redis-server requires one).
    pub ca_file: PathBuf,
    /// `--tls-auth-clients yes` (mutual TLS) or `no`.
    pub auth_clients: bool,
}

/// Finds the redis-server binary: `REDRIVE_REDIS_SERVER`, else `redis-server` on PATH.
pub fn find_redis_server() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REDRIVE_REDIS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(Error::Embedded(format!(
            "REDRIVE_REDIS_SERVER points at {}, which is not a file",
            p.display()
        )));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
    {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Embedded(format!(
        "redis-server was not found on PATH; {INSTALL_HINT}"
    )))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("finding a free loopback port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free loopback port", e))
}

fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server with persistence off.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (for example `--appendonly yes`).
    pub fn start_with(extra_args: &[&str]) -> Result<RedisServer> {
        RedisServer::start_inner(extra_args, None)
    }

    /// Starts a server that speaks TLS only, with `tls`'s files, and extra arguments (for
    /// example `--requirepass`). Its [`url`](RedisServer::url) is `rediss://`.
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub fn start_tls(tls: ServerTls, extra_args: &[&str]) -> Result<RedisServer> {
        RedisServer::start_inner(extra_args, Some(tls))
    }

    fn start_inner(extra_args: &[&str], tls: Option<ServerTls>) -> Result<RedisServer> {
        let binary = find_redis_server()?;
        let dir = std::env::temp_dir().join(format!(
            "redrive-redis-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            binary,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        let mut last_err = None;
        // The port is free when chosen but another process may take it before redis-server
        // binds it; a few attempts make that race harmless.
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Embedded("redis-server did not start".into())))
    }

    fn spawn(&mut self) -> Result<()> {
        // A failed attempt's log must not answer for this one.
        let _ = std::fs::remove_file(self.dir.join("redis.log"));
        let mut cmd = Command::new(&self.binary);
        match &self.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert_file)
                    .arg("--tls-key-file")
                    .arg(&tls.key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca_file)
                    .args([
                        "--tls-auth-clients",
                        if tls.auth_clients { "yes" } else { "no" },
                    ]);
            }
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args([
                "--maxmemory-policy",
                "noeviction",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.binary.display()), e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = self.dir.join("redis.log");
        loop {
            let up = match self.tls {
                None => ping(self.port),
                // No plain port to PING: the server says when it listens (it has nothing to
                // load, persistence being off).
                Some(_) => std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Ready to accept connections")),
            };
            if up {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(Error::Embedded(format!(
                    "redis-server exited with {status} on port {}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Embedded(format!(
                    "redis-server on port {} did not answer PING within 10 s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for it: `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server process's id while it runs.
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The binary this server runs (its `redis-cli` is looked for beside it).
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Redis Cluster of masters only (no replicas), for `redrive bench --cluster` and
/// the `shards` scenario: `masters` redis-servers started with `--cluster-enabled yes` on free
/// loopback ports, each its own directory (own `nodes.conf`), the 16,384 slots split evenly
/// (`CLUSTER ADDSLOTSRANGE`, Redis ≥ 7.0), joined by `CLUSTER MEET`, and waited for (bounded)
/// until every node says `cluster_state:ok` and knows every other. Dropping it kills every node.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<RedisServer>,
}

/// How long a private cluster may take to form.
const CLUSTER_FORM_LIMIT: Duration = Duration::from_secs(60);

impl LocalCluster {
    /// Starts and forms a cluster of `masters` masters.
    pub fn start(masters: usize) -> Result<LocalCluster> {
        let masters = masters.max(1);
        let nodes = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let cluster = LocalCluster { nodes };
        let per = 16_384 / masters;
        for (i, node) in cluster.nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == masters {
                16_383
            } else {
                first + per - 1
            };
            node_command(
                node.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let seed = cluster.nodes[0].port();
        for node in &cluster.nodes[1..] {
            node_command(
                seed,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()],
            )?;
        }
        let deadline = Instant::now() + CLUSTER_FORM_LIMIT;
        let known = format!("cluster_known_nodes:{masters}");
        loop {
            let formed = cluster.nodes.iter().all(|n| {
                node_command(n.port(), &["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok")
                        && i.contains("cluster_slots_ok:16384")
                        && i.contains(&known)
                })
            });
            if formed {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(Error::Embedded(format!(
                    "the private cluster of {masters} masters did not form within {CLUSTER_FORM_LIMIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' loopback ports, in slot order (the first serves slot 0).
    #[cfg(test)]
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The seed URLs of every node, comma-separated (`redis.url` in cluster mode).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One command to the node on loopback `port` over a fresh plain connection: the reply as text
/// (a bulk or simple string, an integer's digits); an error reply is an error.
pub(crate) fn node_command(port: u16, args: &[&str]) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let io = |e: std::io::Error| Error::io(format!("talking to the cluster node on {port}"), e);
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
        .map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).map_err(io)?;
    let head = head.trim_end();
    let refused = |m: &str| Error::Embedded(format!("node {port} answered {args:?} with {m}"));
    match head.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(head[1..].to_owned()),
        Some(b'$') => {
            let n: i64 = head[1..].parse().map_err(|_| refused(head))?;
            let Ok(n) = usize::try_from(n) else {
                return Ok(String::new());
            };
            let mut body = vec![0u8; n + 2];
            r.read_exact(&mut body).map_err(io)?;
            body.truncate(n);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(refused(head)),
    }
}
