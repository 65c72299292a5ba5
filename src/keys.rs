//! Every Redis key name redrive uses is built here, and nowhere else.
//!
//! Layout (with the default prefix `redrive`):
//!
//! | key                              | type   | what it holds                                         |
//! |----------------------------------|--------|-------------------------------------------------------|
//! | `redrive:tenants`                | SET    | registry of tenants that ever had work (discovery)    |
//! | `redrive:tenants:new`            | CHANNEL| pub/sub: tenants just registered (members' discovery) |
//! | `redrive:{<tenant>}:lane`        | STREAM | the tenant's tasks, read through the fleet's group    |
//! | `redrive:{<tenant>}:retry`       | ZSET   | scheduled retries, scored by due time (ms)            |
//! | `redrive:{<tenant>}:deferred`    | ZSET   | tasks held back by the breaker, unattempted; due time |
//! | `redrive:{<tenant>}:dlq`         | STREAM | the tenant's dead letters                             |
//! | `redrive:{<tenant>}:dlq:trimmed` | STRING | dead letters that left the stream for the cap or the retention (archived, or dropped past the hard ceiling): a counter |
//! | `redrive:{<tenant>}:dlq:dropped` | STRING | of those, deleted without an archive past the hard ceiling (a counter) |
//! | `redrive:{<tenant>}:dlq:removed` | STREAM | dead letters resolved or discarded, with who and why, until archived |
//! | `redrive:{<tenant>}:dlq:restored` | HASH  | archived dead-letter id → the id it was restored as (a restore happens once) |
//! | `redrive:{<tenant>}:archive:lease` | STRING | the member archiving the tenant now (token, expiring) |
//! | `redrive:{<tenant>}:archive:batch` | HASH | the batch being archived: its source, object, ids (until removed from Redis) |
//! | `redrive:{<tenant>}:dlq:review`  | HASH   | review records of dead letters past `new` (state, owner, log), state counts |
//! | `redrive:{<tenant>}:dlq:folds`   | HASH   | folds: fingerprint → its representative dead letter   |
//! | `redrive:{<tenant>}:notify:pending` | HASH | the open dead-letter digest (count, classes, samples) |
//! | `redrive:{<tenant>}:notify:outbox` | STREAM | notifications waiting for their targets            |
//! | `redrive:{<tenant>}:notify:state` | HASH  | per target: cursor, attempts, next try; rate window; breaker-log cursor |
//! | `redrive:{<tenant>}:notify:lease` | STRING | the member delivering the tenant's notifications (expiring) |
//! | `redrive:{<tenant>}:notify:log`  | STREAM | delivery log: each attempt's outcome (capped)         |
//! | `redrive:{<tenant>}:stats:<min>` | HASH   | settle counts of one minute (health windows), expiring |
//! | `redrive:{<tenant>}:breaker`     | HASH   | the tenant's circuit breaker: state, until, probe, …  |
//! | `redrive:{<tenant>}:breaker:window` | HASH | failure window: outcome and failure counts per bucket |
//! | `redrive:{<tenant>}:breaker:log` | STREAM | every breaker transition with its reason (capped)     |
//! | `redrive:{<tenant>}:slots`       | HASH   | fleet-wide in-flight reservations, one per member     |
//! | `redrive:{<tenant>}:steps:<entry>` | HASH | steps recorded for one lane entry while it runs (see step.lua) |
//! | `redrive:{<tenant>}:task:<task_id>` | HASH | a task's record (src/records.rs), expiring after retention |
//! | `redrive:{<tenant>}:tasks`       | ZSET   | index of the tenant's records, scored by creation     |
//! | `redrive:{<tenant>}:tasks:sweep` | STRING | the index sweep's cursor (records_sweep.lua)          |
//! | `redrive:{<tenant>}:tasks:sweep-lane` | STRING | the sweep's cursor over old lane entries (records_sweep.lua) |
//! | `redrive:{<tenant>}:tasks:sweep-pace` | STRING | the sweep's pace mark, expiring: one step per interval fleet-wide (records_sweep.lua) |
//! | `redrive:{<tenant>}:done:<window>` | STREAM | done log: facts of tasks done without a record write, by the 100-s window of their entry id (lib/record.lua) |
//! | `redrive:{<tenant>}:events`      | STREAM | task finishes (task, state, entry) while one waits    |
//! | `redrive:{<tenant>}:waiters`     | ZSET   | registered waiters, scored by their expiry (ms)       |
//! | `redrive:member:<member_id>`     | STRING | lease of the fleet member running under that id       |
//! | `redrive:{@admin}:commands`      | STREAM | admin commands, read by fleet members through a group |
//! | `redrive:{@admin}:audit`         | STREAM | every admin command and its outcome (capped)          |
//! | `redrive:{@admin}:cmd:<id>`      | HASH   | one command's state and result (idempotency record)   |
//! | `redrive:{@admin}:job:<id>`      | HASH   | a batch replay's spec and progress (resumable)        |
//! | `redrive:{@admin}:scope:<id>`    | STRING | the tenants a command sent through the HTTP API touches (JSON), for its scope |
//! | `redrive:{@admin}:members`       | ZSET   | fleet members whose admin loop is alive, by last beat |
//! | `redrive:{@admin}:session:<sha256>` | HASH | a browser session of the HTTP API (token name, CSRF token, created, seen), named by its id's SHA-256, expiring |
//!
//! Every key of one tenant carries the hash tag `{<tenant>}`, so all of them live in one Redis Cluster
//! slot and every state move of that tenant can be a single atomic script. Tenant names are validated
//! by [`crate::task::validate_tenant`] and cannot contain `{`, `}` or `:`, so a tag never leaks.
//!
//! Admin-wide keys share the tag `{@admin}`: `@` cannot occur in a tenant name, so no tenant's
//! keys hash with them by name, and no script ever touches admin keys and tenant keys together.

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Key names under `prefix` (already validated by the config layer).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The registry of tenants, written by the enqueue path and read by fleet discovery.
    pub fn tenants(&self) -> String {
        format!("{}:tenants", self.prefix)
    }

    /// The pub/sub channel a producer publishes on when its registration added a tenant, so
    /// members discover it at once (not a key: it holds nothing, and the registry stays the
    /// truth; a member that missed a message finds the tenant by its periodic look).
    pub fn tenant_signals(&self) -> String {
        format!("{}:tenants:new", self.prefix)
    }

    /// The pub/sub channel a producer publishes on, on a Redis Cluster, after it enqueued: the
    /// tenants whose lanes got entries. A member's reader cannot block on its lanes there (one
    /// read over several tenants' lanes is cross-slot), so it waits for this after an empty
    /// read, up to `fleet.block_ms` (a member that missed a message reads at the next poll).
    pub fn entry_signals(&self) -> String {
        format!("{}:tenants:entries", self.prefix)
    }

    /// The stream holding a tenant's tasks.
    pub fn lane(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:lane", self.prefix, tenant)
    }

    /// The sorted set of a tenant's scheduled retries.
    pub fn retry(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:retry", self.prefix, tenant)
    }

    /// The sorted set of a tenant's tasks held back unattempted by its breaker (scored by due
    /// time, ms), apart from genuine retries so that closing the breaker can release them.
    pub fn deferred(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:deferred", self.prefix, tenant)
    }

    /// The stream of a tenant's dead letters.
    pub fn dlq(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq", self.prefix, tenant)
    }

    /// The counts of a tenant's dead letters (HASH: `n`, per fingerprint/class/kind group a
    /// count, a sample error per fingerprint), kept by the scripts that add and remove dead
    /// letters (scripts/lib/dlq_counts.lua).
    pub fn dlq_counts(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:counts", self.prefix, tenant)
    }

    /// The review records of a tenant's dead letters (HASH, scripts/lib/review.lua): one field
    /// per dead letter past `new` or with a note (its state, assignee, escalation and log as
    /// JSON), the counts of records per state, per fingerprint, and the unowned scan's cursor.
    pub fn dlq_review(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:review", self.prefix, tenant)
    }

    /// A tenant's folds (HASH): fingerprint → the dead letter that represents every dead
    /// letter with that fingerprint.
    pub fn dlq_folds(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:folds", self.prefix, tenant)
    }

    /// The open dead-letter digest of a tenant's notifications (HASH, lib/notify.lua): what
    /// dead_letter.lua added since the last digest went to the outbox.
    pub fn notify_pending(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify:pending", self.prefix, tenant)
    }

    /// A tenant's notification outbox (STREAM): events waiting for their targets.
    pub fn notify_outbox(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify:outbox", self.prefix, tenant)
    }

    /// A tenant's notification delivery state (HASH): per target its cursor in the outbox, its
    /// attempts and next try; the rate window; the breaker log's cursor.
    pub fn notify_state(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify:state", self.prefix, tenant)
    }

    /// The lease of the member delivering a tenant's notifications (STRING, expiring).
    pub fn notify_lease(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify:lease", self.prefix, tenant)
    }

    /// A tenant's notification delivery log (STREAM, capped): one entry per attempt's outcome.
    pub fn notify_log(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify:log", self.prefix, tenant)
    }

    /// The counter of dead letters the length cap has trimmed away.
    pub fn dlq_trimmed(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:trimmed", self.prefix, tenant)
    }

    /// The hash holding a tenant's circuit breaker (state, cool-down end, probe token, counts).
    pub fn breaker(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:breaker", self.prefix, tenant)
    }

    /// The hash of a tenant's breaker failure window (outcome and failure counts per bucket).
    pub fn breaker_window(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:breaker:window", self.prefix, tenant)
    }

    /// The capped stream of a tenant's breaker transitions, each with its reason.
    pub fn breaker_log(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:breaker:log", self.prefix, tenant)
    }

    /// The hash of a tenant's fleet-wide in-flight reservations: one field per member
    /// (`"<count> <expiry ms>"`) and `@peak`, the highest fleet-wide total seen.
    pub fn slots(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:slots", self.prefix, tenant)
    }

    /// The hash holding the record of task `task_id` of `tenant` (src/records.rs): its state,
    /// attempts, result and links, written by the scripts that move the task.
    pub fn task(&self, tenant: &str, task_id: &str) -> String {
        format!("{}{}", self.task_prefix(tenant), task_id)
    }

    /// The prefix of `tenant`'s task records (`task` minus the task_id): what the scripts
    /// that move tasks get, to name the record of a task_id they read (lib/record.lua).
    #[allow(dead_code)] // the writers use it (issue 14)
    pub fn task_prefix(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:task:", self.prefix, tenant)
    }

    /// The prefix of `tenant`'s done logs (`<prefix>:{t}:done:<window>`, streams of the facts
    /// of tasks done without a record write: lib/record.lua), what task_read.lua gets.
    pub fn done_prefix(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:done:", self.prefix, tenant)
    }

    /// What the scripts get in place of [`Keys::task_prefix`] while task records are off: a
    /// name in the tenant's slot (so a call stays single-slot on a cluster) that no script
    /// writes; lib/record.lua's `rec_ctx` reads its `:records-off` ending as "write no
    /// record".
    pub fn records_off(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:records-off", self.prefix, tenant)
    }

    /// What the scripts get in place of a notification key ([`Keys::notify_pending`],
    /// [`Keys::notify_outbox`]) while no notification target of the tenant wants the event:
    /// a name in the tenant's slot that no script writes (lib/notify.lua and dlq_review.lua
    /// read its `:notify-off` ending as "none").
    pub fn notify_off(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:notify-off", self.prefix, tenant)
    }

    /// The sorted set indexing a tenant's task records: member task_id, score the record's last
    /// update (ms).
    pub fn tasks(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:tasks", self.prefix, tenant)
    }

    /// The cursor of the sweep over a tenant's record index (scripts/records_sweep.lua):
    /// `<score>:<offset>`, how far the pass has come in creation order, shared by every
    /// member's recovery loop; absent between passes.
    pub fn tasks_sweep(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:tasks:sweep", self.prefix, tenant)
    }

    /// The records sweep's pace mark: set by a step for a little under the sweep's interval,
    /// so that the fleet's members step `tenant` once per interval between them.
    pub fn tasks_sweep_pace(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:tasks:sweep-pace", self.prefix, tenant)
    }

    /// The records sweep's cursor over `tenant`'s old lane entries (the last one looked at;
    /// records_sweep.lua's lane look), absent between passes.
    pub fn tasks_sweep_lane(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:tasks:sweep-lane", self.prefix, tenant)
    }

    /// The capped stream of a tenant's task finishes (`task`, `state`, `entry`): what `wait`
    /// blocks on. The scripts write it only while someone waits (see `waiters`).
    pub fn events(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:events", self.prefix, tenant)
    }

    /// The sorted set of a tenant's waiters: member a waiter's id, score when its registration
    /// expires (server clock, ms). lib/record.lua derives it from `events` (same tag).
    pub fn waiters(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:waiters", self.prefix, tenant)
    }

    /// The hash of the steps recorded for lane entry `entry_id` of `tenant` while it is in the
    /// lane (scripts/step.lua writes it, fenced by the entry's owner; every script that moves
    /// the entry out of the lane folds it into what it writes, or deletes it).
    pub fn steps(&self, tenant: &str, entry_id: &str) -> String {
        format!("{}:{{{}}}:steps:{}", self.prefix, tenant, entry_id)
    }

    /// A SCAN pattern matching every steps hash under the prefix (tests check none is left).
    #[cfg(any(test, feature = "testkit"))]
    pub fn steps_pattern(&self) -> String {
        format!("{}:{{*}}:steps:*", self.prefix)
    }

    /// The lease key of a fleet member.
    pub fn member(&self, member_id: &str) -> String {
        format!("{}:member:{}", self.prefix, member_id)
    }

    /// The tenant's archive of dead letters removed by `resolve` or `discard`, each with the
    /// operator, the reason and the command id (the tenant's part of the audit trail).
    pub fn dlq_removed(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:removed", self.prefix, tenant)
    }

    /// The counter of the tenant's dead letters deleted without an archive past the hard
    /// ceiling.
    pub fn dlq_dropped(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:dropped", self.prefix, tenant)
    }

    /// Archived dead-letter ids of the tenant that were restored, each with its new id.
    pub fn dlq_restored(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:dlq:restored", self.prefix, tenant)
    }

    /// The lease of the member archiving the tenant's dead letters.
    pub fn archive_lease(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:archive:lease", self.prefix, tenant)
    }

    /// The tenant's batch being archived (written before its upload, removed with its entries).
    pub fn archive_batch(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:archive:batch", self.prefix, tenant)
    }

    /// The tenant's settle counts for one minute (`minute` = ms since the epoch / 60,000).
    pub fn stats(&self, tenant: &str, minute: u64) -> String {
        format!("{}{}", self.stats_prefix(tenant), minute)
    }

    /// The start of the tenant's per-minute stats bucket names: the settle scripts append the
    /// minute by the server's clock (the tenant's hash tag is in the prefix).
    pub fn stats_prefix(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:stats:", self.prefix, tenant)
    }

    /// The admin command stream, read by every fleet member through the fleet's group.
    pub fn admin_commands(&self) -> String {
        format!("{}:{{@admin}}:commands", self.prefix)
    }

    /// The audit stream: one entry per admin command executed (who, when, what, why, outcome).
    pub fn admin_audit(&self) -> String {
        format!("{}:{{@admin}}:audit", self.prefix)
    }

    /// The state and result of the admin command `command_id` (its idempotency record).
    pub fn admin_command(&self, command_id: &str) -> String {
        format!("{}:{{@admin}}:cmd:{}", self.prefix, command_id)
    }

    /// The spec and progress of the batch replay job `job_id`.
    pub fn admin_job(&self, job_id: &str) -> String {
        format!("{}:{{@admin}}:job:{}", self.prefix, job_id)
    }

    /// The tenants the admin command `command_id` touches (a JSON list, or `"*"`), written by
    /// the HTTP API when it sends the command, so a tenant-scoped token can follow it.
    pub fn admin_scope(&self, command_id: &str) -> String {
        format!("{}:{{@admin}}:scope:{}", self.prefix, command_id)
    }

    /// A browser session of the HTTP API's console, named by the SHA-256 (hex) of its id: the
    /// id itself, which the browser's cookie holds, is never stored.
    pub fn admin_session(&self, id_sha256: &str) -> String {
        format!("{}:{{@admin}}:session:{}", self.prefix, id_sha256)
    }

    /// The members whose admin loop is alive, scored by their last beat (server clock, ms).
    pub fn admin_members(&self) -> String {
        format!("{}:{{@admin}}:members", self.prefix)
    }

    /// Recovers the tenant from a lane key built by [`Keys::lane`].
    #[cfg(test)]
    pub fn tenant_of_lane<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:lane")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_share_one_hash_tag() {
        let k = Keys::new("redrive");
        for key in [
            k.lane("acme"),
            k.retry("acme"),
            k.deferred("acme"),
            k.dlq("acme"),
            k.dlq_trimmed("acme"),
            k.dlq_removed("acme"),
            k.dlq_dropped("acme"),
            k.dlq_restored("acme"),
            k.archive_lease("acme"),
            k.archive_batch("acme"),
            k.stats("acme", 29_000_000),
            k.breaker("acme"),
            k.breaker_window("acme"),
            k.breaker_log("acme"),
            k.slots("acme"),
            k.steps("acme", "1-0"),
            k.dlq_review("acme"),
            k.dlq_folds("acme"),
            k.notify_pending("acme"),
            k.notify_outbox("acme"),
            k.notify_state("acme"),
            k.notify_lease("acme"),
            k.notify_log("acme"),
        ] {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            assert_eq!(&key[open + 1..close], "acme", "{key}");
        }
    }

    #[test]
    fn admin_keys_share_their_own_tag() {
        let k = Keys::new("redrive");
        for key in [
            k.admin_commands(),
            k.admin_audit(),
            k.admin_command("c-1"),
            k.admin_job("c-1"),
            k.admin_scope("c-1"),
            k.admin_session("ab12"),
            k.admin_members(),
        ] {
            assert!(key.starts_with("redrive:{@admin}:"), "{key}");
        }
        assert!(crate::task::validate_tenant("@admin").is_err());
    }

    #[test]
    fn lane_round_trips_to_tenant() {
        let k = Keys::new("p:x");
        assert_eq!(k.tenant_of_lane(&k.lane("t-1")), Some("t-1"));
        assert_eq!(k.tenant_of_lane("other:{t}:lane"), None);
        assert_eq!(k.tenant_of_lane(&k.dlq("t")), None);
    }
}
