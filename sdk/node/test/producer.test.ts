/**
 * The producer against a real redis-server: the Rust producer's keys, fields and batching
 * (records, duplicates and wait: records.test.ts), and the announcement of new tenants on
 * `<prefix>:tenants:new`.
 */

import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";

import { Redis } from "ioredis";

import { EnqueueError, InvalidTaskError, PIPELINE_CHUNK, Producer, type NewTask } from "../src/index.js";
import { REGISTERED_FOR_MS, RegisteredTenants } from "../src/registered.js";
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
    const recorded = values[12] ?? "";
    assert.ok(Number(recorded) > enqueuedAt, "`recorded`: the record's expiry (enqueue.lua)");
    assert.deepEqual(values, [
      "t-123", "acme", "triage_ticket", '{"ticket":42,"text":"héllo"}', "1", String(enqueuedAt),
      "3", "v7", "0af7651916cd43dd8448eb211c80319c", "1893456000000", "prod", "1.4.2",
      recorded,
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

  it("enqueueMany pipelines chunks of 1000: the tenants registered in the first, every task in order", async () => {
    await redis.config("RESETSTAT");
    const producer = new Producer(redis);
    // A slow machine too: the later chunks know the tenants.
    Object.assign(producer, { registered: new RegisteredTenants(3_600_000) });
    const n = 2 * PIPELINE_CHUNK + 500;
    const tasks: NewTask[] = Array.from({ length: n }, (_, i) => ({
      tenant: i % 2 === 0 ? "acme" : "globex",
      kind: "k",
      payload: { i },
      task_id: `t-${i}`,
    }));
    const out = await within(20_000, "enqueueMany", producer.enqueueMany(tasks));
    assert.equal(out.length, n);
    assert.deepEqual(out.map((o) => o.taskId), tasks.map((t) => t.task_id));
    const stats = await redis.info("commandstats");
    const calls = (cmd: string): number => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    assert.equal(calls("xadd"), n);
    assert.equal(calls("evalsha"), n, "one enqueue script per task");
    assert.equal(calls("sadd"), 1, "one SADD, in the first of three round trips (the tenant registry tests below)");
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

/** A subscriber on one channel, on a connection of its own, subscribed before use. */
class Subscriber {
  private readonly queue: string[] = [];
  private waiter: ((message: string) => void) | undefined;

  private constructor(
    readonly redis: Redis,
    readonly channel: string,
  ) {}

  /** Subscribes to `channel` on the server at `port`. */
  static async open(port: number, channel: string): Promise<Subscriber> {
    const sub = new Subscriber(new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 1 }), channel);
    sub.redis.on("message", (from: string, message: string) => {
      if (from !== channel) return;
      const waiter = sub.waiter;
      sub.waiter = undefined;
      if (waiter) waiter(message);
      else sub.queue.push(message);
    });
    await within(5_000, `SUBSCRIBE ${channel}`, sub.redis.subscribe(channel));
    return sub;
  }

  /** The next message (fails after 5 s without one). */
  async next(): Promise<string> {
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    try {
      return await within(
        5_000,
        `a message on ${this.channel}`,
        new Promise<string>((resolve) => {
          this.waiter = resolve;
        }),
      );
    } finally {
      this.waiter = undefined; // a message after a timeout is queued, not lost
    }
  }

  /**
   * Asserts nothing was published since the last message read: a marker published now is the
   * next message (a channel delivers in order), so no wait on silence.
   */
  async nothingMore(publisher: Redis): Promise<void> {
    const marker = `marker-${randomBytes(8).toString("hex")}`;
    await publisher.publish(this.channel, marker);
    assert.equal(await this.next(), marker, "an unexpected announcement came before the marker");
  }

  async close(): Promise<void> {
    await this.redis.quit();
  }
}

describe("Producer announces new tenants on <prefix>:tenants:new", () => {
  let server: RedisServer;
  let redis: Redis;
  let sub: Subscriber;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    sub = await Subscriber.open(server.port, "redrive:tenants:new");
  });
  after(async () => {
    await sub.close();
    await redis.quit();
    await server.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
  });

  for (const records of [true, false]) {
    it(`announces a new tenant once, after its task landed (records: ${String(records)})`, async () => {
      const producer = new Producer(redis, { records });
      // Redis forgot the script: the task goes in a second round, the SADD only in the first;
      // the announcement follows the round that lands it.
      await redis.script("FLUSH");
      const first = await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: 1 }));
      assert.equal(await sub.next(), "acme");
      // Published after the write: the entry is there by the time the message arrives.
      const lane = (await redis.xrange("redrive:{acme}:lane", "-", "+")) as Entry[];
      assert.deepEqual(lane.map(([id]) => id), [first.entryId]);
      await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: 2 }));
      await within(5_000, "enqueueMany", producer.enqueueMany([
        { tenant: "acme", kind: "k", payload: 3 },
        { tenant: "acme", kind: "k", payload: 4 },
      ]));
      await sub.nothingMore(redis);
      assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
    });
  }

  it("a batch adding two tenants announces the round trip's tenants in one message", async () => {
    const producer = new Producer(redis);
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 0 });
    assert.equal(await sub.next(), "acme");
    const out = await within(5_000, "enqueueMany", producer.enqueueMany([
      { tenant: "initech", kind: "k", payload: 1 },
      { tenant: "acme", kind: "k", payload: 2 },
      { tenant: "globex", kind: "k", payload: 3 },
      { tenant: "initech", kind: "k", payload: 4 },
    ]));
    assert.equal(out.length, 4);
    // The round trip's distinct tenants, sorted, as the Rust producer sends them.
    assert.equal(await sub.next(), "acme,globex,initech");
    await sub.nothingMore(redis);
    assert.equal(await redis.xlen("redrive:{globex}:lane"), 1);
    assert.equal(await redis.xlen("redrive:{initech}:lane"), 2);
  });

  it("honours keyPrefix: the channel is <prefix>:tenants:new", async () => {
    const own = await Subscriber.open(server.port, "team:x:tenants:new");
    try {
      await new Producer(redis, { keyPrefix: "team:x" }).enqueue({ tenant: "acme", kind: "k", payload: 1 });
      assert.equal(await own.next(), "acme");
      await sub.nothingMore(redis);
    } finally {
      await own.close();
    }
  });

  it("a refused PUBLISH (a user without +publish) is a warning: the enqueue stands", async (t) => {
    const acl = await startRedis();
    const admin = new Redis(acl.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    const password = randomBytes(16).toString("hex");
    await admin.acl("SETUSER", "producer", "on", `>${password}`, "~*", "&*", "+@all", "-publish");
    const watcher = await Subscriber.open(acl.port, "redrive:tenants:new");
    const client = new Redis(acl.port, "127.0.0.1", { username: "producer", password, maxRetriesPerRequest: 1 });
    const warn = t.mock.method(console, "warn", () => undefined);
    try {
      await assert.rejects(client.publish("redrive:tenants:new", "x"), /NOPERM/, "the user really cannot publish");
      const producer = new Producer(client);
      const one = await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" }));
      const many = await within(5_000, "enqueueMany", producer.enqueueMany([
        { tenant: "acme", kind: "k", payload: 2 },
        { tenant: "globex", kind: "k", payload: 3 },
      ]));
      const plain = await within(5_000, "enqueue", producer.enqueue({ tenant: "hooli", kind: "k", payload: 4 }, { records: false }));
      await producer.enqueue({ tenant: "globex", kind: "k", payload: 5 }); // registered: nothing to announce
      assert.equal(one.taskId, "t-1");
      assert.equal(one.duplicate, undefined);
      assert.deepEqual(many.map((m) => m.duplicate), [undefined, undefined]);
      const lane = (await admin.xrange("redrive:{acme}:lane", "-", "+")) as Entry[];
      assert.deepEqual(lane.map(([id]) => id), [one.entryId, many[0]?.entryId]);
      assert.equal(await admin.xlen("redrive:{hooli}:lane"), 1);
      assert.equal(plain.entryId, ((await admin.xrange("redrive:{hooli}:lane", "-", "+")) as Entry[])[0]?.[0]);
      assert.equal(await admin.hget("redrive:{acme}:task:t-1", "state"), "queued");
      assert.deepEqual((await admin.smembers("redrive:tenants")).sort(), ["acme", "globex", "hooli"]);
      const warnings = warn.mock.calls.map((c) => String(c.arguments[0]));
      assert.equal(warnings.length, 3, warnings.join("\n"));
      assert.match(warnings[0] ?? "", /^redrive: new tenants acme enqueued but not announced on redrive:tenants:new \(NOPERM.*publish/);
      assert.match(warnings[1] ?? "", /^redrive: new tenants acme,globex enqueued but not announced/);
      assert.match(warnings[2] ?? "", /^redrive: new tenants hooli enqueued but not announced/);
      assert.ok(warnings.every((w) => !w.includes(password)), "the password is never printed");
      await watcher.nothingMore(admin);
    } finally {
      client.disconnect();
      await watcher.close();
      await admin.quit();
      await acl.stop();
    }
  });
});

/** How many times the server ran `cmd` (INFO commandstats). */
async function calls(redis: Redis, cmd: string): Promise<number> {
  const stats = await redis.info("commandstats");
  return Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
}

/** A pause of `ms`. */
async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

describe("Producer registers a tenant at most once a second, as the Rust producer", () => {
  let server: RedisServer;
  let redis: Redis;
  let sub: Subscriber;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    sub = await Subscriber.open(server.port, "redrive:tenants:new");
  });
  after(async () => {
    await sub.close();
    await redis.quit();
    await server.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
  });

  for (const records of [true, false]) {
    it(`one SADD for a tenant enqueued again and again within a second, one more after it (records: ${String(records)})`, async () => {
      const producer = new Producer(redis, { records });
      const before = await calls(redis, "sadd");
      for (let i = 0; i < 20; i++) await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: i }));
      await within(5_000, "enqueueMany", producer.enqueueMany([1, 2, 3].map((payload) => ({ tenant: "acme", kind: "k", payload }))));
      assert.equal((await calls(redis, "sadd")) - before, 1, "the first enqueue's SADD only");
      assert.equal(await sub.next(), "acme");
      assert.equal(await redis.xlen("redrive:{acme}:lane"), 23);
      await sleep(REGISTERED_FOR_MS);
      for (let i = 0; i < 5; i++) await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: i }));
      assert.equal((await calls(redis, "sadd")) - before, 2, "a second later, registered again once");
      await sub.nothingMore(redis); // it was in the registry: the SADD answered 0
      assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
    });
  }

  it("a new tenant in a later call is registered at once (its SADD names it alone) and announced", async () => {
    const producer = new Producer(redis);
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1 });
    assert.equal(await sub.next(), "acme");
    // Were acme in the next SADD, Redis would have it again.
    await redis.del("redrive:tenants");
    const before = await calls(redis, "sadd");
    await within(5_000, "enqueueMany", producer.enqueueMany([
      { tenant: "acme", kind: "k", payload: 2 },
      { tenant: "globex", kind: "k", payload: 3 },
    ]));
    assert.equal((await calls(redis, "sadd")) - before, 1);
    assert.deepEqual(await redis.smembers("redrive:tenants"), ["globex"]);
    // The announcement is as before: the round trip's tenants, since its SADD added one.
    assert.equal(await sub.next(), "acme,globex");
    await producer.enqueue({ tenant: "globex", kind: "k", payload: 4 });
    assert.equal((await calls(redis, "sadd")) - before, 1);
    await sub.nothingMore(redis);
  });

  it("a registry Redis lost (a restart without persistence) is healed by the next SADD a second later", async () => {
    const producer = new Producer(redis);
    const first = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1 });
    assert.equal(await sub.next(), "acme");
    await redis.del("redrive:tenants");
    const second = await producer.enqueue({ tenant: "acme", kind: "k", payload: 2 });
    assert.deepEqual(await redis.smembers("redrive:tenants"), [], "registered within the second: no SADD");
    const lane = (await redis.xrange("redrive:{acme}:lane", "-", "+")) as Entry[];
    assert.deepEqual(lane.map(([id]) => id), [first.entryId, second.entryId], "the task is in the lane all the same");
    await sleep(REGISTERED_FOR_MS);
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 3 }, { records: false });
    assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
    assert.equal(await sub.next(), "acme", "the SADD added it again: announced");
  });

  for (const records of [true, false]) {
    it(`a refused SADD registers nothing: the next enqueue sends it again (records: ${String(records)})`, async () => {
      const producer = new Producer(redis, { records });
      const memory = new RegisteredTenants();
      Object.assign(producer, { registered: memory });
      await redis.set("redrive:tenants", "not a set");
      await assert.rejects(producer.enqueue({ tenant: "acme", kind: "k", payload: 1 }), (e: unknown) => e instanceof EnqueueError && /WRONGTYPE/.test(e.message));
      assert.equal(memory.size, 0);
      await redis.del("redrive:tenants");
      const before = await calls(redis, "sadd");
      await producer.enqueue({ tenant: "acme", kind: "k", payload: 2 });
      assert.equal((await calls(redis, "sadd")) - before, 1, "sent again at once");
      assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
      assert.equal(memory.size, 1);
      assert.equal(await sub.next(), "acme");
    });
  }

  it("a round trip that failed (connection closed) registers nothing", async () => {
    const client = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    try {
      const producer = new Producer(client);
      await within(5_000, "connect", client.ping());
      client.disconnect(); // closed for good: the round trip fails at once
      await assert.rejects(producer.enqueue({ tenant: "acme", kind: "k", payload: 1 }), EnqueueError);
      await within(5_000, "connect again", client.connect());
      const before = await calls(redis, "sadd");
      await within(5_000, "enqueue", producer.enqueue({ tenant: "acme", kind: "k", payload: 2 }));
      assert.equal((await calls(redis, "sadd")) - before, 1);
      assert.deepEqual(await redis.smembers("redrive:tenants"), ["acme"]);
      assert.equal(await sub.next(), "acme");
    } finally {
      client.disconnect();
    }
  });

  it("past its cap the producer forgets every tenant and registers them again", async () => {
    const producer = new Producer(redis);
    const memory = new RegisteredTenants(REGISTERED_FOR_MS, 3);
    Object.assign(producer, { registered: memory });
    const task = (tenant: string): NewTask => ({ tenant, kind: "k", payload: 1 });
    await producer.enqueueMany(["a", "b", "c"].map(task));
    assert.equal(memory.size, 3);
    assert.equal(await sub.next(), "a,b,c");
    const before = await calls(redis, "sadd");
    await producer.enqueueMany(["a", "b", "c"].map(task));
    assert.equal(await calls(redis, "sadd"), before, "all three remembered");
    await producer.enqueue(task("d"));
    assert.equal(memory.size, 1, "a fourth: the memory was cleared, then d remembered");
    assert.equal((await calls(redis, "sadd")) - before, 1);
    assert.equal(await sub.next(), "d");
    await producer.enqueueMany(["a", "d"].map(task));
    assert.equal((await calls(redis, "sadd")) - before, 2, "a was forgotten: registered again (d is remembered)");
    assert.equal(memory.size, 2);
    assert.deepEqual((await redis.smembers("redrive:tenants")).sort(), ["a", "b", "c", "d"]);
    await sub.nothingMore(redis); // a was in the registry: its SADD answered 0
  });
});
