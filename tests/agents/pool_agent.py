#!/usr/bin/env python3
"""A test agent for the `pool` and `exec` handlers, speaking the stdio protocol by hand (not
the SDK: PROTOCOL.md, "Stdio framing").

Each request's payload is a script, {"actions": [...]}, run in its own thread so that several
requests run at once in one process and answer in any order. Actions (all keys but "op" are
arguments):

  step_started name side_effect | step_done name output | progress fields
  reply fields        -- the final line: {"id": <request id>, **fields}
  echo                -- reply ok with {"pid", "task_id", "attempt", "request"}
  raw line            -- write `line` as is (garbage, another id, no id)
  stderr text [times] -- write text on stderr
  sleep seconds | hang | wait_file path (bounded: 30 s)
  touch path          -- write this process's pid into path
  grandchild path [ignore_term] [keep_stdout] -- start `sleep 3600` (in this process group)
                      and write its pid; keep_stdout: it holds this process's stdout open
  exit code           -- exit the whole process now
  kill signal         -- send the signal to this process

At start the process appends its pid to $AGENT_STARTS when set. It exits when stdin closes.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

OUT = threading.Lock()


def write(line):
    if not isinstance(line, str):
        line = json.dumps(line)
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run(req):
    rid = req["id"]
    task = req["task"]
    payload = task.get("payload") or {}
    for a in payload.get("actions", []):
        op = a["op"]
        if op == "step_started":
            write({"id": rid, "event": "step_started", "name": a["name"],
                   "side_effect": a.get("side_effect", False)})
        elif op == "step_done":
            write({"id": rid, "event": "step_done", "name": a["name"], "output": a.get("output")})
        elif op == "progress":
            write(dict({"id": rid, "event": "progress"}, **a.get("fields", {})))
        elif op == "reply":
            write(dict({"id": rid}, **a["fields"]))
        elif op == "echo":
            write({"id": rid, "status": "ok", "output": {
                "pid": os.getpid(), "task_id": task["task_id"], "attempt": task["attempt"],
                "request": req}})
        elif op == "raw":
            write(a["line"])
        elif op == "stderr":
            with OUT:
                for _ in range(a.get("times", 1)):
                    sys.stderr.write(a["text"] + "\n")
                sys.stderr.flush()
        elif op == "sleep":
            time.sleep(a["seconds"])
        elif op == "hang":
            time.sleep(3600)
        elif op == "wait_file":
            deadline = time.time() + 30
            while not os.path.exists(a["path"]) and time.time() < deadline:
                time.sleep(0.01)
        elif op == "touch":
            with open(a["path"], "w") as f:
                f.write(str(os.getpid()))
        elif op == "grandchild":
            pre = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if a.get("ignore_term") else None
            p = subprocess.Popen(["sleep", "3600"], preexec_fn=pre,
                                 stdin=subprocess.DEVNULL,
                                 stdout=None if a.get("keep_stdout") else subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            with open(a["path"], "w") as f:
                f.write(str(p.pid))
        elif op == "exit":
            sys.stdout.flush()
            os._exit(a["code"])
        elif op == "kill":
            os.kill(os.getpid(), a["signal"])
        else:
            write("unknown action " + op)


def main():
    starts = os.environ.get("AGENT_STARTS")
    if starts:
        with open(starts, "a") as f:
            f.write("%d\n" % os.getpid())
    for line in sys.stdin:
        if not line.strip():
            continue
        threading.Thread(target=run, args=(json.loads(line),), daemon=True).start()


if __name__ == "__main__":
    main()
