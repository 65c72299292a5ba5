"""An example agent service for redrive: two kinds, wired to the fleet by config.

* ``summarize_ticket`` calls a (fake) LLM that sometimes rate-limits. The call is a step, so
  once it has answered, a later attempt gets the stored summary back instead of paying for the
  call again.
* ``send_followup`` drafts an email with the LLM, then sends it: the send is a side-effecting
  step. If the attempt dies between starting and finishing the send, redrive dead-letters the
  task as ``partial_execution`` for a person to check, instead of sending twice.

Serve it over HTTP (``python -m redrive http agent:agent --port 8000``) or as a worker pool
(``python -m redrive pool agent:agent``); see redrive.toml for the fleet side.

The fake LLM is configured by environment variables so a demo shows retries:
``FAKE_LLM_RATE_LIMIT`` (probability of a 429, default 0.2), ``FAKE_LLM_LATENCY_MS``
(default 20), and ``OUTBOX`` (a JSON Lines file the "email" is appended to, default
``outbox.jsonl``).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

from redrive import Agent, Context, Fail, Retry, Task

agent = Agent()

_outbox_lock = threading.Lock()


def fake_llm(prompt: str) -> str:
    """A stand-in for a model call: slow, sometimes rate-limited, otherwise deterministic."""
    time.sleep(float(os.environ.get("FAKE_LLM_LATENCY_MS", "20")) / 1000)
    if random.random() < float(os.environ.get("FAKE_LLM_RATE_LIMIT", "0.2")):
        # What a model client raises on HTTP 429: a transient failure, retried after a pause.
        raise Retry("model said: rate limit exceeded", retry_after_ms=200, cls="rate_limited")
    words = prompt.split()
    return " ".join(words[:12]) + ("…" if len(words) > 12 else "")


@agent.handler("summarize_ticket")
def summarize_ticket(task: Task, ctx: Context) -> dict[str, Any]:
    """Summarises a support ticket."""
    payload = task.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        # Permanent: no retry will make this input valid. Dead-lettered for a fix and replay.
        raise Fail("invalid_input", "payload needs a string 'text'")
    summary = ctx.step("summarize", lambda: fake_llm(payload["text"]))
    ctx.progress(message="summarised", chars=len(summary))
    return {"ticket": payload.get("ticket"), "summary": summary}


@agent.handler("send_followup")
def send_followup(task: Task, ctx: Context) -> dict[str, Any]:
    """Drafts a follow-up email and sends it once."""
    payload = task.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("to"), str):
        raise Fail("invalid_input", "payload needs a string 'to'")
    draft = ctx.step("draft", lambda: fake_llm(f"Dear {payload['to']}, {payload.get('about', '')}"))

    def send() -> dict[str, Any]:
        message = {"task_id": task.task_id, "to": payload["to"], "body": draft}
        with _outbox_lock, open(os.environ.get("OUTBOX", "outbox.jsonl"), "a") as out:
            out.write(json.dumps(message) + "\n")
        return {"message_id": f"m-{task.task_id}"}

    sent = ctx.step("send_email", send, side_effect=True)
    return {"sent": sent["message_id"]}
