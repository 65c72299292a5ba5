/**
 * Issue 14 on the Node side, against a real redis-server: idempotent enqueue through the
 * fleet's own enqueue.lua (byte for byte), getTask, and wait on the events stream.
 *
 * No fleet member runs here, so a task's finish is written by {@link finish} exactly as the
 * member's ack / dead-letter scripts write it (lib/record.lua's rec_end + rec_event: the record's
 * state, ended, output, then — only while a waiter is registered — one entry `task, state,
 * entry` in the tenant's events stream). It stands for the member's scripts; the Rust end-to-end
 * test (tests/e2e_wait.rs) covers the real member with this SDK's `redrive-sdk wait`.
 */

import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { Redis } from "ioredis";

import {
  InvalidTaskError,
  Producer,
  STATS_KEEP_MS,
  TaskFailedError,
  WaitTimeoutError,
  enqueueScript,
  type TaskRecord,
} from "../src/index.js";
import { repoRoot, startRedis, within, type RedisServer } from "./helpers.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const RACER = join(HERE, "fixtures", "enqueue-race.js");
const CLI = join(HERE, "..", "src", "cli.js");

/** The script's source in the SDK's directory (what `npm pack` ships). */
const SHIPPED = join(repoRoot(), "sdk", "node", "lua", "enqueue.lua");

/**
 * A task's finish as lib/record.lua writes it (rec_end, rec_event), in one script: the record's
 * state and fields (indexed if it was not), then the events entry only when the waiters ZSET
 * has a live member (scored at least the server's now). KEYS: record, index, events, waiters;
 * ARGV: task_id, state, field/value pairs. Returns 1 when it published the event.
 */
const FINISH_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ts = string.format('%d', now)
local entry = redis.call('HGET', KEYS[1], 'entry') or ''
local args = {'HSET', KEYS[1], 'state', ARGV[2], 'updated', ts, 'ended', ts}
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
end
redis.call(unpack(args))
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
if #redis.call('ZRANGEBYSCORE', KEYS[4], now, '+inf', 'LIMIT', 0, 1) == 0 then
  return 0
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'task', ARGV[1], 'state', ARGV[2], 'entry', entry)
return 1
`;

/**
 * Writes a task's finish as the member's scripts do (ack.lua → done; dead_letter.lua →
 * dead_lettered): the record's state and fields, then the events entry while someone waits —
 * one script, as the member's. It stands for the member side, which the Rust e2e test runs for
 * real. Resolves with whether it published the event.
 */
async function finish(
  redis: Redis,
  tenant: string,
  taskId: string,
  state: string,
  fields: Record<string, string> = {},
): Promise<boolean> {
  const published = await redis.eval(
    FINISH_SCRIPT,
    4,
    `redrive:{${tenant}}:task:${taskId}`,
    `redrive:{${tenant}}:tasks`,
    `redrive:{${tenant}}:events`,
    `redrive:{${tenant}}:waiters`,
    taskId,
    state,
    ...Object.entries(fields).flat(),
  );
  return published === 1;
}

/** The Redis server's clock, ms. */
async function serverNow(redis: Redis): Promise<number> {
  const [sec, usec] = await redis.time();
  return Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
}

/** The tenant's waiters ZSET: `[member, score]` pairs. */
async function waiters(redis: Redis, tenant: string): Promise<[string, number][]> {
  const flat = await redis.zrange(`redrive:{${tenant}}:waiters`, 0, -1, "WITHSCORES");
  const out: [string, number][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] ?? "", Number(flat[i + 1])]);
  return out;
}

/** A waiter id as `wait` makes them (a random UUID). */
const WAITER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Until the tenant's waiters ZSET holds `n` members, all waits' ids (bounded); then its pairs. */
async function registered(redis: Redis, tenant: string, n: number): Promise<[string, number][]> {
  return within(5_000, `${n} registered waiter(s)`, (async () => {
    for (;;) {
      const got = await waiters(redis, tenant);
      if (got.length === n && got.every(([id]) => WAITER_ID.test(id))) return got;
      await new Promise((r) => setTimeout(r, 20));
    }
  })());
}

/** INFO commandstats calls of `cmd` (lowercase). */
async function calls(redis: Redis, cmd: string): Promise<number> {
  const stats = await redis.info("commandstats");
  const line = stats.split("\n").find((l) => l.startsWith(`cmdstat_${cmd}:`));
  return Number(/calls=(\d+)/.exec(line ?? "")?.[1] ?? 0);
}

/** The sum of `field` over the tenant's stats buckets. */
async function statsSum(redis: Redis, tenant: string, field: string): Promise<number> {
  const keys = await redis.keys(`redrive:{${tenant}}:stats:*`);
  let sum = 0;
  for (const k of keys) sum += Number((await redis.hget(k, field)) ?? 0);
  return sum;
}

/**
 * A TCP proxy to a Redis on loopback whose open connections can be frozen: bytes stop flowing
 * both ways and nothing is closed (a network that silently drops everything). New connections
 * flow normally.
 */
async function freezingProxy(target: number): Promise<{ port: number; freeze(): void; close(): Promise<void> }> {
  const pairs: [Socket, Socket][] = [];
  const server: Server = createServer((client) => {
    const upstream = connect(target, "127.0.0.1");
    client.on("error", () => undefined);
    upstream.on("error", () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  return {
    port,
    freeze: () => {
      for (const [client, upstream] of pairs.splice(0)) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        server.close(() => {
          resolve();
        });
      }),
  };
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled `redrive-sdk` with `args` (bounded). */
function cli(args: string[]): Promise<Exit> {
  return within(
    30_000,
    `redrive-sdk ${args.join(" ")}`,
    new Promise<Exit>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.once("error", reject);
      child.once("close", (code) => {
        resolve({ code, stdout, stderr });
      });
    }),
  );
}

describe("enqueue.lua shipped with the SDK", () => {
  it("is byte for byte lib/record.lua followed by enqueue.lua of the repository", () => {
    const scripts = join(repoRoot(), "src", "broker", "scripts");
    const expected = Buffer.concat([
      readFileSync(join(scripts, "lib", "record.lua")),
      readFileSync(join(scripts, "enqueue.lua")),
    ]);
    assert.ok(expected.length > 1000);
    assert.ok(readFileSync(SHIPPED).equals(expected), `${SHIPPED} has drifted from src/broker/scripts; copy it again`);
    assert.ok(Buffer.from(enqueueScript().text, "utf8").equals(expected), "the script the producer runs is that text");
  });

  it("is passed the stats keep time of the Rust callers (src/broker/stats.rs STATS_KEEP)", () => {
    const rust = readFileSync(join(repoRoot(), "src", "broker", "stats.rs"), "utf8");
    const m = /pub const STATS_KEEP: Duration = Duration::from_secs\(([0-9_ *]+)\);/.exec(rust);
    assert.ok(m?.[1] !== undefined, "STATS_KEEP found in stats.rs");
    const secs = m[1].split("*").reduce((p, f) => p * Number(f.replaceAll("_", "").trim()), 1);
    assert.equal(STATS_KEEP_MS, secs * 1000);
  });
});

describe("records, idempotent enqueue and wait against a real redis-server", () => {
  let server: RedisServer;
  let redis: Redis;
  let producer: Producer;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    producer = new Producer(redis);
  });
  after(async () => {
    await redis.quit();
    await server.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
    await redis.config("RESETSTAT");
  });

  it("Redis knows the script by the SHA1 the producer sends", async () => {
    assert.equal(await redis.script("LOAD", enqueueScript().text), enqueueScript().sha);
  });

  it("a duplicate is reported with the live state and entry, written nowhere, counted in the stats", async () => {
    const first = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    assert.equal(first.duplicate, undefined);
    const again = await producer.enqueue({ tenant: "acme", kind: "other", payload: 2, task_id: "t-1" });
    assert.deepEqual(again, {
      taskId: "t-1",
      entryId: first.entryId,
      duplicate: { state: "queued", entry: first.entryId },
    });
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 1);
    assert.equal(await redis.hget("redrive:{acme}:task:t-1", "kind"), "k", "the record is the first task's");
    assert.equal(await statsSum(redis, "acme", "duplicates"), 1);
    const [bucket] = await redis.keys("redrive:{acme}:stats:*");
    const ttl = await redis.pttl(bucket ?? "");
    assert.ok(ttl > STATS_KEEP_MS - 60_000 && ttl <= STATS_KEEP_MS, `the bucket expires after the stats keep time: ${ttl}`);
    // Within one batch too, and for a done task (within its retention).
    await finish(redis, "acme", "t-1", "done", { output: "1" });
    const batch = await producer.enqueueMany([
      { tenant: "acme", kind: "k", payload: 1, task_id: "t-2" },
      { tenant: "acme", kind: "k", payload: 1, task_id: "t-2" },
      { tenant: "acme", kind: "k", payload: 1, task_id: "t-1" },
    ]);
    assert.equal(batch[0]?.duplicate, undefined);
    assert.deepEqual(batch[1]?.duplicate, { state: "queued", entry: batch[0]?.entryId });
    assert.deepEqual(batch[2]?.duplicate, { state: "done", entry: first.entryId });
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 2);
    assert.equal(await statsSum(redis, "acme", "duplicates"), 3);
    // A resolved dead letter's id may be enqueued again: a new task, a fresh record.
    await finish(redis, "acme", "t-1", "resolved");
    const fresh = await producer.enqueue({ tenant: "acme", kind: "k2", payload: 3, task_id: "t-1" });
    assert.equal(fresh.duplicate, undefined);
    assert.notEqual(fresh.entryId, first.entryId);
    const rec = await producer.getTask("acme", "t-1");
    assert.equal(rec?.state, "queued");
    assert.equal(rec.kind, "k2");
    assert.equal(rec.output, undefined, "the old record's fields are gone");
  });

  it("dedup false (producer default or per call): an id reused on purpose is enqueued again", async () => {
    const reuse = new Producer(redis, { dedup: false });
    const a = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "same" });
    const b = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 2, task_id: "same" });
    const c = await producer.enqueue({ tenant: "acme", kind: "k", payload: 3, task_id: "same" }, { dedup: false });
    assert.equal(a.duplicate ?? b.duplicate ?? c.duplicate, undefined);
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 3);
    assert.equal(await redis.hget("redrive:{acme}:task:same", "entry"), c.entryId, "the record follows the newest task");
    assert.equal(await statsSum(redis, "acme", "duplicates"), 0);
    const d = await producer.enqueue({ tenant: "acme", kind: "k", payload: 4, task_id: "same" });
    assert.deepEqual(d.duplicate, { state: "queued", entry: c.entryId }, "dedup stays on for the default producer");
  });

  it("records false writes plain XADDs: no record, no index, no duplicate refusal", async () => {
    const plain = new Producer(redis, { records: false });
    await plain.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await plain.enqueueMany([{ tenant: "acme", kind: "k", payload: 2, task_id: "t-1" }]);
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 3, task_id: "t-1" }, { records: false });
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 3);
    assert.deepEqual((await redis.keys("*")).sort(), ["redrive:tenants", "redrive:{acme}:lane"]);
    assert.equal(await calls(redis, "evalsha"), 0);
    assert.equal(await producer.getTask("acme", "t-1"), null);
  });

  it("after SCRIPT FLUSH (NOSCRIPT) the script is loaded again, for one task and for a batch", async () => {
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 0, task_id: "t-0" });
    await redis.script("FLUSH");
    const one = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    assert.equal(one.duplicate, undefined);
    await redis.script("FLUSH");
    const tasks = Array.from({ length: 1500 }, (_, i) => ({ tenant: "acme", kind: "k", payload: i, task_id: `b-${i}` }));
    const many = await within(20_000, "enqueueMany after a flush", producer.enqueueMany(tasks));
    assert.equal(many.filter((e) => e.duplicate === undefined && e.entryId !== "").length, 1500);
    assert.deepEqual(many.map((e) => e.taskId), tasks.map((t) => t.task_id), "results in order");
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 1502);
    assert.equal(await redis.zcard("redrive:{acme}:tasks"), 1502);
    const errors = await redis.info("errorstats");
    assert.ok(/errorstat_NOSCRIPT:count=[1-9]/.test(errors), `NOSCRIPT was answered and handled: ${errors}`);
    assert.ok((await calls(redis, "script|load")) >= 2, "loaded once per flush");
    // A duplicate after a flush is still a duplicate (the script ran, not a plain XADD).
    await redis.script("FLUSH");
    assert.equal((await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" })).duplicate?.state, "queued");
  });

  it("concurrent enqueues of one task_id from 6 OS processes: exactly one lane entry", async () => {
    const n = 6;
    const children = Array.from({ length: n }, () =>
      spawn(process.execPath, [RACER, server.url, "race-1"], { stdio: ["pipe", "pipe", "pipe"] }),
    );
    const outputs = children.map((child) => {
      let text = "";
      let err = "";
      const readyOnce = new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          text += d.toString();
          if (text.startsWith("ready\n")) resolve();
        });
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.once("exit", (code) => {
          reject(new Error(`racer exited ${String(code)} before ready: ${err}`));
        });
      });
      const exited = new Promise<string>((resolve, reject) => {
        child.once("close", (code) => {
          if (code === 0) resolve(text);
          else reject(new Error(`racer exited ${String(code)}: ${err}`));
        });
      });
      return { child, readyOnce, exited };
    });
    try {
      await within(20_000, "every racer connected", Promise.all(outputs.map((o) => o.readyOnce)));
      for (const o of outputs) o.child.stdin.end("go\n");
      const texts = await within(20_000, "every racer enqueued", Promise.all(outputs.map((o) => o.exited)));
      const results = texts.map((t) => JSON.parse(t.slice("ready\n".length)) as { entryId: string; duplicate?: { state: string; entry: string } });
      const winners = results.filter((r) => r.duplicate === undefined);
      assert.equal(winners.length, 1, `exactly one process appended: ${JSON.stringify(results)}`);
      const entry = winners[0]?.entryId;
      for (const r of results.filter((x) => x.duplicate !== undefined)) {
        assert.deepEqual(r.duplicate, { state: "queued", entry });
      }
      assert.equal(await redis.xlen("redrive:{race}:lane"), 1);
      assert.equal(await statsSum(redis, "race", "duplicates"), n - 1);
    } finally {
      for (const o of outputs) if (o.child.exitCode === null) o.child.kill("SIGKILL");
    }
  });

  it("getTask reads a queued task's record, typed", async () => {
    const before = Date.now();
    const { entryId } = await producer.enqueue({ tenant: "acme", kind: "triage", payload: 1, task_id: "t-1" });
    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.equal(rec.tenant, "acme");
    assert.equal(rec.taskId, "t-1");
    assert.equal(rec.state, "queued");
    assert.equal(rec.finished, false);
    assert.equal(rec.kind, "triage");
    assert.equal(rec.attempt, 1);
    assert.equal(rec.entry, entryId);
    assert.equal(rec.starts, 0);
    assert.deepEqual(rec.runs, []);
    assert.ok(rec.enqueuedAt !== undefined && rec.enqueuedAt >= before - 1000 && rec.enqueuedAt <= Date.now() + 1000);
    assert.equal(rec.firstEnqueuedAt, rec.enqueuedAt);
    assert.equal(rec.updatedAt, rec.enqueuedAt);
    assert.equal(rec.outputTruncated, false);
    assert.equal(rec.fields.state, "queued");
    assert.equal(await producer.getTask("acme", "nope"), null);
  });

  it("getTask reads runs, output (JSON, or raw when truncated), failure and replay fields", async () => {
    await redis.hset("redrive:{acme}:task:t-1", {
      state: "done", kind: "k", attempt: "2", entry: "1-0", enq: "100", first: "50", member: "m-2",
      started: "200", ended: "300", updated: "300", runs: "2", class: "timeout", error: "slow",
      "r1:start": "110", "r1:member": "m-1", "r1:end": "150", "r1:outcome": "timeout",
      "r2:start": "200", "r2:member": "m-2", "r2:end": "300", "r2:outcome": "ok",
      output: '{"answer":42,"big":"x"}', replay_of: "9-0", replays: "1", custom: "kept",
    });
    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.equal(rec.state, "done");
    assert.equal(rec.finished, true);
    assert.deepEqual(rec.output, { answer: 42, big: "x" });
    assert.equal(rec.outputTruncated, false);
    assert.deepEqual(rec.runs, [
      { run: 1, start: 110, member: "m-1", end: 150, outcome: "timeout" },
      { run: 2, start: 200, member: "m-2", end: 300, outcome: "ok" },
    ]);
    assert.equal(rec.member, "m-2");
    assert.equal(rec.startedAt, 200);
    assert.equal(rec.endedAt, 300);
    assert.equal(rec.class, "timeout");
    assert.equal(rec.error, "slow");
    assert.equal(rec.replayOf, "9-0");
    assert.equal(rec.replays, 1);
    assert.equal(rec.starts, 2);
    assert.equal(rec.fields.custom, "kept");
    await redis.hset("redrive:{acme}:task:t-1", { output: '{"answer":4', output_truncated: "1" });
    const cut = await producer.getTask("acme", "t-1");
    assert.equal(cut?.output, '{"answer":4');
    assert.equal(cut.outputTruncated, true);
    await redis.hset("redrive:{acme}:task:t-2", { state: "dead_lettered", dlq: "5-0", class: "invalid_input", attempt: "x" });
    const dead = await producer.getTask("acme", "t-2");
    assert.equal(dead?.dlq, "5-0");
    assert.equal(dead.attempt, undefined, "a number that does not parse is left out");
    assert.equal(dead.fields.attempt, "x");
  });

  it("getTask and wait refuse a malformed tenant or task id", async () => {
    for (const [tenant, taskId, field] of [["bad tenant", "t", "tenant"], ["acme", "", "task_id"], ["acme", "a b", "task_id"]] as const) {
      await assert.rejects(producer.getTask(tenant, taskId), (e: unknown) => e instanceof InvalidTaskError && e.field === field);
      await assert.rejects(producer.wait(tenant, taskId, { timeoutMs: 10 }), (e: unknown) => e instanceof InvalidTaskError && e.field === field);
    }
    await assert.rejects(producer.wait("acme", "t", { timeoutMs: -1 }), RangeError);
    await assert.rejects(producer.wait("acme", "t", { timeoutMs: Number.NaN }), RangeError);
  });

  it("wait times out, bounded, reporting the current state (or no record)", async () => {
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "slow" });
    const t0 = Date.now();
    await assert.rejects(
      within(10_000, "wait to time out", producer.wait("acme", "slow", { timeoutMs: 1200 })),
      (e: unknown) => e instanceof WaitTimeoutError && e.state === "queued" && e.record?.state === "queued" && e.timeoutMs === 1200,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 1150 && took < 4000, `timed out after ${took} ms`);
    await assert.rejects(
      within(10_000, "wait to time out", producer.wait("acme", "never", { timeoutMs: 300 })),
      (e: unknown) => e instanceof WaitTimeoutError && e.state === "no record" && e.record === null && /no record/.test(e.message),
    );
    await assert.rejects(
      within(5_000, "wait with timeout 0", producer.wait("acme", "slow", { timeoutMs: 0 })),
      (e: unknown) => e instanceof WaitTimeoutError && e.state === "queued",
    );
    assert.ok((await calls(redis, "hgetall")) <= 8, "no tight poll of the record");
  });

  it("wait returns at once when the task has finished already; a failure rejects unless raiseOnFailure is false", async () => {
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "ok" });
    await finish(redis, "acme", "ok", "done", { output: '{"v":1}' });
    let t0 = Date.now();
    const rec = await within(2_000, "wait on a done task", producer.wait("acme", "ok", { timeoutMs: 30_000 }));
    assert.equal(rec.state, "done");
    assert.deepEqual(rec.output, { v: 1 });
    assert.ok(Date.now() - t0 < 1000);
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "bad" });
    await finish(redis, "acme", "bad", "dead_lettered", { class: "invalid_input", error: "no", dlq: "7-0" });
    t0 = Date.now();
    await assert.rejects(
      within(2_000, "wait on a dead task", producer.wait("acme", "bad", { timeoutMs: 30_000 })),
      (e: unknown) =>
        e instanceof TaskFailedError && e.state === "dead_lettered" && e.record.dlq === "7-0" && /invalid_input/.test(e.message) && /7-0/.test(e.message),
    );
    const dead = await within(2_000, "wait, no raise", producer.wait("acme", "bad", { timeoutMs: 30_000, raiseOnFailure: false }));
    assert.equal(dead.state, "dead_lettered");
    assert.ok(Date.now() - t0 < 1500);
    for (const state of ["expired", "resolved", "discarded"]) {
      await finish(redis, "acme", "bad", state);
      await assert.rejects(producer.wait("acme", "bad", { timeoutMs: 30_000 }), (e: unknown) => e instanceof TaskFailedError && e.state === state);
    }
  });

  it("wait wakes on the task's finish event (not on others'), blocking on a connection of its own", async () => {
    await producer.enqueueMany([
      { tenant: "acme", kind: "k", payload: 1, task_id: "mine" },
      { tenant: "acme", kind: "k", payload: 1, task_id: "other" },
    ]);
    let settled = false;
    const waiting = producer.wait("acme", "mine", { timeoutMs: 20_000 }).finally(() => {
      settled = true;
    });
    waiting.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    // The producer's client is free while the wait blocks.
    const t1 = Date.now();
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "meanwhile" });
    assert.ok(Date.now() - t1 < 2500, "an enqueue is not held up by the 5 s blocking read");
    await finish(redis, "acme", "other", "done");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, "another task's finish does not end the wait");
    await redis.hset("redrive:{acme}:task:mine", { state: "running", member: "m-1" });
    const t2 = Date.now();
    await finish(redis, "acme", "mine", "done", { output: '"the answer"' });
    const rec = await within(3_000, "wait to wake", waiting);
    const woke = Date.now() - t2;
    assert.equal(rec.state, "done");
    assert.equal(rec.output, "the answer");
    assert.equal(rec.member, "m-1");
    assert.ok(woke < 2500, `woke ${woke} ms after the finish (a block, not a 5 s slice)`);
    // Its connection is closed once it is over.
    await within(3_000, "the wait's connection to close", (async () => {
      while (String(await redis.client("LIST")).trim().split("\n").length > 1) {
        await new Promise((r) => setTimeout(r, 50));
      }
    })());
    assert.ok((await calls(redis, "xread")) <= 4, "a few blocking reads, no poll");
  });

  it("a finish publishes its event only while a waiter is registered (a live member of the waiters ZSET)", async () => {
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "n-1" });
    assert.equal(await finish(redis, "acme", "n-1", "done"), false, "nobody waits: no event");
    assert.equal(await redis.exists("redrive:{acme}:events"), 0);
    await redis.zadd("redrive:{acme}:waiters", (await serverNow(redis)) - 1, "lapsed");
    assert.equal(await finish(redis, "acme", "n-1", "done"), false, "a lapsed registration: no event");
    assert.equal(await redis.exists("redrive:{acme}:events"), 0);
    assert.equal((await producer.getTask("acme", "n-1"))?.state, "done", "the record says it all the same");
    await redis.zadd("redrive:{acme}:waiters", (await serverNow(redis)) + 15_000, "live");
    assert.equal(await finish(redis, "acme", "n-1", "done"), true);
    const entries = await redis.xrange("redrive:{acme}:events", "-", "+");
    assert.equal(entries.length, 1);
    assert.deepEqual(entries[0]?.[1].slice(0, 4), ["task", "n-1", "state", "done"]);
  });

  it("a wait registers in the waiters ZSET while it waits and unregisters however it ends", async () => {
    const tenant = "reg";
    // A registration that has lapsed, dropped when a wait registers.
    await redis.zadd(`redrive:{${tenant}}:waiters`, (await serverNow(redis)) - 1, "lapsed");
    await producer.enqueueMany(["ok", "bad", "slow", "broken"].map((id) => ({ tenant, kind: "k", payload: 1, task_id: id })));

    // A result: registered 15 s ahead of the server's clock, the finish publishes, the wait
    // wakes on it, the registration is gone once it resolves.
    const ok = producer.wait(tenant, "ok", { timeoutMs: 20_000 });
    ok.catch(() => undefined);
    // Registered (a random id), and the lapsed registration is gone.
    const [[id, score] = ["", 0]] = await registered(redis, tenant, 1);
    const now = await serverNow(redis);
    assert.ok(score > now + 15_000 - 2000 && score <= now + 15_000, `expires 15 s past the server's now: ${score - now}`);
    assert.equal(await finish(redis, tenant, "ok", "done", { output: "1" }), true, "the finish published its event");
    assert.equal((await within(3_000, "the wait to wake", ok)).state, "done");
    assert.deepEqual(await waiters(redis, tenant), [], "unregistered after a result");

    // A failure.
    const bad = producer.wait(tenant, "bad", { timeoutMs: 20_000 });
    bad.catch(() => undefined);
    const [[badId] = [""]] = await registered(redis, tenant, 1);
    assert.notEqual(badId, id, "each wait has its own id");
    await finish(redis, tenant, "bad", "dead_lettered", { class: "invalid_input", dlq: "1-0" });
    await assert.rejects(within(3_000, "the wait to fail", bad), TaskFailedError);
    assert.deepEqual(await waiters(redis, tenant), [], "unregistered after a failure");

    // A timeout, past one 5 s slice: the registration was refreshed before the second slice.
    const slow = producer.wait(tenant, "slow", { timeoutMs: 6500 });
    slow.catch(() => undefined);
    const [[, first] = ["", 0]] = await registered(redis, tenant, 1);
    await new Promise((r) => setTimeout(r, 5600));
    const [[, second] = ["", 0]] = await waiters(redis, tenant);
    assert.ok(second - first >= 4500, `refreshed for the second slice: +${second - first} ms`);
    await assert.rejects(within(5_000, "the wait to time out", slow), WaitTimeoutError);
    assert.deepEqual(await waiters(redis, tenant), [], "unregistered after a timeout");

    // An error: Redis refuses a command (the record is no hash any more).
    const broken = producer.wait(tenant, "broken", { timeoutMs: 20_000 });
    broken.catch(() => undefined);
    await registered(redis, tenant, 1);
    await redis.del(`redrive:{${tenant}}:task:broken`);
    await redis.set(`redrive:{${tenant}}:task:broken`, "not a hash");
    await redis.xadd(`redrive:{${tenant}}:events`, "*", "task", "broken", "state", "done", "entry", "");
    await assert.rejects(within(3_000, "the wait to fail", broken), (e: unknown) => e instanceof Error && /WRONGTYPE/.test(e.message));
    assert.deepEqual(await waiters(redis, tenant), [], "unregistered after an error");

    // A task finished before the wait: it returns at once, and unregisters.
    assert.equal((await producer.wait(tenant, "ok", { timeoutMs: 20_000 })).state, "done");
    assert.deepEqual(await waiters(redis, tenant), []);
  });

  it("redrive-sdk wait/get/enqueue: JSON on stdout, exit 0 done, 1 failed, 2 timeout", async () => {
    const url = ["--redis-url", server.url];
    const enq = await cli(["enqueue", "acme", "k", "--payload", '{"n":1}', "--task-id", "c-1", ...url]);
    assert.equal(enq.code, 0, enq.stderr);
    const out = JSON.parse(enq.stdout) as { task_id: string; entry_id: string };
    assert.equal(out.task_id, "c-1");
    const dup = await cli(["enqueue", "acme", "k", "--task-id", "c-1", ...url]);
    assert.equal((JSON.parse(dup.stdout) as { duplicate: { state: string } }).duplicate.state, "queued");
    const got = await cli(["get", "acme", "c-1", ...url]);
    assert.equal(got.code, 0);
    assert.equal((JSON.parse(got.stdout) as TaskRecord).entry, out.entry_id);
    assert.equal((await cli(["get", "acme", "none", ...url])).code, 1);
    const timeout = await cli(["wait", "acme", "c-1", "--timeout-ms", "500", ...url]);
    assert.equal(timeout.code, 2, timeout.stderr);
    assert.deepEqual((JSON.parse(timeout.stdout) as { state: string }).state, "queued");
    const waiting = cli(["wait", "acme", "c-1", "--timeout-ms", "20000", ...url]);
    await new Promise((r) => setTimeout(r, 500));
    await finish(redis, "acme", "c-1", "done", { output: "[1,2]" });
    const done = await waiting;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual((JSON.parse(done.stdout) as TaskRecord).output, [1, 2]);
    await finish(redis, "acme", "c-1", "dead_lettered", { class: "invalid_input", dlq: "3-0" });
    const failed = await cli(["wait", "acme", "c-1", "--timeout-ms", "1000", ...url]);
    assert.equal(failed.code, 1);
    assert.equal((JSON.parse(failed.stdout) as TaskRecord).state, "dead_lettered");
    assert.match(failed.stderr, /dead_lettered \(class invalid_input; dead letter 3-0\)/);
    const usage = await cli(["wait", "acme", "c-1", ...url]);
    assert.equal(usage.code, 3);
    assert.match(usage.stderr, /--timeout-ms/);
    const bad = await cli(["enqueue", "bad tenant", "k", ...url]);
    assert.equal(bad.code, 3);
    assert.doesNotMatch(bad.stderr + usage.stderr, new RegExp(String(server.port)), "the URL is never printed");
  });
});

describe("wait across a lost connection", () => {
  it("keeps waiting through a restart on the same port, and wakes on a finish after it", async () => {
    let server = await startRedis();
    const port = server.port;
    const redis = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
    redis.on("error", () => undefined);
    const producer = new Producer(redis);
    try {
      await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "r-1" });
      const t0 = Date.now();
      const waiting = producer.wait("acme", "r-1", { timeoutMs: 25_000 });
      let settled = false;
      waiting.then(
        () => (settled = true),
        () => (settled = true),
      ).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 500));
      await server.stop();
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(settled, false, "the lost connection does not end the wait");
      server = await startRedis(port);
      // The new server lost every key (no persistence): the task is enqueued again, then
      // finishes as the member's ack would write it.
      await within(10_000, "the client to reconnect", (async () => {
        while (redis.status !== "ready") await new Promise((r) => setTimeout(r, 50));
      })());
      await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "r-1" });
      // The wait registers again on the new server (which lost the old registration).
      await registered(redis, "acme", 1);
      assert.equal(settled, false);
      const t1 = Date.now();
      assert.equal(await finish(redis, "acme", "r-1", "done", { output: "true" }), true, "a waiter is registered: the event is published");
      const rec = await within(8_000, "wait to wake after the restart", waiting);
      assert.ok(Date.now() - t1 < 3000, `woke ${Date.now() - t1} ms after the finish`);
      assert.equal(rec.state, "done");
      assert.equal(rec.output, true);
      assert.ok(Date.now() - t0 < 20_000);
      assert.deepEqual(await waiters(redis, "acme"), [], "unregistered once it woke");
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it("a connection gone silent under a blocking read is dropped and the wait goes on", async () => {
    const server = await startRedis();
    const redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    const proxy = await freezingProxy(server.port);
    const viaProxy = new Producer(new Redis(proxy.port, "127.0.0.1", { maxRetriesPerRequest: 1 }));
    try {
      await new Producer(redis).enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "s-1" });
      const waiting = viaProxy.wait("acme", "s-1", { timeoutMs: 20_000 });
      await new Promise((r) => setTimeout(r, 300));
      proxy.freeze();
      const t0 = Date.now();
      await finish(redis, "acme", "s-1", "done", { output: "1" });
      // The event's reply is stuck in the frozen connection: the read is overdue after its
      // 5 s slice plus 3 s, the connection is dropped, a new one reads the record.
      const rec = await within(15_000, "wait to recover from a silent connection", waiting);
      const took = Date.now() - t0;
      assert.equal(rec.state, "done");
      assert.ok(took > 4000 && took < 11_000, `recovered after ${took} ms`);
    } finally {
      viaProxy.redis.disconnect();
      redis.disconnect();
      await proxy.close();
      await server.stop();
    }
  });

  it("a wait whose server stays down times out at its deadline", async () => {
    const server = await startRedis();
    const redis = new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1 });
    redis.on("error", () => undefined);
    const producer = new Producer(redis);
    try {
      await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "d-1" });
      const t0 = Date.now();
      const waiting = producer.wait("acme", "d-1", { timeoutMs: 2500 });
      await new Promise((r) => setTimeout(r, 400));
      await server.stop();
      await assert.rejects(
        within(10_000, "wait to time out", waiting),
        (e: unknown) => e instanceof WaitTimeoutError && e.state === "queued",
      );
      const took = Date.now() - t0;
      assert.ok(took >= 2400 && took < 5500, `timed out after ${took} ms`);
    } finally {
      redis.disconnect();
    }
  });
});
