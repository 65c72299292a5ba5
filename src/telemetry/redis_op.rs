//! [`RedisOp`]: the bounded set of values of the `op` label of `redrive_redis_errors_total`.

/// Which Redis call failed: the `op` label of [`names::REDIS_ERRORS`](super::names::REDIS_ERRORS).
/// The wire strings ([`RedisOp::as_str`]) are behaviour: dashboards and alert rules may name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedisOp {
    /// The reader's read of the tenant lanes.
    Read,
    /// The executor's start of an attempt (the attempt mark and lease).
    Start,
    /// The health loop's read of the stream depths.
    Depths,
    /// The health loop's probe for an out-of-memory refusal.
    OomProbe,
    /// The heartbeat's lease renewal.
    Heartbeat,
    /// The recoverer's promotion of due retries.
    Promote,
    /// The reclaimer's claim of idle entries.
    Reclaim,
    /// The settler's ack of finished entries.
    Ack,
    /// The settler's ack of an entry whose data is gone.
    AckTombstone,
    /// The settler's scheduling of retries.
    ScheduleRetry,
    /// The settler's re-read of one entry.
    ReadEntry,
    /// The settler's move of an entry to the dead-letter stream.
    DeadLetter,
    /// The settler's deferral of entries (tenant at its cap).
    Defer,
    /// The breaker's half-open probe.
    BreakerProbe,
    /// The end of a breaker probe.
    BreakerProbeDone,
    /// The breaker's record of an attempt's outcome.
    BreakerRecord,
    /// The breaker's read of a tenant's state.
    BreakerRead,
    /// The tenant slot accounting.
    Slots,
    /// The stats read.
    Stats,
    /// The admin loop's read of the admin stream.
    AdminRead,
    /// The admin loop's presence beat.
    AdminBeat,
    /// The admin loop's execution of a command.
    AdminCommand,
    /// The executor's record of an attempt's step checkpoints.
    RecordSteps,
    /// The recoverer's sweep of a tenant's task record index.
    RecordsSweep,
    /// The recoverer's upkeep of a tenant's dead-letter counts.
    DlqCounts,
    /// The notifier's tick or ack on a tenant's outbox.
    Notify,
}

impl RedisOp {
    /// Every op, in the order their series are registered at 0.
    pub const ALL: [RedisOp; 26] = [
        RedisOp::Read,
        RedisOp::Start,
        RedisOp::Depths,
        RedisOp::OomProbe,
        RedisOp::Heartbeat,
        RedisOp::Promote,
        RedisOp::Reclaim,
        RedisOp::Ack,
        RedisOp::AckTombstone,
        RedisOp::ScheduleRetry,
        RedisOp::ReadEntry,
        RedisOp::DeadLetter,
        RedisOp::Defer,
        RedisOp::BreakerProbe,
        RedisOp::BreakerProbeDone,
        RedisOp::BreakerRecord,
        RedisOp::BreakerRead,
        RedisOp::Slots,
        RedisOp::Stats,
        RedisOp::AdminRead,
        RedisOp::AdminBeat,
        RedisOp::AdminCommand,
        RedisOp::RecordSteps,
        RedisOp::RecordsSweep,
        RedisOp::DlqCounts,
        RedisOp::Notify,
    ];

    /// The label value on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedisOp::Read => "read",
            RedisOp::Start => "start",
            RedisOp::Depths => "depths",
            RedisOp::OomProbe => "oom_probe",
            RedisOp::Heartbeat => "heartbeat",
            RedisOp::Promote => "promote",
            RedisOp::Reclaim => "reclaim",
            RedisOp::Ack => "ack",
            RedisOp::AckTombstone => "ack_tombstone",
            RedisOp::ScheduleRetry => "schedule_retry",
            RedisOp::ReadEntry => "read_entry",
            RedisOp::DeadLetter => "dead_letter",
            RedisOp::Defer => "defer",
            RedisOp::BreakerProbe => "breaker_probe",
            RedisOp::BreakerProbeDone => "breaker_probe_done",
            RedisOp::BreakerRecord => "breaker_record",
            RedisOp::BreakerRead => "breaker_read",
            RedisOp::Slots => "slots",
            RedisOp::Stats => "stats",
            RedisOp::AdminRead => "admin_read",
            RedisOp::AdminBeat => "admin_beat",
            RedisOp::AdminCommand => "admin_command",
            RedisOp::RecordSteps => "record_steps",
            RedisOp::RecordsSweep => "records_sweep",
            RedisOp::DlqCounts => "dlq_counts",
            RedisOp::Notify => "notify",
        }
    }
}

impl std::fmt::Display for RedisOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RedisOp;

    #[test]
    fn the_wire_strings_stay_as_dashboards_and_rules_know_them() {
        let wire: Vec<&str> = RedisOp::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(
            wire,
            [
                "read",
                "start",
                "depths",
                "oom_probe",
                "heartbeat",
                "promote",
                "reclaim",
                "ack",
                "ack_tombstone",
                "schedule_retry",
                "read_entry",
                "dead_letter",
                "defer",
                "breaker_probe",
                "breaker_probe_done",
                "breaker_record",
                "breaker_read",
                "slots",
                "stats",
                "admin_read",
                "admin_beat",
                "admin_command",
                "record_steps",
                "records_sweep",
                "dlq_counts",
                "notify",
            ]
        );
        let distinct: std::collections::HashSet<&str> = wire.iter().copied().collect();
        assert_eq!(distinct.len(), RedisOp::ALL.len());
    }
}
