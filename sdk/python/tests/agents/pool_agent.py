"""A test agent for the stdio transports, run as ``python -m redrive pool pool_agent:agent``
(or ``python -m pool_agent``) with this directory on PYTHONPATH."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

from redrive import Agent, Context, Fail, Retry, Task, serve_pool

agent = Agent()

_finished: dict[str, threading.Event] = {}
_finished_lock = threading.Lock()


def finished(name: str) -> threading.Event:
    """The event set when the chain task ``name`` is done."""
    with _finished_lock:
        return _finished.setdefault(name, threading.Event())


@agent.handler("chain")
def chain(task: Task, ctx: Context) -> Any:
    """Finishes only after the task named payload["after"] finished (in a worker thread)."""
    after = task.payload.get("after")
    if after and not finished(after).wait(5):
        raise Fail("invalid_input", f"{after} never finished: not run concurrently")
    finished(task.payload["name"]).set()
    return {"task": task.task_id}


@agent.handler("achain")
async def achain(task: Task, ctx: Context) -> Any:
    """As chain, waiting on the event loop."""
    after = task.payload.get("after")
    deadline = time.monotonic() + 5
    while after and not finished(after).is_set():
        if time.monotonic() > deadline:
            raise Fail("invalid_input", f"{after} never finished: not run concurrently")
        await asyncio.sleep(0.005)
    finished(task.payload["name"]).set()
    return {"task": task.task_id}


@agent.handler("sleep")
def sleep(task: Task, ctx: Context) -> Any:
    """Sleeps payload["ms"] in a worker thread, then says who it was."""
    print(f"stray print from {task.task_id}")  # must land on stderr

    def nap() -> int:
        time.sleep(task.payload["ms"] / 1000)
        return int(task.payload["ms"])

    ctx.step("slept", nap)
    return {"task": task.task_id, "pid": os.getpid()}


@agent.handler("asleep")
async def asleep(task: Task, ctx: Context) -> Any:
    """Sleeps payload["ms"] on the event loop."""
    await asyncio.sleep(task.payload["ms"] / 1000)
    return {"task": task.task_id}


@agent.handler("fd1")
def fd1(task: Task, ctx: Context) -> str:
    """Writes to file descriptor 1 behind Python's back."""
    os.write(1, b"raw bytes on fd 1\n")
    return "ok"


@agent.handler("flaky")
def flaky(task: Task, ctx: Context) -> None:
    """Always asks for a retry."""
    raise Retry("upstream said 503", retry_after_ms=1000)


if __name__ == "__main__":
    serve_pool(agent, concurrency=int(sys.argv[1]) if len(sys.argv) > 1 else 1)
