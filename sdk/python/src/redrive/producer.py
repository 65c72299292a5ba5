"""Publishing tasks: :class:`Producer` (redis-py) and :class:`AsyncProducer` (redis.asyncio).

Both validate a task as CONTRACT.md says (and as the Rust producer and ``redrive enqueue`` do),
then append it to its tenant's lane with the same fields in the same order as the Rust
producer writes a fresh task:

``task_id, tenant, kind, payload, attempt (1), enqueued_at (ms), [schema_version],
[prompt_version], [trace_id], [deadline]``, then the producer's own fields ordered by name.

``payload`` is compact JSON text with object keys sorted (serde_json's order), so Python and
Rust producers write byte-identical entries for the same integers and strings. The tenant is
registered in ``{prefix}:tenants`` (``SADD``) in the same round trip, unless this producer
registered it less than a second ago (an ``SADD`` of it answered), as the Rust producer does: a
round trip whose tenants are all registered that lately sends no ``SADD``. Should Redis lose the
registry (a restart without persistence), the next enqueue a second later registers the tenant
again; its tasks are in the lane meanwhile. When a registration added a tenant, the producer
then publishes the round trip's tenants (comma-separated) on ``{prefix}:tenants:new`` so
members serve it at once, as the Rust producer does. A failed
publish is logged (logger ``redrive.producer``, a warning) and does not fail the enqueue: the
tasks are written, and members find the tenant by their periodic look. A batch is validated
whole before anything is written.

Enqueue is idempotent: each task goes through the fleet's ``enqueue.lua`` (shipped in this
package byte for byte, :data:`ENQUEUE_SCRIPT`), which appends it and writes its record
``queued`` in one atomic step, unless its task_id already has a live record: then nothing is
written and the result says it is a duplicate, with the live task's state and entry. With
``dedup=False`` only a task still in flight (queued, running, retry_scheduled, deferred,
replayed) counts as live: a finished one's record is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ._keys import (
    DEFAULT_GROUP,
    MAX_KIND_LEN,
    MAX_TASK_ID_LEN,
    MAX_TENANT_LEN,
    lane_key,
    stats_prefix,
    task_key,
    tasks_key,
    tenant_signals,
    tenants_key,
)
from ._keys import KIND_CHARS as _KIND
from ._keys import TASK_ID_CHARS as _TASK_ID
from ._keys import TENANT_CHARS as _TENANT
from ._keys import check_name as _check_name
from ._keys import check_prefix as _check_prefix
from ._wire import dumps, has_control
from .errors import EnqueueFailed, InvalidTask
from .records import AsyncTaskReader, TaskReader, TaskRecord, TaskState

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_RETENTION_MS",
    "ENQUEUE_SCRIPT",
    "ENQUEUE_SCRIPT_SHA",
    "KNOWN_FIELDS",
    "MAX_EXTRA_BYTES",
    "MAX_EXTRA_FIELDS",
    "MAX_EXTRA_NAME_LEN",
    "MAX_KIND_LEN",
    "MAX_META_CHARS",
    "MAX_RETENTION_MS",
    "MAX_TASK_ID_LEN",
    "MAX_TENANT_LEN",
    "MIN_RETENTION_MS",
    "PIPELINE_CHUNK",
    "STATS_KEEP_MS",
    "TASK_KEYS",
    "AsyncProducer",
    "Duplicate",
    "Encoded",
    "Enqueued",
    "NewTask",
    "Producer",
    "check_retention",
    "encode",
    "lane_key",
    "tenant_signals",
    "tenants_key",
]

_log = logging.getLogger("redrive.producer")

#: The fleet's enqueue script (``src/broker/scripts/lib/record.lua`` followed by
#: ``src/broker/scripts/enqueue.lua``, byte for byte; the tests compare them).
ENQUEUE_SCRIPT: str = (
    resources.files("redrive").joinpath("enqueue.lua").read_bytes().decode("utf-8")
)
#: The SHA-1 Redis knows :data:`ENQUEUE_SCRIPT` by (``EVALSHA``).
ENQUEUE_SCRIPT_SHA: str = hashlib.sha1(
    ENQUEUE_SCRIPT.encode("utf-8"), usedforsecurity=False
).hexdigest()
#: How long a per-minute stats bucket is kept, ms (the fleet's ``STATS_KEEP``, 2 days): the
#: script counts refused duplicates there.
STATS_KEEP_MS = 2 * 86_400 * 1000
#: Longest prompt version or trace id, in characters.
MAX_META_CHARS = 128
#: Most producer-own fields per task.
MAX_EXTRA_FIELDS = 16
#: Longest producer-own field name, in bytes.
MAX_EXTRA_NAME_LEN = 64
#: Most bytes of producer-own field names plus values per task.
MAX_EXTRA_BYTES = 4096
#: The default payload limit (``limits.max_payload_bytes``), in bytes of JSON text.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
#: How many tasks one pipelined round trip carries (as the Rust producer).
PIPELINE_CHUNK = 1000
#: The default retention of a finished task's record, ms (the fleet's ``tasks.retention_ms``
#: default, 24 h).
DEFAULT_RETENTION_MS = 86_400_000
#: The shortest retention accepted, ms (as the fleet's ``tasks.retention_ms``).
MIN_RETENTION_MS = 1_000
#: The longest retention accepted, ms: 365 days (as the fleet's ``tasks.retention_ms``).
MAX_RETENTION_MS = 365 * 86_400_000

#: Field names with a meaning to redrive: the contract's and the reserved ones. A producer's
#: own fields must use other names.
KNOWN_FIELDS: frozenset[str] = frozenset(
    {
        "task_id",
        "tenant",
        "kind",
        "payload",
        "attempt",
        "enqueued_at",
        "schema_version",
        "prompt_version",
        "trace_id",
        "deadline",
        "first_enqueued_at",
        "steps",
        "history",
        "replay_of",
        "replayed_by",
        "extra_dropped",
        "from_entry",
        "extra",
        "unreadable_retry",
    }
)

#: The keys a task given as a mapping may have (``redrive enqueue --file``'s line shape).
TASK_KEYS: tuple[str, ...] = (
    "tenant",
    "kind",
    "payload",
    "task_id",
    "schema_version",
    "prompt_version",
    "trace_id",
    "deadline",
    "extra",
)

#: How long after its registration (an ``SADD`` of it that answered) a producer leaves a
#: tenant out of the registry ``SADD``, seconds (the Rust producer's ``REGISTERED_FOR``).
_REGISTERED_FOR_S = 1.0
#: How many tenants a producer remembers as registered; past that it forgets them all (the
#: Rust producer's ``REGISTERED_MAX``).
_REGISTERED_MAX = 100_000

_U32 = 2**32 - 1
_U64 = 2**64 - 1


@dataclass(frozen=True)
class NewTask:
    """A task to publish: the contract's producer-facing fields.

    ``payload`` is any JSON value (a ``str`` is a JSON string, not parsed). ``extra`` holds the
    producer's own fields (text values), carried through retries and replays and shown in
    dead letters.
    """

    tenant: str
    kind: str
    payload: Any
    task_id: str | None = None
    schema_version: int | None = None
    prompt_version: str | None = None
    trace_id: str | None = None
    deadline: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, task: Mapping[str, Any]) -> NewTask:
        """A task from a mapping with the keys of ``redrive enqueue --file``'s lines
        (:data:`TASK_KEYS`). An unknown key or a missing required one raises
        :class:`InvalidTask` naming it; values are checked by :meth:`validate`."""
        if not isinstance(task, Mapping):
            raise InvalidTask("task", f"a task is a mapping of fields, not {type(task).__name__}")
        for key in task:
            if key not in TASK_KEYS:
                raise InvalidTask(
                    str(key), f"unknown field {key!r}; a task has {', '.join(TASK_KEYS)}"
                )
        for key in ("tenant", "kind", "payload"):
            if key not in task:
                raise InvalidTask(key, f"missing field {key!r}")
        extra = task.get("extra")
        return cls(
            tenant=task["tenant"],
            kind=task["kind"],
            payload=task["payload"],
            task_id=task.get("task_id"),
            schema_version=task.get("schema_version"),
            prompt_version=task.get("prompt_version"),
            trace_id=task.get("trace_id"),
            deadline=task.get("deadline"),
            extra={} if extra is None else extra,
        )

    def validate(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        """Raises :class:`InvalidTask` (naming the field) when the task breaks CONTRACT.md."""
        encode(self, max_payload_bytes, now_ms=0)


@dataclass(frozen=True)
class Duplicate:
    """The live task an enqueue was refused for (its task_id has a live record): nothing was
    written. ``state`` is its state (``None`` only for a state this SDK does not know) and
    ``entry`` the lane entry or schedule item it is (or was last)."""

    #: The live task's state.
    state: TaskState | None
    #: The live task's entry.
    entry: str


@dataclass(frozen=True)
class Enqueued:
    """Where a task landed: its id (given or generated) and its entry id in the lane.

    For a duplicate (its task_id already had a live record: queued, running, scheduled,
    deferred, dead, or done within the fleet's retention) nothing was written: ``duplicate``
    says what the live task is and ``entry_id`` is its entry. Otherwise ``duplicate`` is
    ``None``.
    """

    task_id: str
    entry_id: str
    duplicate: Duplicate | None = None

    @property
    def is_duplicate(self) -> bool:
        """Whether the enqueue was refused as a duplicate."""
        return self.duplicate is not None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (what ``python -m redrive enqueue`` prints)."""
        dup = self.duplicate
        return {
            "task_id": self.task_id,
            "entry_id": self.entry_id,
            "duplicate": None
            if dup is None
            else {"state": None if dup.state is None else dup.state.value, "entry": dup.entry},
        }


@dataclass(frozen=True)
class Encoded:
    """A validated task as its lane entry: the tenant and the fields in write order."""

    tenant: str
    task_id: str
    fields: dict[str, str]


def _check_meta(what: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidTask(what, f"{what} must be a string, not {type(value).__name__}")
    if len(value) > MAX_META_CHARS:
        raise InvalidTask(what, f"{what} is {len(value)} characters; the limit is {MAX_META_CHARS}")
    if has_control(value):
        raise InvalidTask(what, f"{what} contains a control character")
    _check_text(what, value)
    return value


def _check_text(what: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTask(what, f"{what} is not valid Unicode text (a lone surrogate)") from None


def _check_int(what: str, value: object, top: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTask(
            what, f"{what} must be an integer 0 … {top}, not {type(value).__name__} {value!r}"
        )
    if not 0 <= value <= top:
        raise InvalidTask(what, f"{what} {value} is out of range 0 … {top}")
    return value


def _check_extra(extra: object) -> list[tuple[str, str]]:
    if not isinstance(extra, Mapping):
        raise InvalidTask("extra", f"extra must be a mapping of names to text, not {extra!r}")
    total = 0
    out: list[tuple[str, str]] = []
    for name, value in extra.items():
        if not isinstance(name, str):
            raise InvalidTask("extra", f"extra field name {name!r} must be a string")
        try:
            _check_name("extra field name", name, MAX_EXTRA_NAME_LEN, _KIND)
        except InvalidTask as e:
            raise InvalidTask("extra", e.message) from None
        if name in KNOWN_FIELDS:
            raise InvalidTask(
                "extra",
                f"extra field name '{name}' is reserved: it is a contract field or written by "
                "redrive",
            )
        if not isinstance(value, str):
            raise InvalidTask(
                "extra", f"extra field '{name}' must be text, not {type(value).__name__}"
            )
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTask("extra", f"extra field '{name}' is not valid Unicode text") from None
        total += len(name) + len(raw)
        out.append((name, value))
    if len(out) > MAX_EXTRA_FIELDS:
        raise InvalidTask("extra", f"{len(out)} extra fields; the limit is {MAX_EXTRA_FIELDS}")
    if total > MAX_EXTRA_BYTES:
        raise InvalidTask(
            "extra",
            f"extra fields are {total} bytes (names and values); the limit is {MAX_EXTRA_BYTES}",
        )
    out.sort()
    return out


def encode(task: NewTask, max_payload_bytes: int, now_ms: int) -> Encoded:
    """Validates ``task`` and returns its lane entry's fields, enqueued at ``now_ms``: exactly
    what the Rust producer writes (``Task::to_fields`` of a first attempt). Raises
    :class:`InvalidTask`."""
    schema_version = _check_int("schema_version", task.schema_version, _U32)
    deadline = _check_int("deadline", task.deadline, _U64)
    tenant = _check_name("tenant", task.tenant, MAX_TENANT_LEN, _TENANT)
    kind = _check_name("kind", task.kind, MAX_KIND_LEN, _KIND)
    task_id = (
        secrets.token_hex(16)
        if task.task_id is None
        else _check_name("task_id", task.task_id, MAX_TASK_ID_LEN, _TASK_ID)
    )
    try:
        payload = dumps(task.payload, sort_keys=True)
        size = len(payload.encode("utf-8"))
    except (TypeError, ValueError) as e:
        raise InvalidTask("payload", f"payload cannot be encoded as JSON: {e}") from None
    if size > max_payload_bytes:
        raise InvalidTask(
            "payload",
            f"payload is {size} bytes; the limit is {max_payload_bytes} (limits.max_payload_bytes)",
        )
    prompt_version = _check_meta("prompt_version", task.prompt_version)
    trace_id = _check_meta("trace_id", task.trace_id)
    extra = _check_extra(task.extra)

    fields = {
        "task_id": task_id,
        "tenant": tenant,
        "kind": kind,
        "payload": payload,
        "attempt": "1",
        "enqueued_at": str(now_ms),
    }
    if schema_version is not None:
        fields["schema_version"] = str(schema_version)
    if prompt_version is not None:
        fields["prompt_version"] = prompt_version
    if trace_id is not None:
        fields["trace_id"] = trace_id
    if deadline is not None:
        fields["deadline"] = str(deadline)
    fields.update(extra)
    return Encoded(tenant=tenant, task_id=task_id, fields=fields)


def check_retention(retention_ms: object) -> int:
    """``retention_ms`` when it is a whole number of ms in the fleet's range for
    ``tasks.retention_ms`` (1 000 … 365 days); raises ``ValueError`` otherwise."""
    if isinstance(retention_ms, bool) or not isinstance(retention_ms, int):
        raise ValueError(
            f"retention_ms must be a whole number of ms, not {type(retention_ms).__name__} "
            f"{retention_ms!r} (the fleet's tasks.retention_ms)"
        )
    if not MIN_RETENTION_MS <= retention_ms <= MAX_RETENTION_MS:
        raise ValueError(
            f"retention_ms {retention_ms} is out of range {MIN_RETENTION_MS} … {MAX_RETENTION_MS} "
            "(1 s … 365 days, as the fleet's tasks.retention_ms)"
        )
    return retention_ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _Registered:
    """The tenants a producer registered lately (an ``SADD`` of them answered) and when
    (``time.monotonic()``), as the Rust producer keeps them: a tenant registered less than
    ``interval`` seconds ago is left out of the registry ``SADD``; when remembering more would
    pass ``most`` tenants, all are forgotten first. Safe to share between threads."""

    def __init__(self, interval: float = _REGISTERED_FOR_S, most: int = _REGISTERED_MAX) -> None:
        self.interval = interval
        self.most = most
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._at)

    def due(self, tenants: list[str]) -> list[str]:
        """Those of ``tenants`` (in their order) not registered within the interval."""
        now = time.monotonic()
        with self._lock:
            at = self._at
            return [t for t in tenants if now - at.get(t, -math.inf) >= self.interval]

    def mark(self, tenants: list[str]) -> None:
        """Remembers ``tenants`` as registered now (their ``SADD`` answered)."""
        if not tenants:
            return
        with self._lock:
            if len(self._at) + len(tenants) > self.most:
                self._at.clear()
            now = time.monotonic()
            for t in tenants:
                self._at[t] = now


class _Base:
    """Validation, encoding and the reading of replies shared by the sync and the async
    producer."""

    def __init__(
        self,
        key_prefix: str,
        max_payload_bytes: int,
        dedup: bool,
        records: bool,
        retention_ms: int,
    ) -> None:
        if max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        self.key_prefix = _check_prefix(key_prefix)
        self.max_payload_bytes = max_payload_bytes
        self.dedup = bool(dedup)
        self.records = bool(records)
        self.retention_ms = check_retention(retention_ms)
        self._registered = _Registered()

    def _one(self, task: NewTask) -> list[Encoded]:
        return [encode(task, self.max_payload_bytes, _now_ms())]

    def _batch(self, tasks: Iterable[NewTask | Mapping[str, Any]]) -> list[Encoded]:
        items = list(tasks)
        now = _now_ms()
        out = []
        for i, t in enumerate(items):
            try:
                task = t if isinstance(t, NewTask) else NewTask.from_dict(t)
                out.append(encode(task, self.max_payload_bytes, now))
            except InvalidTask as e:
                raise (e.at(i) if len(items) > 1 else e) from None
        return out

    def _chunks(self, encoded: list[Encoded]) -> Iterable[_Chunk]:
        for start in range(0, len(encoded), PIPELINE_CHUNK):
            yield _Chunk(self, start, encoded[start : start + PIPELINE_CHUNK])

    def _queue(self, pipe: Any, e: Encoded) -> None:
        """Adds the write of one task to ``pipe``: enqueue.lua (``EVALSHA``) with records on,
        a plain ``XADD`` without."""
        lane = lane_key(self.key_prefix, e.tenant)
        if not self.records:
            pipe.xadd(lane, e.fields)
            return
        flat = [x for pair in e.fields.items() for x in pair]
        pipe.evalsha(
            ENQUEUE_SCRIPT_SHA,
            4,
            lane,
            task_key(self.key_prefix, e.tenant, e.task_id),
            tasks_key(self.key_prefix, e.tenant),
            stats_prefix(self.key_prefix, e.tenant),
            "1" if self.dedup else "0",
            e.task_id,
            e.fields["kind"],
            e.fields["attempt"],
            str(STATS_KEEP_MS),
            str(self.retention_ms),
            *flat,
        )

    def _unannounced(self, tenants: str, err: Exception) -> None:
        """Logs a publish of new ``tenants`` that failed: the enqueue stands."""
        _log.warning(
            "new tenants %s enqueued but not announced on %s (%s); members find them by their "
            "periodic look",
            tenants,
            tenant_signals(self.key_prefix),
            err,
        )

    def _result(self, e: Encoded, reply: object) -> Enqueued:
        if not self.records:
            return Enqueued(e.task_id, _text(reply))
        # enqueue.lua: {1, entry} appended, {0, state, entry} a duplicate.
        if isinstance(reply, list) and len(reply) == 2 and reply[0] == 1:
            return Enqueued(e.task_id, _text(reply[1]))
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == 0:
            state, entry = _text(reply[1]), _text(reply[2])
            return Enqueued(e.task_id, entry, Duplicate(TaskState.parse(state), entry))
        raise ValueError(f"enqueue.lua answered {reply!r}, not {{1, entry}} or {{0, state, entry}}")


class _Chunk:
    """One pipelined round trip of up to :data:`PIPELINE_CHUNK` tasks, sent again for the
    tasks Redis answered ``NOSCRIPT`` (its script cache was flushed: a restart, SCRIPT FLUSH)
    once the script is loaded. A task answered NOSCRIPT ran nothing, so sending it again
    cannot write it twice."""

    #: How many times a chunk loads the script before giving up on NOSCRIPT.
    LOADS = 2

    def __init__(self, base: _Base, start: int, tasks: list[Encoded]) -> None:
        self.base = base
        self.start = start
        self.tasks = tasks
        self.tenants = sorted({e.tenant for e in tasks})
        #: The tenants this chunk's SADD registers: those the producer has not lately.
        self.register: list[str] = []
        self.registered = 0
        self.todo = list(range(len(tasks)))
        self.results: list[Enqueued | None] = [None] * len(tasks)
        self.first = True
        self.loads = 0
        self.failure: tuple[int | None, Exception] | None = None

    def fill(self, pipe: Any) -> None:
        """Adds this round's commands to ``pipe`` (on the first one, the SADD of the tenants
        the producer has not registered within the last second, if any)."""
        if self.first:
            self.register = self.base._registered.due(self.tenants)
            if self.register:
                pipe.sadd(tenants_key(self.base.key_prefix), *self.register)
        for i in self.todo:
            self.base._queue(pipe, self.tasks[i])

    def absorb(self, replies: list[Any]) -> bool:
        """Reads a round's replies; true when the script must be loaded and the tasks answered
        NOSCRIPT sent again."""
        if self.first and self.register:
            registered = replies[0]
            replies = replies[1:]
            if isinstance(registered, Exception):
                self._fail(None, registered)
            elif isinstance(registered, int):
                self.registered = registered
                self.base._registered.mark(self.register)
        self.first = False
        missing = []
        for i, reply in zip(self.todo, replies, strict=True):
            if isinstance(reply, NoScriptError) and self.loads < self.LOADS:
                missing.append(i)
            elif isinstance(reply, Exception):
                self._fail(i, reply)
            else:
                try:
                    self.results[i] = self.base._result(self.tasks[i], reply)
                except ValueError as err:
                    self._fail(i, err)
        self.todo = missing
        if missing:
            self.loads += 1
        return bool(missing)

    def _fail(self, i: int | None, err: Exception) -> None:
        if self.failure is None or (i is not None and (self.failure[0] or 0) > i):
            self.failure = (i, err)

    def announcement(self) -> str | None:
        """What to publish on the tenants channel once this chunk is written: its tenants,
        comma-separated, when its SADD added one (answered > 0); otherwise ``None``."""
        return ",".join(self.tenants) if self.registered > 0 else None

    def written(self) -> list[Enqueued]:
        """The tasks of this chunk written so far (and duplicates reported), in order."""
        return [r for r in self.results if r is not None]

    def finish(self, out: list[Enqueued]) -> None:
        """Adds this chunk's results to ``out``; raises :class:`EnqueueFailed` when Redis
        refused one of its commands."""
        out.extend(self.written())
        if self.failure is None:
            return
        i, err = self.failure
        if i is None:
            msg = f"Redis refused registering the tenants ({err})"
        else:
            at = self.start + i
            msg = f"Redis refused task #{at} ({err}); "
            if len(out) == at:
                msg += f"the first {at} tasks were written"
            else:
                msg += f"{len(out)} other tasks were written (listed in .written)"
        raise EnqueueFailed(msg, list(out)) from err


def _failed(e: Exception, written: list[Enqueued]) -> EnqueueFailed:
    msg = (
        f"Redis failed a round trip ({e}); the first {len(written)} tasks were written and "
        "the tasks of the failed round trip may or may not have been: enqueue them again (with "
        "dedup on, those written come back as duplicates)"
    )
    return EnqueueFailed(msg, list(written))


class Producer(_Base):
    """Publishes tasks through redis-py, and reads their records back.

    ``redis_client_or_url`` is a ``redis.Redis`` (shared, thread-safe) or a URL such as
    ``redis://127.0.0.1:6379/0``. ``key_prefix`` and ``max_payload_bytes`` must match the
    fleet's ``redis.key_prefix`` and ``limits.max_payload_bytes``.

    ``records`` and ``dedup`` follow the fleet's ``[tasks]`` settings: with ``records`` (the
    default; the fleet's ``tasks.enabled``) each task is enqueued with its record, atomically,
    and with ``dedup`` too (the default; ``tasks.dedup``) a task_id that already has a live
    record is reported as a duplicate instead of enqueued again. ``dedup=False`` is for
    producers that reuse ids on purpose: a task_id whose task is done, dead-lettered, expired,
    resolved or discarded is enqueued again (the new task's record replaces the old one), but
    one still in flight (queued, running, retry_scheduled, deferred, replayed) is reported as a
    duplicate all the same — one task_id has one record. ``records=False`` (fleets with
    ``tasks.enabled = false``) writes a plain ``XADD``: no record, no duplicate check.

    ``retention_ms`` (default 24 h; 1 000 ms … 365 days, else ``ValueError``) should match
    the fleet's ``tasks.retention_ms`` for the tenants and kinds this producer enqueues (with
    their ``[tasks.tenants.<t>]`` / ``[tasks.kinds.<k>]`` overrides): the record written at
    enqueue expires that long plus an eighth later, and the lane entry says when (its
    ``recorded`` field), so the member that finishes the task in time only appends it to the
    done log instead of writing the record again. A mismatch never loses a record early: a
    member whose retention that expiry does not cover writes the record itself.

    ``group`` is the fleet's consumer group (``fleet.group``), which :meth:`get_task` and
    :meth:`wait` pass to the fleet's record reader (a queued task whose entry is pending there
    is shown running).
    """

    def __init__(
        self,
        redis_client_or_url: redis.Redis | str,
        key_prefix: str = "redrive",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        *,
        dedup: bool = True,
        records: bool = True,
        group: str = DEFAULT_GROUP,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        super().__init__(key_prefix, max_payload_bytes, dedup, records, retention_ms)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.Redis = redis.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url
        self.reader = TaskReader(self.redis, self.key_prefix, group)

    def enqueue(
        self,
        tenant: str,
        kind: str,
        payload: Any,
        *,
        task_id: str | None = None,
        schema_version: int | None = None,
        prompt_version: str | None = None,
        trace_id: str | None = None,
        deadline: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Enqueued:
        """Validates and publishes one task (raises :class:`InvalidTask`, nothing written).

        Returns where it landed. When its task_id already has a live record (records on; with
        dedup off only a task still in flight counts) nothing is written and the result's
        ``duplicate`` holds the live task's state and entry."""
        encoded = self._one(
            NewTask(
                tenant,
                kind,
                payload,
                task_id,
                schema_version,
                prompt_version,
                trace_id,
                deadline,
                {} if extra is None else extra,
            )
        )
        return self._write(encoded)[0]

    def enqueue_many(self, tasks: Iterable[NewTask | Mapping[str, Any]]) -> list[Enqueued]:
        """Validates every task (an invalid one raises :class:`InvalidTask` naming its
        position; nothing is written), then publishes them in pipelined round trips of up to
        1000 tasks. Duplicates are reported in the results (a task_id twice in one batch: the
        second is a duplicate of the first). A Redis failure part-way raises
        :class:`EnqueueFailed` with the tasks written before it."""
        return self._write(self._batch(tasks))

    def get_task(self, tenant: str, task_id: str, *, group: str | None = None) -> TaskRecord | None:
        """The task's record, or ``None`` (see :meth:`TaskReader.get_task`)."""
        return self.reader.get_task(tenant, task_id, group=group)

    def wait(
        self,
        tenant: str,
        task_id: str,
        timeout: float,
        *,
        raise_on_failure: bool = True,
        group: str | None = None,
    ) -> TaskRecord:
        """Waits for the task to finish (see :meth:`TaskReader.wait`)."""
        return self.reader.wait(
            tenant, task_id, timeout, raise_on_failure=raise_on_failure, group=group
        )

    def close(self) -> None:
        """Closes the connections ``wait`` opened (the client given stays open)."""
        self.reader.close()

    def _write(self, encoded: list[Encoded]) -> list[Enqueued]:
        out: list[Enqueued] = []
        for chunk in self._chunks(encoded):
            again = True
            while again:
                pipe = self.redis.pipeline(transaction=False)
                chunk.fill(pipe)
                try:
                    again = chunk.absorb(pipe.execute(raise_on_error=False))
                    if again:
                        self.redis.script_load(ENQUEUE_SCRIPT)
                except redis.RedisError as err:
                    raise _failed(err, out + chunk.written()) from err
            chunk.finish(out)
            self._announce(chunk)
        return out

    def _announce(self, chunk: _Chunk) -> None:
        """Publishes the chunk's tenants when its registration added one (after its tasks
        landed); a failure is logged, not raised."""
        tenants = chunk.announcement()
        if tenants is None:
            return
        try:
            self.redis.publish(tenant_signals(self.key_prefix), tenants)
        except redis.RedisError as err:
            self._unannounced(tenants, err)


class AsyncProducer(_Base):
    """:class:`Producer` on ``redis.asyncio``: the same API and options, awaited."""

    def __init__(
        self,
        redis_client_or_url: redis.asyncio.Redis | str,
        key_prefix: str = "redrive",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        *,
        dedup: bool = True,
        records: bool = True,
        group: str = DEFAULT_GROUP,
        retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        super().__init__(key_prefix, max_payload_bytes, dedup, records, retention_ms)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url
        self.reader = AsyncTaskReader(self.redis, self.key_prefix, group)

    async def enqueue(
        self,
        tenant: str,
        kind: str,
        payload: Any,
        *,
        task_id: str | None = None,
        schema_version: int | None = None,
        prompt_version: str | None = None,
        trace_id: str | None = None,
        deadline: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Enqueued:
        """Validates and publishes one task (raises :class:`InvalidTask`, nothing written).

        Returns where it landed. When its task_id already has a live record (records on; with
        dedup off only a task still in flight counts) nothing is written and the result's
        ``duplicate`` holds the live task's state and entry."""
        encoded = self._one(
            NewTask(
                tenant,
                kind,
                payload,
                task_id,
                schema_version,
                prompt_version,
                trace_id,
                deadline,
                {} if extra is None else extra,
            )
        )
        return (await self._write(encoded))[0]

    async def enqueue_many(self, tasks: Iterable[NewTask | Mapping[str, Any]]) -> list[Enqueued]:
        """As :meth:`Producer.enqueue_many`."""
        return await self._write(self._batch(tasks))

    async def get_task(
        self, tenant: str, task_id: str, *, group: str | None = None
    ) -> TaskRecord | None:
        """The task's record, or ``None`` (see :meth:`TaskReader.get_task`)."""
        return await self.reader.get_task(tenant, task_id, group=group)

    async def wait(
        self,
        tenant: str,
        task_id: str,
        timeout: float,
        *,
        raise_on_failure: bool = True,
        group: str | None = None,
    ) -> TaskRecord:
        """Waits for the task to finish (see :meth:`TaskReader.wait`)."""
        return await self.reader.wait(
            tenant, task_id, timeout, raise_on_failure=raise_on_failure, group=group
        )

    async def aclose(self) -> None:
        """Closes the connections ``wait`` opened (the client given stays open)."""
        await self.reader.aclose()

    async def _write(self, encoded: list[Encoded]) -> list[Enqueued]:
        out: list[Enqueued] = []
        for chunk in self._chunks(encoded):
            again = True
            while again:
                pipe = self.redis.pipeline(transaction=False)
                chunk.fill(pipe)
                try:
                    again = chunk.absorb(await pipe.execute(raise_on_error=False))
                    if again:
                        await self.redis.script_load(ENQUEUE_SCRIPT)
                except redis.RedisError as err:
                    raise _failed(err, out + chunk.written()) from err
            chunk.finish(out)
            await self._announce(chunk)
        return out

    async def _announce(self, chunk: _Chunk) -> None:
        """As :meth:`Producer._announce`, awaited."""
        tenants = chunk.announcement()
        if tenants is None:
            return
        try:
            await self.redis.publish(tenant_signals(self.key_prefix), tenants)
        except redis.RedisError as err:
            self._unannounced(tenants, err)
