/** Test helpers: the shared conformance vectors, bounded waits, a real redis-server, HTTP reads. */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { request, type Agent as HttpAgent, type IncomingMessage } from "node:http";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's conformance/ directory (found by walking up from this file). */
export function conformanceDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, "conformance");
    if (existsSync(join(candidate, "tasks.json"))) return candidate;
    dir = dirname(dir);
  }
  throw new Error("conformance/ not found above the test directory");
}

/** The repository's root (the directory holding src/broker/scripts). */
export function repoRoot(): string {
  return dirname(conformanceDir());
}

/** A conformance file, parsed (the caller names the shape it reads). */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
export function vectors<T>(name: string): T {
  return JSON.parse(readFileSync(join(conformanceDir(), name), "utf8")) as T;
}

/** `p`, or a rejection naming `what` after `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`timed out after ${ms} ms: ${what}`));
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A promise with its resolve function outside. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A free TCP port on 127.0.0.1 (never 6379). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const addr = s.address();
        const p = typeof addr === "object" && addr !== null ? addr.port : 0;
        s.close(() => {
          resolve(p);
        });
      });
    });
    if (port !== 6379 && port !== 0) return port;
  }
}

/** A redis-server of our own on a free loopback port, without persistence. */
export interface RedisServer {
  port: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts a real redis-server (fails when it is not installed: tests never skip), on a free
 * port, or on `port` (a restart of a server stopped before).
 */
export async function startRedis(fixedPort?: number): Promise<RedisServer> {
  let lastError = "";
  for (let tries = 0; tries < 3; tries++) {
    const port = fixedPort ?? (await freePort());
    const child: ChildProcess = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let log = "";
    const ready = new Promise<boolean>((resolve, reject) => {
      child.once("error", (e) => {
        reject(new Error(`cannot start redis-server (is it installed?): ${e.message}`));
      });
      child.once("exit", () => {
        resolve(false);
      });
      child.stdout?.on("data", (d: Buffer) => {
        log += d.toString();
        if (log.includes("Ready to accept connections")) resolve(true);
      });
      child.stderr?.on("data", (d: Buffer) => {
        log += d.toString();
      });
    });
    if (await within(10_000, "redis-server to start", ready)) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => { resolve(); }));
      return {
        port,
        url: `redis://127.0.0.1:${port}`,
        stop: async () => {
          child.kill("SIGKILL");
          await within(5_000, "redis-server to exit", exited);
        },
      };
    }
    lastError = log;
  }
  throw new Error(`redis-server did not start: ${lastError.slice(-500)}`);
}

/** A finished HTTP exchange. */
export interface HttpReply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

/** POSTs `body` to `url` and reads the whole reply (bounded). */
export function post(
  url: string,
  body: string | Buffer,
  headers: Record<string, string> = {},
  options: { agent?: HttpAgent; method?: string } = {},
): Promise<HttpReply> {
  return within(
    10_000,
    `${options.method ?? "POST"} ${url}`,
    new Promise<HttpReply>((resolve, reject) => {
      const req = request(
        url,
        {
          method: options.method ?? "POST",
          headers: { "Content-Type": "application/json", ...headers },
          ...(options.agent ? { agent: options.agent } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.once("end", () => {
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
          });
          res.once("error", reject);
        },
      );
      req.once("error", reject);
      req.end(body);
    }),
  );
}

/** The JSON lines of an NDJSON body. */
export function lines(body: string): Record<string, unknown>[] {
  return body
    .split("\n")
    .filter((l) => l.trim().length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A request body (protocol 1) for `kind`, with overrides. */
export function requestBody(kind: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    protocol: 1,
    task_id: "t-1",
    tenant: "acme",
    kind,
    attempt: 1,
    max_attempts: 5,
    payload: { n: 1 },
    steps: [],
    history: [],
    deadline: null,
    trace_id: null,
    schema_version: null,
    prompt_version: null,
    enqueued_at: 1764500000000,
    first_enqueued_at: 1764500000000,
    replay_of: null,
    extra: {},
    ...over,
  };
}
