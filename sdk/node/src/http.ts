/**
 * The HTTP transport (PROTOCOL.md, `type = "http"`): one POST per attempt, answered with a
 * streamed `application/x-ndjson` reply (events as they happen, then the final line).
 * `serveHttp` runs a `node:http` server; `createMiddleware` (`agent.middleware()`) plugs the
 * same into an Express-style app.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

import type { Agent } from "./agent.js";
import { failLine } from "./reply.js";
import { RequestError, parseRequest, type Task } from "./request.js";
import { SIGNATURE_TOLERANCE_SECS, checkSignature } from "./signature.js";

/** Default largest request body accepted (16 MiB: payload, steps and history fit well below). */
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Options shared by {@link serveHttp} and {@link createMiddleware}. */
export interface HttpOptions {
  /**
   * The fleet's signing secret(s). When given, every request must carry a valid, fresh
   * `Redrive-Signature` (401 otherwise). Several allow rotation.
   */
  secrets?: string | readonly string[];
  /** Accepted clock distance for signatures, seconds; default 300. */
  toleranceSecs?: number;
  /** Largest request body accepted, bytes (413 over it); default 16 MiB. */
  maxBodyBytes?: number;
}

/** Options of {@link serveHttp}. */
export interface ServeHttpOptions extends HttpOptions {
  /** Address to listen on; default `127.0.0.1`. */
  host?: string;
  /** Port; default 8000 (0 picks a free one: read `server.address()`). */
  port?: number;
  /** The path the fleet POSTs to (the handler's `url`); default `/`. Others get 404. */
  path?: string;
  /**
   * How long an idle keep-alive connection is kept open, ms; default 120000, longer than the
   * fleet's connection pool keeps idle connections, so the server is not the side that closes
   * a connection the fleet is about to reuse.
   */
  keepAliveTimeoutMs?: number;
}

/** An Express-style handler: `(req, res, next?)`. */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void;

/** What a body parser may have left on the request. */
interface ParsedRequest extends IncomingMessage {
  rawBody?: unknown;
  body?: unknown;
}

function sendJson(res: ServerResponse, status: number, line: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = `${line}\n`;
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > max) {
      reject(new BodyTooLarge(`the request body is ${declared} bytes; the limit is ${max}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        req.off("data", onData);
        reject(new BodyTooLarge(`the request body is over ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => {
      resolve(Buffer.concat(chunks, size));
    });
    req.once("error", reject);
  });
}

/**
 * The body as the fleet sent it: `req.rawBody` or a Buffer/string `req.body` left by a body
 * parser, else read from the stream (when nothing consumed it), else a parsed object left in
 * `req.body`, else nothing.
 */
async function bodyOf(req: ParsedRequest, max: number): Promise<{ raw?: Buffer; parsed?: unknown }> {
  const pre = req.rawBody ?? req.body;
  if (Buffer.isBuffer(pre)) return { raw: pre };
  if (typeof pre === "string") return { raw: Buffer.from(pre, "utf8") };
  // The stream first: a parser that skipped the body (another content type) may still have
  // left an empty object in req.body.
  if (!req.readableEnded) return { raw: await readBody(req, max) };
  if (req.body !== undefined && req.body !== null && typeof req.body === "object") return { parsed: req.body };
  return {};
}

/**
 * An Express-style middleware running `agent` on the requests it is given (mount it on the
 * path the fleet POSTs to). It works on a plain `IncomingMessage`/`ServerResponse`: it reads
 * the raw body itself, or uses `req.rawBody` (or a Buffer/string `req.body`) when a body parser
 * ran first — signature verification needs the exact bytes. A non-POST request goes to `next`
 * (405 without one).
 */
export function createMiddleware(agent: Agent, options: HttpOptions = {}): Middleware {
  const secrets = normaliseSecrets(options.secrets);
  const max = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tolerance = options.toleranceSecs ?? SIGNATURE_TOLERANCE_SECS;
  return (req, res, next) => {
    if (req.method !== "POST") {
      if (next) {
        next();
        return;
      }
      sendJson(res, 405, failLine("invalid_input", `method ${req.method ?? "?"} not allowed; POST a task`), {
        Allow: "POST",
      });
      return;
    }
    handle(agent, req as ParsedRequest, res, secrets, max, tolerance).catch((e: unknown) => {
      console.error("redrive: the HTTP transport failed:", e);
      if (!res.headersSent) sendJson(res, 500, JSON.stringify({ status: "fail", error: "the agent's transport failed" }));
      else res.destroy();
    });
  };
}

function normaliseSecrets(secrets: string | readonly string[] | undefined): readonly string[] {
  const list = secrets === undefined ? [] : typeof secrets === "string" ? [secrets] : [...secrets];
  if (list.some((s) => typeof s !== "string" || s.length === 0)) {
    throw new TypeError("a signing secret must be a non-empty string");
  }
  return list;
}

async function handle(
  agent: Agent,
  req: ParsedRequest,
  res: ServerResponse,
  secrets: readonly string[],
  max: number,
  tolerance: number,
): Promise<void> {
  let body: { raw?: Buffer; parsed?: unknown };
  try {
    body = await bodyOf(req, max);
  } catch (e) {
    if (e instanceof BodyTooLarge) {
      sendJson(res, 413, failLine("invalid_input", e.message), { Connection: "close" });
      return;
    }
    throw e;
  }
  if (secrets.length > 0) {
    if (body.raw === undefined) {
      const why =
        "the request body was consumed before the redrive middleware, so its signature cannot be verified: " +
        "mount the middleware before any body parser, or keep the raw bytes in req.rawBody";
      console.error(`redrive: ${why}`);
      sendJson(res, 500, failLine("unauthorized", why));
      return;
    }
    const header = req.headers["redrive-signature"];
    const refused = checkSignature(secrets, Array.isArray(header) ? header[0] : header, body.raw, {
      toleranceSecs: tolerance,
    });
    if (refused !== null) {
      sendJson(res, 401, failLine("unauthorized", refused));
      return;
    }
  }
  let task: Task;
  try {
    if (body.raw !== undefined) task = agent.parseBody(body.raw);
    else if (body.parsed !== undefined) task = parseRequest(body.parsed);
    else throw new RequestError("the request has no body (was it consumed before the redrive middleware?)");
  } catch (e) {
    if (e instanceof RequestError) {
      sendJson(res, 400, failLine("invalid_input", e.message));
      return;
    }
    throw e;
  }
  await stream(agent, task, res);
}

/** Runs the attempt, writing its events and final line as NDJSON as they happen. */
async function stream(agent: Agent, task: Task, res: ServerResponse): Promise<void> {
  const aborter = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) aborter.abort(new Error("the client closed the connection"));
  });
  res.writeHead(200, {
    "Content-Type": "application/x-ndjson",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
  });
  res.flushHeaders();
  const emit = (line: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (aborter.signal.aborted || res.writableEnded || res.destroyed) {
        reject(new Error("the client closed the connection"));
        return;
      }
      const onAbort = (): void => {
        reject(new Error("the client closed the connection"));
      };
      aborter.signal.addEventListener("abort", onAbort, { once: true });
      res.write(`${line}\n`, (err) => {
        aborter.signal.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve();
      });
    });
  const final = await agent.run(task, emit, aborter.signal);
  if (!res.destroyed && !res.writableEnded) res.end(`${final}\n`);
}

/**
 * Serves `agent` over HTTP on a `node:http` server (keep-alive) at `host:port`, POSTs to
 * `path` only. Resolves with the listening server (call `server.close()` to stop).
 */
export function serveHttp(agent: Agent, options: ServeHttpOptions = {}): Promise<Server> {
  const path = options.path ?? "/";
  const middleware = createMiddleware(agent, options);
  const server = createServer((req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const pathname = q < 0 ? url : url.slice(0, q);
    if (pathname !== path) {
      sendJson(res, 404, failLine("invalid_input", `no redrive agent at ${pathname}; it listens on ${path}`));
      return;
    }
    middleware(req, res);
  });
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8000, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}
