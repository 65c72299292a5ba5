"""The agent as an ASGI3 application, for uvicorn, Hypercorn, or mounting in Starlette /
FastAPI (``app.mount("/redrive", agent.asgi())``).

The same behaviour as :mod:`redrive.http`: a ``POST`` runs one attempt and streams NDJSON
(events as they happen, the final reply last), a ``GET`` tells what the agent serves, and
refusals carry a JSON reply (401 ``unauthorized``, 400/413 ``invalid_input``). The path is not
checked: route to the app as your framework does. An ``async`` handler runs on the server's
event loop; a plain one in a thread of the app's own pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._serving import (
    DEFAULT_MAX_REQUEST_BYTES,
    NDJSON,
    Refusal,
    info,
    prepare,
    refusal,
    secrets_list,
)
from ._wire import dumps
from .errors import AttemptClosed

if TYPE_CHECKING:
    from .agent import Agent

#: How many threads run plain handlers by default.
DEFAULT_THREADS = 64

#: An ASGI message.
Message = MutableMapping[str, Any]
#: The ``receive`` callable of an ASGI application.
Receive = Callable[[], Awaitable[Message]]
#: The ``send`` callable of an ASGI application.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI3 application.
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive, limit: int) -> bytes | Refusal | None:
    parts: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return refusal(413, "invalid_input", f"the request is over {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def asgi_app(
    agent: Agent,
    *,
    secrets: str | Sequence[str] | None = None,
    max_request_bytes: int | None = None,
    executor: Executor | None = None,
) -> ASGIApp:
    """An ASGI3 application running ``agent``; with ``secrets`` every request must carry a
    valid ``Redrive-Signature``. Plain (blocking) handlers run in ``executor``, by default a
    pool of :data:`DEFAULT_THREADS` threads of this app's own (the loop's default executor
    has only a few, and a handler waiting on a model would hold one for seconds)."""
    keys = secrets_list(secrets)
    limit = DEFAULT_MAX_REQUEST_BYTES if max_request_bytes is None else max_request_bytes
    pool: list[Executor] = [] if executor is None else [executor]

    def threads() -> Executor:
        if not pool:
            pool.append(ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="redrive-asgi"))
        return pool[0]

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"the redrive agent serves HTTP, not {scope['type']}")
        method = scope.get("method", "GET")
        if method in ("GET", "HEAD"):
            await _respond(send, 200, info(agent.kinds))
            return
        if method != "POST":
            await _respond(send, 405, refusal(405, "invalid_input", "POST a task here").body)
            return
        body = await _read_body(receive, limit)
        if body is None:
            return
        if isinstance(body, Refusal):
            await _respond(send, body.status, body.body)
            return
        signature = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"redrive-signature":
                signature = value.decode("latin-1")
        prep = prepare(body, signature, keys)
        if isinstance(prep, Refusal):
            await _respond(send, prep.status, prep.body)
            return
        await _stream(agent, prep, receive, send, threads())

    return app


async def _stream(
    agent: Agent, task: Any, receive: Receive, send: Send, executor: Executor
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", NDJSON.encode())],
        }
    )
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    closed = threading.Event()

    async def watch() -> None:
        # The body is read: the next message is the client going away (the fleet's timeout).
        while (await receive())["type"] != "http.disconnect":
            pass
        closed.set()

    watching = asyncio.create_task(watch())

    def emit(event: dict[str, Any]) -> None:
        if closed.is_set():
            # No step may start once nobody can record it: a retry would run it again.
            raise AttemptClosed("the fleet closed this attempt's connection")
        line = dumps(event).encode("utf-8") + b"\n"
        if threading.get_ident() == loop_thread:
            lines.put_nowait(line)
        else:
            # A plain handler runs in a worker thread; the queue belongs to the loop.
            loop.call_soon_threadsafe(lines.put_nowait, line)

    async def pump() -> None:
        broken = False
        while (line := await lines.get()) is not None:
            if broken:
                continue
            try:
                await send({"type": "http.response.body", "body": line, "more_body": True})
            except OSError:
                broken = True  # the client went away; keep draining so the handler never waits
                closed.set()

    pumping = asyncio.create_task(pump())
    try:
        reply = await agent.arun_line(task, emit, executor)
    finally:
        # Events a worker thread emitted were queued before its result reached this loop,
        # so the end marker comes after every one of them.
        lines.put_nowait(None)
        await pumping
        watching.cancel()
    await send(
        {"type": "http.response.body", "body": reply.encode("utf-8") + b"\n", "more_body": False}
    )
