/** Producer-side validation: every vector of conformance/tasks.json, and the lane fields. */

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { InvalidTaskError, prepareTask } from "../src/index.js";
import { vectors } from "./helpers.js";

interface TaskCase {
  name: string;
  task: Record<string, unknown>;
  valid: boolean;
  field?: string;
}

const NOW = 1764500000000;

describe("conformance/tasks.json", () => {
  const { cases } = vectors<{ cases: TaskCase[] }>("tasks.json");

  it("has cases of both kinds", () => {
    assert.ok(cases.filter((c) => c.valid).length >= 5);
    assert.ok(cases.filter((c) => !c.valid).length >= 10);
  });

  for (const c of cases) {
    it(`${c.valid ? "accepts" : "refuses"}: ${c.name}`, () => {
      if (c.valid) {
        const p = prepareTask(c.task, NOW);
        const fields = new Map(p.fields);
        assert.equal(fields.get("tenant"), c.task.tenant);
        assert.equal(fields.get("kind"), c.task.kind);
        assert.equal(fields.get("payload"), JSON.stringify(c.task.payload));
        assert.equal(fields.get("attempt"), "1");
        assert.equal(fields.get("enqueued_at"), String(NOW));
        if (typeof c.task.task_id === "string") assert.equal(p.taskId, c.task.task_id);
        else assert.match(p.taskId, /^[0-9a-f]{32}$/);
      } else {
        assert.throws(
          () => prepareTask(c.task, NOW),
          (e: unknown) => {
            assert.ok(e instanceof InvalidTaskError, String(e));
            assert.equal(e.field, c.field, e.message);
            return true;
          },
        );
      }
    });
  }
});

describe("lane fields", () => {
  it("are the Rust producer's, in its order (Task::to_fields of a fresh task)", () => {
    const p = prepareTask(
      {
        extra: { tool_version: "1.4.2", env: "prod" },
        deadline: 1893456000000,
        trace_id: "0af7651916cd43dd8448eb211c80319c",
        prompt_version: "v7 – beta",
        schema_version: 3,
        task_id: "t-123",
        payload: { ticket: 42, nested: { a: [1, 2.5, null, "é"] } },
        kind: "triage_ticket",
        tenant: "acme",
      },
      NOW,
    );
    assert.deepEqual(p.fields, [
      ["task_id", "t-123"],
      ["tenant", "acme"],
      ["kind", "triage_ticket"],
      ["payload", '{"ticket":42,"nested":{"a":[1,2.5,null,"é"]}}'],
      ["attempt", "1"],
      ["enqueued_at", String(NOW)],
      ["schema_version", "3"],
      ["prompt_version", "v7 – beta"],
      ["trace_id", "0af7651916cd43dd8448eb211c80319c"],
      ["deadline", "1893456000000"],
      ["env", "prod"],
      ["tool_version", "1.4.2"],
    ]);
    assert.equal(p.tenant, "acme");
    assert.equal(p.taskId, "t-123");
  });

  it("leave out optional fields given as null", () => {
    const p = prepareTask(
      { tenant: "a", kind: "k", payload: null, task_id: null, deadline: null, trace_id: null, extra: null },
      NOW,
    );
    assert.deepEqual(
      p.fields.map(([k]) => k),
      ["task_id", "tenant", "kind", "payload", "attempt", "enqueued_at"],
    );
    assert.equal(p.fields[3]?.[1], "null");
  });

  it("generate a fresh 32-hex task id per task", () => {
    const a = prepareTask({ tenant: "a", kind: "k", payload: 1 }, NOW).taskId;
    const b = prepareTask({ tenant: "a", kind: "k", payload: 1 }, NOW).taskId;
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, b);
  });
});

describe("what JSON or the fleet cannot carry is refused", () => {
  const base = { tenant: "acme", kind: "k" };
  const refuses = (task: Record<string, unknown>, field: string, text: RegExp): void => {
    assert.throws(
      () => prepareTask(task, NOW),
      (e: unknown) => e instanceof InvalidTaskError && e.field === field && text.test(e.message),
    );
  };

  it("a payload that is undefined, a BigInt, NaN, Infinity or holds a lone surrogate", () => {
    refuses({ ...base, payload: undefined }, "payload", /missing field 'payload'/);
    refuses({ ...base, payload: { n: 10n } }, "payload", /BigInt/);
    refuses({ ...base, payload: [Number.NaN] }, "payload", /NaN/);
    refuses({ ...base, payload: { x: Infinity } }, "payload", /Infinity/);
    refuses({ ...base, payload: { s: "a\ud800b" } }, "payload", /lone surrogate/);
    refuses({ ...base, payload: { ["\udc00"]: 1 } }, "payload", /lone surrogate/);
    refuses({ ...base, payload: () => 1 }, "payload", /not a JSON value/);
  });

  it("a payload over the limit, counted in UTF-8 bytes of compact JSON", () => {
    const fits = "é".repeat(7); // "\"ééééééé\"" is 16 bytes
    assert.equal(prepareTask({ ...base, payload: fits }, NOW, 16).fields[3]?.[1], `"${fits}"`);
    assert.throws(
      () => prepareTask({ ...base, payload: `${fits}x` }, NOW, 16),
      (e: unknown) => e instanceof InvalidTaskError && e.field === "payload" && /17 bytes; the limit is 16/.test(e.message),
    );
  });

  it("integers that are not safe, negative or fractional", () => {
    refuses({ ...base, payload: 1, deadline: 2 ** 53 }, "deadline", /out of range/);
    refuses({ ...base, payload: 1, deadline: -5 }, "deadline", /negative/);
    refuses({ ...base, payload: 1, deadline: "1893456000000" }, "deadline", /integer/);
    refuses({ ...base, payload: 1, schema_version: 2.5 }, "schema_version", /integer/);
    assert.ok(prepareTask({ ...base, payload: 1, deadline: Number.MAX_SAFE_INTEGER }, NOW));
  });

  it("meta fields count characters, not bytes, and refuse control characters", () => {
    assert.ok(prepareTask({ ...base, payload: 1, trace_id: "🦀".repeat(128), prompt_version: "" }, NOW));
    refuses({ ...base, payload: 1, trace_id: "🦀".repeat(129) }, "trace_id", /129 characters; the limit is 128/);
    refuses({ ...base, payload: 1, prompt_version: "v\u0085" }, "prompt_version", /control character/);
    refuses({ ...base, payload: 1, prompt_version: "\ud800" }, "prompt_version", /lone surrogate/);
  });

  it("own fields: byte limit, reserved names, non-text values", () => {
    const name = "a";
    assert.ok(prepareTask({ ...base, payload: 1, extra: { [name]: "x".repeat(4095) } }, NOW));
    refuses({ ...base, payload: 1, extra: { a: "x".repeat(4096) } }, "extra", /4097 bytes/);
    refuses({ ...base, payload: 1, extra: { history: "[]" } }, "extra", /'history' is reserved/);
    refuses({ ...base, payload: 1, extra: { v: "\udfff" } }, "extra", /lone surrogate/);
    refuses({ ...base, payload: 1, extra: ["x"] }, "extra", /object of strings/);
  });

  it("a task that is not an object", () => {
    assert.throws(() => prepareTask(null, NOW), InvalidTaskError);
    assert.throws(() => prepareTask([], NOW), InvalidTaskError);
  });
});
