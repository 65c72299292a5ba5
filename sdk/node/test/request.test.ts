/** Request bodies: conformance/requests.json parses into Task; malformed requests are refused. */

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { Agent, RequestError, parseRequest } from "../src/index.js";
import { requestBody, vectors } from "./helpers.js";

interface RequestCase {
  name: string;
  body: Record<string, unknown>;
}

describe("conformance/requests.json", () => {
  const { requests } = vectors<{ requests: RequestCase[] }>("requests.json");
  it("has vectors", () => {
    assert.ok(requests.length >= 3);
  });
  for (const c of requests) {
    it(`parses: ${c.name}`, () => {
      const task = parseRequest(c.body);
      assert.deepEqual(task, c.body);
      // Through the agent's body parser too (raw bytes as the transports receive them).
      assert.deepEqual(new Agent().parseBody(Buffer.from(JSON.stringify(c.body))), c.body);
    });
  }
});

describe("requests", () => {
  it("missing keys read as their empty values", () => {
    const task = parseRequest({ task_id: "t", tenant: "a", kind: "k", attempt: 2 });
    assert.deepEqual(task.steps, []);
    assert.deepEqual(task.extra, {});
    assert.equal(task.payload, null);
    assert.equal(task.max_attempts, 2);
    assert.equal(task.deadline, null);
    assert.equal(task.protocol, 1);
  });

  it("malformed ones are refused with a reason", () => {
    const bad: [unknown, RegExp][] = [
      [[1], /not a JSON object/],
      [requestBody("k", { task_id: 7 }), /task_id/],
      [requestBody("k", { attempt: 0 }), /attempt/],
      [requestBody("k", { steps: {} }), /steps/],
      [requestBody("k", { steps: [{ output: 1 }] }), /steps\[0\]: 'name'/],
      [requestBody("k", { steps: [{ name: "s", side_effect: "yes" }] }), /side_effect/],
      [requestBody("k", { extra: { a: 1 } }), /extra/],
      [requestBody("k", { deadline: "soon" }), /deadline/],
    ];
    for (const [body, why] of bad) {
      assert.throws(() => parseRequest(body), (e: unknown) => e instanceof RequestError && why.test(e.message));
    }
    assert.throws(() => new Agent().parseBody("{nope"), /not JSON/);
  });

  it("a custom JSON codec sees the raw body text (big integers can stay exact)", () => {
    let seen = "";
    const agent = new Agent({
      json: {
        parse: (text) => {
          seen = text;
          return JSON.parse(text.replace(/"big":(\d{16,})/g, '"big":"$1"')) as unknown;
        },
        stringify: (v) => JSON.stringify(v),
      },
    });
    const raw = JSON.stringify(requestBody("k")).replace('"payload":{"n":1}', '"payload":{"big":12345678901234567890}');
    const task = agent.parseBody(raw);
    assert.equal(seen, raw);
    assert.deepEqual(task.payload, { big: "12345678901234567890" });
  });
});
