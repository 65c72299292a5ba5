//! The reader's plan for one read, decided without I/O: which lanes are read and how many
//! entries each asks for (free capacity shared by weight and carried-over credit, breaker
//! allowances applied), and how the reads are grouped into XREADGROUP calls.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::isolation::{lane_counts, Allowance, LaneDemand};

/// One lane of the read window, as the reader sees it before the read.
#[derive(Debug, Clone)]
pub(crate) struct LaneInput {
    /// The lane's stream key.
    pub lane: String,
    /// Its tenant.
    pub tenant: Arc<str>,
    /// The tenant's weight.
    pub weight: u32,
    /// Whether the lane had work at the last read that found any.
    pub active: bool,
    /// What the tenant's breaker allows this member to read.
    pub allowance: Allowance,
    /// The lane's share carried over from earlier reads.
    pub credit: f64,
}

/// What one read asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadPlan {
    /// The lanes that may be read (breaker allowing), with their tenants, in window order.
    pub lanes: Vec<(String, Arc<str>)>,
    /// How many entries each of `lanes` asks for (0: none this time).
    pub counts: Vec<usize>,
    /// Each planned lane's credit after this read, to carry over.
    pub credits: Vec<(Arc<str>, f64)>,
    /// Tenants with work that get no entries this time and wait for their turn: they stay
    /// active whatever this read finds.
    pub still_active: HashSet<Arc<str>>,
}

/// Shares `free` capacity (at most `read_batch` per lane) between the lanes of the window.
/// A lane whose breaker allows nothing is left out; a probe candidate asks for one entry.
pub(crate) fn read_plan(free: usize, read_batch: usize, window: Vec<LaneInput>) -> ReadPlan {
    let mut lanes = Vec::with_capacity(window.len());
    let mut demands = Vec::with_capacity(window.len());
    for input in window {
        let limit = match input.allowance {
            Allowance::Nothing => continue,
            Allowance::One => Some(1),
            Allowance::Share => None,
        };
        demands.push(LaneDemand {
            weight: input.weight,
            active: input.active,
            limit,
            credit: input.credit,
        });
        lanes.push((input.lane, input.tenant));
    }
    let counts = lane_counts(free, read_batch, &mut demands);
    let mut credits = Vec::with_capacity(lanes.len());
    let mut still_active = HashSet::new();
    for (i, (_, tenant)) in lanes.iter().enumerate() {
        credits.push((tenant.clone(), demands[i].credit));
        if demands[i].active && counts[i] == 0 {
            still_active.insert(tenant.clone());
        }
    }
    ReadPlan {
        lanes,
        counts,
        credits,
        still_active,
    }
}

/// The XREADGROUP calls of one read: lanes grouped by the count they ask for (one call per
/// distinct count, usually one), lanes asking for nothing left out. A blocking read (only when
/// the last read found nothing and no lane waits on its cap) is one call over every lane at
/// the smallest count.
pub(crate) fn read_groups(
    lanes: Vec<(String, Arc<str>)>,
    counts: Vec<usize>,
    blocking: bool,
) -> BTreeMap<usize, Vec<String>> {
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for ((lane, _), n) in lanes.into_iter().zip(counts) {
        if n > 0 {
            groups.entry(n).or_default().push(lane);
        }
    }
    if blocking && groups.len() > 1 {
        let smallest = groups.keys().next().copied().unwrap_or(1);
        let all: Vec<String> = groups.into_values().flatten().collect();
        groups = BTreeMap::from([(smallest, all)]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(name: &str, weight: u32, active: bool, allowance: Allowance) -> LaneInput {
        LaneInput {
            lane: format!("lane:{name}"),
            tenant: name.into(),
            weight,
            active,
            allowance,
            credit: 0.0,
        }
    }

    #[test]
    fn a_lane_whose_breaker_allows_nothing_is_not_read() {
        let plan = read_plan(
            10,
            10,
            vec![
                lane("a", 1, true, Allowance::Share),
                lane("b", 1, true, Allowance::Nothing),
            ],
        );
        assert_eq!(plan.lanes, [("lane:a".to_owned(), Arc::from("a"))]);
        assert_eq!(plan.counts.len(), 1);
        assert!(plan.counts[0] > 0);
    }

    #[test]
    fn a_probe_candidate_asks_for_one_entry() {
        let plan = read_plan(10, 10, vec![lane("a", 1, true, Allowance::One)]);
        assert_eq!(plan.counts, [1]);
    }

    #[test]
    fn free_capacity_is_shared_by_weight_and_never_exceeded() {
        let plan = read_plan(
            8,
            100,
            vec![
                lane("heavy", 3, true, Allowance::Share),
                lane("light", 1, true, Allowance::Share),
            ],
        );
        assert!(plan.counts.iter().sum::<usize>() <= 8, "{:?}", plan.counts);
        assert!(plan.counts[0] > plan.counts[1], "{:?}", plan.counts);
        assert_eq!(plan.credits.len(), 2);
    }

    #[test]
    fn an_active_lane_that_gets_nothing_stays_active() {
        // One free slot between two equally weighted active lanes: one of them waits.
        let plan = read_plan(
            1,
            10,
            vec![
                lane("a", 1, true, Allowance::Share),
                lane("b", 1, true, Allowance::Share),
            ],
        );
        assert_eq!(plan.counts.iter().sum::<usize>(), 1, "{:?}", plan.counts);
        let waiting: Vec<&Arc<str>> = plan
            .lanes
            .iter()
            .zip(&plan.counts)
            .filter(|(_, n)| **n == 0)
            .map(|((_, t), _)| t)
            .collect();
        assert_eq!(waiting.len(), 1);
        assert!(plan.still_active.contains(waiting[0]));
    }

    #[test]
    fn reads_are_grouped_by_count_and_merged_when_blocking() {
        let lanes = vec![
            ("l1".to_owned(), Arc::from("a")),
            ("l2".to_owned(), Arc::from("b")),
            ("l3".to_owned(), Arc::from("c")),
        ];
        let groups = read_groups(lanes.clone(), vec![2, 0, 5], false);
        assert_eq!(
            groups,
            BTreeMap::from([(2, vec!["l1".to_owned()]), (5, vec!["l3".to_owned()])])
        );
        let blocking = read_groups(lanes, vec![2, 0, 5], true);
        assert_eq!(
            blocking,
            BTreeMap::from([(2, vec!["l1".to_owned(), "l3".to_owned()])])
        );
    }
}
