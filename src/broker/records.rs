//! Task records (src/records.rs): reading one, a page of a tenant's index, where a task is when
//! it has no record (a raw XADD: bounded scans of the places a task can be), and the index
//! sweep (scripts/records_sweep.lua). The scripts that move tasks write the records.

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::error::is_code;
use super::reply::{self, array, hash, int_or_zero, text_or_empty};
use super::scripts::scripts;
use crate::error::Result;
use crate::records::{field, TaskRecord, TaskState};

/// Entries one XRANGE / ZRANGE page of a [`Broker::locate`] scan reads.
const LOCATE_PAGE: usize = 1_000;

/// A record as read, with how long it has left.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRead {
    /// The record.
    pub record: TaskRecord,
    /// Time left before it expires; `None` while it is kept (not finished, or dead-lettered).
    pub expires_in: Option<Duration>,
}

/// One task of a [`Broker::task_index_page`]: its index position and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedTask {
    /// The task id.
    pub task_id: String,
    /// Its index score: when its record was created (enqueued), ms.
    pub score: u64,
    /// Its record; `None` when it expired and the sweep has not removed its entry yet.
    pub record: Option<TaskRecord>,
}

/// One step of the index sweep ([`Broker::records_sweep`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStep {
    /// Whether this step ended a full pass over the index.
    pub pass_done: bool,
    /// Index entries looked at.
    pub looked: u64,
    /// Index entries removed: their record had expired.
    pub removed: u64,
    /// Dead-letter records given a retention: their dead letter was trimmed by the cap.
    pub retained: u64,
}

/// Where a scan found a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// In its lane as entry `entry`; `pending` when delivered to a member and not settled:
    /// (consumer, idle ms, deliveries).
    Lane {
        /// The lane entry id.
        entry: String,
        /// The PEL's view: consumer, idle ms, delivery count.
        pending: Option<(String, u64, u64)>,
    },
    /// In the retry schedule (`deferred`: held back by its tenant's breaker), due at `due_ms`.
    Scheduled {
        /// Held back by the breaker rather than failed.
        deferred: bool,
        /// Due time, ms.
        due_ms: u64,
        /// The attempt it will run as.
        attempt: Option<String>,
        /// The lane entry it was scheduled from.
        from_entry: Option<String>,
    },
    /// In the dead letters as `id`.
    DeadLetter {
        /// The dead-letter id.
        id: String,
        /// Its failure class.
        class: Option<String>,
    },
}

/// How much of one place a scan read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Searched {
    /// `lane`, `retry`, `deferred` or `dead_letters`.
    pub place: &'static str,
    /// Entries read.
    pub looked: u64,
    /// Entries there.
    pub total: u64,
}

/// What [`Broker::locate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Located {
    /// Every place the task was found (a task_id repeated by raw XADDs may be in several).
    pub places: Vec<Place>,
    /// How far each place was read.
    pub searched: Vec<Searched>,
}

/// What `task list` selects (every criterion must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only records in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this kind.
    pub kind: Option<String>,
    /// Only records created at or after this time, ms.
    pub since_ms: Option<u64>,
}

impl TaskFilter {
    fn matches(&self, r: &TaskRecord) -> bool {
        self.state.is_none_or(|s| r.state == Some(s))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| r.fields.get(field::KIND).map(String::as_str) == Some(k))
    }
}

/// Where a page of `task list` continues: after the task `task_id` whose record was created at
/// `score` (the index is read newest first, by creation). Written `<score>:<task_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCursor {
    /// The index score of the last task shown.
    pub score: u64,
    /// Its task id.
    pub task_id: String,
}

impl TaskCursor {
    /// Reads `<score>:<task_id>`.
    pub fn parse(text: &str) -> std::result::Result<TaskCursor, String> {
        let bad =
            || format!("'{text}' is not a task list cursor (<ms>:<task_id>, as a page prints it)");
        let (score, id) = text.split_once(':').ok_or_else(bad)?;
        let score = score.parse().map_err(|_| bad())?;
        crate::task::validate_task_id(id).map_err(|_| bad())?;
        Ok(TaskCursor {
            score,
            task_id: id.to_owned(),
        })
    }
}

impl std::fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.score, self.task_id)
    }
}

/// One page of [`Broker::task_list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    /// The tasks, newest first (by when the record was created: its enqueue).
    pub tasks: Vec<IndexedTask>,
    /// Where the next page starts; `None` when the index has no more.
    pub next: Option<TaskCursor>,
    /// Index entries read for this page.
    pub scanned: u64,
    /// Whether the page stopped at the scan bound before it was full (the filter matched
    /// few of the entries read): `next` continues the scan.
    pub scan_bound_hit: bool,
}

/// Whether an entry's fields carry `task_id`.
fn has_task_id(fields: &[(Vec<u8>, Vec<u8>)], task_id: &str) -> bool {
    fields
        .iter()
        .any(|(k, v)| k.as_slice() == b"task_id" && v.as_slice() == task_id.as_bytes())
}

/// The value of `name` in a flat `[k, v, k, v, …]` JSON array (a schedule member).
fn flat_get<'a>(flat: &'a [serde_json::Value], name: &str) -> Option<&'a str> {
    flat.chunks(2)
        .filter(|p| p.len() == 2 && p[0].as_str() == Some(name))
        .filter_map(|p| p[1].as_str())
        .next_back()
}

/// The `[member, score, …]` reply of a ZRANGE … WITHSCORES (RESP2 flat or RESP3 pairs).
fn scored(v: Value) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let items = array(v, "ZRANGE WITHSCORES", None)?;
    let score = |v: Value| text_or_empty(v).parse::<f64>().unwrap_or(0.0);
    if items.iter().all(|i| matches!(i, Value::Array(_))) {
        for i in items {
            let mut p = array(i, "ZRANGE pair", None)?.into_iter();
            let m = text_or_empty(p.next().unwrap_or(Value::Nil));
            let s = match p.next() {
                Some(Value::Double(d)) => d,
                Some(other) => score(other),
                None => 0.0,
            };
            out.push((m, s));
        }
        return Ok(out);
    }
    let mut it = items.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        let s = match s {
            Value::Double(d) => d,
            other => score(other),
        };
        out.push((text_or_empty(m), s));
    }
    Ok(out)
}

impl Broker {
    /// The record of `task_id` of `tenant` with its time left; `None` when there is none. As
    /// readers show it (scripts/task_read.lua): a record waiting on an entry that is pending in
    /// the group reads `running` on the member holding it, one whose entry left the lane
    /// without a record write reads `done` with the facts of its done log.
    pub(crate) async fn task_record(
        &self,
        tenant: &str,
        task_id: &str,
    ) -> Result<Option<RecordRead>> {
        Ok(self.read_records(tenant, &[task_id]).await?.pop().flatten())
    }

    /// task_read.lua for each of `task_ids` of `tenant`, in one pipelined round trip.
    async fn read_records(
        &self,
        tenant: &str,
        task_ids: &[&str],
    ) -> Result<Vec<Option<RecordRead>>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let lane = self.keys.lane(tenant);
        let done = self.keys.done_prefix(tenant);
        let mut pipe = redis::pipe();
        pipe.load_script(&scripts().task_read).ignore();
        for id in task_ids {
            let mut inv = scripts().task_read.key(self.keys.task(tenant, id));
            inv.key(&lane).key(&done).arg(self.group());
            pipe.invoke_script(&inv);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.con()).await?;
        if replies.len() != task_ids.len() {
            return Err(crate::error::Error::Protocol(format!(
                "task_read.lua answered {} times for {} tasks",
                replies.len(),
                task_ids.len()
            )));
        }
        replies
            .into_iter()
            .map(|v| {
                let mut p = array(v, "task_read.lua", Some(2))?.into_iter();
                let fields = p.next().unwrap_or(Value::Nil);
                let ttl = match p.next() {
                    Some(Value::Int(i)) => i,
                    _ => -2,
                };
                Ok(hash(fields).map(|f| RecordRead {
                    record: TaskRecord::from_fields(f),
                    expires_in: (ttl >= 0).then(|| Duration::from_millis(ttl as u64)),
                }))
            })
            .collect()
    }

    /// The records of `task_ids` of `tenant` in one round trip (`None` where there is none),
    /// as readers show them (see [`Broker::task_record`]).
    pub(crate) async fn task_records(
        &self,
        tenant: &str,
        task_ids: &[&str],
    ) -> Result<Vec<Option<TaskRecord>>> {
        Ok(self
            .read_records(tenant, task_ids)
            .await?
            .into_iter()
            .map(|r| r.map(|r| r.record))
            .collect())
    }

    /// Up to `count` entries of `tenant`'s record index, newest first (by when the record was created: its enqueue), with a score at
    /// most `max_score` and at least `min_score`, skipping the first `offset` of them; each with
    /// its record (one pipelined read).
    pub(crate) async fn task_index_page(
        &self,
        tenant: &str,
        max_score: u64,
        min_score: u64,
        offset: usize,
        count: usize,
    ) -> Result<Vec<IndexedTask>> {
        let v: Value = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.tasks(tenant))
            .arg(max_score)
            .arg(min_score)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(count)
            .query_async(&mut self.con())
            .await?;
        let page = scored(v)?;
        let ids: Vec<&str> = page.iter().map(|(m, _)| m.as_str()).collect();
        let records = self.task_records(tenant, &ids).await?;
        Ok(page
            .iter()
            .zip(records)
            .map(|((m, s), record)| IndexedTask {
                task_id: m.clone(),
                score: *s as u64,
                record,
            })
            .collect())
    }

    /// A page of `tenant`'s tasks by their records, newest first (by when the record was created: its enqueue), matching `filter`,
    /// after `cursor`: at most `limit` tasks, reading at most `scan_max` index entries (the
    /// index by ZREVRANGEBYSCORE, the records by pipelined task_read.lua). Index entries whose record
    /// expired (not swept yet) are skipped.
    pub(crate) async fn task_list(
        &self,
        tenant: &str,
        filter: &TaskFilter,
        cursor: Option<&TaskCursor>,
        limit: usize,
        scan_max: usize,
    ) -> Result<TaskPage> {
        let limit = limit.max(1);
        let page_size = limit.clamp(100, 1_000);
        let max = cursor.map(|c| c.score).unwrap_or(u64::MAX);
        let min = filter.since_ms.unwrap_or(0);
        let mut out = TaskPage::default();
        let mut offset = 0usize;
        loop {
            let page = self
                .task_index_page(tenant, max, min, offset, page_size)
                .await?;
            let n = page.len();
            offset += n;
            for t in page {
                // Entries of the cursor's score down to the cursor itself were on earlier
                // pages (equal scores come in reverse order of task_id).
                if cursor.is_some_and(|c| t.score == c.score && t.task_id >= c.task_id) {
                    continue;
                }
                out.scanned += 1;
                let here = TaskCursor {
                    score: t.score,
                    task_id: t.task_id.clone(),
                };
                if t.record.as_ref().is_some_and(|r| filter.matches(r)) {
                    out.tasks.push(t);
                    if out.tasks.len() >= limit {
                        out.next = Some(here);
                        return Ok(out);
                    }
                }
                if out.scanned as usize >= scan_max {
                    out.next = Some(here);
                    out.scan_bound_hit = true;
                    return Ok(out);
                }
            }
            if n < page_size {
                return Ok(out);
            }
        }
    }

    /// One bounded step of the sweep over `tenant`'s record index (scripts/records_sweep.lua):
    /// looks at about `batch` entries from the shared cursor, removes those whose record
    /// expired, and gives `retention` (or the first matching `kind_rules` glob's) to records of
    /// dead letters the cap trimmed. With a `pace`, a step of this tenant by any member within
    /// the pace of the last one does nothing (the fleet steps each tenant once per pace, not
    /// once per member); `Duration::ZERO` steps every time.
    pub(crate) async fn records_sweep(
        &self,
        tenant: &str,
        batch: usize,
        retention: Duration,
        kind_rules: &[(String, Duration)],
        pace: Duration,
    ) -> Result<SweepStep> {
        let mut inv = scripts().records_sweep.key(self.keys.tasks(tenant));
        inv.key(self.keys.task_prefix(tenant))
            .key(self.keys.dlq(tenant))
            .key(self.keys.tasks_sweep(tenant))
            .key(self.keys.lane(tenant))
            .key(self.keys.tasks_sweep_lane(tenant))
            .key(self.keys.tasks_sweep_pace(tenant))
            .arg(batch.max(1))
            .arg((retention.as_millis() as u64).max(1))
            .arg(pace.as_millis() as u64);
        for (glob, r) in kind_rules {
            inv.arg(glob).arg((r.as_millis() as u64).max(1));
        }
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let mut p = array(v, "records_sweep.lua", Some(4))?.into_iter();
        let mut next = || p.next().unwrap_or(Value::Nil);
        let cursor = text_or_empty(next());
        Ok(SweepStep {
            pass_done: cursor == "0",
            looked: int_or_zero(next()),
            removed: int_or_zero(next()),
            retained: int_or_zero(next()),
        })
    }

    /// Where task `task_id` of `tenant` is, by looking: its lane (and the PEL for each entry
    /// found), the retry schedule, the deferred set and the dead letters, each read up to
    /// `limit` entries (oldest first). For a task without a record (published by a raw XADD).
    pub(crate) async fn locate(
        &self,
        tenant: &str,
        task_id: &str,
        limit: usize,
    ) -> Result<Located> {
        let mut out = Located::default();
        // The lane, then the PEL of each entry found.
        let lane = self.keys.lane(tenant);
        let (looked, total, found) = self.scan_stream(&lane, task_id, limit).await?;
        out.searched.push(Searched {
            place: "lane",
            looked,
            total,
        });
        for e in found {
            let pending = self.pending_of(&lane, &e.id).await?;
            out.places.push(Place::Lane {
                entry: e.id,
                pending,
            });
        }
        // The schedules.
        for (place, key, deferred) in [
            ("retry", self.keys.retry(tenant), false),
            ("deferred", self.keys.deferred(tenant), true),
        ] {
            let total: u64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut self.con())
                .await?;
            let mut looked = 0u64;
            let mut start = 0usize;
            while start < limit {
                let stop = (start + LOCATE_PAGE).min(limit) - 1;
                let v: Value = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg(stop)
                    .arg("WITHSCORES")
                    .query_async(&mut self.con())
                    .await?;
                let page = scored(v)?;
                let n = page.len();
                looked += n as u64;
                for (member, due) in page {
                    let Ok(flat) = serde_json::from_str::<Vec<serde_json::Value>>(&member) else {
                        continue;
                    };
                    if flat_get(&flat, "task_id") == Some(task_id) {
                        out.places.push(Place::Scheduled {
                            deferred,
                            due_ms: due as u64,
                            attempt: flat_get(&flat, "attempt").map(str::to_owned),
                            from_entry: flat_get(&flat, "from_entry").map(str::to_owned),
                        });
                    }
                }
                if n < stop - start + 1 {
                    break;
                }
                start = stop + 1;
            }
            out.searched.push(Searched {
                place,
                looked,
                total,
            });
        }
        // The dead letters.
        let (looked, total, found) = self
            .scan_stream(&self.keys.dlq(tenant), task_id, limit)
            .await?;
        out.searched.push(Searched {
            place: "dead_letters",
            looked,
            total,
        });
        for e in found {
            let class = e.fields.as_ref().and_then(|f| {
                f.iter()
                    .find(|(k, _)| k.as_slice() == b"class")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            });
            out.places.push(Place::DeadLetter { id: e.id, class });
        }
        Ok(out)
    }

    /// Reads `key` (a stream) oldest first up to `limit` entries; returns how many were read,
    /// its length, and the entries whose `task_id` is `task_id`.
    async fn scan_stream(
        &self,
        key: &str,
        task_id: &str,
        limit: usize,
    ) -> Result<(u64, u64, Vec<reply::Entry>)> {
        let total: u64 = redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut self.con())
            .await?;
        let mut from = "-".to_owned();
        let mut looked = 0usize;
        let mut found = Vec::new();
        while looked < limit {
            let count = LOCATE_PAGE.min(limit - looked);
            let v: Value = redis::cmd("XRANGE")
                .arg(key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.con())
                .await?;
            let page = reply::entries(v)?;
            let n = page.len();
            looked += n;
            for e in page {
                from = format!("({}", e.id);
                if e.fields.as_deref().is_some_and(|f| has_task_id(f, task_id)) {
                    found.push(e);
                }
            }
            if n < count {
                break;
            }
        }
        Ok((looked as u64, total, found))
    }

    /// The PEL's view of lane entry `id`: (consumer, idle ms, deliveries), `None` when it is
    /// not pending (or the group does not exist yet).
    async fn pending_of(&self, lane: &str, id: &str) -> Result<Option<(String, u64, u64)>> {
        let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(lane)
            .arg(self.group())
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.con())
            .await;
        let v = match r {
            Ok(v) => v,
            Err(e) if is_code(&e, "NOGROUP") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(first) = array(v, "XPENDING", None)?.into_iter().next() else {
            return Ok(None);
        };
        let mut p = array(first, "XPENDING entry", Some(4))?.into_iter().skip(1);
        let mut next = || p.next().unwrap_or(Value::Nil);
        let consumer = text_or_empty(next());
        let idle = int_or_zero(next());
        let deliveries = int_or_zero(next());
        Ok(Some((consumer, idle, deliveries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_members_and_entries_are_read_by_task_id() {
        let flat: Vec<serde_json::Value> =
            serde_json::from_str(r#"["task_id","t-1","attempt","2","from_entry","5-0"]"#).unwrap();
        assert_eq!(flat_get(&flat, "task_id"), Some("t-1"));
        assert_eq!(flat_get(&flat, "attempt"), Some("2"));
        assert_eq!(flat_get(&flat, "nope"), None);
        let fields = vec![
            (b"kind".to_vec(), b"k".to_vec()),
            (b"task_id".to_vec(), b"t-1".to_vec()),
        ];
        assert!(has_task_id(&fields, "t-1"));
        assert!(!has_task_id(&fields, "t-2"));
        assert!(!has_task_id(&fields, "k"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = TaskCursor::parse("1700000000000:a:b/c").unwrap();
        assert_eq!(c.score, 1_700_000_000_000);
        assert_eq!(c.task_id, "a:b/c");
        assert_eq!(c.to_string(), "1700000000000:a:b/c");
        for bad in ["", "x:1", "12", "12:", "12:a b"] {
            assert!(TaskCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scored_replies_read_in_both_protocols() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"12".to_vec()),
            Value::BulkString(b"b".to_vec()),
            Value::BulkString(b"7".to_vec()),
        ]);
        assert_eq!(
            scored(resp2).unwrap(),
            vec![("a".to_owned(), 12.0), ("b".to_owned(), 7.0)]
        );
        let resp3 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::Double(3.0),
        ])]);
        assert_eq!(scored(resp3).unwrap(), vec![("a".to_owned(), 3.0)]);
        assert!(scored(Value::Nil).unwrap().is_empty());
    }

    /// The index pass goes by creation time and looks only at entries created longer ago than
    /// the shortest retention (younger records cannot have expired): a young entry whose record
    /// is gone stays until it is that old; old ones are removed page by page, ties at one score
    /// paged by the cursor's offset, kept entries counted past, and a pass ends at the cutoff.
    #[tokio::test]
    async fn the_sweep_looks_only_at_entries_old_enough_to_have_expired_in_creation_order() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let b = crate::broker::connect::test_broker(&redis.url(), "sw2", false).await;
        let mut c = b.con();
        let hour: u64 = 3_600_000;
        let now = crate::task::now_ms();
        let old = now - 2 * hour;
        // Seven entries created 2 h ago at one score (g-0…g-6), of which g-1, g-3, g-5 keep a
        // record; one 3 h ago without a record; two young ones without a record.
        let mut entries: Vec<(u64, String, bool)> = (0..7)
            .map(|i| (old, format!("g-{i}"), i % 2 == 1))
            .collect();
        entries.push((now - 3 * hour, "older".into(), false));
        entries.push((now, "young-0".into(), false));
        entries.push((now - 1_000, "young-1".into(), false));
        for (score, task, kept) in &entries {
            let _: () = redis::cmd("ZADD")
                .arg(b.keys.tasks("t"))
                .arg(*score)
                .arg(task)
                .query_async(&mut c)
                .await
                .unwrap();
            if *kept {
                let _: () = redis::cmd("HSET")
                    .arg(b.keys.task("t", task))
                    .arg("state")
                    .arg("done")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }
        let retention = Duration::from_millis(hour);
        let index = || {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(b.keys.tasks("t")).arg(0).arg(-1);
            cmd
        };
        // Pages of two: older, then g-0…g-6 two at a time (their score ties).
        let mut looked = 0;
        let mut removed = 0;
        let mut steps = 0;
        loop {
            let step = b
                .records_sweep("t", 2, retention, &[], Duration::ZERO)
                .await
                .unwrap();
            looked += step.looked;
            removed += step.removed;
            steps += 1;
            if step.pass_done {
                break;
            }
            assert!(steps < 20, "the pass ends");
        }
        assert_eq!((looked, removed), (8, 5), "the 8 old entries once each");
        let mut left: Vec<String> = index().query_async(&mut c).await.unwrap();
        left.sort();
        assert_eq!(left, ["g-1", "g-3", "g-5", "young-0", "young-1"]);
        let cursor: Option<String> = redis::cmd("GET")
            .arg(b.keys.tasks_sweep("t"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(cursor, None, "absent between passes");
        // The next pass looks at the three kept ones again and ends; the young stay.
        let step = b
            .records_sweep("t", 10, retention, &[], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((step.looked, step.removed, step.pass_done), (3, 0, true));
        // A shorter kind rule moves the cutoff: 500 ms makes young-1 (1 s old) old enough.
        let rules = vec![("x".to_owned(), Duration::from_millis(500))];
        let step = b
            .records_sweep("t", 10, retention, &rules, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((step.looked, step.removed), (4, 1));
        // A cursor left by the earlier sweep (a ZSCAN cursor) starts a pass from the oldest.
        let _: () = redis::cmd("SET")
            .arg(b.keys.tasks_sweep("t"))
            .arg("1234")
            .query_async(&mut c)
            .await
            .unwrap();
        let step = b
            .records_sweep("t", 10, retention, &[], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((step.looked, step.pass_done), (3, true));
    }

    /// With a pace, the fleet steps a tenant once per pace: a second member's step within it
    /// does nothing (its cursor unmoved), and after the pace the next step goes on.
    #[tokio::test]
    async fn the_sweeps_pace_is_fleet_wide() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let one = crate::broker::connect::test_broker(&redis.url(), "sw3", false).await;
        let two = crate::broker::connect::test_broker(&redis.url(), "sw3", false).await;
        let mut c = one.con();
        let old = crate::task::now_ms() - 3_600_000;
        for i in 0..5 {
            let _: () = redis::cmd("ZADD")
                .arg(one.keys.tasks("t"))
                .arg(old)
                .arg(format!("gone-{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let retention = Duration::from_secs(60);
        let pace = Duration::from_millis(300);
        let first = one
            .records_sweep("t", 2, retention, &[], pace)
            .await
            .unwrap();
        assert_eq!((first.looked, first.removed), (2, 2));
        let second = two
            .records_sweep("t", 2, retention, &[], pace)
            .await
            .unwrap();
        assert_eq!(
            (second.looked, second.removed, second.pass_done),
            (0, 0, false)
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let third = two
            .records_sweep("t", 2, retention, &[], pace)
            .await
            .unwrap();
        assert_eq!((third.looked, third.removed), (2, 2));
        // Without a pace every call steps.
        let fourth = one
            .records_sweep("t", 2, retention, &[], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            (fourth.looked, fourth.removed, fourth.pass_done),
            (1, 1, true)
        );
    }

    /// The sweep's lane look: the record of a task waiting in its lane for longer than half
    /// the retention, with less than half of it left, gets its retention plus an eighth again;
    /// a young entry's record, an old entry's record with plenty left and a record kept
    /// without expiry are left alone; the cursor goes back to the start once the pass ends.
    #[tokio::test]
    async fn the_sweep_keeps_the_records_of_tasks_waiting_long_in_their_lane() {
        let redis = crate::embedded::RedisServer::start().unwrap();
        let b = crate::broker::connect::test_broker(&redis.url(), "sw", false).await;
        let mut c = b.con();
        let hour: u64 = 3_600_000;
        let now = crate::task::now_ms();
        // Entries appended 3 h and 2 h ago (explicit ids), and one now.
        for (id, task) in [
            (format!("{}-0", now - 3 * hour), "old-short"),
            (format!("{}-0", now - 2 * hour), "old-plenty"),
            (format!("{}-1", now - 2 * hour), "old-kept"),
            ("*".to_owned(), "young"),
        ] {
            let _: String = redis::cmd("XADD")
                .arg(b.keys.lane("t"))
                .arg(&id)
                .arg("task_id")
                .arg(task)
                .arg("kind")
                .arg("k")
                .query_async(&mut c)
                .await
                .unwrap();
            let key = b.keys.task("t", task);
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg("queued")
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = redis::cmd("ZADD")
                .arg(b.keys.tasks("t"))
                .arg(now)
                .arg(task)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        // Retention 4 h: half is 2 h. Left: 30 min, 3 h, kept, 30 min.
        for (task, left) in [
            ("old-short", hour / 2),
            ("old-plenty", 3 * hour),
            ("young", hour / 2),
        ] {
            let _: () = redis::cmd("PEXPIRE")
                .arg(b.keys.task("t", task))
                .arg(left)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let ttl = |task: &str| {
            let mut cmd = redis::cmd("PTTL");
            cmd.arg(b.keys.task("t", task));
            cmd
        };
        // One entry per step: the cursor carries the pass over the old entries.
        let retention = Duration::from_millis(4 * hour);
        let mut retained = 0;
        for _ in 0..4 {
            retained += b
                .records_sweep("t", 1, retention, &[], Duration::ZERO)
                .await
                .unwrap()
                .retained;
        }
        assert_eq!(retained, 1);
        let extended: i64 = ttl("old-short").query_async(&mut c).await.unwrap();
        let full = (4 * hour + hour / 2) as i64;
        assert!(extended > full - 60_000 && extended <= full, "{extended}");
        let plenty: i64 = ttl("old-plenty").query_async(&mut c).await.unwrap();
        assert!(plenty <= (3 * hour) as i64, "{plenty}");
        let kept: i64 = ttl("old-kept").query_async(&mut c).await.unwrap();
        assert_eq!(kept, -1);
        let young: i64 = ttl("young").query_async(&mut c).await.unwrap();
        assert!(young <= (hour / 2) as i64, "{young}");
        // A kind rule with a shorter retention (2 h: half is 1 h) reaches the 2 h old ones,
        // and each record gets the retention of its own kind.
        let rules = vec![("k".to_owned(), Duration::from_millis(2 * hour))];
        let _: () = redis::cmd("PEXPIRE")
            .arg(b.keys.task("t", "old-plenty"))
            .arg(hour / 2)
            .query_async(&mut c)
            .await
            .unwrap();
        let step = b
            .records_sweep("t", 10, retention, &rules, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            step.retained, 1,
            "old-plenty only: old-short has 4.5 h left"
        );
        let plenty: i64 = ttl("old-plenty").query_async(&mut c).await.unwrap();
        let full = (2 * hour + hour / 4) as i64;
        assert!(plenty > full - 60_000 && plenty <= full, "{plenty}");
    }
}

/// A connection of its own for blocking reads of a tenant's events stream (`wait`): a
/// blocking read on the shared connection would hold every other command behind it.
pub struct EventsReader {
    conn: super::conn::Conn,
}

/// One entry of a tenant's events stream: a task finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishEvent {
    /// The stream entry id.
    pub id: String,
    /// The task that finished.
    pub task_id: String,
    /// The state it finished in (a wire name; see [`TaskState`]).
    pub state: String,
}

impl Broker {
    /// A reader of events streams with its own connection, for blocking reads of up to `block`.
    /// (On a cluster: a cluster connection of its own, so the blocking read of one tenant's
    /// events holds back nothing but itself.)
    pub(crate) async fn events_reader(&self, block: Duration) -> Result<EventsReader> {
        Ok(EventsReader {
            conn: self.dedicated(block).await?,
        })
    }

    /// Registers waiter `id` for `tenant` until `until_ms` (server clock): while a live waiter
    /// is registered, the scripts that finish tasks publish events. Drops registrations that
    /// expired before `now_ms`.
    pub(crate) async fn register_waiter(
        &self,
        tenant: &str,
        id: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<()> {
        let key = self.keys.waiters(tenant);
        let () = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(until_ms)
            .arg(id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({now_ms}"))
            .ignore()
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// Removes waiter `id` of `tenant`.
    pub(crate) async fn unregister_waiter(&self, tenant: &str, id: &str) -> Result<()> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.keys.waiters(tenant))
            .arg(id)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    /// The id of the last entry of `tenant`'s events stream (`0-0` when it is empty): what a
    /// wait reads after, taken *before* it reads the record so no finish falls between.
    pub(crate) async fn events_last_id(&self, tenant: &str) -> Result<String> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(self.keys.events(tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.con())
            .await?;
        Ok(reply::entries(v)?
            .into_iter()
            .next()
            .map(|e| e.id)
            .unwrap_or_else(|| "0-0".to_owned()))
    }
}

impl EventsReader {
    /// Up to 1000 finishes of `tenant`'s events stream (`key`) after entry `after`, waiting up
    /// to `block` for the first; empty when none came.
    pub(crate) async fn read(
        &mut self,
        key: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<FinishEvent>> {
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(after)
            .query_async(&mut self.conn)
            .await?;
        let mut out = Vec::new();
        for (_, entries) in reply::streams(v)? {
            for e in entries {
                let mut task_id = String::new();
                let mut state = String::new();
                for (k, val) in e.fields.unwrap_or_default() {
                    match k.as_slice() {
                        b"task" => task_id = String::from_utf8_lossy(&val).into_owned(),
                        b"state" => state = String::from_utf8_lossy(&val).into_owned(),
                        _ => {}
                    }
                }
                out.push(FinishEvent {
                    id: e.id,
                    task_id,
                    state,
                });
            }
        }
        Ok(out)
    }
}
