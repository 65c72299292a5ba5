"""Shared fixtures: the conformance vectors and a real redis-server on a free loopback port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

#: The repository's shared conformance vectors (sdk/python/tests -> the repository root).
CONFORMANCE = Path(__file__).resolve().parents[3] / "conformance"


def vectors(name: str) -> Any:
    """One conformance file, parsed."""
    with (CONFORMANCE / name).open(encoding="utf-8") as f:
        return json.load(f)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never Redis's default 6379)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 6379:
            return port


@dataclass
class RedisServer:
    """A redis-server this test session started."""

    url: str
    port: int

    def client(self) -> redis.Redis:
        """A client decoding replies as text."""
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)


def _wait_ready(server: RedisServer, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if server.client().ping():
                return True
        except redis.ConnectionError:
            time.sleep(0.05)
    return False


def start_redis(log: Path, port: int | None = None) -> tuple[RedisServer, subprocess.Popen[bytes]]:
    """Starts a redis-server without persistence on ``port`` (a free loopback port when
    ``None``) and waits until it answers."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: the producer tests need a real Redis")
    for _ in range(5 if port is None else 50):
        chosen = free_port() if port is None else port
        proc = subprocess.Popen(
            [
                exe,
                *("--port", str(chosen), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--logfile", str(log)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(f"redis://127.0.0.1:{chosen}/0", chosen)
        if _wait_ready(server, proc):
            return server, proc
        # The port was taken between the probe and the start, or the server hung (or, on a
        # fixed port, the old server's socket is not released yet): try again.
        stop_redis(proc)
        if port is not None:
            time.sleep(0.1)
    pytest.fail(f"redis-server did not start; see {log}")


def stop_redis(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    """Stops a redis-server started by :func:`start_redis` (SIGKILL when ``kill``)."""
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server without persistence on a free loopback port, killed at the end."""
    server, proc = start_redis(tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        yield server
    finally:
        stop_redis(proc)


class OwnRedis:
    """A redis-server of one test's own, which the test may kill and start again on the same
    port (no persistence: a restart loses every key)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.server, self.proc = start_redis(log)

    def kill(self) -> None:
        """SIGKILLs the server."""
        stop_redis(self.proc, kill=True)

    def restart(self) -> None:
        """Starts the server again on the same port, empty."""
        self.server, self.proc = start_redis(self.log, self.server.port)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of this test's own (see :class:`OwnRedis`), stopped at the end."""
    own = OwnRedis(tmp_path / "redis.log")
    try:
        yield own
    finally:
        stop_redis(own.proc)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing the server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"
