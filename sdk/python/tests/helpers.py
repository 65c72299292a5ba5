"""Building requests and reading replies in tests."""

from __future__ import annotations

import json
import threading
from typing import Any


def request(
    kind: str = "triage_ticket",
    payload: Any = None,
    *,
    steps: list[dict[str, Any]] | None = None,
    attempt: int = 1,
    task_id: str = "t-1",
) -> dict[str, Any]:
    """A protocol request with every key, as the fleet sends it."""
    return {
        "protocol": 1,
        "task_id": task_id,
        "tenant": "acme",
        "kind": kind,
        "attempt": attempt,
        "max_attempts": 5,
        "payload": payload,
        "steps": steps or [],
        "history": [],
        "deadline": None,
        "trace_id": None,
        "schema_version": None,
        "prompt_version": None,
        "enqueued_at": 1764500000000,
        "first_enqueued_at": 1764500000000,
        "replay_of": None,
        "extra": {},
    }


def step(name: str, output: Any, side_effect: bool = False, attempt: int = 1) -> dict[str, Any]:
    """A completed step as a request carries it."""
    return {
        "name": name,
        "output": output,
        "side_effect": side_effect,
        "attempt": attempt,
        "at_ms": 1764500001000,
    }


def body(req: dict[str, Any]) -> bytes:
    """A request's JSON body."""
    return json.dumps(req).encode()


class Events:
    """An ``emit`` that records events (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.items.append(event)

    def kinds(self) -> list[str]:
        """``event`` and ``name`` of each event, e.g. ``step_started:draft``."""
        return [f"{e['event']}:{e.get('name', '')}" for e in self.items]
