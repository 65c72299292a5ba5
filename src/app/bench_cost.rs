//! Where a throughput scenario's time went, printed in its row's note: CPU per task of this
//! process (the benchmarked member runs in it, and the bench does nothing else meanwhile) and
//! of Redis's main thread, and Redis's own time per task of its costliest commands. Taken from
//! snapshots around the measured phase only (after the enqueue, until the last settle), so the
//! figures are what one drained task costs each side: the arithmetic behind a `× raw` figure
//! (both processes share this machine's cores).

use std::collections::BTreeMap;

use crate::broker::{Broker, ServerWork};
use crate::error::Result;

/// Snapshots taken when the measured phase began.
pub(crate) struct CostProbe {
    cpu_us: Option<u64>,
    work: Option<ServerWork>,
    stats: BTreeMap<String, (u64, u64)>,
}

impl CostProbe {
    /// Takes the snapshots (two `INFO` calls, and one more for the CPU on a single Redis).
    pub(crate) async fn start(broker: &Broker) -> Result<CostProbe> {
        Ok(CostProbe {
            cpu_us: process_cpu_us(),
            // On a cluster the shared connection reaches one node of several: no figure.
            work: if broker.is_cluster() {
                None
            } else {
                Some(broker.server_work().await?)
            },
            stats: broker.command_stats().await?,
        })
    }

    /// What the phase cost per task since [`CostProbe::start`]: `member 5.3 µs/task, Redis
    /// 4.8 µs/task (evalsha 2.10, xreadgroup 1.05, xclaim 0.75, …)`.
    pub(crate) async fn finish(self, broker: &Broker, tasks: u64) -> Result<String> {
        let per = |us: u64| us as f64 / tasks.max(1) as f64;
        let member = match (self.cpu_us, process_cpu_us()) {
            (Some(a), Some(b)) => format!("member {:.1} µs/task", per(b.saturating_sub(a))),
            _ => "member n/a".to_owned(),
        };
        let redis = match self.work {
            Some(w0) => {
                let w1 = broker.server_work().await?;
                format!("Redis {:.1} µs/task", per(w1.usec.saturating_sub(w0.usec)))
            }
            None => "Redis CPU n/a on a cluster".to_owned(),
        };
        let after = broker.command_stats().await?;
        Ok(format!(
            "{member}, {redis} ({})",
            top_commands(&self.stats, &after, tasks, 5)
        ))
    }
}

/// The `n` commands that took Redis the most time between two `INFO commandstats`
/// snapshots, as `name µs-per-task` (a script's time includes the commands it ran).
fn top_commands(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    tasks: u64,
    n: usize,
) -> String {
    let mut spent: Vec<(&str, u64, u64)> = after
        .iter()
        .map(|(name, &(calls, usec))| {
            let (c0, u0) = before.get(name).copied().unwrap_or_default();
            (
                name.as_str(),
                calls.saturating_sub(c0),
                usec.saturating_sub(u0),
            )
        })
        .filter(|(name, calls, _)| *calls > 0 && !name.starts_with("info"))
        .collect();
    spent.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    let shown: Vec<String> = spent
        .iter()
        .take(n)
        .map(|(name, calls, usec)| {
            format!(
                "{name} {:.2} µs in {:.2} calls",
                *usec as f64 / tasks.max(1) as f64,
                *calls as f64 / tasks.max(1) as f64
            )
        })
        .collect();
    if shown.is_empty() {
        "no commands".to_owned()
    } else {
        format!("per task: {}", shown.join(", "))
    }
}

/// This process's CPU time (user + system), µs; `None` where the OS does not say.
fn process_cpu_us() -> Option<u64> {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointer is to a live, properly aligned rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(us(usage.ru_utime) + us(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costliest_commands_of_the_phase_come_first_per_task() {
        let before: BTreeMap<String, (u64, u64)> = [
            ("evalsha".to_owned(), (10, 1_000)),
            ("xadd".to_owned(), (100, 50_000)),
            ("info".to_owned(), (1, 10)),
        ]
        .into();
        let after: BTreeMap<String, (u64, u64)> = [
            ("evalsha".to_owned(), (210, 401_000)),
            ("xadd".to_owned(), (100, 50_000)),
            ("xreadgroup".to_owned(), (100, 100_000)),
            ("xclaim".to_owned(), (100, 100_000)),
            ("info".to_owned(), (3, 30)),
        ]
        .into();
        assert_eq!(
            top_commands(&before, &after, 200_000, 2),
            "per task: evalsha 2.00 µs in 0.00 calls, xclaim 0.50 µs in 0.00 calls"
        );
        assert_eq!(top_commands(&after, &after, 1, 5), "no commands");
    }

    #[test]
    fn this_process_has_a_cpu_time_that_grows() {
        let a = process_cpu_us().expect("getrusage works here");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_cpu_us().expect("getrusage works here");
        assert!(b > a, "{a} → {b}");
    }
}
