"""``serve_http``: the agent as an HTTP server on the standard library.

One ``POST`` per attempt (PROTOCOL.md, "The request"); the reply is streamed as NDJSON with
chunked encoding, each event line sent as it happens and the final reply line last.
Connections are kept alive (HTTP/1.1) and every connection has its own thread, so a plain
(blocking) handler runs in it; an ``async`` handler runs in an event loop of that thread (one
per connection, kept across its requests).

Refusals carry a JSON reply whose class decides the outcome at the fleet: 401
``unauthorized`` (missing, wrong or stale ``Redrive-Signature`` when secrets are set), 400
``invalid_input`` (a body that is not a request), 404 (another path), 411/413 (no length / too
large), 503 ``upstream_unavailable`` while the server is shutting down.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

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
from .agent import Agent
from .errors import AttemptClosed
from .signature import HEADER


class AgentServer(ThreadingHTTPServer):
    """A threading HTTP server running one :class:`Agent`; ``server_address`` has the bound
    port (pass ``port=0`` for a free one). :meth:`drain` waits for attempts in flight."""

    daemon_threads = True
    # Many fleet connections may open at once; a short backlog would drop SYNs and cost
    # each of them a one-second retransmit.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        agent: Agent,
        secrets: list[str] | None,
        path: str,
        max_request_bytes: int,
    ) -> None:
        self.agent = agent
        self.secrets = secrets
        self.path = path
        self.max_request_bytes = max_request_bytes
        self.closing = False
        self._active = 0
        self._idle = threading.Condition()
        super().__init__(address, _RequestHandler)

    def begin(self) -> bool:
        """Counts an attempt in; False once the server is closing."""
        with self._idle:
            if self.closing:
                return False
            self._active += 1
            return True

    def end(self) -> None:
        """Counts an attempt out."""
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuses new attempts (503) and waits up to ``timeout`` seconds for those in
        flight; True when none is left."""
        with self._idle:
            self.closing = True
            return self._idle.wait_for(lambda: self._active == 0, timeout)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "redrive-sdk"
    # Event lines are small writes; Nagle's algorithm would hold them back.
    disable_nagle_algorithm = True
    server: AgentServer
    # The event loop this connection's async handlers run in: one per connection thread,
    # created on first use, closed with the connection (asyncio.run per request costs more).
    _loop: asyncio.AbstractEventLoop | None = None

    def finish(self) -> None:
        """Closes the connection and its event loop."""
        try:
            super().finish()
        finally:
            if self._loop is not None:
                self._loop.close()
                self._loop = None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one log line per attempt would cost more than the attempt."""

    def _send(self, status: int, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, r: Refusal, close: bool = False) -> None:
        self._send(r.status, r.body, close)

    def _on_path(self) -> bool:
        path = self.path.split("?", 1)[0]
        if path == self.server.path:
            return True
        self._refuse(
            refusal(404, "invalid_input", f"no agent at {path}; it serves {self.server.path}")
        )
        return False

    def do_GET(self) -> None:
        """A liveness check: what the agent serves."""
        if self._on_path():
            self._send(200, info(self.server.agent.kinds))

    def do_POST(self) -> None:
        """One attempt."""
        body = self._read_body()
        if body is None or not self._on_path():
            return
        prep = prepare(body, self.headers.get(HEADER), self.server.secrets)
        if isinstance(prep, Refusal):
            self._refuse(prep)
            return
        if not self.server.begin():
            self._refuse(
                refusal(503, "upstream_unavailable", "the agent is shutting down"), close=True
            )
            return
        try:
            self._stream(prep)
        finally:
            self.server.end()

    def _stream(self, task: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", NDJSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        lock = threading.Lock()
        broken = False
        answered = False

        def write(line: str, final: bool = False) -> None:
            nonlocal broken, answered
            if not final and (broken or peer_gone(self.connection)):
                # A step must not start once nobody can record it: its side effect would be
                # repeated by the retry (the fleet has timed the attempt out or gone away).
                broken = True
                raise AttemptClosed("the fleet closed this attempt's connection")
            data = line.encode("utf-8") + b"\n"
            chunk = b"%x\r\n%b\r\n" % (len(data), data)
            with lock:
                # After the final line nothing more may go out: a late event from a handler's
                # stray thread would land in the next response on this connection.
                if broken or answered:
                    return
                answered = final
                try:
                    self.wfile.write(chunk + b"0\r\n\r\n" if final else chunk)
                except OSError:
                    # The fleet went away (its timeout, a crash): the attempt is over for it.
                    broken = True

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        reply = self.server.agent.run_line(task, lambda event: write(dumps(event)), self._loop)
        write(reply, final=True)
        with lock:
            if broken:
                self.close_connection = True

    def _read_body(self) -> bytes | None:
        limit = self.server.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            self._refuse(refusal(411, "invalid_input", "a request needs Content-Length"), True)
            return None
        try:
            n = int(length)
            if n < 0:
                raise ValueError(length)
        except ValueError:
            self._refuse(refusal(400, "invalid_input", f"bad Content-Length {length!r}"), True)
            return None
        if n > limit:
            self._refuse(
                refusal(413, "invalid_input", f"the request is {n} bytes; the limit is {limit}"),
                True,
            )
            return None
        body = self.rfile.read(n)
        if len(body) < n:
            self.close_connection = True
            return None
        return body

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._refuse(refusal(400, "invalid_input", "bad chunked encoding"), True)
                return None
            if size == 0:
                break
            total += size
            if total > limit:
                self._refuse(
                    refusal(413, "invalid_input", f"the request is over {limit} bytes"), True
                )
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)


def peer_gone(sock: socket.socket) -> bool:
    """Whether the client closed the connection (readable with nothing to read). A client that
    already sent its next keep-alive request is not gone."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def make_server(
    agent: Agent,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    secrets: str | Sequence[str] | None = None,
    path: str = "/",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> AgentServer:
    """A bound, not yet serving :class:`AgentServer` (call ``serve_forever()``; for tests in a
    thread, with ``port=0``)."""
    return AgentServer((host, port), agent, secrets_list(secrets), path, max_request_bytes)


def serve_http(
    agent: Agent,
    host: str = "127.0.0.1",
    port: int = 8000,
    secrets: str | Sequence[str] | None = None,
    path: str = "/",
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    drain_timeout: float = 30.0,
) -> None:
    """Serves ``agent`` until SIGINT or SIGTERM, then refuses new attempts (503, retried by
    the fleet) and waits up to ``drain_timeout`` seconds for those in flight.

    With ``secrets`` (one or a list, for rotation) every request must carry a valid
    ``Redrive-Signature``; set the same secrets in the fleet's ``[[handlers]]`` entry.
    """
    server = make_server(
        agent, host, port, secrets=secrets, path=path, max_request_bytes=max_request_bytes
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    bound_host, bound_port = server.server_address[:2]
    print(
        f"redrive agent serving {', '.join(agent.kinds) or 'no kinds'} on "
        f"http://{bound_host!s}:{bound_port}{path}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.drain(drain_timeout)
        server.server_close()
