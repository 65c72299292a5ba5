/** The replies and events the SDK produces: results, typed errors, steps, limits, routing. */

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import {
  Agent,
  AttemptClosedError,
  FailError,
  MAX_STEPS,
  MAX_STEPS_OUTPUT_BYTES,
  MAX_STEP_NAME_CHARS,
  MAX_STEP_OUTPUT_BYTES,
  PartialExecutionError,
  RetryError,
  StepRefusedError,
  kindMatches,
  parseRequest,
  type Context,
  type Task,
} from "../src/index.js";
import { requestBody, vectors } from "./helpers.js";

type Line = Record<string, unknown>;

/** Runs one attempt of `kind` (request overrides in `over`); returns its event lines and reply. */
async function attempt(agent: Agent, kind: string, over: Record<string, unknown> = {}): Promise<{ events: Line[]; reply: Line }> {
  const events: Line[] = [];
  const reply = await agent.run(parseRequest(requestBody(kind, over)), (line) => {
    assert.ok(!line.includes("\n"), "one line per event");
    events.push(JSON.parse(line) as Line);
    return Promise.resolve();
  });
  assert.ok(!reply.includes("\n"));
  return { events, reply: JSON.parse(reply) as Line };
}

describe("step limits", () => {
  it("are the ones in conformance/replies.json", () => {
    const { step_limits: l } = vectors<{
      step_limits: { name_max_chars: number; output_max_bytes: number; max_steps: number; total_output_max_bytes: number };
    }>("replies.json");
    assert.equal(MAX_STEP_NAME_CHARS, l.name_max_chars);
    assert.equal(MAX_STEP_OUTPUT_BYTES, l.output_max_bytes);
    assert.equal(MAX_STEPS, l.max_steps);
    assert.equal(MAX_STEPS_OUTPUT_BYTES, l.total_output_max_bytes);
  });
});

describe("lone surrogates (the fleet's JSON parser refuses them)", () => {
  it("are refused in step outputs and replies; pairs and escaped backslashes pass", async () => {
    const agent = new Agent()
      .handle("step", async (_t, ctx) => ctx.step("s", () => "bad \ud800 text"))
      .handle("out", () => ({ text: "\udc00" }))
      .handle("fine", () => ({ emoji: "😀", text: "\\ud800 is text" }));
    const step = await attempt(agent, "step");
    assert.equal(step.reply.class, "schema_mismatch");
    assert.match(String(step.reply.error), /lone surrogate/);
    assert.ok(!step.events.some((e) => e.event === "step_done"), "nothing recorded");
    const out = await attempt(agent, "out");
    assert.equal(out.reply.class, "schema_mismatch");
    const fine = await attempt(agent, "fine");
    assert.equal(fine.reply.status, "ok");
  });
});

describe("handler results and errors become replies", () => {
  const agent = new Agent({ onError: () => undefined })
    .handle("ok", (task) => ({ echo: task.payload }))
    .handle("nothing", () => undefined)
    .handle("async", async () => {
      await new Promise((r) => setTimeout(r, 5));
      return [1, "two"];
    })
    .handle("retry", () => {
      throw new RetryError("model said slow down", { retryAfterMs: 3000, cls: "rate_limited" });
    })
    .handle("retry_default", () => {
      throw new RetryError("smtp reset");
    })
    .handle("fail", () => {
      throw new FailError("context_overflow", "prompt is 210k tokens");
    })
    .handle("partial", () => {
      throw new PartialExecutionError("charged the card, crashed before the receipt");
    })
    .handle("bug", () => {
      throw new TypeError("cannot read properties of undefined");
    })
    .handle("huge_error", () => {
      throw new Error("é".repeat(5000));
    })
    .handle("string_thrown", () => {
      // eslint-disable-next-line @typescript-eslint/only-throw-error
      throw "plain text";
    })
    .handle("bigint_output", () => 10n)
    .handle("function_output", () => () => 1)
    .handle("big_output", () => "x".repeat(1024 * 1024));

  it("a return value is ok with that output", async () => {
    assert.deepEqual((await attempt(agent, "ok")).reply, { status: "ok", output: { echo: { n: 1 } } });
    assert.deepEqual((await attempt(agent, "async")).reply, { status: "ok", output: [1, "two"] });
  });

  it("undefined is ok with output null", async () => {
    assert.deepEqual((await attempt(agent, "nothing")).reply, { status: "ok", output: null });
  });

  it("RetryError is a transient fail with retry_after_ms", async () => {
    assert.deepEqual((await attempt(agent, "retry")).reply, {
      status: "fail",
      class: "rate_limited",
      error: "model said slow down",
      retry_after_ms: 3000,
    });
    assert.deepEqual((await attempt(agent, "retry_default")).reply, {
      status: "fail",
      class: "upstream_unavailable",
      error: "smtp reset",
    });
  });

  it("FailError and PartialExecutionError are permanent fails with their class", async () => {
    assert.deepEqual((await attempt(agent, "fail")).reply, {
      status: "fail",
      class: "context_overflow",
      error: "prompt is 210k tokens",
    });
    assert.deepEqual((await attempt(agent, "partial")).reply, {
      status: "fail",
      class: "partial_execution",
      error: "charged the card, crashed before the receipt",
    });
  });

  it("any other exception is a fail without class: '<name>: <message>', bounded to 4 KiB", async () => {
    assert.deepEqual((await attempt(agent, "bug")).reply, {
      status: "fail",
      error: "TypeError: cannot read properties of undefined",
    });
    const huge = (await attempt(agent, "huge_error")).reply;
    assert.equal(huge.class, undefined);
    const text = String(huge.error);
    assert.ok(Buffer.byteLength(text) <= 4096, `${Buffer.byteLength(text)} bytes`);
    assert.ok(text.startsWith("Error: éé") && text.endsWith("..."));
    assert.deepEqual((await attempt(agent, "string_thrown")).reply, { status: "fail", error: "thrown: plain text" });
  });

  it("an output without a JSON form or over the reply limit is refused, never sent broken", async () => {
    const big = (await attempt(agent, "bigint_output")).reply;
    assert.equal(big.status, "fail");
    assert.match(String(big.error), /TypeError: .*BigInt/);
    assert.equal((await attempt(agent, "function_output")).reply.class, "schema_mismatch");
    const over = (await attempt(agent, "big_output")).reply;
    assert.equal(over.class, "schema_mismatch");
    assert.match(String(over.error), /reply limit is 1048576/);
  });

  it("no matching kind is no_handler", async () => {
    const { reply, events } = await attempt(agent, "unknown_kind");
    assert.equal(reply.class, "no_handler");
    assert.match(String(reply.error), /unknown_kind/);
    assert.deepEqual(events, []);
  });

  it("the unexpected error goes to onError (the reply does not carry the stack)", async () => {
    const seen: unknown[] = [];
    const a = new Agent({ onError: (e, task) => seen.push([e, task.task_id]) }).handle("k", () => {
      throw new RangeError("boom");
    });
    const { reply } = await attempt(a, "k");
    assert.equal(seen.length, 1);
    assert.doesNotMatch(String(reply.error), /at /);
  });

  it("typed errors refuse classes of the other kind", () => {
    // @ts-expect-error: a permanent class is not a RetryError class
    assert.throws(() => new RetryError("x", { cls: "invalid_input" }), TypeError);
    // @ts-expect-error: a transient class is not a FailError class
    assert.throws(() => new FailError("rate_limited", "x"), TypeError);
    assert.throws(() => new RetryError("x", { retryAfterMs: -1 }), RangeError);
    assert.equal(new RetryError("x", { retryAfterMs: 1.2 }).retryAfterMs, 2);
  });
});

describe("routing", () => {
  it("globs: * any run, ? one character; exact names; first match wins", async () => {
    assert.ok(kindMatches("triage_*", "triage_ticket"));
    assert.ok(kindMatches("triage_*", "triage_"));
    assert.ok(!kindMatches("triage_*", "triage"));
    assert.ok(kindMatches("score_?", "score_a"));
    assert.ok(!kindMatches("score_?", "score_ab"));
    assert.ok(kindMatches("a.b", "a.b"));
    assert.ok(!kindMatches("a.b", "axb"), "a dot is a dot");
    assert.ok(kindMatches("ns:*/v?", "ns:x/y/v2"));
    assert.ok(kindMatches("*", "anything"));
    assert.ok(kindMatches("lead-*", "lead-score"), "a dash in a glob");
    assert.ok(kindMatches("a+b(c)[d]{e}|f^$\\*", "a+b(c)[d]{e}|f^$\\x"), "regex characters are literal");
    assert.ok(!kindMatches("a+b", "aab"));
    const agent = new Agent()
      .handle(["score_lead", "triage_*"], () => "first")
      .handle("triage_ticket", () => "second")
      .handle("*", () => "fallback");
    assert.equal((await attempt(agent, "triage_ticket")).reply.output, "first");
    assert.equal((await attempt(agent, "score_lead")).reply.output, "first");
    assert.equal((await attempt(agent, "other")).reply.output, "fallback");
    assert.equal(agent.route("triage_x") !== undefined, true);
  });

  it("refuses empty patterns", () => {
    assert.throws(() => new Agent().handle("", () => 1), TypeError);
    assert.throws(() => new Agent().handle([], () => 1), TypeError);
  });
});

describe("steps", () => {
  it("emit step_started then step_done, in order, before the final reply", async () => {
    const agent = new Agent().handle("k", async (_task, ctx) => {
      const draft = await ctx.step("draft", () => "Dear u1");
      const sent = await ctx.step("send_email", () => ({ message_id: "m-1" }), { sideEffect: true });
      await ctx.progress({ message: "sent", percent: 100 });
      return { draft, sent };
    });
    const { events, reply } = await attempt(agent, "k");
    assert.deepEqual(events, [
      { event: "step_started", name: "draft", side_effect: false },
      { event: "step_done", name: "draft", output: "Dear u1" },
      { event: "step_started", name: "send_email", side_effect: true },
      { event: "step_done", name: "send_email", output: { message_id: "m-1" } },
      { event: "progress", message: "sent", percent: 100 },
    ]);
    assert.deepEqual(reply, { status: "ok", output: { draft: "Dear u1", sent: { message_id: "m-1" } } });
  });

  it("a completed step of the request returns its stored output without running", async () => {
    let ran = 0;
    const agent = new Agent().handle("k", async (_task, ctx) => {
      const a = await ctx.step("send_email", () => {
        ran++;
        return "again";
      }, { sideEffect: true });
      const b = await ctx.step("summarise", () => {
        ran++;
        return "new";
      });
      return { a, b };
    });
    const steps = [{ name: "send_email", output: { message_id: "m-1" }, side_effect: true, attempt: 1, at_ms: 5 }];
    const { events, reply } = await attempt(agent, "k", { attempt: 2, steps });
    assert.equal(ran, 1, "only the new step ran");
    assert.deepEqual(reply.output, { a: { message_id: "m-1" }, b: "new" });
    assert.deepEqual(
      events.map((e) => [e.event, e.name]),
      [
        ["step_started", "summarise"],
        ["step_done", "summarise"],
      ],
    );
  });

  it("a step name repeated within an attempt is memoised too; outputs are JSON round trips", async () => {
    let ran = 0;
    const agent = new Agent().handle("k", async (_task, ctx) => {
      const first = await ctx.step("s", () => {
        ran++;
        return { at: new Date(0), skip: undefined };
      });
      const second = await ctx.step("s", () => {
        ran++;
        return "other";
      });
      return { first, second };
    });
    const { reply, events } = await attempt(agent, "k");
    assert.equal(ran, 1);
    const at = "1970-01-01T00:00:00.000Z";
    assert.deepEqual(reply.output, { first: { at }, second: { at } });
    assert.equal(events.length, 2);
  });

  it("a typed error in a side-effecting step sends step_failed, then the fail reply", async () => {
    const agent = new Agent()
      .handle("retry", async (_t, ctx) =>
        ctx.step("send", () => {
          throw new RetryError("429 before sending", { cls: "rate_limited", retryAfterMs: 500 });
        }, { sideEffect: true }),
      )
      .handle("fail", async (_t, ctx) =>
        ctx.step("send", () => {
          throw new FailError("invalid_input", "no such address");
        }, { sideEffect: true }),
      );
    const r = await attempt(agent, "retry");
    assert.deepEqual(r.events, [
      { event: "step_started", name: "send", side_effect: true },
      { event: "step_failed", name: "send", error: "RetryError: 429 before sending" },
    ]);
    assert.deepEqual(r.reply, { status: "fail", class: "rate_limited", error: "429 before sending", retry_after_ms: 500 });
    const f = await attempt(agent, "fail");
    assert.deepEqual(f.events.map((e) => e.event), ["step_started", "step_failed"]);
    assert.equal(f.reply.class, "invalid_input");
  });

  it("an untyped error or a PartialExecutionError in a step sends no step_failed (the side effect may have happened)", async () => {
    const agent = new Agent({ onError: () => undefined })
      .handle("bug", async (_t, ctx) =>
        ctx.step("pay", () => {
          throw new Error("socket hang up");
        }, { sideEffect: true }),
      )
      .handle("partial", async (_t, ctx) =>
        ctx.step("pay", () => {
          throw new PartialExecutionError("charged, no receipt");
        }, { sideEffect: true }),
      );
    const bug = await attempt(agent, "bug");
    assert.deepEqual(bug.events.map((e) => e.event), ["step_started"]);
    assert.deepEqual(bug.reply, { status: "fail", error: "Error: socket hang up" });
    const partial = await attempt(agent, "partial");
    assert.deepEqual(partial.events.map((e) => e.event), ["step_started"]);
    assert.equal(partial.reply.class, "partial_execution");
  });

  it("refuses steps over the limits before sending anything about them", async () => {
    const refusals: [string, (ctx: Context) => Promise<unknown>, RegExp, string[]][] = [
      ["empty name", (ctx) => ctx.step("", () => 1), /non-empty/, []],
      ["long name", (ctx) => ctx.step("n".repeat(129), () => 1), /longer than 128/, []],
      ["control character", (ctx) => ctx.step("a\u0007b", () => 1), /control character/, []],
      ["big output", (ctx) => ctx.step("big", () => "x".repeat(MAX_STEP_OUTPUT_BYTES)), /65538 bytes of JSON; the limit is 65536/, ["step_started"]],
      ["no JSON form", (ctx) => ctx.step("fn", () => () => 1), /no JSON form/, ["step_started"]],
    ];
    for (const [what, body, why, sent] of refusals) {
      let caught: unknown;
      const agent = new Agent().handle("k", async (_t, ctx) => {
        try {
          return await body(ctx);
        } catch (e) {
          caught = e;
          throw e;
        }
      });
      const { events, reply } = await attempt(agent, "k");
      assert.ok(caught instanceof StepRefusedError, `${what}: ${String(caught)}`);
      assert.match(caught.message, why, what);
      assert.deepEqual(events.map((e) => e.event), sent, what);
      assert.equal(reply.class, "schema_mismatch", what);
      assert.match(String(reply.error), /a step was refused/);
    }
    assert.ok(
      (await attempt(new Agent().handle("k", (_t, ctx) => ctx.step("é".repeat(128), () => 1)), "k")).reply.status === "ok",
      "128 characters of two bytes each are fine",
    );
  });

  it("counts the request's steps toward the 64-step and 512 KiB limits", async () => {
    const earlier = Array.from({ length: MAX_STEPS }, (_, i) => ({ name: `s${i}`, output: i, side_effect: false, attempt: 1, at_ms: 1 }));
    const agent = new Agent().handle("k", async (_t, ctx) => {
      await ctx.step("s3", () => "memoised, not counted again");
      return ctx.step("one_more", () => 1);
    });
    const { reply, events } = await attempt(agent, "k", { steps: earlier });
    assert.equal(reply.class, "schema_mismatch");
    assert.match(String(reply.error), /step 65 of the task; the limit is 64/);
    assert.deepEqual(events, []);

    const chunk = "x".repeat(60 * 1024);
    const heavy = Array.from({ length: 8 }, (_, i) => ({ name: `h${i}`, output: chunk, side_effect: false, attempt: 1, at_ms: 1 }));
    const total = new Agent().handle("k", (_t, ctx) => ctx.step("next", () => chunk));
    const t = await attempt(total, "k", { steps: heavy });
    assert.equal(t.reply.class, "schema_mismatch");
    assert.match(String(t.reply.error), /step outputs to 552978 bytes; the limit is 524288/);
  });

  it("refuses to start a step once the transport is gone", async () => {
    const aborter = new AbortController();
    let caught: unknown;
    const agent = new Agent({ onError: () => undefined }).handle("k", async (_t, ctx) => {
      await ctx.step("first", () => 1);
      aborter.abort();
      try {
        await ctx.step("second", () => 2, { sideEffect: true });
      } catch (e) {
        caught = e;
      }
      return "done";
    });
    const sent: string[] = [];
    await agent.run(parseRequest(requestBody("k")), (l) => {
      sent.push(l);
      return Promise.resolve();
    }, aborter.signal);
    assert.ok(caught instanceof AttemptClosedError);
    assert.equal(sent.length, 2, "nothing about 'second' was sent");
    let failing: unknown;
    const broken = new Agent({ onError: () => undefined }).handle("k", async (_t, ctx) => {
      try {
        await ctx.step("a", () => 1);
      } catch (e) {
        failing = e;
      }
    });
    await broken.run(parseRequest(requestBody("k")), () => Promise.reject(new Error("EPIPE")));
    assert.ok(failing instanceof AttemptClosedError);
    assert.match(failing.message, /EPIPE/);
  });

  it("progress refuses reserved keys and is best effort otherwise", async () => {
    const agent = new Agent({ onError: () => undefined }).handle("k", async (_t, ctx) => {
      await assert.rejects(ctx.progress({ status: "ok" }), TypeError);
      await assert.rejects(ctx.progress({ id: "r1" }), TypeError);
      await ctx.progress({});
      await assert.rejects(ctx.progress({ blob: "x".repeat(1024 * 1024) }), /over the reply limit/);
      return "ok";
    });
    const { events } = await attempt(agent, "k");
    assert.deepEqual(events, [{ event: "progress" }]);
    const gone = new Agent().handle("k", async (_t, ctx) => {
      await ctx.progress({ p: 1 });
      return "still ok";
    });
    const reply = await gone.run(parseRequest(requestBody("k")), () => Promise.reject(new Error("gone")));
    assert.deepEqual(JSON.parse(reply), { status: "ok", output: "still ok" });
  });

  it("handlers get the typed task", async () => {
    const agent = new Agent().handle<{ n: number }>("k", (task: Task<{ n: number }>, ctx: Context) => {
      assert.equal(ctx.task, task);
      return task.payload.n + 1;
    });
    assert.equal((await attempt(agent, "k")).reply.output, 2);
  });
});
