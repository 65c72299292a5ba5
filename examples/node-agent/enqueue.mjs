// Publishes example tasks with the SDK's producer: node enqueue.mjs [N] [REDIS_URL]
import { Producer } from "@redrive/sdk";

const n = Number(process.argv[2] ?? "20");
const producer = new Producer(process.argv[3] ?? "redis://127.0.0.1:6379/0");
const tasks = [];
for (let i = 0; i < n; i++) {
  const tenant = i % 2 === 0 ? "acme" : "globex";
  tasks.push(
    i % 2 === 0
      ? { tenant, kind: "summarize_ticket", payload: { ticket: i, text: `Ticket ${i}: the export button does nothing for reports over ten thousand rows` } }
      : { tenant, kind: "send_followup", payload: { to: `user${i}@example.com`, about: `ticket ${i - 1}` } },
  );
}
const done = await producer.enqueueMany(tasks);
console.log(`enqueued ${done.length} tasks`);
await producer.close();
