"""The producer against a real redis-server: the entries it writes are the Rust producer's
(CONTRACT.md), batches are pipelined and all-or-nothing on validation."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from redrive import AsyncProducer, EnqueueFailed, InvalidTask, NewTask, Producer
from redrive.producer import _Registered

from .conftest import RedisServer


def lane(r: redis.Redis, prefix: str, tenant: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The lane's entries, each field list in stream order: XRANGE's raw reply, read on a
    plain connection (no client-side parsing that could reorder or merge fields)."""
    kw = r.connection_pool.connection_kwargs
    # redis-py's Connection is not annotated.
    conn = redis.Connection(host=kw["host"], port=kw["port"], decode_responses=True)  # type: ignore[no-untyped-call]
    try:
        conn.send_command("XRANGE", f"{prefix}:{{{tenant}}}:lane", "-", "+")  # type: ignore[no-untyped-call]
        reply = conn.read_response()
    finally:
        conn.disconnect()  # type: ignore[no-untyped-call]
    assert isinstance(reply, list)
    return [
        (entry_id, list(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in reply
    ]


def sadd_calls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get("cmdstat_sadd", {}).get("calls", 0))


def test_enqueue_writes_the_contract_fields_in_the_rust_order(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    before = int(time.time() * 1000)
    got = producer.enqueue("acme", "triage_ticket", {"ticket": 42, "a": [1, "é"]})
    after = int(time.time() * 1000)
    assert len(got.task_id) == 32
    assert int(got.task_id, 16) >= 0
    [(entry_id, fields)] = lane(r, prefix, "acme")
    assert entry_id == got.entry_id
    names = [k for k, _ in fields]
    # The script appends `recorded` (the record was written with the entry).
    assert names == ["task_id", "tenant", "kind", "payload", "attempt", "enqueued_at", "recorded"]
    values = dict(fields)
    assert values["task_id"] == got.task_id
    assert values["tenant"] == "acme"
    assert values["kind"] == "triage_ticket"
    assert values["payload"] == '{"a":[1,"é"],"ticket":42}'
    assert values["attempt"] == "1"
    assert before <= int(values["enqueued_at"]) <= after
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_every_optional_field_and_the_own_fields_by_name(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis.Redis(port=redis_server.port), key_prefix=prefix)
    got = producer.enqueue(
        "acme",
        "triage_ticket",
        "a string payload",
        task_id="t-123:a/b@c+d=e.f_g",
        schema_version=3,
        prompt_version="v7 \u2013 beta",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        deadline=1893456000000,
        extra={"tool_version": "1.4.2", "env": "prod"},
    )
    assert got.task_id == "t-123:a/b@c+d=e.f_g"
    [(_, fields)] = lane(r, prefix, "acme")
    enqueued_at = dict(fields)["enqueued_at"]
    recorded = dict(fields)["recorded"]
    assert int(recorded) > int(enqueued_at), "the record's expiry (enqueue.lua)"
    assert fields == [
        ("task_id", "t-123:a/b@c+d=e.f_g"),
        ("tenant", "acme"),
        ("kind", "triage_ticket"),
        ("payload", '"a string payload"'),
        ("attempt", "1"),
        ("enqueued_at", enqueued_at),
        ("schema_version", "3"),
        ("prompt_version", "v7 \u2013 beta"),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
        ("deadline", "1893456000000"),
        ("env", "prod"),
        ("tool_version", "1.4.2"),
        ("recorded", recorded),
    ]


def test_enqueue_many_is_pipelined_in_chunks_of_1000(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer._registered = _Registered(interval=3600.0)  # a slow machine: still one SADD
    tasks: list[NewTask | dict[str, Any]] = []
    for i in range(2500):
        tenant = ("acme", "globex", "initech")[i % 3]
        if i % 2:
            tasks.append(NewTask(tenant, "score_lead", {"i": i}, task_id=f"t-{i}"))
        else:
            tasks.append({"tenant": tenant, "kind": "score_lead", "payload": {"i": i},
                          "task_id": f"t-{i}"})  # fmt: skip
    calls = sadd_calls(r)
    got = producer.enqueue_many(tasks)
    # The first round trip registers the tenants; the next two leave them out (registered
    # lately: test_tenant_registry.py).
    assert sadd_calls(r) - calls == 1, "one SADD, in the first of three round trips"
    assert [e.task_id for e in got] == [f"t-{i}" for i in range(2500)]
    assert r.smembers(f"{prefix}:tenants") == {"acme", "globex", "initech"}
    entries = lane(r, prefix, "globex")
    assert len(entries) == 833
    ids = [e for e, _ in entries]
    assert ids == sorted(ids, key=lambda x: tuple(map(int, x.split("-"))))
    assert [json.loads(dict(f)["payload"])["i"] for _, f in entries] == list(range(1, 2500, 3))
    # Entry ids are per lane: globex's tasks are every third one, from the second.
    assert [e.entry_id for e in got[1::3]] == ids
    assert [e.task_id for e in got[1::3]] == [dict(f)["task_id"] for _, f in entries]
    enqueued = {dict(f)["enqueued_at"] for _, f in entries}
    assert len(enqueued) == 1, "one clock reading for the batch, as the Rust producer"


def test_nothing_is_written_when_one_task_is_invalid(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    tasks = [NewTask("acme", "k", i) for i in range(5)]
    tasks[3] = NewTask("acme", "k", 3, extra={"steps": "x"})
    with pytest.raises(InvalidTask) as refused:
        producer.enqueue_many(tasks)
    assert refused.value.field == "extra"
    assert refused.value.index == 3
    assert str(refused.value).startswith("task #3: extra field name 'steps' is reserved")
    with pytest.raises(InvalidTask) as refused:
        producer.enqueue_many([{"tenant": "acme", "kind": "k", "payload": 1}, {"kind": "k"}])
    assert (refused.value.field, refused.value.index) == ("tenant", 1)
    with pytest.raises(InvalidTask) as refused:
        producer.enqueue("a b", "k", 1)
    assert (refused.value.field, refused.value.index) == ("tenant", None)
    assert r.keys(f"{prefix}*") == []


def test_a_redis_refusal_part_way_says_what_was_written(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    r.set(f"{prefix}:{{broken}}:lane", "not a stream")
    producer = Producer(redis_server.url, key_prefix=prefix)
    tasks = [NewTask("acme", "k", i) for i in range(1000)] + [NewTask("broken", "k", 0)]
    with pytest.raises(EnqueueFailed) as failed:
        producer.enqueue_many(tasks)
    assert len(failed.value.written) == 1000
    assert "the first 1000 tasks were written" in str(failed.value)
    assert isinstance(failed.value.__cause__, redis.ResponseError)
    assert len(lane(r, prefix, "acme")) == 1000


def test_the_key_prefix_is_checked() -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        Producer("redis://127.0.0.1:1/0", key_prefix="a{b}")
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Producer("redis://127.0.0.1:1/0", max_payload_bytes=0)


def test_the_async_producer_writes_the_same_entries(redis_server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=redis_server.port)
        producer = AsyncProducer(client, key_prefix=prefix)
        one = await producer.enqueue("acme", "k", {"b": 1, "a": 2}, task_id="t-0",
                                     extra={"z": "1", "a": "2"})  # fmt: skip
        many = await producer.enqueue_many(
            [NewTask("acme", "k", i, task_id=f"t-{i}") for i in range(1, 4)]
        )
        with pytest.raises(InvalidTask):
            await producer.enqueue_many([NewTask("acme", "k", 1), NewTask("acme", "", 1)])
        assert [e.task_id for e in [one, *many]] == ["t-0", "t-1", "t-2", "t-3"]
        await client.aclose()
        from_url = AsyncProducer(redis_server.url, key_prefix=prefix)
        await from_url.enqueue("globex", "k", None)
        await from_url.redis.aclose()

    asyncio.run(scenario())
    r = redis_server.client()
    entries = lane(r, prefix, "acme")
    assert len(entries) == 4
    first = entries[0][1]
    assert [k for k, _ in first] == [
        "task_id", "tenant", "kind", "payload", "attempt", "enqueued_at", "a", "z", "recorded",
    ]  # fmt: skip
    assert dict(first)["payload"] == '{"a":2,"b":1}'
    assert dict(lane(r, prefix, "globex")[0][1])["payload"] == "null"
    assert r.smembers(f"{prefix}:tenants") == {"acme", "globex"}
