/**
 * The producer against a real redis-server: the Rust producer's keys, fields and batching
 * (records, duplicates and wait: records.test.ts).
 */

import { strict as assert } from "node:assert";
import { after, before, beforeEach, describe, it } from "node:test";

import { Redis } from "ioredis";

import { EnqueueError, InvalidTaskError, PIPELINE_CHUNK, Producer, type NewTask } from "../src/index.js";
import { startRedis, within, type RedisServer } from "./helpers.js";

type Entry = [string, string[]];

describe("Producer against a real redis-server", () => {
  let server: RedisServer;
  let redis: Redis;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
  });
  after(async () => {
    await redis.quit();
    await server.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
  });

  it("writes one task as the Rust producer does: lane stream, tenant registry, fields in order", async () => {
    const producer = new Producer(redis);
    const before = Date.now();
    const out = await within(5000, "enqueue", producer.enqueue({
      tenant: "acme",
      kind: "triage_ticket",
      payload: { ticket: 42, text: "héllo" },
      task_id: "t-123",
      schema_version: 3,
      prompt_version: "v7",
      trace_id: "0af7651916cd43dd8448eb211c80319c",
      deadline: 1893456000000,
      extra: { tool_version: "1.4.2", env: "prod" },
    }));
    const afterMs = Date.now();
    assert.equal(out.taskId, "t-123");
    const entries = (await redis.xrange("redrive:{acme}:lane", "-", "+")) as Entry[];
    assert.equal(entries.length, 1);
    const [id, flat] = entries[0] ?? ["", []];
    assert.equal(id, out.entryId);
    const names = flat.filter((_, i) => i % 2 === 0);
    const values = flat.filter((_, i) => i % 2 === 1);
    assert.deepEqual(names, [
      "task_id", "tenant", "kind", "payload", "attempt", "enqueued_at",
      "schema_version", "prompt_version", "trace_id", "deadline", "env", "tool_version",
      "recorded", // appended by the script: the record was written with the entry
    ]);
    const enqueuedAt = Number(values[5]);
    assert.ok(enqueuedAt >= before && enqueuedAt <= afterMs, "enqueued_at is the enqueue time in ms");
    assert.deepEqual(values, [
      "t-123", "acme", "triage_ticket", '{"ticket":42,"text":"héllo"}', "1", String(enqueuedAt),
      "3", "v7", "0af7651916cd43dd8448eb211c80319c", "1893456000000", "prod", "1.4.2",
      "1",
    ]);
    assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
    assert.deepEqual((await redis.keys("*")).sort(), [
      "redrive:tenants", "redrive:{acme}:lane", "redrive:{acme}:task:t-123", "redrive:{acme}:tasks",
    ]);
    const record = await redis.hgetall("redrive:{acme}:task:t-123");
    assert.equal(record.state, "queued");
    assert.equal(record.kind, "triage_ticket");
    assert.equal(record.entry, out.entryId);
    assert.equal(out.duplicate, undefined);
  });

  it("a minimal task: generated id, scalar payload, no optional fields", async () => {
    const out = await new Producer(redis).enqueue({ tenant: "acme", kind: "score_lead", payload: 7 });
    assert.match(out.taskId, /^[0-9a-f]{32}$/);
    const [[, flat] = ["", []]] = (await redis.xrange("redrive:{acme}:lane", "-", "+")) as Entry[];
    // The script appends `recorded`: the record was written with the entry.
    assert.deepEqual(flat.filter((_, i) => i % 2 === 0), [
      "task_id",
      "tenant",
      "kind",
      "payload",
      "attempt",
      "enqueued_at",
      "recorded",
    ]);
    assert.equal(flat[1], out.taskId);
    assert.equal(flat[7], "7");
  });

  it("enqueueMany pipelines chunks of 1000: one tenant registration per chunk, every task in order", async () => {
    await redis.config("RESETSTAT");
    const n = 2 * PIPELINE_CHUNK + 500;
    const tasks: NewTask[] = Array.from({ length: n }, (_, i) => ({
      tenant: i % 2 === 0 ? "acme" : "globex",
      kind: "k",
      payload: { i },
      task_id: `t-${i}`,
    }));
    const out = await within(20_000, "enqueueMany", new Producer(redis).enqueueMany(tasks));
    assert.equal(out.length, n);
    assert.deepEqual(out.map((o) => o.taskId), tasks.map((t) => t.task_id));
    const stats = await redis.info("commandstats");
    const calls = (cmd: string): number => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    assert.equal(calls("xadd"), n);
    assert.equal(calls("evalsha"), n, "one enqueue script per task");
    assert.equal(calls("sadd"), 3, "one SADD per round trip of up to 1000 tasks");
    assert.equal(await redis.xlen("redrive:{acme}:lane"), n / 2);
    assert.equal(await redis.xlen("redrive:{globex}:lane"), n / 2);
    assert.deepEqual((await redis.smembers("redrive:tenants")).sort(), ["acme", "globex"]);
    const lane = (await redis.xrange("redrive:{globex}:lane", "-", "+", "COUNT", 3)) as Entry[];
    assert.deepEqual(lane.map(([id, f]) => [id, f[1]]), out.filter((_, i) => i % 2 === 1).slice(0, 3).map((o) => [o.entryId, o.taskId]));
  });

  it("writes nothing when one task of a batch is invalid, and names it", async () => {
    const producer = new Producer(redis);
    await assert.rejects(
      producer.enqueueMany([
        { tenant: "acme", kind: "k", payload: 1 },
        { tenant: "acme", kind: "bad kind", payload: 2 },
        { tenant: "acme", kind: "k", payload: 3 },
      ]),
      (e: unknown) => e instanceof InvalidTaskError && e.field === "kind" && e.index === 1 && e.message.startsWith("task #1: "),
    );
    await assert.rejects(producer.enqueue({ tenant: "acme", kind: "k" } as NewTask), (e: unknown) => e instanceof InvalidTaskError && e.field === "payload" && e.index === undefined);
    assert.equal(await redis.dbsize(), 0);
  });

  it("honours keyPrefix and maxPayloadBytes; a URL makes a client the producer owns and closes", async () => {
    const producer = new Producer(server.url, { keyPrefix: "team:x", maxPayloadBytes: 10 });
    try {
      await producer.enqueue({ tenant: "t-1", kind: "k", payload: [1, 2] });
      assert.equal(await redis.xlen("team:x:{t-1}:lane"), 1);
      assert.equal(await redis.zcard("team:x:{t-1}:tasks"), 1, "the record is under the prefix too");
      assert.deepEqual(await redis.smembers("team:x:tenants"), ["t-1"]);
      await assert.rejects(producer.enqueue({ tenant: "t-1", kind: "k", payload: "0123456789" }), /12 bytes; the limit is 10/);
    } finally {
      await producer.close();
    }
    assert.equal(producer.redis.status, "end");
    const prefixed = new Redis(server.port, "127.0.0.1", { keyPrefix: "x:", lazyConnect: true });
    assert.throws(() => new Producer(prefixed), /keyPrefix/);
    prefixed.disconnect();
    const mine = new Producer(redis);
    await mine.close();
    assert.equal(redis.status, "ready", "a client passed in stays open");
  });

  it("a Redis refusal part-way says how many tasks were written", async () => {
    await redis.set("redrive:{broken}:lane", "not a stream");
    await assert.rejects(
      new Producer(redis).enqueueMany([
        { tenant: "acme", kind: "k", payload: 1 },
        { tenant: "broken", kind: "k", payload: 2 },
      ]),
      (e: unknown) => e instanceof EnqueueError && e.written === 1 && /WRONGTYPE/.test(e.message),
    );
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 1);
  });
});
