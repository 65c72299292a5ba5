"""serve_http's server over a real loopback socket: streamed NDJSON, signatures, keep-alive,
refusals."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redrive import Agent, Context, Retry, Task
from redrive.http import AgentServer, make_server
from redrive.signature import sign

from .helpers import body, request

SECRET = "whsec-test"  # noqa: S105 - a test secret
WAIT = 10.0  # seconds: the bound of every wait in these tests


class Gate:
    """Lets a test hold a handler until it has seen the first streamed line."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.late: list[threading.Thread] = []


def build_agent(gate: Gate) -> Agent:
    agent = Agent()

    @agent.handler("stream")
    def stream(task: Task, ctx: Context) -> str:
        ctx.step("first", lambda: 1)
        released = gate.release.wait(WAIT)
        gate.finished.set()
        return "released" if released else "timed out"

    @agent.handler("echo")
    def echo(task: Task, ctx: Context) -> Any:
        return {"payload": task.payload, "attempt": task.attempt}

    @agent.handler("async_*")
    async def in_loop(task: Task, ctx: Context) -> Any:
        async def one() -> int:
            return 1

        return await ctx.astep("a", one)

    @agent.handler("late")
    def late(task: Task, ctx: Context) -> str:
        def after() -> None:
            gate.release.wait(WAIT)
            ctx.progress(late=True)

        thread = threading.Thread(target=after)
        thread.start()
        gate.late.append(thread)
        return "replied"

    @agent.handler("slow_down")
    def slow_down(task: Task, ctx: Context) -> None:
        raise Retry("429", retry_after_ms=250, cls="rate_limited")

    return agent


def serve(agent: Agent, **kw: Any) -> Iterator[AgentServer]:
    server = make_server(agent, "127.0.0.1", 0, **kw)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def server(gate: Gate) -> Iterator[AgentServer]:
    yield from serve(build_agent(gate), path="/redrive")


@pytest.fixture
def signed(gate: Gate) -> Iterator[AgentServer]:
    yield from serve(build_agent(gate), secrets=[SECRET, "older"])


def connect(server: AgentServer) -> http.client.HTTPConnection:
    host, port = server.server_address[:2]
    return http.client.HTTPConnection(str(host), port, timeout=WAIT)


def post(
    conn: http.client.HTTPConnection,
    data: bytes,
    path: str = "/redrive",
    headers: dict[str, str] | None = None,
) -> http.client.HTTPResponse:
    conn.request(
        "POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    return conn.getresponse()


def ndjson(resp: http.client.HTTPResponse) -> list[Any]:
    return [json.loads(x) for x in resp.read().splitlines() if x.strip()]


def test_the_reply_streams_line_by_line_before_the_handler_finishes(
    server: AgentServer, gate: Gate
) -> None:
    conn = connect(server)
    resp = post(conn, body(request("stream")))
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/x-ndjson"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    first = json.loads(resp.readline())
    second = json.loads(resp.readline())
    assert not gate.finished.is_set(), "the events came while the handler was still running"
    assert first == {"event": "step_started", "name": "first", "side_effect": False}
    assert second == {"event": "step_done", "name": "first", "output": 1}
    gate.release.set()
    assert json.loads(resp.readline()) == {"status": "ok", "output": "released"}
    assert resp.read() == b""
    conn.close()


def test_keep_alive_reuses_one_connection(server: AgentServer) -> None:
    conn = connect(server)
    replies = []
    for i in range(3):
        resp = post(conn, body(request("echo", payload={"i": i})))
        replies.append(ndjson(resp))
        if i == 0:
            sock = conn.sock
            assert sock is not None
            local = sock.getsockname()
    assert conn.sock is sock, "the same socket carried every request"
    assert sock.getsockname() == local
    assert [r[-1]["output"]["payload"] for r in replies] == [{"i": 0}, {"i": 1}, {"i": 2}]
    conn.close()


def test_async_handlers_and_typed_errors_over_http(server: AgentServer) -> None:
    conn = connect(server)
    assert ndjson(post(conn, body(request("async_one"))))[-1] == {"status": "ok", "output": 1}
    assert ndjson(post(conn, body(request("slow_down"))))[-1] == {
        "status": "fail",
        "class": "rate_limited",
        "error": "429",
        "retry_after_ms": 250,
    }
    assert ndjson(post(conn, body(request("nothing"))))[-1]["class"] == "no_handler"
    conn.close()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (json.dumps({**request(), "task_id": None}).encode(), "task_id"),
    ],
)
def test_a_malformed_body_is_400_invalid_input(server: AgentServer, data: bytes, why: str) -> None:
    conn = connect(server)
    resp = post(conn, data)
    assert resp.status == 400
    reply = json.loads(resp.read())
    assert reply["class"] == "invalid_input"
    assert why in reply["error"]
    # The connection stays usable after a refusal.
    assert ndjson(post(conn, body(request("echo"))))[-1]["status"] == "ok"
    conn.close()


def test_another_path_is_404_and_get_says_what_is_served(server: AgentServer) -> None:
    conn = connect(server)
    resp = post(conn, body(request("echo")), path="/other")
    assert resp.status == 404
    assert json.loads(resp.read())["class"] == "invalid_input"
    conn.request("GET", "/redrive")
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read()) == {
        "agent": "redrive",
        "protocol": 1,
        "kinds": ["stream", "echo", "async_*", "late", "slow_down"],
    }
    conn.close()


def test_a_request_without_a_length_or_over_the_limit_is_refused(gate: Gate) -> None:
    for srv in serve(build_agent(gate), max_request_bytes=100):
        host, port = srv.server_address[:2]
        with socket.create_connection((str(host), port), timeout=WAIT) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 411")
        conn = connect(srv)
        resp = post(conn, b"x" * 101, path="/")
        assert resp.status == 413
        assert json.loads(resp.read())["class"] == "invalid_input"
        conn.close()


def test_a_chunked_request_body_is_read(server: AgentServer) -> None:
    data = body(request("echo", payload={"chunked": True}))
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=WAIT) as s:
        head = b"POST /redrive HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        half = len(data) // 2
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (data[:half], data[half:]))
        s.sendall(head + chunks + b"0\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200
        assert ndjson(resp)[-1]["output"]["payload"] == {"chunked": True}


# Signatures ---------------------------------------------------------------------------------


def test_a_valid_signature_is_accepted_under_any_of_the_secrets(signed: AgentServer) -> None:
    conn = connect(signed)
    data = body(request("echo"))
    for secrets in ([SECRET], ["older"], ["new-one", SECRET]):
        resp = post(conn, data, "/", {"Redrive-Signature": sign(secrets, data)})
        assert resp.status == 200
        assert ndjson(resp)[-1]["status"] == "ok"
    conn.close()


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "missing Redrive-Signature"),
        (lambda d: sign(["wrong"], d), "does not match"),
        (lambda d: sign([SECRET], d, t=int(time.time()) - 301), "away from this clock"),
        (lambda d: sign([SECRET], d + b" "), "does not match"),
        (lambda d: "garbage", "no timestamp"),
    ],
    ids=["missing", "wrong secret", "stale", "other body", "garbage"],
)
def test_a_missing_wrong_or_stale_signature_is_401_unauthorized(
    signed: AgentServer, gate: Gate, header: Any, why: str
) -> None:
    conn = connect(signed)
    data = body(request("stream"))
    headers = {} if header is None else {"Redrive-Signature": header(data)}
    resp = post(conn, data, "/", headers)
    assert resp.status == 401
    assert resp.getheader("Content-Type") == "application/json"
    reply = json.loads(resp.read())
    assert reply["status"] == "fail"
    assert reply["class"] == "unauthorized"
    assert why in reply["error"]
    assert SECRET not in reply["error"]
    assert not gate.finished.is_set(), "the handler never ran"
    conn.close()


def test_draining_refuses_new_attempts_with_503(server: AgentServer) -> None:
    assert server.drain(0.0)
    conn = connect(server)
    resp = post(conn, body(request("echo")))
    assert resp.status == 503
    assert json.loads(resp.read())["class"] == "upstream_unavailable"
    conn.close()


def test_an_event_after_the_reply_never_reaches_the_connection(
    server: AgentServer, gate: Gate
) -> None:
    conn = connect(server)
    assert ndjson(post(conn, body(request("late")))) == [{"status": "ok", "output": "replied"}]
    gate.release.set()
    gate.late[0].join(WAIT)
    assert not gate.late[0].is_alive()
    lines = ndjson(post(conn, body(request("echo", payload=1))))
    assert lines == [{"status": "ok", "output": {"payload": 1, "attempt": 1}}]
    conn.close()


def test_serve_http_as_a_process_verifies_signatures_and_stops_on_sigterm() -> None:
    """``python -m redrive http`` (serve_http): secrets from REDRIVE_SECRETS, the bound port
    in its first log line, a clean exit 0 on SIGTERM."""
    agents = Path(__file__).resolve().parent / "agents"
    env = {**os.environ, "PYTHONPATH": str(agents), "REDRIVE_SECRETS": f"{SECRET}, older"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "redrive", "http", "pool_agent:agent", "--port", "0"],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert found, first
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=WAIT)
        data = body(request("flaky"))
        resp = post(conn, data, "/", {"Redrive-Signature": sign("older", data)})
        assert resp.status == 200
        assert ndjson(resp)[-1]["class"] == "upstream_unavailable"
        resp = post(conn, data, "/")
        assert resp.status == 401
        resp.read()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def test_no_step_starts_once_the_fleet_has_closed_the_attempt() -> None:
    """The fleet timed the attempt out and closed the connection while the handler was busy:
    the side-effecting step that comes next must not run (a retry would run it again)."""
    entered = threading.Event()
    release = threading.Event()
    done = threading.Event()
    charged: list[str] = []
    outcome: list[str] = []
    agent = Agent()

    @agent.handler("charge")
    def charge(task: Task, ctx: Context) -> str:
        entered.set()
        release.wait(WAIT)
        try:
            ctx.step("charge", lambda: charged.append(task.task_id), side_effect=True)
            outcome.append("ran")
        except Exception as e:
            outcome.append(type(e).__name__)
            raise
        finally:
            done.set()
        return "charged"

    for server in serve(agent, path="/redrive"):
        host, port = server.server_address[:2]
        data = body(request("charge", {}))
        raw = socket.create_connection((str(host), port), timeout=WAIT)
        raw.sendall(
            b"POST /redrive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n%b" % (len(data), data)
        )
        assert entered.wait(WAIT)
        raw.close()  # the fleet's timeout: it drops the connection
        release.set()
        assert done.wait(WAIT)
    assert charged == []
    assert outcome == ["AttemptClosed"]
