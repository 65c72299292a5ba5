"""Task records: look a task up by id (:meth:`TaskReader.get_task`) and wait for its result
(:meth:`TaskReader.wait`), sync and async.

The fleet keeps one record per task_id, the HASH ``{prefix}:{<tenant>}:task:<task_id>``,
written by the same atomic scripts that move the task (so it never disagrees with where the
task is): its state, kind, attempt, times, the member that ran it, each start and end, the
last failure, the dead-letter id, the replay links and the handler's output. A finished record
expires after the fleet's ``tasks.retention``, except while its dead letter exists.

**Records are read through the fleet's ``task_read.lua``** (shipped in this package byte for
byte, :data:`TASK_READ_SCRIPT`; the fleet's CLI and HTTP API read them with the same script),
one ``EVALSHA`` per read (``EVAL`` when Redis has forgotten it). A task enqueued with its record
(everything the producers here enqueue) starts and, mostly, finishes without a record write:
its record keeps saying ``queued`` (or ``replayed``) with ``entry`` = its lane entry, and the
script shows it as that entry's place tells:

- pending in the fleet's consumer group: ``running`` on the consumer holding it (``member``),
  without the ``started_at`` and ``ended_at`` of an earlier run. ``group`` is the fleet's
  ``fleet.group`` (default ``"redrive"``);
- still in the lane, not pending: ``queued`` (or ``replayed``), as stored;
- gone from the lane: ``done``, with ``member``, ``started_at``, ``ended_at`` and the output
  taken from the tenant's done log (``{prefix}:{<tenant>}:done:<second>``, a stream the member
  appends a batch of finished tasks to instead of writing each record).

Records in any other state are shown as stored.

**Runs.** The record's history (``runs`` and ``r<N>:start|member|end|outcome``, the last 16
kept) holds the runs that did not end the task well: failed runs (outcome = the failure class)
and runs whose member died (no end, outcome and possibly start and member unknown). A done
task's last run is its ``member``, ``started`` and ``ended`` (outcome ``ok``); a running task's
current one its ``member`` and ``started``. :attr:`TaskRecord.runs` lists them all, oldest
first, and :attr:`TaskRecord.run_count` counts them.

A task that finishes (done, dead-lettered, expired, resolved, discarded) while someone waits
gets one entry in the tenant's events stream ``{prefix}:{<tenant>}:events`` (fields ``task``,
``state``, ``entry``). ``wait`` blocks on that stream (``XREAD BLOCK``) instead of polling; it
registers in the tenant's waiters ZSET ``{prefix}:{<tenant>}:waiters`` (member a unique id,
score when the registration expires, ms by the server's clock) for as long as it waits, so
that the fleet publishes finishes only while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ._keys import (
    DEFAULT_GROUP,
    check_group,
    check_prefix,
    check_task_id,
    check_tenant,
    done_log_prefix,
    events_key,
    lane_key,
    task_key,
    waiters_key,
)
from .errors import TaskFailed, WaitTimeout

#: The fleet's record reader (``src/broker/scripts/task_read.lua``, byte for byte; the tests
#: compare them): a record as readers show it (running while its entry is pending, done from
#: the done log once its entry has left the lane).
TASK_READ_SCRIPT: str = (
    resources.files("redrive").joinpath("task_read.lua").read_bytes().decode("utf-8")
)
#: The SHA-1 Redis knows :data:`TASK_READ_SCRIPT` by (``EVALSHA``).
TASK_READ_SCRIPT_SHA: str = hashlib.sha1(
    TASK_READ_SCRIPT.encode("utf-8"), usedforsecurity=False
).hexdigest()


class TaskState(str, Enum):
    """Where a task is, as its record says (the record's ``state`` field; the values are the
    wire names, and a member compares equal to its name: ``TaskState.DONE == "done"``)."""

    #: In its lane, not started.
    QUEUED = "queued"
    #: Started by a member.
    RUNNING = "running"
    #: Failed; waiting in the retry schedule.
    RETRY_SCHEDULED = "retry_scheduled"
    #: Held back unattempted by its tenant's breaker.
    DEFERRED = "deferred"
    #: Finished successfully (its output is in the record).
    DONE = "done"
    #: In its tenant's dead letters.
    DEAD_LETTERED = "dead_lettered"
    #: Its dead letter was replayed: back in its lane (same task_id), not started yet.
    REPLAYED = "replayed"
    #: Its dead letter was resolved by an operator.
    RESOLVED = "resolved"
    #: Its dead letter was discarded by an operator.
    DISCARDED = "discarded"
    #: Dead-lettered because its deadline passed.
    EXPIRED = "expired"

    def __str__(self) -> str:
        """The wire name."""
        return self.value

    @property
    def finished(self) -> bool:
        """Whether the task will not move again by itself: what ``wait`` returns on."""
        return self in FINISHED_STATES

    @property
    def failed(self) -> bool:
        """Whether the task finished without success (``wait`` raises :class:`TaskFailed`)."""
        return self in FAILED_STATES

    @classmethod
    def parse(cls, value: str | None) -> TaskState | None:
        """The state of a wire name; ``None`` for a missing or unknown one."""
        try:
            return None if value is None else cls(value)
        except ValueError:
            return None


#: The states ``wait`` returns on (the fleet's ``TaskState::is_finished``).
FINISHED_STATES: frozenset[TaskState] = frozenset(
    {
        TaskState.DONE,
        TaskState.DEAD_LETTERED,
        TaskState.RESOLVED,
        TaskState.DISCARDED,
        TaskState.EXPIRED,
    }
)
#: The finished states that are not a success.
FAILED_STATES: frozenset[TaskState] = FINISHED_STATES - {TaskState.DONE}

#: The longest ``XREAD BLOCK`` of one ``wait`` slice, in seconds: a wait re-reads the record
#: at least this often even when no events entry names its task.
WAIT_SLICE_S = 5.0
#: Events entries read per ``XREAD`` while waiting.
WAIT_EVENTS_BATCH = 1000
#: The socket timeout of the connections ``wait`` uses (a slice plus a margin), seconds.
WAIT_SOCKET_TIMEOUT_S = WAIT_SLICE_S + 2.0
#: How long ``wait`` gives a (re)connect, seconds.
WAIT_CONNECT_TIMEOUT_S = 2.0
#: The pause after a lost connection, doubled per failure up to :data:`WAIT_BACKOFF_MAX_S`.
WAIT_BACKOFF_S = 0.05
#: The longest pause between reconnects while waiting.
WAIT_BACKOFF_MAX_S = 1.0
#: How long a wait's registration in the waiters ZSET lasts, ms by the server's clock. It is
#: refreshed before each blocking slice (at most :data:`WAIT_SLICE_S` apart), so it lapses only
#: for a waiter gone without its ``ZREM``.
WAIT_REGISTRATION_MS = 15_000


#: How many runs of its history a record keeps (lib/record.lua ``REC_RUNS_KEPT``).
RUNS_KEPT = 16


@dataclass(frozen=True)
class Run:
    """One run of the task: one of the history's (``r<N>:start``, ``r<N>:member``,
    ``r<N>:end``, ``r<N>:outcome``: a run that failed, or whose member died), or the last run of
    a done or running task (its record's ``member``, ``started`` and ``ended``)."""

    #: The run's number N (1 for the first run of the task).
    number: int
    #: When it started, ms since the epoch (``None`` when unknown).
    start: int | None
    #: The fleet member that ran it (``None`` when unknown: a run whose member died unseen).
    member: str | None
    #: When it ended, ms (``None`` while running, or when its member died).
    end: int | None
    #: ``"ok"`` (the done task's last run) or the failure class it ended with; ``None`` while
    #: running, or when its member died.
    outcome: str | None


@dataclass(frozen=True)
class TaskRecord:
    """A task's record as read back; tolerant of missing fields (each is ``None`` then).

    Times are ms since the epoch. ``output`` is the handler's output parsed as JSON, except
    when ``output_truncated`` is true (the fleet cut it to its ``tasks.max_output_bytes``):
    then it is the raw text kept. ``has_output`` tells an output of ``null`` from none.
    ``fields`` holds every field as the readers show it (task_read.lua, see the module's docs):
    as stored, or for a task shown ``running`` because its entry is pending, ``state`` running,
    ``member`` the consumer, no ``started``/``ended``; for one shown ``done`` from the done log,
    ``state`` done and its ``member``, ``started``, ``ended``, ``updated`` and output from there.
    """

    #: The tenant.
    tenant: str
    #: The task's id.
    task_id: str
    #: The state (``None`` when the field is missing or a state this SDK does not know;
    #: ``fields["state"]`` has the text).
    state: TaskState | None
    #: The task's kind.
    kind: str | None = None
    #: The current attempt.
    attempt: int | None = None
    #: The lane entry or schedule item the task is now (or was last).
    entry: str | None = None
    #: When this life of the task was enqueued (``enq``).
    enqueued_at: int | None = None
    #: When it was first enqueued (``first``).
    first_enqueued_at: int | None = None
    #: The member that runs (running) or ran the last attempt.
    member: str | None = None
    #: When the last attempt started (``None`` for a running task whose start only the PEL
    #: knows).
    started_at: int | None = None
    #: When the last attempt ended.
    ended_at: int | None = None
    #: When the record last changed.
    updated_at: int | None = None
    #: The last failure class (the record's ``class`` field).
    cls: str | None = None
    #: The last failure's error text (at most 1 KiB).
    error: str | None = None
    #: The dead-letter id while the task is dead.
    dlq: str | None = None
    #: The dead-letter id this task was replayed from.
    replay_of: str | None = None
    #: The lane entry its dead letter was replayed as.
    replayed_as: str | None = None
    #: How many times its dead letters were replayed.
    replays: int = 0
    #: How many runs the record knows of, across retries, crashes and replays: its history
    #: (``runs``) plus, for a done or running task, the last run.
    run_count: int = 0
    #: The runs kept, oldest first: the history's last 16, then a done or running task's last
    #: run (see :class:`Run`).
    runs: tuple[Run, ...] = ()
    #: The handler's output: parsed JSON, or the raw text when truncated.
    output: Any = None
    #: Whether the record holds an output.
    has_output: bool = False
    #: Whether the output was cut to the fleet's bound (``output`` is then raw text).
    output_truncated: bool = False
    #: Every field as stored.
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the task finished (done, dead_lettered, expired, resolved, discarded)."""
        return self.state is not None and self.state.finished

    @property
    def failed(self) -> bool:
        """Whether the task finished without success."""
        return self.state is not None and self.state.failed

    @property
    def waiting_entry(self) -> str | None:
        """The lane entry the record says the task waits as, when it says ``queued`` or
        ``replayed`` (the readers show such a record as that entry's place tells: see the
        module's docs; for a record read otherwise, a raw ``HGETALL``, whether it runs is the
        PEL's to say)."""
        if self.state in (TaskState.QUEUED, TaskState.REPLAYED):
            return self.fields.get("entry") or None
        return None

    def running_on(self, consumer: str) -> TaskRecord:
        """The record as shown while its :attr:`waiting_entry` is pending for ``consumer``:
        ``running`` there, without the ``started``/``ended`` of an earlier run (what
        task_read.lua shows; for a record read otherwise, a raw ``HGETALL``)."""
        f = dict(self.fields)
        f["state"] = TaskState.RUNNING.value
        f["member"] = consumer
        f.pop("started", None)
        f.pop("ended", None)
        return TaskRecord.from_fields(self.tenant, self.task_id, f)

    @classmethod
    def from_fields(
        cls, tenant: str, task_id: str, raw: Mapping[str, str] | Mapping[bytes, bytes]
    ) -> TaskRecord:
        """A record from its fields, text or bytes, as given (the readers give what
        task_read.lua shows; from a raw ``HGETALL`` a task waiting on a pending entry, or done
        through the done log, reads ``queued`` here)."""
        f = {_text(k): _text(v) for k, v in raw.items()}
        state = TaskState.parse(f.get("state"))
        history = max(_int(f.get("runs")) or 0, 0)
        runs = [
            Run(
                number=n,
                start=_int(f.get(f"r{n}:start")),
                member=f[f"r{n}:member"] or None,
                end=_int(f.get(f"r{n}:end")),
                outcome=f.get(f"r{n}:outcome") or None,
            )
            for n in range(max(history - RUNS_KEPT + 1, 1), history + 1)
            if f"r{n}:member" in f
        ]
        if state in (TaskState.DONE, TaskState.RUNNING):
            done = state is TaskState.DONE
            runs.append(
                Run(
                    number=history + 1,
                    start=_int(f.get("started")),
                    member=f.get("member") or None,
                    end=_int(f.get("ended")) if done else None,
                    outcome="ok" if done else None,
                )
            )
        truncated = f.get("output_truncated") in ("1", "true")
        raw_output = f.get("output")
        output: Any = raw_output
        if raw_output is not None and not truncated:
            try:
                output = json.loads(raw_output)
            except ValueError:
                output = raw_output  # not JSON after all: the text as stored
        return cls(
            tenant=tenant,
            task_id=task_id,
            state=state,
            kind=f.get("kind"),
            attempt=_int(f.get("attempt")),
            entry=f.get("entry") or None,
            enqueued_at=_int(f.get("enq")),
            first_enqueued_at=_int(f.get("first")),
            member=f.get("member"),
            started_at=_int(f.get("started")),
            ended_at=_int(f.get("ended")),
            updated_at=_int(f.get("updated")),
            cls=f.get("class") or None,
            error=f.get("error") or None,
            dlq=f.get("dlq") or None,
            replay_of=f.get("replay_of") or None,
            replayed_as=f.get("replayed_as") or None,
            replays=_int(f.get("replays")) or 0,
            run_count=history + 1 if state in (TaskState.DONE, TaskState.RUNNING) else history,
            runs=tuple(runs),
            output=output,
            has_output=raw_output is not None,
            output_truncated=truncated,
            fields=f,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (what ``python -m redrive task`` prints)."""
        return {
            "tenant": self.tenant,
            "task_id": self.task_id,
            "state": None if self.state is None else self.state.value,
            "kind": self.kind,
            "attempt": self.attempt,
            "entry": self.entry,
            "enqueued_at": self.enqueued_at,
            "first_enqueued_at": self.first_enqueued_at,
            "member": self.member,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "updated_at": self.updated_at,
            "class": self.cls,
            "error": self.error,
            "dlq": self.dlq,
            "replay_of": self.replay_of,
            "replayed_as": self.replayed_as,
            "replays": self.replays,
            "run_count": self.run_count,
            "runs": [
                {
                    "run": r.number,
                    "start": r.start,
                    "member": r.member,
                    "end": r.end,
                    "outcome": r.outcome,
                }
                for r in self.runs
            ],
            "output": self.output,
            "has_output": self.has_output,
            "output_truncated": self.output_truncated,
            "fields": dict(self.fields),
        }


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
    return float(timeout)


def _last_id(reply: object) -> str:
    """The id of XREVRANGE … COUNT 1's entry, or "0-0" for an empty (or missing) stream."""
    if isinstance(reply, list) and reply:
        first = reply[0]
        if isinstance(first, (list, tuple)) and first:
            return _text(first[0])
    return "0-0"


def _is_entry_id(value: object) -> bool:
    head, dash, tail = _text(value).partition("-")
    return bool(dash) and head.isdigit() and tail.isdigit()


def _entries(reply: object) -> list[tuple[str, Mapping[Any, Any]]]:
    """The (id, fields) of an XREAD reply in any of redis-py's shapes: RESP2 (a list of
    [stream, entries]) or RESP3 (a map of stream to entries, or to a list of them)."""
    out: list[tuple[str, Mapping[Any, Any]]] = []

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            if len(node) == 2 and isinstance(node[0], (str, bytes)) and _is_entry_id(node[0]):
                fields = node[1]
                if isinstance(fields, (list, tuple)):
                    fields = dict(zip(fields[::2], fields[1::2], strict=False))
                out.append((_text(node[0]), fields if isinstance(fields, Mapping) else {}))
            else:
                for item in node:
                    walk(item)

    walk(reply)
    return out


def _names_task(fields: Mapping[Any, Any], task_id: str) -> bool:
    value = fields.get("task", fields.get(b"task"))
    return value is not None and _text(value) == task_id


def _block_ms(remaining: float) -> int:
    return max(1, int(min(remaining, WAIT_SLICE_S) * 1000))


def _replies(replies: list[Any]) -> list[Any]:
    """A pipeline's replies (run with ``raise_on_error=False``), raising the first error but
    task_read.lua's ``NOSCRIPT`` (the caller reads the record again with ``EVAL``)."""
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
            raise reply
    return replies


class _Registration:
    """A wait's member in the tenant's waiters ZSET: a unique id, scored with when it expires
    by the server's clock. The clock is read once per (re)connect (``TIME``); in between it is
    estimated from the offset to the local monotonic clock."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.member = uuid.uuid4().hex
        self.sent = False
        self._offset_ms = 0.0

    def clock(self, reply: Any) -> int:
        """Takes ``TIME``'s reply (seconds, microseconds); returns the server's now in ms."""
        now = int(reply[0]) * 1000 + int(reply[1]) // 1000
        self._offset_ms = now - time.monotonic() * 1000
        return now

    def expiry(self, now: int | None = None) -> dict[str, int]:
        """The ``ZADD`` mapping: the member, expiring :data:`WAIT_REGISTRATION_MS` after
        ``now`` (the server's now as estimated when ``None``)."""
        if now is None:
            now = int(time.monotonic() * 1000 + self._offset_ms)
        return {self.member: now + WAIT_REGISTRATION_MS}


def _shown(tenant: str, task_id: str, reply: object) -> TaskRecord | None:
    """The record task_read.lua answered (``{fields, pttl}``; no fields: no record)."""
    if isinstance(reply, (list, tuple)) and len(reply) == 2 and isinstance(reply[0], (list, tuple)):
        flat = reply[0]
        if not flat:
            return None
        return TaskRecord.from_fields(
            tenant, task_id, dict(zip(flat[::2], flat[1::2], strict=False))
        )
    raise redis.ResponseError(f"task_read.lua answered {reply!r}, not {{fields, ttl}}")


def _settle(record: TaskRecord, raise_on_failure: bool) -> TaskRecord:
    if record.failed and raise_on_failure:
        raise TaskFailed(record)
    return record


_SYNC_CONNECTIONS = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)
_ASYNC_CONNECTIONS = (
    redis.asyncio.connection.Connection,
    redis.asyncio.connection.SSLConnection,
    redis.asyncio.connection.UnixDomainSocketConnection,
)


def _wait_kwargs(kwargs: Mapping[str, Any], retry: object) -> dict[str, Any]:
    out = dict(kwargs)
    out.update(
        retry=retry,
        retry_on_error=[],
        socket_timeout=WAIT_SOCKET_TIMEOUT_S,
        socket_connect_timeout=WAIT_CONNECT_TIMEOUT_S,
        decode_responses=True,
        encoding="utf-8",
        encoding_errors="replace",
    )
    return out


class _ReaderBase:
    def __init__(self, key_prefix: str, group: str) -> None:
        self.key_prefix = check_prefix(key_prefix)
        self.group = check_group(group)

    def _keys(self, tenant: str, task_id: str) -> tuple[str, str, str]:
        tenant = check_tenant(tenant)
        task_id = check_task_id(task_id)
        return tenant, task_id, task_key(self.key_prefix, tenant, task_id)

    def _group(self, group: str | None) -> str:
        return self.group if group is None else check_group(group)

    def _script_args(self, tenant: str, task_id: str, group: str) -> tuple[str, str, str, str]:
        """task_read.lua's 3 KEYS and its ARGV for one task (``EVALSHA``/``EVAL``)."""
        return (
            task_key(self.key_prefix, tenant, task_id),
            lane_key(self.key_prefix, tenant),
            done_log_prefix(self.key_prefix, tenant),
            group,
        )


class TaskReader(_ReaderBase):
    """Reads task records through redis-py: :meth:`get_task` and :meth:`wait`.

    ``redis_client_or_url`` is a ``redis.Redis`` or a URL; ``key_prefix`` is the fleet's
    ``redis.key_prefix`` and ``group`` its consumer group (``fleet.group``, default
    ``"redrive"``): a task whose record says queued is shown running while its entry is
    pending in that group (see the module's docs). :class:`~redrive.Producer` has the same two
    methods (it holds one of these).

    ``wait`` talks to Redis on connections of its own, made with the client's connection
    settings but without redis-py's retries and with bounded socket timeouts, so a lost
    connection is retried by ``wait`` itself within its deadline.
    """

    def __init__(
        self,
        redis_client_or_url: redis.Redis | str,
        key_prefix: str = "redrive",
        group: str = DEFAULT_GROUP,
    ) -> None:
        super().__init__(key_prefix, group)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.Redis = redis.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url
        self._waiter: redis.Redis | None = None
        self._waiter_pool: redis.ConnectionPool | None = None

    def get_task(self, tenant: str, task_id: str, *, group: str | None = None) -> TaskRecord | None:
        """The task's record, or ``None`` when it has none (never enqueued with records on,
        or expired after the fleet's retention). Raises :class:`~redrive.InvalidTask` for a
        tenant or task_id that breaks CONTRACT.md.

        One round trip: the fleet's ``task_read.lua`` (see the module's docs). A record that
        says ``queued`` or ``replayed`` is shown ``running`` on the consumer holding its entry
        while that entry is pending in ``group`` (default: the reader's, ``"redrive"`` unless
        given), and ``done`` (from the done log) once its entry has left the lane."""
        tenant, task_id, _ = self._keys(tenant, task_id)
        return self._read(self.redis, tenant, task_id, self._group(group))

    def _read(self, r: redis.Redis, tenant: str, task_id: str, group: str) -> TaskRecord | None:
        """The record through task_read.lua: ``EVALSHA``, or ``EVAL`` when Redis has forgotten
        the script (a restart, ``SCRIPT FLUSH``; ``EVAL`` caches it again)."""
        args = self._script_args(tenant, task_id, group)
        try:
            reply: Any = r.evalsha(TASK_READ_SCRIPT_SHA, 3, *args)
        except NoScriptError:
            reply = r.eval(TASK_READ_SCRIPT, 3, *args)
        return _shown(tenant, task_id, reply)

    def wait(
        self,
        tenant: str,
        task_id: str,
        timeout: float,
        *,
        raise_on_failure: bool = True,
        group: str | None = None,
    ) -> TaskRecord:
        """Waits up to ``timeout`` seconds for the task to finish and returns its record.

        The task done: its record (``output`` holds the handler's output). Finished without
        success (dead_lettered, expired, resolved, discarded): raises :class:`TaskFailed`
        carrying the record (class, error, dead-letter id), or returns the record when
        ``raise_on_failure`` is false. Still unfinished at the deadline: raises
        :class:`WaitTimeout` (a ``TimeoutError``) with the state it was in when last read, or
        ``"no record"`` (every read shows it as :meth:`get_task` does: ``running`` while its
        entry is pending in ``group``).

        Returns at once when the task has already finished. Otherwise it blocks on the
        tenant's events stream (slices of at most 5 s, re-reading the record after each slice
        and after each events entry that names the task), never polling in a tight loop. It
        registers in the tenant's waiters ZSET first (the fleet publishes finishes only while
        someone waits), refreshes that before each slice and removes it when it ends. A
        lost connection (a Redis restart) is retried until the deadline; a record lost with a
        Redis that restarted without persistence is waited for until the deadline, then
        reported as ``"no record"``.
        """
        tenant, task_id, _ = self._keys(tenant, task_id)
        group = self._group(group)
        timeout = _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        events = events_key(self.key_prefix, tenant)
        r = self._wait_client()
        reg = _Registration(waiters_key(self.key_prefix, tenant))
        try:
            cursor: str | None = None
            record: TaskRecord | None = None
            looked = False
            looked_at = 0.0
            error: Exception | None = None
            pause = WAIT_BACKOFF_S
            while True:
                try:
                    if cursor is None:
                        # Register (and drop the stale registrations), then the last events id,
                        # then the record, in this order: a finish before the registration shows
                        # in the record; one after it writes an events entry, after the cursor
                        # or, when before it, also before the record read.
                        now = reg.clock(r.time())
                        pipe = r.pipeline(transaction=False)
                        pipe.zadd(reg.key, reg.expiry(now))
                        pipe.zremrangebyscore(reg.key, "-inf", f"({now}")
                        pipe.xrevrange(events, "+", "-", count=1)
                        pipe.evalsha(
                            TASK_READ_SCRIPT_SHA, 3, *self._script_args(tenant, task_id, group)
                        )
                        reg.sent = True
                        replies = _replies(pipe.execute(raise_on_error=False))
                        cursor = _last_id(replies[2])
                        if isinstance(replies[3], NoScriptError):
                            # Read again (EVAL): after the cursor all the same.
                            record = self._read(r, tenant, task_id, group)
                        else:
                            record = _shown(tenant, task_id, replies[3])
                        looked, error, pause = True, None, WAIT_BACKOFF_S
                        looked_at = time.monotonic()
                        if record is not None and record.finished:
                            return _settle(record, raise_on_failure)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    # Refresh the registration in the slice's round trip, ahead of its XREAD.
                    pipe = r.pipeline(transaction=False)
                    pipe.zadd(reg.key, reg.expiry())
                    block = _block_ms(remaining)
                    pipe.xread({events: cursor}, count=WAIT_EVENTS_BATCH, block=block)
                    reply = pipe.execute()[1]
                    # A slice with no entry, or one slice's time without an entry naming the
                    # task (a busy tenant): look at the record again.
                    hit = not reply or time.monotonic() - looked_at >= WAIT_SLICE_S
                    for entry_id, fields in _entries(reply):
                        cursor = entry_id
                        hit = hit or _names_task(fields, task_id)
                    if hit:
                        record = self._read(r, tenant, task_id, group)
                        looked_at = time.monotonic()
                        if record is not None and record.finished:
                            return _settle(record, raise_on_failure)
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    # Reconnect (the next command does) and start over, registering again, from a
                    # fresh cursor: a restarted server has lost the registration and may have a
                    # new events stream.
                    error, cursor = e, None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    time.sleep(min(pause, remaining))
                    pause = min(pause * 2, WAIT_BACKOFF_MAX_S)
            raise WaitTimeout(tenant, task_id, timeout, record, error=error, looked=looked)
        finally:
            if reg.sent:
                # Best effort: a registration left behind lapses on its own.
                with contextlib.suppress(redis.RedisError, OSError):
                    r.zrem(reg.key, reg.member)

    def _wait_client(self) -> redis.Redis:
        if self._waiter is None:
            pool = self.redis.connection_pool
            if pool.connection_class in _SYNC_CONNECTIONS:
                kwargs = _wait_kwargs(pool.connection_kwargs, Retry(NoBackoff(), 0))
                self._waiter_pool = redis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
                self._waiter = redis.Redis(connection_pool=self._waiter_pool)
            else:
                # A pool of another kind (Sentinel…): wait uses the client as it is.
                self._waiter = self.redis
        return self._waiter

    def close(self) -> None:
        """Closes the connections ``wait`` opened (not the client given)."""
        if self._waiter_pool is not None:
            self._waiter_pool.disconnect()
        self._waiter = self._waiter_pool = None


class AsyncTaskReader(_ReaderBase):
    """:class:`TaskReader` on ``redis.asyncio``: the same methods, awaited."""

    def __init__(
        self,
        redis_client_or_url: redis.asyncio.Redis | str,
        key_prefix: str = "redrive",
        group: str = DEFAULT_GROUP,
    ) -> None:
        super().__init__(key_prefix, group)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url
        self._waiter: redis.asyncio.Redis | None = None
        self._waiter_pool: redis.asyncio.ConnectionPool | None = None

    async def get_task(
        self, tenant: str, task_id: str, *, group: str | None = None
    ) -> TaskRecord | None:
        """As :meth:`TaskReader.get_task`."""
        tenant, task_id, _ = self._keys(tenant, task_id)
        return await self._read(self.redis, tenant, task_id, self._group(group))

    async def _read(
        self, r: redis.asyncio.Redis, tenant: str, task_id: str, group: str
    ) -> TaskRecord | None:
        """As :meth:`TaskReader._read`."""
        args = self._script_args(tenant, task_id, group)
        try:
            reply: Any = await r.evalsha(TASK_READ_SCRIPT_SHA, 3, *args)
        except NoScriptError:
            reply = await r.eval(TASK_READ_SCRIPT, 3, *args)
        return _shown(tenant, task_id, reply)

    async def wait(
        self,
        tenant: str,
        task_id: str,
        timeout: float,
        *,
        raise_on_failure: bool = True,
        group: str | None = None,
    ) -> TaskRecord:
        """As :meth:`TaskReader.wait`."""
        tenant, task_id, _ = self._keys(tenant, task_id)
        group = self._group(group)
        timeout = _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        events = events_key(self.key_prefix, tenant)
        r = self._wait_client()
        reg = _Registration(waiters_key(self.key_prefix, tenant))
        try:
            cursor: str | None = None
            record: TaskRecord | None = None
            looked = False
            looked_at = 0.0
            error: Exception | None = None
            pause = WAIT_BACKOFF_S
            while True:
                try:
                    if cursor is None:
                        now = reg.clock(await r.time())
                        pipe = r.pipeline(transaction=False)
                        pipe.zadd(reg.key, reg.expiry(now))
                        pipe.zremrangebyscore(reg.key, "-inf", f"({now}")
                        pipe.xrevrange(events, "+", "-", count=1)
                        pipe.evalsha(
                            TASK_READ_SCRIPT_SHA, 3, *self._script_args(tenant, task_id, group)
                        )
                        reg.sent = True
                        replies = _replies(await pipe.execute(raise_on_error=False))
                        cursor = _last_id(replies[2])
                        if isinstance(replies[3], NoScriptError):
                            record = await self._read(r, tenant, task_id, group)
                        else:
                            record = _shown(tenant, task_id, replies[3])
                        looked, error, pause = True, None, WAIT_BACKOFF_S
                        looked_at = time.monotonic()
                        if record is not None and record.finished:
                            return _settle(record, raise_on_failure)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    pipe = r.pipeline(transaction=False)
                    pipe.zadd(reg.key, reg.expiry())
                    block = _block_ms(remaining)
                    pipe.xread({events: cursor}, count=WAIT_EVENTS_BATCH, block=block)
                    reply = (await pipe.execute())[1]
                    hit = not reply or time.monotonic() - looked_at >= WAIT_SLICE_S
                    for entry_id, fields in _entries(reply):
                        cursor = entry_id
                        hit = hit or _names_task(fields, task_id)
                    if hit:
                        record = await self._read(r, tenant, task_id, group)
                        looked_at = time.monotonic()
                        if record is not None and record.finished:
                            return _settle(record, raise_on_failure)
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    error, cursor = e, None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    await asyncio.sleep(min(pause, remaining))
                    pause = min(pause * 2, WAIT_BACKOFF_MAX_S)
            raise WaitTimeout(tenant, task_id, timeout, record, error=error, looked=looked)
        finally:
            if reg.sent:
                with contextlib.suppress(redis.RedisError, OSError):
                    await r.zrem(reg.key, reg.member)

    def _wait_client(self) -> redis.asyncio.Redis:
        if self._waiter is None:
            pool = self.redis.connection_pool
            if pool.connection_class in _ASYNC_CONNECTIONS:
                kwargs = _wait_kwargs(
                    pool.connection_kwargs, redis.asyncio.retry.Retry(NoBackoff(), 0)
                )
                self._waiter_pool = redis.asyncio.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs
                )
                self._waiter = redis.asyncio.Redis(connection_pool=self._waiter_pool)
            else:
                self._waiter = self.redis
        return self._waiter

    async def aclose(self) -> None:
        """Closes the connections ``wait`` opened (not the client given)."""
        if self._waiter_pool is not None:
            await self._waiter_pool.disconnect()
        self._waiter = self._waiter_pool = None
