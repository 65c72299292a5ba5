"""``Redrive-Signature``: how the fleet signs a request and how an agent checks it.

``t=<unix seconds>,v1=<hex>[,v1=<hex>…]``, one ``v1`` per secret, each
``hex(HMAC-SHA256(secret, "<t>.<raw body bytes>"))``. A verifier accepts when any ``v1``
equals the HMAC under any of its secrets (constant-time comparison) and ``|now - t|`` is at
most the tolerance (300 s). Holding several secrets allows rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

#: How many seconds a signature's ``t`` may differ from the verifier's clock.
TOLERANCE_SECS = 300

#: The request header that carries the signature.
HEADER = "Redrive-Signature"


def _secrets(secrets: str | Sequence[str]) -> list[str]:
    return [secrets] if isinstance(secrets, str) else list(secrets)


def _hmac_hex(secret: str, t: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(secrets: str | Sequence[str], body: bytes, t: int | None = None) -> str:
    """The header value signing ``body`` at unix second ``t`` (now by default) with every
    secret, in order."""
    keys = _secrets(secrets)
    if not keys:
        raise ValueError("sign needs at least one secret")
    t = int(time.time()) if t is None else t
    return f"t={t}" + "".join(f",v1={_hmac_hex(s, t, body)}" for s in keys)


def check(
    secrets: str | Sequence[str],
    header: str | None,
    body: bytes,
    now: int | None = None,
    tolerance: int = TOLERANCE_SECS,
) -> str | None:
    """Why ``header`` does not sign ``body`` (a short reason that never shows a secret), or
    ``None`` when it does."""
    if not header:
        return f"missing {HEADER} header"
    t: int | None = None
    sigs: list[bytes] = []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            continue
        if key == "t" and value and value.isascii() and value.isdigit():
            t = int(value)
        elif key == "v1":
            sigs.append(value.encode("utf-8", "replace"))
    if t is None:
        return f"{HEADER} has no timestamp t"
    if not sigs:
        return f"{HEADER} has no v1 signature"
    now = int(time.time()) if now is None else now
    if abs(now - t) > tolerance:
        return f"{HEADER} is {abs(now - t)} s away from this clock; the limit is {tolerance} s"
    for s in _secrets(secrets):
        want = _hmac_hex(s, t, body).encode()
        # Every candidate is compared, so the time taken does not say which one matched.
        if any([hmac.compare_digest(want, got) for got in sigs]):
            return None
    return f"{HEADER} does not match this agent's secrets"


def verify(
    secrets: str | Sequence[str],
    header: str | None,
    body: bytes,
    now: int | None = None,
    tolerance: int = TOLERANCE_SECS,
) -> bool:
    """Whether ``header`` signs ``body`` under one of ``secrets`` within ``tolerance`` seconds
    of ``now`` (the current unix time by default)."""
    return check(secrets, header, body, now, tolerance) is None
