//! Replay jobs' records: read, set, progress (with the cancel check), expiry, cancel.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::hash;
use super::scripts::scripts;
use crate::error::Result;

impl Broker {
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
}
