"""What the HTTP server and the ASGI adapter share: checking a request before it runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._wire import PROTOCOL_VERSION, dumps
from .errors import InvalidRequest
from .signature import check
from .task import Task

#: The default cap on a request body (the payload limit plus steps, history and headroom).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

#: The streamed reply's content type.
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Refusal:
    """A request answered without running it: an HTTP status and a JSON reply body, whose
    class decides the outcome at the fleet (a JSON reply wins over the status)."""

    status: int
    body: bytes


def refusal(status: int, cls: str, error: str) -> Refusal:
    """A refusal with a protocol reply of ``cls``."""
    return Refusal(status, dumps({"status": "fail", "class": cls, "error": error}).encode())


def secrets_list(secrets: str | Sequence[str] | None) -> list[str] | None:
    """Normalises a secrets argument: None (no signature required) or a non-empty list."""
    if secrets is None:
        return None
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError("secrets must be None or one or more non-empty strings")
    return keys


def prepare(body: bytes, signature: str | None, secrets: list[str] | None) -> Task | Refusal:
    """The request's task, or why it is refused: 401 ``unauthorized`` for a missing, wrong or
    stale signature when secrets are set; 400 ``invalid_input`` for a body that is not a
    protocol request."""
    if secrets is not None:
        why = check(secrets, signature, body)
        if why is not None:
            return refusal(401, "unauthorized", why)
    try:
        return Task.from_json(body)
    except InvalidRequest as e:
        return refusal(400, "invalid_input", f"not a redrive request: {e}")


def info(kinds: list[str]) -> bytes:
    """The body of a GET on the agent's path: what it serves (a liveness check)."""
    return dumps({"agent": "redrive", "protocol": PROTOCOL_VERSION, "kinds": kinds}).encode()
