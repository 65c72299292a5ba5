//! The admin verbs of the broker: the admin command stream and its records, the audit trail,
//! replay jobs, dead-letter replay / removal / purge, server-side dead-letter tallies, and the
//! per-minute settle counts behind `health`. Every key name comes from [`crate::keys`]; every
//! script touches either one tenant's keys or admin keys (`{@admin}`), never both.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use redis::{Script, Value};

use super::{claim_step, is_code, reply, Broker, ClaimStep, Entry};
use crate::error::{Error, Result};

/// How long the per-minute settle counts are kept (health and stats windows reach back 24 h).
pub const STATS_KEEP: Duration = Duration::from_secs(2 * 86_400);

struct AdminScripts {
    begin: Script,
    finish: Script,
    beat: Script,
    live: Script,
    withdraw: Script,
    job_cancel: Script,
    replay: Script,
    remove: Script,
    tally: Script,
}

/// Loaded once per process; `Script` handles EVALSHA and reloading.
fn scripts() -> &'static AdminScripts {
    static S: OnceLock<AdminScripts> = OnceLock::new();
    S.get_or_init(|| AdminScripts {
        begin: Script::new(include_str!("scripts/admin_begin.lua")),
        finish: Script::new(include_str!("scripts/admin_finish.lua")),
        beat: Script::new(include_str!("scripts/admin_beat.lua")),
        live: Script::new(include_str!("scripts/admin_live.lua")),
        withdraw: Script::new(include_str!("scripts/admin_withdraw.lua")),
        job_cancel: Script::new(include_str!("scripts/job_cancel.lua")),
        replay: Script::new(include_str!("scripts/replay.lua")),
        remove: Script::new(include_str!("scripts/dlq_remove.lua")),
        tally: Script::new(include_str!("scripts/dlq_tally.lua")),
    })
}

/// What [`Broker::admin_begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginCommand {
    /// Execute it now; the server's time of the start, ms.
    Run(u64),
    /// It ran already; its result JSON.
    Done(String),
    /// Another copy of it is being executed by the member named.
    Running(String),
    /// It was withdrawn or is past its deadline; it never runs. The stored result JSON, if any.
    Expired(String),
}

/// How [`Broker::admin_finish`] settles a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishMode {
    /// Record the result and audit it (only while the record runs this entry).
    Result,
    /// Audit only, leaving the record alone.
    Note,
    /// Settle the stream entry only.
    Ack,
}

/// What [`Broker::admin_withdraw`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Withdraw {
    /// Withdrawn: the command will never run.
    Withdrawn,
    /// Too late: the record's state and its executor.
    Found {
        /// `running`, `done` or `expired`.
        state: String,
        /// The member executing it.
        member: String,
    },
}

/// Counts of one fingerprint in a tally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintTally {
    /// The fingerprint.
    pub fingerprint: String,
    /// Dead letters with it.
    pub count: u64,
    /// Their class.
    pub class: String,
    /// Their kind.
    pub kind: String,
    /// The error message of the first one seen.
    pub sample: String,
}

/// One page of [`Broker::dlq_tally`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyPage {
    /// Where the next page starts, `None` at the end.
    pub next: Option<String>,
    /// Entries read.
    pub scanned: u64,
    /// Entries matching the filter.
    pub matched: u64,
    /// The first matching id.
    pub oldest: Option<String>,
    /// Matching entries by class.
    pub classes: Vec<(String, u64)>,
    /// Matching entries by kind.
    pub kinds: Vec<(String, u64)>,
    /// Matching entries by fingerprint.
    pub fingerprints: Vec<FingerprintTally>,
}

fn text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn int(v: Value) -> u64 {
    match v {
        Value::Int(i) => i.max(0) as u64,
        other => text(other).parse().unwrap_or(0),
    }
}

fn array(v: Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("{what} returned {other:?}"))),
    }
}

fn pairs(v: Value, what: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut it = array(v, what)?.into_iter();
    while let (Some(k), Some(n)) = (it.next(), it.next()) {
        out.push((text(k), int(n)));
    }
    Ok(out)
}

fn hash(v: Value) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    match v {
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.insert(text(k), text(v));
            }
        }
        Value::Map(items) => {
            for (k, v) in items {
                out.insert(text(k), text(v));
            }
        }
        _ => {}
    }
    (!out.is_empty()).then_some(out)
}

impl Broker {
    /// The Redis server's clock, ms since the epoch. Times that several processes compare (the
    /// dead-letter ids, beats, deadlines) all come from this clock.
    pub(crate) async fn server_time_ms(&self) -> Result<u64> {
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut self.con()).await?;
        Ok(s * 1000 + us / 1000)
    }

    // ---- admin command stream -------------------------------------------------------------

    /// Creates the fleet's group on the admin command stream if it is missing. It starts at id
    /// 0, so commands sent before any member ran are read too (their deadline guards age).
    pub(crate) async fn admin_ensure_group(&self) -> Result<()> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.admin_commands())
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

    /// Appends a command to the admin stream. Returns its entry id.
    pub(crate) async fn admin_submit(&self, fields: &[(&str, String)]) -> Result<String> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.admin_commands()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        Ok(cmd.query_async(&mut self.con()).await?)
    }

    /// One step of a member's drain of its own pending admin commands (claim.lua on the admin
    /// stream): after a restart it takes them up again, except those delivered too often.
    pub(crate) async fn admin_claim_own(
        &self,
        consumer: &str,
        start: &str,
        count: usize,
        max_deliveries: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = self.scripts.claim.key(self.keys.admin_commands());
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(start)
            .arg(count)
            .arg(max_deliveries)
            .arg(skip);
        claim_step(inv.invoke_async(&mut self.con()).await)
    }

    /// One step of a reclaim scan over the admin stream (autoclaim.lua): commands left pending
    /// by a member that stopped beating for `min_idle` are taken over by `consumer`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admin_reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
        max_deliveries: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = self.scripts.autoclaim.key(self.keys.admin_commands());
        inv.arg(&*self.group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg(count)
            .arg(max_deliveries)
            .arg(skip);
        claim_step(inv.invoke_async(&mut self.con()).await)
    }

    /// Re-delivers a taken-over admin command to `consumer` (begin.lua on the admin stream:
    /// owner check + delivery count + 1) and returns its fields.
    pub(crate) async fn admin_redeliver(
        &self,
        consumer: &str,
        entry_id: &str,
    ) -> Result<super::Begin> {
        self.begin_on(self.keys.admin_commands(), consumer, entry_id)
            .await
    }

    /// Claims the execution of command `command_id` carried by `entry` (see
    /// scripts/admin_begin.lua).
    pub(crate) async fn admin_begin(
        &self,
        command_id: &str,
        entry: &str,
        executor: &str,
        deadline_ms: u64,
        keep: Duration,
    ) -> Result<BeginCommand> {
        let mut inv = scripts().begin.key(self.keys.admin_command(command_id));
        inv.arg(entry)
            .arg(executor)
            .arg(deadline_ms)
            .arg(keep.as_millis() as u64);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "admin_begin.lua")?.into_iter();
        let state = parts.next().map(text).unwrap_or_default();
        let arg = parts.next().unwrap_or(Value::Nil);
        match state.as_str() {
            "run" => Ok(BeginCommand::Run(int(arg))),
            "done" => Ok(BeginCommand::Done(text(arg))),
            "running" => Ok(BeginCommand::Running(text(arg))),
            "expired" => Ok(BeginCommand::Expired(text(arg))),
            other => Err(Error::Protocol(format!(
                "admin_begin.lua returned state '{other}'"
            ))),
        }
    }

    /// Records a command's result, audits it and settles its stream entry, atomically (see
    /// scripts/admin_finish.lua). Returns whether the result or note was written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admin_finish(
        &self,
        command_id: &str,
        entry: &str,
        mode: FinishMode,
        result_json: &str,
        keep: Duration,
        audit_max_len: u64,
        audit: &[(&str, String)],
    ) -> Result<bool> {
        let mut inv = scripts().finish.key(self.keys.admin_commands());
        inv.key(self.keys.admin_command(command_id))
            .key(self.keys.admin_audit())
            .arg(&*self.group)
            .arg(entry)
            .arg(match mode {
                FinishMode::Result => "result",
                FinishMode::Note => "note",
                FinishMode::Ack => "ack",
            })
            .arg(result_json)
            .arg(keep.as_millis() as u64)
            .arg(audit_max_len);
        for (k, v) in audit {
            inv.arg(*k).arg(v);
        }
        let n: i64 = inv.invoke_async(&mut self.con()).await?;
        Ok(n == 1)
    }

    /// A beat of an admin loop (see scripts/admin_beat.lua): `member` (None for a `--local`
    /// CLI) counts as live, and the running commands `(command id, entry)` stay fresh. Returns
    /// the entries the member no longer owns.
    pub(crate) async fn admin_beat(
        &self,
        member: Option<&str>,
        ttl: Duration,
        running: &[(String, String)],
    ) -> Result<Vec<String>> {
        let mut inv = scripts().beat.key(self.keys.admin_members());
        inv.key(self.keys.admin_commands());
        for (command_id, _) in running {
            inv.key(self.keys.admin_command(command_id));
        }
        inv.arg(&*self.group)
            .arg(member.unwrap_or(""))
            .arg(ttl.as_millis() as u64);
        for (_, entry) in running {
            inv.arg(entry);
        }
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// The members whose admin loop beat within `ttl` (server clock).
    pub(crate) async fn admin_live_members(&self, ttl: Duration) -> Result<Vec<String>> {
        let mut inv = scripts().live.key(self.keys.admin_members());
        inv.arg(ttl.as_millis() as u64);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Removes `member` from the live set (clean shutdown).
    pub(crate) async fn admin_leave(&self, member: &str) -> Result<()> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.keys.admin_members())
            .arg(member)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// A command's record (state, executor, result), if it exists.
    pub(crate) async fn admin_record(
        &self,
        command_id: &str,
    ) -> Result<Option<HashMap<String, String>>> {
        let v: Value = redis::cmd("HGETALL")
            .arg(self.keys.admin_command(command_id))
            .query_async(&mut self.con())
            .await?;
        Ok(hash(v))
    }

    /// Withdraws a command nobody has started (see scripts/admin_withdraw.lua).
    pub(crate) async fn admin_withdraw(
        &self,
        command_id: &str,
        keep: Duration,
    ) -> Result<Withdraw> {
        let mut inv = scripts().withdraw.key(self.keys.admin_command(command_id));
        inv.arg(keep.as_millis() as u64);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "admin_withdraw.lua")?.into_iter();
        let state = parts.next().map(text).unwrap_or_default();
        let member = parts.next().map(text).unwrap_or_default();
        if state == "withdrawn" {
            Ok(Withdraw::Withdrawn)
        } else {
            Ok(Withdraw::Found { state, member })
        }
    }

    /// Audit entries, newest first, starting before `before` (an exclusive entry id) if given.
    pub(crate) async fn admin_audit(
        &self,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let end = before
            .map(|b| format!("({b}"))
            .unwrap_or_else(|| "+".into());
        let v: Value = redis::cmd("XREVRANGE")
            .arg(self.keys.admin_audit())
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        reply::entries(v)
    }

    // ---- replay jobs ---------------------------------------------------------------------

    /// A replay job's fields, if it exists.
    pub(crate) async fn job_get(&self, job: &str) -> Result<Option<HashMap<String, String>>> {
        let v: Value = redis::cmd("HGETALL")
            .arg(self.keys.admin_job(job))
            .query_async(&mut self.con())
            .await?;
        Ok(hash(v))
    }

    /// Sets fields of a job and removes `clear` (no expiry: a job lives until it finishes).
    pub(crate) async fn job_set(
        &self,
        job: &str,
        set: &[(&str, String)],
        clear: &[&str],
    ) -> Result<()> {
        let key = self.keys.admin_job(job);
        let mut pipe = redis::pipe();
        pipe.cmd("PERSIST").arg(&key).ignore();
        if !set.is_empty() {
            let cmd = pipe.cmd("HSET").arg(&key);
            for (k, v) in set {
                cmd.arg(*k).arg(v);
            }
            cmd.ignore();
        }
        if !clear.is_empty() {
            pipe.cmd("HDEL").arg(&key).arg(clear).ignore();
        }
        let _: () = pipe.query_async(&mut self.con()).await?;
        Ok(())
    }

    /// Records a job's progress: adds `incr` to its counters, sets `set`, and returns the id of
    /// a cancel request if one is pending. One round trip.
    pub(crate) async fn job_progress(
        &self,
        job: &str,
        incr: &[(&str, u64)],
        set: &[(&str, String)],
    ) -> Result<Option<String>> {
        let key = self.keys.admin_job(job);
        let mut pipe = redis::pipe();
        for (k, n) in incr {
            if *n > 0 {
                pipe.cmd("HINCRBY").arg(&key).arg(*k).arg(*n).ignore();
            }
        }
        if !set.is_empty() {
            let cmd = pipe.cmd("HSET").arg(&key);
            for (k, v) in set {
                cmd.arg(*k).arg(v);
            }
            cmd.ignore();
        }
        pipe.cmd("HGET").arg(&key).arg("cancel");
        let (cancel,): (Option<String>,) = pipe.query_async(&mut self.con()).await?;
        Ok(cancel)
    }

    /// Lets a finished job's record expire after `keep`.
    pub(crate) async fn job_expire(&self, job: &str, keep: Duration) -> Result<()> {
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(self.keys.admin_job(job))
            .arg(keep.as_millis() as u64)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Asks a job to stop (see scripts/job_cancel.lua). Returns its state, `None` when there is
    /// no such job.
    pub(crate) async fn job_cancel(&self, job: &str, command_id: &str) -> Result<Option<String>> {
        let mut inv = scripts().job_cancel.key(self.keys.admin_job(job));
        inv.arg(command_id);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    // ---- dead letters --------------------------------------------------------------------

    /// The dead letters `ids` of a tenant in one round trip; `None` for ids that do not exist.
    pub(crate) async fn dlq_entries(
        &self,
        tenant: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Entry>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.dlq(tenant);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(&key).arg(*id).arg(*id);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        replies
            .into_iter()
            .map(|v| Ok(reply::entries(v)?.into_iter().next()))
            .collect()
    }

    /// Counts one page of a tenant's dead letters on the server (see scripts/dlq_tally.lua).
    /// `filter_json` holds the class, kind and fingerprint criteria.
    pub(crate) async fn dlq_tally(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        count: usize,
        filter_json: &str,
    ) -> Result<TallyPage> {
        let mut inv = scripts().tally.key(self.keys.dlq(tenant));
        inv.arg(start).arg(end).arg(count).arg(filter_json);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "dlq_tally.lua")?.into_iter();
        let mut next = || parts.next().unwrap_or(Value::Nil);
        let cursor = text(next());
        let scanned = int(next());
        let matched = int(next());
        let oldest = text(next());
        let classes = pairs(next(), "dlq_tally.lua classes")?;
        let kinds = pairs(next(), "dlq_tally.lua kinds")?;
        let mut fingerprints = Vec::new();
        let mut it = array(next(), "dlq_tally.lua fingerprints")?.into_iter();
        while let (Some(fp), Some(n), Some(class), Some(kind), Some(sample)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        {
            fingerprints.push(FingerprintTally {
                fingerprint: text(fp),
                count: int(n),
                class: text(class),
                kind: text(kind),
                sample: text(sample),
            });
        }
        Ok(TallyPage {
            next: (!cursor.is_empty()).then_some(cursor),
            scanned,
            matched,
            oldest: (!oldest.is_empty()).then_some(oldest),
            classes,
            kinds,
            fingerprints,
        })
    }

    /// Replays dead letters of `tenant` into its lane (see scripts/replay.lua): each item is a
    /// dead-letter id and the replayed task's fields. Returns per item the new lane entry id, or
    /// `None` when the dead letter was already gone. `minute` is the stats bucket counting them.
    pub(crate) async fn replay(
        &self,
        tenant: &str,
        minute: u64,
        stats_keep: Duration,
        items: &[(String, crate::task::TaskFields)],
    ) -> Result<Vec<Option<String>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().replay.key(self.keys.dlq(tenant));
        inv.key(self.keys.lane(tenant))
            .key(self.keys.stats(tenant, minute))
            .arg(stats_keep.as_millis() as u64);
        for (id, fields) in items {
            inv.arg(id).arg(fields.len() * 2);
            for (k, v) in fields {
                inv.arg(k.as_ref()).arg(v);
            }
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let out: Vec<Option<String>> = array(v, "replay.lua")?
            .into_iter()
            .map(|v| Some(text(v)).filter(|s| !s.is_empty()))
            .collect();
        if out.len() != items.len() {
            return Err(Error::Protocol(format!(
                "replay.lua answered {} items for {}",
                out.len(),
                items.len()
            )));
        }
        Ok(out)
    }

    /// Moves dead letters of `tenant` to its archive of removed ones, stamped with the action,
    /// operator, reason and command (see scripts/dlq_remove.lua). Returns the ids removed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dlq_remove(
        &self,
        tenant: &str,
        ids: &[&str],
        action: &str,
        operator: &str,
        reason: &str,
        command_id: &str,
        archive_max_len: u64,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts().remove.key(self.keys.dlq(tenant));
        inv.key(self.keys.dlq_removed(tenant))
            .arg(archive_max_len)
            .arg(action)
            .arg(operator)
            .arg(reason)
            .arg(command_id)
            .arg(ids);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// Deletes a tenant's dead letters with an id below `before_ms` (exact XTRIM MINID).
    /// Returns how many were deleted.
    pub(crate) async fn dlq_purge(&self, tenant: &str, before_ms: u64) -> Result<u64> {
        Ok(redis::cmd("XTRIM")
            .arg(self.keys.dlq(tenant))
            .arg("MINID")
            .arg(format!("{before_ms}-0"))
            .query_async(&mut self.con())
            .await?)
    }

    /// Removed dead letters of a tenant (its archive), oldest first.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) async fn dlq_removed_range(
        &self,
        tenant: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.dlq_removed(tenant))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        reply::entries(v)
    }

    // ---- settle counts -------------------------------------------------------------------

    /// The sums of a tenant's settle counts over the minutes `from..=to`.
    pub(crate) async fn stats_sum(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, u64>> {
        let mut pipe = redis::pipe();
        for minute in from..=to {
            pipe.cmd("HGETALL").arg(self.keys.stats(tenant, minute));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        let mut out = BTreeMap::new();
        for v in replies {
            for (k, n) in hash(v).unwrap_or_default() {
                *out.entry(k).or_insert(0) += n.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// How many of a tenant's scheduled retries (and tasks held back by its breaker) are due
    /// by the server's clock (and wait for the recovery loop).
    pub(crate) async fn retry_due_count(&self, tenant: &str) -> Result<u64> {
        let now = self.server_time_ms().await?;
        let (retries, deferred): (u64, u64) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.keys.retry(tenant))
            .arg("-inf")
            .arg(now)
            .cmd("ZCOUNT")
            .arg(self.keys.deferred(tenant))
            .arg("-inf")
            .arg(now)
            .query_async(&mut self.con())
            .await?;
        Ok(retries + deferred)
    }
}
