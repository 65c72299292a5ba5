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

from ._wire import CLASSES, TRANSIENT_CLASSES


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
