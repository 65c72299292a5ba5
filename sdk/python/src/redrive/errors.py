"""The SDK's exceptions.

Three of them are raised by handlers to say how an attempt ended (PROTOCOL.md, "The reply"):

- :class:`Retry`: a transient failure; the fleet retries under its policy, not before
  ``retry_after_ms`` when given.
- :class:`Fail`: a failure of a named class (permanent ones are dead-lettered at once).
- :class:`PartialExecution`: the attempt may have acted on the world and cannot say how far it
  got; the task is dead-lettered for manual review, never retried blindly.

Raised inside ``ctx.step(...)``, :class:`Retry` and :class:`Fail` also say that the step did
**not** perform its side effect (the SDK sends ``step_failed``). Any other exception from a
side-effecting step leaves the step open, which ends the attempt as ``partial_execution``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._wire import CLASSES, TRANSIENT_CLASSES

if TYPE_CHECKING:
    from .records import TaskRecord


class RedriveError(Exception):
    """Base class of every exception this SDK raises on its own."""


class InvalidTask(RedriveError, ValueError):
    """A task the producer refuses (CONTRACT.md): nothing was written.

    ``field`` names the offending field (``tenant``, ``payload``, ``extra``, or an unknown
    field's name); ``index`` is the task's position in an ``enqueue_many`` batch (``None`` for
    a single task).
    """

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        self.field = field
        self.message = message
        self.index = index
        super().__init__(message if index is None else f"task #{index}: {message}")

    def at(self, index: int) -> InvalidTask:
        """The same refusal, naming the task's position in a batch."""
        return InvalidTask(self.field, self.message, index)


class EnqueueFailed(RedriveError):
    """Redis refused part of a batch. ``written`` lists the tasks written before the failing
    round trip (the first ones of the batch); the cause is chained."""

    def __init__(self, message: str, written: list[object]) -> None:
        self.written = written
        super().__init__(message)


class InvalidRequest(RedriveError, ValueError):
    """A request body that is not a protocol request (the transports answer it with 400 /
    ``invalid_input``)."""


class AttemptClosed(RedriveError):
    """The fleet's side of the attempt is gone (its timeout, a crash): no new step may start,
    since nothing could record it and a retry would run it again. Raised by ``ctx.step`` before
    the step's function runs."""


class StepRefused(RedriveError):
    """A step over the protocol's limits (name, output size, count, total output). It is
    refused before anything is sent; uncaught, the attempt fails as ``schema_mismatch``."""


class Retry(RedriveError):
    """A transient failure: the fleet retries the task, not before ``retry_after_ms``.

    ``cls`` must be a transient class (``rate_limited``, ``timeout``, ``upstream_unavailable``,
    ``llm_error``, ``agent_crashed``, ``unknown``); a permanent one raises ``ValueError``: use
    :class:`Fail` for those.
    """

    def __init__(
        self,
        error: str,
        retry_after_ms: int | None = None,
        cls: str = "upstream_unavailable",
    ) -> None:
        if cls not in TRANSIENT_CLASSES:
            kind = "a permanent class: raise Fail" if cls in CLASSES else "not a failure class"
            raise ValueError(f"Retry(cls={cls!r}): {kind}")
        if retry_after_ms is not None and (
            isinstance(retry_after_ms, bool)
            or not isinstance(retry_after_ms, int)
            or retry_after_ms < 0
        ):
            raise ValueError(f"Retry(retry_after_ms={retry_after_ms!r}): not a count of ms")
        self.error = error
        self.retry_after_ms = retry_after_ms
        self.cls = cls
        super().__init__(error)


class Fail(RedriveError):
    """A failure of class ``cls`` (any failure class; a permanent one is dead-lettered at
    once). An unknown class name raises ``ValueError``."""

    def __init__(self, cls: str, error: str) -> None:
        if cls not in CLASSES:
            raise ValueError(f"Fail(cls={cls!r}): not a failure class")
        self.cls = cls
        self.error = error
        super().__init__(f"{cls}: {error}")


class PartialExecution(RedriveError):
    """The attempt acted on the world and cannot finish or undo it: the task is dead-lettered
    as ``partial_execution`` for manual review."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(error)


class TaskFailed(RedriveError):
    """``wait`` found the task finished without success: dead-lettered (``dead_lettered``, or
    ``expired`` when its deadline passed) or its dead letter resolved or discarded by an
    operator.

    ``record`` is the task's record; ``state``, ``cls`` (the last failure class), ``error``
    (its text, at most 1 KiB) and ``dlq`` (the dead-letter id, while it is dead) are copied from
    it.
    """

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.state = None if record.state is None else record.state.value
        self.cls = record.cls
        self.error = record.error
        self.dlq = record.dlq
        what = f"task {record.tenant}/{record.task_id} is {self.state}"
        if self.cls:
            what += f" ({self.cls}"
            what += f": {self.error})" if self.error else ")"
        if self.dlq:
            what += f", dead letter {self.dlq}"
        super().__init__(what)


class WaitTimeout(RedriveError, TimeoutError):
    """``wait`` reached its timeout before the task finished (a ``TimeoutError``).

    ``state`` is the task's state at the last look: a state's wire name, ``"no record"`` when
    it has none (never enqueued with records on, expired, or lost with a Redis that restarted
    without persistence), or ``"unknown"`` when Redis could not be reached at all. ``record``
    is the record read last (``None`` without one) and ``error`` the last Redis connection
    error when Redis was unreachable at the end.
    """

    def __init__(
        self,
        tenant: str,
        task_id: str,
        timeout: float,
        record: TaskRecord | None,
        *,
        error: Exception | None = None,
        looked: bool = True,
    ) -> None:
        self.tenant = tenant
        self.task_id = task_id
        self.timeout = timeout
        self.record = record
        self.error = error
        if record is not None:
            raw = record.fields.get("state", "unknown")
            self.state = raw if record.state is None else record.state.value
            where = f"it is {self.state}"
        elif looked:
            self.state = "no record"
            where = "no record"
        else:
            self.state = "unknown"
            where = "its record could not be read"
        msg = f"task {tenant}/{task_id} did not finish within {timeout:g} s: {where}"
        if error is not None:
            msg += f" (Redis unreachable at the end: {error})"
        super().__init__(msg)
