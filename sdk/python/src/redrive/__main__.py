"""``python -m redrive {http,pool,exec} module:agent``: serve an :class:`~redrive.Agent` found
by its import path, so a fleet's ``[[handlers]]`` entry can start it without a script.

Secrets for ``http`` come from the ``REDRIVE_SECRETS`` environment variable (comma-separated),
never from the command line, where the process table would show them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .agent import Agent


def load_agent(spec: str) -> Agent:
    """The :class:`Agent` named ``module:attribute`` (the attribute defaults to ``agent``)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    agent = getattr(module, attr or "agent", None)
    if not isinstance(agent, Agent):
        raise SystemExit(f"redrive: {spec} is not a redrive.Agent (got {type(agent).__name__})")
    return agent


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and serves; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m redrive", description=__doc__)
    sub = parser.add_subparsers(dest="transport", required=True)
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
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    agent = load_agent(args.agent)
    if args.transport == "http":
        from .http import serve_http

        raw = os.environ.get("REDRIVE_SECRETS", "")
        secrets = [s.strip() for s in raw.split(",") if s.strip()] or None
        serve_http(agent, args.host, args.port, secrets, args.path)
        return 0
    if args.transport == "pool":
        from .stdio import serve_pool

        serve_pool(agent, args.concurrency)
        return 0
    from .stdio import run_exec

    return run_exec(agent)


if __name__ == "__main__":
    sys.exit(main())
