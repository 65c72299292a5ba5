"""conformance/tasks.json: the producer accepts every valid task and refuses every invalid one
with an error naming the field, as the Rust producer and ``redrive enqueue --file`` do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redrive.errors import InvalidTask
from redrive.producer import NewTask, encode

from .conftest import vectors

CASES: list[dict[str, Any]] = vectors("tasks.json")["cases"]


def test_the_vectors_are_there() -> None:
    assert len(CASES) >= 30
    assert any(c["valid"] for c in CASES)
    assert any(not c["valid"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_task_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        encode(NewTask.from_dict(case["task"]), 262144, now_ms=1764500000000)

    if case["valid"]:
        check()
    else:
        with pytest.raises(InvalidTask) as refused:
            check()
        assert refused.value.field == case["field"], str(refused.value)
        assert str(refused.value), "the error says what is wrong"


def test_the_payload_limit_is_the_configured_one() -> None:
    task = NewTask("acme", "k", "x" * 100)
    task.validate(max_payload_bytes=102)
    with pytest.raises(InvalidTask) as refused:
        task.validate(max_payload_bytes=101)
    assert refused.value.field == "payload"
    assert "102 bytes; the limit is 101" in str(refused.value)


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (NewTask("acme", "k", float("nan")), "payload"),
        (NewTask("acme", "k", {"a": object()}), "payload"),
        (NewTask("acme", "k", "\ud800"), "payload"),
        (NewTask("acme", "k", 1, trace_id="\ud800"), "trace_id"),
        (NewTask("acme", "k", 1, extra={"a": "\ud800"}), "extra"),
        (NewTask("acme", "k", 1, deadline=True), "deadline"),
        (NewTask("acme", "k", 1, schema_version=2.0), "schema_version"),  # type: ignore[arg-type]
        (NewTask("acme", 5, 1), "kind"),  # type: ignore[arg-type]
        (NewTask("acme", "k", 1, extra={"kind\u00e9": "x"}), "extra"),
        (NewTask("acme", "k", 1, prompt_version="\u0085"), "prompt_version"),
    ],
)
def test_python_values_json_cannot_carry_are_refused(task: NewTask, field: str) -> None:
    with pytest.raises(InvalidTask) as refused:
        task.validate()
    assert refused.value.field == field


def test_prompt_version_counts_characters_not_bytes() -> None:
    NewTask("acme", "k", 1, prompt_version="é" * 128).validate()
    with pytest.raises(InvalidTask):
        NewTask("acme", "k", 1, prompt_version="é" * 129).validate()


def test_a_fresh_task_is_encoded_as_the_rust_producer_writes_it() -> None:
    """Task::to_fields of a first attempt: contract fields in order, then own fields by name;
    the payload as compact JSON with sorted keys (serde_json's Map order)."""
    task = NewTask(
        "acme",
        "triage_ticket",
        {"ticket": 42, "big": 12345678901234567890, "text": "héllo\n", "f": 1.5},
        task_id="t-123",
        schema_version=2,
        prompt_version="p-7",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        deadline=1764503600000,
        extra={"tool_version": "1.4.2", "env": "prod"},
    )
    encoded = encode(task, 262144, now_ms=1764500000000)
    assert list(encoded.fields.items()) == [
        ("task_id", "t-123"),
        ("tenant", "acme"),
        ("kind", "triage_ticket"),
        ("payload", '{"big":12345678901234567890,"f":1.5,"text":"héllo\\n","ticket":42}'),
        ("attempt", "1"),
        ("enqueued_at", "1764500000000"),
        ("schema_version", "2"),
        ("prompt_version", "p-7"),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
        ("deadline", "1764503600000"),
        ("env", "prod"),
        ("tool_version", "1.4.2"),
    ]


def test_the_field_order_is_the_one_of_the_request_vectors_lane_entry() -> None:
    """requests.json's first case is a lane entry as a producer writes it: same names, same
    order, same values (the payload compared as JSON)."""
    case = vectors("requests.json")["requests"][0]
    want: dict[str, str] = case["fields"]
    task = NewTask(
        case["tenant"],
        want["kind"],
        case["body"]["payload"],
        task_id=want["task_id"],
        schema_version=int(want["schema_version"]),
        prompt_version=want["prompt_version"],
        trace_id=want["trace_id"],
        deadline=int(want["deadline"]),
        extra={"tool_version": "1.4.2", "env": "prod"},
    )
    got = encode(task, 262144, now_ms=int(want["enqueued_at"])).fields
    assert list(got) == list(want)
    assert json.loads(got.pop("payload")) == json.loads(want.pop("payload"))
    assert got == want


def test_a_generated_task_id_is_32_hex_digits() -> None:
    ids = {encode(NewTask("acme", "k", 1), 262144, 0).task_id for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)


def test_an_unknown_field_and_a_non_mapping_are_named() -> None:
    with pytest.raises(InvalidTask) as refused:
        NewTask.from_dict({"tenant": "a", "kind": "k", "payload": 1, "colour": "red"})
    assert refused.value.field == "colour"
    assert "unknown field 'colour'" in str(refused.value)
    with pytest.raises(InvalidTask):
        NewTask.from_dict([1, 2])  # type: ignore[arg-type]
