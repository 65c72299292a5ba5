//! Storm-proof logging, the pure part: which occurrences of a repeated log line are written and
//! what the summary of the others says.
//!
//! Occurrences are grouped by a key: the event and what it is about ([`Print`]: the failure's
//! fingerprint, or nothing for events without one). The first occurrence of a key opens a
//! window of `interval` and is written in full; the next ones inside the window are only
//! counted (with their tenants, bounded, and their first and last task id). When the window
//! ends — at the next occurrence after it, or when [`Limiter::due`] is asked — it closes with
//! one [`Summary`] if anything was counted, and the next occurrence is written in full again.
//! So a key writes at most two lines per interval, whatever the rate. At most `max_keys` keys
//! are tracked; occurrences of further keys are grouped under their event's
//! [`Print::Overflow`] key. Time is passed in (milliseconds of a monotonic clock): no sleeping
//! in tests. The wiring (which events, their log lines, the clock, the flush) is in
//! `events/storm.rs`.

use std::collections::HashMap;
use std::hash::Hash;

use crate::deadletter::Fingerprint;

/// Most tenants a summary names (the rest are marked as more).
pub const MAX_TENANTS: usize = 10;

/// What the occurrences of one event are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Print {
    /// A failure's fingerprint (the one its dead letter gets).
    Of(Fingerprint),
    /// Nothing: the event's occurrences are one group.
    Plain,
    /// Occurrences of keys beyond the limiter's cap.
    Overflow,
}

/// One occurrence of an event, as a summary remembers it.
#[derive(Debug, Clone, Copy)]
pub struct Occurrence<'a> {
    /// The tenant it is about (empty when none).
    pub tenant: &'a str,
    /// The task it is about, when one.
    pub task_id: Option<&'a str>,
    /// How many tasks or entries it stands for (1 for a line about one task).
    pub weight: u64,
}

/// The occurrences of one key that a window counted instead of writing.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<E> {
    /// The event.
    pub event: E,
    /// What its occurrences were grouped by.
    pub print: Print,
    /// Occurrences counted, not written.
    pub suppressed: u64,
    /// The sum of their weights.
    pub weight: u64,
    /// Their tenants, in the order first seen, at most [`MAX_TENANTS`].
    pub tenants: Vec<Box<str>>,
    /// Whether more tenants were seen than `tenants` names.
    pub more_tenants: bool,
    /// The task of the first occurrence counted, when it had one.
    pub first_task_id: Option<Box<str>>,
    /// The task of the last occurrence counted, when it had one.
    pub last_task_id: Option<Box<str>>,
    /// How long the window ran, ms.
    pub span_ms: u64,
}

/// The window of one key: when it opened and what it counted since.
#[derive(Debug)]
struct Window {
    started_ms: u64,
    suppressed: u64,
    weight: u64,
    tenants: Vec<Box<str>>,
    more_tenants: bool,
    first_task_id: Option<Box<str>>,
    /// Reused from one occurrence to the next, so counting allocates nothing once its
    /// capacity fits the task ids.
    last_task_id: String,
}

impl Window {
    fn open(now_ms: u64) -> Window {
        Window {
            started_ms: now_ms,
            suppressed: 0,
            weight: 0,
            tenants: Vec::new(),
            more_tenants: false,
            first_task_id: None,
            last_task_id: String::new(),
        }
    }

    /// Counts one occurrence.
    fn count(&mut self, o: &Occurrence<'_>) {
        self.suppressed += 1;
        self.weight += o.weight;
        if !o.tenant.is_empty() && !self.tenants.iter().any(|t| &**t == o.tenant) {
            if self.tenants.len() < MAX_TENANTS {
                self.tenants.push(o.tenant.into());
            } else {
                self.more_tenants = true;
            }
        }
        if let Some(id) = o.task_id {
            if self.first_task_id.is_none() {
                self.first_task_id = Some(id.into());
            }
            self.last_task_id.clear();
            self.last_task_id.push_str(id);
        }
    }

    /// The summary of what this window counted (`None` when it counted nothing), ended after
    /// `span_ms`; the window is left open at `reopen_ms` with nothing counted.
    fn close<E>(
        &mut self,
        event: E,
        print: Print,
        span_ms: u64,
        reopen_ms: u64,
    ) -> Option<Summary<E>> {
        let summary = (self.suppressed > 0).then(|| Summary {
            event,
            print,
            suppressed: self.suppressed,
            weight: self.weight,
            tenants: std::mem::take(&mut self.tenants),
            more_tenants: self.more_tenants,
            first_task_id: self.first_task_id.take(),
            last_task_id: (!self.last_task_id.is_empty())
                .then(|| self.last_task_id.as_str().into()),
            span_ms,
        });
        self.started_ms = reopen_ms;
        self.suppressed = 0;
        self.weight = 0;
        self.tenants.clear();
        self.more_tenants = false;
        self.first_task_id = None;
        self.last_task_id.clear();
        summary
    }
}

/// What [`Limiter::admit`] decided for one occurrence.
#[derive(Debug, PartialEq)]
pub struct Admitted<E> {
    /// Whether to write the occurrence's line (else it was counted).
    pub write: bool,
    /// The summary of the key's previous window, which this occurrence found ended: write it
    /// before the occurrence's line.
    pub closed: Option<Summary<E>>,
}

/// The windows of every key seen recently. Events are any small `Copy` key (an enum).
#[derive(Debug)]
pub struct Limiter<E> {
    /// Window length, ms; 0 writes every occurrence.
    interval_ms: u64,
    /// Most keys tracked in `windows`.
    max_keys: usize,
    windows: HashMap<(E, Print), Window>,
    /// One window per event for the occurrences of keys beyond the cap.
    overflow: HashMap<E, Window>,
}

impl<E: Copy + Eq + Hash> Limiter<E> {
    /// A limiter with windows of `interval_ms` (0: off) tracking at most `max_keys` keys.
    pub fn new(interval_ms: u64, max_keys: usize) -> Limiter<E> {
        Limiter {
            interval_ms,
            max_keys,
            windows: HashMap::new(),
            overflow: HashMap::new(),
        }
    }

    /// Changes the window length; windows already open keep counting and end by the new one.
    pub fn set_interval(&mut self, interval_ms: u64) {
        self.interval_ms = interval_ms;
    }

    /// Decides whether occurrence `o` of `event`, grouped by `print`, is written at `now_ms`.
    pub fn admit(
        &mut self,
        event: E,
        print: Print,
        o: &Occurrence<'_>,
        now_ms: u64,
    ) -> Admitted<E> {
        let interval = self.interval_ms;
        if interval == 0 {
            return Admitted {
                write: true,
                closed: None,
            };
        }
        let full = self.windows.len() >= self.max_keys;
        let (window, print) = match self.windows.get_mut(&(event, print)) {
            Some(w) => (w, print),
            None if !full => {
                self.windows.insert((event, print), Window::open(now_ms));
                return Admitted {
                    write: true,
                    closed: None,
                };
            }
            None => match self.overflow.get_mut(&event) {
                Some(w) => (w, Print::Overflow),
                None => {
                    self.overflow.insert(event, Window::open(now_ms));
                    return Admitted {
                        write: true,
                        closed: None,
                    };
                }
            },
        };
        if now_ms >= window.started_ms.saturating_add(interval) {
            return Admitted {
                write: true,
                closed: window.close(event, print, interval, now_ms),
            };
        }
        window.count(o);
        Admitted {
            write: false,
            closed: None,
        }
    }

    /// Ends every window whose interval is over at `now_ms`: returns their summaries (those
    /// that counted something), oldest window first, and forgets their keys.
    pub fn due(&mut self, now_ms: u64) -> Vec<Summary<E>> {
        let interval = self.interval_ms;
        self.end_windows(now_ms, |w| now_ms >= w.started_ms.saturating_add(interval))
    }

    /// Ends every window (at shutdown): their summaries, oldest window first.
    pub fn drain(&mut self, now_ms: u64) -> Vec<Summary<E>> {
        self.end_windows(now_ms, |_| true)
    }

    /// When the earliest open window ends, ms (`None` when none is open or the limiter is
    /// off).
    pub fn next_due_ms(&self) -> Option<u64> {
        if self.interval_ms == 0 {
            return None;
        }
        self.windows
            .values()
            .chain(self.overflow.values())
            .map(|w| w.started_ms.saturating_add(self.interval_ms))
            .min()
    }

    /// How many windows are open (overflow windows included).
    #[cfg(test)]
    pub fn open_windows(&self) -> usize {
        self.windows.len() + self.overflow.len()
    }

    fn end_windows(&mut self, now_ms: u64, ended: impl Fn(&Window) -> bool) -> Vec<Summary<E>> {
        let interval = self.interval_ms;
        let mut out: Vec<(u64, Summary<E>)> = Vec::new();
        let mut end = |event: E, print: Print, w: &mut Window| {
            if !ended(w) {
                return true;
            }
            let started = w.started_ms;
            let span = now_ms.saturating_sub(started).min(interval);
            if let Some(s) = w.close(event, print, span, now_ms) {
                out.push((started, s));
            }
            false
        };
        self.windows
            .retain(|(event, print), w| end(*event, *print, w));
        self.overflow
            .retain(|event, w| end(*event, Print::Overflow, w));
        out.sort_by_key(|(started, _)| *started);
        out.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FailureClass;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Ev {
        Failed,
        Retried,
    }

    fn print(error: &str) -> Print {
        Print::Of(Fingerprint::of_error("k", FailureClass::RateLimited, error))
    }

    fn task<'a>(tenant: &'a str, id: &'a str) -> Occurrence<'a> {
        Occurrence {
            tenant,
            task_id: Some(id),
            weight: 1,
        }
    }

    /// Sends `n` occurrences at `now`, tenant `t<i % tenants>` and task `id-<from + i>`;
    /// returns how many were to be written and the summaries they closed.
    fn storm(
        l: &mut Limiter<Ev>,
        ev: Ev,
        p: Print,
        (from, n): (usize, usize),
        tenants: usize,
        now: u64,
    ) -> (usize, Vec<Summary<Ev>>) {
        let (mut written, mut closed) = (0, Vec::new());
        for i in from..from + n {
            let (tenant, id) = (format!("t{}", i % tenants), format!("id-{i}"));
            let a = l.admit(ev, p, &task(&tenant, &id), now);
            written += a.write as usize;
            closed.extend(a.closed);
        }
        (written, closed)
    }

    #[test]
    fn the_first_occurrence_is_written_and_the_rest_counted_into_one_summary() {
        let mut l = Limiter::new(10_000, 1_000);
        let p = print("model 'a' answered 429 after 200 ms");
        let (written, closed) = storm(&mut l, Ev::Failed, p, (0, 1_000), 3, 5);
        assert_eq!((written, closed.len()), (1, 0));
        // Same cause, other numbers and quoted values: the same key.
        let same = print("model 'b' answered 429 after 17 ms");
        assert_eq!(same, p);
        assert!(!l.admit(Ev::Failed, same, &task("t9", "last"), 9_999).write);
        assert!(l.due(10_004).is_empty(), "the window ends at 10,005");
        let summaries = l.due(10_005);
        assert_eq!(
            summaries,
            vec![Summary {
                event: Ev::Failed,
                print: p,
                suppressed: 1_000,
                weight: 1_000,
                tenants: ["t1", "t2", "t0", "t9"].map(Box::from).to_vec(),
                more_tenants: false,
                first_task_id: Some("id-1".into()),
                last_task_id: Some("last".into()),
                span_ms: 10_000,
            }]
        );
        assert_eq!((l.open_windows(), l.next_due_ms()), (0, None));
        // A new window: the next occurrence is written in full again.
        assert!(l.admit(Ev::Failed, p, &task("t0", "again"), 10_006).write);
    }

    #[test]
    fn keys_are_the_event_and_the_fingerprint() {
        let mut l = Limiter::new(1_000, 1_000);
        let (a, b) = (print("timeout after 30 s"), print("connection refused"));
        for (ev, p) in [
            (Ev::Failed, a),
            (Ev::Failed, b),
            (Ev::Retried, a),
            (Ev::Retried, Print::Plain),
        ] {
            assert_eq!(storm(&mut l, ev, p, (0, 10), 1, 0).0, 1, "{ev:?} {p:?}");
        }
        let summaries = l.due(1_000);
        assert_eq!(summaries.len(), 4);
        assert!(summaries.iter().all(|s| s.suppressed == 9));
    }

    /// An occurrence after its window ended closes it: the summary comes back to be written
    /// before the occurrence, which opens the next window.
    #[test]
    fn an_occurrence_after_the_interval_closes_the_window_and_is_written() {
        let mut l = Limiter::new(100, 1_000);
        let p = Print::Plain;
        let mut total_written = 0;
        let mut counted = 0;
        // 10 windows of 50 occurrences each, one every 2 ms: 500 occurrences over 1 s.
        for i in 0..500u64 {
            let id = format!("id-{i}");
            let a = l.admit(Ev::Failed, p, &task("acme", &id), i * 2);
            total_written += a.write as u64;
            if let Some(s) = a.closed {
                assert!(a.write);
                assert_eq!(s.span_ms, 100);
                assert_eq!(s.suppressed, 49, "{s:?}");
                let first = i - 49;
                assert_eq!(
                    s.first_task_id.as_deref(),
                    Some(format!("id-{first}").as_str())
                );
                assert_eq!(
                    s.last_task_id.as_deref(),
                    Some(format!("id-{}", i - 1).as_str())
                );
                counted += s.suppressed;
            }
        }
        counted += l.drain(1_000).iter().map(|s| s.suppressed).sum::<u64>();
        assert_eq!(total_written, 10);
        assert_eq!(
            total_written + counted,
            500,
            "every occurrence written or counted"
        );
    }

    #[test]
    fn tenants_are_bounded_and_batches_carry_their_weight() {
        let mut l = Limiter::new(1_000, 1_000);
        fn batch(tenant: &str) -> Occurrence<'_> {
            Occurrence {
                tenant,
                task_id: None,
                weight: 25,
            }
        }
        assert!(l.admit(Ev::Retried, Print::Plain, &batch("first"), 0).write);
        for i in 0..40 {
            let tenant = format!("tenant-{}", i % 20);
            assert!(!l.admit(Ev::Retried, Print::Plain, &batch(&tenant), 1).write);
        }
        let s = l.drain(400).pop().unwrap();
        assert_eq!((s.suppressed, s.weight), (40, 1_000));
        assert_eq!(s.tenants.len(), MAX_TENANTS);
        assert_eq!(&*s.tenants[0], "tenant-0");
        assert!(s.more_tenants);
        assert_eq!((s.first_task_id, s.last_task_id), (None, None));
        assert_eq!(s.span_ms, 400, "drained before the interval ended");
    }

    /// Beyond the cap, new keys share one overflow window per event; memory stays bounded.
    #[test]
    fn keys_beyond_the_cap_are_counted_under_the_overflow_key() {
        let mut l = Limiter::new(1_000, 3);
        for i in 0..3 {
            assert!(
                l.admit(
                    Ev::Failed,
                    print(&format!("cause {}", "x".repeat(i + 1))),
                    &task("a", "1"),
                    0
                )
                .write
            );
        }
        let mut written = 0;
        for i in 0..100 {
            let p = print(&format!("other cause {}", "y".repeat(i + 1)));
            written += l.admit(Ev::Failed, p, &task("a", &i.to_string()), 1).write as usize;
        }
        assert_eq!(written, 1, "the overflow window's first occurrence only");
        assert!(
            l.admit(Ev::Retried, print("z"), &task("a", "r"), 1).write,
            "its own overflow window"
        );
        assert_eq!(l.open_windows(), 5);
        let overflow: Vec<_> = l
            .drain(2)
            .into_iter()
            .filter(|s| s.print == Print::Overflow)
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].suppressed, 99);
        assert_eq!(overflow[0].last_task_id.as_deref(), Some("99"));
        assert_eq!(l.open_windows(), 0);
    }

    #[test]
    fn interval_zero_writes_everything_and_tracks_nothing() {
        let mut l = Limiter::new(0, 1_000);
        let (written, closed) = storm(&mut l, Ev::Failed, Print::Plain, (0, 500), 2, 7);
        assert_eq!((written, closed.len()), (500, 0));
        assert_eq!((l.open_windows(), l.next_due_ms()), (0, None));
        assert!(l.drain(8).is_empty());
        // Turned on later: windows from then.
        l.set_interval(50);
        assert_eq!(storm(&mut l, Ev::Failed, Print::Plain, (0, 10), 1, 8).0, 1);
        assert_eq!(l.next_due_ms(), Some(58));
    }

    /// Windows end one by one, each at its own start + interval; `next_due_ms` says when the
    /// next one ends.
    #[test]
    fn windows_end_at_their_own_time() {
        let mut l = Limiter::new(100, 1_000);
        storm(&mut l, Ev::Failed, print("a"), (0, 3), 1, 0);
        storm(&mut l, Ev::Failed, print("b"), (0, 2), 1, 40);
        storm(&mut l, Ev::Failed, print("c"), (0, 1), 1, 60);
        assert_eq!(l.next_due_ms(), Some(100));
        let first = l.due(100);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].print, first[0].suppressed), (print("a"), 2));
        assert_eq!(l.next_due_ms(), Some(140));
        let rest = l.due(1_000);
        // "c" counted nothing: its window ends without a summary.
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].print, rest[0].suppressed), (print("b"), 1));
        assert_eq!(l.open_windows(), 0);
    }
}
