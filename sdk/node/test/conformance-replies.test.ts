/**
 * The SDK's streams judged by the fleet's rules: the reading in fleet.ts is checked against
 * every NDJSON case of conformance/replies.json, then applied to what a real serveHttp writes.
 */

import { strict as assert } from "node:assert";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import { Agent, FailError, RetryError, serveHttp } from "../src/index.js";
import { interpret, type Outcome } from "./fleet.js";
import { post, requestBody, vectors, within } from "./helpers.js";

interface ReplyCase {
  name: string;
  content_type: string | null;
  body: string;
  expect: Partial<Outcome> & { error_contains?: string };
}

describe("the fleet's reading of NDJSON replies matches conformance/replies.json", () => {
  const cases = vectors<{ cases: ReplyCase[] }>("replies.json").cases.filter(
    (c) => c.content_type === "application/x-ndjson",
  );
  it("has NDJSON cases", () => {
    assert.ok(cases.length >= 10);
  });
  for (const c of cases) {
    it(c.name, () => {
      const got = interpret(c.body);
      assert.equal(got.outcome, c.expect.outcome);
      for (const key of ["class", "output", "error", "retry_after_ms", "open_step", "steps", "progress"] as const) {
        if (key in c.expect) assert.deepEqual(got[key], c.expect[key], key);
      }
    });
  }
});

describe("what the fleet makes of the SDK's streams", () => {
  const agent = new Agent({ onError: () => undefined })
    .handle("steps_then_ok", async (_t, ctx) => {
      const draft = await ctx.step("draft", () => "Dear u1");
      const sent = await ctx.step("send", () => ({ id: "m-1" }), { sideEffect: true });
      await ctx.progress({ percent: 100 });
      return { draft, sent };
    })
    .handle("fail_after_side_effect", async (_t, ctx) => {
      await ctx.step("send", () => 1, { sideEffect: true });
      throw new RetryError("summary failed", { cls: "llm_error" });
    })
    .handle("retry_inside_side_effect", async (_t, ctx) =>
      ctx.step("send", () => {
        throw new RetryError("429 before sending", { cls: "rate_limited", retryAfterMs: 500 });
      }, { sideEffect: true }),
    )
    .handle("fail_inside_side_effect", async (_t, ctx) =>
      ctx.step("send", () => {
        throw new FailError("invalid_input", "no such address");
      }, { sideEffect: true }),
    )
    .handle("crash_inside_side_effect", async (_t, ctx) =>
      ctx.step("pay", () => {
        throw new Error("socket hang up after the charge");
      }, { sideEffect: true }),
    )
    .handle("crash_outside", () => {
      throw new Error("HTTP 503 from the model");
    })
    .handle("big_side_effect_output", async (_t, ctx) => ctx.step("export", () => "x".repeat(70_000), { sideEffect: true }))
    .handle("big_plain_output", async (_t, ctx) => ctx.step("draft", () => "x".repeat(70_000)))
    .handle("memoised", async (_t, ctx) => {
      const sent = await ctx.step("send", () => "sent again!", { sideEffect: true });
      return { sent };
    });
  let server: Server;
  let url = "";
  before(async () => {
    server = await serveHttp(agent, { port: 0 });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(async () => {
    server.closeAllConnections();
    await within(5000, "close", new Promise<void>((resolve) => server.close(() => { resolve(); })));
  });
  const run = async (kind: string, over: Record<string, unknown> = {}): Promise<Outcome> => {
    const r = await post(url, JSON.stringify(requestBody(kind, over)));
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "application/x-ndjson");
    return interpret(r.body);
  };

  it("steps then ok: done, both steps recorded, progress kept", async () => {
    const o = await run("steps_then_ok");
    assert.equal(o.outcome, "ok");
    assert.deepEqual(o.steps, [
      { name: "draft", output: "Dear u1", side_effect: false },
      { name: "send", output: { id: "m-1" }, side_effect: true },
    ]);
    assert.deepEqual(o.progress, { percent: 100 });
  });

  it("a failure after the side effect completed is retried normally", async () => {
    const o = await run("fail_after_side_effect");
    assert.equal(o.class, "llm_error");
    assert.deepEqual(o.steps, [{ name: "send", output: 1, side_effect: true }]);
  });

  it("a typed error inside a side-effecting step closes it: retried, not partial", async () => {
    const r = await run("retry_inside_side_effect");
    assert.equal(r.class, "rate_limited");
    assert.equal(r.retry_after_ms, 500);
    assert.equal((await run("fail_inside_side_effect")).class, "invalid_input");
  });

  it("an untyped error inside a side-effecting step is partial_execution", async () => {
    const o = await run("crash_inside_side_effect");
    assert.equal(o.class, "partial_execution");
    assert.equal(o.open_step, "pay");
  });

  it("an untyped error elsewhere is classified by its text", async () => {
    const o = await run("crash_outside");
    assert.equal(o.outcome, "error");
    assert.equal(o.error, "Error: HTTP 503 from the model");
  });

  it("a refused step output: schema_mismatch, or partial_execution when its side effect happened", async () => {
    assert.equal((await run("big_plain_output")).class, "schema_mismatch");
    const o = await run("big_side_effect_output");
    assert.equal(o.class, "partial_execution");
    assert.equal(o.open_step, "export");
  });

  it("a step completed by an earlier attempt is not run or sent again", async () => {
    const steps = [{ name: "send", output: "sent once", side_effect: true, attempt: 1, at_ms: 1 }];
    const o = await run("memoised", { attempt: 2, steps });
    assert.equal(o.outcome, "ok");
    assert.deepEqual(o.output, { sent: "sent once" });
    assert.deepEqual(o.steps, []);
  });
});
