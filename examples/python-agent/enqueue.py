"""Publishes example tasks with the SDK's producer: python enqueue.py [N] [REDIS_URL]."""

from __future__ import annotations

import sys

from redrive import NewTask, Producer


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    url = sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379/0"
    producer = Producer(url)
    tasks = []
    for i in range(n):
        tenant = ("acme", "globex")[i % 2]
        if i % 2 == 0:
            tasks.append(NewTask(tenant, "summarize_ticket", {"ticket": i, "text": f"Ticket {i}: the export button does nothing when the report has more than ten thousand rows"}))
        else:
            tasks.append(NewTask(tenant, "send_followup", {"to": f"user{i}@example.com", "about": f"ticket {i - 1}"}))
    done = producer.enqueue_many(tasks)
    print(f"enqueued {len(done)} tasks")


if __name__ == "__main__":
    main()
