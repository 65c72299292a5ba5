/** Tenant notifications: verifyNotification and the example receiver over real HTTP. */

import { strict as assert } from "node:assert";
import { request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import { makeReceiver } from "../examples/notify-receiver.js";
import { NotificationError, sign, verifyNotification, type Notification } from "../src/index.js";
import { within } from "./helpers.js";

const SECRET = "n0tify-s3cret";

function event(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: "acme/1763800000000-0",
    type: "dead_lettered",
    tenant: "acme",
    at: 1763800000000,
    data: { count: 1000, by_class: { schema_mismatch: 1000 }, samples: [] },
    ...over,
  };
}

function signed(doc: Record<string, unknown>, secret = SECRET): { headers: Record<string, string>; body: string } {
  const body = JSON.stringify(doc);
  return {
    body,
    headers: {
      "redrive-signature": sign(secret, body),
      "redrive-event": String(doc.type),
      "redrive-event-id": String(doc.id),
      "redrive-tenant": String(doc.tenant),
    },
  };
}

function post(server: Server, headers: Record<string, string>, body: string): Promise<number> {
  const { port } = server.address() as AddressInfo;
  return within(
    10_000,
    "the receiver's answer",
    new Promise<number>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, method: "POST", path: "/", headers }, (res) => {
        res.resume();
        res.on("end", () => {
          resolve(res.statusCode ?? 0);
        });
      });
      req.on("error", reject);
      req.end(body);
    }),
  );
}

describe("verifyNotification", () => {
  it("reads a signed notification whole, under any of the secrets", () => {
    const { headers, body } = signed(event());
    const n = verifyNotification(["old", SECRET], headers, Buffer.from(body));
    assert.deepEqual(n, event());
  });

  for (const [change, why] of [
    ["secret", "matches none"],
    ["body", "matches none"],
    ["stale", "stale"],
    ["missing", "missing Redrive-Signature"],
    ["id", "Redrive-Event-Id disagrees"],
    ["shape", "no valid 'at'"],
  ] as const) {
    it(`refuses a request (${change}) saying why, never the secret`, () => {
      const doc = change === "shape" ? event({ at: "later" }) : event();
      const s = signed(doc, change === "secret" ? "other" : SECRET);
      let body = s.body;
      if (change === "body") body = body.replace("1000", "1001");
      if (change === "stale") s.headers["redrive-signature"] = sign(SECRET, body, Math.floor(Date.now() / 1000) - 3600);
      if (change === "missing") delete s.headers["redrive-signature"];
      if (change === "id") s.headers["redrive-event-id"] = "acme/2-0";
      assert.throws(
        () => verifyNotification(SECRET, s.headers, body),
        (e: unknown) => e instanceof NotificationError && e.message.includes(why) && !e.message.includes(SECRET),
      );
    });
  }
});

describe("the example receiver", () => {
  const got: Notification[] = [];
  let server: Server;
  before(async () => {
    server = makeReceiver([SECRET], (n) => got.push(n));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  });

  it("takes each event once and refuses forgeries", async () => {
    const first = signed(event());
    assert.equal(await post(server, first.headers, first.body), 204);
    assert.equal(await post(server, first.headers, first.body), 204, "a duplicate is answered, not taken twice");
    const other = signed(event({ id: "acme/1763800000001-0", type: "breaker_opened", data: { to: "open" } }));
    assert.equal(await post(server, other.headers, other.body), 204);
    const forged = signed(event({ id: "acme/9-0" }), "forged");
    assert.equal(await post(server, forged.headers, forged.body), 401);
    assert.deepEqual(got.map((n) => n.id), ["acme/1763800000000-0", "acme/1763800000001-0"]);
    assert.equal(got[1]?.type, "breaker_opened");
  });
});
