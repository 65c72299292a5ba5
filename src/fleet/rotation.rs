//! Spreading per-tenant upkeep over time: a loop that would touch every tenant on every pass
//! (the reclaim scan, the breakers' read) touches a bounded number per pass instead, in turn,
//! so an idle member's Redis work stays bounded whatever the number of tenants; the full round
//! takes longer when there are many.

/// Per-tenant looks one member's loop makes per second at most (each loop its own budget).
pub(crate) const LOOKS_PER_SECOND: f64 = 100.0;

/// How many tenants a loop running every `interval` may look at per pass.
pub(crate) fn budget(interval: std::time::Duration) -> usize {
    ((LOOKS_PER_SECOND * interval.as_secs_f64()).ceil() as usize).max(1)
}

/// A round-robin position over a list of items that may change between passes.
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    next: usize,
}

impl Rotation {
    /// Up to `budget` of `items`, starting where the last pass stopped (wrapping round); all
    /// of them when they fit.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T], budget: usize) -> Vec<&'a T> {
        if items.len() <= budget {
            self.next = 0;
            return items.iter().collect();
        }
        let start = self.next % items.len();
        self.next = (start + budget) % items.len();
        (0..budget)
            .map(|i| &items[(start + i) % items.len()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_item_comes_round_within_a_bounded_number_of_passes() {
        let items: Vec<u32> = (0..10).collect();
        let mut r = Rotation::default();
        assert_eq!(r.pick(&items, 4), [&0, &1, &2, &3]);
        assert_eq!(r.pick(&items, 4), [&4, &5, &6, &7]);
        assert_eq!(r.pick(&items, 4), [&8, &9, &0, &1]);
        // Fewer items than the budget: all of them, every pass.
        assert_eq!(r.pick(&items[..3], 4), [&0, &1, &2]);
        // The list shrank under the position: it wraps.
        let mut r = Rotation { next: 9 };
        assert_eq!(r.pick(&items[..5], 2), [&4, &0]);
        assert_eq!(budget(Duration::from_millis(500)), 50);
        assert_eq!(budget(Duration::from_millis(1)), 1);
    }
}
