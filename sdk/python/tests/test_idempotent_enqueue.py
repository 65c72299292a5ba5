"""Idempotent enqueue against a real redis-server: the producers run the fleet's enqueue.lua
(shipped byte for byte), which appends a task and writes its record in one atomic step, or
reports a duplicate with the live task's state."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import subprocess
import sys
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
import redis
import redis.asyncio

from redrive import AsyncProducer, Duplicate, Enqueued, NewTask, Producer, TaskState
from redrive.producer import ENQUEUE_SCRIPT, ENQUEUE_SCRIPT_SHA, STATS_KEEP_MS

from . import fleet
from .conftest import RedisServer
from .test_producer import lane


def record(r: redis.Redis, prefix: str, tenant: str, task_id: str) -> dict[str, str]:
    got = r.hgetall(f"{prefix}:{{{tenant}}}:task:{task_id}")
    return {str(k): str(v) for k, v in got.items()}


def duplicates_counted(r: redis.Redis, prefix: str, tenant: str) -> int:
    total = 0
    for key in r.scan_iter(f"{prefix}:{{{tenant}}}:stats:*"):
        total += int(r.hget(key, "duplicates") or 0)
        ttl = r.pttl(key)
        assert 0 < ttl <= STATS_KEEP_MS, "a stats bucket lives as long as the fleet keeps it"
    return total


def noscript_errors(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("errorstats")
    return int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


def test_the_shipped_script_is_the_fleets_byte_for_byte() -> None:
    """Drift between the SDK's copy and the fleet's scripts fails here (and so in CI)."""
    scripts = fleet.ROOT / "src/broker/scripts"
    fleets = (scripts / "lib/record.lua").read_bytes() + (scripts / "enqueue.lua").read_bytes()
    assert ENQUEUE_SCRIPT.encode("utf-8") == fleets
    import hashlib

    assert hashlib.sha1(fleets, usedforsecurity=False).hexdigest() == ENQUEUE_SCRIPT_SHA
    assert STATS_KEEP_MS == 2 * 86_400 * 1000, "src/broker/stats.rs STATS_KEEP"
    stats_rs = (fleet.ROOT / "src/broker/stats.rs").read_text(encoding="utf-8")
    assert "Duration::from_secs(2 * 86_400)" in stats_rs


def test_enqueue_writes_the_task_and_its_record_queued(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    got = producer.enqueue("acme", "triage_ticket", {"ticket": 42}, task_id="t-1")
    assert got == Enqueued("t-1", got.entry_id, None)
    assert not got.is_duplicate
    [(entry_id, fields)] = lane(r, prefix, "acme")
    assert entry_id == got.entry_id
    # `recorded` (added by the script): the record was written with the entry.
    assert [k for k, _ in fields] == [
        "task_id", "tenant", "kind", "payload", "attempt", "enqueued_at", "recorded",
    ]  # fmt: skip
    rec = record(r, prefix, "acme", "t-1")
    enq = rec["enq"]
    # `recorded` says when the record expires: the retention (default 24 h) plus an eighth
    # after the enqueue (the server's clock, as `enq`), exactly the record's expiry.
    key = f"{prefix}:{{acme}}:task:t-1"
    assert dict(fields)["recorded"] == str(int(enq) + 86_400_000 + 86_400_000 // 8)
    assert r.pexpiretime(key) == int(dict(fields)["recorded"])
    assert rec == {
        "state": "queued",
        "updated": enq,
        "kind": "triage_ticket",
        "attempt": "1",
        "entry": got.entry_id,
        "enq": enq,
        "first": enq,
        "runs": "0",
    }
    assert r.zscore(f"{prefix}:{{acme}}:tasks", "t-1") == float(enq)
    assert 97_200_000 - 10_000 < r.pttl(key) <= 97_200_000, "24 h * 9/8"
    assert r.smembers(f"{prefix}:tenants") == {"acme"}


def test_a_live_task_id_is_a_duplicate_with_its_state(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    first = producer.enqueue("acme", "k", 1, task_id="t-1")
    again = producer.enqueue("acme", "k", 2, task_id="t-1")
    assert again == Enqueued("t-1", first.entry_id, Duplicate(TaskState.QUEUED, first.entry_id))
    assert again.is_duplicate
    assert again.to_dict() == {
        "task_id": "t-1",
        "entry_id": first.entry_id,
        "duplicate": {"state": "queued", "entry": first.entry_id},
    }
    assert len(lane(r, prefix, "acme")) == 1
    assert duplicates_counted(r, prefix, "acme") == 1

    # Running (the record still says queued: running is the PEL's), then done: still refused,
    # with the record's state.
    fleet.start(r, prefix, "acme", first.entry_id)
    dup = producer.enqueue("acme", "k", 3, task_id="t-1").duplicate
    assert dup == Duplicate(TaskState.QUEUED, first.entry_id)
    fleet.done(r, prefix, "acme", "t-1", '{"ok":true}')
    dup = producer.enqueue("acme", "k", 4, task_id="t-1").duplicate
    assert dup is not None
    assert dup.state is TaskState.DONE
    assert lane(r, prefix, "acme") == [], "nothing appended (the done entry was acked and deleted)"
    assert duplicates_counted(r, prefix, "acme") == 3

    # Resolved by an operator: no longer live, so a new task with a fresh record.
    r.hset(f"{prefix}:{{acme}}:task:t-1", "state", "resolved")
    new = producer.enqueue("acme", "k", 5, task_id="t-1")
    assert new.duplicate is None
    assert new.entry_id != first.entry_id
    rec = record(r, prefix, "acme", "t-1")
    assert rec["state"] == "queued"
    assert rec["entry"] == new.entry_id
    assert not {"output", "started", "member"} & set(rec), "the old record is replaced whole"
    assert [e for e, _ in lane(r, prefix, "acme")] == [new.entry_id]


def test_duplicates_in_a_batch_are_reported_in_place(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("globex", "k", 0, task_id="t-0")
    got = producer.enqueue_many(
        [
            NewTask("acme", "k", 1, task_id="t-1"),
            NewTask("globex", "k", 2, task_id="t-0"),
            NewTask("acme", "k", 3, task_id="t-1"),
            NewTask("acme", "k", 4),
        ]
    )
    assert [g.task_id for g in got][:3] == ["t-1", "t-0", "t-1"]
    assert [g.is_duplicate for g in got] == [False, True, True, False]
    assert got[2].entry_id == got[0].entry_id
    assert got[2].duplicate == Duplicate(TaskState.QUEUED, got[0].entry_id)
    assert len(lane(r, prefix, "acme")) == 2
    assert len(lane(r, prefix, "globex")) == 1


def _enqueue_from_a_process(
    url: str, prefix: str, ids: list[str], *, barrier: Barrier, seed: int, results: Queue[Any]
) -> None:
    producer = Producer(url, key_prefix=prefix)
    order = list(ids)
    random.Random(seed).shuffle(order)
    single, batch = order[0], order[1:]
    barrier.wait(30)
    out = [producer.enqueue("acme", "k", {"by": seed}, task_id=single)]
    out += producer.enqueue_many([NewTask("acme", "k", {"by": seed}, task_id=t) for t in batch])
    results.put([(e.task_id, e.is_duplicate) for e in out])


def test_concurrent_enqueues_from_processes_make_one_task_per_id(
    redis_server: RedisServer, prefix: str
) -> None:
    """Six OS processes enqueue the same 40 task_ids at once (each in its own order, one
    alone and the rest pipelined): exactly one lane entry per id, every other enqueue a
    duplicate, counted."""
    procs, ids = 6, [f"t-{i}" for i in range(40)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    queue: Queue[Any] = ctx.Queue()
    workers = [
        ctx.Process(
            target=_enqueue_from_a_process,
            args=(redis_server.url, prefix, ids),
            kwargs={"barrier": barrier, "seed": seed, "results": queue},
        )
        for seed in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        results = [queue.get(timeout=60) for _ in workers]
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in workers] == [0] * procs
    won: dict[str, int] = {}
    for result in results:
        assert sorted(t for t, _ in result) == sorted(ids)
        for task_id, dup in result:
            won[task_id] = won.get(task_id, 0) + (0 if dup else 1)
    assert won == dict.fromkeys(ids, 1), "each id appended by exactly one process"
    r = redis_server.client()
    entries = lane(r, prefix, "acme")
    assert sorted(dict(f)["task_id"] for _, f in entries) == sorted(ids)
    assert duplicates_counted(r, prefix, "acme") == (procs - 1) * len(ids)
    for _, f in entries:
        rec = record(r, prefix, "acme", dict(f)["task_id"])
        assert rec["state"] == "queued"


#: The states of a task still in flight, and of a finished one (lib/record.lua's view).
IN_FLIGHT = ("queued", "running", "retry_scheduled", "deferred", "replayed")
FINISHED = ("done", "dead_lettered", "expired", "resolved", "discarded")


def test_dedup_off_refuses_an_id_in_flight_and_replaces_a_finished_one(
    redis_server: RedisServer, prefix: str
) -> None:
    """dedup=False (ids reused on purpose): a task_id still in flight — queued, also while its
    entry runs — is a duplicate exactly as with dedup on; once done its record is replaced by
    the new task's."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, dedup=False)
    first = producer.enqueue("acme", "k", 1, task_id="t-1")
    assert first.duplicate is None
    again = producer.enqueue("acme", "k", 2, task_id="t-1")
    assert again == Enqueued("t-1", first.entry_id, Duplicate(TaskState.QUEUED, first.entry_id))
    fleet.start(r, prefix, "acme", first.entry_id, member="m-1")
    running = producer.get_task("acme", "t-1")
    assert running is not None
    assert running.state is TaskState.RUNNING
    again = producer.enqueue("acme", "k", 3, task_id="t-1")
    assert again.duplicate == Duplicate(TaskState.QUEUED, first.entry_id), "the record's state"
    assert len(lane(r, prefix, "acme")) == 1
    assert duplicates_counted(r, prefix, "acme") == 2

    fleet.done(r, prefix, "acme", "t-1", '"first"', member="m-1")
    assert record(r, prefix, "acme", "t-1")["state"] == "queued", "done through the done log"
    done = producer.get_task("acme", "t-1")
    assert done is not None
    assert done.state is TaskState.DONE
    second = producer.enqueue("acme", "k", 4, task_id="t-1")
    assert second.duplicate is None
    assert second.entry_id != first.entry_id
    assert [e for e, _ in lane(r, prefix, "acme")] == [second.entry_id], "the first was acked"
    rec = record(r, prefix, "acme", "t-1")
    assert rec["state"] == "queued"
    assert rec["entry"] == second.entry_id
    assert rec["runs"] == "0"
    assert not {"member", "started", "ended", "output"} & set(rec), "the record starts empty"
    pttl = r.pttl(f"{prefix}:{{acme}}:task:t-1")
    assert 97_200_000 - 10_000 < pttl <= 97_200_000, "the new record's own expiry"
    assert duplicates_counted(r, prefix, "acme") == 2

    async def async_again() -> Enqueued:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix, dedup=False)
        try:
            return await aproducer.enqueue("acme", "k", 5, task_id="t-1")
        finally:
            await aproducer.redis.aclose()

    assert asyncio.run(async_again()).duplicate == Duplicate(TaskState.QUEUED, second.entry_id)


def test_dedup_off_decides_by_the_records_state(redis_server: RedisServer, prefix: str) -> None:
    """Every state: in flight is refused (with dedup on or off), finished is replaced with
    dedup off; with dedup on only resolved and discarded are (done, dead_lettered and expired
    are live)."""
    r = redis_server.client()
    off = Producer(redis_server.url, key_prefix=prefix, dedup=False)
    on = Producer(redis_server.url, key_prefix=prefix)
    for state in IN_FLIGHT + FINISHED:
        entries = {}
        for how in ("on", "off"):
            task_id = f"t-{how}-{state}"
            entries[how] = off.enqueue("acme", "k", 0, task_id=task_id).entry_id
            r.hset(f"{prefix}:{{acme}}:task:{task_id}", "state", state)
        live = state in IN_FLIGHT or state in ("done", "dead_lettered", "expired")
        assert on.enqueue("acme", "k", 1, task_id=f"t-on-{state}").is_duplicate == live, state
        got = off.enqueue("acme", "k", 2, task_id=f"t-off-{state}")
        if state in IN_FLIGHT:
            assert got.duplicate == Duplicate(TaskState(state), entries["off"]), state
        else:
            assert got.duplicate is None, state
            rec = record(r, prefix, "acme", f"t-off-{state}")
            assert (rec["state"], rec["entry"]) == ("queued", got.entry_id), state


def test_records_off_is_a_plain_xadd(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, records=False)
    a = producer.enqueue("acme", "k", 1, task_id="t-1")
    [b] = producer.enqueue_many([NewTask("acme", "k", 2, task_id="t-1")])
    assert a.duplicate is None
    assert b.duplicate is None
    assert a.entry_id != b.entry_id
    assert len(lane(r, prefix, "acme")) == 2
    assert sorted(r.keys(f"{prefix}*")) == [f"{prefix}:tenants", f"{prefix}:{{acme}}:lane"]


def test_the_script_is_loaded_again_after_script_flush(
    redis_server: RedisServer, prefix: str
) -> None:
    """EVALSHA answered NOSCRIPT (a restarted Redis, SCRIPT FLUSH): the producer loads the
    script and sends the refused tasks again, alone and in pipelines, sync and async."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 0, task_id="t-0")
    r.script_flush()
    before = noscript_errors(r)
    assert producer.enqueue("acme", "k", 1, task_id="t-1").duplicate is None
    assert noscript_errors(r) == before + 1
    r.script_flush()
    got = producer.enqueue_many([NewTask("acme", "k", i, task_id=f"t-{i}") for i in range(5)])
    assert noscript_errors(r) == before + 1 + 5, "the whole pipeline was refused once"
    assert [g.is_duplicate for g in got] == [True, True, False, False, False]
    assert r.script_exists(ENQUEUE_SCRIPT_SHA) == [True]

    async def scenario() -> list[Enqueued]:
        client = redis.asyncio.Redis(port=redis_server.port)
        aproducer = AsyncProducer(client, key_prefix=prefix)
        await client.script_flush()
        one = await aproducer.enqueue("acme", "k", 5, task_id="t-5")
        await client.script_flush()
        many = await aproducer.enqueue_many(
            [NewTask("acme", "k", i, task_id=f"t-{i}") for i in (5, 6)]
        )
        await client.aclose()
        return [one, *many]

    one, dup, six = asyncio.run(scenario())
    assert noscript_errors(r) == before + 1 + 5 + 1 + 2
    assert one.duplicate is None
    assert six.duplicate is None
    assert dup.duplicate == Duplicate(TaskState.QUEUED, one.entry_id)
    assert len(lane(r, prefix, "acme")) == 7


def test_the_async_producer_reports_duplicates(redis_server: RedisServer, prefix: str) -> None:
    async def scenario() -> tuple[Enqueued, Enqueued, list[Enqueued]]:
        producer = AsyncProducer(redis_server.url, key_prefix=prefix)
        a = await producer.enqueue("acme", "k", 1, task_id="t-1")
        b = await producer.enqueue("acme", "k", 1, task_id="t-1")
        c = await producer.enqueue_many(
            [NewTask("acme", "k", 1, task_id="t-1"), NewTask("acme", "k", 1, task_id="t-2")]
        )
        await producer.redis.aclose()
        return a, b, c

    a, b, c = asyncio.run(scenario())
    assert a.duplicate is None
    assert b.duplicate == Duplicate(TaskState.QUEUED, a.entry_id)
    assert [e.is_duplicate for e in c] == [True, False]
    r = redis_server.client()
    assert len(lane(r, prefix, "acme")) == 2
    assert duplicates_counted(r, prefix, "acme") == 2


def expiry_marked(r: redis.Redis, prefix: str, tenant: str, task_id: str, retention: int) -> None:
    """The record of ``task_id`` expires ``retention`` plus an eighth after its enqueue, and its
    lane entry's ``recorded`` field says exactly when (enqueue.lua, ARGV[6]); under an hour it
    gets no expiry at enqueue and ``recorded`` is ``1``."""
    key = f"{prefix}:{{{tenant}}}:task:{task_id}"
    rec = record(r, prefix, tenant, task_id)
    if retention < 3_600_000:
        entries = dict(lane(r, prefix, tenant))
        assert dict(entries[rec["entry"]])["recorded"] == "1", task_id
        assert r.pttl(key) == -1, task_id
        return
    till = int(rec["enq"]) + retention + retention // 8
    entries = dict(lane(r, prefix, tenant))
    assert dict(entries[rec["entry"]])["recorded"] == str(till), task_id
    assert r.pexpiretime(key) == till, task_id
    assert till - int(rec["enq"]) - 10_000 < r.pttl(key) <= till - int(rec["enq"]), task_id


def test_every_enqueue_path_passes_the_retention(redis_server: RedisServer, prefix: str) -> None:
    """retention_ms reaches enqueue.lua on every path: enqueue, enqueue_many (pipelined), the
    async producer's, and ``python -m redrive enqueue`` (``--retention-ms``, else
    ``$REDRIVE_TASKS__RETENTION_MS``, else 24 h)."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, retention_ms=3_600_000)
    assert producer.retention_ms == 3_600_000
    producer.enqueue("acme", "k", 1, task_id="t-1")
    producer.enqueue_many(
        [
            NewTask("acme", "k", 2, task_id="t-2"),
            {"tenant": "globex", "kind": "k", "payload": 3, "task_id": "t-3"},
        ]
    )
    for tenant, task_id in (("acme", "t-1"), ("acme", "t-2"), ("globex", "t-3")):
        expiry_marked(r, prefix, tenant, task_id, 3_600_000)

    async def async_path() -> None:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix, retention_ms=1_000)
        try:
            await aproducer.enqueue("acme", "k", 4, task_id="t-4")
            await aproducer.enqueue_many([NewTask("acme", "k", 5, task_id="t-5")])
        finally:
            await aproducer.redis.aclose()

    asyncio.run(async_path())
    expiry_marked(r, prefix, "acme", "t-4", 1_000)
    expiry_marked(r, prefix, "acme", "t-5", 1_000)

    at = ("--redis-url", redis_server.url, "--key-prefix", prefix)
    env = {k: v for k, v in os.environ.items() if k != "REDRIVE_TASKS__RETENTION_MS"}
    for task_id, extra, variable, retention in (
        ("t-6", ("--retention-ms", "7200000"), None, 7_200_000),
        ("t-7", (), "5000", 5_000),
        ("t-8", (), None, 86_400_000),
    ):
        run_env = (
            dict(env) if variable is None else {**env, "REDRIVE_TASKS__RETENTION_MS": variable}
        )
        done = subprocess.run(
            [sys.executable, "-m", "redrive", "enqueue", "acme", "k", "1", "--task-id", task_id,
             *extra, *at],
            capture_output=True, text=True, timeout=30, check=False, env=run_env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        expiry_marked(r, prefix, "acme", task_id, retention)
    producer.close()


@pytest.mark.parametrize(
    "bad", [999, 0, -1, 365 * 86_400_000 + 1, True, 1.5, "1000", None], ids=repr
)
def test_a_bad_retention_is_refused(redis_server: RedisServer, prefix: str, bad: Any) -> None:
    """retention_ms outside the fleet's range for tasks.retention_ms (1 000 ms … 365 days), or
    not a whole number, is refused when the producer is made: nothing is written."""
    r = redis_server.client()
    with pytest.raises(ValueError, match=r"retention_ms .*(out of range|whole number)"):
        Producer(redis_server.url, key_prefix=prefix, retention_ms=bad)
    with pytest.raises(ValueError, match="retention_ms"):
        AsyncProducer(redis_server.url, key_prefix=prefix, retention_ms=bad)
    assert r.keys(f"{prefix}:*") == []
    assert Producer(redis_server.url, retention_ms=1_000).retention_ms == 1_000
    assert Producer(redis_server.url, retention_ms=365 * 86_400_000).retention_ms == (
        365 * 86_400_000
    )


def test_the_cli_refuses_a_bad_retention(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()
    at = ("--redis-url", redis_server.url, "--key-prefix", prefix)
    for value, says in (("10", "out of range"), ("1h", "invalid int")):
        done = subprocess.run(
            [sys.executable, "-m", "redrive", "enqueue", "acme", "k", "1", "--retention-ms",
             value, *at],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 64, done.stderr
        assert "retention" in done.stderr
        assert says in done.stderr
    assert r.keys(f"{prefix}:*") == []
