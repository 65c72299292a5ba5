//! The admin command stream and what surrounds it: the fleet's group on it, submitting,
//! claiming and re-delivering commands, the exactly-once record of each command (begin,
//! finish, withdraw), the admin loops' beats and live set, and the audit trail. Every script
//! here touches admin keys (`{@admin}`) only.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::claims::{claim_step, ClaimStep};
use super::connect::Broker;
use super::error::is_code;
use super::reply::{self, array, hash, int_or_zero, text_or_empty, Entry};
use super::running::Begin;
use super::scripts::scripts;
use crate::error::{Error, Result};

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
pub enum FinishMode<'a> {
    /// Record the result (JSON) and audit it (only while the record runs this entry).
    Result(&'a str),
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

impl Broker {
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
        let mut inv = scripts().claim.key(self.keys.admin_commands());
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
    pub(crate) async fn admin_reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
        max_deliveries: u64,
        skip: &[String],
    ) -> Result<ClaimStep> {
        let mut inv = scripts().autoclaim.key(self.keys.admin_commands());
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
    pub(crate) async fn admin_redeliver(&self, consumer: &str, entry_id: &str) -> Result<Begin> {
        self.begin_on(self.keys.admin_commands(), consumer, entry_id)
            .await
    }

    /// Claims the execution of command `command_id` carried by `entry` (see
    /// scripts/admin_begin.lua); the record keeps `tenants`, the tenants the command touches
    /// (JSON).
    pub(crate) async fn admin_begin(
        &self,
        command_id: &str,
        entry: &str,
        executor: &str,
        deadline_ms: u64,
        keep: Duration,
        tenants: &str,
    ) -> Result<BeginCommand> {
        let mut inv = scripts()
            .admin_begin
            .key(self.keys.admin_command(command_id));
        inv.arg(entry)
            .arg(executor)
            .arg(deadline_ms)
            .arg(keep.as_millis() as u64)
            .arg(tenants);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "admin_begin.lua", None)?.into_iter();
        let state = parts.next().map(text_or_empty).unwrap_or_default();
        let arg = parts.next().unwrap_or(Value::Nil);
        match state.as_str() {
            "run" => Ok(BeginCommand::Run(int_or_zero(arg))),
            "done" => Ok(BeginCommand::Done(text_or_empty(arg))),
            "running" => Ok(BeginCommand::Running(text_or_empty(arg))),
            "expired" => Ok(BeginCommand::Expired(text_or_empty(arg))),
            other => Err(Error::Protocol(format!(
                "admin_begin.lua returned state '{other}'"
            ))),
        }
    }

    /// Records a command's result, audits it and settles its stream entry, atomically (see
    /// scripts/admin_finish.lua). Returns whether the result or note was written.
    pub(crate) async fn admin_finish(
        &self,
        command_id: &str,
        entry: &str,
        mode: FinishMode<'_>,
        keep: Duration,
        audit_max_len: u64,
        audit: &[(&str, String)],
    ) -> Result<bool> {
        let mut inv = scripts().admin_finish.key(self.keys.admin_commands());
        inv.key(self.keys.admin_command(command_id))
            .key(self.keys.admin_audit())
            .arg(&*self.group)
            .arg(entry)
            .arg(match mode {
                FinishMode::Result(_) => "result",
                FinishMode::Note => "note",
                FinishMode::Ack => "ack",
            })
            .arg(match mode {
                FinishMode::Result(json) => json,
                FinishMode::Note | FinishMode::Ack => "",
            })
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
        let mut inv = scripts().admin_beat.key(self.keys.admin_members());
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
        let mut inv = scripts().admin_live.key(self.keys.admin_members());
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
        let mut inv = scripts()
            .admin_withdraw
            .key(self.keys.admin_command(command_id));
        inv.arg(keep.as_millis() as u64);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut parts = array(v, "admin_withdraw.lua", None)?.into_iter();
        let state = parts.next().map(text_or_empty).unwrap_or_default();
        let member = parts.next().map(text_or_empty).unwrap_or_default();
        if state == "withdrawn" {
            Ok(Withdraw::Withdrawn)
        } else {
            Ok(Withdraw::Found { state, member })
        }
    }

    /// Notes the tenants a command sent through the HTTP API touches (`tenants`: JSON), kept
    /// for `keep` like the command's record, so a tenant-scoped token can follow it while no
    /// member has begun it (then the record's own `tenants`, written by the member, answer).
    pub(crate) async fn admin_set_scope(
        &self,
        command_id: &str,
        tenants: &str,
        keep: Duration,
    ) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(self.keys.admin_scope(command_id))
            .arg(tenants)
            .arg("PX")
            .arg(keep.as_millis() as u64)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The tenants noted by [`Broker::admin_set_scope`] for a command, if any.
    pub(crate) async fn admin_scope(&self, command_id: &str) -> Result<Option<String>> {
        Ok(redis::cmd("GET")
            .arg(self.keys.admin_scope(command_id))
            .query_async(&mut self.con())
            .await?)
    }

    /// The admin stream's entry `entry` (a command not yet settled: queued or running), if it
    /// is still there.
    pub(crate) async fn admin_command_entry(&self, entry: &str) -> Result<Option<Entry>> {
        let v: Value = redis::cmd("XRANGE")
            .arg(self.keys.admin_commands())
            .arg(entry)
            .arg(entry)
            .query_async(&mut self.con())
            .await?;
        Ok(reply::entries(v)?.into_iter().next())
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
}
