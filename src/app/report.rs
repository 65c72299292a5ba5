//! The read-only reports: `dlq list` (filtered, cursor-paginated), `dlq stats` (counts by
//! tenant, class, kind, top fingerprints, oldest entry, recovery rate), `health` (per tenant
//! and overall), `dlq export` (JSON Lines). None of them writes anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::admin::review::{Review, ReviewState};
use crate::admin::scan::{scan, tenants_of};
use crate::admin::select::{compare_ids, DlId, Filter};
use crate::app::view::DeadLetterView;
use crate::broker::{Broker, DlqCounts, DlqGroup, FingerprintTally};
use crate::error::{Error, Result};

/// The longest window `health` and `stats` accept.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Dead letters one tally call counts on the server.
const TALLY_PAGE: usize = 1_000;

/// Entries one `dlq list` request reads at most by default (`scan_limit`): a filter that
/// matches rarely answers a page of what it found in that many, with a cursor to go on,
/// instead of reading every dead letter in one request.
pub const LIST_SCAN_LIMIT: usize = 10_000;
/// The largest `scan_limit` a request may ask for.
pub const LIST_SCAN_MAX: usize = 1_000_000;

/// The fields a list row shows ([`DeadLetterView::summary_json`], `list_line`): the rest of a
/// dead letter (payload, history, steps, outputs) stays in Redis until it is shown whole.
const SUMMARY_FIELDS: [&str; 8] = [
    crate::task::field::TASK_ID,
    crate::task::field::KIND,
    crate::deadletter::field::CLASS,
    crate::deadletter::field::FINGERPRINT,
    crate::deadletter::field::ERROR,
    crate::task::field::ATTEMPT,
    crate::deadletter::field::ACTION,
    crate::task::field::REPLAY_OF,
];

/// What `dlq list` asks for.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Tenants, classes, kinds, fingerprints, time range.
    pub filter: Filter,
    /// Only the dead letters of this task id.
    pub task_id: Option<String>,
    /// Continue after this position (the `next_cursor` of the page before).
    pub cursor: Option<DlId>,
    /// Entries per page.
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Entries read at most (at least one per tenant is read whatever it says).
    pub scan_limit: usize,
    /// Only dead letters in these review states (empty: any).
    pub states: Vec<ReviewState>,
    /// Only dead letters assigned to these operators (empty: any).
    pub assignees: Vec<String>,
    /// List the members of folds too (by default a fold's representative stands for them;
    /// with a `task_id`, its dead letters show whatever they are).
    pub expand_folds: bool,
}

impl ListQuery {
    /// A query of `filter` with the defaults of everything else: oldest first, one page of
    /// `limit`, folds collapsed.
    pub fn new(filter: Filter, limit: usize) -> ListQuery {
        ListQuery {
            filter,
            task_id: None,
            cursor: None,
            limit,
            newest_first: false,
            scan_limit: LIST_SCAN_LIMIT,
            states: Vec::new(),
            assignees: Vec::new(),
            expand_folds: false,
        }
    }

    /// The criteria as scripts/dlq_page.lua reads them.
    fn filter_json(&self) -> String {
        serde_json::json!({
            "classes": self.filter.classes,
            "kinds": self.filter.kinds,
            "fingerprints": self.filter.fingerprints,
            "task_id": self.task_id.as_deref().unwrap_or(""),
            "payload": self.filter.payload,
            "states": self.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "assignees": self.assignees,
            // A task's own dead letters show even as a fold's members.
            "members": if self.expand_folds || self.task_id.is_some() { "show" } else { "hide" },
        })
        .to_string()
    }

    /// Whether anything but tenants and time narrows the list (then a page may need many
    /// entries read per match).
    fn selective(&self) -> bool {
        !self.filter.classes.is_empty()
            || !self.filter.kinds.is_empty()
            || !self.filter.fingerprints.is_empty()
            || self.task_id.is_some()
            || !self.filter.payload.is_empty()
            || !self.states.is_empty()
            || !self.assignees.is_empty()
    }
}

/// One page of `dlq list`.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The dead letters in the page's order (by dead-letter time, then tenant; oldest first
    /// unless asked newest first), with the fields a list row shows.
    pub entries: Vec<DeadLetterView>,
    /// Pass as `--cursor` for the next page; `None` once nothing is left. After a page that
    /// ended at its scan limit it is where the scan stopped, not an entry of the page.
    pub next_cursor: Option<String>,
    /// Dead letters read for this page.
    pub scanned: u64,
    /// The page ended because `scan_limit` entries were read: fewer than `limit` entries
    /// (maybe none) matched up to `next_cursor`, and more may match after it.
    pub scan_limit_reached: bool,
}

/// Where one tenant's scan stands while a page is assembled.
struct Lane {
    tenant: String,
    /// Where its next step starts.
    start: String,
    /// Where its range ends.
    end: String,
    /// The last entry read, if any.
    pos: Option<String>,
    /// Nothing is left in its range.
    done: bool,
    /// Entries per step (grows as the page needs more).
    chunk: usize,
    /// How many matches it holds in all, when its counts tell.
    expect: Option<u64>,
}

impl Lane {
    /// The lane holds no more matches up to `t_ms` (the server's clock when its counts were
    /// read): newest first it is done; oldest first it counts as read up to then, so only
    /// dead letters added since are read (and the cursor never passes one).
    fn exhausted(&mut self, t_ms: u64, newest_first: bool) {
        if newest_first {
            self.done = true;
            return;
        }
        let at = format!("{t_ms}-{}", u64::MAX);
        if self
            .pos
            .as_ref()
            .is_none_or(|p| compare_ids(p, &at).is_lt())
        {
            self.start = format!("({at}");
            self.pos = Some(at);
        }
    }
}

/// The sort key of a page: (entry id, tenant), reversed for newest first.
fn page_order(a: &DlId, b: &DlId, newest_first: bool) -> std::cmp::Ordering {
    let o = a.order(b);
    if newest_first {
        o.reverse()
    } else {
        o
    }
}

/// Where tenant `tenant`'s part of a page starts: after `cursor` in the page's order
/// (position (id, tenant)), within the filter's range (`range_start`, `-` or `+` when open).
fn lane_start(
    tenant: &str,
    cursor: Option<&DlId>,
    range_start: &str,
    newest_first: bool,
) -> String {
    let Some(c) = cursor else {
        return range_start.to_owned();
    };
    // Oldest first, after (id, t) means a later id, or the same id in a later tenant; newest
    // first, an earlier id, or the same id in an earlier tenant.
    let same_id_follows = if newest_first {
        tenant < c.tenant.as_str()
    } else {
        tenant > c.tenant.as_str()
    };
    let at = if same_id_follows {
        c.id.clone()
    } else {
        format!("({}", c.id)
    };
    if range_start == "-" || range_start == "+" {
        return at;
    }
    let beyond = if newest_first {
        compare_ids(&c.id, range_start) != std::cmp::Ordering::Greater
    } else {
        compare_ids(&c.id, range_start) != std::cmp::Ordering::Less
    };
    if beyond {
        at
    } else {
        range_start.to_owned()
    }
}

/// A page of `dlq list` ([`ListQuery`]).
///
/// Each tenant's dead letters are scanned on the server (scripts/dlq_page.lua: matched there,
/// only matches come back, with the fields a row shows), every tenant's step in one pipelined
/// round trip, and merged by (dead-letter id, tenant). A step reads a few entries per tenant
/// first, more (×4) in the next round, and only tenants that could still hold one of the
/// page's entries are read again, so an unfiltered page reads about its own size. Reading
/// stops at `scan_limit` entries: the page then holds what matched up to where every tenant
/// was read, and its cursor is that position. A `task_id` is looked up in the tenants' task
/// records first (one round trip): the dead letters they name are the answer; only when no
/// record names one (records off, dead letters older than records) is it a scan like any
/// other criterion.
pub async fn list_page(broker: &Broker, q: &ListQuery) -> Result<ListPage> {
    let tenants = tenants_of(broker, &q.filter).await?;
    let (lo, hi) = q.filter.range();
    let (range_start, range_end) = if q.newest_first { (hi, lo) } else { (lo, hi) };
    let fj = q.filter_json();
    let want = q.limit + 1;
    let mut lanes: Vec<Lane> = tenants
        .iter()
        .map(|t| Lane {
            tenant: t.clone(),
            start: lane_start(t, q.cursor.as_ref(), &range_start, q.newest_first),
            end: range_end.clone(),
            pos: None,
            done: false,
            chunk: 0,
            expect: None,
        })
        .collect();
    let mut found: Vec<DeadLetterView> = Vec::new();
    let mut scanned = 0u64;

    if let Some(task_id) = &q.task_id {
        let named = broker.dlq_ids_of_task(&tenants, task_id).await?;
        if named.iter().any(Option::is_some) {
            // The records' dead letters: each read alone, if it is in the page's range.
            let mut steps = Vec::new();
            for (lane, id) in lanes.iter().zip(&named) {
                let Some(id) = id else { continue };
                let within = |bound: &str, below: bool| {
                    let (exclusive, b) = match bound.strip_prefix('(') {
                        Some(b) => (true, b),
                        None => (false, bound),
                    };
                    if b == "-" || b == "+" {
                        return true;
                    }
                    let o = compare_ids(id, b);
                    match (below, exclusive) {
                        (true, false) => o != std::cmp::Ordering::Greater,
                        (true, true) => o == std::cmp::Ordering::Less,
                        (false, false) => o != std::cmp::Ordering::Less,
                        (false, true) => o == std::cmp::Ordering::Greater,
                    }
                };
                let (lower, upper) = if q.newest_first {
                    (&lane.end, &lane.start)
                } else {
                    (&lane.start, &lane.end)
                };
                if within(lower, false) && within(upper, true) {
                    steps.push(crate::broker::PageScan {
                        tenant: &lane.tenant,
                        newest_first: false,
                        start: id.clone(),
                        end: id,
                        budget: 1,
                        want: 1,
                        filter_json: &fj,
                        fields: &SUMMARY_FIELDS,
                        review: true,
                    });
                }
            }
            let replies = broker.dlq_pages(&steps).await?;
            for (step, r) in steps.iter().zip(replies) {
                scanned += r.scanned;
                found.extend(reviewed(step.tenant, r));
            }
            found.sort_by(|a, b| page_order(&a.id, &b.id, q.newest_first));
            let more = found.len() > q.limit;
            found.truncate(q.limit);
            count_folds(broker, &mut found).await?;
            return Ok(ListPage {
                next_cursor: if more {
                    found.last().map(|v| v.id.to_string())
                } else {
                    None
                },
                entries: found,
                scanned,
                scan_limit_reached: false,
            });
        }
    }

    // The tenants' counts say how many dead letters of each class, kind and fingerprint they
    // hold: a tenant with none of the criteria's is not read at all, and one read from its
    // start to the end of its stream is done once it gave all of them.
    let counted = !(q.filter.classes.is_empty()
        && q.filter.kinds.is_empty()
        && q.filter.fingerprints.is_empty());
    let mut counted_at = 0;
    if counted {
        counted_at = broker.server_time_ms().await?;
        let whole = q.cursor.is_none()
            && q.filter.since_ms.is_none()
            && q.filter.until_ms.is_none()
            && q.task_id.is_none()
            && q.filter.payload.is_empty();
        for (l, c) in lanes.iter_mut().zip(broker.dlq_counts_of(&tenants).await?) {
            let Some(c) = c else { continue };
            let n: u64 = c
                .groups
                .iter()
                .filter(|g| q.filter.selects(&g.class, &g.kind, &g.fingerprint))
                .map(|g| g.count)
                .sum();
            if n == 0 {
                l.exhausted(counted_at, q.newest_first);
            } else if whole {
                l.expect = Some(n);
            }
        }
    }

    // At least one entry per tenant per request, so every page moves the cursor on.
    let budget = q.scan_limit.max(lanes.len()) as u64;
    let first_chunk = if q.selective() { 64 } else { 4 };
    let pos_key = |l: &Lane| {
        l.pos.as_ref().map(|p| DlId {
            tenant: l.tenant.clone(),
            id: p.clone(),
        })
    };
    loop {
        // The want-th entry found so far: a tenant read up to it or beyond cannot add an
        // entry before it, so it need not be read again.
        found.sort_by(|a, b| page_order(&a.id, &b.id, q.newest_first));
        let kth = found.get(want - 1).map(|v| v.id.clone());
        let behind = |l: &Lane| match (&kth, pos_key(l)) {
            (None, _) | (_, None) => true,
            (Some(k), Some(p)) => page_order(&p, k, q.newest_first).is_lt(),
        };
        let mut need: Vec<usize> = (0..lanes.len())
            .filter(|&i| !lanes[i].done && behind(&lanes[i]))
            .collect();
        if need.is_empty() || scanned >= budget {
            break;
        }
        // Furthest behind first (never read before: first of all), so a budget smaller than
        // one round reads where the page needs it.
        need.sort_by(|&a, &b| match (pos_key(&lanes[a]), pos_key(&lanes[b])) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => page_order(&x, &y, q.newest_first),
        });
        let left = (budget - scanned) as usize;
        need.truncate(left);
        let share = (left / need.len()).max(1);
        for &i in &need {
            let l = &mut lanes[i];
            l.chunk = if l.chunk == 0 {
                first_chunk.max((2 * want).div_ceil(need.len()))
            } else {
                (l.chunk * 4).min(1_000)
            };
        }
        let mut steps = Vec::with_capacity(need.len());
        for &i in &need {
            let l = &lanes[i];
            let mine = found.iter().filter(|v| v.id.tenant == l.tenant).count();
            steps.push(crate::broker::PageScan {
                tenant: &l.tenant,
                newest_first: q.newest_first,
                start: l.start.clone(),
                end: &l.end,
                budget: l.chunk.min(share),
                // No more than the page needs, nor than the tenant holds (then the step
                // stops at its last match).
                want: want
                    .saturating_sub(mine)
                    .min(
                        l.expect
                            .map_or(usize::MAX, |n| (n as usize).saturating_sub(mine)),
                    )
                    .max(1),
                filter_json: &fj,
                fields: &SUMMARY_FIELDS,
                review: true,
            });
        }
        let replies = broker.dlq_pages(&steps).await?;
        drop(steps);
        for (&i, r) in need.iter().zip(replies) {
            let l = &mut lanes[i];
            scanned += r.scanned;
            match &r.last {
                Some(last) => {
                    l.start = format!("({last}");
                    l.pos = Some(last.clone());
                    l.done = r.ended;
                }
                None => l.done = true,
            }
            found.extend(reviewed(&l.tenant, r));
            if let Some(n) = l.expect {
                let mine = found.iter().filter(|v| v.id.tenant == l.tenant).count() as u64;
                if mine >= n && !l.done {
                    l.expect = None;
                    l.exhausted(counted_at, q.newest_first);
                }
            }
        }
    }
    found.sort_by(|a, b| page_order(&a.id, &b.id, q.newest_first));
    // Every entry up to the least-read tenant's position has been considered.
    let frontier = lanes
        .iter()
        .filter(|l| !l.done)
        .filter_map(pos_key)
        .min_by(|a, b| page_order(a, b, q.newest_first));
    let unread = lanes.iter().any(|l| !l.done && l.pos.is_none());
    if let Some(f) = &frontier {
        found.retain(|v| page_order(&v.id, f, q.newest_first).is_le());
    }
    if unread {
        // Only possible with a budget below the tenant count, which `budget` rules out.
        found.clear();
    }
    let (next_cursor, scan_limit_reached) = if found.len() > q.limit {
        found.truncate(q.limit);
        (found.last().map(|v| v.id.to_string()), false)
    } else {
        match &frontier {
            Some(f) => (Some(f.to_string()), true),
            None if unread => (q.cursor.as_ref().map(DlId::to_string), true),
            None => (None, false),
        }
    };
    count_folds(broker, &mut found).await?;
    Ok(ListPage {
        entries: found,
        next_cursor,
        scanned,
        scan_limit_reached,
    })
}

/// The views of one scan step's matches, each with its review.
fn reviewed(tenant: &str, step: crate::broker::ScanStep) -> Vec<DeadLetterView> {
    let mut reviews = step.reviews.into_iter();
    step.matches
        .into_iter()
        .map(|e| {
            let (record, rep) = reviews.next().unwrap_or_default();
            DeadLetterView::from_entry(tenant, e).with_review(Review::from_scan(&record, &rep))
        })
        .collect()
}

/// Fills in how many dead letters each fold a view represents holds (its tenant's counts, one
/// round trip for the tenants that have one in `views`).
pub async fn count_folds(broker: &Broker, views: &mut [DeadLetterView]) -> Result<()> {
    let mut tenants: Vec<String> = views
        .iter()
        .filter(|v| v.review.as_ref().is_some_and(|r| r.represents(&v.id.id)))
        .map(|v| v.id.tenant.clone())
        .collect();
    if tenants.is_empty() {
        return Ok(());
    }
    tenants.sort();
    tenants.dedup();
    let counts = broker.dlq_counts_of(&tenants).await?;
    for v in views.iter_mut() {
        let fp = v
            .get(crate::deadletter::field::FINGERPRINT)
            .unwrap_or("")
            .to_owned();
        let Some(review) = v.review.as_mut().filter(|r| r.represents(&v.id.id)) else {
            continue;
        };
        let Some(Some(c)) = tenants
            .iter()
            .position(|t| *t == v.id.tenant)
            .and_then(|i| counts.get(i))
        else {
            continue;
        };
        review.fold_count = Some(
            c.groups
                .iter()
                .filter(|g| g.fingerprint == fp)
                .map(|g| g.count)
                .sum(),
        );
    }
    Ok(())
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

/// The minutes (`from..=to`, server clock) of the settle-count buckets a window of `window`
/// ending at `now_ms` covers.
fn window_minutes(now_ms: u64, window: Duration) -> (u64, u64) {
    let to = now_ms / 60_000;
    let from = now_ms.saturating_sub(window.as_millis() as u64) / 60_000;
    (from, to)
}

/// The sums of each of `tenants`' settle counts over the last `window` (server clock), added
/// up on the server, every tenant in one round trip.
async fn window_counts_of(
    broker: &Broker,
    tenants: &[String],
    now_ms: u64,
    window: Duration,
) -> Result<Vec<WindowCounts>> {
    let (from, to) = window_minutes(now_ms, window);
    Ok(broker
        .stats_sums(tenants, from, to)
        .await?
        .iter()
        .map(|m| {
            let mut w = WindowCounts::default();
            w.add(m);
            w
        })
        .collect())
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
    /// The filter's tenants' dead letters by review state (`new`, `in_review`, `escalated`,
    /// `folded`), whatever the other criteria; `None` while a tenant's counts are rebuilt.
    pub by_state: Option<BTreeMap<String, u64>>,
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

/// Dead letters each tenant's scan for the oldest match reads at most, when the counts answer
/// everything else (`dlq stats` with a class, kind or fingerprint criterion).
const OLDEST_SCAN: usize = 10_000;

/// Adds the groups of one tenant's whole counts that `filter`'s class, kind and fingerprint
/// criteria select to `acc` and `fps`. Returns how many dead letters they hold.
fn add_counts(
    tenant: &str,
    counts: &DlqCounts,
    filter: &Filter,
    acc: &mut Stats,
    fps: &mut BTreeMap<String, TopFingerprint>,
) -> u64 {
    let mut matched = 0;
    let selected = |g: &&DlqGroup| filter.selects(&g.class, &g.kind, &g.fingerprint);
    for g in counts.groups.iter().filter(selected) {
        matched += g.count;
        *acc.by_class.entry(g.class.clone()).or_default() += g.count;
        *acc.by_kind.entry(g.kind.clone()).or_default() += g.count;
        fps.entry(g.fingerprint.clone())
            .or_insert(TopFingerprint {
                fingerprint: g.fingerprint.clone(),
                count: 0,
                class: g.class.clone(),
                kind: g.kind.clone(),
                sample_error: g.sample.clone(),
            })
            .count += g.count;
    }
    acc.total += matched;
    if matched > 0 {
        *acc.by_tenant.entry(tenant.to_owned()).or_default() += matched;
    }
    matched
}

/// Computes `dlq stats` for `filter`, with the `top` most frequent fingerprints and settle
/// counts over `window`.
///
/// Without a time range, each tenant's counts (kept by the scripts that add and remove dead
/// letters, see scripts/lib/dlq_counts.lua) answer in one round trip for every tenant, and the
/// oldest match is one more (the stream's first entry, or — with a class, kind or fingerprint
/// criterion — the first match of a scan of at most [`OLDEST_SCAN`] entries per tenant; none
/// found there leaves `oldest` out). A tenant whose counts are being rebuilt, and any time
/// range, are tallied on the server page by page as before.
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
        by_state: None,
    };
    let mut fps = BTreeMap::new();
    let mut oldest: Option<DlId> = None;
    let mut consider = |cand: DlId| {
        if oldest.as_ref().is_none_or(|o| cand.order(o).is_lt()) {
            oldest = Some(cand);
        }
    };
    let tenants = tenants_of(broker, filter).await?;
    let timed = filter.since_ms.is_some() || filter.until_ms.is_some();
    let (counts, windows) = tokio::try_join!(
        async {
            if timed {
                Ok(vec![None; tenants.len()])
            } else {
                broker.dlq_counts_of(&tenants).await
            }
        },
        window_counts_of(broker, &tenants, now, window),
    )?;
    for w in &windows {
        acc.window.merge(w);
    }
    // Tenants answered by their counts: the oldest match comes from a short scan.
    let fj = ListQuery {
        expand_folds: true,
        ..ListQuery::new(filter.clone(), 1)
    }
    .filter_json();
    let mut steps = Vec::new();
    for (tenant, c) in tenants.iter().zip(&counts) {
        match c {
            Some(c) => {
                if add_counts(tenant, c, filter, &mut acc, &mut fps) > 0 {
                    steps.push(crate::broker::PageScan {
                        tenant,
                        newest_first: false,
                        start: "-".into(),
                        end: "+",
                        budget: OLDEST_SCAN,
                        want: 1,
                        filter_json: &fj,
                        fields: &[crate::deadletter::field::CLASS],
                        review: false,
                    });
                }
            }
            None => {
                if let Some(id) = tally(broker, tenant, filter, &mut acc, &mut fps).await? {
                    consider(DlId {
                        tenant: tenant.clone(),
                        id,
                    });
                }
            }
        }
    }
    for (step, r) in steps.iter().zip(broker.dlq_pages(&steps).await?) {
        if let Some(e) = r.matches.into_iter().next() {
            consider(DlId {
                tenant: step.tenant.to_owned(),
                id: e.id,
            });
        }
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
    acc.by_state = crate::admin::triage::by_state(broker, &tenants).await?;
    Ok(acc)
}

/// The review of dead letter `id` of `tenant` (whose fields are `fields`): its own record, or
/// its fold's representative's, and how many its fold holds.
pub async fn review_of(
    broker: &Broker,
    tenant: &str,
    id: &str,
    fields: &[(String, String)],
) -> Result<Review> {
    let fp = fields
        .iter()
        .find(|(k, _)| k == crate::deadletter::field::FINGERPRINT)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let folds = broker
        .dlq_folds_of(&[tenant.to_owned()])
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let rep = folds.get(fp).cloned();
    let holder = match &rep {
        Some(r) if r != id => r.as_str(),
        _ => id,
    };
    let record = broker
        .dlq_review_records(tenant, &[holder])
        .await?
        .into_iter()
        .next()
        .flatten()
        .unwrap_or_default();
    let mut review = Review::from_scan(&record, rep.as_deref().unwrap_or(""));
    if rep.is_some() {
        review.fold_count = crate::admin::triage::fingerprint_count(broker, tenant, fp).await?;
    }
    Ok(review)
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

/// Computes `health` for `tenants` (every registered tenant when empty): five pipelined round
/// trips whatever the number of tenants (depths, breakers, dead-letter counts, settle counts
/// summed on the server, live members); a tenant whose dead-letter counts are being rebuilt
/// has its classes tallied page by page instead.
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
    let refs: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let arcs: Vec<std::sync::Arc<str>> = tenants.iter().map(|t| t.as_str().into()).collect();
    let (depths, (_, breakers), counts, windows, live_members) = tokio::try_join!(
        broker.tenant_depths(&arcs),
        broker.breaker_states(&refs),
        broker.dlq_counts_of(&tenants),
        window_counts_of(broker, &tenants, now, window),
        broker.admin_live_members(member_ttl),
    )?;
    let mut out = Vec::new();
    let mut overall = TenantHealth {
        tenant: "*".into(),
        ..TenantHealth::default()
    };
    let rows = tenants
        .into_iter()
        .zip(depths)
        .zip(breakers)
        .zip(counts)
        .zip(windows);
    for ((((t, d), b), c), w) in rows {
        let by_class = match c {
            Some(c) => {
                let mut m = BTreeMap::new();
                for g in c.groups {
                    *m.entry(g.class).or_default() += g.count;
                }
                m
            }
            None => {
                let mut acc = Stats {
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
                    by_state: None,
                };
                tally(
                    broker,
                    &t,
                    &Filter::default(),
                    &mut acc,
                    &mut BTreeMap::new(),
                )
                .await?;
                acc.by_class
            }
        };
        let h = TenantHealth {
            lane_depth: d.lane,
            pending: d.pending,
            retries_scheduled: d.retries,
            retries_due: d.overdue,
            dead_letters: d.dlq,
            dead_letters_by_class: by_class,
            success_rate: w.success_rate(),
            window: w,
            breaker: b.state,
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
        out.push(h);
    }
    let not_closed = out.iter().filter(|h| h.breaker != "closed").count();
    overall.breaker = format!("{not_closed} not closed");
    overall.success_rate = overall.window.success_rate();
    Ok(Health {
        window_ms: window.as_millis() as u64,
        live_members,
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
    if let Some(states) = &s.by_state {
        let list: Vec<String> = ReviewState::ALL
            .iter()
            .map(|st| format!("{} {}", st.as_str(), states.get(st.as_str()).unwrap_or(&0)))
            .collect();
        out.push_str(&format!(
            "\nby review state (the tenants' dead letters): {}\n",
            list.join(", ")
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::select::id_ms;
    use crate::config::{RawConfig, Settings};
    use crate::embedded::RedisServer;

    /// One seeded dead letter: where it is and what a filter looks at.
    #[derive(Debug, Clone)]
    struct Seeded {
        id: DlId,
        class: &'static str,
        task_id: String,
        customer: String,
        n: u64,
    }

    async fn broker(redis: &RedisServer) -> Broker {
        let mut raw = RawConfig::defaults().unwrap();
        raw.redis.url = redis.url();
        let settings = Settings::from_raw(raw).unwrap();
        Broker::connect(&settings).await.unwrap()
    }

    /// Three tenants whose ids collide on purpose (the same `ms-seq` in several tenants, so
    /// the tenant breaks ties): `a` at every ms from 1000, `b` at every other one, `c` at
    /// every third one with sequence 1. One in 97 is the rare class `context_overflow`.
    async fn seed(b: &Broker, per_tenant: u64) -> Vec<Seeded> {
        let mut all = Vec::new();
        for i in 0..per_tenant * 3 {
            let (tenant, ms, seq) = match i % 3 {
                0 => ("a", 1000 + i / 3, 0),
                1 if (i / 3) % 2 == 0 => ("b", 1000 + i / 3, 0),
                2 if (i / 3) % 3 == 0 => ("c", 1000 + i / 3, 1),
                _ => continue,
            };
            let n = i / 3;
            let class = if n % 97 == 13 {
                "context_overflow"
            } else {
                "timeout"
            };
            let s = Seeded {
                id: DlId {
                    tenant: tenant.into(),
                    id: format!("{ms}-{seq}"),
                },
                class,
                task_id: format!("t-{}", n % 40),
                customer: format!("c{}", n % 50),
                n,
            };
            let payload = format!(
                "{{\"customer\":\"{}\",\"n\":{},\"meta\":{{\"customer\":\"{}\"}}}}",
                s.customer, n, s.customer
            );
            b.dlq_append_raw(
                tenant,
                &s.id.id,
                &[
                    ("task_id", s.task_id.clone()),
                    ("kind", "k".into()),
                    ("payload", payload),
                    ("class", class.into()),
                    ("error", "boom".into()),
                    (
                        "fingerprint",
                        if class == "timeout" { "aa" } else { "ff" }.into(),
                    ),
                ],
            )
            .await
            .unwrap();
            all.push(s);
        }
        all.sort_by(|x, y| x.id.order(&y.id));
        all
    }

    fn query(filter: Filter, limit: usize) -> ListQuery {
        ListQuery::new(filter, limit)
    }

    /// Every page of `q`, following the cursors; the ids in order and each page's answer.
    async fn walk(b: &Broker, mut q: ListQuery) -> (Vec<String>, Vec<ListPage>) {
        let mut ids = Vec::new();
        let mut pages = Vec::new();
        for _ in 0..10_000 {
            let page = list_page(b, &q).await.unwrap();
            ids.extend(page.entries.iter().map(|e| e.id.to_string()));
            let next = page.next_cursor.clone();
            pages.push(page);
            match next {
                Some(c) => q.cursor = Some(DlId::parse(&c, None).unwrap()),
                None => return (ids, pages),
            }
        }
        panic!("the cursor never ended");
    }

    fn ids(of: impl Iterator<Item = Seeded>) -> Vec<String> {
        of.map(|s| s.id.to_string()).collect()
    }

    /// Pages follow each other exactly (every entry once, in (id, tenant) order, ties between
    /// tenants included), oldest and newest first, within a time range too; an unfiltered
    /// page reads about its own size, not every tenant's dead letters.
    #[tokio::test]
    async fn pages_walk_every_dead_letter_once_in_order() {
        let redis = RedisServer::start().unwrap();
        let b = broker(&redis).await;
        let all = seed(&b, 300).await;
        let (got, pages) = walk(&b, query(Filter::default(), 7)).await;
        assert_eq!(got, ids(all.iter().cloned()));
        for p in &pages {
            assert!(!p.scan_limit_reached);
            assert!(p.scanned <= 60, "a page of 7 read {} entries", p.scanned);
        }
        let mut q = query(Filter::default(), 11);
        q.newest_first = true;
        let (got, _) = walk(&b, q).await;
        assert_eq!(got, ids(all.iter().rev().cloned()));
        // A time range: ms 1100 to 1199, both ends inclusive, newest first.
        let mut q = query(
            Filter {
                since_ms: Some(1100),
                until_ms: Some(1199),
                ..Filter::default()
            },
            13,
        );
        q.newest_first = true;
        let (got, _) = walk(&b, q).await;
        let want = all
            .iter()
            .rev()
            .filter(|s| (1100..=1199).contains(&id_ms(&s.id.id)))
            .cloned();
        assert_eq!(got, ids(want));
        // One tenant only.
        let (got, _) = walk(
            &b,
            query(
                Filter {
                    tenants: vec!["b".into()],
                    ..Filter::default()
                },
                50,
            ),
        )
        .await;
        assert_eq!(got, ids(all.iter().filter(|s| s.id.tenant == "b").cloned()));
    }

    /// A rare filter never reads more than its scan limit per request: a page that did not
    /// fill says so and carries the cursor where the scan stopped, and walking those cursors
    /// finds every match exactly once.
    #[tokio::test]
    async fn a_rare_filter_reads_at_most_its_scan_limit_and_resumes_where_it_stopped() {
        let redis = RedisServer::start().unwrap();
        let b = broker(&redis).await;
        let all = seed(&b, 1000).await;
        let rare: Vec<Seeded> = all
            .iter()
            .filter(|s| s.class == "context_overflow")
            .cloned()
            .collect();
        assert!(rare.len() > 10 && rare.len() < 40, "{}", rare.len());
        let mut q = query(
            Filter {
                classes: vec!["context_overflow".into()],
                ..Filter::default()
            },
            50,
        );
        q.scan_limit = 100;
        let (got, pages) = walk(&b, q.clone()).await;
        assert_eq!(got, ids(rare.iter().cloned()));
        for p in &pages {
            assert!(p.scanned <= 100, "read {} with a limit of 100", p.scanned);
        }
        let stopped = pages.iter().filter(|p| p.scan_limit_reached).count();
        assert!(
            stopped >= all.len() / 100 - 1,
            "{stopped} of {}",
            pages.len()
        );
        assert!(pages
            .iter()
            .all(|p| p.next_cursor.is_some() || !p.scan_limit_reached));
        // Newest first, and a page size smaller than the matches: the same set, reversed.
        q.newest_first = true;
        q.limit = 4;
        q.scan_limit = 250;
        let (got, pages) = walk(&b, q).await;
        assert_eq!(got, ids(rare.iter().rev().cloned()));
        assert!(pages.iter().all(|p| p.scanned <= 250));
        // With room enough, one request answers: every match, no cursor.
        let mut q = query(
            Filter {
                fingerprints: vec!["ff".into()],
                ..Filter::default()
            },
            50,
        );
        q.scan_limit = 100_000;
        let page = list_page(&b, &q).await.unwrap();
        assert_eq!(page.next_cursor, None);
        assert!(!page.scan_limit_reached);
        assert_eq!(page.scanned, all.len() as u64);
        assert_eq!(
            page.entries
                .iter()
                .map(|e| e.id.to_string())
                .collect::<Vec<_>>(),
            ids(rare.iter().cloned())
        );
        // A row carries what a list shows, not the payload.
        assert_eq!(page.entries[0].get("class"), Some("context_overflow"));
        assert_eq!(page.entries[0].get("payload"), None);

        // Once the tenants' dead letters are counted, a tenant without the class is not read,
        // and one is read only up to its last match.
        for t in ["a", "b", "c"] {
            while b.dlq_counts_step(t, 500).await.unwrap() != crate::broker::CountsStep::Complete {}
        }
        let page = list_page(&b, &q).await.unwrap();
        assert_eq!(
            page.entries
                .iter()
                .map(|e| e.id.to_string())
                .collect::<Vec<_>>(),
            ids(rare.iter().cloned())
        );
        assert_eq!(page.next_cursor, None);
        let last_match: u64 = ["a", "b", "c"]
            .iter()
            .map(|t| {
                let mine: Vec<&Seeded> = all.iter().filter(|s| s.id.tenant == *t).collect();
                mine.iter()
                    .rposition(|s| s.class == "context_overflow")
                    .map_or(0, |i| i as u64 + 1)
            })
            .sum();
        assert!(
            page.scanned <= last_match,
            "{} read; the matches end after {last_match}",
            page.scanned
        );
        for newest_first in [false, true] {
            let mut q = q.clone();
            q.newest_first = newest_first;
            q.scan_limit = 100;
            q.limit = 3;
            let (got, pages) = walk(&b, q).await;
            let mut want = ids(rare.iter().cloned());
            if newest_first {
                want.reverse();
            }
            assert_eq!(got, want);
            assert!(pages.iter().all(|p| p.scanned <= 100));
        }
    }

    /// A payload field (a string, a number) and a task id without a record are criteria of
    /// the scan; a task id whose record names its dead letter is answered from the record
    /// alone.
    #[tokio::test]
    async fn payload_fields_and_task_ids_select_their_dead_letters() {
        let redis = RedisServer::start().unwrap();
        let b = broker(&redis).await;
        let all = seed(&b, 300).await;
        let mut q = query(Filter::default(), 100);
        q.filter.payload = vec!["customer=c7".into()];
        let (got, _) = walk(&b, q.clone()).await;
        assert_eq!(got, ids(all.iter().filter(|s| s.customer == "c7").cloned()));
        q.filter.payload = vec!["n=42".into()];
        let (got, _) = walk(&b, q.clone()).await;
        assert_eq!(got, ids(all.iter().filter(|s| s.n == 42).cloned()));
        q.filter.payload = vec!["n=42.0".into()];
        let (got, _) = walk(&b, q.clone()).await;
        assert_eq!(
            got.len(),
            all.iter().filter(|s| s.n == 42).count(),
            "a number by its value"
        );
        // Alternatives: any criterion may hold, as in the commands' scan (Filter::matches).
        q.filter.payload = vec!["customer=c7".into(), "n=42".into()];
        let (got, _) = walk(&b, q.clone()).await;
        assert_eq!(
            got,
            ids(all
                .iter()
                .filter(|s| s.customer == "c7" || s.n == 42)
                .cloned())
        );
        q.filter.payload = vec!["nope=42".into()];
        assert!(walk(&b, q.clone()).await.0.is_empty());
        q.filter.payload = vec!["customer.id=c7".into()];
        assert!(
            walk(&b, q.clone()).await.0.is_empty(),
            "a string has no fields"
        );
        q.filter.payload = vec!["meta.customer=c7".into()];
        let (got, _) = walk(&b, q).await;
        assert_eq!(
            got,
            ids(all.iter().filter(|s| s.customer == "c7").cloned()),
            "a dotted path"
        );

        let mut q = query(Filter::default(), 100);
        q.task_id = Some("t-6".into());
        let (got, _) = walk(&b, q.clone()).await;
        let with_id: Vec<Seeded> = all.iter().filter(|s| s.task_id == "t-6").cloned().collect();
        assert!(with_id.len() > 10);
        assert_eq!(got, ids(with_id.iter().cloned()));
        // A record that names one of them: that one, read alone (1 entry), in every tenant
        // whose record names one.
        let named = with_id.iter().find(|s| s.id.tenant == "b").unwrap();
        b.task_record_set_raw(
            "b",
            "t-6",
            &[("state", "dead_lettered"), ("dlq", named.id.id.as_str())],
        )
        .await
        .unwrap();
        let page = list_page(&b, &q).await.unwrap();
        assert_eq!(
            page.entries
                .iter()
                .map(|e| e.id.to_string())
                .collect::<Vec<_>>(),
            vec![named.id.to_string()]
        );
        assert_eq!(page.scanned, 1);
        // The record's dead letter outside the time range: nothing, and no scan.
        q.filter.until_ms = Some(id_ms(&named.id.id) - 1);
        let page = list_page(&b, &q).await.unwrap();
        assert!(page.entries.is_empty() && page.scanned == 0);
        // A record that names none (done since): the scan again.
        b.task_record_set_raw("b", "t-6", &[("state", "done")])
            .await
            .unwrap();
        q.filter.until_ms = None;
        assert_eq!(walk(&b, q).await.0, ids(with_id.iter().cloned()));
    }

    /// `dlq stats` and `health` answer the same from the counts as from a scan (a time range
    /// covering everything takes the scan), and use the counts only once they are whole.
    #[tokio::test]
    async fn stats_and_health_answer_the_same_from_counts_as_from_a_scan() {
        let redis = RedisServer::start().unwrap();
        let b = broker(&redis).await;
        seed(&b, 200).await;
        let window = Duration::from_secs(3600);
        // Everything but the oldest entry's age, which grows between two reads, and the counts
        // by review state, which come from the counts alone (none while they are missing;
        // tests/dlq_lifecycle.rs checks them).
        let as_json = |s: &Stats| {
            let mut v = serde_json::to_value(s).unwrap();
            v["oldest_age_ms"] = serde_json::Value::Null;
            v["by_state"] = serde_json::Value::Null;
            v
        };
        // Written by hand, the dead letters have no counts yet: both answers scan.
        let before = stats(&b, &Filter::default(), 10, window).await.unwrap();
        for t in ["a", "b", "c"] {
            while b.dlq_counts_step(t, 50).await.unwrap() != crate::broker::CountsStep::Complete {}
        }
        assert!(b
            .dlq_counts_of(&["a".into(), "b".into(), "c".into()])
            .await
            .unwrap()
            .iter()
            .all(Option::is_some));
        assert_eq!(
            as_json(&stats(&b, &Filter::default(), 10, window).await.unwrap()),
            as_json(&before)
        );
        for filter in [
            Filter::default(),
            Filter {
                classes: vec!["context_overflow".into()],
                ..Filter::default()
            },
            Filter {
                tenants: vec!["b".into(), "c".into()],
                fingerprints: vec!["aa".into()],
                kinds: vec!["k".into()],
                ..Filter::default()
            },
            Filter {
                kinds: vec!["other".into()],
                ..Filter::default()
            },
        ] {
            let counted = stats(&b, &filter, 10, window).await.unwrap();
            let scanned = stats(
                &b,
                &Filter {
                    since_ms: Some(0),
                    ..filter.clone()
                },
                10,
                window,
            )
            .await
            .unwrap();
            assert_eq!(as_json(&counted), as_json(&scanned), "{filter:?}");
        }
        let h = health(&b, &[], window, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(h.tenants.len(), 3);
        assert_eq!(h.overall.dead_letters, before.total);
        assert_eq!(h.overall.dead_letters_by_class, before.by_class);
        for t in &h.tenants {
            assert_eq!(
                t.dead_letters_by_class.values().sum::<u64>(),
                before.by_tenant[&t.tenant]
            );
        }
    }
}
