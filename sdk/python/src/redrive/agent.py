"""The agent side: handlers registered per kind, the step API, and how a handler's result or
exception becomes the protocol's reply (PROTOCOL.md, "The reply" and "Steps and checkpoints").

The transports (:mod:`redrive.http`, :mod:`redrive.asgi`, :mod:`redrive.stdio`) parse a
request, call :meth:`Agent.run` / :meth:`Agent.arun` with an ``emit`` callback that writes one
event line, then write the final reply.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

from ._wire import bound, dumps, has_control
from .errors import Fail, InvalidRequest, PartialExecution, Retry, StepRefused
from .task import Task

if TYPE_CHECKING:
    from .asgi import ASGIApp

T = TypeVar("T")

#: Longest step name, in characters.
MAX_STEP_NAME_CHARS = 128
#: Largest output of one step, in bytes of its JSON text.
MAX_STEP_OUTPUT_BYTES = 64 * 1024
#: Most steps a task records.
MAX_STEPS = 64
#: Largest sum of a task's step outputs, in bytes of their JSON text.
MAX_STEPS_OUTPUT_BYTES = 512 * 1024
#: The fleet's default reply limit (``max_reply_bytes``): one JSON reply or one NDJSON line.
DEFAULT_MAX_REPLY_BYTES = 1024 * 1024

#: Writes one event line (a JSON object); must be safe to call from any thread.
Emit = Callable[[dict[str, Any]], None]
#: A handler: ``fn(task, ctx) -> output``, a plain or an ``async`` function.
Handler = Callable[[Task, "Context"], Any]

_log = logging.getLogger("redrive.agent")
_RESERVED_PROGRESS_KEYS = frozenset({"event", "status", "id"})
_ROUTE_CACHE_MAX = 4096


def _discard(_event: dict[str, Any]) -> None:
    """An ``emit`` that drops events (a run without a transport)."""


def _json_bytes(text: str) -> int:
    """The UTF-8 size of a JSON text (an ASCII-only text, the common case, without a copy)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _not_unicode(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (from a ``\\ud800`` escape in a request, say),
    which UTF-8 cannot carry: such a line could not be sent."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_step_name(name: object) -> str:
    """Checks a step name: 1-128 characters, no control characters. Raises
    :class:`StepRefused`."""
    if not isinstance(name, str):
        raise StepRefused(f"a step name must be a string, not {type(name).__name__}")
    if not name:
        raise StepRefused("a step name must not be empty")
    if len(name) > MAX_STEP_NAME_CHARS:
        raise StepRefused(
            f"step name '{name[:32]}…' is longer than {MAX_STEP_NAME_CHARS} characters"
        )
    if has_control(name):
        raise StepRefused(f"step name {name!r} contains a control character")
    return name


class Context:
    """What a handler uses while it runs: :meth:`step` checkpoints and :meth:`progress`.

    A step that an earlier attempt completed is not run again: its stored output is returned
    (memoisation), so an expensive model call or a side effect happens once per task.
    """

    def __init__(
        self,
        task: Task,
        emit: Emit | None = None,
        max_line_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        #: The attempt's request.
        self.task = task
        self._emit = emit or _discard
        self._max_line_bytes = max_line_bytes
        self._lock = threading.Lock()
        self._done: dict[str, Any] = {}
        self._bytes = 0
        for s in task.steps:
            if s.name not in self._done:
                self._bytes += _json_bytes(dumps(s.output))
            self._done[s.name] = s.output

    def completed(self, name: str) -> bool:
        """Whether step ``name`` is completed (by an earlier attempt or this one)."""
        with self._lock:
            return name in self._done

    def step(self, name: str, fn: Callable[[], T], side_effect: bool = False) -> T:
        """Runs ``fn()`` as the checkpointed step ``name`` and returns its result; when the
        step is already completed, returns its stored output without running ``fn``.

        ``side_effect=True`` says the step acts on the world (sends, charges, writes): should
        the attempt end between its start and its completion, the task is dead-lettered as
        ``partial_execution`` instead of being retried. ``fn`` raising :class:`Retry` or
        :class:`Fail` says the effect did **not** happen (``step_failed`` is sent) and the
        exception propagates. The output must be JSON (at most 64 KiB of it; 512 KiB for all
        the task's steps, 64 steps): over a limit :class:`StepRefused` is raised and nothing is
        recorded. A stored output comes back as decoded JSON (a tuple as a list, and so on).
        For an ``async`` step use :meth:`astep`.
        """
        hit, stored = self._begin(name, side_effect)
        if hit:
            return stored  # type: ignore[no-any-return]
        try:
            result = fn()
        except (Retry, Fail) as e:
            self._failed(name, e)
            raise
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"step '{name}': fn returned an awaitable; use `await ctx.astep(...)` for async "
                "steps"
            )
        self._finish(name, result)
        return result

    async def astep(
        self, name: str, fn: Callable[[], Awaitable[T]], side_effect: bool = False
    ) -> T:
        """:meth:`step` for an ``async`` function: ``await ctx.astep("draft", lambda:
        llm.complete(prompt))``."""
        hit, stored = self._begin(name, side_effect)
        if hit:
            return stored  # type: ignore[no-any-return]
        try:
            result = await fn()
        except (Retry, Fail) as e:
            self._failed(name, e)
            raise
        self._finish(name, result)
        return result

    def progress(self, **fields: Any) -> None:
        """Reports progress (any JSON fields, e.g. ``ctx.progress(message="sent",
        percent=100)``); the fleet keeps the latest as the attempt's partial output. The keys
        ``event``, ``status`` and ``id`` are reserved by the protocol."""
        clash = _RESERVED_PROGRESS_KEYS.intersection(fields)
        if clash:
            raise ValueError(f"progress keys {sorted(clash)} are reserved by the protocol")
        event = {"event": "progress", **fields}
        try:
            text = dumps(event)
        except (TypeError, ValueError) as e:
            raise ValueError(f"progress is not JSON: {e}") from None
        if _not_unicode(text):
            raise ValueError("progress is not valid Unicode text (a lone surrogate)")
        size = _json_bytes(text)
        if size > self._max_line_bytes:
            raise ValueError(
                f"progress is {size} bytes of JSON; the line limit is {self._max_line_bytes}"
            )
        self._emit(event)

    def _begin(self, name: str, side_effect: bool) -> tuple[bool, Any]:
        validate_step_name(name)
        with self._lock:
            if name in self._done:
                return True, self._done[name]
            if len(self._done) + 1 > MAX_STEPS:
                raise StepRefused(
                    f"step '{name}' would be step {len(self._done) + 1} of the task; the limit "
                    f"is {MAX_STEPS}"
                )
        self._emit({"event": "step_started", "name": name, "side_effect": bool(side_effect)})
        return False, None

    def _finish(self, name: str, output: object) -> None:
        try:
            text = dumps(output)
        except (TypeError, ValueError) as e:
            raise StepRefused(f"step '{name}' output is not JSON: {e}") from None
        if _not_unicode(text):
            raise StepRefused(f"step '{name}' output is not valid Unicode text (a lone surrogate)")
        size = _json_bytes(text)
        if size > MAX_STEP_OUTPUT_BYTES:
            raise StepRefused(
                f"step '{name}' output is {size} bytes of JSON; the limit is "
                f"{MAX_STEP_OUTPUT_BYTES}"
            )
        stored = json.loads(text)
        with self._lock:
            if len(self._done) + (name not in self._done) > MAX_STEPS:
                raise StepRefused(f"step '{name}' would be over {MAX_STEPS} steps")
            if self._bytes + size > MAX_STEPS_OUTPUT_BYTES:
                raise StepRefused(
                    f"step '{name}' would bring the task's step outputs to "
                    f"{self._bytes + size} bytes; the limit is {MAX_STEPS_OUTPUT_BYTES}"
                )
            self._bytes += size
            self._done[name] = stored
        self._emit({"event": "step_done", "name": name, "output": stored})

    def _failed(self, name: str, e: Retry | Fail) -> None:
        self._emit({"event": "step_failed", "name": name, "error": bound(e.error)})


def _glob(pattern: str) -> re.Pattern[str]:
    """A kind pattern as a regex: ``*`` any run of characters, ``?`` one, the rest literal."""
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


async def _awaited(a: Awaitable[T]) -> T:
    return await a


class Agent:
    """A set of handlers routed by kind, run by one of the transports.

    >>> agent = Agent()
    >>> @agent.handler("triage_*")
    ... def triage(task, ctx):
    ...     return {"ok": True}
    """

    def __init__(self, *, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        #: The largest reply (and event line) this agent sends; the fleet's ``max_reply_bytes``.
        self.max_reply_bytes = max_reply_bytes
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._cache: dict[str, tuple[Handler, bool] | None] = {}
        self._cache_lock = threading.Lock()

    def handler(self, *kinds: str) -> Callable[[Handler], Handler]:
        """Registers the decorated function for ``kinds`` (exact names and globs: ``*`` any
        run of characters, ``?`` one). Among all registrations the first match wins."""

        def register(fn: Handler) -> Handler:
            self.add_handler(kinds, fn)
            return fn

        return register

    def add_handler(self, kinds: Iterable[str], fn: Handler) -> None:
        """Registers ``fn`` for ``kinds`` (see :meth:`handler`)."""
        kinds = list(kinds)
        if not kinds:
            raise ValueError("a handler needs at least one kind or glob")
        for k in kinds:
            if not isinstance(k, str) or not k:
                raise ValueError(f"kind pattern {k!r} must be a non-empty string")
        is_async = _is_async(fn)
        with self._cache_lock:
            self._routes.extend((k, _glob(k), fn, is_async) for k in kinds)
            self._cache.clear()

    @property
    def kinds(self) -> list[str]:
        """The registered kind patterns, in routing order."""
        return [k for k, _, _, _ in self._routes]

    def route(self, kind: str) -> Handler | None:
        """The handler for ``kind`` (the first registered pattern that matches), or None."""
        found = self._route(kind)
        return None if found is None else found[0]

    def _route(self, kind: str) -> tuple[Handler, bool] | None:
        with self._cache_lock:
            if kind in self._cache:
                return self._cache[kind]
            found = next(((fn, a) for _, rx, fn, a in self._routes if rx.fullmatch(kind)), None)
            if len(self._cache) >= _ROUTE_CACHE_MAX:
                self._cache.clear()
            self._cache[kind] = found
            return found

    # Running one attempt -------------------------------------------------------------------

    def run(
        self, request: Task | Mapping[str, Any] | bytes | str, emit: Emit | None = None
    ) -> dict[str, Any]:
        """Runs one attempt in this thread and returns the final reply object; events go to
        ``emit``. An ``async`` handler runs in a fresh event loop (from async code, use
        :meth:`arun`). A malformed request raises :class:`InvalidRequest`."""
        return json.loads(self.run_line(_task(request), emit))  # type: ignore[no-any-return]

    async def arun(
        self,
        request: Task | Mapping[str, Any] | bytes | str,
        emit: Emit | None = None,
        executor: Executor | None = None,
    ) -> dict[str, Any]:
        """Runs one attempt on the running event loop (a plain handler in ``executor``, the
        loop's default one when None) and returns the final reply object."""
        text = await self.arun_line(_task(request), emit, executor)
        return json.loads(text)  # type: ignore[no-any-return]

    def run_line(
        self,
        task: Task,
        emit: Emit | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> str:
        """:meth:`run`, returning the final reply as its JSON text (for transports). An
        ``async`` handler runs in ``loop`` (not running; kept across calls by a transport) or
        in a fresh one."""
        found = self._route(task.kind)
        if found is None:
            return self._no_handler(task)
        fn, _ = found
        ctx = Context(task, emit, self.max_reply_bytes)
        try:
            result = fn(task, ctx)
            if inspect.isawaitable(result):
                if loop is None:
                    result = asyncio.run(_awaited(result))
                else:
                    result = loop.run_until_complete(_awaited(result))
        except Exception as e:  # noqa: BLE001 - any exception of a handler becomes its reply
            return self._failure(task, e)
        return self._ok(result)

    async def arun_line(
        self,
        task: Task,
        emit: Emit | None = None,
        executor: Executor | None = None,
    ) -> str:
        """:meth:`arun`, returning the final reply as its JSON text (for transports)."""
        found = self._route(task.kind)
        if found is None:
            return self._no_handler(task)
        fn, is_async = found
        ctx = Context(task, emit, self.max_reply_bytes)
        try:
            if is_async:
                result = await fn(task, ctx)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(executor, functools.partial(fn, task, ctx))
                if inspect.isawaitable(result):
                    result = await result
        except Exception as e:  # noqa: BLE001 - any exception of a handler becomes its reply
            return self._failure(task, e)
        return self._ok(result)

    def _ok(self, output: object) -> str:
        try:
            text = dumps({"status": "ok", "output": output})
        except (TypeError, ValueError) as e:
            return _fail("schema_mismatch", f"the handler's output is not JSON: {e}")
        if _not_unicode(text):
            return _fail(
                "schema_mismatch",
                "the handler's output is not valid Unicode text (a lone surrogate)",
            )
        size = len(text) if len(text) * 4 <= self.max_reply_bytes else _json_bytes(text)
        if size > self.max_reply_bytes:
            return _fail(
                "schema_mismatch",
                f"the handler's output is {size} bytes of JSON; the reply limit is "
                f"{self.max_reply_bytes} (max_reply_bytes)",
            )
        return text

    def _failure(self, task: Task, e: Exception) -> str:
        if isinstance(e, Retry):
            return _fail(e.cls, e.error, e.retry_after_ms)
        if isinstance(e, Fail):
            return _fail(e.cls, e.error)
        if isinstance(e, PartialExecution):
            return _fail("partial_execution", e.error)
        if isinstance(e, StepRefused):
            return _fail("schema_mismatch", f"a step was refused: {e}")
        _log.error(
            "task %s (kind %s, attempt %d) raised %s",
            task.task_id,
            task.kind,
            task.attempt,
            type(e).__name__,
            exc_info=e,
        )
        text = str(e)
        name = type(e).__name__
        # No class: the fleet classifies the text with its [classify] rules.
        return dumps({"status": "fail", "error": bound(f"{name}: {text}" if text else name)})

    def _no_handler(self, task: Task) -> str:
        return _fail(
            "no_handler",
            f"this agent has no handler for kind '{task.kind}' (it serves "
            f"{', '.join(self.kinds) or 'nothing'})",
        )

    def asgi(
        self,
        *,
        secrets: str | list[str] | None = None,
        max_request_bytes: int | None = None,
        executor: Executor | None = None,
    ) -> ASGIApp:
        """An ASGI3 application serving this agent (see :func:`redrive.asgi.asgi_app`)."""
        from .asgi import asgi_app

        return asgi_app(
            self, secrets=secrets, max_request_bytes=max_request_bytes, executor=executor
        )


def _fail(cls: str, error: str, retry_after_ms: int | None = None) -> str:
    reply: dict[str, Any] = {"status": "fail", "class": cls, "error": bound(error)}
    if retry_after_ms is not None:
        reply["retry_after_ms"] = retry_after_ms
    return dumps(reply)


def _task(request: Task | Mapping[str, Any] | bytes | str) -> Task:
    if isinstance(request, Task):
        return request
    if isinstance(request, bytes | str):
        return Task.from_json(request)
    if isinstance(request, Mapping):
        return Task.from_request(request)
    raise InvalidRequest(f"a request is a Task, a mapping or JSON text, not {type(request)}")
