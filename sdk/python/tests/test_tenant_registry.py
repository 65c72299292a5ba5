"""The tenant registry against a real redis-server: a producer sends ``SADD {prefix}:tenants``
only for tenants it has not registered within the last second (an ``SADD`` of them answered),
as the Rust producer does; it remembers at most a bounded number of tenants; a failed ``SADD``
or a failed round trip registers nothing, and a registry Redis lost is healed a second later.
SADDs are counted with ``INFO commandstats``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from redrive import AsyncProducer, EnqueueFailed, NewTask, Producer
from redrive.producer import _REGISTERED_FOR_S, _Registered

from .conftest import OwnRedis, RedisServer
from .test_tenant_signals import Channel


def sadd_calls(r: redis.Redis) -> int:
    """How many SADDs the server has run."""
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get("cmdstat_sadd", {}).get("calls", 0))


@pytest.fixture
def channel(redis_server: RedisServer, prefix: str) -> Any:
    """A subscriber on the test's ``{prefix}:tenants:new``."""
    sub = Channel(redis_server.client(), f"{prefix}:tenants:new")
    yield sub
    sub.close()


@pytest.mark.parametrize("records", [True, False], ids=["records", "plain-xadd"])
def test_a_tenant_enqueued_again_within_a_second_is_registered_once(
    redis_server: RedisServer, prefix: str, channel: Channel, records: bool
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, records=records)
    calls = sadd_calls(r)
    for i in range(20):
        producer.enqueue("acme", "k", i)
    producer.enqueue_many([NewTask("acme", "k", i) for i in range(5)])
    assert sadd_calls(r) - calls == 1, "one SADD: the first enqueue's"
    assert channel.next() == "acme"
    assert r.xlen(f"{prefix}:{{acme}}:lane") == 25
    time.sleep(_REGISTERED_FOR_S)
    for i in range(5):
        producer.enqueue("acme", "k", i)
    assert sadd_calls(r) - calls == 2, "a second later the tenant is registered again, once"
    channel.nothing_more()  # it was in the registry: the SADD answered 0, nothing announced
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_a_new_tenant_is_registered_at_once_and_announced(
    redis_server: RedisServer, prefix: str, channel: Channel
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1)
    assert channel.next() == "acme"
    # Were acme in the next SADD, Redis would have it again: the SADD names globex only.
    r.delete(f"{prefix}:tenants")
    calls = sadd_calls(r)
    producer.enqueue_many([NewTask("acme", "k", 2), NewTask("globex", "k", 3)])
    assert sadd_calls(r) - calls == 1
    assert r.smembers(f"{prefix}:tenants") == {"globex"}
    # The announcement is as before: the round trip's tenants, since its SADD added one.
    assert channel.next() == "acme,globex"
    producer.enqueue("globex", "k", 4)
    assert sadd_calls(r) - calls == 1
    channel.nothing_more()


def test_a_registry_redis_lost_is_healed_by_the_next_sadd_a_second_later(
    redis_server: RedisServer, prefix: str, channel: Channel
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    first = producer.enqueue("acme", "k", 1)
    assert channel.next() == "acme"
    r.delete(f"{prefix}:tenants")  # as a restart without persistence loses it
    second = producer.enqueue("acme", "k", 2)
    assert r.smembers(f"{prefix}:tenants") == set(), "registered within the second: no SADD"
    entries = r.xrange(f"{prefix}:{{acme}}:lane")
    assert entries is not None
    assert [e for e, _ in entries] == [first.entry_id, second.entry_id], "in the lane all the same"
    time.sleep(_REGISTERED_FOR_S)
    producer.enqueue("acme", "k", 3)
    assert r.smembers(f"{prefix}:tenants") == {"acme"}
    assert channel.next() == "acme", "the SADD added it again: announced"


def test_a_refused_sadd_registers_nothing(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()
    r.set(f"{prefix}:tenants", "not a set")
    producer = Producer(redis_server.url, key_prefix=prefix)
    with pytest.raises(EnqueueFailed, match="Redis refused registering the tenants"):
        producer.enqueue("acme", "k", 1)
    assert len(producer._registered) == 0
    r.delete(f"{prefix}:tenants")
    calls = sadd_calls(r)
    producer.enqueue("acme", "k", 2)
    assert sadd_calls(r) - calls == 1, "sent again at once"
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_a_failed_round_trip_registers_nothing(own_redis: OwnRedis, prefix: str) -> None:
    producer = Producer(redis.Redis(port=own_redis.server.port), key_prefix=prefix)
    own_redis.kill()
    with pytest.raises(EnqueueFailed, match="Redis failed a round trip"):
        producer.enqueue("acme", "k", 1)
    assert len(producer._registered) == 0
    own_redis.restart()
    r = own_redis.server.client()
    producer.enqueue("acme", "k", 2)
    assert sadd_calls(r) == 1
    assert r.smembers(f"{prefix}:tenants") == {"acme"}
    r.close()


def test_past_the_cap_the_producer_forgets_every_tenant(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer._registered = _Registered(most=3)
    producer.enqueue_many([NewTask(t, "k", 1) for t in ("a", "b", "c")])
    assert len(producer._registered) == 3
    calls = sadd_calls(r)
    producer.enqueue_many([NewTask(t, "k", 2) for t in ("a", "b", "c")])
    assert sadd_calls(r) == calls, "all three remembered"
    producer.enqueue("d", "k", 3)
    assert len(producer._registered) == 1, "a fourth: the memory was cleared, then d remembered"
    assert sadd_calls(r) - calls == 1
    producer.enqueue_many([NewTask(t, "k", 4) for t in ("a", "d")])
    assert sadd_calls(r) - calls == 2, "a was forgotten: registered again (d is remembered)"
    assert len(producer._registered) == 2
    assert r.smembers(f"{prefix}:tenants") == {"a", "b", "c", "d"}


def test_threads_sharing_a_producer_register_a_tenant_at_most_once_each(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer._registered = _Registered(interval=3600.0)  # no re-registration during the test
    calls = sadd_calls(r)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(25):
                producer.enqueue("acme", "k", i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert r.xlen(f"{prefix}:{{acme}}:lane") == 200
    # A thread sends the SADD only before some SADD of acme answered: its first enqueue at most.
    assert 1 <= sadd_calls(r) - calls <= 8
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_the_async_producer_registers_as_the_sync_one(
    redis_server: RedisServer, prefix: str, channel: Channel
) -> None:
    r = redis_server.client()

    async def scenario() -> None:
        client = redis.asyncio.Redis(port=redis_server.port)
        try:
            producer = AsyncProducer(client, key_prefix=prefix)
            calls = sadd_calls(r)
            for i in range(10):
                await producer.enqueue("acme", "k", i)
            assert sadd_calls(r) - calls == 1
            await producer.enqueue_many([NewTask("acme", "k", 1), NewTask("globex", "k", 2)])
            assert sadd_calls(r) - calls == 2
            r.delete(f"{prefix}:tenants")
            await producer.enqueue("globex", "k", 3)
            assert r.smembers(f"{prefix}:tenants") == set()
            await asyncio.sleep(_REGISTERED_FOR_S)
            await producer.enqueue("globex", "k", 4)
            assert sadd_calls(r) - calls == 3
            assert r.smembers(f"{prefix}:tenants") == {"globex"}
            r.set(f"{prefix}:tenants", "not a set")
            with pytest.raises(EnqueueFailed, match="registering the tenants"):
                await producer.enqueue("hooli", "k", 5)
            r.delete(f"{prefix}:tenants")
            await producer.enqueue("hooli", "k", 6)
            assert r.smembers(f"{prefix}:tenants") == {"hooli"}
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert channel.next() == "acme"
    assert channel.next() == "acme,globex"
    assert channel.next() == "globex"
    assert channel.next() == "hooli"
    channel.nothing_more()
