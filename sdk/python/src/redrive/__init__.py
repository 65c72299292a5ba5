"""redrive's Python SDK.

- Publish tasks: :class:`Producer` / :class:`AsyncProducer` (``redrive.producer``);
  enqueue is idempotent (a live task_id is reported as a duplicate, :class:`Duplicate`).
- Look a task up and wait for its result: ``get_task`` / ``wait`` on the producers, or
  :class:`TaskReader` / :class:`AsyncTaskReader` (``redrive.records``), returning a
  :class:`TaskRecord`; ``wait`` raises :class:`TaskFailed` or :class:`WaitTimeout`.
- Serve them: an :class:`Agent` with handlers per kind and :class:`Context` steps
  (``redrive.agent``), over HTTP (:func:`serve_http`), ASGI (``agent.asgi()``) or stdio
  (:func:`serve_pool`, :func:`run_exec`).
- Check requests: :func:`redrive.signature.verify`.
- Receive tenant notifications (``[[notify.targets]]``): :func:`verify_notification`
  (``redrive.notify``) checks one and reads it as a :class:`Notification`; see
  ``examples/notify_receiver.py`` for a whole receiver.

PROTOCOL.md and CONTRACT.md in the redrive repository are the contracts this package follows.
"""

from .agent import Agent, Context
from .connection import connect, connect_async
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
    TaskFailed,
    WaitTimeout,
)
from .http import serve_http
from .notify import InvalidNotification, Notification, verify_notification
from .producer import AsyncProducer, Duplicate, Enqueued, NewTask, Producer
from .records import AsyncTaskReader, Run, TaskReader, TaskRecord, TaskState
from .stdio import run_exec, serve_pool
from .task import AttemptRecord, Step, Task

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AsyncProducer",
    "AsyncTaskReader",
    "AttemptClosed",
    "AttemptRecord",
    "Context",
    "Duplicate",
    "EnqueueFailed",
    "Enqueued",
    "Fail",
    "InvalidNotification",
    "InvalidRequest",
    "InvalidTask",
    "NewTask",
    "Notification",
    "PartialExecution",
    "Producer",
    "RedriveError",
    "Retry",
    "Run",
    "Step",
    "StepRefused",
    "Task",
    "TaskFailed",
    "TaskReader",
    "TaskRecord",
    "TaskState",
    "WaitTimeout",
    "__version__",
    "connect",
    "connect_async",
    "run_exec",
    "serve_http",
    "serve_pool",
    "verify_notification",
]
