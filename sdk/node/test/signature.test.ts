/** Redrive-Signature: every vector of conformance/signatures.json. */

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { checkSignature, sign, verify } from "../src/index.js";
import { vectors } from "./helpers.js";

interface SignCase {
  name: string;
  secrets: string[];
  t: number;
  body: string;
  header: string;
}
interface VerifyCase {
  name: string;
  secrets: string[];
  header: string;
  body: string;
  now: number;
  valid: boolean;
}

const v = vectors<{ sign: SignCase[]; verify: VerifyCase[] }>("signatures.json");

describe("conformance/signatures.json: sign", () => {
  it("has vectors", () => {
    assert.ok(v.sign.length >= 3);
  });
  for (const c of v.sign) {
    it(c.name, () => {
      assert.equal(sign(c.secrets, c.body, c.t), c.header);
      assert.equal(sign(c.secrets, Buffer.from(c.body, "utf8"), c.t), c.header, "raw bytes sign the same");
    });
  }
});

describe("conformance/signatures.json: verify", () => {
  it("has vectors", () => {
    assert.ok(v.verify.length >= 10);
  });
  for (const c of v.verify) {
    it(c.name, () => {
      assert.equal(verify(c.secrets, c.header, c.body, { now: c.now }), c.valid);
      assert.equal(verify(c.secrets, c.header, Buffer.from(c.body, "utf8"), { now: c.now }), c.valid);
      assert.equal(checkSignature(c.secrets, c.header, c.body, { now: c.now }) === null, c.valid);
    });
  }
});

describe("signatures", () => {
  it("round-trip at the current time and refuse a stale one, saying why", () => {
    const body = Buffer.from('{"a":"é"}');
    const header = sign("s1", body);
    assert.ok(verify(["s0", "s1"], header, body));
    const old = sign("s1", body, Math.floor(Date.now() / 1000) - 301);
    assert.equal(verify("s1", old, body), false);
    assert.match(checkSignature("s1", old, body) ?? "", /stale/);
    assert.match(checkSignature("s1", undefined, body) ?? "", /missing/);
    assert.match(checkSignature("other", header, body) ?? "", /matches none/);
    assert.equal(verify("s1", header, body, { toleranceSecs: 0, now: Math.floor(Date.now() / 1000) + 1 }), false);
  });

  it("a single secret string is one secret", () => {
    assert.equal(sign("s", "x", 1).split(",").length, 2);
  });

  it("the reason never shows a secret or an expected signature", () => {
    const why = checkSignature("topsecret", "t=1764500000,v1=00", "b", { now: 1764500000 }) ?? "";
    assert.doesNotMatch(why, /topsecret/);
    assert.doesNotMatch(why, /[0-9a-f]{64}/);
  });
});
