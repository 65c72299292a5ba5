"""Announcing new tenants against a real redis-server: after an enqueue whose ``SADD`` added a
tenant, the producers publish the round trip's tenants on ``{prefix}:tenants:new`` (what
members subscribe to); a refused publish is logged and the enqueue stands."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio

from redrive import AsyncProducer, NewTask, Producer

from .conftest import OwnRedis, RedisServer

#: How long a test waits for one pub/sub message, seconds.
WAIT = 5.0


class Channel:
    """A subscriber on one channel, on a connection of its own, subscribed before use."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # redis-py: unannotated
        self.pubsub.subscribe(channel)
        confirmed = self._read(ignore_subscribe=False)
        assert confirmed["type"] == "subscribe", confirmed

    def _read(self, ignore_subscribe: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            got: dict[str, Any] | None = self.pubsub.get_message(
                ignore_subscribe_messages=ignore_subscribe, timeout=left
            )
            if got is not None:
                return got
        raise AssertionError(f"no message on {self.channel} within {WAIT} s")

    def next(self) -> str:
        """The next message's text (fails after :data:`WAIT` seconds without one)."""
        got = self._read()
        assert got["type"] == "message", got
        data: str = got["data"]
        return data

    def nothing_more(self) -> None:
        """Asserts that nothing was published since the last message read: a marker published
        now is the next message (a channel delivers in order), so no wait on silence."""
        marker = f"marker-{uuid.uuid4().hex}"
        self.client.publish(self.channel, marker)
        assert self.next() == marker, "an unexpected announcement came before the marker"

    def close(self) -> None:
        """Closes the subscription's connection."""
        self.pubsub.close()


def entry_ids(r: redis.Redis, prefix: str, tenant: str) -> list[str]:
    """The ids of the tenant's lane entries, in order."""
    entries = r.xrange(f"{prefix}:{{{tenant}}}:lane")
    assert entries is not None
    return [str(entry_id) for entry_id, _ in entries]


@pytest.fixture
def channel(redis_server: RedisServer, prefix: str) -> Any:
    """A subscriber on the test's ``{prefix}:tenants:new``."""
    sub = Channel(redis_server.client(), f"{prefix}:tenants:new")
    yield sub
    sub.close()


@pytest.mark.parametrize("records", [True, False], ids=["records", "plain-xadd"])
def test_a_new_tenant_is_announced_once_after_its_task_landed(
    redis_server: RedisServer, prefix: str, channel: Channel, records: bool
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, records=records)
    # Redis forgot the script: the tasks go in a second round, the SADD only in the first; the
    # announcement follows the round that lands them.
    r.script_flush()
    first = producer.enqueue("acme", "k", {"n": 1})
    assert channel.next() == "acme"
    # Published after the write: the entry is there by the time the message arrives.
    assert entry_ids(r, prefix, "acme") == [first.entry_id]
    producer.enqueue("acme", "k", {"n": 2})
    producer.enqueue_many([NewTask("acme", "k", 3), NewTask("acme", "k", 4)])
    channel.nothing_more()
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_a_batch_adding_two_tenants_announces_its_tenants_in_one_message(
    redis_server: RedisServer, prefix: str, channel: Channel
) -> None:
    r = redis_server.client()
    producer = Producer(redis.Redis(port=redis_server.port), key_prefix=prefix)
    producer.enqueue("acme", "k", 0)
    assert channel.next() == "acme"
    got = producer.enqueue_many(
        [
            NewTask("initech", "k", 1),
            NewTask("acme", "k", 2),
            {"tenant": "globex", "kind": "k", "payload": 3},
            NewTask("initech", "k", 4),
        ]
    )
    assert len(got) == 4
    # The round trip's distinct tenants, sorted, as the Rust producer sends them.
    assert channel.next() == "acme,globex,initech"
    channel.nothing_more()
    assert r.xlen(f"{prefix}:{{globex}}:lane") == 1
    assert r.xlen(f"{prefix}:{{initech}}:lane") == 2


def test_the_async_producer_announces_as_the_sync_one(
    redis_server: RedisServer, prefix: str, channel: Channel
) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=redis_server.port)
        try:
            producer = AsyncProducer(client, key_prefix=prefix)
            await producer.enqueue("acme", "k", 1)
            await producer.enqueue("acme", "k", 2)
            await producer.enqueue_many([NewTask("globex", "k", 3), NewTask("hooli", "k", 4)])
            await producer.enqueue_many([NewTask("globex", "k", 5)])
            plain = AsyncProducer(client, key_prefix=prefix, records=False)
            await plain.enqueue("umbrella", "k", 6)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert channel.next() == "acme"
    assert channel.next() == "globex,hooli"
    assert channel.next() == "umbrella"
    channel.nothing_more()


def _no_publish_user(own: OwnRedis) -> tuple[str, str]:
    """A user of ``own``'s server allowed everything but ``PUBLISH``: its name and password."""
    name, password = "producer", secrets.token_hex(16)
    admin = own.server.client()
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=["-publish"],
    )
    admin.close()
    return name, password


def test_a_refused_publish_is_logged_and_the_enqueue_stands(
    own_redis: OwnRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, password = _no_publish_user(own_redis)
    admin = own_redis.server.client()
    sub = Channel(own_redis.server.client(), f"{prefix}:tenants:new")
    client = redis.Redis(port=own_redis.server.port, username=name, password=password)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish(f"{prefix}:tenants:new", "x")  # the user really cannot publish
        producer = Producer(client, key_prefix=prefix)
        with caplog.at_level(logging.WARNING, "redrive.producer"):
            one = producer.enqueue("acme", "k", {"n": 1}, task_id="t-1")
            many = producer.enqueue_many([NewTask("acme", "k", 2), NewTask("globex", "k", 3)])
            producer.enqueue("globex", "k", 4)  # both registered: nothing to announce
        assert (one.task_id, one.is_duplicate) == ("t-1", False)
        assert [e.is_duplicate for e in many] == [False, False]
        assert entry_ids(admin, prefix, "acme") == [one.entry_id, many[0].entry_id]
        assert admin.hget(f"{prefix}:{{acme}}:task:t-1", "state") == "queued"
        assert admin.smembers(f"{prefix}:tenants") == {"acme", "globex"}
        warnings = [rec for rec in caplog.records if rec.name == "redrive.producer"]
        assert [rec.levelno for rec in warnings] == [logging.WARNING, logging.WARNING]
        first, second = (rec.getMessage() for rec in warnings)
        channel = f"{prefix}:tenants:new"
        assert first.startswith(f"new tenants acme enqueued but not announced on {channel}")
        assert "publish" in first, "the Redis refusal is named"
        assert second.startswith("new tenants acme,globex enqueued but not announced")
        assert password not in caplog.text
        sub.nothing_more()
    finally:
        client.close()
        admin.close()
        sub.close()


def test_the_async_producer_logs_a_refused_publish_and_returns_the_task(
    own_redis: OwnRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, password = _no_publish_user(own_redis)

    async def scenario() -> list[str]:
        client = redis.asyncio.Redis(port=own_redis.server.port, username=name, password=password)
        try:
            producer = AsyncProducer(client, key_prefix=prefix)
            one = await producer.enqueue("acme", "k", 1)
            many = await producer.enqueue_many([NewTask("acme", "k", 2)])
            return [one.entry_id, *(e.entry_id for e in many)]
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, "redrive.producer"):
        entries = asyncio.run(scenario())
    admin = own_redis.server.client()
    assert entry_ids(admin, prefix, "acme") == entries
    admin.close()
    warnings = [rec.getMessage() for rec in caplog.records if rec.name == "redrive.producer"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("new tenants acme enqueued but not announced")
