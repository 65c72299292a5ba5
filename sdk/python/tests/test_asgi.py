"""The ASGI adapter, driven by hand with an ASGI scope, receive and send (no server)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from redrive import Agent, Context, Task
from redrive.asgi import ASGIApp, Message
from redrive.signature import sign

from .helpers import body, request

WAIT = 10.0


def scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/redrive",
        "raw_path": b"/redrive",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


class Exchange:
    """One request's receive (the body in two parts) and send (recorded)."""

    def __init__(self, data: bytes) -> None:
        half = len(data) // 2
        self.incoming: list[Message] = [
            {"type": "http.request", "body": data[:half], "more_body": True},
            {"type": "http.request", "body": data[half:], "more_body": False},
        ]
        self.sent: list[Message] = []
        self.first_line = asyncio.Event()

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        await asyncio.sleep(WAIT)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.first_line.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)

    def lines(self) -> list[Any]:
        data = b"".join(m.get("body", b"") for m in self.sent[1:])
        return [json.loads(x) for x in data.splitlines() if x.strip()]


async def call(app: ASGIApp, ex: Exchange, sc: Any = None) -> None:
    await asyncio.wait_for(app(sc or scope(), ex.receive, ex.send), WAIT)


def build() -> tuple[Agent, asyncio.Event]:
    agent = Agent()
    release = asyncio.Event()

    @agent.handler("held")
    async def held(task: Task, ctx: Context) -> str:
        async def draft() -> str:
            return "Dear u1"

        await ctx.astep("draft", draft)
        await asyncio.wait_for(release.wait(), WAIT)
        return "released"

    @agent.handler("plain")
    def plain(task: Task, ctx: Context) -> Any:
        assert threading.current_thread() is not threading.main_thread()
        ctx.step("one", lambda: 1)
        ctx.progress(percent=50)
        return {"payload": task.payload}

    return agent, release


def test_the_stream_is_sent_as_it_happens() -> None:
    async def scenario() -> None:
        agent, release = build()
        ex = Exchange(body(request("held")))
        running = asyncio.create_task(call(agent.asgi(), ex))
        await asyncio.wait_for(ex.first_line.wait(), WAIT)
        assert not running.done(), "the first event came while the handler waited"
        assert ex.status == 200
        assert ex.header(b"content-type") == b"application/x-ndjson"
        assert ex.header(b"content-length") is None, "streamed, not sized"
        assert ex.sent[1]["more_body"] is True
        release.set()
        await running
        assert ex.sent[-1]["more_body"] is False
        assert ex.lines() == [
            {"event": "step_started", "name": "draft", "side_effect": False},
            {"event": "step_done", "name": "draft", "output": "Dear u1"},
            {"status": "ok", "output": "released"},
        ]

    asyncio.run(scenario())


def test_a_plain_handler_runs_in_a_thread_and_its_events_arrive_in_order() -> None:
    async def scenario() -> None:
        agent, _ = build()
        ex = Exchange(body(request("plain", payload={"a": 1})))
        await call(agent.asgi(), ex)
        assert ex.lines() == [
            {"event": "step_started", "name": "one", "side_effect": False},
            {"event": "step_done", "name": "one", "output": 1},
            {"event": "progress", "percent": 50},
            {"status": "ok", "output": {"payload": {"a": 1}}},
        ]

    asyncio.run(scenario())


def test_signatures_are_required_when_secrets_are_set() -> None:
    async def scenario() -> None:
        agent, _ = build()
        app = agent.asgi(secrets="s1")
        data = body(request("plain"))
        ex = Exchange(data)
        await call(app, ex)
        assert ex.status == 401
        assert json.loads(ex.sent[1]["body"])["class"] == "unauthorized"
        ex = Exchange(data)
        await call(app, ex, scope(headers=[(b"redrive-signature", sign("s2", data).encode())]))
        assert ex.status == 401
        ex = Exchange(data)
        await call(app, ex, scope(headers=[(b"redrive-signature", sign("s1", data).encode())]))
        assert ex.status == 200
        assert ex.lines()[-1]["status"] == "ok"

    asyncio.run(scenario())


def test_malformed_and_oversized_bodies_and_other_methods_are_refused() -> None:
    async def scenario() -> None:
        agent, _ = build()
        ex = Exchange(b"{nope")
        await call(agent.asgi(), ex)
        assert ex.status == 400
        assert json.loads(ex.sent[1]["body"])["class"] == "invalid_input"
        ex = Exchange(body(request("plain")))
        await call(agent.asgi(max_request_bytes=10), ex)
        assert ex.status == 413
        ex = Exchange(b"")
        await call(agent.asgi(), ex, scope("PUT"))
        assert ex.status == 405
        ex = Exchange(b"")
        await call(agent.asgi(), ex, scope("GET"))
        assert ex.status == 200
        assert json.loads(ex.sent[1]["body"])["kinds"] == ["held", "plain"]

    asyncio.run(scenario())


def test_lifespan_is_acknowledged() -> None:
    async def scenario() -> None:
        agent, _ = build()
        incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[Message] = []

        async def receive() -> Message:
            return incoming.pop(0)

        async def send(m: Message) -> None:
            sent.append(m)

        await asyncio.wait_for(agent.asgi()({"type": "lifespan"}, receive, send), WAIT)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]

    asyncio.run(scenario())


def test_no_step_starts_once_the_client_has_disconnected() -> None:
    """The fleet timed the attempt out and went away: the side-effecting step that comes next
    must not run."""
    charged: list[str] = []
    outcome: list[str] = []
    agent = Agent()

    @agent.handler("charge")
    async def charge(task: Task, ctx: Context) -> str:
        await gone.wait()
        await asyncio.sleep(0)  # the adapter sees the disconnect

        async def act() -> None:
            charged.append(task.task_id)

        try:
            await ctx.astep("charge", act, side_effect=True)
            outcome.append("ran")
        except Exception as e:
            outcome.append(type(e).__name__)
            raise
        return "charged"

    gone = asyncio.Event()
    data = json.dumps(request("charge", {})).encode()

    class Leaving(Exchange):
        async def receive(self) -> Message:
            if self.incoming:
                return self.incoming.pop(0)
            gone.set()
            return {"type": "http.disconnect"}

    async def main() -> None:
        await call(agent.asgi(), Leaving(data))

    asyncio.run(main())
    assert charged == []
    assert outcome == ["AttemptClosed"]
