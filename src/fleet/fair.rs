//! A per-tenant round-robin queue: the local half of fairness. Tasks read from many lanes wait
//! here, and each pop takes the next tenant in turn, so a tenant with a deep backlog cannot
//! push a small tenant's tasks behind its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Items queued per tenant, popped round-robin across tenants.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: HashMap<Arc<str>, VecDeque<T>>,
    order: VecDeque<Arc<str>>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            queues: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Appends an item to its tenant's queue.
    pub fn push(&mut self, tenant: &Arc<str>, item: T) {
        let q = self.queues.entry(tenant.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(tenant.clone());
        }
        q.push_back(item);
        self.len += 1;
    }

    /// Takes the next item from the tenant whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let tenant = self.order.pop_front()?;
        let q = self.queues.get_mut(&tenant)?;
        let item = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&tenant);
        } else {
            self.order.push_back(tenant);
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
        let mut q = FairQueue::default();
        for i in 0..5 {
            q.push(&a, format!("a{i}"));
        }
        q.push(&b, "b0".to_string());
        q.push(&b, "b1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]);
        assert!(q.is_empty());
    }
}
