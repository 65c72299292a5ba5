"""Publishing tasks: :class:`Producer` (redis-py) and :class:`AsyncProducer` (redis.asyncio).

Both validate a task as CONTRACT.md says (and as the Rust producer and ``redrive enqueue`` do),
then append it to its tenant's lane with the same fields in the same order as the Rust
producer writes a fresh task:

``task_id, tenant, kind, payload, attempt (1), enqueued_at (ms), [schema_version],
[prompt_version], [trace_id], [deadline]``, then the producer's own fields ordered by name.

``payload`` is compact JSON text with object keys sorted (serde_json's order), so Python and
Rust producers write byte-identical entries for the same integers and strings. The tenant is
registered in ``{prefix}:tenants`` in the same round trip. A batch is validated whole before
anything is written.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from ._wire import dumps, has_control
from .errors import EnqueueFailed, InvalidTask

#: Longest tenant name, in bytes.
MAX_TENANT_LEN = 64
#: Longest kind, in bytes.
MAX_KIND_LEN = 64
#: Longest task id, in bytes.
MAX_TASK_ID_LEN = 128
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

_BASE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_TENANT = _BASE | {"."}
_KIND = _BASE | {".", ":", "/"}
_TASK_ID = _BASE | {".", ":", "/", "@", "+", "="}
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
class Enqueued:
    """Where a task landed: its id (given or generated) and its entry id in the lane."""

    task_id: str
    entry_id: str


@dataclass(frozen=True)
class Encoded:
    """A validated task as its lane entry: the tenant and the fields in write order."""

    tenant: str
    task_id: str
    fields: dict[str, str]


def _check_name(what: str, value: object, limit: int, allowed: frozenset[str]) -> str:
    if not isinstance(value, str):
        raise InvalidTask(what, f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidTask(what, f"{what} must not be empty")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidTask(
            what, f"{what} '{value[:16]}…' is {size} bytes long; the limit is {limit}"
        )
    for ch in value:
        if ch not in allowed:
            extra = "".join(f", '{c}'" for c in sorted(allowed - _BASE))
            raise InvalidTask(
                what,
                f"{what} {value!r} contains {ch!r}; allowed are ASCII letters, digits, "
                f"'_', '-'{extra}",
            )
    return value


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


def lane_key(prefix: str, tenant: str) -> str:
    """The tenant's lane: ``{prefix}:{<tenant>}:lane`` (the braces are a Redis Cluster hash
    tag shared by every key of the tenant)."""
    return f"{prefix}:{{{tenant}}}:lane"


def tenants_key(prefix: str) -> str:
    """The registry of tenants the fleet discovers lanes from."""
    return f"{prefix}:tenants"


def _check_prefix(prefix: str) -> str:
    allowed = _BASE | {".", ":"}
    if not prefix or len(prefix) > 64 or any(c not in allowed for c in prefix):
        raise ValueError(
            f"key_prefix {prefix!r} is invalid: use 1 to 64 ASCII letters, digits, '_', '-', "
            "'.', ':' (the fleet's redis.key_prefix)"
        )
    return prefix


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Base:
    """Validation and encoding shared by the sync and the async producer."""

    def __init__(self, key_prefix: str, max_payload_bytes: int) -> None:
        if max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        self.key_prefix = _check_prefix(key_prefix)
        self.max_payload_bytes = max_payload_bytes

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

    def _chunks(self, encoded: list[Encoded]) -> Iterable[tuple[list[str], list[Encoded]]]:
        for start in range(0, len(encoded), PIPELINE_CHUNK):
            chunk = encoded[start : start + PIPELINE_CHUNK]
            yield sorted({e.tenant for e in chunk}), chunk


def _entry_id(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _failed(e: Exception, written: list[Enqueued]) -> EnqueueFailed:
    if written:
        msg = f"Redis refused a round trip ({e}); the first {len(written)} tasks were written"
    else:
        msg = f"Redis refused the enqueue ({e}); nothing of this round trip was written"
    return EnqueueFailed(msg, list(written))


class Producer(_Base):
    """Publishes tasks through redis-py.

    ``redis_client_or_url`` is a ``redis.Redis`` (shared, thread-safe) or a URL such as
    ``redis://127.0.0.1:6379/0``. ``key_prefix`` and ``max_payload_bytes`` must match the
    fleet's ``redis.key_prefix`` and ``limits.max_payload_bytes``.
    """

    def __init__(
        self,
        redis_client_or_url: redis.Redis | str,
        key_prefix: str = "redrive",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        super().__init__(key_prefix, max_payload_bytes)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.Redis = redis.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url

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
        """Validates and publishes one task (raises :class:`InvalidTask`, nothing written)."""
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
        1000 tasks. A Redis failure part-way raises :class:`EnqueueFailed` with the tasks
        written before it."""
        return self._write(self._batch(tasks))

    def _write(self, encoded: list[Encoded]) -> list[Enqueued]:
        out: list[Enqueued] = []
        for tenants, chunk in self._chunks(encoded):
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(tenants_key(self.key_prefix), *tenants)
            for e in chunk:
                pipe.xadd(lane_key(self.key_prefix, e.tenant), e.fields)  # type: ignore[arg-type]
            try:
                replies = pipe.execute()
            except Exception as err:
                raise _failed(err, out) from err
            out.extend(
                Enqueued(e.task_id, _entry_id(r)) for e, r in zip(chunk, replies[1:], strict=True)
            )
        return out


class AsyncProducer(_Base):
    """Publishes tasks through ``redis.asyncio``; the same API as :class:`Producer`, awaited."""

    def __init__(
        self,
        redis_client_or_url: redis.asyncio.Redis | str,
        key_prefix: str = "redrive",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        super().__init__(key_prefix, max_payload_bytes)
        if isinstance(redis_client_or_url, str):
            self.redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(redis_client_or_url)
        else:
            self.redis = redis_client_or_url

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
        """Validates and publishes one task (raises :class:`InvalidTask`, nothing written)."""
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

    async def _write(self, encoded: list[Encoded]) -> list[Enqueued]:
        out: list[Enqueued] = []
        for tenants, chunk in self._chunks(encoded):
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(tenants_key(self.key_prefix), *tenants)
            for e in chunk:
                pipe.xadd(lane_key(self.key_prefix, e.tenant), e.fields)  # type: ignore[arg-type]
            try:
                replies = await pipe.execute()
            except Exception as err:
                raise _failed(err, out) from err
            out.extend(
                Enqueued(e.task_id, _entry_id(r)) for e, r in zip(chunk, replies[1:], strict=True)
            )
        return out
