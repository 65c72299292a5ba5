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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server without persistence on a free loopback port, killed at the end."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: the producer tests need a real Redis")
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [
                exe,
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--logfile", str(log)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(f"redis://127.0.0.1:{port}/0", port)
        if _wait_ready(server, proc):
            break
        # The port was taken between the probe and the start, or the server hung: next one.
        proc.kill()
        proc.wait(5)
    else:
        pytest.fail(f"redis-server did not start; see {log}")
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing the server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"
