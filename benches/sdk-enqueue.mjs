// Single and batched enqueue of the Node SDK, measured as `redrive bench --scenario enqueue`
// measures the Rust producer: N/10 tasks enqueued one call at a time, each awaited before the
// next (`Producer.enqueue`), then N in one `enqueueMany` (pipelines of 1,000), with the raw
// round trip of the same client (`PING` one at a time) beside them. Records on (the default).
//
//   (cd sdk/node && npx tsc -p tsconfig.json --outDir /tmp/redrive-node/dist)
//   cp -r sdk/node/lua /tmp/redrive-node/   # the SDK reads ../lua/enqueue.lua next to dist/
//   ln -s "$PWD/sdk/node/node_modules" /tmp/redrive-node/   # and imports ioredis from there
//   REDRIVE_NODE_DIST=/tmp/redrive-node/dist node benches/sdk-enqueue.mjs redis://127.0.0.1:PORT/0 [N] [REPEAT]
//
// Prints one line per figure (the median of REPEAT runs, with the spread). Uses its own key
// prefix and deletes what it wrote.
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";

const dist = process.env.REDRIVE_NODE_DIST ?? path.resolve("sdk/node/dist");
const { Producer } = await import(path.join(dist, "index.js"));
const require = createRequire(path.resolve("sdk/node/package.json"));
const { Redis } = require("ioredis");

const payload = { text: "x".repeat(180) };

async function run(url, n) {
  const client = new Redis(url);
  const prefix = `sdkbench-${randomBytes(4).toString("hex")}`;
  const producer = new Producer(client, { keyPrefix: prefix });
  const single = Math.max(Math.floor(n / 10), 1);
  const out = {};
  let start = performance.now();
  for (let i = 0; i < single; i++) await client.ping();
  out["raw PING, one per call"] = single / ((performance.now() - start) / 1000);
  start = performance.now();
  for (let i = 0; i < single; i++) await producer.enqueue({ tenant: "t", kind: "bench", payload });
  out["enqueue, one per call"] = single / ((performance.now() - start) / 1000);
  const tasks = Array.from({ length: n }, () => ({ tenant: "t", kind: "bench", payload }));
  start = performance.now();
  await producer.enqueueMany(tasks);
  out["enqueueMany"] = n / ((performance.now() - start) / 1000);
  let cursor = "0";
  do {
    const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 10000);
    if (keys.length > 0) await client.unlink(...keys);
    cursor = next;
  } while (cursor !== "0");
  await client.quit();
  return out;
}

const [url, nArg, repeatArg] = process.argv.slice(2);
const n = Number(nArg ?? 100000);
const repeat = Number(repeatArg ?? 3);
const runs = [];
for (let i = 0; i < repeat; i++) runs.push(await run(url, n));
const fmt = (x) => Math.round(x).toLocaleString("en-US");
for (const name of Object.keys(runs[0])) {
  const rates = runs.map((r) => r[name]).sort((a, b) => a - b);
  console.log(`node ${name}: ${fmt(rates[Math.floor(rates.length / 2)])}/s (runs ${fmt(rates[0])}–${fmt(rates[rates.length - 1])})`);
}
