/** serveHttp and the middleware on real loopback sockets. */

import { strict as assert } from "node:assert";
import { Agent as HttpAgent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import { Agent, AttemptClosedError, serveHttp, sign, type Middleware } from "../src/index.js";
import { deferred, lines, post, requestBody, within } from "./helpers.js";

/** A request as a body parser leaves it. */
type ParsedRequest = IncomingMessage & { rawBody?: Buffer; body?: unknown };

function urlOf(server: Server, path = "/"): string {
  const { port } = server.address() as AddressInfo;
  return `http://127.0.0.1:${port}${path}`;
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return within(5000, "server close", new Promise<void>((resolve) => server.close(() => { resolve(); })));
}

describe("serveHttp", () => {
  const gate = deferred();
  const closedStep = deferred<unknown>();
  const agent = new Agent({ onError: () => undefined })
    .handle("slow_*", async (task, ctx) => {
      const draft = await ctx.step("draft", () => `Dear ${(task.payload as { user: string }).user}`);
      await ctx.progress({ percent: 50 });
      await within(10_000, "the test to read the first events", gate.promise);
      return { draft };
    })
    .handle("echo", (task) => task.payload)
    .handle("abandoned", async (_task, ctx) => {
      await ctx.step("first", () => 1);
      await within(10_000, "the client to go away", new Promise((resolve) => { ctx.signal.addEventListener("abort", resolve); }));
      try {
        await ctx.step("second", () => 2, { sideEffect: true });
        closedStep.resolve("ran");
      } catch (e) {
        closedStep.resolve(e);
      }
      return "unreachable client";
    });
  let server: Server;
  let signed: Server;
  before(async () => {
    server = await serveHttp(agent, { port: 0, path: "/redrive" });
    signed = await serveHttp(agent, { port: 0, secrets: ["new-secret", "old-secret"], maxBodyBytes: 64 * 1024 });
  });
  after(async () => {
    await close(server);
    await close(signed);
  });

  it("streams NDJSON: the first events arrive before the handler finishes", async () => {
    const body = JSON.stringify(requestBody("slow_digest", { payload: { user: "u1" } }));
    const seen: Record<string, unknown>[] = [];
    const res = await within(10_000, "the streamed reply", new Promise<{ type: string | undefined; text: string }>((resolve, reject) => {
      const req = request(urlOf(server, "/redrive?x=1"), { method: "POST", headers: { "Content-Type": "application/json" } }, (res) => {
        let text = "";
        let pending = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
          pending += chunk;
          let nl: number;
          while ((nl = pending.indexOf("\n")) >= 0) {
            seen.push(JSON.parse(pending.slice(0, nl)) as Record<string, unknown>);
            pending = pending.slice(nl + 1);
            // The handler is parked until the test has read its first events: incremental.
            if (seen.length === 3) gate.resolve();
          }
        });
        res.once("end", () => { resolve({ type: res.headers["content-type"], text }); });
        res.once("error", reject);
      });
      req.once("error", reject);
      req.end(body);
    }));
    assert.equal(res.type, "application/x-ndjson");
    assert.deepEqual(seen, [
      { event: "step_started", name: "draft", side_effect: false },
      { event: "step_done", name: "draft", output: "Dear u1" },
      { event: "progress", percent: 50 },
      { status: "ok", output: { draft: "Dear u1" } },
    ]);
    assert.ok(res.text.endsWith("\n"));
  });

  it("keeps connections alive across attempts", async () => {
    let connections = 0;
    const onConnection = (): void => { connections++; };
    server.on("connection", onConnection);
    const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await post(urlOf(server, "/redrive"), JSON.stringify(requestBody("echo", { payload: i })), {}, { agent: keepAlive });
        assert.equal(r.status, 200);
        assert.deepEqual(lines(r.body), [{ status: "ok", output: i }]);
        assert.equal(r.headers.connection, "keep-alive");
      }
    } finally {
      server.off("connection", onConnection);
      keepAlive.destroy();
    }
    assert.equal(connections, 1);
  });

  it("answers a malformed request with 4xx and an invalid_input reply", async () => {
    const url = urlOf(server, "/redrive");
    for (const [body, why] of [
      ["{nope", /not JSON/],
      ["[1]", /not a JSON object/],
      [JSON.stringify(requestBody("echo", { attempt: "one" })), /attempt/],
    ] as const) {
      const r = await post(url, body);
      assert.equal(r.status, 400);
      assert.equal(r.headers["content-type"], "application/json");
      const reply = JSON.parse(r.body) as Record<string, unknown>;
      assert.equal(reply.status, "fail");
      assert.equal(reply.class, "invalid_input");
      assert.match(String(reply.error), why);
    }
    const wrongPath = await post(urlOf(server, "/elsewhere"), JSON.stringify(requestBody("echo")));
    assert.equal(wrongPath.status, 404);
    const get = await post(url, "", {}, { method: "GET" });
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, "POST");
  });

  it("refuses a body over maxBodyBytes with 413", async () => {
    const big = JSON.stringify(requestBody("echo", { payload: "x".repeat(70 * 1024) }));
    const r = await post(urlOf(signed), big, { "Redrive-Signature": sign("new-secret", big) });
    assert.equal(r.status, 413);
    assert.equal((JSON.parse(r.body) as Record<string, unknown>).class, "invalid_input");
  });

  it("with secrets: requires a valid, fresh signature (401 unauthorized otherwise)", async () => {
    const url = urlOf(signed);
    const body = JSON.stringify(requestBody("echo", { payload: "hé" }));
    const now = Math.floor(Date.now() / 1000);
    const refused: [Record<string, string>, RegExp][] = [
      [{}, /missing/],
      [{ "Redrive-Signature": sign("wrong", body) }, /matches none/],
      [{ "Redrive-Signature": sign("new-secret", body, now - 301) }, /stale/],
      [{ "Redrive-Signature": sign("new-secret", body, now + 301) }, /stale/],
      [{ "Redrive-Signature": sign("new-secret", `${body} `) }, /matches none/],
      [{ "Redrive-Signature": "garbage" }, /no valid t/],
    ];
    for (const [headers, why] of refused) {
      const r = await post(url, body, headers);
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.equal(r.headers["content-type"], "application/json");
      const reply = JSON.parse(r.body) as Record<string, unknown>;
      assert.equal(reply.status, "fail");
      assert.equal(reply.class, "unauthorized");
      assert.match(String(reply.error), why);
      assert.doesNotMatch(r.body, /new-secret|old-secret/);
    }
    for (const secrets of [["old-secret"], ["new-secret", "old-secret"], ["new-secret"]]) {
      const r = await post(url, body, { "Redrive-Signature": sign(secrets, body) });
      assert.equal(r.status, 200);
      assert.deepEqual(lines(r.body), [{ status: "ok", output: "hé" }]);
    }
    const fresh = await post(url, body, { "Redrive-Signature": sign("new-secret", body, now - 299) });
    assert.equal(fresh.status, 200);
  });

  it("a client that goes away aborts ctx.signal and later steps refuse to start", async () => {
    const body = JSON.stringify(requestBody("abandoned"));
    await within(10_000, "the first event, then hanging up", new Promise<void>((resolve, reject) => {
      const req = request(urlOf(server, "/redrive"), { method: "POST" }, (res) => {
        res.once("data", () => {
          req.destroy();
          resolve();
        });
      });
      req.once("error", (e) => { if (!req.destroyed) reject(e); });
      req.end(body);
    }));
    const outcome = await within(10_000, "the handler's second step", closedStep.promise);
    assert.ok(outcome instanceof AttemptClosedError, String(outcome));
  });
});

describe("agent.middleware on a plain node:http server", () => {
  const agent = new Agent().handle("echo", async (task, ctx) => {
    await ctx.step("s", () => "x");
    return task.payload;
  });
  const servers: Server[] = [];
  const start = async (handler: (req: ParsedRequest, res: ServerResponse) => void): Promise<string> => {
    const s = createServer(handler);
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => { resolve(); }));
    return urlOf(s);
  };
  after(async () => {
    for (const s of servers) await close(s);
  });
  const body = JSON.stringify(requestBody("echo", { payload: { a: 1 } }));

  it("reads the raw body itself and verifies the signature", async () => {
    const mw = agent.middleware({ secrets: "s3cret" });
    const url = await start((req, res) => { mw(req, res); });
    const ok = await post(url, body, { "Redrive-Signature": sign("s3cret", body) });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers["content-type"], "application/x-ndjson");
    assert.deepEqual(lines(ok.body).map((l) => l.event ?? l.status), ["step_started", "step_done", "ok"]);
    const bad = await post(url, body, { "Redrive-Signature": sign("other", body) });
    assert.equal(bad.status, 401);
  });

  const readAll = (req: IncomingMessage): Promise<Buffer> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.once("end", () => { resolve(Buffer.concat(chunks)); });
    });

  it("uses req.rawBody or a Buffer req.body left by a body parser", async () => {
    const mw = agent.middleware({ secrets: ["s3cret"] });
    const withRaw = await start((req, res) => {
      void readAll(req).then((raw) => {
        req.rawBody = raw;
        req.body = JSON.parse(raw.toString()) as unknown;
        mw(req, res);
      });
    });
    const r1 = await post(withRaw, body, { "Redrive-Signature": sign("s3cret", body) });
    assert.equal(r1.status, 200);
    assert.deepEqual(lines(r1.body).at(-1), { status: "ok", output: { a: 1 } });
    const withBuffer = await start((req, res) => {
      void readAll(req).then((raw) => {
        req.body = raw;
        mw(req, res);
      });
    });
    const r2 = await post(withBuffer, body, { "Redrive-Signature": sign("s3cret", body) });
    assert.equal(r2.status, 200);
  });

  it("a parsed-only body: refused with an explanation when signatures are required, used otherwise", async () => {
    const parsedOnly = (mw: Middleware) => (req: ParsedRequest, res: ServerResponse): void => {
      void readAll(req).then((raw) => {
        req.body = JSON.parse(raw.toString()) as unknown;
        mw(req, res);
      });
    };
    const original = console.error;
    console.error = () => undefined;
    try {
      const strict = await start(parsedOnly(agent.middleware({ secrets: "s3cret" })));
      const r = await post(strict, body, { "Redrive-Signature": sign("s3cret", body) });
      assert.equal(r.status, 500);
      const reply = JSON.parse(r.body) as Record<string, unknown>;
      assert.equal(reply.class, "unauthorized");
      assert.match(String(reply.error), /before any body parser|req\.rawBody/);
    } finally {
      console.error = original;
    }
    const open = await start(parsedOnly(agent.middleware()));
    const r = await post(open, body);
    assert.equal(r.status, 200);
    assert.deepEqual(lines(r.body).at(-1), { status: "ok", output: { a: 1 } });
  });

  it("reads the stream itself when a parser left only an empty object", async () => {
    const mw = agent.middleware({ secrets: "s3cret" });
    const url = await start((req, res) => {
      req.body = {};
      mw(req, res);
    });
    const r = await post(url, body, { "Redrive-Signature": sign("s3cret", body) });
    assert.equal(r.status, 200);
    assert.deepEqual(lines(r.body).at(-1), { status: "ok", output: { a: 1 } });
  });

  it("passes a non-POST request to next", async () => {
    const mw = agent.middleware();
    const url = await start((req, res) => {
      mw(req, res, () => {
        res.writeHead(204);
        res.end();
      });
    });
    const r = await post(url, "", {}, { method: "GET" });
    assert.equal(r.status, 204);
  });
});
