"""The agent side without a transport: routing, replies for results and errors, steps
(memoisation, limits, step_failed), progress. Lines are compared with the conformance
vectors where a vector describes the same attempt."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from redrive import Agent, Context, Fail, PartialExecution, Retry, StepRefused, Task
from redrive.agent import MAX_STEP_OUTPUT_BYTES, MAX_STEPS, MAX_STEPS_OUTPUT_BYTES
from redrive.stdio import LineWriter

from .conftest import vectors
from .helpers import Events, request, step

REPLIES = {c["name"]: c for c in vectors("replies.json")["cases"]}
STDIO = {c["name"]: c for c in vectors("stdio.json")["pool"]}


def lines_of(events: Events, reply: dict[str, Any]) -> list[Any]:
    """The NDJSON lines an HTTP reply carries, as JSON values."""
    return [*events.items, reply]


def vector_lines(name: str) -> list[Any]:
    """A replies.json case's NDJSON body, as JSON values."""
    return [json.loads(x) for x in REPLIES[name]["body"].splitlines() if x.strip()]


# Routing ------------------------------------------------------------------------------------


def test_exact_names_and_globs_route_and_the_first_match_wins() -> None:
    agent = Agent()
    agent.add_handler(["score_lead"], lambda t, c: "exact")
    agent.add_handler(["triage_*"], lambda t, c: "glob")
    agent.add_handler(["triage_ticket", "tri?ge_x"], lambda t, c: "later")
    agent.add_handler(["*"], lambda t, c: "catch-all")
    assert agent.run(request("score_lead"))["output"] == "exact"
    assert agent.run(request("triage_ticket"))["output"] == "glob"
    assert agent.run(request("triage_"))["output"] == "glob"
    assert agent.run(request("triXge_x"))["output"] == "later"
    assert agent.run(request("score_leads"))["output"] == "catch-all"
    assert agent.kinds == ["score_lead", "triage_*", "triage_ticket", "tri?ge_x", "*"]


def test_globs_match_the_whole_kind_and_dots_are_literal() -> None:
    agent = Agent()

    @agent.handler("a.b", "x?z")
    def h(task: Task, ctx: Context) -> str:
        return task.kind

    assert agent.route("a.b") is h
    assert agent.route("aXb") is None
    assert agent.route("xyz") is h
    assert agent.route("xyzz") is None
    assert agent.route("xz") is None


def test_a_kind_without_a_handler_is_no_handler() -> None:
    agent = Agent()
    agent.add_handler(["triage_*"], lambda t, c: None)
    reply = agent.run(request("score_lead"))
    assert reply["status"] == "fail"
    assert reply["class"] == "no_handler"
    assert "score_lead" in reply["error"]
    assert "triage_*" in reply["error"]


def test_registration_is_checked() -> None:
    agent = Agent()
    with pytest.raises(ValueError, match="at least one kind"):
        agent.add_handler([], lambda t, c: None)
    with pytest.raises(ValueError, match="non-empty"):
        agent.add_handler([""], lambda t, c: None)


# Replies ------------------------------------------------------------------------------------


def run(fn: Any, req: dict[str, Any] | None = None) -> tuple[dict[str, Any], Events]:
    agent = Agent()
    agent.add_handler(["*"], fn)
    events = Events()
    return agent.run(req or request(), events), events


def test_a_return_value_is_an_ok_reply_with_the_task_at_hand() -> None:
    def h(task: Task, ctx: Context) -> Any:
        return {"ticket": task.payload["ticket"], "attempt": task.attempt, "n": 2**64 - 1}

    reply, events = run(h, request(payload={"ticket": 42}, attempt=3))
    assert reply == {"status": "ok", "output": {"ticket": 42, "attempt": 3, "n": 2**64 - 1}}
    assert events.items == []


def test_none_is_an_ok_reply_with_null_output() -> None:
    assert run(lambda t, c: None)[0] == {"status": "ok", "output": None}


def test_retry_is_a_transient_fail_with_its_delay() -> None:
    def h(task: Task, ctx: Context) -> None:
        raise Retry("model said slow down", retry_after_ms=3000, cls="rate_limited")

    reply, _ = run(h)
    assert reply == {
        "status": "fail",
        "class": "rate_limited",
        "error": "model said slow down",
        "retry_after_ms": 3000,
    }
    reply, _ = run(lambda t, c: (_ for _ in ()).throw(Retry("reset")))
    assert reply == {"status": "fail", "class": "upstream_unavailable", "error": "reset"}


def test_typed_errors_check_their_class() -> None:
    with pytest.raises(ValueError, match="permanent class: raise Fail"):
        Retry("x", cls="invalid_input")
    with pytest.raises(ValueError, match="not a failure class"):
        Retry("x", cls="bogus")
    with pytest.raises(ValueError, match="not a count of ms"):
        Retry("x", retry_after_ms=-1)
    with pytest.raises(ValueError, match="not a failure class"):
        Fail("bogus", "x")


def test_fail_carries_any_class() -> None:
    for cls in ("context_overflow", "invalid_input", "llm_error"):

        def h(task: Task, ctx: Context, cls: str = cls) -> None:
            raise Fail(cls, "prompt is 210k tokens")

        assert run(h)[0] == {"status": "fail", "class": cls, "error": "prompt is 210k tokens"}


def test_partial_execution_is_its_class() -> None:
    def h(task: Task, ctx: Context) -> None:
        raise PartialExecution("charged the card, crashed before the receipt")

    reply, _ = run(h)
    assert reply["class"] == "partial_execution"
    assert reply["error"] == "charged the card, crashed before the receipt"


def test_an_uncaught_exception_has_no_class_and_a_bounded_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def h(task: Task, ctx: Context) -> None:
        raise KeyError("ticket")

    with caplog.at_level(logging.ERROR, "redrive.agent"):
        reply, _ = run(h)
    assert reply == {"status": "fail", "error": "KeyError: 'ticket'"}
    assert "t-1" in caplog.text, "the traceback is logged with the task"

    def big(task: Task, ctx: Context) -> None:
        raise RuntimeError("é" * 10_000)

    reply, _ = run(big)
    assert "class" not in reply
    assert reply["error"].startswith("RuntimeError: éé")
    assert len(reply["error"].encode()) <= 4096
    assert reply["error"].endswith("...")
    assert run(lambda t, c: 1 / 0)[0]["error"] == "ZeroDivisionError: division by zero"
    assert run(lambda t, c: (_ for _ in ()).throw(ValueError()))[0]["error"] == "ValueError"


def test_an_output_that_is_not_json_or_too_big_is_schema_mismatch() -> None:
    reply, _ = run(lambda t, c: {"when": object()})
    assert reply["class"] == "schema_mismatch"
    assert "not JSON" in reply["error"]
    # A lone surrogate (a "\ud800" escape in the request) cannot be sent as UTF-8.
    reply, _ = run(lambda t, c: t.payload, request(payload="\ud800"))
    assert reply["class"] == "schema_mismatch"
    assert "lone surrogate" in reply["error"]
    agent = Agent(max_reply_bytes=1000)
    agent.add_handler(["*"], lambda t, c: "x" * 1000)
    reply = agent.run(request())
    assert reply["class"] == "schema_mismatch"
    assert "reply limit is 1000" in reply["error"]


def test_the_replies_mean_what_the_vectors_say() -> None:
    """Each reply the SDK builds is the same JSON as a vector with the expected meaning."""
    cases = {
        "json fail with class and retry_after_ms": Retry("slow down", 3000, "rate_limited"),
        "json fail permanent": Fail("context_overflow", "prompt is 210k tokens"),
        "json fail partial_execution": PartialExecution(
            "charged the card, crashed before the receipt"
        ),
    }
    for name, error in cases.items():

        def h(task: Task, ctx: Context, error: Exception = error) -> None:
            raise error

        assert run(h)[0] == json.loads(REPLIES[name]["body"]), name
    ok = REPLIES["json ok with output"]
    assert run(lambda t, c: ok["expect"]["output"])[0] == json.loads(ok["body"])


# Steps --------------------------------------------------------------------------------------


def test_a_streamed_attempt_writes_the_lines_of_the_steps_vector() -> None:
    """replies.json "ndjson with steps then ok", produced by a handler."""

    def h(task: Task, ctx: Context) -> Any:
        draft = ctx.step("draft", lambda: f"Dear {task.payload['user']}")
        assert draft == "Dear u1"
        sent = ctx.step("send", lambda: {"id": "m-1"}, side_effect=True)
        ctx.progress(percent=100)
        return sent

    reply, events = run(h, request(payload={"user": "u1"}))
    assert lines_of(events, reply) == vector_lines("ndjson with steps then ok")


def test_a_completed_step_is_not_run_again_and_returns_its_stored_output() -> None:
    calls: list[str] = []

    def running(name: str, output: Any) -> Any:
        calls.append(name)
        return output

    def h(task: Task, ctx: Context) -> Any:
        assert ctx.completed("send_email")
        draft = ctx.step("draft", lambda: running("draft", "new draft"))
        sent = ctx.step("send_email", lambda: running("send", {"x": 1}), True)
        summary = ctx.step("summary", lambda: running("summary", f"{draft}/{sent}"))
        again = ctx.step("summary", lambda: running("summary again", "other"))
        return [draft, sent, summary, again]

    req = request(
        steps=[step("draft", "Dear u1"), step("send_email", {"message_id": "m-1"}, True, 2)],
        attempt=3,
    )
    reply, events = run(h, req)
    assert calls == ["summary"], "only the new step ran, once"
    out = reply["output"]
    assert out[0] == "Dear u1"
    assert out[1] == {"message_id": "m-1"}
    assert out[3] == out[2]
    assert events.kinds() == ["step_started:summary", "step_done:summary"]


def test_an_async_handler_runs_async_steps_from_sync_and_async_callers() -> None:
    agent = Agent()

    @agent.handler("*")
    async def h(task: Task, ctx: Context) -> Any:
        async def call() -> str:
            await asyncio.sleep(0)
            return "drafted"

        first = await ctx.astep("draft", call)
        return [first, await ctx.astep("draft", call)]

    events = Events()
    assert agent.run(request(), events)["output"] == ["drafted", "drafted"]
    assert events.kinds() == ["step_started:draft", "step_done:draft"]
    events = Events()
    assert asyncio.run(agent.arun(request(), events))["output"] == ["drafted", "drafted"]
    reply = asyncio.run(agent.arun(request(steps=[step("draft", "stored")])))
    assert reply["output"] == ["stored", "stored"]


def test_a_plain_handler_runs_in_the_executor_under_arun() -> None:
    agent = Agent()
    agent.add_handler(["*"], lambda t, c: c.step("s", lambda: 7))
    events = Events()
    assert asyncio.run(agent.arun(request(), events)) == {"status": "ok", "output": 7}
    assert events.kinds() == ["step_started:s", "step_done:s"]


def test_ctx_step_with_an_async_function_says_to_use_astep() -> None:
    async def fn() -> int:
        return 1

    reply, _ = run(lambda t, c: c.step("s", fn))
    assert "TypeError" in reply["error"]
    assert "astep" in reply["error"]


def test_a_typed_error_in_a_side_effecting_step_sends_step_failed() -> None:
    """replies.json "ndjson step_failed closes a side-effecting step: retried normally"."""

    def h(task: Task, ctx: Context) -> None:
        def send() -> None:
            raise Retry("429 before sending", retry_after_ms=500, cls="rate_limited")

        try:
            ctx.step("send", send, side_effect=True)
        except Retry as e:
            raise Retry("429", retry_after_ms=e.retry_after_ms, cls=e.cls) from e

    reply, events = run(h)
    want = vector_lines("ndjson step_failed closes a side-effecting step: retried normally")
    assert lines_of(events, reply) == want


def test_fail_in_a_step_sends_step_failed_and_propagates() -> None:
    def h(task: Task, ctx: Context) -> None:
        ctx.step("check", lambda: (_ for _ in ()).throw(Fail("invalid_input", "no ticket")))

    reply, events = run(h)
    assert reply == {"status": "fail", "class": "invalid_input", "error": "no ticket"}
    assert events.items[-1] == {"event": "step_failed", "name": "check", "error": "no ticket"}


def test_an_untyped_error_in_a_side_effecting_step_leaves_it_open() -> None:
    """No step_failed: the SDK cannot say the effect did not happen, so the fleet concludes
    partial_execution (replies.json "ndjson fail while a side-effecting step is open")."""

    def h(task: Task, ctx: Context) -> None:
        ctx.step("pay", lambda: (_ for _ in ()).throw(ConnectionResetError("smtp reset")), True)

    reply, events = run(h)
    assert events.kinds() == ["step_started:pay"]
    assert events.items[0]["side_effect"] is True
    assert reply == {"status": "fail", "error": "ConnectionResetError: smtp reset"}


def test_partial_execution_in_a_step_does_not_claim_the_effect_was_avoided() -> None:
    def h(task: Task, ctx: Context) -> None:
        ctx.step("pay", lambda: (_ for _ in ()).throw(PartialExecution("charged")), True)

    reply, events = run(h)
    assert events.kinds() == ["step_started:pay"]
    assert reply["class"] == "partial_execution"


def test_a_failure_after_a_completed_side_effect_matches_its_vector() -> None:
    def h(task: Task, ctx: Context) -> None:
        ctx.step("send", lambda: 1, side_effect=True)
        raise Fail("llm_error", "summary failed")

    reply, events = run(h)
    want = vector_lines("ndjson fail after a side-effecting step completed: retried normally")
    assert lines_of(events, reply) == want


def test_pool_lines_carry_the_id_first_as_the_stdio_vector() -> None:
    """stdio.json pool "events then fail": the exact lines, id first."""
    import io

    out = io.BytesIO()
    writer = LineWriter(out)
    agent = Agent()

    @agent.handler("*")
    def h(task: Task, ctx: Context) -> None:
        ctx.step("s", lambda: "x")
        raise Retry("429", retry_after_ms=100, cls="rate_limited")

    task = Task.from_request(request())
    lines = writer.request("r1")
    lines.reply(agent.run_line(task, lines))
    lines({"event": "progress", "late": True})  # after the reply: dropped
    assert out.getvalue().decode().splitlines() == STDIO["events then fail"]["lines"]


# Step limits --------------------------------------------------------------------------------


LIMITS = vectors("replies.json")["step_limits"]


def test_the_limits_are_the_protocol_ones() -> None:
    assert LIMITS == {
        "name_max_chars": 128,
        "output_max_bytes": MAX_STEP_OUTPUT_BYTES,
        "max_steps": MAX_STEPS,
        "total_output_max_bytes": MAX_STEPS_OUTPUT_BYTES,
    }


@pytest.mark.parametrize("name", ["", "n" * 129, "a\u0007b", "a\nb", "a\u0085b", 5], ids=repr)
def test_a_bad_step_name_is_refused_before_anything_is_sent(name: Any) -> None:
    ran: list[int] = []

    def h(task: Task, ctx: Context) -> None:
        ctx.step(name, lambda: ran.append(1))

    reply, events = run(h)
    assert events.items == []
    assert ran == []
    assert reply["class"] == "schema_mismatch"
    assert reply["error"].startswith("a step was refused: ")


def test_the_longest_name_is_accepted() -> None:
    reply, events = run(lambda t, c: c.step("é" * 128, lambda: 1))
    assert reply == {"status": "ok", "output": 1}
    assert len(events.items) == 2


def test_an_output_over_64_kib_is_refused_and_not_sent() -> None:
    seen: list[str] = []

    def h(task: Task, ctx: Context) -> str:
        ctx.step("fits", lambda: "x" * (LIMITS["output_max_bytes"] - 2))
        try:
            ctx.step("big", lambda: "x" * (LIMITS["output_max_bytes"] - 1))
        except StepRefused as e:
            seen.append(str(e))
            raise
        return "unreachable"

    reply, events = run(h)
    assert events.kinds() == ["step_started:fits", "step_done:fits", "step_started:big"]
    assert "65537 bytes of JSON; the limit is 65536" in seen[0]
    assert reply["class"] == "schema_mismatch"
    assert "big" in reply["error"]


def test_an_output_that_is_not_json_is_refused() -> None:
    def h(task: Task, ctx: Context) -> None:
        ctx.step("s", lambda: {1, 2})

    reply, events = run(h)
    assert reply["class"] == "schema_mismatch"
    assert "not JSON" in reply["error"]
    assert events.kinds() == ["step_started:s"]

    def lone(task: Task, ctx: Context) -> None:
        with pytest.raises(ValueError, match="lone surrogate"):
            ctx.progress(x="\udc80")
        ctx.step("s", lambda: "\udc80")

    reply, events = run(lone, request(steps=[step("earlier", "\ud800")]))
    assert "lone surrogate" in reply["error"]
    assert events.kinds() == ["step_started:s"]


def test_the_65th_step_is_refused_before_it_runs() -> None:
    ran: list[int] = []
    earlier = [step(f"s{i}", i) for i in range(LIMITS["max_steps"] - 1)]

    def h(task: Task, ctx: Context) -> None:
        ctx.step("s3", lambda: ran.append(3))  # memoised: no new step
        ctx.step("last", lambda: ran.append(64))
        ctx.step("one too many", lambda: ran.append(65))

    reply, events = run(h, request(steps=earlier))
    assert ran == [64]
    assert events.kinds() == ["step_started:last", "step_done:last"]
    assert "would be step 65 of the task; the limit is 64" in reply["error"]


def test_the_task_total_of_step_outputs_is_bounded() -> None:
    chunk = "x" * 65_000  # 65,002 bytes of JSON each
    earlier = [step(f"s{i}", chunk) for i in range(8)]  # 520,016 bytes

    def h(task: Task, ctx: Context) -> None:
        ctx.step("small", lambda: "y" * 4000)  # 520,016 + 4,002 = 524,018: fits
        ctx.step("more", lambda: "y" * 300)  # 524,018 + 302 = 524,320: over

    reply, events = run(h, request(steps=earlier))
    assert events.kinds() == ["step_started:small", "step_done:small", "step_started:more"]
    assert "524320 bytes; the limit is 524288" in reply["error"]


# Progress -----------------------------------------------------------------------------------


def test_progress_is_an_event_with_any_keys_but_the_reserved_ones() -> None:
    def h(task: Task, ctx: Context) -> None:
        ctx.progress(message="sent", percent=100)
        for key in ("event", "status", "id"):
            with pytest.raises(ValueError, match="reserved"):
                ctx.progress(**{key: 1})
        with pytest.raises(ValueError, match="not JSON"):
            ctx.progress(x=object())

    reply, events = run(h)
    assert reply["status"] == "ok"
    assert events.items == [{"event": "progress", "message": "sent", "percent": 100}]


def test_progress_over_the_line_limit_is_refused() -> None:
    agent = Agent(max_reply_bytes=100)
    events = Events()

    @agent.handler("*")
    def h(task: Task, ctx: Context) -> None:
        with pytest.raises(ValueError, match="line limit"):
            ctx.progress(blob="x" * 100)

    assert agent.run(request(), events)["status"] == "ok"
    assert events.items == []
