/**
 * Issue 14 on the Node side, against a real redis-server: idempotent enqueue through the
 * fleet's own enqueue.lua (byte for byte), getTask, and wait on the events stream.
 *
 * No fleet member runs here: test/member.ts does what a member does — a start is `XREADGROUP` +
 * `XCLAIM` without any record write (getTask shows the task running from the PEL), a finish
 * runs the fleet's record writer (lib/record.lua) as fast_ack.lua, retry.lua, dead_letter.lua
 * and begin.lua call it, the events entry (`task, state, entry`) written only while a waiter is
 * registered. The Rust end-to-end test (tests/e2e_wait.rs) covers the real member with this
 * SDK's `redrive-sdk wait`.
 */

import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
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
  MAX_RETENTION_MS,
  enqueueScript,
  recordToJson,
  taskReadScript,
  type TaskRecord,
} from "../src/index.js";
import { repoRoot, startRedis, within, type RedisServer } from "./helpers.js";
import * as member from "./member.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const RACER = join(HERE, "fixtures", "enqueue-race.js");
const CLI = join(HERE, "..", "src", "cli.js");

/** The script's source in the SDK's directory (what `npm pack` ships). */
const SHIPPED = join(repoRoot(), "sdk", "node", "lua", "enqueue.lua");

/** The record reader in the SDK's directory (what `npm pack` ships). */
const SHIPPED_READER = join(repoRoot(), "sdk", "node", "lua", "task_read.lua");

/**
 * Asserts that the record of `taskId` expires `retention` plus an eighth after its enqueue and
 * that its lane entry's `recorded` field says exactly when (enqueue.lua, ARGV[6]).
 */
async function expiryMarked(redis: Redis, tenant: string, taskId: string, retention: number): Promise<void> {
  const key = `redrive:{${tenant}}:task:${taskId}`;
  const rec = await redis.hgetall(key);
  if (retention < 3_600_000) {
    // Under an hour: no expiry at enqueue, and `recorded` only says the record was written.
    const [[, flat] = ["", []]] = await redis.xrange(`redrive:{${tenant}}:lane`, rec.entry ?? "", rec.entry ?? "");
    assert.equal(flat[flat.indexOf("recorded") + 1], "1", `${taskId}: the entry's recorded field`);
    assert.equal(await redis.pttl(key), -1, `${taskId}: no expiry`);
    return;
  }
  const till = Number(rec.enq) + retention + Math.floor(retention / 8);
  const [[, flat] = ["", []]] = await redis.xrange(`redrive:{${tenant}}:lane`, rec.entry ?? "", rec.entry ?? "");
  const recorded = flat[flat.indexOf("recorded") + 1];
  assert.equal(recorded, String(till), `${taskId}: the entry's recorded field`);
  assert.equal(await redis.call("PEXPIRETIME", key), till, `${taskId}: the record's expiry`);
  const pttl = await redis.pttl(key);
  assert.ok(pttl > till - Number(rec.enq) - 10_000 && pttl <= till - Number(rec.enq), `${taskId}: PTTL ${pttl}`);
}

/**
 * A task finishes as the member's scripts write it (test/member.ts): `done` as fast_ack.lua
 * (`fields.output` the output; started first when its entry is not pending), the others as
 * dead_letter.lua or an operator's decision. Resolves with whether it published the event.
 */
async function finish(
  redis: Redis,
  tenant: string,
  taskId: string,
  state: "done" | "dead_lettered" | "expired" | "resolved" | "discarded",
  fields: Record<string, string> = {},
): Promise<boolean> {
  if (state === "done") return member.done(redis, tenant, taskId, fields.output);
  return member.end(redis, tenant, taskId, state, fields);
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

/** Runs the compiled `redrive-sdk` with `args` (bounded), in `env` (default: this process's). */
function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Exit> {
  return within(
    30_000,
    `redrive-sdk ${args.join(" ")}`,
    new Promise<Exit>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
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

describe("task_read.lua shipped with the SDK", () => {
  it("is byte for byte task_read.lua of the repository", () => {
    const expected = readFileSync(join(repoRoot(), "src", "broker", "scripts", "task_read.lua"));
    assert.ok(expected.length > 1000);
    assert.ok(readFileSync(SHIPPED_READER).equals(expected), `${SHIPPED_READER} has drifted from src/broker/scripts; copy it again`);
    assert.ok(Buffer.from(taskReadScript().text, "utf8").equals(expected), "the script the readers run is that text");
    assert.equal(taskReadScript().sha, createHash("sha1").update(expected).digest("hex"));
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
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 1, "t-2 only: the done t-1 was acked and deleted");
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

  it("dedup false refuses an id still in flight (also while it runs) and replaces a done one", async () => {
    const reuse = new Producer(redis, { dedup: false });
    const a = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "same" });
    assert.equal(a.duplicate, undefined);
    const b = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 2, task_id: "same" });
    assert.deepEqual(b, { taskId: "same", entryId: a.entryId, duplicate: { state: "queued", entry: a.entryId } });
    await member.start(redis, "acme", a.entryId, { member: "m-1" });
    assert.equal((await producer.getTask("acme", "same"))?.state, "running");
    const c = await producer.enqueue({ tenant: "acme", kind: "k", payload: 3, task_id: "same" }, { dedup: false });
    assert.deepEqual(c.duplicate, { state: "queued", entry: a.entryId }, "running: refused with the record's state");
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 1);
    assert.equal(await statsSum(redis, "acme", "duplicates"), 2);

    await member.done(redis, "acme", "same", '"first"', { member: "m-1" });
    assert.equal(await redis.hget("redrive:{acme}:task:same", "state"), "queued", "done through the done log");
    assert.equal((await producer.getTask("acme", "same"))?.state, "done");
    const d = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 4, task_id: "same" });
    assert.equal(d.duplicate, undefined, "done: the id is enqueued again");
    assert.notEqual(d.entryId, a.entryId);
    assert.deepEqual((await redis.xrange("redrive:{acme}:lane", "-", "+")).map(([id]) => id), [d.entryId]);
    const rec = await redis.hgetall("redrive:{acme}:task:same");
    assert.equal(rec.state, "queued");
    assert.equal(rec.entry, d.entryId, "the record follows the newest task");
    assert.equal(rec.runs, "0");
    for (const gone of ["member", "started", "ended", "output"]) assert.equal(rec[gone], undefined, `a fresh record: no ${gone}`);
    const pttl = await redis.pttl("redrive:{acme}:task:same");
    assert.ok(pttl > 97_200_000 - 10_000 && pttl <= 97_200_000, `the new record's own expiry (24 h * 9/8), not ${pttl}`);
    assert.equal(await statsSum(redis, "acme", "duplicates"), 2);
    const e = await producer.enqueue({ tenant: "acme", kind: "k", payload: 5, task_id: "same" });
    assert.deepEqual(e.duplicate, { state: "queued", entry: d.entryId }, "dedup stays on for the default producer");
  });

  it("dedup false decides by the record's state: in flight refused, finished replaced", async () => {
    const reuse = new Producer(redis, { dedup: false });
    const inFlight = ["queued", "running", "retry_scheduled", "deferred", "replayed"];
    const finishedStates = ["done", "dead_lettered", "expired", "resolved", "discarded"];
    for (const state of [...inFlight, ...finishedStates]) {
      const id = `t-${state}`;
      const { entryId } = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 0, task_id: id });
      await redis.hset(`redrive:{acme}:task:${id}`, "state", state);
      const got = await reuse.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: id });
      if (inFlight.includes(state)) {
        assert.deepEqual(got.duplicate, { state, entry: entryId }, state);
      } else {
        assert.equal(got.duplicate, undefined, state);
        assert.equal(await redis.hget(`redrive:{acme}:task:${id}`, "entry"), got.entryId, state);
        assert.equal(await redis.hget(`redrive:{acme}:task:${id}`, "state"), "queued", state);
      }
    }
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

  it("getTask reads runs (the history, then a done task's last run), output (JSON, or raw when truncated), failure and replay fields", async () => {
    await redis.hset("redrive:{acme}:task:t-1", {
      state: "done", kind: "k", attempt: "2", entry: "1-0", enq: "100", first: "50", member: "m-2",
      started: "200", ended: "300", updated: "300", runs: "1", class: "timeout", error: "slow",
      "r1:start": "110", "r1:member": "m-1", "r1:end": "150", "r1:outcome": "timeout",
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
    assert.equal(dead.starts, 0);
    assert.deepEqual(dead.runs, []);
    // A history run exists when its r<N>:member field does ('' is unknown); the last 16 kept.
    const many: Record<string, string> = { state: "dead_lettered", runs: "20", "r3:start": "5", "r3:member": "m", "r3:outcome": "c" };
    for (let n = 5; n <= 20; n++) Object.assign(many, { [`r${String(n)}:start`]: "", [`r${String(n)}:member`]: "", [`r${String(n)}:outcome`]: "" });
    await redis.hset("redrive:{acme}:task:t-3", many);
    const kept = await producer.getTask("acme", "t-3");
    assert.equal(kept?.starts, 20);
    assert.deepEqual(kept.runs, Array.from({ length: 16 }, (_, i) => ({ run: i + 5 })));
  });

  it("an enqueued task read by XREADGROUP and XCLAIM-started on m-1 reads running on m-1 while its record says queued", async () => {
    const { entryId } = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    const other = await producer.enqueue({ tenant: "acme", kind: "k", payload: 2, task_id: "t-2" });
    assert.equal((await producer.getTask("acme", "t-1"))?.state, "queued", "no group yet (NOGROUP): nothing is pending");

    await member.start(redis, "acme", entryId, { member: "m-1" });
    assert.equal(await redis.hget("redrive:{acme}:task:t-1", "state"), "queued", "the start wrote nothing to the record");
    const pending = (await redis.xpending("redrive:{acme}:lane", "redrive", entryId, entryId, 1)) as [string, string, number, number][];
    assert.deepEqual([pending[0]?.[1], pending[0]?.[3]], ["m-1", 2], "pending on m-1, delivered once and started once");
    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.equal(rec.state, "running");
    assert.equal(rec.finished, false);
    assert.equal(rec.member, "m-1");
    assert.equal(rec.entry, entryId);
    assert.equal(rec.startedAt, undefined, "the start is the PEL's: unknown");
    assert.equal(rec.endedAt, undefined);
    assert.equal(rec.starts, 1);
    assert.deepEqual(rec.runs, [{ run: 1, member: "m-1" }]);
    assert.equal(rec.fields.state, "running");
    const json = recordToJson(rec);
    assert.equal(json.state, "running");
    assert.equal(json.member, "m-1");
    assert.equal(json.started_at, null);
    assert.equal(json.run_count, 1);
    assert.deepEqual(json.runs, [{ run: 1, start: null, member: "m-1", end: null, outcome: null }]);
    const untouched = await producer.getTask("acme", "t-2");
    assert.equal(untouched?.state, "queued", "an entry nobody read is not pending");
    assert.equal(untouched.entry, other.entryId);

    // The group asked about: another one has nothing pending (NOGROUP), per call or producer.
    assert.equal((await producer.getTask("acme", "t-1", { group: "other" }))?.state, "queued");
    const elsewhere = new Producer(redis, { group: "other" });
    assert.equal(elsewhere.group, "other");
    assert.equal((await elsewhere.getTask("acme", "t-1"))?.state, "queued");
    assert.equal((await elsewhere.getTask("acme", "t-1", { group: "redrive" }))?.state, "running");
    assert.throws(() => new Producer(redis, { group: "no spaces" }), /group/);
    await assert.rejects(producer.getTask("acme", "t-1", { group: "" }), TypeError);

    // A replayed record on a pending entry runs too; an earlier run's times are not shown.
    await redis.hset("redrive:{acme}:task:t-1", { state: "replayed", started: "100", ended: "200" });
    const replayed = await producer.getTask("acme", "t-1");
    assert.deepEqual([replayed?.state, replayed?.member, replayed?.startedAt, replayed?.endedAt], ["running", "m-1", undefined, undefined]);
    await redis.hset("redrive:{acme}:task:t-1", "state", "queued");
    await redis.hdel("redrive:{acme}:task:t-1", "started", "ended");

    // A wait that times out reports it running too.
    await assert.rejects(
      within(5_000, "wait to time out", producer.wait("acme", "t-1", { timeoutMs: 200 })),
      (e: unknown) => e instanceof WaitTimeoutError && e.state === "running" && e.record?.member === "m-1",
    );

    const url = ["--redis-url", server.url];
    const shown = await cli(["task", "acme", "t-1", ...url]);
    assert.equal(shown.code, 0, shown.stderr);
    const printed = JSON.parse(shown.stdout) as Record<string, unknown>;
    assert.deepEqual([printed.state, printed.member, printed.started_at, printed.run_count], ["running", "m-1", null, 1]);
    assert.deepEqual(printed.runs, json.runs);
    const inOther = await cli(["get", "acme", "t-1", "--group", "other", ...url]);
    assert.equal((JSON.parse(inOther.stdout) as { state: string }).state, "queued");
    const waited = await cli(["wait", "acme", "t-1", "--timeout-ms", "200", ...url]);
    assert.equal(waited.code, 2, waited.stderr);
    assert.equal((JSON.parse(waited.stdout) as { state: string }).state, "running");
    const bad = await cli(["get", "acme", "t-1", "--group", "a b", ...url]);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /group 'a b' is invalid/);

    // Done: as stored again, one ok run.
    await member.done(redis, "acme", "t-1", "1", { member: "m-1" });
    const done = await producer.getTask("acme", "t-1");
    assert.deepEqual([done?.state, done?.starts, done?.runs.map((r) => r.outcome)], ["done", 1, ["ok"]]);
  });

  it("a task done through the done log (its record untouched) reads done from the log: member, times, output, one ok run", async () => {
    const { entryId } = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    const key = "redrive:{acme}:task:t-1";
    const expiry = await redis.call("PEXPIRETIME", key);
    await member.start(redis, "acme", entryId, { member: "m-1" });
    await member.done(redis, "acme", "t-1", '{"v":1}', { member: "m-1", agoMs: 250 });
    // fast_ack.lua's done log: the record still says queued on the entry, with its expiry.
    const stored = await redis.hgetall(key);
    assert.deepEqual([stored.state, stored.entry, stored.runs], ["queued", entryId, "0"]);
    for (const none of ["member", "started", "ended", "output"]) assert.equal(stored[none], undefined, `no record write: ${none}`);
    assert.equal(await redis.call("PEXPIRETIME", key), expiry);
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 0, "acked and deleted");
    const log = member.doneLog("acme", entryId);
    const [[, flat] = ["", []]] = await redis.xrange(log, "-", "+");
    const facts: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) facts[flat[i] ?? ""] = flat[i + 1] ?? "";
    assert.equal(facts._m, "m-1");
    assert.equal(Number(facts[entryId]), Number(facts._e) - 250);
    assert.equal(facts[`${entryId}o`], '{"v":1}');
    assert.equal(await redis.call("PEXPIRETIME", log), expiry, "the log lives as long as the record pointing into it");

    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.equal(rec.state, "done");
    assert.equal(rec.finished, true);
    assert.deepEqual(rec.output, { v: 1 });
    assert.equal(rec.outputTruncated, false);
    assert.deepEqual([rec.member, rec.entry, rec.endedAt, rec.updatedAt], ["m-1", entryId, Number(facts._e), Number(facts._e)]);
    assert.equal(rec.starts, 1);
    assert.ok(rec.startedAt !== undefined && rec.endedAt !== undefined);
    assert.equal(rec.endedAt - rec.startedAt, 250, "started `ago` ms before the ack");
    assert.deepEqual(rec.runs, [{ run: 1, start: rec.startedAt, member: "m-1", end: rec.endedAt, outcome: "ok" }]);
    const json = recordToJson(rec);
    assert.equal(json.run_count, 1);
    assert.deepEqual(json.runs, [{ run: 1, start: rec.startedAt, member: "m-1", end: rec.endedAt, outcome: "ok" }]);
    assert.deepEqual(await producer.wait("acme", "t-1", { timeoutMs: 5000 }), rec);
    const printed = await cli(["get", "acme", "t-1", "--redis-url", server.url]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.deepEqual(JSON.parse(printed.stdout), JSON.parse(JSON.stringify(json)));

    // The task_id is a duplicate of the done task (enqueue.lua: its entry left the lane).
    const again = await producer.enqueue({ tenant: "acme", kind: "k", payload: 2, task_id: "t-1" });
    assert.deepEqual(again.duplicate, { state: "done", entry: entryId });
    assert.equal(await redis.xlen("redrive:{acme}:lane"), 0, "nothing appended");

    // A cut output, and none kept.
    const cut = await producer.enqueue({ tenant: "acme", kind: "k", payload: 3, task_id: "t-cut" });
    const bare = await producer.enqueue({ tenant: "acme", kind: "k", payload: 4, task_id: "t-bare" });
    await member.done(redis, "acme", "t-cut", "ab", { member: "m-2", truncated: true });
    await member.done(redis, "acme", "t-bare", undefined, { member: "m-2" });
    const gotCut = await producer.getTask("acme", "t-cut");
    assert.deepEqual([gotCut?.state, gotCut?.member, gotCut?.entry], ["done", "m-2", cut.entryId]);
    assert.deepEqual([gotCut?.output, gotCut?.outputTruncated], ["ab", true]);
    const gotBare = await producer.getTask("acme", "t-bare");
    assert.deepEqual([gotBare?.state, gotBare?.member, gotBare?.entry], ["done", "m-2", bare.entryId]);
    assert.equal(gotBare?.output, undefined);
  });

  it("a producer retention shorter than the fleet's: the member writes the done record itself, nothing expires early", async () => {
    const short = new Producer(redis, { retentionMs: 7_200_000 });
    const { entryId } = await short.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await expiryMarked(redis, "acme", "t-1", 7_200_000);
    await member.done(redis, "acme", "t-1", '"kept"', { member: "m-1", retentionMs: 86_400_000 });
    const stored = await redis.hgetall("redrive:{acme}:task:t-1");
    assert.deepEqual([stored.state, stored.member, stored.output], ["done", "m-1", '"kept"']);
    const pttl = await redis.pttl("redrive:{acme}:task:t-1");
    assert.ok(pttl > 86_400_000 - 10_000 && pttl <= 86_400_000, `the fleet's retention: ${pttl}`);
    assert.equal(await redis.exists(member.doneLog("acme", entryId)), 0, "nothing in the done log");
    const rec = await short.getTask("acme", "t-1");
    assert.deepEqual([rec?.state, rec?.output, rec?.member], ["done", "kept", "m-1"]);
  });

  it("every enqueue path passes the retention: enqueue, enqueueMany, per call, redrive-sdk enqueue", async () => {
    const hour = new Producer(redis, { retentionMs: 3_600_000 });
    assert.equal(hour.retentionMs, 3_600_000);
    assert.equal(producer.retentionMs, 86_400_000, "the default: the fleet's default tasks.retention_ms");
    await hour.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await hour.enqueueMany([
      { tenant: "acme", kind: "k", payload: 2, task_id: "t-2" },
      { tenant: "globex", kind: "k", payload: 3, task_id: "t-3" },
    ]);
    await hour.enqueue({ tenant: "acme", kind: "k", payload: 4, task_id: "t-4" }, { retentionMs: 1_000 });
    await hour.enqueueMany([{ tenant: "acme", kind: "k", payload: 5, task_id: "t-5" }], { retentionMs: 7_200_000 });
    await expiryMarked(redis, "acme", "t-1", 3_600_000);
    await expiryMarked(redis, "acme", "t-2", 3_600_000);
    await expiryMarked(redis, "globex", "t-3", 3_600_000);
    await expiryMarked(redis, "acme", "t-4", 1_000);
    await expiryMarked(redis, "acme", "t-5", 7_200_000);
    const env = { ...process.env };
    delete env.REDRIVE_TASKS__RETENTION_MS;
    const runs: [string, string[], string | undefined, number][] = [
      ["t-6", ["--retention-ms", "7200000"], undefined, 7_200_000],
      ["t-7", [], "5000", 5_000],
      ["t-8", [], undefined, 86_400_000],
    ];
    for (const [taskId, extra, variable, retention] of runs) {
      const runEnv = variable === undefined ? env : { ...env, REDRIVE_TASKS__RETENTION_MS: variable };
      const out = await cli(["enqueue", "acme", "k", "--task-id", taskId, ...extra, "--redis-url", server.url], runEnv);
      assert.equal(out.code, 0, out.stderr);
      await expiryMarked(redis, "acme", taskId, retention);
    }
    // The other commands ignore the variable.
    const read = await cli(["get", "acme", "t-8", "--redis-url", server.url], { ...env, REDRIVE_TASKS__RETENTION_MS: "oops" });
    assert.equal(read.code, 0, read.stderr);
  });

  it("a retention outside 1000 ms … 365 days, or not a whole number, is refused: nothing written", async () => {
    for (const bad of [999, 0, -1, MAX_RETENTION_MS + 1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "1000", null, true]) {
      assert.throws(() => new Producer(redis, { retentionMs: bad as number }), RangeError, String(bad));
      assert.throws(() => new Producer(redis, { retentionMs: bad as number }), /retentionMs .*(out of range|whole number)/);
      await assert.rejects(
        producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" }, { retentionMs: bad as number }),
        RangeError,
      );
    }
    assert.equal(new Producer(redis, { retentionMs: 1_000 }).retentionMs, 1_000);
    assert.equal(new Producer(redis, { retentionMs: MAX_RETENTION_MS }).retentionMs, MAX_RETENTION_MS);
    for (const [value, says] of [["10", "out of range"], ["1h", "whole number"]] as const) {
      const out = await cli(["enqueue", "acme", "k", "--retention-ms", value, "--redis-url", server.url]);
      assert.equal(out.code, 3, out.stderr);
      assert.match(out.stderr, /retention/);
      assert.ok(out.stderr.includes(says), out.stderr);
    }
    assert.deepEqual(await redis.keys("*"), []);
  });

  it("getTask and wait read through task_read.lua again after SCRIPT FLUSH (EVAL on NOSCRIPT)", async () => {
    await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await member.done(redis, "acme", "t-1", "7");
    const reads: (() => Promise<TaskRecord | null>)[] = [
      () => producer.getTask("acme", "t-1"),
      () => producer.wait("acme", "t-1", { timeoutMs: 5000 }),
    ];
    for (const read of reads) {
      await redis.script("FLUSH");
      const got = await read();
      assert.deepEqual([got?.state, got?.output], ["done", 7]);
      assert.deepEqual(await redis.script("EXISTS", taskReadScript().sha), [1]);
    }
  });

  it("a failed run in the history, then done: two runs, run_count 2 (and running again in between)", async () => {
    const first = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await member.start(redis, "acme", first.entryId, { member: "m-a" });
    const again = await member.retry(redis, "acme", "t-1", first.entryId, "timeout", { member: "m-a", error: "slow" });
    const stored = await redis.hgetall("redrive:{acme}:task:t-1");
    assert.deepEqual([stored.state, stored.entry, stored.runs, stored.member], ["queued", again, "1", "m-a"]);
    assert.ok(stored.started !== undefined && stored.ended !== undefined, "the failed run's times stay in the record");
    const waiting = await producer.getTask("acme", "t-1");
    assert.equal(waiting?.state, "queued");
    assert.equal(waiting.starts, 1);
    const failed = waiting.runs[0];
    assert.deepEqual([failed?.run, failed?.member, failed?.outcome], [1, "m-a", "timeout"]);
    assert.ok(failed?.start !== undefined && failed.end !== undefined && failed.start <= failed.end);

    await member.start(redis, "acme", again, { member: "m-b" });
    const running = await producer.getTask("acme", "t-1");
    assert.ok(running !== null);
    assert.deepEqual([running.state, running.member, running.attempt], ["running", "m-b", 2]);
    assert.equal(running.startedAt, undefined, "the failed run's start is not the current run's");
    assert.equal(running.endedAt, undefined);
    assert.equal(running.starts, 2);
    assert.deepEqual(running.runs, [failed, { run: 2, member: "m-b" }]);

    await member.done(redis, "acme", "t-1", '"fine"', { member: "m-b" });
    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.equal(rec.state, "done");
    assert.equal(rec.starts, 2);
    assert.deepEqual(rec.runs, [failed, { run: 2, start: rec.startedAt, member: "m-b", end: rec.endedAt, outcome: "ok" }]);
    assert.deepEqual([rec.class, rec.error, rec.output], ["timeout", "slow", "fine"]);
    assert.equal(await redis.hget("redrive:{acme}:task:t-1", "runs"), "1", "the history holds the failed run only");
    const json = recordToJson(rec);
    assert.equal(json.run_count, 2);
    assert.deepEqual((json.runs as { member: string; outcome: string }[]).map((r) => [r.member, r.outcome]), [["m-a", "timeout"], ["m-b", "ok"]]);
  });

  it("a dead run (r1:member '', r1:outcome '') reads with member and outcome null", async () => {
    const { entryId } = await producer.enqueue({ tenant: "acme", kind: "k", payload: 1, task_id: "t-1" });
    await member.start(redis, "acme", entryId, { member: "m-1" });
    // m-1 died; m-2 takes the entry over (begin.lua): the record gets the unseen run as dead.
    assert.equal(await member.takeOver(redis, "acme", "t-1", entryId, { member: "m-2" }), "queued");
    const stored = await redis.hgetall("redrive:{acme}:task:t-1");
    assert.deepEqual(
      Object.fromEntries(Object.entries(stored).filter(([k]) => k.startsWith("r1:"))),
      { "r1:start": "", "r1:member": "", "r1:outcome": "" },
    );
    assert.deepEqual([stored.runs, stored.state, stored.member], ["1", "running", "m-2"]);
    const running = await producer.getTask("acme", "t-1");
    assert.ok(running !== null);
    assert.equal(running.starts, 2);
    assert.ok(running.startedAt !== undefined, "a start written by the takeover is known");
    assert.deepEqual(running.runs, [{ run: 1 }, { run: 2, start: running.startedAt, member: "m-2" }]);
    assert.deepEqual(recordToJson(running).runs, [
      { run: 1, start: null, member: null, end: null, outcome: null },
      { run: 2, start: running.startedAt, member: "m-2", end: null, outcome: null },
    ]);

    await member.done(redis, "acme", "t-1", '"late"', { member: "m-2" });
    const rec = await producer.getTask("acme", "t-1");
    assert.ok(rec !== null);
    assert.deepEqual([rec.state, rec.starts, rec.output], ["done", 2, "late"]);
    assert.deepEqual(rec.runs, [{ run: 1 }, { run: 2, start: rec.startedAt, member: "m-2", end: rec.endedAt, outcome: "ok" }]);
    const printed = await cli(["get", "acme", "t-1", "--redis-url", server.url]);
    const runs = (JSON.parse(printed.stdout) as { runs: { member: string | null; outcome: string | null }[] }).runs;
    assert.deepEqual(runs.map((r) => [r.member, r.outcome]), [[null, null], ["m-2", "ok"]]);
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
    for (const state of ["expired", "resolved", "discarded"] as const) {
      await finish(redis, "acme", "bad", state);
      await assert.rejects(producer.wait("acme", "bad", { timeoutMs: 30_000 }), (e: unknown) => e instanceof TaskFailedError && e.state === state);
    }
  });

  it("wait wakes on the task's finish event (not on others'), blocking on a connection of its own", async () => {
    const [mine] = await producer.enqueueMany([
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
    await member.start(redis, "acme", mine?.entryId ?? "", { member: "m-1" });
    assert.equal((await producer.getTask("acme", "mine"))?.state, "running");
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
    const tasks = ["n-1", "n-2", "n-3"].map((id) => ({ tenant: "acme", kind: "k", payload: 1, task_id: id }));
    const [, , third] = await producer.enqueueMany(tasks);
    assert.equal(await finish(redis, "acme", "n-1", "done"), false, "nobody waits: no event");
    assert.equal(await redis.exists("redrive:{acme}:events"), 0);
    await redis.zadd("redrive:{acme}:waiters", (await serverNow(redis)) - 1, "lapsed");
    assert.equal(await finish(redis, "acme", "n-2", "done"), false, "a lapsed registration: no event");
    assert.equal(await redis.exists("redrive:{acme}:events"), 0);
    assert.equal((await producer.getTask("acme", "n-1"))?.state, "done", "the record says it all the same");
    await redis.zadd("redrive:{acme}:waiters", (await serverNow(redis)) + 15_000, "live");
    assert.equal(await finish(redis, "acme", "n-3", "done"), true);
    const entries = await redis.xrange("redrive:{acme}:events", "-", "+");
    assert.equal(entries.length, 1);
    assert.deepEqual(entries[0]?.[1], ["task", "n-3", "state", "done", "entry", third?.entryId]);
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
    assert.equal((await cli(["enqueue", "acme", "k", "--task-id", "c-2", ...url])).code, 0);
    await finish(redis, "acme", "c-2", "dead_lettered", { class: "invalid_input", dlq: "3-0" });
    const failed = await cli(["wait", "acme", "c-2", "--timeout-ms", "1000", ...url]);
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
