"""The fleet member's side of a task, done from the tests.

The SDK tests run no fleet member. These functions do what a member does to a task the SDK
enqueued (its lane entry carries ``recorded``: its record was written with it), with the
fleet's own record writer, ``src/broker/scripts/lib/record.lua`` read from the repository:

- :func:`start`: the member's lane reader delivers the entry (``XREADGROUP``) and the start
  claims it (``XCLAIM … RETRYCOUNT 2 JUSTID``), **without any record write** — the record keeps
  saying ``queued``; readers show the task running from the PEL (lib/record.lua, Running).
- :func:`done`: fast_ack.lua: ``XACK`` + ``XDEL``; an entry enqueue.lua appended whose
  record's expiry (the entry's ``recorded`` field) still covers the retention goes to the done
  log (the record untouched: readers take the done from the log, task_read.lua), any other gets
  its done record written (``rec_done``: state done, member, started, ended, output; expiry);
  the finish event either way.
- :func:`retry`: retry.lua then promote.lua: the failed run goes into the record's history
  (``rec_end`` with the member that ran it), and the next attempt is a new lane entry with its
  record ``queued`` again (``rec_write``).
- :func:`dead_letter`: dead_letter.lua: ``XACK`` + ``XDEL``, ``rec_end`` (the run that failed,
  when a member ran it), kept while dead, the finish event.
- :func:`take_over`: begin.lua: another member claims an entry whose member died and starts
  it (``rec_start`` with ``died``: the run the record never knew of goes into its history as a
  dead run, member and start unknown).

As the real scripts, a finish writes its events entry only while the tenant's waiters ZSET
(``{prefix}:{<tenant>}:waiters``) holds a live registration (score >= the server's now). The
Rust end-to-end test (tests/e2e_wait.rs) covers the real member.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

#: The repository root (sdk/python/tests -> the root).
ROOT = Path(__file__).resolve().parents[3]
#: The fleet's record writer.
RECORD_LUA = (ROOT / "src/broker/scripts/lib/record.lua").read_text(encoding="utf-8")
#: The fleet's default consumer group.
GROUP = "redrive"

# A member passes when the run started (server clock, ms); these helpers take how long ago.
_STARTED_AGO = """
local function started_ago(ago)
  if ago == nil or ago == '' then
    return ''
  end
  return string.format('%d', rec_now() - tonumber(ago))
end
"""

# fast_ack.lua for one entry. KEYS: the lane, the record prefix, the index, the events stream.
# ARGV: group, member, entry, task_id, retention ms, output flag ('' none, '0' whole, '1' cut),
# output, how long ago the run started (ms). As fast_ack.lua: an entry appended by enqueue.lua
# whose record's expiry (its `recorded` field) still covers the retention goes to the done log
# (one XADD to '<prefix>:{t}:done:<second of the entry id>': _m member, _e ended, then the
# entry id -> started and '<entry id>o' or 't' -> output), the record untouched; any other is
# written by rec_done (blind when appended with its record). Returns {acked, published, logged}.
_DONE = (
    RECORD_LUA
    + _STARTED_AGO
    + """
local R = rec_ctx(KEYS[2], KEYS[3], KEYS[4])
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local mark = '0'
if #e > 0 then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'recorded' then
      mark = f[i + 1]
    end
  end
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local logged = 0
if acked > 0 then
  local now = rec_now()
  local till, ttl = tonumber(mark) or 0, tonumber(ARGV[5]) or 0
  if ARGV[4] ~= '' and till > 1 and ttl > 0 and till >= now + ttl then
    local ms = string.sub(ARGV[3], 1, (string.find(ARGV[3], '-', 1, true) or (#ARGV[3] + 1)) - 1)
    local key = rec_log_key(R, #ms > 5 and string.sub(ms, 1, #ms - 5) or '0')
    local a = {'XADD', key, '*', '_m', ARGV[2], '_e', rec_ts(now), ARGV[3],
      rec_started_at(started_ago(ARGV[8]), now)}
    if ARGV[6] == '1' then
      a[#a + 1] = ARGV[3] .. 't'
      a[#a + 1] = ARGV[7]
    elseif ARGV[6] ~= '' then
      a[#a + 1] = ARGV[3] .. 'o'
      a[#a + 1] = ARGV[7]
    end
    redis.call(unpack(a))
    if redis.call('PTTL', key) < tonumber(mark) - now then
      redis.call('PEXPIREAT', key, mark)
    end
    rec_event(R, ARGV[4], 'done', ARGV[3])
    logged = 1
  else
    rec_done(R, now, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[2],
      started_ago(ARGV[8]), mark ~= '0' and mark ~= '')
  end
end
return {acked, R.listened and 1 or 0, logged}
"""
)

# retry.lua + promote.lua for one entry. KEYS: the lane, the record prefix, the index.
# ARGV: group, member, entry, task_id, class, error, next attempt, how long ago the run started
# (ms), then field, value, … of the next attempt's lane entry. Returns {acked, new entry id}.
_RETRY = (
    RECORD_LUA
    + _STARTED_AGO
    + """
local R = rec_ctx(KEYS[2], KEYS[3], nil)
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if acked == 0 then
  return {0, ''}
end
redis.call('XDEL', KEYS[1], ARGV[3])
local now = rec_now()
rec_end(R, ARGV[4], now, 'retry_scheduled', ARGV[5], {
  'class', ARGV[5], 'error', rec_error(ARGV[6]), 'attempt', ARGV[7],
  'due', string.format('%d', now),
}, ARGV[2], started_ago(ARGV[8]))
local fields = {}
for i = 9, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
fields[#fields + 1] = 'recorded'
fields[#fields + 1] = '1'
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
rec_write(R, ARGV[4], now, 'queued', {'entry', id, 'enq', string.format('%d', now),
  'attempt', ARGV[7]})
return {1, id}
"""
)

# dead_letter.lua for one entry. KEYS: the lane, the record prefix, the index, the events
# stream. ARGV: group, entry, task_id, state, class, error, dead-letter id, the member that ran
# the failed run ('' for none), how long ago it started (ms). Returns whether it published.
_DEAD = (
    RECORD_LUA
    + _STARTED_AGO
    + """
local R = rec_ctx(KEYS[2], KEYS[3], KEYS[4])
if ARGV[2] ~= '' then
  redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
rec_end(R, ARGV[3], rec_now(), ARGV[4], ARGV[5],
  {'class', ARGV[5], 'error', rec_error(ARGV[6]), 'dlq', ARGV[7]}, ARGV[8], started_ago(ARGV[9]))
rec_expire(R, ARGV[3], 0)
rec_event(R, ARGV[3], ARGV[4], ARGV[7])
return R.listened and 1 or 0
"""
)


# begin.lua's record part. KEYS: the record prefix, the index. ARGV: task_id, entry, attempt,
# member, kind. Returns the previous state.
_TAKE_OVER = (
    RECORD_LUA
    + """
local R = rec_ctx(KEYS[1], KEYS[2], nil)
return rec_start(R, ARGV[1], rec_now(), ARGV[2], ARGV[3], ARGV[4], ARGV[5], true, '')
"""
)


def lane(prefix: str, tenant: str) -> str:
    """The tenant's lane."""
    return f"{prefix}:{{{tenant}}}:lane"


def waiters(prefix: str, tenant: str) -> str:
    """The tenant's waiters ZSET."""
    return f"{prefix}:{{{tenant}}}:waiters"


def _record_keys(prefix: str, tenant: str) -> list[str]:
    return [
        f"{prefix}:{{{tenant}}}:task:",
        f"{prefix}:{{{tenant}}}:tasks",
        f"{prefix}:{{{tenant}}}:events",
    ]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def done_log(r: redis.Redis, prefix: str, tenant: str, entry: str) -> str:
    """The done log the done of lane entry ``entry`` goes to (lib/record.lua ``rec_log_key``):
    ``{prefix}:{<tenant>}:done:`` + the entry id's ms without its last 5 digits (its 100-s
    window; ``0`` for fewer than six)."""
    ms = entry.split("-", maxsplit=1)[0]
    return f"{prefix}:{{{tenant}}}:done:{ms[:-5] if len(ms) > 5 else '0'}"


def record_entry(r: redis.Redis, prefix: str, tenant: str, task_id: str) -> str:
    """The entry the task's record names."""
    entry: Any = r.hget(f"{prefix}:{{{tenant}}}:task:{task_id}", "entry")
    assert entry, f"the record of {task_id} names no entry"
    return _text(entry)


def pending_on(
    r: redis.Redis, prefix: str, tenant: str, entry: str, group: str = GROUP
) -> str | None:
    """The consumer the entry is pending for, or ``None``."""
    try:
        rows: Any = r.xpending_range(lane(prefix, tenant), group, entry, entry, 1)
    except redis.ResponseError as e:
        if str(e).startswith("NOGROUP"):
            return None
        raise
    return _text(rows[0]["consumer"]) if rows else None


def start(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    entry: str,
    *,
    member: str = "m-1",
    group: str = GROUP,
) -> None:
    """``member`` starts the lane entry ``entry`` as a member starts an entry appended with its
    record: its reader delivers it (``XREADGROUP … >``; entries before it that nobody read yet
    are delivered along the way, as in a member's read batch, and stay pending), then the
    start claims it (``XCLAIM <lane> <group> <member> 0 <entry> RETRYCOUNT 2 JUSTID``). Nothing
    is written to the record. An entry pending already (at any consumer) is only claimed."""
    key = lane(prefix, tenant)
    try:
        r.xgroup_create(key, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if not str(e).startswith("BUSYGROUP"):
            raise
    if pending_on(r, prefix, tenant, entry, group) is None:
        while True:
            got: Any = r.xreadgroup(group, member, {key: ">"}, count=1)
            read = [_text(i) for _, entries in (got or []) for i, _ in entries]
            assert read, f"entry {entry} was not delivered: it is not in the lane, unread"
            if read[0] == entry:
                break
    claimed: Any = r.xclaim(key, group, member, 0, [entry], retrycount=2, justid=True)
    assert [_text(c) for c in claimed] == [entry], claimed


def done(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    output: str | None,
    *,
    entry: str | None = None,
    member: str = "m-1",
    ago_ms: int = 40,
    retention_ms: int = 86_400_000,
    truncated: bool = False,
    group: str = GROUP,
) -> bool:
    """fast_ack.lua: ``member`` finished the task's entry (the record's, unless given) with
    ``output`` (JSON text; ``None``: none kept); started first (:func:`start`) when it is not
    pending yet. ``XACK`` + ``XDEL``, then the done log entry when the record's expiry set at
    enqueue covers ``retention_ms`` from now (the SDK's default retention does), else the done
    record (blind for an entry appended with its record: no read) and its expiry after
    ``retention_ms``; while someone waits, the finish event. ``truncated``: the output was cut
    to the fleet's bound (flag '1'). Returns whether it wrote that event."""
    if entry is None:
        entry = record_entry(r, prefix, tenant, task_id)
    if pending_on(r, prefix, tenant, entry, group) is None:
        start(r, prefix, tenant, entry, member=member, group=group)
    got: Any = r.eval(
        _DONE,
        4,
        lane(prefix, tenant),
        *_record_keys(prefix, tenant),
        group,
        member,
        entry,
        task_id,
        str(retention_ms),
        "" if output is None else ("1" if truncated else "0"),
        "" if output is None else output,
        str(ago_ms),
    )
    assert int(got[0]) == 1, f"entry {entry} was not pending"
    return bool(int(got[1]) == 1)


def retry(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    entry: str,
    *,
    cls: str,
    error: str = "",
    member: str = "m-1",
    attempt: int = 2,
    ago_ms: int = 40,
    kind: str = "k",
    group: str = GROUP,
) -> str:
    """retry.lua then promote.lua: ``member``, which started ``entry``, failed it with ``cls``
    (the run goes into the record's history); the retry is due at once and promoted: a new lane
    entry (attempt ``attempt``, ``recorded``) with the record ``queued`` on it. Returns the new
    entry id."""
    got: Any = r.eval(
        _RETRY,
        3,
        lane(prefix, tenant),
        *_record_keys(prefix, tenant)[:2],
        group,
        member,
        entry,
        task_id,
        cls,
        error,
        str(attempt),
        str(ago_ms),
        *("task_id", task_id, "tenant", tenant, "kind", kind, "payload", "null"),
        *("attempt", str(attempt)),
    )
    assert int(got[0]) == 1, f"entry {entry} was not pending"
    return _text(got[1])


def dead_letter(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    *,
    cls: str,
    error: str,
    dlq: str,
    group: str = GROUP,
) -> bool:
    """dead_letter.lua: the task's entry (the record's) leaves the lane as dead letter ``dlq``
    with ``cls``/``error`` (state ``expired`` when ``cls`` is, else ``dead_lettered``; kept
    while dead). When the entry was pending, the member holding it ran the run that failed (in
    the history); otherwise no run ends here (a decision about an entry nobody started).
    Returns whether it wrote the finish event."""
    entry: Any = r.hget(f"{prefix}:{{{tenant}}}:task:{task_id}", "entry")
    entry = "" if entry is None else _text(entry)
    ran = (pending_on(r, prefix, tenant, entry, group) if entry else None) or ""
    wrote: Any = r.eval(
        _DEAD,
        4,
        lane(prefix, tenant),
        *_record_keys(prefix, tenant),
        group,
        entry,
        task_id,
        "expired" if cls == "expired" else "dead_lettered",
        cls,
        error,
        dlq,
        ran,
        "40" if ran else "",
    )
    return bool(wrote == 1)


def take_over(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    entry: str,
    *,
    member: str,
    attempt: int = 1,
    kind: str = "k",
    group: str = GROUP,
) -> Any:
    """begin.lua: ``member`` takes over ``entry``, started by a member that died (``XCLAIM``),
    and starts it: ``rec_start`` with ``died``, so the earlier run — which the record never
    knew of: it says queued on this very entry — goes into the history as a dead run (member,
    start and outcome ``''``), and the record says ``running`` on ``member``. Returns the
    previous state."""
    claimed: Any = r.xclaim(lane(prefix, tenant), group, member, 0, [entry], justid=True)
    assert [_text(c) for c in claimed] == [entry], claimed
    return r.eval(
        _TAKE_OVER,
        2,
        *_record_keys(prefix, tenant)[:2],
        task_id,
        entry,
        str(attempt),
        member,
        kind,
    )
