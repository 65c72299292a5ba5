"""The stdio transports (PROTOCOL.md, "Stdio framing"): ``serve_pool`` for a long-lived pool
process and ``run_exec`` for one attempt per process.

The fleet writes ``{"id": "<request id>", "task": <request>}`` lines on stdin; the agent
answers on stdout with the events and the final reply of each request, each line carrying the
request's ``id``. Anything else on stdout would break the protocol, so both functions take the
real stdout for themselves and point file descriptor 1, ``sys.stdout`` and therefore
``print()`` at stderr, which the fleet logs.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, BinaryIO

from ._wire import dumps
from .agent import Agent
from .errors import InvalidRequest
from .task import Task

#: ``run_exec``'s exit code for an input that is not a request line (EX_DATAERR): the fleet
#: reads an exit code other than 0 and 75 as ``invalid_input``.
EXIT_BAD_INPUT = 65


class LineWriter:
    """Writes protocol lines to the real stdout: one at a time (any thread), flushed each.
    A closed pipe (the member is gone) makes later writes no-ops."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.broken = False

    def write(
        self, request_id: str, line: str, request: Request | None = None, final: bool = False
    ) -> None:
        """Writes the JSON object ``line`` with ``"id": request_id`` as its first key. With
        ``request``, nothing is written once that request has its final reply (``final``
        marks it)."""
        framed = '{"id":' + dumps(request_id) + ("," + line[1:] if line != "{}" else "}")
        data = framed.encode("utf-8") + b"\n"
        with self._lock:
            if request is not None:
                if request.answered:
                    return
                request.answered = final
            if self.broken:
                return
            try:
                self._out.write(data)
                self._out.flush()
            except OSError:
                self.broken = True

    def request(self, request_id: str) -> Request:
        """The writer of request ``request_id``'s lines."""
        return Request(self, request_id)


class Request:
    """One request's lines: events (it is the handler's ``emit``), then one final reply. An
    event a handler's stray thread emits after the reply is dropped: the fleet would read a
    line for a finished ``id`` as a broken protocol and fail every attempt of the process."""

    def __init__(self, writer: LineWriter, request_id: str) -> None:
        self.writer = writer
        self.request_id = request_id
        self.answered = False

    def __call__(self, event: dict[str, Any]) -> None:
        """Writes an event line."""
        self.writer.write(self.request_id, dumps(event), self)

    def reply(self, line: str) -> None:
        """Writes the final reply line; later events are dropped."""
        self.writer.write(self.request_id, line, self, final=True)


def claim_stdout() -> BinaryIO:
    """Takes the process's stdout for the protocol: returns a binary stream on the original
    stdout, and points file descriptor 1 and ``sys.stdout`` at stderr, so that a stray
    ``print()`` (or a library or child process writing to fd 1) lands in the log instead of
    breaking the protocol."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=1 << 16)


def tie_group_to_parent() -> bool:
    """When this process leads its own process group (as the fleet starts every ``pool`` and
    ``exec`` process), makes the death of its parent end the whole group, the processes the
    agent started (tools, subprocesses) included: the parent-death signal becomes SIGTERM,
    whose handler SIGKILLs the group. The fleet's own parent-death signal (SIGKILL) reaches
    this process only, never its children. Linux only; returns whether it took effect."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    if os.getpgid(0) != os.getpid():
        return False
    parent = os.getppid()

    def end_group(signum: int, _frame: object) -> None:
        try:
            os.killpg(0, signal.SIGKILL)
        finally:
            os._exit(128 + signum)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # After the signal is set: a handler seen in /proc (SigCgt) means both are in place, and a
    # parent dying in between only ends this process by SIGTERM's default (nothing started yet).
    signal.signal(signal.SIGTERM, end_group)
    if os.getppid() != parent:
        # The parent died before the signal was set: nobody would send it.
        end_group(signal.SIGTERM, None)
    return True


def _parse(line: bytes) -> tuple[str | None, Task | str]:
    """A request line's id and task, or its id (if any) and what is wrong with it."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        return None, f"the request line is not JSON: {e}"
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return None, "the request line is not an object with a string 'id'"
    request_id: str = obj["id"]
    try:
        return request_id, Task.from_request(obj.get("task"))
    except InvalidRequest as e:
        return request_id, f"not a redrive request: {e}"


def _bad_request(writer: LineWriter, request_id: str | None, why: str) -> None:
    if request_id is None:
        # Without an id no reply can be matched to it: say so in the log, not on stdout.
        print(f"redrive: ignored a line on stdin: {why}", file=sys.stderr, flush=True)
        return
    writer.write(request_id, dumps({"status": "fail", "class": "invalid_input", "error": why}))


def serve_pool(agent: Agent, concurrency: int = 1) -> None:
    """Serves request lines from stdin until it closes, running up to ``concurrency`` at once
    (``async`` handlers on one event loop, plain ones in a pool of ``concurrency`` threads)
    and answering each as it finishes, in any order. At end of input the attempts in flight
    finish, then it returns (the process exits 0): this is also how the process ends when its
    fleet member is gone."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    tie_group_to_parent()
    writer = LineWriter(claim_stdout())
    if concurrency == 1:
        _serial(agent, sys.stdin.buffer, writer)
    else:
        asyncio.run(_pool(agent, concurrency, sys.stdin.buffer, writer))


def _serial(agent: Agent, stdin: BinaryIO, writer: LineWriter) -> None:
    """One request at a time, on this thread: no hand-off between threads per task. An
    ``async`` handler runs in one event loop kept for the process's life."""
    loop = asyncio.new_event_loop()
    try:
        for line in stdin:
            if not line.strip():
                continue
            request_id, parsed = _parse(line)
            if request_id is None or isinstance(parsed, str):
                _bad_request(writer, request_id, str(parsed))
                continue
            out = writer.request(request_id)
            out.reply(agent.run_line(parsed, out, loop))
    finally:
        loop.close()


async def _pool(agent: Agent, concurrency: int, stdin: BinaryIO, writer: LineWriter) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def read() -> None:
        # A thread, not the loop's pipe reader: a request line may be megabytes long, and
        # stdin may be a file or a terminal as well as a pipe.
        try:
            for line in stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        finally:
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="redrive-stdin", daemon=True).start()
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="redrive-task") as executor:

        async def one(request_id: str, task: Task) -> None:
            try:
                out = writer.request(request_id)
                out.reply(await agent.arun_line(task, out, executor))
            finally:
                slots.release()

        while (line := await lines.get()) is not None:
            if not line.strip():
                continue
            request_id, parsed = _parse(line)
            if request_id is None or isinstance(parsed, str):
                _bad_request(writer, request_id, str(parsed))
                continue
            await slots.acquire()
            job = asyncio.create_task(one(request_id, parsed))
            running.add(job)
            job.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)


def run_exec(agent: Agent) -> int:
    """Runs the one request line read from stdin and writes its events and reply on stdout.
    Returns the exit code: 0 (the reply decides the outcome), or :data:`EXIT_BAD_INPUT` when
    the input is not a request line (nothing to reply to)."""
    tie_group_to_parent()
    writer = LineWriter(claim_stdout())
    data = sys.stdin.buffer.read()
    line = next((ln for ln in data.splitlines() if ln.strip()), b"")
    request_id, parsed = _parse(line)
    if request_id is None or isinstance(parsed, str):
        _bad_request(writer, request_id, str(parsed))
        return 0 if request_id is not None else EXIT_BAD_INPUT
    out = writer.request(request_id)
    out.reply(agent.run_line(parsed, out))
    return 0
