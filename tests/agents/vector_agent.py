#!/usr/bin/env python3
"""Plays one case of conformance/stdio.json against the `pool` or `exec` handler: reads one
request line, writes the case's lines (the vectors' request id "r1" replaced by the real one;
any other id, or none, kept), then exits with the case's `exit` code, kills itself with its
`signal`, or (neither) waits for stdin to close.

Usage: vector_agent.py <pool|exec> <case name>
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    transport, name = sys.argv[1], sys.argv[2]
    with open(os.path.join(HERE, "..", "..", "conformance", "stdio.json")) as f:
        case = next(c for c in json.load(f)[transport] if c["name"] == name)
    req = json.loads(sys.stdin.readline())
    for line in case["lines"]:
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("id") == "r1":
            obj["id"] = req["id"]
            line = json.dumps(obj)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    if "signal" in case:
        os.kill(os.getpid(), case["signal"])
    if "exit" in case:
        os._exit(case["exit"])
    for _ in sys.stdin:
        pass


if __name__ == "__main__":
    main()
