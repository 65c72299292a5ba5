"""conformance/signatures.json: signing and verifying Redrive-Signature."""

from __future__ import annotations

import time
from typing import Any

import pytest

from redrive import signature

from .conftest import vectors

V = vectors("signatures.json")


@pytest.mark.parametrize("case", V["sign"], ids=[c["name"] for c in V["sign"]])
def test_sign_vector(case: dict[str, Any]) -> None:
    got = signature.sign(case["secrets"], case["body"].encode("utf-8"), t=case["t"])
    assert got == case["header"]


@pytest.mark.parametrize("case", V["verify"], ids=[c["name"] for c in V["verify"]])
def test_verify_vector(case: dict[str, Any]) -> None:
    got = signature.verify(
        case["secrets"], case["header"], case["body"].encode("utf-8"), now=case["now"]
    )
    assert got is case["valid"]


def test_the_vectors_are_there() -> None:
    assert len(V["sign"]) >= 3
    assert len(V["verify"]) >= 10


def test_a_fresh_signature_verifies_now_and_the_reasons_name_no_secret() -> None:
    body = b'{"task_id":"t-1"}'
    header = signature.sign(["s3cret-one", "s3cret-two"], body)
    assert signature.verify("s3cret-two", header, body)
    assert signature.check("s3cret-two", header, body) is None
    reasons = [
        signature.check("other", header, body),
        signature.check("s3cret-one", None, body),
        signature.check("s3cret-one", header, body, now=int(time.time()) + 301),
        signature.check("s3cret-one", "t=1", body),
    ]
    assert all(r and "s3cret" not in r for r in reasons), reasons
    assert "away from this clock" in str(reasons[2])


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        signature.sign([], b"x")
