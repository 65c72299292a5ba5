//! Metric names, all with the `redrive_` prefix: the one catalogue (dashboards, rules and
//! tests/observability.rs read it).

/// Counter{tenant}: entries read from lanes (first delivery or redelivery).
pub const TASKS_READ: &str = "redrive_tasks_read_total";
/// Counter{via}: tenants a member started serving, by how it found them: `connect` (its start
/// or a reconnect), `signal` (a producer announced the new tenant), `poll` (the periodic look).
pub const TENANTS_DISCOVERED: &str = "redrive_tenants_discovered_total";
/// Counter{tenant}: tasks acked as done.
pub const TASKS_COMPLETED: &str = "redrive_tasks_completed_total";
/// Counter{tenant,class}: failed attempts.
pub const TASKS_FAILED: &str = "redrive_tasks_failed_total";
/// Counter{tenant,class}: tasks moved to the dead letters.
pub const DEAD_LETTERED: &str = "redrive_dead_lettered_total";
/// Counter{tenant}: dead letters deleted WITHOUT an archive because a stream passed its hard
/// ceiling (`dead_letter.hard_max_len`; the dead-letter stream, or the stream of resolved and
/// discarded ones): content lost, which only happens while the archive is unreachable. The
/// cap itself archives before it removes (`redrive_dlq_archived_total`).
pub const DLQ_TRIMMED: &str = "redrive_dlq_trimmed_total";
/// Counter{tenant,class}: dead letters moved out of Redis into the archive after their
/// object was written and confirmed; `class` `dead_letter` (past the cap or the retention),
/// `resolved`, `discarded` (after the grace period).
pub const DLQ_ARCHIVED: &str = "redrive_dlq_archived_total";
/// Counter{tenant}: bytes of archive objects written (compressed; a retried upload counts
/// again).
pub const DLQ_ARCHIVED_BYTES: &str = "redrive_dlq_archived_bytes_total";
/// Counter{tenant,op}: archive steps that failed, by `op`: `read` (Redis, the batch's
/// entries), `write` (an object or manifest upload), `confirm` (the object not there, or of
/// another size, after its upload), `remove` (the removal script). Nothing leaves Redis after
/// a failure; the batch is tried again.
pub const DLQ_ARCHIVE_ERRORS: &str = "redrive_dlq_archive_errors_total";
/// Gauge{tenant}: dead letters due for the archive and still in Redis (past the cap or the
/// retention, removed ones past the grace period; the retention and grace parts counted up to
/// one batch), as the member holding the tenant's archiver lease saw it last.
pub const DLQ_ARCHIVE_BACKLOG: &str = "redrive_dlq_archive_backlog";
/// Gauge{tenant}: seconds since the tenant's archive backlog was last empty (0 while it is),
/// as the member holding its archiver lease sees it: grows while the archive is unreachable.
pub const DLQ_ARCHIVE_BACKLOG_AGE: &str = "redrive_dlq_archive_backlog_age_seconds";
/// Counter{tenant}: pending ids whose entry was deleted (payload lost before it ran).
pub const TOMBSTONES: &str = "redrive_tombstones_total";
/// Counter{tenant}: settles that found the entry already settled by someone else.
pub const SETTLE_LOST: &str = "redrive_settle_lost_total";
/// Counter{tenant}: settles whose call was tried again after a reply was lost (a timeout,
/// a dropped connection) and then found the entry no longer pending: most likely settled
/// by the earlier try (its Redis stats counted it), not by another member.
pub const SETTLE_REPLY_LOST: &str = "redrive_settle_reply_lost_total";
/// Counter{tenant,class}: failed attempts scheduled for another attempt.
pub const TASKS_RETRIED: &str = "redrive_tasks_retried_total";
/// Counter{tenant}: tasks completed after an earlier failure or a replay.
pub const TASKS_RECOVERED: &str = "redrive_tasks_recovered_total";
/// Counter{tenant,side}: duplicates refused: `side="producer"` an enqueue of a task_id whose
/// record is live, `side="member"` an entry whose task was already done, acked without
/// running.
pub const DUPLICATES: &str = "redrive_duplicates_total";
/// Counter{tenant,state}: task records this member's moves wrote (acks, retries, deferrals,
/// promotions, dead letters, the starts that write one — an entry published without its
/// record, a takeover; an enqueued task's start writes none — and the admin moves it
/// executed: replays, resolves, discards, purges), by the state written.
pub const RECORDS_WRITTEN: &str = "redrive_task_records_written_total";
/// Counter{tenant}: scheduled retries moved back into their lane.
pub const RETRIES_PROMOTED: &str = "redrive_retries_promoted_total";
/// Counter{tenant}: stale entries taken over from another member.
pub const RECLAIMED: &str = "redrive_reclaimed_total";
/// Counter{tenant}: entries a heartbeat found taken over by another member.
pub const OWNERSHIP_LOST: &str = "redrive_ownership_lost_total";
/// Counter: events counted under the `__other__` tenant because the label cap was reached.
pub const TENANT_LABEL_OVERFLOW: &str = "redrive_tenant_label_overflow_total";
/// Histogram: handler run time of one attempt, seconds.
pub const TASK_DURATION: &str = "redrive_task_duration_seconds";
/// Histogram: time from enqueue to the start of an attempt, seconds.
pub const QUEUE_WAIT: &str = "redrive_queue_wait_seconds";
/// Gauge: attempts running in this member.
pub const IN_FLIGHT: &str = "redrive_in_flight";
/// Counter: errors talking to Redis, by operation.
pub const REDIS_ERRORS: &str = "redrive_redis_errors_total";
/// Gauge{tenant}: entries in the lane (waiting or pending), top tenants + `__other__`.
pub const LANE_DEPTH: &str = "redrive_lane_depth";
/// Gauge{tenant}: entries delivered and not yet settled.
pub const PENDING: &str = "redrive_pending";
/// Gauge{tenant}: entries not yet delivered to the group (Redis 7 consumer-group lag).
pub const LAG: &str = "redrive_lag";
/// Gauge{tenant}: retries scheduled.
pub const RETRIES_SCHEDULED: &str = "redrive_retries_scheduled";
/// Gauge{tenant}: scheduled retries already due (the recovery loop is behind when this grows).
pub const RETRIES_OVERDUE: &str = "redrive_retries_overdue";
/// Gauge{tenant}: entries in the dead-letter stream; non-empty streams only.
pub const DLQ_DEPTH: &str = "redrive_dlq_depth";
/// Gauge{tenant}: seconds since the tenant's oldest dead letter that nobody owns (review
/// state `new`: not in review, not escalated, not folded) was dead-lettered; 0 when none. Set
/// by every member's health refresh (a bounded step behind a cursor, never a full scan); top
/// tenants by age, the oldest of the rest under `__other__`.
pub const DLQ_UNOWNED_AGE: &str = "redrive_dlq_oldest_unowned_age";
/// Gauge{version}: always 1.
pub const BUILD_INFO: &str = "redrive_build_info";
/// Gauge: 1 while this member is ready (Redis answers, reads or settles progress).
pub const READY: &str = "redrive_ready";
/// Gauge: 1 while Redis refuses writes for memory (over `maxmemory`), as this member sees
/// it: acks go on, retries, dead letters and deferrals wait (pending) until it is 0 again.
pub const REDIS_OOM: &str = "redrive_redis_oom";
/// Gauge{flavor,version}: 1, naming the server this member is connected to as probed at
/// connect (`INFO server`): `flavor` `redis` or `valkey`, `version` its own (`7.0.15`, or
/// `unknown` when the server would not say).
pub const REDIS_INFO: &str = "redrive_redis_info";
/// Counter{what}: writes (`what`: `enqueue` batches, `settle` calls) whose `WAIT` for
/// `redis.wait_replicas` replicas got fewer within `redis.wait_timeout_ms`: acknowledged, but a
/// failover of their node before the replicas catch up would lose them.
pub const REDIS_WAIT_SHORT: &str = "redrive_redis_wait_short_total";

/// Gauge{tenant,state}: 1 while the tenant's breaker is `open` or `half_open`, as this
/// member last saw it; set to 0 when it closes and then no longer updated, so the series
/// exists only while the breaker is not closed.
pub const BREAKER_STATE: &str = "redrive_breaker_state";
/// Counter{tenant,from,to,reason}: breaker transitions this member made (each transition
/// is made by exactly one script call, so `sum` over members counts each once; operators'
/// transitions are in the tenant's breaker log). reason: failure_threshold,
/// cooldown_elapsed, probe_succeeded, probe_failed.
pub const BREAKER_TRANSITIONS: &str = "redrive_breaker_transitions_total";
/// Counter{tenant}: tasks held back unattempted (deferred to the retry schedule) because
/// their tenant's breaker was not closed.
pub const TASKS_DEFERRED: &str = "redrive_tasks_deferred_total";
/// Gauge{tenant}: the tenant's entries this member holds (read, not settled); `sum by
/// (tenant)` over members is the fleet-wide in-flight the cap applies to.
pub const TENANT_IN_FLIGHT: &str = "redrive_tenant_in_flight";
/// Counter{tenant}: attempts that ran to an outcome (added once per isolation refresh, so
/// the hot path takes no label lock). Share of work:
/// `sum by (tenant) (rate(X[5m])) / on () group_left sum(rate(X[5m]))`.
pub const TENANT_ATTEMPTS: &str = "redrive_tenant_attempts_total";
/// Counter{tenant}: reads that asked for more of a tenant's slots than its fleet-wide cap
/// left (the tenant waited for its share).
pub const TENANT_CAPPED: &str = "redrive_tenant_capped_total";
/// Counter{command,outcome}: admin commands executed (by a fleet member or `--local`).
pub const ADMIN_COMMANDS: &str = "redrive_admin_commands_total";
/// Counter{tenant}: dead letters replayed into their lane.
pub const DLQ_REPLAYED: &str = "redrive_dlq_replayed_total";
/// Counter{handler,outcome}: attempts of `http` agent handlers by what the exchange came to
/// (`ok`, a failure class, or `unclassified`: a fail reply without a known class), before the
/// step rules (`partial_execution`) apply. `handler` is `<index>:http`, the `[[handlers]]`
/// entry.
pub const HTTP_ATTEMPTS: &str = "redrive_http_attempts_total";
/// Histogram{handler,outcome}: seconds from sending an `http` attempt's request to the end
/// of its reply (or its failure), streamed replies included.
pub const HTTP_ATTEMPT_DURATION: &str = "redrive_http_attempt_duration_seconds";

/// Gauge{handler}: agent processes running for a `pool` or `exec` handler (`handler` is the
/// entry's `<index>:<type>`, e.g. `0:pool`).
pub const AGENT_PROCESSES: &str = "redrive_agent_processes";
/// Counter{handler,reason}: pool processes replaced, by why the previous one ended: `exit`
/// (it exited or was killed), `protocol` (it broke the stdio protocol), `timeout` (an attempt
/// timed out or was abandoned, its group was killed), `spawn_failed` (it could not be started).
pub const AGENT_RESTARTS: &str = "redrive_agent_restarts_total";
/// Counter{handler}: stderr lines of agent processes forwarded to the member's log.
pub const AGENT_STDERR_LINES: &str = "redrive_agent_stderr_lines_total";
/// Counter{handler,outcome}: attempts a `pool` or `exec` handler finished, by outcome (`ok`, a
/// failure class, or `error` for a failure without a class), before the executor's checks.
pub const AGENT_ATTEMPTS: &str = "redrive_agent_attempts_total";

/// Counter{result}: step checkpoints written to Redis, by result: `recorded` (stored),
/// `fenced` (refused: the member no longer owns the entry), `failed` (Redis failed; the step
/// is still in the attempt's memory, not in Redis).
pub const STEP_RECORDS: &str = "redrive_step_records_total";
/// Counter{route}: attempts started, by route (`<index>:<type>` of the `[[handlers]]` entry:
/// bounded by the routing table).
pub const ROUTE_ATTEMPTS: &str = "redrive_route_attempts_total";

/// Counter{tenant}: index entries of expired task records removed by the index sweep (each
/// record once, by the member whose sweep step found it expired).
pub const TASK_RECORDS_EXPIRED: &str = "redrive_task_records_expired_total";
/// Counter{found}: task lookups by id made by this process (`found` = `record`: its record
/// answered; `located`: no record, found by scanning where tasks wait; `none`: not found).
pub const TASK_LOOKUPS: &str = "redrive_task_lookups_total";

/// Counter{route,method,status}: requests the HTTP API answered (`redrive serve`, or the API
/// inside a member), by route template (never the raw path: `/api/v1/tenants/{tenant}`;
/// `unmatched` for a path no route has), method and status code.
pub const API_REQUESTS: &str = "redrive_api_requests_total";
/// Histogram{route}: seconds from a request's arrival to its answer's head (a streamed
/// export's body goes on after), by route template.
pub const API_REQUEST_DURATION: &str = "redrive_api_request_duration_seconds";
/// Counter{result}: console logins (`redrive serve`'s login page) by result: `ok` (a session
/// was opened), `bad_token` (no configured token matched), `rate_limited` (refused by the
/// per-address or global limit before the token was looked at).
pub const API_LOGINS: &str = "redrive_api_logins_total";
/// Counter{event}: log lines not written one by one because a storm repeated them (the first
/// line of each cause per `log.storm_interval_ms` is written, the rest counted into one
/// summary line); `event` is the line's event (`attempt_failed`, `dead_lettered`, …). Every
/// other metric still counts every event.
pub const LOG_LINES_SUPPRESSED: &str = "redrive_log_lines_suppressed_total";

/// Counter{tenant,event}: tenant notifications delivered (a 2xx from the target), by event
/// type (`dead_lettered`, `escalated`, `breaker_opened`, `breaker_closed`).
pub const NOTIFY_SENT: &str = "redrive_notify_sent_total";
/// Counter{tenant,event}: tenant notifications given up after `notify.max_attempts` (the
/// delivery log says `failed`; the target's next event is sent).
pub const NOTIFY_FAILED: &str = "redrive_notify_failed_total";
/// Counter{tenant}: notification attempts that failed and will be tried again (with backoff).
pub const NOTIFY_RETRIES: &str = "redrive_notify_retries_total";
/// Counter{tenant}: delivery ticks that held events back because the tenant's
/// `notify.rate_per_minute` was used up (they wait, never dropped).
pub const NOTIFY_RATE_LIMITED: &str = "redrive_notify_rate_limited_total";
/// Gauge{tenant}: events waiting in the tenant's notification outbox, as the member
/// delivering them (the lease holder) last saw it.
pub const NOTIFY_OUTBOX_DEPTH: &str = "redrive_notify_outbox_depth";
/// Gauge{tenant}: seconds since the oldest event waiting in the tenant's outbox was appended
/// (0 when empty), as the member delivering them last saw it.
pub const NOTIFY_OUTBOX_AGE: &str = "redrive_notify_outbox_oldest_age";

/// Buckets of the task-duration histogram, seconds (agent calls: ms to minutes).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of the API request-duration histogram, seconds.
pub const API_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Buckets of the queue-wait histogram, seconds.
pub const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];
