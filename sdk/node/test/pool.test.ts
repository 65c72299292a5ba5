/** servePool in a real child process, and its framing in-process. */

import { strict as assert } from "node:assert";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { dirname, join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { Agent, FailError, servePool } from "../src/index.js";
import { requestBody, within } from "./helpers.js";

type Line = Record<string, unknown>;

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "pool-agent.js");

/** A running pool agent: its stdout lines as they come, its stderr, its exit. */
class PoolProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: Line[] = [];
  readonly raw: string[] = [];
  stderr = "";
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(concurrency: number) {
    this.child = spawn(process.execPath, [FIXTURE, String(concurrency)], { stdio: ["pipe", "pipe", "pipe"] });
    let pending = "";
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const text = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.raw.push(text);
        this.lines.push(JSON.parse(text) as Line);
        for (const w of this.waiters) w();
      }
    });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => { resolve(code); }));
  }

  send(id: string, task: Record<string, unknown>): void {
    this.child.stdin.write(`${JSON.stringify({ id, task })}\n`);
  }

  /** Waits (bounded) until `n` final replies have arrived. */
  async replies(n: number, ms = 10_000): Promise<Line[]> {
    const finals = (): Line[] => this.lines.filter((l) => "status" in l);
    await within(ms, `${n} replies (stderr: ${this.stderr.slice(-300)})`, new Promise<void>((resolve) => {
      const check = (): void => {
        if (finals().length >= n) resolve();
      };
      this.waiters.push(check);
      check();
    }));
    return finals();
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

describe("servePool in a child process", () => {
  it("runs 3 requests at once, answers out of order, keeps stdout to the protocol", async () => {
    const pool = new PoolProcess(3);
    try {
      // r1 waits for r2, r2 for r3: the replies come back r3, r2, r1 — possible only if all
      // three run at once (each also waits until three are in flight).
      pool.send("r1", requestBody("coordinated", { payload: { tag: "r1", barrier: 3, after: ["r2"] } }));
      pool.send("r2", requestBody("coordinated", { payload: { tag: "r2", barrier: 3, after: ["r3"] } }));
      pool.send("r3", requestBody("coordinated", { payload: { tag: "r3", barrier: 3 } }));
      pool.send("r4", requestBody("coordinated", { payload: { tag: "r4" } }));
      const replies = await pool.replies(4);
      const order = replies.map((r) => r.id).filter((id) => id !== "r4");
      assert.deepEqual(order, ["r3", "r2", "r1"]);
      for (const r of replies) {
        assert.equal(r.status, "ok", JSON.stringify(r));
        assert.equal((r.output as { tag: string }).tag, r.id);
        assert.ok((r.output as { maxActive: number }).maxActive <= 3, "never more than 3 at once");
      }
      // Every stdout line is a protocol line with its request's id; events come before replies.
      assert.ok(pool.raw.every((l) => l.startsWith('{"id":"r')), pool.raw.join("\n"));
      for (const id of ["r1", "r2", "r3", "r4"]) {
        const own = pool.lines.filter((l) => l.id === id).map((l) => l.event ?? l.status);
        assert.deepEqual(own, ["step_started", "step_done", "ok"], id);
      }
      assert.deepEqual(pool.lines.find((l) => l.id === "r1" && l.event === "step_done")?.output, ["r2"]);
      // Stray writes went to stderr.
      for (const what of ["console.log", "console.info", "process.stdout.write"]) {
        assert.ok(pool.stderr.includes(`${what} noise from r1`), `${what} on stderr`);
      }
      assert.doesNotMatch(pool.raw.join("\n"), /noise/);
      // stdin end: the process exits cleanly.
      pool.child.stdin.end();
      assert.equal(await within(10_000, "the pool process to exit", pool.exited), 0);
    } finally {
      pool.kill();
    }
  });

  it("answers what is in flight when stdin ends, then exits 0 (exec-style)", async () => {
    const pool = new PoolProcess(1);
    try {
      pool.send("e1", requestBody("sleep", { payload: 200 }));
      pool.send("e2", requestBody("retry"));
      pool.child.stdin.end();
      assert.equal(await within(10_000, "the process to exit", pool.exited), 0);
      assert.deepEqual(pool.lines, [
        { id: "e1", status: "ok", output: "slept" },
        { id: "e2", status: "fail", class: "rate_limited", error: "slow down", retry_after_ms: 100 },
      ]);
    } finally {
      pool.kill();
    }
  });

  it("answers a malformed task with invalid_input and ignores lines it cannot answer", async () => {
    const pool = new PoolProcess(2);
    try {
      pool.child.stdin.write("not json\n\n");
      pool.child.stdin.write(`${JSON.stringify({ task: requestBody("sleep") })}\n`);
      pool.send("bad", { kind: "sleep" });
      pool.send("unknown", requestBody("nobody_handles_this"));
      const replies = await pool.replies(2);
      const byId = new Map(replies.map((r) => [r.id, r]));
      assert.equal(byId.get("bad")?.class, "invalid_input");
      assert.equal(byId.get("unknown")?.class, "no_handler");
      assert.match(pool.stderr, /not JSON/);
      assert.match(pool.stderr, /without a request id/);
      pool.child.stdin.end();
      assert.equal(await within(10_000, "exit", pool.exited), 0);
    } finally {
      pool.kill();
    }
  });
});

/** Polls `ok` every 5 ms until it holds, for at most `ms`. */
async function waitFor(ms: number, what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("servePool on given streams", () => {
  it("frames events and replies with the request id, one write per line", async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const writes: string[] = [];
    output.on("data", (c: Buffer) => writes.push(c.toString()));
    const agent = new Agent().handle("k", async (_t, ctx) => ctx.step("s", () => 7));
    const served = servePool(agent, { input, output, concurrency: 2 });
    input.write(`${JSON.stringify({ id: 42, task: requestBody("k") })}\n`);
    input.end();
    await within(5000, "servePool to finish", served);
    assert.deepEqual(writes, [
      '{"id":42,"event":"step_started","name":"s","side_effect":false}\n',
      '{"id":42,"event":"step_done","name":"s","output":7}\n',
      '{"id":42,"status":"ok","output":7}\n',
    ]);
  });

  it("writes nothing for a request after its reply (a late step's event would break the protocol)", async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const writes: string[] = [];
    output.on("data", (c: Buffer) => writes.push(c.toString()));
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let late: unknown = "not settled";
    const agent = new Agent().handle("k", async (_t, ctx) => {
      // "slow" finishes after "fails" has failed the attempt and its reply went out.
      const slow = ctx.step("slow", async () => {
        await held;
        return 1;
      });
      slow.then(
        () => (late = "ran"),
        (e: unknown) => (late = e instanceof Error ? e.name : e),
      );
      await ctx.step("fails", () => {
        throw new FailError("invalid_input", "no");
      });
      return await slow;
    });
    const served = servePool(agent, { input, output, concurrency: 2 });
    input.write(`${JSON.stringify({ id: "r1", task: requestBody("k") })}\n`);
    await waitFor(5000, "the reply", () => writes.some((w) => w.includes('"status"')));
    release();
    input.end();
    await within(5000, "servePool to finish", served);
    await waitFor(5000, "the late step to settle", () => late !== "not settled");
    const afterReply = writes.slice(writes.findIndex((w) => w.includes('"status"')) + 1);
    assert.deepEqual(afterReply, [], "no line after the reply");
    assert.equal(late, "AttemptClosedError");
  });

  it("refuses a bad concurrency", async () => {
    await assert.rejects(servePool(new Agent(), { concurrency: 0, input: new PassThrough(), output: new PassThrough() }), RangeError);
  });
});
