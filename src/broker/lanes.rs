//! Lanes, the tenants' streams: enqueue (pipelined or all-or-nothing, through enqueue.lua when
//! task records are on: duplicate refusal), the tenant registry,
//! the fleet's consumer group on each lane, blocking reads on a dedicated connection
//! ([`LaneReader`]), and what a lane holds (length, pending, one entry, the depth figures).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::conn::Conn;
use super::connect::Broker;
use super::error::{bounded, is_code, pipeline_refused, refused, refused_in_part};
use super::reply::{self, Entry};
use super::scripts::scripts;
use super::stats::stats_keep_ms;
use crate::error::{Error, Result};
use crate::records::TaskState;
use crate::records::TasksSettings;
use crate::task::Task;

/// One tenant's depth figures, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDepth {
    /// The tenant.
    pub tenant: Arc<str>,
    /// Entries in the lane (waiting or pending).
    pub lane: u64,
    /// Entries delivered and not settled.
    pub pending: u64,
    /// Entries not yet delivered to the group.
    pub lag: u64,
    /// Scheduled retries.
    pub retries: u64,
    /// Scheduled retries already due.
    pub overdue: u64,
    /// Dead letters.
    pub dlq: u64,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries never delivered to the group (`>`).
    New,
}

/// A dedicated connection for one member's XREADGROUP calls.
///
/// On one Redis, one XREADGROUP over every lane of the read, blocking while all are empty. On
/// a cluster that read is cross-slot (each tenant is its own slot), so the reader sends one
/// non-blocking XREADGROUP per lane, pipelined (split per slot, so per master, sent to every
/// master at once) on a cluster connection of its own; while all are empty it waits, instead
/// of blocking in Redis, for a wake ([`Broker::unblock`]: an entry signal from a producer, a new
/// tenant) or `block` at most, the fallback poll.
pub struct LaneReader {
    conn: ReadConn,
    group: Arc<str>,
    consumer: String,
    client_id: u64,
    /// On a cluster: what ends the wait of an empty read.
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// A reader's connection: its own to one Redis over TCP or a Unix socket (a reply parser made
/// for stream reads, stream_read.rs), else the client's (TLS, a cluster).
enum ReadConn {
    Own(super::stream_read::StreamConn),
    Client(Conn),
}

/// A subscription to the tenant announcements, from [`Broker::tenant_signals`] (on a
/// cluster also to the entry signals).
pub struct TenantSignals {
    sink: redis::aio::PubSubSink,
    stream: redis::aio::PubSubStream,
    /// The channel of entry signals, on a cluster.
    entries: Option<String>,
}

/// What a subscription heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// New tenants, as the producer wrote them (the registry stays the truth).
    Tenants(String),
    /// On a cluster: new entries in the lanes of these tenants.
    Entries(String),
}

impl TenantSignals {
    /// The next announcement. `None` once the connection is gone: subscribe again.
    pub(crate) async fn next(&mut self) -> Option<Signal> {
        use futures_util::StreamExt;
        let msg = self.stream.next().await?;
        let text = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
        if self.entries.as_deref() == Some(msg.get_channel_name()) {
            Some(Signal::Entries(text))
        } else {
            Some(Signal::Tenants(text))
        }
    }

    /// Checks that the subscription's connection still answers, within `timeout`.
    pub(crate) async fn ping(&mut self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.sink.ping::<Value>()).await {
            Ok(r) => r.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::Timeout(format!(
                "the tenant announcements' connection did not answer a PING within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

impl LaneReader {
    /// This connection's id on the server (`CLIENT ID`), for [`Broker::unblock`].
    pub(crate) fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Reads up to `count` entries from each of `lanes` (stream keys). With `block`, waits up to
    /// that long when none has anything. Returns `(lane key, entries)` pairs with entries.
    pub(crate) async fn read(
        &mut self,
        lanes: &[String],
        from: ReadFrom,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<Entry>)>> {
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(wake) = self.wake.clone() {
            let found = self.read_each(lanes, from, count).await?;
            let Some(block) = block.filter(|_| found.is_empty()) else {
                return Ok(found);
            };
            // Nothing anywhere: wait for a wake or the fallback poll, then read again only
            // when woken (after the poll's wait the caller's next read reads).
            return match tokio::time::timeout(block, wake.notified()).await {
                Ok(()) => self.read_each(lanes, from, count).await,
                Err(_) => Ok(found),
            };
        }
        let id = match from {
            ReadFrom::New => ">",
        };
        let conn = match &mut self.conn {
            ReadConn::Own(own) => {
                return own
                    .xreadgroup(&self.group, &self.consumer, count, block, lanes, id)
                    .await
            }
            ReadConn::Client(c) => c,
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(lanes);
        for _ in lanes {
            cmd.arg(id);
        }
        let v: Value = cmd.query_async(conn).await?;
        reply::streams(v)
    }

    /// On a cluster: one non-blocking XREADGROUP per lane, pipelined.
    async fn read_each(
        &mut self,
        lanes: &[String],
        from: ReadFrom,
        count: usize,
    ) -> Result<Vec<(String, Vec<Entry>)>> {
        let id = match from {
            ReadFrom::New => ">",
        };
        let mut pipe = redis::pipe();
        for lane in lanes {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count.max(1))
                .arg("STREAMS")
                .arg(lane)
                .arg(id);
        }
        let ReadConn::Client(conn) = &mut self.conn else {
            return Err(crate::error::Error::Protocol(
                "a cluster reader without the cluster's connection".into(),
            ));
        };
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut out = Vec::new();
        for v in replies {
            out.extend(reply::streams(v)?);
        }
        Ok(out)
    }
}

/// The smallest and largest of stream ids (by their numeric parts).
pub(super) fn id_range<'a>(ids: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let key = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse().unwrap_or(u64::MAX),
            seq.parse().unwrap_or(u64::MAX),
        )
    };
    let lo = ids.iter().min_by_key(|id| key(id))?;
    let hi = ids.iter().max_by_key(|id| key(id))?;
    Some((lo, hi))
}

/// The number of members an `SADD` added (0 for anything else: the registry is then announced
/// by nobody, and members find the tenants by their periodic look).
fn added(v: &Value) -> u64 {
    match v {
        Value::Int(n) if *n > 0 => *n as u64,
        _ => 0,
    }
}

/// How many rounds in a row a pipelined enqueue may find every task it sent answered NOSCRIPT
/// (the script cache flushed after each load) before it gives up.
const ENQUEUE_NOSCRIPT_ROUNDS: usize = 3;

/// What an enqueue of a batch did: each task's fate, and how many of its tenants it
/// registered for the first time (the caller then announces them: [`Broker::announce_tenants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// What became of each task, in order.
    pub landed: Vec<Landed>,
    /// Tenants the registry did not hold before this enqueue (the `SADD`'s answer).
    pub new_tenants: u64,
}

/// What became of one task given to [`Broker::enqueue`] or [`Broker::enqueue_atomic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Landed {
    /// Appended to its lane as this entry.
    Appended(String),
    /// Not appended: its task_id has a live record in `state`, whose current entry is
    /// `entry` (empty when the record names none).
    Duplicate {
        /// The live record's state.
        state: TaskState,
        /// The live record's entry.
        entry: String,
    },
}

/// The distinct tenants of `tasks`, sorted.
fn tenants_of(tasks: &[Task]) -> Vec<&str> {
    let mut tenants: Vec<&str> = tasks.iter().map(|t| t.tenant.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    tenants
}

/// Reads enqueue.lua's reply: `{1, entry}` or `{0, state, entry}`.
fn landed(v: Value) -> Result<Landed> {
    const WHAT: &str = "enqueue.lua";
    let mut parts = reply::array(v, WHAT, Some(2))?.into_iter();
    let flag = reply::int(parts.next().unwrap_or(Value::Nil), WHAT)?;
    let second = reply::text(parts.next().unwrap_or(Value::Nil), WHAT)?;
    if flag == 1 {
        return Ok(Landed::Appended(second));
    }
    let state = TaskState::parse(&second).ok_or_else(|| {
        Error::Protocol(format!(
            "{WHAT} answered a duplicate in the unknown state '{}'",
            bounded(&second)
        ))
    })?;
    let entry = parts.next().map(reply::text_or_empty).unwrap_or_default();
    Ok(Landed::Duplicate { state, entry })
}

impl Broker {
    /// Appends tasks to their tenants' lanes in pipelined round trips, registering the tenants
    /// of `register` first (the caller leaves out those it registered moments ago; empty: no
    /// `SADD` at all). Returns what became of each task, in order. Tasks must be validated
    /// already.
    ///
    /// With records on (`records.enabled`) each task is one `enqueue.lua` (append + record,
    /// or a duplicate refused when `records.dedup_for(tenant)`); the script is loaded at the
    /// head of the first pipeline of this broker (and of any after a NOSCRIPT), and the tasks
    /// the server answered NOSCRIPT for (a restarted server, or its script cache flushed:
    /// nothing of them ran) are sent again, after another load, once the round is over. Only then can the lane order differ from the
    /// batch's (and of a task_id given twice, the later one be the one appended). With
    /// records off each task is a plain XADD.
    pub(crate) async fn enqueue(
        &self,
        tasks: &[Task],
        register: &[&str],
        records: &TasksSettings,
    ) -> Result<Appended> {
        if tasks.is_empty() {
            return Ok(Appended {
                landed: Vec::new(),
                new_tenants: 0,
            });
        }
        if self.is_cluster() {
            return self.enqueue_on_cluster(tasks, register, records).await;
        }
        let sadd = !register.is_empty();
        if !records.enabled {
            let mut pipe = redis::pipe();
            if sadd {
                pipe.cmd("SADD").arg(self.keys.tenants()).arg(register);
            }
            for task in tasks {
                self.xadd(&mut pipe, task);
            }
            let (new_tenants, ids): (u64, Vec<String>) = pipe
                .query_async::<Vec<Value>>(&mut self.con())
                .await
                .map_err(|e| pipeline_refused(e, tasks.len() + usize::from(sadd)))
                .and_then(|mut replies| {
                    let head = usize::from(sadd);
                    if replies.len() != tasks.len() + head {
                        return Err(Error::Protocol(format!(
                            "a pipelined enqueue of {} tasks answered {} replies",
                            tasks.len(),
                            replies.len()
                        )));
                    }
                    let ids = replies
                        .split_off(head)
                        .into_iter()
                        .map(|v| reply::text(v, "an XADD"))
                        .collect::<Result<Vec<String>>>()?;
                    Ok((replies.first().map(added).unwrap_or(0), ids))
                })?;
            return Ok(Appended {
                landed: ids.into_iter().map(Landed::Appended).collect(),
                new_tenants,
            });
        }
        let register = sadd.then_some(register);
        self.enqueue_scripted(tasks, register, records).await
    }

    /// On a cluster the registry (no hash tag) and the lanes live on different nodes, and a
    /// pipeline's parts go to their nodes at once: the tenants are registered first, and
    /// their tasks written only once the registry said yes. A crash in between leaves a
    /// registered tenant with an empty lane (harmless); never a lane nobody reads.
    async fn enqueue_on_cluster(
        &self,
        tasks: &[Task],
        tenants: &[&str],
        records: &TasksSettings,
    ) -> Result<Appended> {
        let new_tenants = self.register_tenants(tenants).await?;
        if records.enabled {
            let landed = self.enqueue_scripted(tasks, None, records).await?.landed;
            return Ok(Appended {
                landed,
                new_tenants,
            });
        }
        let mut pipe = redis::pipe();
        for task in tasks {
            self.xadd(&mut pipe, task);
        }
        let ids: Vec<String> = pipe
            .query_async::<Vec<Value>>(&mut self.con())
            .await
            .map_err(|e| pipeline_refused(e, tasks.len()))?
            .into_iter()
            .map(|v| reply::text(v, "an XADD"))
            .collect::<Result<Vec<String>>>()?;
        Ok(Appended {
            landed: ids.into_iter().map(Landed::Appended).collect(),
            new_tenants,
        })
    }

    /// Registers `tenants` in the registry on their own (one `SADD`, its answer awaited: on a
    /// cluster a lane is written only once its tenant is registered). Returns how many were
    /// new. Nothing is sent for no tenants.
    async fn register_tenants(&self, tenants: &[&str]) -> Result<u64> {
        if tenants.is_empty() {
            return Ok(0);
        }
        Ok(redis::cmd("SADD")
            .arg(self.keys.tenants())
            .arg(tenants)
            .query_async(&mut self.con())
            .await?)
    }

    /// Enqueue.lua for each of `tasks` in pipelined rounds (see [`Broker::enqueue`]), with the
    /// registration of `register` in the first round's pipeline (`None`: registered already).
    async fn enqueue_scripted(
        &self,
        tasks: &[Task],
        register: Option<&[&str]>,
        records: &TasksSettings,
    ) -> Result<Appended> {
        let mut new_tenants = 0;
        let mut out: Vec<Option<Landed>> = vec![None; tasks.len()];
        // Positions still to send: all of them, then those the server had no script for.
        let mut todo: Vec<usize> = (0..tasks.len()).collect();
        let mut round = 0;
        let mut stalled = 0;
        while !todo.is_empty() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            // Loaded once per broker, and again after a NOSCRIPT answer.
            let load = !self.enqueue_loaded.load(Ordering::Relaxed);
            if load {
                pipe.load_script(&scripts().enqueue);
            }
            let sadd = round == 0 && register.is_some();
            if let (true, Some(tenants)) = (sadd, register) {
                pipe.cmd("SADD").arg(self.keys.tenants()).arg(tenants);
            }
            for &i in &todo {
                pipe.invoke_script(&self.enqueue_invocation(&tasks[i], records));
            }
            let mut replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
            let head = usize::from(load) + usize::from(sadd);
            if replies.len() != head + todo.len() {
                return Err(Error::Protocol(format!(
                    "a pipelined enqueue of {} tasks answered {} replies",
                    todo.len(),
                    replies.len()
                )));
            }
            let task_replies = replies.split_off(head);
            if sadd {
                new_tenants = replies.last().map(added).unwrap_or(0);
            }
            let mut refusals: Vec<(usize, redis::ServerError)> = replies
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    Value::ServerError(e) => Some((i, e)),
                    _ => None,
                })
                .collect();
            let mut again = Vec::new();
            for (&i, v) in todo.iter().zip(task_replies) {
                match v {
                    Value::ServerError(e) if e.code() == "NOSCRIPT" => again.push(i),
                    Value::ServerError(e) => refusals.push((head + i, e)),
                    v => out[i] = Some(landed(v)?),
                }
            }
            if !refusals.is_empty() {
                return Err(refused_in_part(&refusals, tasks.len() + 2));
            }
            self.enqueue_loaded
                .store(again.is_empty(), Ordering::Relaxed);
            stalled = if again.len() == todo.len() {
                stalled + 1
            } else {
                0
            };
            if stalled >= ENQUEUE_NOSCRIPT_ROUNDS {
                return Err(Error::Protocol(format!(
                    "Redis kept losing the enqueue script (NOSCRIPT for every task \
                     {ENQUEUE_NOSCRIPT_ROUNDS} times in a row: is something flushing its \
                     script cache?); {} of {} tasks were written or found duplicate",
                    out.iter().flatten().count(),
                    out.len()
                )));
            }
            todo = again;
            round += 1;
        }
        Ok(Appended {
            landed: out.into_iter().flatten().collect(),
            new_tenants,
        })
    }

    /// Appends tasks to their tenants' lanes and registers the tenants in one MULTI/EXEC:
    /// all of them or none. Returns what became of each task, in order. Tasks must be
    /// validated already. A Redis at `maxmemory` (noeviction) refuses the whole transaction:
    /// [`Error::OutOfMemory`], nothing written. Error messages are bounded: the first refusal
    /// and how many there were, never the commands.
    ///
    /// With records on each task is one `enqueue.lua` (a duplicate is refused inside the
    /// transaction and writes nothing but its count). The script is loaded by a SCRIPT LOAD
    /// inside the transaction, before the calls, so a flushed script cache never fails part
    /// of it. With records off each task is a plain XADD.
    pub(crate) async fn enqueue_atomic(
        &self,
        tasks: &[Task],
        records: &TasksSettings,
    ) -> Result<Appended> {
        if tasks.is_empty() {
            return Ok(Appended {
                landed: Vec::new(),
                new_tenants: 0,
            });
        }
        let tenants = tenants_of(tasks);
        if self.is_cluster() {
            return self
                .enqueue_atomic_per_tenant(tasks, &tenants, records)
                .await;
        }
        self.enqueue_transaction(tasks, Some(&tenants), records)
            .await
    }

    /// On a cluster a transaction cannot span tenants (each is its own slot) nor include the
    /// registry: the tenants are registered first (confirmed), then each tenant's tasks are one
    /// transaction, tenant after tenant. All or nothing per tenant; a tenant refused leaves the
    /// tenants before it written, which the error says.
    async fn enqueue_atomic_per_tenant(
        &self,
        tasks: &[Task],
        tenants: &[&str],
        records: &TasksSettings,
    ) -> Result<Appended> {
        let new_tenants = self.register_tenants(tenants).await?;
        let mut out: Vec<Option<Landed>> = vec![None; tasks.len()];
        for (done, tenant) in tenants.iter().enumerate() {
            let at: Vec<usize> = (0..tasks.len())
                .filter(|&i| tasks[i].tenant == *tenant)
                .collect();
            let mine: Vec<Task> = at.iter().map(|&i| tasks[i].clone()).collect();
            let landed = match self.enqueue_transaction(&mine, None, records).await {
                Ok(a) => a.landed,
                Err(e) if done == 0 => return Err(e),
                Err(e) => {
                    return Err(Error::Protocol(format!(
                        "on a Redis Cluster each tenant's tasks are one transaction: the tasks \
                         of {done} of {} tenants ({}) were written, those of '{tenant}' and \
                         after were not: {e}",
                        tenants.len(),
                        tenants[..done].join(", ")
                    )))
                }
            };
            for (i, l) in at.into_iter().zip(landed) {
                out[i] = Some(l);
            }
        }
        Ok(Appended {
            landed: out.into_iter().flatten().collect(),
            new_tenants,
        })
    }

    /// One MULTI/EXEC of `tasks`, with the registration of `register` (`None`: registered
    /// already).
    async fn enqueue_transaction(
        &self,
        tasks: &[Task],
        register: Option<&[&str]>,
        records: &TasksSettings,
    ) -> Result<Appended> {
        // MULTI and EXEC as plain commands of one pipeline (one write on the connection, so
        // nothing else interleaves), every reply kept, so each refusal can be told apart.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("MULTI");
        if records.enabled {
            pipe.load_script(&scripts().enqueue);
        }
        if let Some(tenants) = register {
            pipe.cmd("SADD").arg(self.keys.tenants()).arg(tenants);
        }
        for task in tasks {
            if records.enabled {
                pipe.invoke_script(&self.enqueue_invocation(task, records));
            } else {
                self.xadd(&mut pipe, task);
            }
        }
        pipe.cmd("EXEC");
        let mut replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let n = tasks.len();
        let nothing = if n == 1 {
            "nothing was written".to_owned()
        } else {
            format!("none of the {n} tasks was written (they are one transaction)")
        };
        let exec = replies.pop();
        let queued: Vec<&redis::ServerError> = replies
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(e),
                _ => None,
            })
            .collect();
        if let Some(Value::ServerError(e)) = &exec {
            if queued.is_empty() || super::error::oom_refusal(e) {
                return Err(refused(&[e], &nothing));
            }
        }
        if !queued.is_empty() {
            return Err(refused(&queued, &nothing));
        }
        let Some(Value::Array(mut results)) = exec else {
            return Err(Error::Protocol(format!(
                "EXEC of an enqueue answered {}",
                exec.map(|v| format!("{v:?}").chars().take(100).collect::<String>())
                    .unwrap_or_default()
            )));
        };
        let head = usize::from(records.enabled) + usize::from(register.is_some());
        if results.len() != n + head {
            return Err(Error::Protocol(format!(
                "EXEC of an enqueue of {n} tasks answered {} results",
                results.len()
            )));
        }
        let tail = results.split_off(head);
        // The head: [SCRIPT LOAD,] [SADD].
        let new_tenants = if register.is_some() {
            results.last().map(added).unwrap_or(0)
        } else {
            0
        };
        let results = tail;
        let failed: Vec<&redis::ServerError> = results
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(e),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            // Redis does not roll a transaction back: a command failing inside EXEC (a lane
            // key holding another type) leaves the others written. Say so exactly.
            return Err(Error::Protocol(format!(
                "{} of {n} enqueues failed inside the transaction, the other {} tasks were \
                 written or found duplicate; first error: {}",
                failed.len(),
                n - failed.len(),
                bounded(&failed[0].to_string())
            )));
        }
        let landed = results
            .into_iter()
            .map(|v| {
                if records.enabled {
                    landed(v)
                } else {
                    redis::from_redis_value::<String>(v)
                        .map(Landed::Appended)
                        .map_err(|e| Error::Protocol(format!("an XADD answered {e}")))
                }
            })
            .collect::<Result<Vec<Landed>>>()?;
        Ok(Appended {
            landed,
            new_tenants,
        })
    }

    /// A plain XADD of `task` into its lane (records off), added to `pipe`.
    fn xadd(&self, pipe: &mut redis::Pipeline, task: &Task) {
        let cmd = pipe.cmd("XADD").arg(self.keys.lane(&task.tenant)).arg("*");
        for (k, v) in task.to_fields() {
            cmd.arg(k.as_ref()).arg(v);
        }
    }

    /// One call of enqueue.lua for `task` (its header names the KEYS and ARGV).
    pub(super) fn enqueue_invocation<'a>(
        &self,
        task: &Task,
        records: &TasksSettings,
    ) -> redis::ScriptInvocation<'a> {
        let t = task.tenant.as_str();
        let mut inv = scripts().enqueue.key(self.keys.lane(t));
        inv.key(self.keys.task(t, &task.task_id))
            .key(self.keys.tasks(t))
            .key(self.keys.stats_prefix(t))
            .arg(if records.dedup_for(t) { "1" } else { "0" })
            .arg(&task.task_id)
            .arg(&task.kind)
            .arg(task.attempt)
            .arg(stats_keep_ms())
            .arg(records.retention_for(t, &task.kind).as_millis() as u64);
        for (k, v) in task.to_fields() {
            inv.arg(k.as_ref()).arg(v);
        }
        inv
    }

    /// Every registered tenant.
    pub(crate) async fn tenants(&self) -> Result<Vec<String>> {
        let mut t: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?;
        t.sort_unstable();
        Ok(t)
    }

    /// Whether `tenant` is registered (it had a task enqueued).
    pub(crate) async fn is_tenant(&self, tenant: &str) -> Result<bool> {
        Ok(redis::cmd("SISMEMBER")
            .arg(self.keys.tenants())
            .arg(tenant)
            .query_async(&mut self.con())
            .await?)
    }

    /// Which of `tenants` are registered, in order (one `SMISMEMBER`).
    pub(crate) async fn registered(&self, tenants: &[String]) -> Result<Vec<bool>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(self.keys.tenants())
            .arg(tenants)
            .query_async(&mut self.con())
            .await?;
        if held.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "SMISMEMBER of {} tenants answered {}",
                tenants.len(),
                held.len()
            )));
        }
        Ok(held)
    }

    /// Tells members that the registry holds new tenants (`PUBLISH` on
    /// [`Keys::tenant_signals`](crate::keys::Keys::tenant_signals)), after an enqueue whose
    /// registration added some ([`Appended::new_tenants`]): they look at the registry at once
    /// instead of at their next periodic look. Returns how many members heard it.
    pub(crate) async fn announce_tenants(&self, tenants: &[&str]) -> Result<u64> {
        Ok(redis::cmd("PUBLISH")
            .arg(self.keys.tenant_signals())
            .arg(tenants.join(","))
            .query_async(&mut self.con())
            .await?)
    }

    /// A subscription to the tenant announcements ([`Broker::announce_tenants`]) on a
    /// connection of its own, subscribed before this returns.
    pub(crate) async fn tenant_signals(&self) -> Result<TenantSignals> {
        let client = self.subscription_client().await?;
        let connect = client.get_async_pubsub();
        let mut pubsub = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "connecting for tenant announcements took over {} ms",
                    self.connect_timeout.as_millis()
                ))
            })??;
        let entries = self.is_cluster().then(|| self.keys.entry_signals());
        let mut channels = vec![self.keys.tenant_signals()];
        channels.extend(entries.clone());
        let subscribe = pubsub.subscribe(channels);
        tokio::time::timeout(self.response_timeout, subscribe)
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "subscribing to tenant announcements took over {} ms",
                    self.response_timeout.as_millis()
                ))
            })??;
        let (sink, stream) = pubsub.split();
        Ok(TenantSignals {
            sink,
            stream,
            entries,
        })
    }

    /// On a cluster: tells members that `tenants`' lanes have new entries (`PUBLISH` on
    /// [`Keys::entry_signals`](crate::keys::Keys::entry_signals)), so a reader waiting after
    /// an empty read reads at once. Nothing on one Redis, where readers block in Redis.
    pub(crate) async fn signal_entries(&self, tenants: &[&str]) -> Result<()> {
        if !self.is_cluster() || tenants.is_empty() {
            return Ok(());
        }
        let _: u64 = redis::cmd("PUBLISH")
            .arg(self.keys.entry_signals())
            .arg(tenants.join(","))
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Ends the blocking command the connection `client_id` is blocked in, as if it timed out
    /// (`CLIENT UNBLOCK`). True when one was blocked. On a cluster, ends the wait of this
    /// process's reader after an empty read (or its next one, at once): always true.
    pub(crate) async fn unblock(&self, client_id: u64) -> Result<bool> {
        if self.is_cluster() {
            if let Ok(readers) = self.lane_wake.lock() {
                for wake in readers.iter().filter_map(std::sync::Weak::upgrade) {
                    wake.notify_one();
                }
            }
            return Ok(true);
        }
        let n: i64 = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(client_id)
            .query_async(&mut self.con())
            .await?;
        Ok(n == 1)
    }

    /// How many tenants are registered (O(1), for cheap change detection).
    pub(crate) async fn tenant_count(&self) -> Result<u64> {
        Ok(redis::cmd("SCARD")
            .arg(self.keys.tenants())
            .query_async(&mut self.con())
            .await?)
    }

    /// Creates the fleet's group on a tenant's lane if it is missing. The group starts at id 0,
    /// so entries written before it existed are delivered too.
    pub(crate) async fn ensure_group(&self, tenant: &str) -> Result<()> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con())
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A reader with its own connection, for blocking reads of up to `block`.
    pub(crate) async fn reader(&self, consumer: &str, block: Duration) -> Result<LaneReader> {
        if !self.is_cluster() {
            let own = super::stream_read::StreamConn::connect(
                self.client.get_connection_info(),
                self.connect_timeout,
                self.response_timeout,
            )
            .await?;
            if let Some(mut own) = own {
                let client_id = own.client_id().await?;
                return Ok(LaneReader {
                    conn: ReadConn::Own(own),
                    group: self.group.clone(),
                    consumer: consumer.into(),
                    client_id,
                    wake: None,
                });
            }
        }
        let mut conn = self.dedicated(block).await?;
        let (client_id, wake) = if self.is_cluster() {
            // No connection id to unblock: `unblock` of any id wakes every reader's wait
            // (each its own, so one reader cannot take another's wake).
            let wake = Arc::new(tokio::sync::Notify::new());
            if let Ok(mut readers) = self.lane_wake.lock() {
                readers.retain(|w| w.strong_count() > 0);
                readers.push(Arc::downgrade(&wake));
            }
            (u64::MAX, Some(wake))
        } else {
            let id: u64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await?;
            (id, None)
        };
        Ok(LaneReader {
            conn: ReadConn::Client(conn),
            group: self.group.clone(),
            consumer: consumer.into(),
            client_id,
            wake,
        })
    }

    /// Entries in a tenant's lane (waiting, pending, or settled-but-not-deleted).
    pub(crate) async fn lane_len(&self, tenant: &str) -> Result<u64> {
        Ok(redis::cmd("XLEN")
            .arg(self.keys.lane(tenant))
            .query_async(&mut self.con())
            .await?)
    }

    /// Entries of a tenant's lane delivered to the group but not settled yet.
    pub(crate) async fn pending_count(&self, tenant: &str) -> Result<u64> {
        let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(self.keys.lane(tenant))
            .arg(&*self.group)
            .query_async(&mut self.con())
            .await;
        match r {
            Ok(Value::Array(items)) => match items.first() {
                Some(Value::Int(n)) => Ok(*n as u64),
                _ => Ok(0),
            },
            Ok(_) => Ok(0),
            Err(e) if is_code(&e, "NOGROUP") => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// One entry of a tenant's lane, if it still exists.
    pub(crate) async fn lane_entry(&self, tenant: &str, id: &str) -> Result<Option<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.lane(tenant))
            .arg(id)
            .arg(id)
            .query_async(&mut self.con())
            .await?;
        Ok(reply::entries(v)?.into_iter().next())
    }

    /// Depth figures of each of `tenants` (one script per tenant, all in one pipeline).
    pub(crate) async fn tenant_depths(&self, tenants: &[Arc<str>]) -> Result<Vec<TenantDepth>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().depths).ignore();
        for t in tenants {
            let mut inv = scripts().depths.key(self.keys.lane(t));
            inv.key(self.keys.retry(t))
                .key(self.keys.dlq(t))
                .key(self.keys.deferred(t))
                .arg(&*self.group);
            pipe.invoke_script(&inv);
        }
        let rows: Vec<Vec<i64>> = pipe.query_async(&mut self.con()).await?;
        if rows.len() != tenants.len() {
            return Err(Error::Protocol(format!(
                "depth read answered {} rows for {} tenants",
                rows.len(),
                tenants.len()
            )));
        }
        rows.into_iter()
            .zip(tenants)
            .map(|(r, t)| match r[..] {
                [lane, pending, lag, retries, overdue, dlq] => Ok(TenantDepth {
                    tenant: t.clone(),
                    lane: lane.max(0) as u64,
                    pending: pending.max(0) as u64,
                    lag: lag.max(0) as u64,
                    retries: retries.max(0) as u64,
                    overdue: overdue.max(0) as u64,
                    dlq: dlq.max(0) as u64,
                }),
                _ => Err(Error::Protocol(format!("depth read of {t} returned {r:?}"))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::id_range;

    #[test]
    fn id_range_orders_by_the_numeric_parts() {
        assert_eq!(id_range(&[]), None);
        assert_eq!(id_range(&["5-0"]), Some(("5-0", "5-0")));
        // Text order would put "10-0" before "9-0" and "9-10" before "9-2".
        assert_eq!(
            id_range(&["9-2", "10-0", "9-10", "9-0"]),
            Some(("9-0", "10-0"))
        );
        // An id without a sequence counts as `-0`; an unreadable one sorts last.
        assert_eq!(id_range(&["7", "x-1", "6-3"]), Some(("6-3", "x-1")));
    }
}
