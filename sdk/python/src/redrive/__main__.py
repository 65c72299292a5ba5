"""``python -m redrive``: serve an agent, or publish a task and follow it.

Serve an :class:`~redrive.Agent` found by its import path, so a fleet's ``[[handlers]]``
entry can start it without a script: ``http``, ``pool``, ``exec`` ``module:agent``. Secrets
for ``http`` come from the ``REDRIVE_SECRETS`` environment variable (comma-separated), never
from the command line, where the process table would show them.

Publish and follow tasks (``--redis-url``, default ``$REDRIVE_REDIS_URL``; ``--key-prefix``,
default ``$REDRIVE_REDIS__KEY_PREFIX`` or ``redrive``; for ``task`` and ``wait`` also
``--group``, the fleet's consumer group, default ``$REDRIVE_FLEET__GROUP`` or ``redrive``: a
queued task whose entry is pending in it shows as running), each printing one line of JSON:

- ``enqueue TENANT KIND PAYLOAD_JSON [--task-id ID]``: the result (``task_id``, ``entry_id``,
  ``duplicate``: null or the live task's ``state`` and ``entry``); exit 0, also for a
  duplicate. ``--no-dedup``: ids reused on purpose, only a task still in flight is a
  duplicate. ``--retention-ms MS``: the fleet's ``tasks.retention_ms`` for the task's tenant
  and kind (default ``$REDRIVE_TASKS__RETENTION_MS`` or 86400000; 1000 … 365 days): the
  record written at enqueue expires that long plus an eighth later.
- ``task TENANT TASK_ID``: the task's record; exit 0, or 1 with ``null`` when it has none.
- ``wait TENANT TASK_ID --timeout S``: waits for the task to finish and prints its record;
  exit 0 done, 1 finished without success (dead_lettered, expired, resolved, discarded),
  2 still unfinished at the timeout (prints the record read last, or ``null``).

Exit 64 for a usage error or an invalid tenant/task, 3 when Redis refuses or cannot be
reached (``wait`` keeps trying until its timeout instead).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, NoReturn

from .agent import Agent

#: Exit code of a usage error (sysexits' EX_USAGE), for every subcommand.
EXIT_USAGE = 64
#: Exit code when Redis refuses or cannot be reached (``enqueue``, ``task``).
EXIT_REDIS = 3
#: ``wait``: the task finished without success; ``task``: no record.
EXIT_FAILED = 1
#: ``wait``: the timeout passed first.
EXIT_TIMEOUT = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64, so that exit 2 can mean a ``wait`` timeout."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def load_agent(spec: str) -> Agent:
    """The :class:`Agent` named ``module:attribute`` (the attribute defaults to ``agent``)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    agent = getattr(module, attr or "agent", None)
    if not isinstance(agent, Agent):
        raise SystemExit(f"redrive: {spec} is not a redrive.Agent (got {type(agent).__name__})")
    return agent


def _redis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDRIVE_REDIS_URL"),
        help="the fleet's Redis (default: $REDRIVE_REDIS_URL)",
    )
    for name, what in (
        ("tls-ca-file", "PEM of the authority that signed the server's certificate (rediss://)"),
        ("tls-cert-file", "client certificate for mutual TLS (PEM)"),
        ("tls-key-file", "the client certificate's private key (PEM)"),
        ("username", "ACL user, when not in the URL"),
        ("password-file", "file holding the password, when not in the URL"),
        ("password-env", "variable holding the password, when not in the URL"),
    ):
        var = "REDRIVE_REDIS__" + name.upper().replace("-", "_")
        p.add_argument(
            f"--{name}",
            default=os.environ.get(var) or None,
            help=f"{what} (default: ${var})",
        )
    p.add_argument(
        "--tls-insecure",
        action="store_true",
        default=os.environ.get("REDRIVE_REDIS__TLS_INSECURE", "").lower() in ("1", "true", "yes"),
        help="do not check the server's certificate (warned about; default: "
        "$REDRIVE_REDIS__TLS_INSECURE)",
    )
    p.add_argument(
        "--key-prefix",
        default=os.environ.get("REDRIVE_REDIS__KEY_PREFIX", "redrive"),
        help="the fleet's redis.key_prefix (default: $REDRIVE_REDIS__KEY_PREFIX or redrive)",
    )


def _group_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group",
        default=os.environ.get("REDRIVE_FLEET__GROUP", "redrive"),
        help="the fleet's consumer group, fleet.group (default: $REDRIVE_FLEET__GROUP or "
        "redrive): a queued task whose entry is pending in it shows as running",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m redrive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    http = sub.add_parser("http", help="serve over HTTP (serve_http)")
    http.add_argument("agent", help="module:attribute of the Agent")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, default=8000)
    http.add_argument("--path", default="/")
    pool = sub.add_parser("pool", help="serve request lines on stdin (serve_pool)")
    pool.add_argument("agent", help="module:attribute of the Agent")
    pool.add_argument("--concurrency", type=int, default=1)
    one = sub.add_parser("exec", help="run one request line from stdin (run_exec)")
    one.add_argument("agent", help="module:attribute of the Agent")

    enq = sub.add_parser("enqueue", help="publish one task (idempotent by task_id)")
    enq.add_argument("tenant")
    enq.add_argument("kind")
    enq.add_argument("payload", help="the payload as JSON text")
    enq.add_argument("--task-id", help="the task's id (default: 32 random hex digits)")
    enq.add_argument(
        "--no-dedup",
        action="store_true",
        help="ids reused on purpose: enqueue again unless the task_id is still in flight",
    )
    enq.add_argument(
        "--no-records", action="store_true", help="plain XADD (fleets with tasks.enabled=false)"
    )
    enq.add_argument(
        "--retention-ms",
        type=int,
        default=os.environ.get("REDRIVE_TASKS__RETENTION_MS", "86400000"),
        help="the fleet's tasks.retention_ms for the task's tenant and kind, 1000 … 365 days "
        "(default: $REDRIVE_TASKS__RETENTION_MS or 86400000): the record written at enqueue "
        "expires that long plus an eighth later",
    )
    _redis_options(enq)
    task = sub.add_parser("task", help="print a task's record")
    task.add_argument("tenant")
    task.add_argument("task_id")
    _redis_options(task)
    _group_option(task)
    wait = sub.add_parser("wait", help="wait for a task to finish and print its record")
    wait.add_argument("tenant")
    wait.add_argument("task_id")
    wait.add_argument("--timeout", type=float, required=True, help="seconds to wait at most")
    _redis_options(wait)
    _group_option(wait)
    return parser


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _tasks_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import redis

    from .errors import EnqueueFailed, InvalidTask, TaskFailed, WaitTimeout
    from .producer import Producer

    if not args.redis_url:
        parser.error("no Redis: pass --redis-url or set REDRIVE_REDIS_URL")
    from .connection import connect

    try:
        producer = Producer(
            connect(
                args.redis_url,
                tls_ca_file=args.tls_ca_file,
                tls_cert_file=args.tls_cert_file,
                tls_key_file=args.tls_key_file,
                tls_insecure=args.tls_insecure,
                username=args.username,
                password_file=args.password_file,
                password_env=args.password_env,
            ),
            key_prefix=args.key_prefix,
            dedup=not getattr(args, "no_dedup", False),
            records=not getattr(args, "no_records", False),
            group=getattr(args, "group", "redrive"),
            retention_ms=getattr(args, "retention_ms", 86_400_000),
        )
    except ValueError as e:
        parser.error(str(e))
    try:
        if args.command == "enqueue":
            try:
                payload = json.loads(args.payload)
            except ValueError as e:
                parser.error(f"PAYLOAD is not JSON: {e}")
            got = producer.enqueue(args.tenant, args.kind, payload, task_id=args.task_id)
            _print(got.to_dict())
            return 0
        if args.command == "task":
            record = producer.get_task(args.tenant, args.task_id)
            _print(None if record is None else record.to_dict())
            if record is None:
                print(f"redrive: task {args.tenant}/{args.task_id}: no record", file=sys.stderr)
                return EXIT_FAILED
            return 0
        try:
            record = producer.wait(args.tenant, args.task_id, args.timeout)
        except TaskFailed as e:
            _print(e.record.to_dict())
            print(f"redrive: {e}", file=sys.stderr)
            return EXIT_FAILED
        except WaitTimeout as e:
            _print(None if e.record is None else e.record.to_dict())
            print(f"redrive: {e}", file=sys.stderr)
            return EXIT_TIMEOUT
        _print(record.to_dict())
        return 0
    except InvalidTask as e:
        print(f"redrive: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:  # a timeout that is not a finite number >= 0
        parser.error(str(e))
    except (EnqueueFailed, redis.RedisError) as e:
        print(f"redrive: {e}", file=sys.stderr)
        return EXIT_REDIS
    finally:
        producer.close()
        producer.redis.close()


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("enqueue", "task", "wait"):
        return _tasks_command(args, parser)

    sys.path.insert(0, os.getcwd())
    agent = load_agent(args.agent)
    if args.command == "http":
        from .http import serve_http

        raw = os.environ.get("REDRIVE_SECRETS", "")
        secrets = [s.strip() for s in raw.split(",") if s.strip()] or None
        serve_http(agent, args.host, args.port, secrets, args.path)
        return 0
    if args.command == "pool":
        from .stdio import serve_pool

        serve_pool(agent, args.concurrency)
        return 0
    from .stdio import run_exec

    return run_exec(agent)


if __name__ == "__main__":
    sys.exit(main())
