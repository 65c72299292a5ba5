//! The read-only reports: `dlq list` (filtered, cursor-paginated), `dlq stats` (counts by
//! tenant, class, kind, top fingerprints, oldest entry, recovery rate), `health` (per tenant
//! and overall), `dlq export` (JSON Lines). None of them writes anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::admin::scan::{scan, tenants_of, SCAN_PAGE};
use crate::admin::select::{compare_ids, field_str, DlId, Filter};
use crate::app::view::DeadLetterView;
use crate::broker::{Broker, FingerprintTally};
use crate::error::{Error, Result};

/// The longest window `health` and `stats` accept.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Dead letters one tally call counts on the server.
const TALLY_PAGE: usize = 1_000;

/// One page of `dlq list`.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The dead letters, oldest first (by dead-letter time, then tenant).
    pub entries: Vec<DeadLetterView>,
    /// Pass as `--cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of dead letters matching `filter` (and with `task_id` when given), after `cursor`
/// (the id of the last entry of the previous page), at most `limit`.
pub async fn list(
    broker: &Broker,
    filter: &Filter,
    task_id: Option<&str>,
    cursor: Option<&DlId>,
    limit: usize,
) -> Result<ListPage> {
    let (since, end) = filter.range();
    let mut found: Vec<DeadLetterView> = Vec::new();
    for tenant in tenants_of(broker, filter).await? {
        // Order is (id, tenant): after the cursor means a later id, or the same id in a later
        // tenant.
        let mut from = match cursor {
            Some(c) => {
                let at = if tenant > c.tenant {
                    c.id.clone()
                } else {
                    format!("({}", c.id)
                };
                let since_id = since.trim_start_matches('(');
                if since == "-" || compare_ids(&c.id, since_id) != std::cmp::Ordering::Less {
                    at
                } else {
                    since.clone()
                }
            }
            None => since.clone(),
        };
        let mut mine = 0;
        'pages: loop {
            let page = broker.dlq_range(&tenant, &from, &end, SCAN_PAGE).await?;
            let len = page.len();
            for e in page {
                from = format!("({}", e.id);
                let matched = e.fields.as_ref().is_some_and(|f| {
                    filter.matches(f)
                        && task_id
                            .is_none_or(|id| field_str(f, crate::task::field::TASK_ID) == Some(id))
                });
                if matched {
                    found.push(DeadLetterView::from_entry(&tenant, e));
                    mine += 1;
                    if mine > limit {
                        break 'pages;
                    }
                }
            }
            if len < SCAN_PAGE {
                break;
            }
        }
    }
    found.sort_by(|a, b| a.id.order(&b.id));
    let more = found.len() > limit;
    found.truncate(limit);
    let next_cursor = if more {
        found.last().map(|v| v.id.to_string())
    } else {
        None
    };
    Ok(ListPage {
        entries: found,
        next_cursor,
    })
}

/// Writes every dead letter matching `filter` as one JSON object per line (tenant by tenant,
/// oldest first). Returns how many were written.
pub async fn export(broker: &Broker, filter: &Filter, out: &mut dyn Write) -> Result<u64> {
    scan(broker, filter, |tenant, entry, _| {
        let line = DeadLetterView::from_entry(tenant, entry)
            .to_json()
            .to_string();
        writeln!(out, "{line}").map_err(|e| Error::io("writing the export", e))
    })
    .await
}

/// A fingerprint in `dlq stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TopFingerprint {
    /// The fingerprint.
    pub fingerprint: String,
    /// Dead letters with it.
    pub count: u64,
    /// Their class.
    pub class: String,
    /// Their kind.
    pub kind: String,
    /// One error message, as a sample.
    pub sample_error: String,
}

/// Settle counts over a window, from the per-minute buckets members publish.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WindowCounts {
    /// Tasks completed.
    pub completed: u64,
    /// Tasks completed after an earlier failure or a replay.
    pub recovered: u64,
    /// Tasks dead-lettered.
    pub dead_lettered: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Enqueues refused as duplicates of a live task_id (the producer side, enqueue.lua).
    pub duplicates: u64,
}

impl WindowCounts {
    fn add(&mut self, m: &BTreeMap<String, u64>) {
        let g = |k: &str| m.get(k).copied().unwrap_or(0);
        self.completed += g("completed");
        self.recovered += g("recovered");
        self.dead_lettered += g("dead_lettered");
        self.retried += g("retried");
        self.replayed += g("replayed");
        self.duplicates += g("duplicates");
    }

    fn merge(&mut self, o: &WindowCounts) {
        self.completed += o.completed;
        self.recovered += o.recovered;
        self.dead_lettered += o.dead_lettered;
        self.retried += o.retried;
        self.replayed += o.replayed;
        self.duplicates += o.duplicates;
    }

    /// Of the tasks that finished in the window, the share that completed:
    /// completed / (completed + dead-lettered). `None` when none finished.
    pub fn success_rate(&self) -> Option<f64> {
        let d = self.completed + self.dead_lettered;
        (d > 0).then(|| self.completed as f64 / d as f64)
    }

    /// Of the tasks that failed at least once (or were replayed) and then ended in the window,
    /// the share that completed: recovered / (recovered + dead-lettered).
    pub fn recovery_rate(&self) -> Option<f64> {
        let d = self.recovered + self.dead_lettered;
        (d > 0).then(|| self.recovered as f64 / d as f64)
    }
}

/// The sums of a tenant's settle counts over the last `window` (server clock).
pub async fn window_counts(
    broker: &Broker,
    tenant: &str,
    now_ms: u64,
    window: Duration,
) -> Result<WindowCounts> {
    let to = now_ms / 60_000;
    let from = now_ms.saturating_sub(window.as_millis() as u64) / 60_000;
    let mut w = WindowCounts::default();
    w.add(&broker.stats_sum(tenant, from, to).await?);
    Ok(w)
}

/// `dlq stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Dead letters matching the filter.
    pub total: u64,
    /// By tenant.
    pub by_tenant: BTreeMap<String, u64>,
    /// By class.
    pub by_class: BTreeMap<String, u64>,
    /// By kind (`""` for malformed entries without one).
    pub by_kind: BTreeMap<String, u64>,
    /// The most frequent fingerprints, each with a sample message.
    pub top_fingerprints: Vec<TopFingerprint>,
    /// The oldest matching dead letter.
    pub oldest: Option<String>,
    /// Its age, ms.
    pub oldest_age_ms: Option<u64>,
    /// The window of the settle counts, ms.
    pub window_ms: u64,
    /// Settle counts over the window (the filter's tenants; class and kind do not apply).
    pub window: WindowCounts,
    /// recovered / (recovered + dead-lettered) over the window.
    pub recovery_rate: Option<f64>,
}

fn filter_json(filter: &Filter) -> String {
    serde_json::json!({
        "classes": filter.classes,
        "kinds": filter.kinds,
        "fingerprints": filter.fingerprints,
    })
    .to_string()
}

/// Tallies the dead letters of `tenant` matching `filter` on the server, page by page.
async fn tally(
    broker: &Broker,
    tenant: &str,
    filter: &Filter,
    acc: &mut Stats,
    fps: &mut BTreeMap<String, TopFingerprint>,
) -> Result<Option<String>> {
    let (mut from, end) = filter.range();
    let fj = filter_json(filter);
    let mut oldest = None;
    loop {
        let page = broker
            .dlq_tally(tenant, &from, &end, TALLY_PAGE, &fj)
            .await?;
        if oldest.is_none() {
            oldest = page.oldest.clone();
        }
        acc.total += page.matched;
        if page.matched > 0 {
            *acc.by_tenant.entry(tenant.to_owned()).or_default() += page.matched;
        }
        for (c, n) in page.classes {
            *acc.by_class.entry(c).or_default() += n;
        }
        for (k, n) in page.kinds {
            *acc.by_kind.entry(k).or_default() += n;
        }
        for FingerprintTally {
            fingerprint,
            count,
            class,
            kind,
            sample,
        } in page.fingerprints
        {
            fps.entry(fingerprint.clone())
                .or_insert(TopFingerprint {
                    fingerprint,
                    count: 0,
                    class,
                    kind,
                    sample_error: sample,
                })
                .count += count;
        }
        match page.next {
            Some(n) => from = n,
            None => return Ok(oldest),
        }
    }
}

/// Computes `dlq stats` for `filter`, with the `top` most frequent fingerprints and settle
/// counts over `window`.
pub async fn stats(
    broker: &Broker,
    filter: &Filter,
    top: usize,
    window: Duration,
) -> Result<Stats> {
    let now = broker.server_time_ms().await?;
    let mut acc = Stats {
        total: 0,
        by_tenant: BTreeMap::new(),
        by_class: BTreeMap::new(),
        by_kind: BTreeMap::new(),
        top_fingerprints: Vec::new(),
        oldest: None,
        oldest_age_ms: None,
        window_ms: window.as_millis() as u64,
        window: WindowCounts::default(),
        recovery_rate: None,
    };
    let mut fps = BTreeMap::new();
    let mut oldest: Option<DlId> = None;
    for tenant in tenants_of(broker, filter).await? {
        if let Some(id) = tally(broker, &tenant, filter, &mut acc, &mut fps).await? {
            let cand = DlId {
                tenant: tenant.clone(),
                id,
            };
            if oldest.as_ref().is_none_or(|o| cand.order(o).is_lt()) {
                oldest = Some(cand);
            }
        }
        acc.window
            .merge(&window_counts(broker, &tenant, now, window).await?);
    }
    let mut top_list: Vec<TopFingerprint> = fps.into_values().collect();
    top_list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    top_list.truncate(top);
    acc.top_fingerprints = top_list;
    acc.oldest_age_ms = oldest
        .as_ref()
        .map(|o| now.saturating_sub(crate::admin::select::id_ms(&o.id)));
    acc.oldest = oldest.map(|o| o.to_string());
    acc.recovery_rate = acc.window.recovery_rate();
    Ok(acc)
}

/// One tenant's health.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TenantHealth {
    /// The tenant (`*` for the overall sum).
    pub tenant: String,
    /// Entries in the lane: waiting plus in flight.
    pub lane_depth: u64,
    /// Entries delivered to a member and not settled yet.
    pub pending: u64,
    /// Scheduled retries.
    pub retries_scheduled: u64,
    /// Of those, due now (waiting for the recovery loop).
    pub retries_due: u64,
    /// Dead letters now.
    pub dead_letters: u64,
    /// Dead letters by class.
    pub dead_letters_by_class: BTreeMap<String, u64>,
    /// Settle counts over the window.
    pub window: WindowCounts,
    /// completed / (completed + dead-lettered) over the window; `None` when nothing finished.
    pub success_rate: Option<f64>,
    /// Circuit-breaker state: `closed`, `open` or `half_open` (for the overall row: how many
    /// tenants' breakers are not closed).
    pub breaker: String,
}

/// `health`: every tenant and the overall sum.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The window of the settle counts, ms.
    pub window_ms: u64,
    /// Fleet members whose admin loop is alive.
    pub live_members: Vec<String>,
    /// Per tenant.
    pub tenants: Vec<TenantHealth>,
    /// The sum over the tenants shown.
    pub overall: TenantHealth,
}

/// Computes `health` for `tenants` (every registered tenant when empty).
pub async fn health(
    broker: &Broker,
    tenants: &[String],
    window: Duration,
    member_ttl: Duration,
) -> Result<Health> {
    let now = broker.server_time_ms().await?;
    let tenants = tenants_of(
        broker,
        &Filter {
            tenants: tenants.to_vec(),
            ..Filter::default()
        },
    )
    .await?;
    let mut out = Vec::new();
    let mut overall = TenantHealth {
        tenant: "*".into(),
        ..TenantHealth::default()
    };
    for t in tenants {
        let mut by_class = Stats {
            total: 0,
            by_tenant: BTreeMap::new(),
            by_class: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            top_fingerprints: Vec::new(),
            oldest: None,
            oldest_age_ms: None,
            window_ms: 0,
            window: WindowCounts::default(),
            recovery_rate: None,
        };
        let mut fps = BTreeMap::new();
        tally(broker, &t, &Filter::default(), &mut by_class, &mut fps).await?;
        let h = TenantHealth {
            lane_depth: broker.lane_len(&t).await?,
            pending: broker.pending_count(&t).await?,
            retries_scheduled: broker.retry_len(&t).await?,
            retries_due: broker.retry_due_count(&t).await?,
            dead_letters: by_class.total,
            dead_letters_by_class: by_class.by_class,
            window: window_counts(broker, &t, now, window).await?,
            success_rate: None,
            breaker: broker.breaker_info(&t).await?.state,
            tenant: t,
        };
        overall.lane_depth += h.lane_depth;
        overall.pending += h.pending;
        overall.retries_scheduled += h.retries_scheduled;
        overall.retries_due += h.retries_due;
        overall.dead_letters += h.dead_letters;
        for (c, n) in &h.dead_letters_by_class {
            *overall.dead_letters_by_class.entry(c.clone()).or_default() += n;
        }
        overall.window.merge(&h.window);
        let mut h = h;
        h.success_rate = h.window.success_rate();
        out.push(h);
    }
    let not_closed = out.iter().filter(|h| h.breaker != "closed").count();
    overall.breaker = format!("{not_closed} not closed");
    overall.success_rate = overall.window.success_rate();
    Ok(Health {
        window_ms: window.as_millis() as u64,
        live_members: broker.admin_live_members(member_ttl).await?,
        tenants: out,
        overall,
    })
}

/// `health` as text: one row per tenant, then the overall row.
pub fn health_text(h: &Health) -> String {
    let mut s = format!(
        "live fleet members: {}\nwindow: last {}\n\n",
        if h.live_members.is_empty() {
            "none".to_owned()
        } else {
            h.live_members.join(", ")
        },
        crate::admin::time::format_age(h.window_ms)
    );
    s.push_str("SUCCESS = completed / (completed + dead-lettered) in the window; DUPS = enqueues refused as duplicates\n\n");
    s.push_str(&format!(
        "{:<16} {:>8} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6}  {:<7} {}\n",
        "TENANT",
        "LANE",
        "PENDING",
        "RETRIES",
        "DUE",
        "DLQ",
        "COMPLETED",
        "RECOVERED",
        "DEAD",
        "REPLAYED",
        "SUCCESS",
        "DUPS",
        "BREAKER",
        "DLQ BY CLASS"
    ));
    for t in h.tenants.iter().chain(std::iter::once(&h.overall)) {
        let classes: Vec<String> = t
            .dead_letters_by_class
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        s.push_str(&format!(
            "{:<16} {:>8} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6}  {:<7} {}\n",
            t.tenant,
            t.lane_depth,
            t.pending,
            t.retries_scheduled,
            t.retries_due,
            t.dead_letters,
            t.window.completed,
            t.window.recovered,
            t.window.dead_lettered,
            t.window.replayed,
            t.success_rate
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            t.window.duplicates,
            t.breaker,
            classes.join(" ")
        ));
    }
    s
}

/// `dlq stats` as text.
pub fn stats_text(s: &Stats) -> String {
    let mut out = format!("dead letters: {}\n", s.total);
    if let (Some(id), Some(age)) = (&s.oldest, s.oldest_age_ms) {
        out.push_str(&format!(
            "oldest: {id} ({} old)\n",
            crate::admin::time::format_age(age)
        ));
    }
    let rate = s
        .recovery_rate
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "n/a (nothing recovered or dead-lettered)".into());
    out.push_str(&format!(
        "last {}: completed {}, recovered {}, dead-lettered {}, replayed {}; recovery rate {rate}\n",
        crate::admin::time::format_age(s.window_ms),
        s.window.completed,
        s.window.recovered,
        s.window.dead_lettered,
        s.window.replayed
    ));
    for (title, map) in [
        ("by tenant", &s.by_tenant),
        ("by class", &s.by_class),
        ("by kind", &s.by_kind),
    ] {
        out.push_str(&format!("\n{title}:\n"));
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, n) in rows {
            out.push_str(&format!(
                "  {:<28} {n}\n",
                if k.is_empty() { "(none)" } else { k }
            ));
        }
    }
    out.push_str("\ntop fingerprints:\n");
    for f in &s.top_fingerprints {
        let sample: String = f.sample_error.chars().take(100).collect();
        out.push_str(&format!(
            "  {:<12} {:>7}  {:<20} {:<18} {}\n",
            f.fingerprint, f.count, f.class, f.kind, sample
        ));
    }
    out
}
