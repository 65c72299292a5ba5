"""Tenant notifications: what a receiver of redrive's webhooks gets, and how it checks them.

A fleet with ``[[notify.targets]]`` POSTs each event to the target's URL as JSON::

    {"id": "acme/1763800000000-0", "type": "dead_lettered", "tenant": "acme",
     "at": 1763800000000, "data": {...}}

signed with the target's secret in ``Redrive-Signature`` exactly like the fleet's requests to
agents (:mod:`redrive.signature`), with the headers ``Redrive-Event`` (the type),
``Redrive-Event-Id`` (the id) and ``Redrive-Tenant``. The types and their ``data``:

- ``dead_lettered``: a digest of the tenant's dead letters over an interval — ``count``,
  ``since`` and ``until`` (ms), ``first_id``/``last_id``, ``by_class`` and up to five
  ``samples`` (id, task_id, kind, class, fingerprint, error; never a payload).
- ``escalated``: dead letters an operator escalated to the tenant — ``dead_letters`` (id,
  task_id, kind, class, fingerprint, error, assignee, folded), ``count``, ``by``, ``reason``.
- ``breaker_opened`` / ``breaker_closed``: the tenant's breaker moved — ``from``, ``to``,
  ``reason``, ``detail``, ``by``, ``at``.

Delivery is at least once: the same event may arrive twice (after a member crash, or a reply
lost on the way back); drop duplicates by its id. Answer 2xx once it is stored: anything else is
retried with backoff, then given up (the fleet's delivery log says ``failed``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .signature import HEADER, TOLERANCE_SECS, check

#: The event types a notification may have.
EVENT_TYPES = ("dead_lettered", "escalated", "breaker_opened", "breaker_closed")

#: The header naming the event's type.
EVENT_HEADER = "Redrive-Event"

#: The header carrying the event's id (the same on every retry).
EVENT_ID_HEADER = "Redrive-Event-Id"

#: The header naming the tenant.
TENANT_HEADER = "Redrive-Tenant"


class InvalidNotification(Exception):
    """A request that is not a valid, signed notification; ``reason`` says why (never a
    secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Notification:
    """One verified notification."""

    #: Its id, ``<tenant>/<outbox id>``: the same on every retry.
    id: str
    #: One of :data:`EVENT_TYPES` (or a newer type this SDK does not know yet).
    type: str
    #: The tenant it is about.
    tenant: str
    #: When the event was recorded, ms since the epoch (the Redis server's clock).
    at: int
    #: The event's details (see the module's documentation).
    data: dict[str, Any] = field(default_factory=dict)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for k, v in headers.items():
        if k.lower() == wanted:
            return v
    return None


def verify_notification(
    secrets: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: int | None = None,
    tolerance: int = TOLERANCE_SECS,
) -> Notification:
    """Checks a request's ``Redrive-Signature`` over the raw ``body`` against ``secrets`` (one,
    or several during a rotation) and reads the notification it carries.

    ``headers`` is the request's headers (names in any case). Raises
    :class:`InvalidNotification` when the signature is missing, stale or wrong, the body is not
    a notification, or the ``Redrive-Event``/``Redrive-Event-Id`` headers disagree with it.
    """
    why = check(secrets, _header(headers, HEADER), body, now, tolerance)
    if why is not None:
        raise InvalidNotification(why)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidNotification(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidNotification("the body is not a JSON object")
    for key, kind in (("id", str), ("type", str), ("tenant", str), ("at", int)):
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            raise InvalidNotification(f"the body has no valid '{key}'")
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise InvalidNotification("the body's 'data' is not an object")
    for name, key in ((EVENT_HEADER, "type"), (EVENT_ID_HEADER, "id"), (TENANT_HEADER, "tenant")):
        value = _header(headers, name)
        if value is not None and value != doc[key]:
            raise InvalidNotification(f"{name} disagrees with the body's '{key}'")
    return Notification(
        id=doc["id"], type=doc["type"], tenant=doc["tenant"], at=doc["at"], data=data
    )
