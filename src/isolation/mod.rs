//! Tenant isolation, the pure part: settings, a member's local view of a fleet-wide circuit
//! breaker and what it means for a task (run, defer, probe), and how a read's capacity is
//! shared between lanes by weight and fleet-wide budget. No I/O: the state lives in Redis (see
//! `broker::breakers` and its scripts), the loops in `fleet::isolation`, the operator's
//! commands in `admin::breaker` and `app/cli/{breaker,tenants}.rs`.
//!
//! A breaker is closed (tasks run), open (tasks are held back: not read, and those already
//! read are deferred unattempted to the tenant's retry schedule) or half-open (the cool-down is
//! over and exactly one probe task may run fleet-wide; its success closes the breaker, its
//! failure re-opens it). Closed → open is decided by a script over the tenant's failure window
//! (count and rate); members send their outcome counts once per refresh and read every breaker
//! in one pipelined call, so the hot path never waits on Redis for a closed breaker (admitting
//! a half-open tenant's one probe is a round trip).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::handler::FailureClass;

/// Thresholds of the closed → open decision, as the breaker_record script takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The window.
    pub window: Duration,
    /// The fewest failures in the window that open the breaker.
    pub min_failures: u64,
    /// The lowest failure rate (0..1) that opens it.
    pub failure_rate: f64,
    /// How long it stays open before a probe may run.
    pub cooldown: Duration,
}

/// The reasons a breaker moves, as logged, counted and stored (a bounded set).
pub mod reason {
    /// closed → open: the failure window crossed both thresholds.
    pub const FAILURE_THRESHOLD: &str = "failure_threshold";
    /// open → half_open: the cool-down is over.
    pub const COOLDOWN_ELAPSED: &str = "cooldown_elapsed";
    /// half_open → closed: the probe succeeded.
    pub const PROBE_SUCCEEDED: &str = "probe_succeeded";
    /// half_open → open: the probe failed.
    pub const PROBE_FAILED: &str = "probe_failed";
    /// Any → open (held) or closed: an operator said so.
    pub const OPERATOR: &str = "operator";
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakerState {
    /// Tasks run.
    Closed,
    /// Tasks are held back.
    Open,
    /// One probe may run fleet-wide; the rest are held back.
    HalfOpen,
}

impl BreakerState {
    /// The stable wire name: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Parses a wire name; anything unknown reads as closed (only redrive's scripts write it,
    /// and a garbled value must not hold a tenant's work back forever).
    pub fn parse(s: &str) -> BreakerState {
        match s {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validated `[isolation.breaker]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Whether failures open breakers automatically (an operator can open one either way).
    pub enabled: bool,
    /// The fewest failures within the window that open a breaker.
    pub min_failures: u64,
    /// The lowest failure rate (failures / attempts in the window) that opens it.
    pub failure_rate: f64,
    /// The failure window.
    pub window: Duration,
    /// How long an open breaker holds the tenant before one probe may run.
    pub cooldown: Duration,
    /// Failure classes that say nothing about the tenant's health: not counted at all.
    pub ignored: Vec<FailureClass>,
}

impl BreakerSettings {
    /// Whether a failure of `class` counts against the tenant.
    pub fn counts(&self, class: FailureClass) -> bool {
        !self.ignored.contains(&class)
    }

    /// The thresholds the record script applies.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            window: self.window,
            min_failures: self.min_failures,
            failure_rate: self.failure_rate,
            cooldown: self.cooldown,
        }
    }
}

/// One tenant's overrides of the defaults, from `[isolation.tenants.<tenant>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    /// Fleet-wide cap on the tenant's in-flight entries (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// The tenant's weight in fair selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Validated `[isolation]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationSettings {
    /// How often a member reads every breaker, sends its outcome counts and renews its
    /// in-flight reservations.
    pub refresh_interval: Duration,
    /// How long a member's reservation survives without renewal.
    pub slot_ttl: Duration,
    /// The default fleet-wide cap on a tenant's in-flight entries (0: none).
    pub max_in_flight: usize,
    /// The default weight.
    pub weight: u32,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, TenantOverride>,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
}

impl IsolationSettings {
    /// The fleet-wide cap on `tenant`'s in-flight entries; 0 means none.
    pub fn cap(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|o| o.max_in_flight)
            .unwrap_or(self.max_in_flight)
    }

    /// `tenant`'s weight in fair selection (at least 1).
    pub fn weight(&self, tenant: &str) -> u32 {
        self.tenants
            .get(tenant)
            .and_then(|o| o.weight)
            .unwrap_or(self.weight)
            .max(1)
    }
}

/// A member's cached view of one breaker. Times are the server's clock, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerView {
    /// The state as last seen.
    pub state: BreakerState,
    /// Open: when the cool-down ends (0: held by an operator until closed by hand).
    pub until_ms: u64,
    /// Half-open: until when the running probe's token is known to be held (0: none known).
    pub probe_until_ms: u64,
}

impl Default for BreakerView {
    fn default() -> Self {
        BreakerView::CLOSED
    }
}

/// What to do with a task about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Run it.
    Run,
    /// Hold it back: defer it to the retry schedule this long, unattempted.
    Defer(Duration),
    /// The cool-down looks over: ask Redis for the tenant's one probe before running it.
    Probe,
}

/// How much of a lane a read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// As much as its share.
    Share,
    /// One entry: a candidate for the half-open probe.
    One,
    /// Nothing: the tenant is held back.
    Nothing,
}

impl BreakerView {
    /// A closed breaker.
    pub const CLOSED: BreakerView = BreakerView {
        state: BreakerState::Closed,
        until_ms: 0,
        probe_until_ms: 0,
    };

    /// Whether the probe admission script would consider a probe now (the cool-down is over,
    /// or half-open without a known live probe).
    fn probe_possible(&self, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open => self.until_ms != 0 && now_ms >= self.until_ms,
            BreakerState::HalfOpen => self.probe_until_ms <= now_ms,
        }
    }

    /// What to do with a task of this tenant that is about to start. `unit` is a uniform
    /// random number in [0, 1) that spreads deferred tasks over a quarter of the cool-down.
    pub fn gate(&self, now_ms: u64, cooldown: Duration, unit: f64) -> Gate {
        if self.state == BreakerState::Closed {
            return Gate::Run;
        }
        if self.probe_possible(now_ms) {
            return Gate::Probe;
        }
        Gate::Defer(defer_delay(self, now_ms, cooldown, unit))
    }

    /// How much of this tenant's lane a read may take while the member holds `held` of its
    /// entries: an open breaker's lane is not read at all, except for one entry once the
    /// cool-down is over (the probe candidate), and only by a member holding none.
    pub fn read_allowance(&self, now_ms: u64, held: usize) -> Allowance {
        if self.state == BreakerState::Closed {
            return Allowance::Share;
        }
        if held == 0 && self.probe_possible(now_ms) {
            Allowance::One
        } else {
            Allowance::Nothing
        }
    }
}

/// How long a held-back task waits in the retry schedule: the rest of the cool-down when open
/// (a whole cool-down when held by an operator or while a probe runs), plus up to a quarter of
/// the cool-down of spread so that deferred tasks do not all come back at once. At least
/// 100 ms.
pub fn defer_delay(view: &BreakerView, now_ms: u64, cooldown: Duration, unit: f64) -> Duration {
    let cd = cooldown.as_millis() as u64;
    let base = match view.state {
        BreakerState::Open if view.until_ms > now_ms => view.until_ms - now_ms,
        _ => cd,
    };
    let spread = (cd as f64 / 4.0 * unit.clamp(0.0, 1.0)) as u64;
    Duration::from_millis((base + spread).max(100))
}

/// The smallest batch a busy member reads from one lane (see [`lane_counts`]).
pub const READ_QUANTUM: usize = 32;

/// The read quantum for a `read_batch`: [`READ_QUANTUM`], at most the read batch.
pub fn read_quantum(read_batch: usize) -> usize {
    READ_QUANTUM.min(read_batch.max(1))
}

/// One lane's claim on a read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneDemand {
    /// The tenant's weight.
    pub weight: u32,
    /// Whether the lane had entries in the last read that found any (a lane with work).
    pub active: bool,
    /// The most entries it may take (fleet-wide budget, or 1 for a probe candidate).
    pub limit: Option<usize>,
    /// Its share carried over from earlier reads, in entries (kept by the reader per lane).
    pub credit: f64,
}

/// How many entries each lane's read asks for, sharing `free` capacity by weight between the
/// lanes with work. Each of those earns `free × weight / Σ weights` per read as credit and
/// asks for the whole entries its credit holds, so small reads (one or two free slots, the
/// steady state of a busy member) still follow the weights over a few reads instead of giving
/// every lane one. A lane without work last time asks for its share as if it joined, at least
/// one, to notice new work. When no lane would read anything, the one with the most credit
/// reads one. Counts are at most `read_batch` and a lane's limit; `credit` is updated.
///
/// A read of at least [`READ_QUANTUM`] free slots (a busy member's reader waits for that many,
/// [`read_quantum`]) goes to the lanes with work in whole batches: those whose credit holds a
/// quantum, most credit first, each taking all its credit until the free slots are shared
/// out, and the others wait with their credit for a later read. Many tenants sharing a busy
/// member then each get a batch every few reads instead of one or two entries every read, so
/// every per-tenant call that follows (the start mark, the settle script) carries a batch
/// (issue 18: the 100-tenant drain made ~0.5 script calls per task). Over reads the shares
/// still follow the weights, and a lane without work last time is read at once as before.
pub fn lane_counts(free: usize, read_batch: usize, lanes: &mut [LaneDemand]) -> Vec<usize> {
    let rb = read_batch.max(1);
    let quantum = read_quantum(rb);
    let batched = free >= quantum && quantum > 1;
    let active: u64 = lanes
        .iter()
        .filter(|l| l.active)
        .map(|l| l.weight.max(1) as u64)
        .sum();
    let mut counts: Vec<usize> = lanes
        .iter_mut()
        .map(|l| {
            let w = l.weight.max(1) as u64;
            let limit = l.limit.unwrap_or(usize::MAX);
            if !l.active {
                l.credit = 0.0;
                let share = (free as u64).saturating_mul(w) / (active + w);
                return (share as usize).clamp(1, rb).min(limit);
            }
            l.credit = (l.credit + free as f64 * w as f64 / active as f64).min(rb as f64);
            if batched {
                // Shared out below, by credit.
                return 0;
            }
            let n = (l.credit.max(0.0).floor() as usize).min(rb).min(limit);
            l.credit -= n as f64;
            n
        })
        .collect();
    if batched {
        let mut order: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].active).collect();
        order.sort_by(|&a, &b| lanes[b].credit.total_cmp(&lanes[a].credit).then(a.cmp(&b)));
        let mut left = free;
        for i in order {
            let l = &mut lanes[i];
            let limit = l.limit.unwrap_or(usize::MAX);
            // A lane limited below a quantum (a fleet-wide budget, a probe) reads its limit; the
            // last slots of a read, when they are at least half a quantum, go to the next lane
            // whose credit covers them.
            let mut whole = quantum.min(limit);
            if whole > left {
                if left < quantum.div_ceil(2) {
                    continue;
                }
                whole = left;
            }
            let held = l.credit.max(0.0).floor() as usize;
            if whole == 0 || held < whole {
                continue;
            }
            let n = held.min(rb).min(limit).min(left);
            l.credit -= n as f64;
            counts[i] = n;
            left -= n;
        }
    }
    if counts.iter().all(|n| *n == 0) {
        let best = lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.limit != Some(0))
            .max_by(|a, b| a.1.credit.total_cmp(&b.1.credit))
            .map(|(i, _)| i);
        if let Some(i) = best {
            counts[i] = 1;
            lanes[i].credit -= 1.0;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const CD: Duration = Duration::from_millis(1_000);

    fn view(state: BreakerState, until_ms: u64, probe_until_ms: u64) -> BreakerView {
        BreakerView {
            state,
            until_ms,
            probe_until_ms,
        }
    }

    #[test]
    fn a_closed_breaker_runs_everything() {
        assert_eq!(BreakerView::CLOSED.gate(5, CD, 0.5), Gate::Run);
        assert_eq!(BreakerView::CLOSED.read_allowance(5, 100), Allowance::Share);
    }

    #[test]
    fn an_open_breaker_defers_for_the_rest_of_its_cool_down() {
        let v = view(BreakerState::Open, 10_000, 0);
        assert_eq!(
            v.gate(9_400, CD, 0.0),
            Gate::Defer(Duration::from_millis(600))
        );
        assert_eq!(
            v.gate(9_400, CD, 1.0),
            Gate::Defer(Duration::from_millis(850))
        );
        assert_eq!(v.read_allowance(9_400, 0), Allowance::Nothing);
        // Cool-down over: a member holding nothing of the tenant reads one probe candidate.
        assert_eq!(v.gate(10_000, CD, 0.0), Gate::Probe);
        assert_eq!(v.read_allowance(10_000, 0), Allowance::One);
        assert_eq!(v.read_allowance(10_000, 1), Allowance::Nothing);
    }

    #[test]
    fn an_operator_hold_never_probes() {
        let v = view(BreakerState::Open, 0, 0);
        assert_eq!(v.gate(u64::MAX, CD, 0.0), Gate::Defer(CD));
        assert_eq!(v.read_allowance(u64::MAX, 0), Allowance::Nothing);
    }

    #[test]
    fn half_open_probes_only_when_no_probe_is_known_to_run() {
        let v = view(BreakerState::HalfOpen, 0, 5_000);
        assert_eq!(v.gate(4_000, CD, 0.0), Gate::Defer(CD));
        assert_eq!(v.read_allowance(4_000, 0), Allowance::Nothing);
        assert_eq!(v.gate(5_000, CD, 0.0), Gate::Probe);
        assert_eq!(
            view(BreakerState::HalfOpen, 0, 0).gate(1, CD, 0.0),
            Gate::Probe
        );
    }

    #[test]
    fn deferrals_wait_at_least_100_ms() {
        let v = view(BreakerState::Open, 1_000, 0);
        assert_eq!(
            defer_delay(&v, 999, Duration::ZERO, 0.0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn states_round_trip_and_garbage_reads_closed() {
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(BreakerState::parse(s.as_str()), s);
        }
        assert_eq!(BreakerState::parse("ajar"), BreakerState::Closed);
    }

    fn d(weight: u32, active: bool, limit: Option<usize>) -> LaneDemand {
        LaneDemand {
            weight,
            active,
            limit,
            credit: 0.0,
        }
    }

    #[test]
    fn reads_share_capacity_by_weight_and_respect_limits() {
        // Equal weights, two active lanes: half each; an idle lane is sized as if it joined.
        let mut lanes = [d(1, true, None), d(1, true, None), d(1, false, None)];
        assert_eq!(lane_counts(100, 500, &mut lanes), [50, 50, 33]);
        // Weights 3:1.
        let mut lanes = [d(3, true, None), d(1, true, None)];
        assert_eq!(lane_counts(100, 500, &mut lanes), [75, 25]);
        // Limits (a fleet-wide budget, a probe candidate) and the read batch bound each lane.
        let mut lanes = [d(1, true, Some(3)), d(1, true, Some(1)), d(1, true, None)];
        assert_eq!(lane_counts(100, 40, &mut lanes), [3, 1, 33]);
        assert_eq!(lane_counts(0, 10, &mut [d(1, false, None)]), [1]);
        // Nothing active yet: each lane may take all the free capacity.
        let mut lanes = [d(1, false, None), d(2, false, None)];
        assert_eq!(lane_counts(64, 500, &mut lanes), [64, 64]);
    }

    #[test]
    fn a_read_of_a_quantum_or_more_goes_to_few_lanes_in_whole_batches_and_stays_fair() {
        // 100 equal lanes with work, 64 slots free per read: two lanes of 32 per read (once
        // their credit holds a quantum), never more than the free slots, each lane a fair share.
        let mut lanes = vec![d(1, true, None); 100];
        let mut got = vec![0usize; 100];
        let (mut batches, mut small) = (0, 0);
        for _ in 0..5_000 {
            let c = lane_counts(64, 500, &mut lanes);
            assert!(c.iter().sum::<usize>() <= 64, "{c:?}");
            for (i, n) in c.iter().enumerate() {
                if *n > 0 {
                    batches += 1;
                    if *n < READ_QUANTUM / 2 {
                        small += 1;
                    }
                }
                got[i] += n;
            }
        }
        // Only while the credits first build up (one entry per read) is a read small.
        assert!(small <= 60, "{small} small lane reads");
        let total: usize = got.iter().sum();
        assert!(
            total >= 5_000 * 64 * 9 / 10,
            "the free slots are used: {total}"
        );
        let (lo, hi) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(hi - lo <= 2 * 64, "shares stay even: {lo}..{hi}");
        assert!(batches <= 5_000 * 2, "{batches} lane reads");
        // Weights 3:1 over many lanes hold too.
        let mut lanes: Vec<LaneDemand> = (0..20)
            .map(|i| d(if i < 10 { 3 } else { 1 }, true, None))
            .collect();
        let mut got = [0usize; 20];
        for _ in 0..4_000 {
            for (i, n) in lane_counts(100, 500, &mut lanes).iter().enumerate() {
                got[i] += n;
            }
        }
        let heavy: usize = got[..10].iter().sum();
        let light: usize = got[10..].iter().sum();
        assert!(
            (heavy as f64 / light as f64 - 3.0).abs() < 0.05,
            "{heavy} vs {light}"
        );
        // A lane limited below a quantum (a probe, a nearly spent budget) reads its limit; a lane
        // without work last time is read at once, whatever the credits.
        let mut lanes = [d(1, true, Some(1)), d(1, true, None), d(1, false, None)];
        let c = lane_counts(64, 500, &mut lanes);
        assert_eq!(c[0], 1);
        assert_eq!(c[1], 32);
        assert_eq!(c[2], 21);
    }

    #[test]
    fn small_reads_follow_the_weights_over_several_reads() {
        // One free slot per read, weights 3:1: three reads for one, four reads for two.
        let mut lanes = [d(3, true, None), d(1, true, None)];
        let mut got = [0, 0];
        for _ in 0..400 {
            let c = lane_counts(1, 10, &mut lanes);
            assert_eq!(c.iter().sum::<usize>(), 1, "{c:?}");
            got[0] += c[0];
            got[1] += c[1];
        }
        assert_eq!(got, [300, 100]);
        // Two free slots, weights 1:1:2.
        let mut lanes = [d(1, true, None), d(1, true, None), d(2, true, None)];
        let mut got = [0, 0, 0];
        for _ in 0..400 {
            let c = lane_counts(2, 10, &mut lanes);
            for i in 0..3 {
                got[i] += c[i];
            }
        }
        assert_eq!(got, [200, 200, 400]);
    }

    #[test]
    fn overrides_win_over_defaults() {
        let mut s = IsolationSettings {
            refresh_interval: Duration::from_millis(250),
            slot_ttl: Duration::from_secs(10),
            max_in_flight: 0,
            weight: 1,
            tenants: BTreeMap::new(),
            breaker: BreakerSettings {
                enabled: true,
                min_failures: 20,
                failure_rate: 0.5,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(30),
                ignored: vec![FailureClass::MalformedEntry],
            },
        };
        s.tenants.insert(
            "acme".into(),
            TenantOverride {
                max_in_flight: Some(8),
                weight: Some(3),
            },
        );
        assert_eq!((s.cap("acme"), s.weight("acme")), (8, 3));
        assert_eq!((s.cap("other"), s.weight("other")), (0, 1));
        assert!(!s.breaker.counts(FailureClass::MalformedEntry));
        assert!(s.breaker.counts(FailureClass::Timeout));
    }
}
