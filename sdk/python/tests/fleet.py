"""The fleet member's side of a task's record, written from the tests.

The SDK tests run no fleet member. These functions stand for the member's scripts (start.lua,
ack.lua, dead_letter.lua) as the record contract says they write: they run the fleet's own
record writer, ``src/broker/scripts/lib/record.lua`` read from the repository, with the same
calls (``rec_start``; ``rec_end`` + ``rec_expire`` + ``rec_event`` for a finish). As the real
scripts, a finish writes its events entry only while the tenant's waiters ZSET
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

_START = (
    RECORD_LUA
    + """
local R = rec_ctx(KEYS[1], KEYS[2], KEYS[3])
return rec_start(R, ARGV[1], rec_now(), ARGV[2], ARGV[3], ARGV[4], ARGV[5], true)
"""
)

# KEYS: the record prefix, the index, the events stream, the waiters.
# ARGV: task_id, state, outcome, entry, retention ms, then field, value, … of the finish.
# Returns whether it wrote the events entry (only while someone waits).
_FINISH = (
    RECORD_LUA
    + """
local R = rec_ctx(KEYS[1], KEYS[2], KEYS[3])
local now = rec_now()
local pairs = {}
for i = 6, #ARGV do
  pairs[#pairs + 1] = ARGV[i]
end
rec_end(R, ARGV[1], now, ARGV[2], ARGV[3], pairs)
rec_expire(R, ARGV[1], ARGV[5])
if #redis.call('ZRANGEBYSCORE', KEYS[4], now, '+inf', 'LIMIT', 0, 1) == 0 then
  return 0
end
rec_event(R, ARGV[1], ARGV[2], ARGV[4])
return 1
"""
)


def _keys(prefix: str, tenant: str) -> list[str]:
    return [
        f"{prefix}:{{{tenant}}}:task:",
        f"{prefix}:{{{tenant}}}:tasks",
        f"{prefix}:{{{tenant}}}:events",
    ]


def start(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    *,
    entry: str = "1-1",
    attempt: int = 1,
    member: str = "m-1",
    kind: str = "k",
) -> Any:
    """A member starts an attempt (start.lua's ``rec_start``); returns the previous state."""
    return r.eval(_START, 3, *_keys(prefix, tenant), task_id, entry, str(attempt), member, kind)


def waiters(prefix: str, tenant: str) -> str:
    """The tenant's waiters ZSET."""
    return f"{prefix}:{{{tenant}}}:waiters"


def finish(
    r: redis.Redis,
    prefix: str,
    tenant: str,
    task_id: str,
    state: str,
    *,
    outcome: str = "ok",
    entry: str = "1-1",
    retention_ms: int = 86_400_000,
    fields: dict[str, str] | None = None,
) -> bool:
    """A task finishes as ``state`` (``done``: ack.lua; ``dead_lettered``/``expired``:
    dead_letter.lua, kept while dead, ``retention_ms`` 0): the record's end, its expiry and,
    while someone waits, one entry (task, state, entry) in the tenant's events stream.
    Returns whether it wrote that entry."""
    flat = [x for pair in (fields or {}).items() for x in pair]
    wrote: Any = r.eval(
        _FINISH,
        4,
        *_keys(prefix, tenant),
        waiters(prefix, tenant),
        task_id,
        state,
        outcome,
        entry,
        str(retention_ms),
        *flat,
    )
    return bool(wrote == 1)


def done(r: redis.Redis, prefix: str, tenant: str, task_id: str, output: str) -> bool:
    """ack.lua: the task is done with ``output`` (JSON text); whether an events entry was
    written."""
    return finish(r, prefix, tenant, task_id, "done", fields={"output": output})


def dead_letter(
    r: redis.Redis, prefix: str, tenant: str, task_id: str, *, cls: str, error: str, dlq: str
) -> bool:
    """dead_letter.lua: the task is dead-lettered with ``cls``/``error`` as ``dlq``; whether an
    events entry was written."""
    return finish(
        r,
        prefix,
        tenant,
        task_id,
        "expired" if cls == "expired" else "dead_lettered",
        outcome=cls,
        entry=dlq,
        retention_ms=0,
        fields={"class": cls, "error": error, "dlq": dlq},
    )
