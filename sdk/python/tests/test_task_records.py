"""Reading task records back (``get_task``) and waiting for a task's result (``wait``) against
a real redis-server, and ``python -m redrive task|wait`` as a child process.

The SDK tests run no fleet member: a task's start and finish are done by tests/fleet.py as a
member does them — a start is ``XREADGROUP`` + ``XCLAIM`` with no record write (readers show
the task running from the PEL), a finish runs the fleet's own record writer (lib/record.lua) as
fast_ack.lua, retry.lua, dead_letter.lua and begin.lua call it, the events entry included —
written, as the fleet does, only while the tenant's waiters ZSET holds a live registration.
The Rust end-to-end test (tests/e2e_wait.rs) covers the real member.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

import redrive.records
from redrive import (
    AsyncProducer,
    InvalidTask,
    Producer,
    Run,
    TaskFailed,
    TaskReader,
    TaskRecord,
    TaskState,
    WaitTimeout,
)

from . import fleet
from .conftest import OwnRedis, RedisServer


def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Waits (bounded) until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def blocked_readers(r: redis.Redis) -> int:
    """Clients blocked in XREAD right now."""
    clients: list[dict[str, Any]] = r.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in str(c.get("flags")))


def calls(r: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def registrations(r: redis.Redis, prefix: str, tenant: str = "acme") -> dict[str, float]:
    """The tenant's waiters ZSET: member -> score (when it expires, server ms)."""
    got: Any = r.zrange(fleet.waiters(prefix, tenant), 0, -1, withscores=True)
    return {str(member): float(score) for member, score in got}


def server_ms(r: redis.Redis) -> int:
    """The Redis server's clock, ms."""
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def registered_once(r: redis.Redis, prefix: str) -> float:
    """Asserts the waiters ZSET holds exactly one live registration, expiring about 15 s from
    the server's now; returns its score."""
    now = server_ms(r)
    got = registrations(r, prefix)
    assert len(got) == 1, got
    ((member, score),) = got.items()
    assert len(member) == 32
    int(member, 16)  # a uuid4().hex
    assert now + 15_000 - 6_000 <= score <= now + 15_000 + 100
    return score


class Waiter:
    """``wait`` run on a thread; ``result()`` returns its record or raises what it raised."""

    def __init__(self, fn: Callable[[], TaskRecord]) -> None:
        self.value: TaskRecord | None = None
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], TaskRecord]) -> None:
        try:
            self.value = fn()
        except BaseException as e:
            self.error = e
        self.ended_at = time.monotonic()

    def result(self, timeout: float) -> TaskRecord:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "wait did not return"
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


def test_get_task_reads_a_queued_task(redis_server: RedisServer, prefix: str) -> None:
    producer = Producer(redis_server.url, key_prefix=prefix)
    before = int(time.time() * 1000)
    got = producer.enqueue("acme", "triage_ticket", {"ticket": 1}, task_id="t-1")
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert rec.state is TaskState.QUEUED
    assert str(rec.state) == "queued"
    assert (rec.tenant, rec.task_id, rec.kind, rec.attempt) == ("acme", "t-1", "triage_ticket", 1)
    assert rec.entry == got.entry_id
    assert rec.enqueued_at is not None
    assert before - 1000 <= rec.enqueued_at <= int(time.time() * 1000) + 1000
    assert rec.first_enqueued_at == rec.enqueued_at == rec.updated_at
    assert (rec.run_count, rec.runs, rec.member, rec.started_at) == (0, (), None, None)
    assert (rec.output, rec.has_output, rec.output_truncated) == (None, False, False)
    assert not rec.finished
    assert not rec.failed
    assert rec.fields["state"] == "queued"
    assert producer.get_task("acme", "t-unknown") is None
    with pytest.raises(InvalidTask) as bad:
        producer.get_task("a b", "t-1")
    assert bad.value.field == "tenant"
    with pytest.raises(InvalidTask) as bad:
        producer.get_task("acme", "t" * 129)
    assert bad.value.field == "task_id"

    async def read() -> TaskRecord | None:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix)
        try:
            return await aproducer.get_task("acme", "t-1")
        finally:
            await aproducer.redis.aclose()

    assert asyncio.run(read()) == rec


def test_a_failed_run_then_done_reads_two_runs(redis_server: RedisServer, prefix: str) -> None:
    """A failed run (in the history: r1, outcome the class) and the done run (the record's
    member/started/ended, outcome ok): two runs, run_count 2; times, output (JSON; raw text
    when truncated), failure fields, any client."""
    r = redis_server.client()
    producer = Producer(redis.Redis(port=redis_server.port), key_prefix=prefix)  # bytes replies
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    fleet.start(r, prefix, "acme", entry, member="m-a")
    again = fleet.retry(r, prefix, "acme", "t-1", entry, cls="timeout", error="slow",
                        member="m-a", attempt=2)  # fmt: skip
    fleet.start(r, prefix, "acme", again, member="m-b")
    fleet.done(r, prefix, "acme", "t-1", '{"summary":"ok","n":[1,2]}', member="m-b")
    key = f"{prefix}:{{acme}}:task:t-1"
    assert r.hget(key, "runs") == "1", "the history holds the failed run only"
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert rec.state is TaskState.DONE
    assert rec.finished
    assert not rec.failed
    assert rec.output == {"summary": "ok", "n": [1, 2]}
    assert rec.has_output
    assert rec.run_count == 2
    assert [(x.number, x.member, x.outcome) for x in rec.runs] == [
        (1, "m-a", "timeout"),
        (2, "m-b", "ok"),
    ]
    assert all(isinstance(x, Run) and x.start and x.end and x.start <= x.end for x in rec.runs)
    first_end, last_end = rec.runs[0].end, rec.runs[1].end
    assert first_end is not None
    assert last_end is not None
    assert first_end <= last_end
    assert (rec.member, rec.attempt, rec.entry) == ("m-b", 2, again)
    assert (rec.cls, rec.error) == ("timeout", "slow"), "the last failure stays in the record"
    assert (rec.runs[1].start, rec.runs[1].end) == (rec.started_at, rec.ended_at)
    assert 0 < r.ttl(key) <= 86_400, "a done record expires"
    d = rec.to_dict()
    assert d["state"] == "done"
    assert d["run_count"] == 2
    assert d["runs"][1] == {"run": 2, "start": rec.runs[1].start, "member": "m-b",
                            "end": rec.runs[1].end, "outcome": "ok"}  # fmt: skip
    assert json.loads(json.dumps(d)) == d

    truncated = TaskRecord.from_fields(
        "acme", "t-2", {b"state": b"done", b"output": b'{"long":"tex', b"output_truncated": b"1"}
    )
    assert truncated.output == '{"long":"tex'
    assert truncated.output_truncated
    assert TaskRecord.from_fields("acme", "t-3", {"state": "done", "output": "null"}).has_output
    odd = TaskRecord.from_fields("acme", "t-4", {"state": "later", "attempt": "x"})
    assert odd.state is None
    assert odd.attempt is None
    assert odd.fields["state"] == "later"
    assert (odd.run_count, odd.runs) == (0, ())


def test_a_done_task_reads_done_from_the_done_log(redis_server: RedisServer, prefix: str) -> None:
    """Started (PEL only) and done at the first attempt as fast_ack.lua does it for an entry
    enqueue.lua appended (its record's expiry covers the retention): the entry is acked and
    deleted, the facts go to the done log of the entry's second and the record is not written
    (it still says queued on the entry). get_task (sync, async, the CLI) and wait read it done
    through task_read.lua: member, started, ended and the output from the log; the history
    empty, one ok run. A second enqueue of the task_id is a duplicate of a done task."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    key = f"{prefix}:{{acme}}:task:t-1"
    expiry = r.pexpiretime(key)
    fleet.start(r, prefix, "acme", entry, member="m-1")
    fleet.done(r, prefix, "acme", "t-1", '"fine"', member="m-1", ago_ms=250)
    stored: Any = r.hgetall(key)
    assert (stored["state"], stored["entry"], stored["runs"]) == ("queued", entry, "0")
    assert not {"member", "started", "ended", "output"} & set(stored), "no record write"
    assert r.pexpiretime(key) == expiry, "the record keeps the expiry set at enqueue"
    assert r.xlen(fleet.lane(prefix, "acme")) == 0, "acked and deleted"
    log = fleet.done_log(prefix=prefix, r=r, tenant="acme", entry=entry)
    logged: Any = r.xrange(log)
    [(_, facts)] = logged
    assert facts["_m"] == "m-1"
    assert int(facts[entry]) == int(facts["_e"]) - 250
    assert facts[f"{entry}o"] == '"fine"'
    assert r.pexpiretime(log) == expiry, "the log lives as long as the record pointing into it"

    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert rec.state is TaskState.DONE
    assert rec.finished
    assert rec.output == "fine"
    assert not rec.output_truncated
    assert (rec.member, rec.entry) == ("m-1", entry)
    assert rec.ended_at == int(facts["_e"])
    assert rec.updated_at == rec.ended_at
    assert rec.started_at is not None
    assert rec.ended_at - rec.started_at == 250, "started `ago` ms before the ack"
    assert rec.run_count == 1
    assert rec.runs == (Run(1, rec.started_at, "m-1", rec.ended_at, "ok"),)
    d = rec.to_dict()
    assert (d["run_count"], d["runs"]) == (1, [{"run": 1, "start": rec.started_at,
        "member": "m-1", "end": rec.ended_at, "outcome": "ok"}])  # fmt: skip
    assert producer.wait("acme", "t-1", 5) == rec

    async def read() -> tuple[TaskRecord | None, TaskRecord]:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix)
        try:
            return (
                await aproducer.get_task("acme", "t-1"),
                await aproducer.wait("acme", "t-1", 5),
            )
        finally:
            await aproducer.aclose()
            await aproducer.redis.aclose()

    assert asyncio.run(read()) == (rec, rec)
    at = ("--redis-url", redis_server.url, "--key-prefix", prefix)
    shown = cli("task", "acme", "t-1", *at)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == json.loads(json.dumps(d))

    # The task_id is a duplicate of the done task (enqueue.lua: its entry left the lane).
    again = producer.enqueue("acme", "k", 2, task_id="t-1")
    assert again.duplicate is not None
    assert (again.duplicate.state, again.duplicate.entry) == (TaskState.DONE, entry)
    assert r.xlen(fleet.lane(prefix, "acme")) == 0, "nothing appended"

    # A batch of the same second: one log entry per ack batch; a cut output; no output kept.
    cut = producer.enqueue("acme", "k", 3, task_id="t-cut").entry_id
    bare = producer.enqueue("acme", "k", 4, task_id="t-bare").entry_id
    fleet.done(r, prefix, "acme", "t-cut", "ab", member="m-2", truncated=True)
    fleet.done(r, prefix, "acme", "t-bare", None, member="m-2")
    got_cut = producer.get_task("acme", "t-cut")
    assert got_cut is not None
    assert (got_cut.state, got_cut.member, got_cut.entry) == (TaskState.DONE, "m-2", cut)
    assert (got_cut.output, got_cut.output_truncated) == ("ab", True)
    got_bare = producer.get_task("acme", "t-bare")
    assert got_bare is not None
    assert (got_bare.state, got_bare.member, got_bare.entry) == (TaskState.DONE, "m-2", bare)
    assert (got_bare.has_output, got_bare.output) == (False, None)
    producer.close()


def test_a_longer_fleet_retention_gets_the_record_written(
    redis_server: RedisServer, prefix: str
) -> None:
    """A producer whose retention_ms is shorter than the fleet's: the expiry set at enqueue
    does not cover the member's retention, so its ack writes the done record itself (and
    gives it the fleet's retention): nothing goes to the done log, nothing expires early."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix, retention_ms=7_200_000)
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    key = f"{prefix}:{{acme}}:task:t-1"
    assert 8_100_000 - 10_000 < r.pttl(key) <= 8_100_000, "2 h * 9/8"
    fleet.done(r, prefix, "acme", "t-1", '"kept"', member="m-1", retention_ms=86_400_000)
    stored: Any = r.hgetall(key)
    assert (stored["state"], stored["member"], stored["output"]) == ("done", "m-1", '"kept"')
    assert 86_400_000 - 10_000 < r.pttl(key) <= 86_400_000, "the fleet's retention"
    assert r.exists(fleet.done_log(r, prefix, "acme", entry)) == 0
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert (rec.state, rec.output, rec.member) == (TaskState.DONE, "kept", "m-1")
    producer.close()


def test_reads_survive_a_script_flush(redis_server: RedisServer, prefix: str) -> None:
    """Readers run task_read.lua by EVALSHA; after SCRIPT FLUSH (or a restart) the NOSCRIPT
    answer is read again with EVAL (which caches it): get_task, async get_task and wait."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-1")
    fleet.done(r, prefix, "acme", "t-1", "7")
    reads: list[Callable[[], TaskRecord | None]] = [
        lambda: producer.get_task("acme", "t-1"),
        lambda: producer.wait("acme", "t-1", 5),
        lambda: asyncio.run(_async_get(redis_server.url, prefix, "t-1")),
    ]
    for read in reads:
        r.script_flush()
        got = read()
        assert got is not None
        assert (got.state, got.output) == (TaskState.DONE, 7)
        assert r.script_exists(redrive.records.TASK_READ_SCRIPT_SHA) == [True]
    producer.close()


async def _async_get(url: str, prefix: str, task_id: str) -> TaskRecord | None:
    aproducer = AsyncProducer(url, key_prefix=prefix)
    try:
        return await aproducer.get_task("acme", task_id)
    finally:
        await aproducer.redis.aclose()


def test_the_shipped_reader_is_the_fleets_byte_for_byte() -> None:
    """Drift between the SDK's task_read.lua and the fleet's fails here (and so in CI)."""
    import hashlib

    fleets = (fleet.ROOT / "src/broker/scripts/task_read.lua").read_bytes()
    assert redrive.records.TASK_READ_SCRIPT.encode("utf-8") == fleets
    shipped = fleet.ROOT / "sdk/python/src/redrive/task_read.lua"
    assert shipped.read_bytes() == fleets
    sha = hashlib.sha1(fleets, usedforsecurity=False).hexdigest()
    assert sha == redrive.records.TASK_READ_SCRIPT_SHA


def test_an_entry_pending_in_the_group_reads_running(
    redis_server: RedisServer, prefix: str
) -> None:
    """An enqueued task read by XREADGROUP and XCLAIM-started on m-1: its record hash still
    says queued (no record write at the start), get_task shows it running on m-1 (sync, async,
    the CLI, a wait's timeout), in the group asked about only."""
    r = redis_server.client()
    key = f"{prefix}:{{acme}}:task:t-1"
    producer = Producer(redis_server.url, key_prefix=prefix)
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    other = producer.enqueue("acme", "k", 2, task_id="t-2").entry_id
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert rec.state is TaskState.QUEUED, "no group yet (NOGROUP): nothing is pending"
    assert rec.waiting_entry == entry

    fleet.start(r, prefix, "acme", entry, member="m-1")
    assert r.hget(key, "state") == "queued", "the start wrote nothing to the record"
    pending: Any = r.xpending_range(fleet.lane(prefix, "acme"), "redrive", entry, entry, 1)
    assert (pending[0]["consumer"], pending[0]["times_delivered"]) == ("m-1", 2)
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert rec.state is TaskState.RUNNING
    assert str(rec.state) == "running"
    assert not rec.finished
    assert (rec.member, rec.entry, rec.attempt) == ("m-1", entry, 1)
    assert (rec.started_at, rec.ended_at) == (None, None), "the start is the PEL's, unknown"
    assert rec.run_count == 1
    assert rec.runs == (Run(1, None, "m-1", None, None),)
    assert rec.fields["state"] == "running"
    assert rec.waiting_entry is None
    d = rec.to_dict()
    assert (d["state"], d["member"], d["run_count"]) == ("running", "m-1", 1)
    assert d["runs"] == [{"run": 1, "start": None, "member": "m-1", "end": None,
                          "outcome": None}]  # fmt: skip
    untouched = producer.get_task("acme", "t-2")
    assert untouched is not None
    assert untouched.state is TaskState.QUEUED, "an entry nobody read is not pending"
    assert untouched.entry == other

    # The group asked about: another one has nothing pending (NOGROUP), per call or reader.
    elsewhere = producer.get_task("acme", "t-1", group="other")
    assert elsewhere is not None
    assert elsewhere.state is TaskState.QUEUED
    reader = TaskReader(redis_server.url, prefix, group="other")
    assert reader.get_task("acme", "t-1") == elsewhere
    running = reader.get_task("acme", "t-1", group="redrive")
    assert running is not None
    assert running.state is TaskState.RUNNING
    with pytest.raises(ValueError, match="group"):
        producer.get_task("acme", "t-1", group="no spaces")
    with pytest.raises(ValueError, match="group"):
        TaskReader(redis_server.url, prefix, group="")

    # A replayed record on a pending entry is running too; its earlier run's times are not
    # shown (they belong to that run).
    r.hset(key, mapping={"state": "replayed", "started": "100", "ended": "200"})
    replayed = producer.get_task("acme", "t-1")
    assert replayed is not None
    assert (replayed.state, replayed.member) == (TaskState.RUNNING, "m-1")
    assert (replayed.started_at, replayed.ended_at) == (None, None)
    r.hset(key, "state", "queued")
    r.hdel(key, "started", "ended")

    async def read() -> tuple[TaskRecord | None, TaskRecord | None]:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix)
        try:
            return (
                await aproducer.get_task("acme", "t-1"),
                await aproducer.get_task("acme", "t-1", group="other"),
            )
        finally:
            await aproducer.redis.aclose()

    assert asyncio.run(read()) == (rec, elsewhere)

    with pytest.raises(WaitTimeout) as timed_out:
        producer.wait("acme", "t-1", 0.2)
    assert timed_out.value.state == "running"
    assert str(timed_out.value).endswith("it is running")

    at = ("--redis-url", redis_server.url, "--key-prefix", prefix)
    shown = cli("task", "acme", "t-1", *at)
    assert shown.returncode == 0, shown.stderr
    got = json.loads(shown.stdout)
    assert (got["state"], got["member"], got["started_at"], got["run_count"]) == (
        "running", "m-1", None, 1,
    )  # fmt: skip
    assert got["runs"] == d["runs"]
    assert json.loads(cli("task", "acme", "t-1", *at, "--group", "other").stdout)["state"] == (
        "queued"
    )
    waited = cli("wait", "acme", "t-1", "--timeout", "0.2", *at)
    assert waited.returncode == 2
    assert json.loads(waited.stdout)["state"] == "running"

    # Done: as stored again, one ok run.
    fleet.done(r, prefix, "acme", "t-1", "1", member="m-1")
    done = producer.get_task("acme", "t-1")
    assert done is not None
    assert (done.state, done.run_count, [x.outcome for x in done.runs]) == (
        TaskState.DONE, 1, ["ok"],
    )  # fmt: skip
    producer.close()
    reader.close()


def test_a_retried_task_running_again_reads_its_runs(
    redis_server: RedisServer, prefix: str
) -> None:
    """After a failed run (history) the next attempt's entry is pending on another member: the
    task is running there, the failed run first, the current one without a start; the failed
    run's started/ended (still in the record) are not shown as the current run's."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    fleet.start(r, prefix, "acme", entry, member="m-a")
    again = fleet.retry(r, prefix, "acme", "t-1", entry, cls="upstream_unavailable", member="m-a")
    stored: Any = r.hgetall(f"{prefix}:{{acme}}:task:t-1")
    assert (stored["state"], stored["entry"], stored["member"]) == ("queued", again, "m-a")
    assert "started" in stored
    assert "ended" in stored
    waiting = producer.get_task("acme", "t-1")
    assert waiting is not None
    assert waiting.state is TaskState.QUEUED
    assert waiting.run_count == 1
    assert [(x.number, x.member, x.outcome) for x in waiting.runs] == [
        (1, "m-a", "upstream_unavailable")
    ]
    fleet.start(r, prefix, "acme", again, member="m-b")
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert (rec.state, rec.member, rec.attempt) == (TaskState.RUNNING, "m-b", 2)
    assert (rec.started_at, rec.ended_at) == (None, None)
    assert rec.run_count == 2
    assert rec.runs[0] == waiting.runs[0]
    assert rec.runs[1] == Run(2, None, "m-b", None, None)
    producer.close()


def test_a_dead_run_reads_with_unknown_member_and_outcome(
    redis_server: RedisServer, prefix: str
) -> None:
    """m-1 started the entry (PEL only) and died; m-2 takes it over (begin.lua: rec_start with
    ``died``): the history gets a run with r1:member = "" and r1:outcome = "" — read as member
    and outcome null (start and end too) — and m-2's run follows, running, then done."""
    r = redis_server.client()
    key = f"{prefix}:{{acme}}:task:t-1"
    producer = Producer(redis_server.url, key_prefix=prefix)
    entry = producer.enqueue("acme", "k", 1, task_id="t-1").entry_id
    fleet.start(r, prefix, "acme", entry, member="m-1")
    assert fleet.take_over(r, prefix, "acme", "t-1", entry, member="m-2") == "queued"
    stored: Any = r.hgetall(key)
    assert {k: v for k, v in stored.items() if k.startswith("r1:")} == {
        "r1:start": "", "r1:member": "", "r1:outcome": "",
    }  # fmt: skip
    assert (stored["runs"], stored["state"], stored["member"]) == ("1", "running", "m-2")
    dead = Run(1, None, None, None, None)
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert (rec.state, rec.member, rec.run_count) == (TaskState.RUNNING, "m-2", 2)
    assert rec.runs == (dead, Run(2, rec.started_at, "m-2", None, None))
    assert rec.started_at is not None, "a start written by the takeover is known"
    assert rec.to_dict()["runs"][0] == {"run": 1, "start": None, "member": None, "end": None,
                                        "outcome": None}  # fmt: skip

    fleet.done(r, prefix, "acme", "t-1", '"late"', member="m-2")
    rec = producer.get_task("acme", "t-1")
    assert rec is not None
    assert (rec.state, rec.run_count, rec.output) == (TaskState.DONE, 2, "late")
    assert rec.runs == (dead, Run(2, rec.started_at, "m-2", rec.ended_at, "ok"))
    d = json.loads(json.dumps(rec.to_dict()))
    assert [(x["member"], x["outcome"]) for x in d["runs"]] == [(None, None), ("m-2", "ok")]

    # Read as stored: a history run exists when its r<N>:member field does; only the last 16.
    fields = {"state": "dead_lettered", "runs": "20", "r3:start": "5", "r3:member": "m",
              "r3:outcome": "c"}  # fmt: skip
    for n in range(5, 21):
        fields |= {f"r{n}:start": "", f"r{n}:member": "", f"r{n}:outcome": ""}
    many = TaskRecord.from_fields("acme", "t-9", fields)
    assert (many.run_count, len(many.runs)) == (20, 16)
    assert [x.number for x in many.runs] == list(range(5, 21))
    assert all(x == Run(x.number, None, None, None, None) for x in many.runs)
    producer.close()


def test_wait_returns_at_once_when_finished(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-ok")
    fleet.done(r, prefix, "acme", "t-ok", '"fine"')
    producer.enqueue("acme", "k", 1, task_id="t-dead")
    fleet.dead_letter(r, prefix, "acme", "t-dead", cls="invalid_input", error="no ticket",
                      dlq="1700000000000-0")  # fmt: skip
    xreads = calls(r, "xread")
    started = time.monotonic()
    assert producer.wait("acme", "t-ok", 30).output == "fine"
    with pytest.raises(TaskFailed) as failed:
        producer.wait("acme", "t-dead", 30)
    assert time.monotonic() - started < 1.0
    assert calls(r, "xread") == xreads, "a finished task needs no blocking read"
    assert (failed.value.state, failed.value.cls, failed.value.error, failed.value.dlq) == (
        "dead_lettered", "invalid_input", "no ticket", "1700000000000-0",
    )  # fmt: skip
    assert failed.value.record.state is TaskState.DEAD_LETTERED
    assert "invalid_input: no ticket" in str(failed.value)
    assert r.ttl(f"{prefix}:{{acme}}:task:t-dead") == -1, "kept while its dead letter exists"
    rec = producer.wait("acme", "t-dead", 30, raise_on_failure=False)
    assert rec.state is TaskState.DEAD_LETTERED
    for state in ("resolved", "discarded", "expired"):
        r.hset(f"{prefix}:{{acme}}:task:t-dead", "state", state)
        with pytest.raises(TaskFailed) as failed:
            producer.wait("acme", "t-dead", 30)
        assert failed.value.state == state
    producer.close()


def test_wait_times_out_with_the_state_without_polling(
    redis_server: RedisServer, prefix: str
) -> None:
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-1")
    xreads, hgetalls = calls(r, "xread"), calls(r, "hgetall")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        producer.wait("acme", "t-1", 1.5)
    took = time.monotonic() - started
    assert 1.5 <= took < 2.5
    assert isinstance(timed_out.value, TimeoutError)
    assert timed_out.value.state == "queued"
    assert timed_out.value.record is not None
    assert str(timed_out.value) == "task acme/t-1 did not finish within 1.5 s: it is queued"
    # One blocking read for the whole 1.5 s (slices are up to 5 s), the record read before
    # and after it: no polling.
    assert calls(r, "xread") - xreads == 1
    assert calls(r, "hgetall") - hgetalls == 2

    with pytest.raises(WaitTimeout) as timed_out:
        producer.wait("acme", "t-none", 0.2)
    assert timed_out.value.state == "no record"
    assert timed_out.value.record is None
    assert str(timed_out.value).endswith("0.2 s: no record")
    with pytest.raises(ValueError, match="timeout"):
        producer.wait("acme", "t-1", float("inf"))
    with pytest.raises(InvalidTask):
        producer.wait("acme", "", 1)
    producer.close()


def test_wait_wakes_on_the_events_entry(redis_server: RedisServer, prefix: str) -> None:
    """An events entry of another task does not end the wait; the task's own finish (the
    member's ack: record done + output, then the events entry) ends it at once."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-1")
    producer.enqueue("acme", "k", 2, task_id="t-2")
    xreads = calls(r, "xread")
    waiter = Waiter(lambda: producer.wait("acme", "t-1", 30))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    fleet.done(r, prefix, "acme", "t-2", '"other"')
    # The XADD answered the blocked XREAD before this client's next command ran, so a
    # blocked reader now is a new XREAD: the waiter read the entry and went on waiting.
    until(lambda: blocked_readers(r) == 1, what="the waiter to block again")
    assert waiter.thread.is_alive()
    finished_at = time.monotonic()
    fleet.done(r, prefix, "acme", "t-1", '{"answer":42}')
    rec = waiter.result(10)
    assert waiter.ended_at - finished_at < 1.0
    assert rec.state is TaskState.DONE
    assert rec.output == {"answer": 42}
    assert calls(r, "xread") - xreads == 2, "one blocking read per events entry, no polling"
    producer.close()


def test_async_wait_wakes_and_raises_the_failure(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()

    async def scenario() -> TaskFailed:
        producer = AsyncProducer(redis_server.url, key_prefix=prefix)
        await producer.enqueue("acme", "k", 1, task_id="t-1")
        waiting = asyncio.create_task(producer.wait("acme", "t-1", 30))
        deadline = time.monotonic() + 10
        while blocked_readers(r) == 0:
            assert time.monotonic() < deadline, "the waiter did not block"
            await asyncio.sleep(0.01)
        fleet.dead_letter(r, prefix, "acme", "t-1", cls="expired", error="deadline passed",
                          dlq="1-5")  # fmt: skip
        try:
            await asyncio.wait_for(waiting, 5)
        except TaskFailed as e:
            return e
        finally:
            await producer.aclose()
            await producer.redis.aclose()
        raise AssertionError("wait did not raise")

    failed = asyncio.run(scenario())
    assert (failed.state, failed.cls, failed.dlq) == ("expired", "expired", "1-5")


def test_wait_registers_while_it_waits(redis_server: RedisServer, prefix: str) -> None:
    """While ``wait`` waits, the tenant's waiters ZSET holds its one registration (expiring
    15 s from the server's now); once it ends — a result, a failure, a timeout, an exception,
    a task finished already — the ZSET is empty again. A wait drops stale registrations and
    leaves live ones of others alone."""
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    for n in range(1, 6):
        producer.enqueue("acme", "k", n, task_id=f"t-{n}")
    zadds = calls(r, "zadd")

    waiter = Waiter(lambda: producer.wait("acme", "t-1", 30))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    registered_once(r, prefix)
    assert fleet.done(r, prefix, "acme", "t-1", '"ok"'), "a waiter: the events entry is written"
    assert waiter.result(10).output == "ok"
    assert registrations(r, prefix) == {}, "unregistered after a result"

    waiter = Waiter(lambda: producer.wait("acme", "t-2", 30))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    registered_once(r, prefix)
    assert fleet.dead_letter(r, prefix, "acme", "t-2", cls="invalid_input", error="no",
                             dlq="1-2")  # fmt: skip
    with pytest.raises(TaskFailed):
        waiter.result(10)
    assert registrations(r, prefix) == {}, "unregistered after a failure"

    waiter = Waiter(lambda: producer.wait("acme", "t-3", 1))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    registered_once(r, prefix)
    with pytest.raises(WaitTimeout):
        waiter.result(10)
    assert registrations(r, prefix) == {}, "unregistered after a timeout"

    # An exception mid-wait: the record becomes a string (WRONGTYPE) and an events entry
    # names the task, so the record read fails.
    waiter = Waiter(lambda: producer.wait("acme", "t-4", 30))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    registered_once(r, prefix)
    r.delete(f"{prefix}:{{acme}}:task:t-4")
    r.set(f"{prefix}:{{acme}}:task:t-4", "not a hash")
    r.xadd(f"{prefix}:{{acme}}:events", {"task": "t-4", "state": "done", "entry": ""})
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        waiter.result(10)
    assert registrations(r, prefix) == {}, "unregistered after an exception"

    fleet.done(r, prefix, "acme", "t-5", '"early"')
    assert producer.wait("acme", "t-5", 30).output == "early"
    assert registrations(r, prefix) == {}, "unregistered after a task finished already"
    assert calls(r, "zadd") - zadds >= 5, "every wait registered"

    waiters = fleet.waiters(prefix, "acme")
    now = server_ms(r)
    r.zadd(waiters, {"stale": now - 1, "other": now + 60_000})
    producer.enqueue("acme", "k", 6, task_id="t-6")
    waiter = Waiter(lambda: producer.wait("acme", "t-6", 30))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    got = registrations(r, prefix)
    assert "stale" not in got, "a stale registration is dropped"
    assert got.pop("other") == now + 60_000, "a live one of another waiter stays"
    assert len(got) == 1
    fleet.done(r, prefix, "acme", "t-6", "6")
    assert waiter.result(10).output == 6
    assert registrations(r, prefix) == {"other": now + 60_000}
    producer.close()


def test_a_finish_without_waiters_writes_no_event(redis_server: RedisServer, prefix: str) -> None:
    """The stand-in finish (as the fleet's scripts) writes the events entry only while the
    waiters ZSET holds a live registration; the record is written either way, and a wait
    started later finds it there."""
    r = redis_server.client()
    events = f"{prefix}:{{acme}}:events"
    waiters = fleet.waiters(prefix, "acme")
    producer = Producer(redis_server.url, key_prefix=prefix)
    for n in range(1, 4):
        producer.enqueue("acme", "k", n, task_id=f"t-{n}")

    assert not fleet.done(r, prefix, "acme", "t-1", '"quiet"')
    assert r.xlen(events) == 0, "nobody waits: no events entry"
    quiet = producer.get_task("acme", "t-1")
    assert quiet is not None
    assert quiet.state is TaskState.DONE
    r.zadd(waiters, {"gone": server_ms(r) - 1})
    assert not fleet.dead_letter(r, prefix, "acme", "t-2", cls="x", error="y", dlq="1-1")
    assert r.xlen(events) == 0, "an expired registration is nobody"
    assert producer.wait("acme", "t-1", 5).output == "quiet"
    with pytest.raises(TaskFailed):
        producer.wait("acme", "t-2", 5)
    assert r.xlen(events) == 0
    assert registrations(r, prefix) == {}, "the waits dropped the stale one and their own"

    r.zadd(waiters, {"live": server_ms(r) + 15_000})
    t3 = fleet.record_entry(r, prefix, "acme", "t-3")
    assert fleet.done(r, prefix, "acme", "t-3", '"heard"')
    assert r.xlen(events) == 1
    entries: Any = r.xrange(events)
    assert entries[0][1] == {"task": "t-3", "state": "done", "entry": t3}
    producer.close()


def test_wait_refreshes_its_registration_every_slice(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each blocking slice the registration is pushed to 15 s past the server's now
    (estimated from the clock read once at the start: one TIME per wait), sync and async."""
    monkeypatch.setattr(redrive.records, "WAIT_SLICE_S", 0.3)
    r = redis_server.client()
    producer = Producer(redis_server.url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-1")
    times, xreads = calls(r, "time"), calls(r, "xread")
    waiter = Waiter(lambda: producer.wait("acme", "t-1", 1.6))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    first = registered_once(r, prefix)
    time.sleep(0.8)
    later = registered_once(r, prefix)
    assert later - first >= 400, "refreshed while waiting"
    with pytest.raises(WaitTimeout):
        waiter.result(10)
    # About five slices of 0.3 s in 1.6 s; at least three prove the wait is sliced (one slice
    # would be one XREAD) and leave room for a loaded machine's scheduling.
    assert calls(r, "xread") - xreads >= 3, "slices of 0.3 s"
    # The two registered_once calls read the clock too.
    assert calls(r, "time") - times == 1 + 2, "the wait reads the server's clock once"
    assert registrations(r, prefix) == {}
    producer.close()

    async def scenario() -> tuple[float, float]:
        aproducer = AsyncProducer(redis_server.url, key_prefix=prefix)
        try:
            waiting = asyncio.create_task(aproducer.wait("acme", "t-1", 1.6))
            while blocked_readers(r) == 0:
                await asyncio.sleep(0.01)
            first = registered_once(r, prefix)
            await asyncio.sleep(0.8)
            later = registered_once(r, prefix)
            with pytest.raises(WaitTimeout):
                await waiting
            return first, later
        finally:
            await aproducer.aclose()
            await aproducer.redis.aclose()

    first, later = asyncio.run(scenario())
    assert later - first >= 400
    assert registrations(r, prefix) == {}


def test_async_wait_registers_while_it_waits(redis_server: RedisServer, prefix: str) -> None:
    """As the sync wait: registered while waiting, unregistered after a result, a failure, a
    timeout and a cancellation."""
    r = redis_server.client()

    async def blocked() -> None:
        deadline = time.monotonic() + 10
        while blocked_readers(r) == 0:
            assert time.monotonic() < deadline, "the waiter did not block"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        producer = AsyncProducer(redis_server.url, key_prefix=prefix)
        try:
            for n in range(1, 5):
                await producer.enqueue("acme", "k", n, task_id=f"t-{n}")

            waiting = asyncio.create_task(producer.wait("acme", "t-1", 30))
            await blocked()
            registered_once(r, prefix)
            assert fleet.done(r, prefix, "acme", "t-1", '"ok"')
            assert (await asyncio.wait_for(waiting, 5)).output == "ok"
            assert registrations(r, prefix) == {}, "unregistered after a result"

            waiting = asyncio.create_task(producer.wait("acme", "t-2", 30))
            await blocked()
            registered_once(r, prefix)
            fleet.dead_letter(r, prefix, "acme", "t-2", cls="c", error="e", dlq="1-2")
            with pytest.raises(TaskFailed):
                await asyncio.wait_for(waiting, 5)
            assert registrations(r, prefix) == {}, "unregistered after a failure"

            waiting = asyncio.create_task(producer.wait("acme", "t-3", 0.5))
            await blocked()
            registered_once(r, prefix)
            with pytest.raises(WaitTimeout):
                await asyncio.wait_for(waiting, 5)
            assert registrations(r, prefix) == {}, "unregistered after a timeout"

            waiting = asyncio.create_task(producer.wait("acme", "t-4", 30))
            await blocked()
            registered_once(r, prefix)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert registrations(r, prefix) == {}, "unregistered after a cancellation"
            assert not fleet.done(r, prefix, "acme", "t-4", "4"), "nobody waits any more"
        finally:
            await producer.aclose()
            await producer.redis.aclose()

    asyncio.run(scenario())


def test_wait_survives_a_redis_restart(own_redis: OwnRedis, prefix: str) -> None:
    """Redis is killed mid-wait and restarted empty on the same port (no persistence, so the
    record is gone). ``wait`` reconnects and keeps waiting: a task finishing after the
    restart is returned; with nothing coming back it ends at its deadline with WaitTimeout
    "no record" (the record was lost with the server)."""
    url = own_redis.server.url
    producer = Producer(url, key_prefix=prefix)
    producer.enqueue("acme", "k", 1, task_id="t-1")
    r = own_redis.server.client()
    waiter = Waiter(lambda: producer.wait("acme", "t-1", 20))
    until(lambda: blocked_readers(r) == 1, what="the waiter to block")
    own_redis.kill()
    time.sleep(0.3)  # the waiter meets a dead server (and retries) before the restart
    own_redis.restart()
    r = own_redis.server.client()
    until(lambda: blocked_readers(r) == 1, what="the waiter to block on the new server")
    assert waiter.thread.is_alive()
    registered_once(r, prefix)  # registered again on the new (empty) server
    # The producer's own client reconnects too: enqueue again (a fresh record) and finish.
    assert producer.enqueue("acme", "k", 1, task_id="t-1").duplicate is None
    fleet.done(r, prefix, "acme", "t-1", '"after the restart"')
    assert waiter.result(10).output == "after the restart"

    producer.enqueue("acme", "k", 1, task_id="t-2")
    started = time.monotonic()
    waiter = Waiter(lambda: producer.wait("acme", "t-2", 3))
    until(lambda: blocked_readers(r) == 1, what="the second waiter to block")
    own_redis.kill()
    own_redis.restart()
    with pytest.raises(WaitTimeout) as timed_out:
        waiter.result(10)
    assert 3 <= waiter.ended_at - started < 4.5
    assert timed_out.value.state == "no record"
    assert timed_out.value.error is None, "Redis was back: its answer was 'no record'"
    producer.close()


def test_wait_with_redis_down_to_the_end(own_redis: OwnRedis, prefix: str) -> None:
    producer = Producer(own_redis.server.url, key_prefix=prefix)
    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        producer.wait("acme", "t-1", 1)
    assert 1 <= time.monotonic() - started < 2.5
    assert timed_out.value.state == "unknown"
    assert isinstance(timed_out.value.error, redis.ConnectionError)
    assert "its record could not be read" in str(timed_out.value)
    own_redis.restart()
    producer.close()


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redrive", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_cli_enqueues_reads_and_waits(redis_server: RedisServer, prefix: str) -> None:
    r = redis_server.client()
    at = ("--redis-url", redis_server.url, "--key-prefix", prefix)
    first = cli("enqueue", "acme", "k", '{"q":1}', "--task-id", "t-1", *at)
    assert first.returncode == 0, first.stderr
    enq = json.loads(first.stdout)
    assert enq["task_id"] == "t-1"
    assert enq["duplicate"] is None
    again = cli("enqueue", "acme", "k", '{"q":1}', "--task-id", "t-1", *at)
    assert again.returncode == 0
    assert json.loads(again.stdout)["duplicate"] == {"state": "queued", "entry": enq["entry_id"]}

    shown = cli("task", "acme", "t-1", *at)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["state"] == "queued"
    missing = cli("task", "acme", "t-none", *at)
    assert (missing.returncode, missing.stdout.strip()) == (1, "null")

    timed_out = cli("wait", "acme", "t-1", "--timeout", "0.5", *at)
    assert timed_out.returncode == 2
    assert json.loads(timed_out.stdout)["state"] == "queued"
    assert "did not finish within 0.5 s: it is queued" in timed_out.stderr

    fleet.done(r, prefix, "acme", "t-1", '{"answer":42}')
    done = cli("wait", "acme", "t-1", "--timeout", "10", *at)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"answer": 42}

    cli("enqueue", "acme", "k", "1", "--task-id", "t-2", *at)
    fleet.dead_letter(r, prefix, "acme", "t-2", cls="no_handler", error="nobody", dlq="9-0")
    failed = cli("wait", "acme", "t-2", "--timeout", "10", *at)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["dlq"] == "9-0"
    assert "no_handler: nobody" in failed.stderr

    assert cli("wait", "a b", "t-1", "--timeout", "1", *at).returncode == 64
    assert cli("wait", "acme", "t-1", *at).returncode == 64, "--timeout is required"
    assert cli("enqueue", "acme", "k", "{not json", *at).returncode == 64
    no_url = subprocess.run(
        [sys.executable, "-m", "redrive", "task", "acme", "t-1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert no_url.returncode == 64
    assert "REDRIVE_REDIS_URL" in no_url.stderr
