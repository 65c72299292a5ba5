"""conformance/requests.json: every request body parses into a Task with every key."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from redrive import InvalidRequest, Task

from .conftest import vectors
from .helpers import request

CASES: list[dict[str, Any]] = vectors("requests.json")["requests"]


def as_body(task: Task) -> dict[str, Any]:
    """The Task back as a request body (``cls`` is ``class`` on the wire)."""
    out = dataclasses.asdict(task)
    out["steps"] = [dict(s) for s in out["steps"]]
    out["history"] = [
        {("class" if k == "cls" else k): v for k, v in h.items()} for h in out["history"]
    ]
    out["extra"] = dict(out["extra"])
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_request_vector_parses_with_every_key(case: dict[str, Any]) -> None:
    raw = json.dumps(case["body"]).encode()
    task = Task.from_json(raw)
    assert {f.name for f in dataclasses.fields(Task)} == set(case["body"]), "one field per key"
    assert as_body(task) == case["body"]


def test_big_integers_stay_exact() -> None:
    task = Task.from_json(json.dumps(CASES[0]["body"]))
    assert task.payload["big"] == 12345678901234567890


def test_a_completed_step_is_found_by_name() -> None:
    task = Task.from_request(CASES[2]["body"])
    found = task.step("send_email")
    assert found is not None
    assert found.output == {"message_id": "m-1"}
    assert found.side_effect
    assert found.attempt == 2
    assert task.step("nope") is None
    assert task.history[1].cls == "timeout"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"task_id": None}, "task_id"),
        ({"kind": 3}, "kind"),
        ({"attempt": -1}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"protocol": 2}, "protocol version 2"),
        ({"steps": [1]}, "steps"),
        ({"steps": [{"output": 1}]}, "name"),
        ({"extra": {"a": 1}}, "extra"),
        ({"deadline": "soon"}, "deadline"),
    ],
)
def test_a_malformed_request_says_what_is_wrong(change: dict[str, Any], why: str) -> None:
    req = {**request(), **change}
    with pytest.raises(InvalidRequest, match=why):
        Task.from_request(req)


def test_missing_payload_and_non_objects_are_refused() -> None:
    req = request()
    del req["payload"]
    with pytest.raises(InvalidRequest, match="payload"):
        Task.from_request(req)
    with pytest.raises(InvalidRequest, match="not a JSON object"):
        Task.from_request([1])
    with pytest.raises(InvalidRequest, match="not JSON"):
        Task.from_json(b"{nope")
