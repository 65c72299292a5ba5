"""A test agent on the Python SDK, for tests/checkpoints.rs and tests/agent_orphans.rs. Served
by the SDK itself: ``python -m redrive pool sdk_agent:agent`` or ``python -m redrive http
sdk_agent:agent`` with this directory as the working directory.

Files go in ``$CK_DIR``:

* ``<task_id>.count``: one line per run of step ``one`` (its attempt), so a memoised step
  shows as exactly one line however many attempts ran;
* ``<task_id>.<what>``: markers, so that something happens only the first time;
* ``<task_id>.sent``: one line per run of the side-effecting step ``send``;
* ``results.jsonl``: one line per attempt that returned: the task id, the attempt, the steps
  the request carried, what step ``one`` returned, the classes of the earlier attempts and
  ``replay_of``.

Kinds:

* ``crash_after_step``: step ``one``, then the first time the process exits (``os._exit(1)``),
  afterwards returns;
* ``block_after_step``: step ``one``, then the first time blocks until ``<task_id>.release``
  exists (at most 30 s) and returns nothing recorded, afterwards returns;
* ``crash_in_side_effect``: step ``one``, then the side-effecting step ``send``, in which the
  process exits the first time, afterwards it "sends";
* ``echo`` (and ``echo_*``): returns this process's pid;
* ``answer``: the first time writes ``<task_id>.started`` and blocks until
  ``<task_id>.release`` exists (at most 30 s; its member is meant to be killed meanwhile),
  afterwards returns ``{"answer": 42, "attempt": …}`` at once (tests/e2e_wait.rs);
* ``refuse``: fails ``invalid_input`` (permanent: dead-lettered at once).

With ``$GRANDCHILD_LOG`` set, the process starts ``sleep 300`` when it starts and appends
``<its pid> <the sleep's pid>`` to that file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from redrive import Agent, Context, Fail, Task

agent = Agent()
DIR = os.environ.get("CK_DIR", ".")


def _path(*parts: str) -> str:
    return os.path.join(DIR, ".".join(parts))


def _append(name: str, line: str) -> None:
    with open(_path(name), "a") as f:
        f.write(line + "\n")


def _first_time(task: Task, what: str) -> bool:
    """True the first time this is asked for the task and `what` (a marker file)."""
    try:
        os.close(os.open(_path(task.task_id, what), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _step_one(task: Task, ctx: Context) -> Any:
    def one() -> dict[str, Any]:
        _append(task.task_id + ".count", str(task.attempt))
        # Unique per run, so a memoised value is told apart from a second run's.
        return {"value": f"one-{task.task_id}", "pid": os.getpid(), "ns": time.time_ns()}

    return ctx.step("one", one)


def _record(task: Task, one: Any, **more: Any) -> dict[str, Any]:
    line = {
        "task_id": task.task_id,
        "attempt": task.attempt,
        "steps": [{"name": s.name, "output": s.output, "attempt": s.attempt} for s in task.steps],
        "one": one,
        "history": [h.cls for h in task.history],
        "replay_of": task.replay_of,
        **more,
    }
    _append("results.jsonl", json.dumps(line))
    return line


@agent.handler("crash_after_step")
def crash_after_step(task: Task, ctx: Context) -> Any:
    one = _step_one(task, ctx)
    if _first_time(task, "crashed"):
        os._exit(1)
    return _record(task, one)


@agent.handler("block_after_step")
def block_after_step(task: Task, ctx: Context) -> Any:
    one = _step_one(task, ctx)
    if _first_time(task, "blocked"):
        deadline = time.time() + 30
        while not os.path.exists(_path(task.task_id, "release")) and time.time() < deadline:
            time.sleep(0.02)
        return None
    return _record(task, one)


@agent.handler("crash_in_side_effect")
def crash_in_side_effect(task: Task, ctx: Context) -> Any:
    one = _step_one(task, ctx)

    def send() -> dict[str, Any]:
        if _first_time(task, "send-crashed"):
            os._exit(1)
        _append(task.task_id + ".sent", str(task.attempt))
        return {"message_id": "m-" + task.task_id}

    sent = ctx.step("send", send, side_effect=True)
    return _record(task, one, sent=sent)


@agent.handler("echo", "echo_*")
def echo(task: Task, ctx: Context) -> Any:
    return {"pid": os.getpid()}


@agent.handler("answer")
def answer(task: Task, ctx: Context) -> Any:
    if _first_time(task, "started-once"):
        _append(task.task_id + ".started", str(os.getpid()))
        deadline = time.time() + 30
        while not os.path.exists(_path(task.task_id, "release")) and time.time() < deadline:
            time.sleep(0.02)
    return {"answer": 42, "attempt": task.attempt}


@agent.handler("refuse")
def refuse(task: Task, ctx: Context) -> Any:
    raise Fail("invalid_input", "the question makes no sense")


if os.environ.get("GRANDCHILD_LOG"):
    _child = subprocess.Popen(
        ["sleep", "300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(os.environ["GRANDCHILD_LOG"], "a") as _f:
        _f.write(f"{os.getpid()} {_child.pid}\n")
