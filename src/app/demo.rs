//! `redrive demo`: the whole product on one machine. It starts a private redis-server when none
//! is configured, enqueues synthetic agent tasks across tenants, runs a fleet member with the
//! simulated agent, shows progress, and prints what happened to every task.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::app::settings::AppSettings;
use crate::broker::Broker;
use crate::config::Settings;
use crate::embedded::RedisServer;
use crate::error::Result;
use crate::fleet::{Fleet, TenantTally};
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::NewTask;

const KINDS: [&str; 3] = ["triage_ticket", "score_lead", "run_toolchain"];

/// What the demo did, per tenant.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// Tasks enqueued per tenant.
    pub enqueued: BTreeMap<String, u64>,
    /// What the fleet settled per tenant.
    pub tallies: BTreeMap<String, TenantTally>,
    /// Wall time from the first enqueue to the last settle.
    pub elapsed: Duration,
}

/// How many of `total` tasks tenant `i` of `n` gets: a skewed split, the first tenant largest.
fn share(total: usize, i: usize, n: usize) -> usize {
    let weights: usize = (1..=n).sum();
    let base = total * (n - i) / weights;
    if i == 0 {
        total - (1..n).map(|j| total * (n - j) / weights).sum::<usize>()
    } else {
        base
    }
}

/// Runs the demo and prints its summary to stdout.
pub async fn run(
    mut settings: Settings,
    app: AppSettings,
    shutdown: Shutdown,
) -> Result<DemoSummary> {
    let mut _server = None;
    let url = match settings.redis.url.clone() {
        Some(url) => {
            settings.redis.key_prefix = format!(
                "{}:demo-{}",
                settings.redis.key_prefix,
                crate::task::now_ms()
            );
            eprintln!(
                "demo: using {} under key prefix {}",
                crate::config::redact_url(&url),
                settings.redis.key_prefix
            );
            url
        }
        None => {
            let server = RedisServer::start()?;
            let url = server.url();
            eprintln!(
                "demo: started a private redis-server on 127.0.0.1:{}",
                server.port()
            );
            _server = Some(server);
            url
        }
    };
    let broker = Broker::connect_at(&url, &settings).await?;
    let producer = Producer::new(broker.clone(), &settings);

    let n = app.demo.tenants.len();
    let mut tasks = Vec::with_capacity(app.demo.tasks);
    let mut enqueued = BTreeMap::new();
    for (i, tenant) in app.demo.tenants.iter().enumerate() {
        let count = share(app.demo.tasks, i, n);
        enqueued.insert(tenant.clone(), count as u64);
        for j in 0..count {
            let kind = KINDS[j % KINDS.len()];
            tasks.push(NewTask::new(
                tenant.clone(),
                kind,
                serde_json::json!({"ticket": j, "text": format!("customer {j} reports a problem with order {}", j * 7)}),
            ));
        }
    }
    let total = tasks.len() as u64;
    let started = Instant::now();
    producer.enqueue_batch(tasks).await?;
    eprintln!(
        "demo: enqueued {total} tasks across {n} tenants in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // The simulated agent, named explicitly, for every kind (the demo ignores [[handlers]]).
    settings.fleet.handler = "demo".into();
    let handler = crate::app::demo_agent::handler(app.demo_agent.clone())?;
    let fleet = Fleet::new(broker, &settings, handler);
    let stats = fleet.stats();
    let fleet_shutdown = Shutdown::new();
    let member = tokio::spawn(fleet.run(fleet_shutdown.clone()));

    let tty = std::io::stderr().is_terminal();
    ProgressPrinter {
        stats: stats.clone(),
        total,
        started,
        tty,
        last_print: Instant::now() - Duration::from_secs(10),
    }
    .run(&shutdown, &member)
    .await;
    let elapsed = started.elapsed();
    if tty {
        eprintln!();
    }
    fleet_shutdown.trigger();
    match member.await {
        Ok(r) => r?,
        Err(e) => {
            return Err(crate::error::Error::Protocol(format!(
                "fleet task failed: {e}"
            )))
        }
    }
    let summary = DemoSummary {
        enqueued,
        tallies: stats.snapshot(),
        elapsed,
    };
    print_summary(&summary);
    Ok(summary)
}

fn print_summary(s: &DemoSummary) {
    let mut out = String::new();
    let dead_total = |t: &TenantTally| t.dead_lettered.values().sum::<u64>();
    out.push_str(&format!(
        "\n{:<12} {:>9} {:>10} {:>10} {:>9} {:>14}  dead letters by class\n",
        "tenant", "enqueued", "completed", "recovered", "retried", "dead-lettered"
    ));
    let empty = TenantTally::default();
    let (mut e_all, mut c_all, mut d_all, mut r_all, mut t_all) = (0, 0, 0, 0, 0);
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    for (tenant, enq) in &s.enqueued {
        let t = s.tallies.get(tenant).unwrap_or(&empty);
        let classes: Vec<String> = t
            .dead_lettered
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        out.push_str(&format!(
            "{:<12} {:>9} {:>10} {:>10} {:>9} {:>14}  {}\n",
            tenant,
            enq,
            t.completed,
            t.recovered,
            t.retried,
            dead_total(t),
            classes.join(" ")
        ));
        e_all += enq;
        r_all += t.recovered;
        t_all += t.retried;
        c_all += t.completed;
        d_all += dead_total(t);
        for (c, n) in &t.dead_lettered {
            *by_class.entry(c.clone()).or_default() += n;
        }
    }
    let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{c}={n}")).collect();
    out.push_str(&format!(
        "{:<12} {:>9} {:>10} {:>10} {:>9} {:>14}  {}\n",
        "all",
        e_all,
        c_all,
        r_all,
        t_all,
        d_all,
        classes.join(" ")
    ));
    out.push_str("\nrecovered: completed after at least one failed attempt; retried: failed attempts scheduled again\n");
    out.push_str(&format!(
        "\n{} of {} tasks settled in {:.2} s ({:.0} tasks/s); none lost: {}\n",
        c_all + d_all,
        e_all,
        s.elapsed.as_secs_f64(),
        (c_all + d_all) as f64 / s.elapsed.as_secs_f64().max(1e-3),
        if c_all + d_all == e_all {
            "yes"
        } else {
            "interrupted before the end"
        }
    ));
    print!("{out}");
}

/// The demo's progress line, in the fleet's loop shape: `run` paces it until every task is
/// settled (or the demo is interrupted, or the member stopped), `step` prints one line when it
/// is due.
struct ProgressPrinter {
    stats: std::sync::Arc<crate::fleet::FleetStats>,
    total: u64,
    started: Instant,
    tty: bool,
    last_print: Instant,
}

impl ProgressPrinter {
    async fn run(mut self, shutdown: &Shutdown, member: &tokio::task::JoinHandle<Result<()>>) {
        while self.step() < self.total && !shutdown.is_triggered() && !member.is_finished() {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Prints the progress line when one is due (every 200 ms on a terminal, every second
    /// otherwise); returns how many tasks are settled.
    fn step(&mut self) -> u64 {
        let settled = self.stats.settled();
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        if settled < self.total && self.last_print.elapsed() >= every {
            self.last_print = Instant::now();
            let rate = settled as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            let line = format!("demo: {settled}/{} settled ({rate:.0} tasks/s)", self.total);
            if self.tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_progress_step_reports_the_settled_count_and_prints_when_due() {
        use std::time::{Duration, Instant};
        let mut p = super::ProgressPrinter {
            stats: std::sync::Arc::new(crate::fleet::FleetStats::default()),
            total: 3,
            started: Instant::now(),
            tty: false,
            last_print: Instant::now() - Duration::from_secs(10),
        };
        assert_eq!(p.step(), 0);
        assert!(
            p.last_print.elapsed() < Duration::from_secs(5),
            "a due line was printed"
        );
    }

    #[test]
    fn shares_add_up() {
        for total in [1, 7, 3000, 10_001] {
            for n in 1..7 {
                let sum: usize = (0..n).map(|i| super::share(total, i, n)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}
