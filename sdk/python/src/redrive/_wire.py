"""Encoding helpers shared by the producer, the agent side and the transports."""

from __future__ import annotations

import json
from typing import Any

#: Transient failure classes: the fleet retries them under its retry policy.
TRANSIENT_CLASSES: frozenset[str] = frozenset(
    {"rate_limited", "timeout", "upstream_unavailable", "llm_error", "agent_crashed", "unknown"}
)

#: Permanent failure classes: the fleet dead-letters the task at once.
PERMANENT_CLASSES: frozenset[str] = frozenset(
    {
        "invalid_input",
        "context_overflow",
        "schema_mismatch",
        "unauthorized",
        "partial_execution",
        "malformed_entry",
        "crash_loop",
        "silent_failure",
        "expired",
        "no_handler",
    }
)

#: Every failure class name of the protocol.
CLASSES: frozenset[str] = TRANSIENT_CLASSES | PERMANENT_CLASSES

#: How many bytes of an error text a reply carries (the fleet bounds it the same way).
MAX_ERROR_BYTES = 4096

#: The protocol version this SDK speaks.
PROTOCOL_VERSION = 1


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text, UTF-8 characters unescaped, as serde_json writes it.

    Raises ``ValueError`` or ``TypeError`` for a value that is not JSON (NaN, infinities, an
    object json cannot encode).
    """
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=sort_keys
    )


def utf8_len(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (a lone surrogate counts as one replaced character)."""
    return len(text.encode("utf-8", "surrogatepass"))


def bound(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 on a character boundary (a cut is
    marked with "..."); a character UTF-8 cannot carry (a lone surrogate) becomes "?"."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[: max(limit - 3, 0)].decode("utf-8", "ignore") + "..."


def is_control(ch: str) -> bool:
    """Whether ``ch`` is a control character (Unicode category Cc, as Rust's
    ``char::is_control``)."""
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character."""
    return any(is_control(c) for c in text)
