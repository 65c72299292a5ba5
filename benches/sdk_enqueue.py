"""Single and batched enqueue of the Python SDK, measured as `redrive bench --scenario enqueue`
measures the Rust producer: N/10 tasks enqueued one call at a time, each awaited before the
next (`Producer.enqueue`), then N in one `enqueue_many` (pipelines of 1,000), with the raw
round trip of the same client (`PING` one at a time) beside them. Records on (the default).

    python benches/sdk_enqueue.py redis://127.0.0.1:PORT/0 [N] [REPEAT]

Prints one line per figure (the median of REPEAT runs, with the spread). Uses its own key
prefix and deletes what it wrote."""

import statistics
import sys
import time
import uuid

import redis

from redrive import NewTask, Producer

PAYLOAD = {"text": "x" * 180}


def run(url: str, n: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    prefix = f"sdkbench-{uuid.uuid4().hex[:8]}"
    producer = Producer(client, key_prefix=prefix)
    single = max(n // 10, 1)
    out: dict[str, float] = {}
    start = time.perf_counter()
    for _ in range(single):
        client.ping()
    out["raw PING, one per call"] = single / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(single):
        producer.enqueue("t", "bench", PAYLOAD)
    out["enqueue, one per call"] = single / (time.perf_counter() - start)
    tasks = [NewTask("t", "bench", PAYLOAD) for _ in range(n)]
    start = time.perf_counter()
    producer.enqueue_many(tasks)
    out["enqueue_many"] = n / (time.perf_counter() - start)
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        client.unlink(key)
    return out


def main() -> None:
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    runs = [run(url, n) for _ in range(repeat)]
    for name in runs[0]:
        rates = sorted(r[name] for r in runs)
        print(f"python {name}: {statistics.median(rates):,.0f}/s (runs {rates[0]:,.0f}–{rates[-1]:,.0f})")


if __name__ == "__main__":
    main()
