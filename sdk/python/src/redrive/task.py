"""The request an agent receives for one attempt of a task (PROTOCOL.md, "The request"), as
typed, read-only values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._wire import PROTOCOL_VERSION
from .errors import InvalidRequest


@dataclass(frozen=True)
class Step:
    """A step an earlier attempt completed: its name, its stored output (any JSON), whether it
    acted on the world, the attempt that completed it and when (ms since the epoch)."""

    name: str
    output: Any
    side_effect: bool = False
    attempt: int = 0
    at_ms: int = 0


@dataclass(frozen=True)
class AttemptRecord:
    """An earlier failed attempt: its number, failure class (``cls``; ``class`` on the wire),
    error text, when it ended, how long it ran and which fleet member ran it."""

    attempt: int
    cls: str
    error: str
    at_ms: int
    duration_ms: int
    member: str


@dataclass(frozen=True)
class Task:
    """One attempt of a task, as the fleet sent it. Every key of the request is here."""

    #: The protocol version of the request (1).
    protocol: int
    #: The task's idempotency key, the same across retries and replays.
    task_id: str
    #: The tenant the task belongs to.
    tenant: str
    #: The agent or workflow name that routed the task to its handler.
    kind: str
    #: This attempt's number (1 for the first).
    attempt: int
    #: The attempt after which a transient failure is dead-lettered.
    max_attempts: int
    #: The task's input, as the producer wrote it (any JSON value).
    payload: Any
    #: Steps completed by earlier attempts, in the order they completed.
    steps: tuple[Step, ...] = ()
    #: Earlier failed attempts, oldest first.
    history: tuple[AttemptRecord, ...] = ()
    #: Past it (ms since the epoch) the task is not worth running.
    deadline: int | None = None
    #: The producer's correlation id.
    trace_id: str | None = None
    #: The payload's schema version.
    schema_version: int | None = None
    #: The prompt the agent should use.
    prompt_version: str | None = None
    #: When this attempt was enqueued (ms since the epoch).
    enqueued_at: int = 0
    #: When the first attempt was enqueued.
    first_enqueued_at: int = 0
    #: The dead-letter id this task was replayed from.
    replay_of: str | None = None
    #: The producer's own fields.
    extra: Mapping[str, str] = field(default_factory=dict)

    def step(self, name: str) -> Step | None:
        """The completed step ``name`` of an earlier attempt, if there is one."""
        for s in self.steps:
            if s.name == name:
                return s
        return None

    @classmethod
    def from_json(cls, body: bytes | str) -> Task:
        """Parses a request body; raises :class:`InvalidRequest` saying what is wrong."""
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"the request body is not JSON: {e}") from None
        return cls.from_request(obj)

    @classmethod
    def from_request(cls, obj: object) -> Task:
        """Reads a parsed request object; raises :class:`InvalidRequest` saying what is
        wrong. The identity keys (``task_id``, ``tenant``, ``kind``, ``attempt``,
        ``payload``) are required; the others default as for a first attempt."""
        if not isinstance(obj, Mapping):
            raise InvalidRequest("the request is not a JSON object")
        protocol = _int(obj, "protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            raise InvalidRequest(
                f"protocol version {protocol} is not supported; this SDK speaks "
                f"{PROTOCOL_VERSION}: upgrade redrive-sdk"
            )
        if "payload" not in obj:
            raise InvalidRequest("the request has no 'payload'")
        attempt = _int(obj, "attempt", None)
        enqueued_at = _int(obj, "enqueued_at", 0)
        return cls(
            protocol=protocol,
            task_id=_str(obj, "task_id"),
            tenant=_str(obj, "tenant"),
            kind=_str(obj, "kind"),
            attempt=attempt,
            max_attempts=_int(obj, "max_attempts", attempt),
            payload=obj["payload"],
            steps=tuple(_step(s) for s in _list(obj, "steps")),
            history=tuple(_record(h) for h in _list(obj, "history")),
            deadline=_opt_int(obj, "deadline"),
            trace_id=_opt_str(obj, "trace_id"),
            schema_version=_opt_int(obj, "schema_version"),
            prompt_version=_opt_str(obj, "prompt_version"),
            enqueued_at=enqueued_at,
            first_enqueued_at=_int(obj, "first_enqueued_at", enqueued_at),
            replay_of=_opt_str(obj, "replay_of"),
            extra=_extra(obj),
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(obj: Mapping[str, Any], key: str, default: int | None) -> int:
    v = obj.get(key)
    if type(v) is int and v >= 0:  # the common case first: every request reads several
        return v
    if v is None:
        if default is None:
            raise InvalidRequest(f"the request has no '{key}'")
        return default
    if not _is_int(v) or v < 0:
        raise InvalidRequest(f"'{key}' is {v!r}, not a non-negative integer")
    return int(v)


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, 0)


def _str(obj: Mapping[str, Any], key: str) -> str:
    v = obj.get(key)
    if type(v) is not str or not v:
        raise InvalidRequest(f"'{key}' is {v!r}, not a non-empty string")
    return v


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise InvalidRequest(f"'{key}' is {v!r}, not a string or null")
    return v


def _list(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    v = obj.get(key)
    if not v:
        if v is None or v == []:
            return []
        raise InvalidRequest(f"'{key}' is not an array of objects")
    if not isinstance(v, list) or not all(isinstance(x, Mapping) for x in v):
        raise InvalidRequest(f"'{key}' is not an array of objects")
    return v


def _step(s: Mapping[str, Any]) -> Step:
    name = s.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"a step has no string 'name': {s!r:.200}")
    return Step(
        name=name,
        output=s.get("output"),
        side_effect=s.get("side_effect") is True,
        attempt=_int(s, "attempt", 0),
        at_ms=_int(s, "at_ms", 0),
    )


def _record(h: Mapping[str, Any]) -> AttemptRecord:
    def text(key: str) -> str:
        v = h.get(key)
        return v if isinstance(v, str) else ""

    return AttemptRecord(
        attempt=_int(h, "attempt", 0),
        cls=text("class"),
        error=text("error"),
        at_ms=_int(h, "at_ms", 0),
        duration_ms=_int(h, "duration_ms", 0),
        member=text("member"),
    )


def _extra(obj: Mapping[str, Any]) -> dict[str, str]:
    v = obj.get("extra")
    if not v:
        if v is None or v == {}:
            return {}
        raise InvalidRequest("'extra' is not an object of strings")
    if not isinstance(v, Mapping) or not all(isinstance(x, str) for x in v.values()):
        raise InvalidRequest("'extra' is not an object of strings")
    return dict(v)
