"""A tiny receiver of redrive's tenant notifications (``[[notify.targets]]``).

Run it with the target's secret in ``REDRIVE_NOTIFY_SECRET``::

    REDRIVE_NOTIFY_SECRET=... python examples/notify_receiver.py --port 8088

and point a target at ``http://<host>:8088/``. It checks each request's signature with
:func:`redrive.notify.verify_notification` (401 when it is not valid), drops the duplicates an
at-least-once delivery may bring (by the event's id), prints each new notification as one JSON
line, and answers 204 — after which the fleet considers it delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from redrive.notify import InvalidNotification, Notification, verify_notification

#: The largest body accepted (a notification is a few KiB).
MAX_BODY = 1024 * 1024


def make_receiver(
    secrets: list[str],
    on_notification: Callable[[Notification], None],
    host: str = "127.0.0.1",
    port: int = 0,
) -> ThreadingHTTPServer:
    """A server (not yet serving) that calls ``on_notification`` once per new, valid event."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413, "too large")
                return
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            try:
                n = verify_notification(secrets, headers, body)
            except InvalidNotification as e:
                self.send_error(401, e.reason)
                return
            with lock:
                new = n.id not in seen
                seen.add(n.id)
            if new:
                on_notification(n)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the notifications are the output."""

    return ThreadingHTTPServer((host, port), Handler)


def _print(n: Notification) -> None:
    line = {"id": n.id, "type": n.type, "tenant": n.tenant, "at": n.at, "data": n.data}
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Serves until interrupted."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8088)
    args = p.parse_args(argv)
    secret = os.environ.get("REDRIVE_NOTIFY_SECRET", "")
    if not secret:
        print("set REDRIVE_NOTIFY_SECRET to the target's secret", file=sys.stderr)
        return 2
    server = make_receiver([secret], _print, args.host, args.port)
    host, port = server.server_address[0], server.server_address[1]
    print(f"receiving notifications on http://{host!s}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
