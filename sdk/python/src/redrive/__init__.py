"""redrive's Python SDK.

- Publish tasks: :class:`Producer` / :class:`AsyncProducer` (``redrive.producer``).
- Serve them: an :class:`Agent` with handlers per kind and :class:`Context` steps
  (``redrive.agent``), over HTTP (:func:`serve_http`), ASGI (``agent.asgi()``) or stdio
  (:func:`serve_pool`, :func:`run_exec`).
- Check requests: :func:`redrive.signature.verify`.

PROTOCOL.md and CONTRACT.md in the redrive repository are the contracts this package follows.
"""

from .agent import Agent, Context
from .errors import (
    AttemptClosed,
    EnqueueFailed,
    Fail,
    InvalidRequest,
    InvalidTask,
    PartialExecution,
    RedriveError,
    Retry,
    StepRefused,
)
from .http import serve_http
from .producer import AsyncProducer, Enqueued, NewTask, Producer
from .stdio import run_exec, serve_pool
from .task import AttemptRecord, Step, Task

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AsyncProducer",
    "AttemptClosed",
    "AttemptRecord",
    "Context",
    "EnqueueFailed",
    "Enqueued",
    "Fail",
    "InvalidRequest",
    "InvalidTask",
    "NewTask",
    "PartialExecution",
    "Producer",
    "RedriveError",
    "Retry",
    "Step",
    "StepRefused",
    "Task",
    "__version__",
    "run_exec",
    "serve_http",
    "serve_pool",
]
