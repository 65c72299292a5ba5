"""serve_pool and run_exec in real child processes: concurrency, out-of-order replies, EOF,
stray output, bad lines."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from .helpers import request

AGENTS = Path(__file__).resolve().parent / "agents"
WAIT = 10.0


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AGENTS), e.get("PYTHONPATH")]))
    e["PYTHONUNBUFFERED"] = "0"
    return e


class Lines:
    """A child's output stream read by a thread, so every read is bounded in time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue()
        self.all: list[bytes] = []

        def pump() -> None:
            for line in stream:
                self.q.put(line)
            self.q.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = WAIT) -> bytes | None:
        line = self.q.get(timeout=timeout)
        if line is not None:
            self.all.append(line)
        return line

    def rest(self, timeout: float = WAIT) -> list[bytes]:
        out = []
        while (line := self.next(timeout)) is not None:
            out.append(line)
        return out


class Pool:
    """A pool process of the test agent."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redrive", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdin = self.proc.stdin
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def send(self, request_id: str, task: Any) -> None:
        self.stdin.write(json.dumps({"id": request_id, "task": task}).encode() + b"\n")
        self.stdin.flush()

    def reply(self) -> dict[str, Any]:
        """The next final reply line (events skipped), parsed."""
        while True:
            line = self.out.next()
            assert line is not None, "stdout closed before a reply"
            obj: dict[str, Any] = json.loads(line)
            if "status" in obj:
                return obj

    def close(self) -> int:
        self.stdin.close()
        return self.proc.wait(WAIT)


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool("pool", "pool_agent:agent", "--concurrency", "3")
    try:
        yield p
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(WAIT)


def test_three_at_once_answered_as_they_finish(pool: Pool) -> None:
    """r1 can only finish after r2, and r2 after r3 (each waits for the next one's end), so
    the replies come r3, r2, r1 only when the three run at once; run one by one, r1 would
    give up waiting and fail."""
    pool.send("r1", request("chain", {"name": "1", "after": "2"}, task_id="t-1"))
    pool.send("r2", request("achain", {"name": "2", "after": "3"}, task_id="t-2"))
    pool.send("r3", request("chain", {"name": "3"}, task_id="t-3"))
    replies = [pool.reply() for _ in range(3)]
    assert [r["id"] for r in replies] == ["r3", "r2", "r1"], "answered out of order"
    assert [r["status"] for r in replies] == ["ok", "ok", "ok"], replies
    assert [r["output"]["task"] for r in replies] == ["t-3", "t-2", "t-1"]
    pool.send("r4", request("sleep", {"ms": 1}, task_id="t-4"))
    assert pool.reply()["id"] == "r4"
    assert pool.close() == 0, "exits cleanly at end of input"
    for line in pool.out.all:
        obj = json.loads(line)
        assert obj["id"] in {"r1", "r2", "r3", "r4"}, line
        assert next(iter(obj)) == "id"
    steps = [json.loads(x) for x in pool.out.all if b'"event"' in x]
    assert [(s["id"], s["event"]) for s in steps] == [("r4", "step_started"), ("r4", "step_done")]
    assert b"stray print from t-4" in b"".join(pool.err.rest())


def test_writes_to_fd_1_go_to_stderr(pool: Pool) -> None:
    pool.send("a", request("fd1"))
    assert pool.reply() == {"id": "a", "status": "ok", "output": "ok"}
    assert pool.close() == 0
    assert b"raw bytes on fd 1" in b"".join(pool.err.rest())
    assert all(line.startswith(b'{"id":') for line in pool.out.all)


def test_typed_errors_and_unknown_kinds(pool: Pool) -> None:
    pool.send("a", request("flaky"))
    assert pool.reply() == {
        "id": "a",
        "status": "fail",
        "class": "upstream_unavailable",
        "error": "upstream said 503",
        "retry_after_ms": 1000,
    }
    pool.send("b", request("nope"))
    assert pool.reply()["class"] == "no_handler"
    assert pool.close() == 0


def test_bad_lines_are_answered_when_they_have_an_id_and_logged_otherwise(pool: Pool) -> None:
    pool.stdin.write(b"not json\n\n")
    pool.stdin.write(json.dumps({"task": request()}).encode() + b"\n")
    pool.send("bad", {"kind": "x"})
    pool.send("good", request("asleep", {"ms": 1}))
    first = pool.reply()
    assert first["id"] == "bad"
    assert first["class"] == "invalid_input"
    assert pool.reply()["id"] == "good"
    assert pool.close() == 0
    err = b"".join(pool.err.rest())
    assert err.count(b"redrive: ignored a line on stdin") == 2


def test_end_of_input_lets_the_attempts_in_flight_finish() -> None:
    p = Pool("pool", "pool_agent:agent", "--concurrency", "2")
    p.send("r1", request("sleep", {"ms": 300}))
    p.send("r2", request("asleep", {"ms": 300}))
    p.stdin.close()
    replies = [p.reply(), p.reply()]
    assert sorted(r["id"] for r in replies) == ["r1", "r2"]
    assert p.proc.wait(WAIT) == 0


def test_a_script_can_call_serve_pool_itself() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pool_agent", "1"],
        input=json.dumps({"id": "x", "task": request("asleep", {"ms": 1})}).encode() + b"\n",
        capture_output=True,
        env=env(),
        timeout=WAIT,
        check=False,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"id": "x", "status": "ok", "output": {"task": "t-1"}}


def exec_once(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "redrive", "exec", "pool_agent:agent"],
        input=data,
        capture_output=True,
        env=env(),
        timeout=WAIT,
        check=False,
    )


def test_exec_runs_one_request_and_exits_0() -> None:
    proc = exec_once(json.dumps({"id": "r1", "task": request("sleep", {"ms": 1})}).encode())
    assert proc.returncode == 0
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x.get("event") or x["status"] for x in lines] == ["step_started", "step_done", "ok"]
    assert all(x["id"] == "r1" for x in lines)
    assert b"stray print from t-1" in proc.stderr
    proc = exec_once(json.dumps({"id": "r1", "task": request("flaky")}).encode() + b"\n")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["class"] == "upstream_unavailable"


def test_exec_without_a_request_line_exits_65() -> None:
    proc = exec_once(b"garbage\n")
    assert proc.returncode == 65
    assert proc.stdout == b""
    assert b"not JSON" in proc.stderr


def test_one_at_a_time_on_the_main_thread() -> None:
    """concurrency 1 (the default): requests answered in order, sync and async handlers, steps,
    a bad line answered, stray prints on stderr, exit 0 at end of input."""
    p = Pool("pool", "pool_agent:agent")
    p.send("r1", request("sleep", {"ms": 50}, task_id="t-1"))
    assert p.reply()["id"] == "r1", "a lone request is answered (no read-ahead wait)"
    p.send("r2", request("asleep", {"ms": 1}, task_id="t-2"))
    assert p.reply()["id"] == "r2"
    p.send("r3", {"kind": "x"})
    p.send("r4", request("flaky"))
    assert [p.reply()["id"] for _ in range(2)] == ["r3", "r4"]
    assert p.close() == 0
    events = [json.loads(x) for x in p.out.all if b'"event"' in x]
    assert [(e["id"], e["event"]) for e in events] == [("r1", "step_started"), ("r1", "step_done")]
    assert b"stray print from t-1" in b"".join(p.err.rest())


PARENT = """
import os
import subprocess
import sys
child = subprocess.Popen(
    sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=os.setpgrp
)
print(child.pid, flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(ln for ln in f if ln.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) & (1 << (15 - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_killed_parent_takes_the_pools_whole_process_group() -> None:
    """The pool leads its own process group, as the fleet starts it (setpgid, same session).
    SIGKILL its parent: the pool and every process of its group (what the agent started) die."""
    import signal as sig
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sys.executable, "-m", "redrive", "pool", "pool_agent:agent"],
        stdout=subprocess.PIPE,
        env=env(),
    )
    grandchild: subprocess.Popen[bytes] | None = None
    try:
        assert parent.stdout is not None
        pool_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + WAIT
        while not _catches_sigterm(pool_pid):
            assert time.monotonic() < deadline, "the pool never tied its group to its parent"
            time.sleep(0.02)
        # A process in the pool's group, as a tool the agent started would be.
        grandchild = subprocess.Popen(["sleep", "300"], preexec_fn=lambda: os.setpgid(0, pool_pid))  # noqa: PLW1509 (setpgid only)
        os.kill(parent.pid, sig.SIGKILL)
        parent.wait(WAIT)
        left = _wait_gone([pool_pid, grandchild.pid], 10)
        assert left == [], f"still alive after the parent's SIGKILL: {left}"
    finally:
        for p in (parent, grandchild):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(WAIT)
