//! A per-tenant weighted fair queue: the local half of fairness. Tasks read from many lanes wait
//! here, and each pop takes the tenant whose turn it is by stride scheduling: every tenant with
//! work has a pass value, a pop serves the lowest pass and advances it by `STRIDE / weight`. A
//! tenant of weight 3 is served three times as often as one of weight 1 while both have work;
//! with equal weights this is plain round-robin. A tenant that runs dry leaves the rotation and
//! rejoins at the current pass, so idle time earns no credit and a deep backlog cannot push a
//! small tenant's tasks behind its own.
//!
//! A turn serves a run of up to [`RUN`] items of its tenant (each charged its stride, so the
//! shares are those of per-item turns): a busy member's consecutive starts and settles then
//! come in per-tenant batches, and every per-tenant call they make (the start mark, the settle
//! script) carries a batch instead of one or two entries (issue 18). A run ends early when its
//! tenant runs dry.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// The pass increment of a weight-1 tenant (divisible by every weight up to 16, so common
/// weights advance by whole numbers).
const STRIDE: u64 = 720_720;

/// The most items one turn serves in a row.
pub(crate) const RUN: usize = 16;

#[derive(Debug)]
struct Lane<T> {
    items: VecDeque<T>,
    weight: u32,
    pass: u64,
    /// Its arrival number in `ready` while it waits there.
    seq: u64,
}

/// Items queued per tenant, popped by weighted turns across tenants.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: HashMap<Arc<str>, Lane<T>>,
    /// Tenants with work, ordered by (pass, arrival), so ties go round-robin.
    ready: BTreeSet<(u64, u64, Arc<str>)>,
    /// The pass of the last pop: where a tenant that (re)joins starts.
    now: u64,
    seq: u64,
    len: usize,
    /// The tenant of the turn being served, and how many items it took so far.
    turn: Option<(Arc<str>, usize)>,
    /// The most items a turn serves.
    run: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue::with_runs(RUN)
    }
}

impl<T> FairQueue<T> {
    /// A queue whose turns serve up to `run` items (at least 1: per-item turns).
    pub fn with_runs(run: usize) -> FairQueue<T> {
        FairQueue {
            queues: HashMap::new(),
            ready: BTreeSet::new(),
            now: 0,
            seq: 0,
            len: 0,
            turn: None,
            run: run.max(1),
        }
    }

    /// Appends an item to its tenant's queue with weight 1.
    #[cfg(test)]
    pub fn push(&mut self, tenant: &Arc<str>, item: T) {
        self.push_weighted(tenant, 1, item);
    }

    /// Appends an item to its tenant's queue; `weight` (at least 1) sets the tenant's share
    /// while it has work.
    pub fn push_weighted(&mut self, tenant: &Arc<str>, weight: u32, item: T) {
        let now = self.now;
        let lane = self.queues.entry(tenant.clone()).or_insert_with(|| Lane {
            items: VecDeque::new(),
            weight: 1,
            pass: now,
            seq: 0,
        });
        lane.weight = weight.max(1);
        if lane.items.is_empty() {
            lane.pass = lane.pass.max(now);
            lane.seq = self.seq;
            self.ready.insert((lane.pass, self.seq, tenant.clone()));
            self.seq += 1;
        }
        lane.items.push_back(item);
        self.len += 1;
    }

    /// Takes the next item from the tenant whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        // The turn goes on while its tenant has items and the run is not over; its place in
        // `ready` (by its pass, charged per item) is taken back meanwhile.
        let continued = match self.turn.take() {
            Some((tenant, served)) if served < self.run => {
                match self.queues.get(&tenant).filter(|l| !l.items.is_empty()) {
                    Some(lane) => {
                        self.ready.remove(&(lane.pass, lane.seq, tenant.clone()));
                        Some((tenant, served))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let (tenant, served) = match continued {
            Some(t) => t,
            None => {
                let (pass, _, tenant) = self.ready.pop_first()?;
                self.now = pass;
                (tenant, 0)
            }
        };
        let lane = self.queues.get_mut(&tenant)?;
        let item = lane.items.pop_front();
        lane.pass += STRIDE / lane.weight as u64;
        if lane.items.is_empty() {
            self.queues.remove(&tenant);
        } else {
            lane.seq = self.seq;
            self.ready.insert((lane.pass, self.seq, tenant.clone()));
            self.seq += 1;
            self.turn = Some((tenant, served + 1));
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Items queued in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_between_tenants() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut q = FairQueue::with_runs(1);
        for i in 0..5 {
            q.push(&a, format!("a{i}"));
        }
        q.push(&b, "b0".to_string());
        q.push(&b, "b1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]);
        assert!(q.is_empty());
    }

    #[test]
    fn weights_set_the_shares_while_both_have_work() {
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut q = FairQueue::with_runs(1);
        for i in 0..100 {
            q.push_weighted(&a, 3, ("a", i));
            q.push_weighted(&b, 1, ("b", i));
            q.push_weighted(&c, 2, ("c", i));
        }
        let first: Vec<&str> = (0..60).filter_map(|_| q.pop()).map(|(t, _)| t).collect();
        let n = |t| first.iter().filter(|x| **x == t).count();
        assert_eq!((n("a"), n("b"), n("c")), (30, 10, 20));
        // Each tenant's own order is kept.
        let mut last = HashMap::new();
        while let Some((t, i)) = q.pop() {
            if let Some(prev) = last.insert(t, i) {
                assert!(i > prev);
            }
        }
        assert!(q.is_empty());
    }

    #[test]
    fn turns_serve_runs_and_the_shares_still_follow_the_weights() {
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut q = FairQueue::with_runs(4);
        for i in 0..10 {
            q.push(&a, ("a", i));
        }
        q.push(&b, ("b", 0));
        q.push(&b, ("b", 1));
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|(t, i)| format!("{t}{i}"))
            .collect();
        // A run of four, b's two (its run ends when it runs dry), then a's rest.
        assert_eq!(
            order,
            ["a0", "a1", "a2", "a3", "b0", "b1", "a4", "a5", "a6", "a7", "a8", "a9"]
        );
        // Weights 3:1:2 over many items: runs of 16 keep the shares within a run or two.
        let mut q = FairQueue::default();
        for i in 0..3_000 {
            q.push_weighted(&a, 3, ("a", i));
            q.push_weighted(&b, 1, ("b", i));
            q.push_weighted(&c, 2, ("c", i));
        }
        let first: Vec<&str> = (0..1_200).filter_map(|_| q.pop()).map(|(t, _)| t).collect();
        let n = |t| first.iter().filter(|x| **x == t).count() as i64;
        for (t, want) in [("a", 600), ("b", 200), ("c", 400)] {
            assert!(
                (n(t) - want).abs() <= 2 * RUN as i64,
                "{t}: {} of 1,200",
                n(t)
            );
        }
        // A tenant arriving mid-run waits at most the rest of that run.
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push(&a, i);
        }
        assert_eq!(q.pop(), Some(0));
        q.push(&b, 1_000);
        let until: usize = std::iter::from_fn(|| q.pop())
            .position(|i| i == 1_000)
            .unwrap();
        assert!(until < RUN, "{until}");
    }

    #[test]
    fn a_tenant_that_ran_dry_earns_no_credit() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut q = FairQueue::with_runs(1);
        q.push(&b, 0);
        for i in 0..10 {
            q.push(&a, i);
        }
        assert_eq!(q.pop(), Some(0));
        // a has been served alone for a while; b comes back and simply takes turns.
        for _ in 0..5 {
            q.pop();
        }
        q.push(&b, 100);
        q.push(&b, 101);
        let next: Vec<i32> = (0..4).filter_map(|_| q.pop()).collect();
        assert_eq!(next.iter().filter(|i| **i >= 100).count(), 2, "{next:?}");
    }
}
