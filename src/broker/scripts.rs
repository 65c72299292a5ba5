//! The one registry of Lua scripts: one [`Script`] per file in `scripts/`, named after it and
//! loaded once per process. `Script` sends EVALSHA and reloads the script when the server lost
//! it (a restart, SCRIPT FLUSH), so nothing else manages script caches.

use std::sync::OnceLock;

use redis::Script;

/// scripts/oom_probe.lua's text: on a cluster it is sent with EVAL to each master in turn
/// (connect.rs), as a key-less script cannot be routed to a chosen node by [`Script`].
pub(super) const OOM_PROBE: &str = include_str!("scripts/oom_probe.lua");

/// Every script the broker runs. Each file starts with a header naming its KEYS, ARGV and reply.
pub(super) struct Scripts {
    // ---- lanes and settling (one tenant's keys) ----
    /// One task into its lane with its record, unless its task_id is live (a duplicate).
    pub(super) enqueue: Script,
    /// Owner-checked ack + delete + settle count of a batch.
    pub(super) ack: Acking,
    /// Ack + delete + settle count without the owner check (the fast-ack window).
    pub(super) fast_ack: Acking,
    /// Owner/idle-checked move of an entry to the dead letters.
    pub(super) dead_letter: Script,
    /// Owner-checked ack + retry schedule of a batch of failed attempts.
    pub(super) retry: Acking,
    /// Owner-checked move of held-back entries to the deferred set.
    pub(super) defer: Script,
    /// Due retries and deferred tasks back into the lane.
    pub(super) promote: Script,
    /// A member's own pending entries taken up again.
    pub(super) claim: Script,
    /// Stale entries of any member taken over (XPENDING IDLE + XCLAIM, naming the previous owner).
    pub(super) autoclaim: Script,
    /// Owner check + re-delivery of a taken-over entry before it runs.
    pub(super) begin: Script,
    /// Owner check + start mark of a batch of fresh entries, with their records.
    pub(super) start: Script,
    /// Start mark of fresh entries within the fast window (no owner check), with their records.
    pub(super) start_fast: Script,
    /// Owner-checked idle reset of running entries.
    pub(super) heartbeat: Script,
    /// Owner-checked step records of a running attempt (the entry's steps hash).
    pub(super) step: Script,
    /// Read-only depth figures of one tenant.
    pub(super) depths: Script,
    /// Writes nothing; refused only while Redis is over `maxmemory`.
    pub(super) oom_probe: Script,
    // ---- member lease ----
    /// Extends the member lease while this process holds its token.
    pub(super) lease_renew: Script,
    /// Gives the member lease up while this process holds its token.
    pub(super) lease_release: Script,
    // ---- breakers and slots (one tenant's keys) ----
    /// Outcome counts into the failure window; closed → open.
    pub(super) breaker_record: Script,
    /// open → half_open after the cool-down; the single probe token.
    pub(super) breaker_probe: Script,
    /// The probe's holder decides: half_open → closed or → open.
    pub(super) breaker_probe_done: Script,
    /// Operator hold / close.
    pub(super) breaker_set: Script,
    /// Fleet-wide in-flight reservations under a cap.
    pub(super) slots: Script,
    // ---- dead letters (one tenant's keys) ----
    /// Dead letters back into the lane, counted.
    pub(super) replay: Script,
    /// Dead letters to the archive of removed ones, their records resolved / discarded.
    pub(super) dlq_remove: Script,
    /// Dead letters deleted for good, their records discarded.
    pub(super) dlq_purge: Script,
    /// A member's archiver lease on a tenant: taken, extended, given up.
    pub(super) archive_lease: Script,
    /// The batch about to be archived, recorded before its upload.
    pub(super) archive_begin: Script,
    /// The entries of a confirmed batch out of Redis, counted, their records marked archived.
    pub(super) dlq_archived: Script,
    /// Archived dead letters back into the stream, once each, counted, with their records.
    pub(super) dlq_restore: Script,
    /// One bounded step of the sweep over a tenant's record index.
    pub(super) records_sweep: Script,
    /// Read-only: a task's record as readers show it (running from the PEL, done from the
    /// done log).
    pub(super) task_read: Script,
    /// Read-only counts of a page of dead letters.
    pub(super) dlq_tally: Script,
    /// Read-only step of a filtered scan of dead letters, matched on the server.
    pub(super) dlq_page: Script,
    /// Read-only sums of a tenant's per-minute settle counts over a window.
    pub(super) stats_window: Script,
    /// One step of the upkeep of a tenant's dead-letter counts (a check, or a rebuild step).
    pub(super) dlq_counts: Script,
    /// Read-only: a tenant's dead-letter counts and its stream's length, together.
    pub(super) dlq_counts_read: Script,
    /// One review move (assign, escalate, note) on listed dead letters; an escalation to the
    /// tenant appends its notification.
    pub(super) dlq_review: Script,
    /// Folds a fingerprint's dead letters under one representative.
    pub(super) dlq_fold: Script,
    /// A bounded step towards the oldest unowned dead letter.
    pub(super) dlq_unowned: Script,
    // ---- tenant notifications (one tenant's keys) ----
    /// One tick of a tenant's delivery: lease, digest and breaker events into the outbox,
    /// where each target stands.
    pub(super) notify_tick: Script,
    /// What became of one delivery attempt.
    pub(super) notify_ack: Script,
    // ---- admin commands and jobs (`{@admin}` keys) ----
    /// Claims the one execution of a command.
    pub(super) admin_begin: Script,
    /// Result + audit + ack/delete of a command entry.
    pub(super) admin_finish: Script,
    /// An admin loop's beat: live set and running commands kept fresh.
    pub(super) admin_beat: Script,
    /// Members whose admin loop beat recently.
    pub(super) admin_live: Script,
    /// Withdraws a command nobody started.
    pub(super) admin_withdraw: Script,
    /// Asks a replay job to stop.
    pub(super) job_cancel: Script,
    // ---- browser sessions of the HTTP API (`{@admin}` keys) ----
    /// Starts a session: its hash and idle timeout.
    pub(super) session_open: Script,
    /// A session presented: marked seen, idle timeout renewed, never past its maximum age.
    pub(super) session_touch: Script,
}

/// A script that acks and deletes a batch through lib/chunks.lua's `ackdel`, built twice: with
/// `XACKDEL` for servers that have it (Redis ≥ 8.2, as [`ServerInfo`](super::server::ServerInfo)
/// probed) and with `XACK` + `XDEL` for the others (Redis 7.0, Valkey 8).
pub(super) struct Acking {
    plain: Script,
    xackdel: Script,
}

impl Acking {
    fn new(source: &str) -> Self {
        Acking {
            plain: Script::new(&format!("local ACKDEL = false\n{source}")),
            xackdel: Script::new(&format!("local ACKDEL = true\n{source}")),
        }
    }

    /// The build for a server that has `XACKDEL` (`xackdel`) or not.
    pub(super) fn on(&self, xackdel: bool) -> &Script {
        if xackdel {
            &self.xackdel
        } else {
            &self.plain
        }
    }
}

/// enqueue.lua with its prelude, as Redis runs it: the text the SDKs ship byte for byte.
pub(crate) fn enqueue_source() -> &'static str {
    concat!(
        include_str!("scripts/lib/record.lua"),
        include_str!("scripts/enqueue.lua")
    )
}

/// task_read.lua, as Redis runs it: the text the SDKs ship byte for byte.
pub(crate) fn task_read_source() -> &'static str {
    include_str!("scripts/task_read.lua")
}

/// The scripts, loaded once per process.
pub(super) fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        enqueue: Script::new(enqueue_source()),
        ack: Acking::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/chunks.lua"),
            include_str!("scripts/ack.lua")
        )),
        fast_ack: Acking::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/chunks.lua"),
            include_str!("scripts/fast_ack.lua")
        )),
        dead_letter: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/steps.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/lib/notify.lua"),
            include_str!("scripts/dead_letter.lua")
        )),
        retry: Acking::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/chunks.lua"),
            include_str!("scripts/lib/steps.lua"),
            include_str!("scripts/lib/owned.lua"),
            include_str!("scripts/retry.lua")
        )),
        defer: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/task_id.lua"),
            include_str!("scripts/lib/steps.lua"),
            include_str!("scripts/lib/owned.lua"),
            include_str!("scripts/defer.lua")
        )),
        promote: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/task_id.lua"),
            include_str!("scripts/promote.lua")
        )),
        claim: Script::new(include_str!("scripts/claim.lua")),
        autoclaim: Script::new(include_str!("scripts/autoclaim.lua")),
        begin: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/task_id.lua"),
            include_str!("scripts/lib/steps.lua"),
            include_str!("scripts/begin.lua")
        )),
        start: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/start.lua")
        )),
        start_fast: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/start_fast.lua")
        )),
        heartbeat: Script::new(include_str!("scripts/heartbeat.lua")),
        step: Script::new(include_str!("scripts/step.lua")),
        depths: Script::new(include_str!("scripts/depths.lua")),
        oom_probe: Script::new(OOM_PROBE),
        lease_renew: Script::new(include_str!("scripts/lease_renew.lua")),
        lease_release: Script::new(include_str!("scripts/lease_release.lua")),
        breaker_record: Script::new(include_str!("scripts/breaker_record.lua")),
        breaker_probe: Script::new(include_str!("scripts/breaker_probe.lua")),
        breaker_probe_done: Script::new(include_str!("scripts/breaker_probe_done.lua")),
        breaker_set: Script::new(include_str!("scripts/breaker_set.lua")),
        slots: Script::new(include_str!("scripts/slots.lua")),
        replay: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/replay.lua")
        )),
        dlq_remove: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_remove.lua")
        )),
        dlq_purge: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_purge.lua")
        )),
        archive_lease: Script::new(include_str!("scripts/archive_lease.lua")),
        archive_begin: Script::new(include_str!("scripts/archive_begin.lua")),
        dlq_archived: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_archived.lua")
        )),
        dlq_restore: Script::new(concat!(
            include_str!("scripts/lib/record.lua"),
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/dlq_restore.lua")
        )),
        records_sweep: Script::new(include_str!("scripts/records_sweep.lua")),
        task_read: Script::new(task_read_source()),
        dlq_tally: Script::new(include_str!("scripts/dlq_tally.lua")),
        dlq_page: Script::new(concat!(
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_page.lua")
        )),
        stats_window: Script::new(include_str!("scripts/stats_window.lua")),
        dlq_counts: Script::new(concat!(
            include_str!("scripts/lib/dlq_counts.lua"),
            include_str!("scripts/dlq_counts.lua")
        )),
        dlq_counts_read: Script::new(include_str!("scripts/dlq_counts_read.lua")),
        dlq_review: Script::new(concat!(
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_review.lua")
        )),
        dlq_fold: Script::new(concat!(
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_fold.lua")
        )),
        dlq_unowned: Script::new(concat!(
            include_str!("scripts/lib/review.lua"),
            include_str!("scripts/dlq_unowned.lua")
        )),
        notify_tick: Script::new(include_str!("scripts/notify_tick.lua")),
        notify_ack: Script::new(include_str!("scripts/notify_ack.lua")),
        admin_begin: Script::new(include_str!("scripts/admin_begin.lua")),
        admin_finish: Script::new(include_str!("scripts/admin_finish.lua")),
        admin_beat: Script::new(include_str!("scripts/admin_beat.lua")),
        admin_live: Script::new(include_str!("scripts/admin_live.lua")),
        admin_withdraw: Script::new(include_str!("scripts/admin_withdraw.lua")),
        job_cancel: Script::new(include_str!("scripts/job_cancel.lua")),
        session_open: Script::new(include_str!("scripts/session_open.lua")),
        session_touch: Script::new(include_str!("scripts/session_touch.lua")),
    })
}

/// Every script file (its name without `.lua`) with the SHA1 of each build of it (two for
/// the acking scripts: XACK + XDEL, XACKDEL), for tests that find which scripts a server ran.
#[cfg(test)]
pub(super) fn hashes() -> Vec<(&'static str, Vec<String>)> {
    let s = scripts();
    vec![
        ("enqueue", vec![s.enqueue.get_hash().to_owned()]),
        (
            "ack",
            vec![
                s.ack.on(false).get_hash().to_owned(),
                s.ack.on(true).get_hash().to_owned(),
            ],
        ),
        (
            "fast_ack",
            vec![
                s.fast_ack.on(false).get_hash().to_owned(),
                s.fast_ack.on(true).get_hash().to_owned(),
            ],
        ),
        ("dead_letter", vec![s.dead_letter.get_hash().to_owned()]),
        (
            "retry",
            vec![
                s.retry.on(false).get_hash().to_owned(),
                s.retry.on(true).get_hash().to_owned(),
            ],
        ),
        ("defer", vec![s.defer.get_hash().to_owned()]),
        ("promote", vec![s.promote.get_hash().to_owned()]),
        ("claim", vec![s.claim.get_hash().to_owned()]),
        ("autoclaim", vec![s.autoclaim.get_hash().to_owned()]),
        ("begin", vec![s.begin.get_hash().to_owned()]),
        ("start", vec![s.start.get_hash().to_owned()]),
        ("start_fast", vec![s.start_fast.get_hash().to_owned()]),
        ("heartbeat", vec![s.heartbeat.get_hash().to_owned()]),
        ("step", vec![s.step.get_hash().to_owned()]),
        ("depths", vec![s.depths.get_hash().to_owned()]),
        ("oom_probe", vec![s.oom_probe.get_hash().to_owned()]),
        ("lease_renew", vec![s.lease_renew.get_hash().to_owned()]),
        ("lease_release", vec![s.lease_release.get_hash().to_owned()]),
        (
            "breaker_record",
            vec![s.breaker_record.get_hash().to_owned()],
        ),
        ("breaker_probe", vec![s.breaker_probe.get_hash().to_owned()]),
        (
            "breaker_probe_done",
            vec![s.breaker_probe_done.get_hash().to_owned()],
        ),
        ("breaker_set", vec![s.breaker_set.get_hash().to_owned()]),
        ("slots", vec![s.slots.get_hash().to_owned()]),
        ("replay", vec![s.replay.get_hash().to_owned()]),
        ("dlq_remove", vec![s.dlq_remove.get_hash().to_owned()]),
        ("dlq_purge", vec![s.dlq_purge.get_hash().to_owned()]),
        ("archive_lease", vec![s.archive_lease.get_hash().to_owned()]),
        ("archive_begin", vec![s.archive_begin.get_hash().to_owned()]),
        ("dlq_archived", vec![s.dlq_archived.get_hash().to_owned()]),
        ("dlq_restore", vec![s.dlq_restore.get_hash().to_owned()]),
        ("records_sweep", vec![s.records_sweep.get_hash().to_owned()]),
        ("task_read", vec![s.task_read.get_hash().to_owned()]),
        ("dlq_tally", vec![s.dlq_tally.get_hash().to_owned()]),
        ("dlq_page", vec![s.dlq_page.get_hash().to_owned()]),
        ("stats_window", vec![s.stats_window.get_hash().to_owned()]),
        ("dlq_counts", vec![s.dlq_counts.get_hash().to_owned()]),
        (
            "dlq_counts_read",
            vec![s.dlq_counts_read.get_hash().to_owned()],
        ),
        ("dlq_review", vec![s.dlq_review.get_hash().to_owned()]),
        ("dlq_fold", vec![s.dlq_fold.get_hash().to_owned()]),
        ("dlq_unowned", vec![s.dlq_unowned.get_hash().to_owned()]),
        ("notify_tick", vec![s.notify_tick.get_hash().to_owned()]),
        ("notify_ack", vec![s.notify_ack.get_hash().to_owned()]),
        ("admin_begin", vec![s.admin_begin.get_hash().to_owned()]),
        ("admin_finish", vec![s.admin_finish.get_hash().to_owned()]),
        ("admin_beat", vec![s.admin_beat.get_hash().to_owned()]),
        ("admin_live", vec![s.admin_live.get_hash().to_owned()]),
        (
            "admin_withdraw",
            vec![s.admin_withdraw.get_hash().to_owned()],
        ),
        ("job_cancel", vec![s.job_cancel.get_hash().to_owned()]),
        ("session_open", vec![s.session_open.get_hash().to_owned()]),
        ("session_touch", vec![s.session_touch.get_hash().to_owned()]),
    ]
}

#[cfg(test)]
mod tests {
    /// Every file in `scripts/` is in the registry (one `include_str!` each), so a new script
    /// cannot be loaded from a second place.
    #[test]
    fn every_script_file_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/broker/scripts");
        let registry = include_str!("scripts.rs");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lua"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 50);
        let mut named: Vec<String> = super::hashes()
            .into_iter()
            .map(|(n, _)| format!("{n}.lua"))
            .collect();
        named.sort();
        assert_eq!(named, files, "hashes() names every script file once");
        for f in files {
            let load = format!("include_str!(\"scripts/{f}\")");
            assert_eq!(
                registry.matches(&load).count(),
                1,
                "{f} is not loaded exactly once"
            );
        }
    }

    /// lib/chunks.lua's `ackdel` in the build the server takes: pending ids are acked and
    /// deleted and counted, across chunks; ids already gone count nothing. The server's probe
    /// decides the build (XACKDEL from Redis 8.2 on; the test suite runs on 7.0, 8.2 and
    /// Valkey 8, see scripts/servers.sh), and the XACK + XDEL build works on every server.
    #[tokio::test]
    async fn ackdel_acks_and_deletes_pending_ids_in_either_build() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut server = super::super::server::ServerInfo::from_info(&info);
        let table: redis::Value = redis::cmd("COMMAND")
            .arg(&["INFO", "XACKDEL", "HSETEX"])
            .query_async(&mut c)
            .await
            .unwrap();
        server = server.with_command_table(&table);
        let redis8 = server.flavor == super::super::server::ServerFlavor::Redis
            && server.version.is_some_and(|v| v.at_least(8, 2));
        assert_eq!(server.xackdel, redis8, "XACKDEL probed on {info:.200}");
        let mut builds = vec![false];
        if server.xackdel {
            builds.push(true);
        }
        for xackdel in builds {
            let lane = format!("lane-{xackdel}");
            let _: () = redis::cmd("XGROUP")
                .arg(&["CREATE", lane.as_str(), "g", "$", "MKSTREAM"])
                .query_async(&mut c)
                .await
                .unwrap();
            let mut pipe = redis::pipe();
            for i in 0..2_100 {
                pipe.cmd("XADD").arg(&[lane.as_str(), "*", "i"]).arg(i);
            }
            let ids: Vec<String> = pipe.query_async(&mut c).await.unwrap();
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg(&[
                    "GROUP",
                    "g",
                    "me",
                    "COUNT",
                    "2100",
                    "STREAMS",
                    lane.as_str(),
                    ">",
                ])
                .query_async(&mut c)
                .await
                .unwrap();
            let source = concat!(
                include_str!("scripts/lib/chunks.lua"),
                "return ackdel(KEYS[1], ARGV[1], {unpack(ARGV, 2)})\n"
            );
            let script = super::Acking::new(source);
            // 2,050 pending ids over three chunks, and two that are not there.
            let mut asked: Vec<&str> = ids[..2_050].iter().map(String::as_str).collect();
            asked.extend(["1-999", "2-999"]);
            let n: u64 = script
                .on(xackdel)
                .key(&lane)
                .arg("g")
                .arg(&asked)
                .invoke_async(&mut c)
                .await
                .unwrap();
            assert_eq!(n, 2_050, "build xackdel={xackdel}");
            // Again (an ack repeated after a lost reply): nothing left to ack.
            let again: u64 = script
                .on(xackdel)
                .key(&lane)
                .arg("g")
                .arg(&asked)
                .invoke_async(&mut c)
                .await
                .unwrap();
            assert_eq!(again, 0);
            let len: u64 = redis::cmd("XLEN")
                .arg(&lane)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(len, 50, "only the 50 not asked for stay");
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&[lane.as_str(), "g"])
                .query_async(&mut c)
                .await
                .unwrap();
            let redis::Value::Array(summary) = pending else {
                panic!("XPENDING summary: {pending:?}")
            };
            assert_eq!(summary.first(), Some(&redis::Value::Int(50)));
        }
    }

    /// lib/owned.lua: the ids pending for the consumer, read by ranged XPENDING pages of 1000,
    /// whatever order the ids come in; another consumer's, acked and malformed ids are left out.
    #[tokio::test]
    async fn owned_finds_the_consumers_pending_ids_across_pages() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let cmd = |name: &str| redis::cmd(name);
        let _: () = cmd("XGROUP")
            .arg(&["CREATE", "s", "g", "$", "MKSTREAM"])
            .query_async(&mut c)
            .await
            .unwrap();
        let mut pipe = redis::pipe();
        for i in 0..2_500 {
            pipe.cmd("XADD").arg(&["s", "*", "i"]).arg(i);
        }
        let ids: Vec<String> = pipe.query_async(&mut c).await.unwrap();
        // The first 2,400 go to `me`, the rest to `other`; one of mine is acked.
        let _: redis::Value = cmd("XREADGROUP")
            .arg(&["GROUP", "g", "me", "COUNT", "2400", "STREAMS", "s", ">"])
            .query_async(&mut c)
            .await
            .unwrap();
        let _: redis::Value = cmd("XREADGROUP")
            .arg(&["GROUP", "g", "other", "COUNT", "100", "STREAMS", "s", ">"])
            .query_async(&mut c)
            .await
            .unwrap();
        let _: u64 = cmd("XACK")
            .arg(&["s", "g", ids[1_000].as_str()])
            .query_async(&mut c)
            .await
            .unwrap();
        // Asked in reverse order, with another's, an acked one and a malformed one.
        let mut asked: Vec<&str> = vec![ids[2_450].as_str(), "not-an-id", ids[1_000].as_str()];
        asked.extend(ids[..2_400].iter().rev().map(String::as_str));
        let script = redis::Script::new(concat!(
            include_str!("scripts/lib/owned.lua"),
            "local got = {}\n",
            "for id in pairs(owned(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 3)})) do\n",
            "  got[#got + 1] = id\n",
            "end\n",
            "return got\n"
        ));
        let mut got: Vec<String> = script
            .key("s")
            .arg("g")
            .arg("me")
            .arg(&asked)
            .invoke_async(&mut c)
            .await
            .unwrap();
        got.sort_by_key(|id| {
            let (ms, seq) = id.split_once('-').unwrap();
            (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
        });
        let mut want: Vec<String> = ids[..2_400].to_vec();
        want.remove(1_000);
        assert_eq!(got, want);
        // Nothing parsable: nothing owned, no error.
        let none: Vec<String> = script
            .key("s")
            .arg("g")
            .arg("me")
            .arg("x")
            .invoke_async(&mut c)
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
