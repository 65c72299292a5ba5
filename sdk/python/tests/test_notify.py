"""Tenant notifications: verify_notification and the example receiver, over real HTTP."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redrive import signature
from redrive.notify import InvalidNotification, Notification, verify_notification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from notify_receiver import make_receiver

SECRET = "n0tify-s3cret"  # noqa: S105 (a test secret)


def event(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "acme/1763800000000-0",
        "type": "dead_lettered",
        "tenant": "acme",
        "at": 1763800000000,
        "data": {"count": 1000, "by_class": {"schema_mismatch": 1000}, "samples": []},
    }
    doc.update(over)
    return doc


def signed(doc: dict[str, Any], secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    body = json.dumps(doc).encode()
    headers = {
        "Redrive-Signature": signature.sign(secret, body),
        "Redrive-Event": str(doc.get("type")),
        "Redrive-Event-Id": str(doc.get("id")),
        "Redrive-Tenant": str(doc.get("tenant")),
    }
    return headers, body


def test_a_signed_notification_reads_whole() -> None:
    headers, body = signed(event())
    n = verify_notification(["old", SECRET], {k.lower(): v for k, v in headers.items()}, body)
    assert n == Notification(
        id="acme/1763800000000-0",
        type="dead_lettered",
        tenant="acme",
        at=1763800000000,
        data=event()["data"],
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("secret", "does not match"),
        ("body", "does not match"),
        ("stale", "away from this clock"),
        ("missing", "missing Redrive-Signature"),
        ("id", "Redrive-Event-Id disagrees"),
        ("shape", "no valid 'at'"),
    ],
)
def test_what_is_refused_says_why_and_never_the_secret(change: str, why: str) -> None:
    doc = event(at="later") if change == "shape" else event()
    headers, body = signed(doc, "other" if change == "secret" else SECRET)
    if change == "body":
        body = body.replace(b"1000", b"1001", 1)
    if change == "stale":
        headers["Redrive-Signature"] = signature.sign(SECRET, body, t=int(time.time()) - 3600)
    if change == "missing":
        del headers["Redrive-Signature"]
    if change == "id":
        headers["Redrive-Event-Id"] = "acme/2-0"
    with pytest.raises(InvalidNotification) as e:
        verify_notification(SECRET, headers, body)
    assert why in e.value.reason
    assert SECRET not in e.value.reason


@pytest.fixture
def receiver() -> Iterator[tuple[tuple[str, int], list[Notification]]]:
    got: list[Notification] = []
    server = make_receiver([SECRET], got.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[0], server.server_address[1]
    try:
        yield (str(host), int(port)), got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def post(addr: tuple[str, int], headers: dict[str, str], body: bytes) -> int:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_example_receiver_takes_each_event_once_and_refuses_forgeries(
    receiver: tuple[tuple[str, int], list[Notification]],
) -> None:
    url, got = receiver
    headers, body = signed(event())
    assert post(url, headers, body) == 204
    assert post(url, headers, body) == 204, "a duplicate is answered, not taken twice"
    other = event(id="acme/1763800000001-0", type="breaker_opened", data={"to": "open"})
    assert post(url, *signed(other)) == 204
    assert post(url, *signed(event(id="acme/9-0"), "forged")) == 401
    assert [n.id for n in got] == ["acme/1763800000000-0", "acme/1763800000001-0"]
    assert got[1].type == "breaker_opened"
