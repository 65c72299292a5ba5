/**
 * The stdio transport (PROTOCOL.md, "Stdio framing"; handler types `pool` and `exec`): request
 * lines `{"id": …, "task": {…}}` on stdin; events and final replies, each with the request's
 * `id`, as lines on stdout. Anything else written to stdout would break the protocol, so
 * `console.log` and stray `process.stdout.write` calls are sent to stderr.
 */

import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";

import type { Agent } from "./agent.js";
import { AttemptClosedError } from "./errors.js";
import { failLine } from "./reply.js";
import { RequestError, parseRequest } from "./request.js";

/** Options of {@link servePool}. */
export interface PoolOptions {
  /** Requests worked on at once (the fleet may send more; they wait); default 1. */
  concurrency?: number;
  /** Where requests come from; default `process.stdin`. */
  input?: Readable;
  /** Where lines go; default `process.stdout`. */
  output?: Writable;
  /**
   * Exit the process (code 0) once stdin has ended and every request in flight is answered;
   * default true when `output` is `process.stdout`.
   */
  exitOnEnd?: boolean;
}

type WriteFn = (chunk: string, cb: (err?: Error | null) => void) => boolean;

/**
 * Takes stdout for the protocol: returns the real writer and sends everything else written to
 * `process.stdout` (console.log, console.info, …, direct writes) to stderr.
 */
function claimStdout(): WriteFn {
  const stdout = process.stdout;
  const real = stdout.write.bind(stdout) as WriteFn;
  const toStderr = process.stderr.write.bind(process.stderr);
  stdout.write = toStderr;
  return real;
}

/**
 * Serves `agent` over stdio: reads request lines from `input` and runs up to `concurrency` of
 * them at once, answering in any order. Resolves when `input` ends and every request in flight
 * is answered (then, by default, exits the process).
 */
export async function servePool(agent: Agent, options: PoolOptions = {}): Promise<void> {
  const concurrency = options.concurrency ?? 1;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a positive integer, not ${String(concurrency)}`);
  }
  const input = options.input ?? process.stdin;
  const output = options.output ?? process.stdout;
  const isStdout = output === process.stdout;
  const exitOnEnd = options.exitOnEnd ?? isStdout;
  const write: WriteFn = isStdout ? claimStdout() : (chunk, cb) => output.write(chunk, cb);
  const closed = new AbortController();
  output.on("error", (e: Error) => {
    closed.abort(e);
  });
  output.once("close", () => {
    closed.abort(new Error("stdout closed"));
  });

  const writeLine = (text: string): Promise<void> =>
    new Promise((resolve, reject) => {
      if (closed.signal.aborted) {
        reject(new Error("stdout is closed"));
        return;
      }
      // One write per line: lines of concurrent requests never interleave.
      write(`${text}\n`, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });

  const handleLine = async (line: string): Promise<void> => {
    let framed: unknown;
    try {
      framed = agent.json.parse(line);
    } catch {
      console.error(`redrive: ignoring a stdin line that is not JSON: ${line.slice(0, 200)}`);
      return;
    }
    const obj = typeof framed === "object" && framed !== null && !Array.isArray(framed) ? (framed as Record<string, unknown>) : {};
    const id = obj.id;
    if (typeof id !== "string" && typeof id !== "number") {
      console.error(`redrive: ignoring a stdin line without a request id: ${line.slice(0, 200)}`);
      return;
    }
    const prefix = `{"id":${JSON.stringify(id)},`;
    const withId = (l: string): string => prefix + l.slice(1);
    // After its reply a request's id is finished for the fleet: a late event (a step still
    // running beside the one that failed) would be a line for an unknown id, a protocol break
    // that fails every attempt of this process. It is refused here instead.
    let answered = false;
    const emit = (l: string): Promise<void> =>
      answered ? Promise.reject(new AttemptClosedError("the attempt has already been answered")) : writeLine(withId(l));
    let reply: string;
    try {
      const task = parseRequest(obj.task);
      reply = await agent.run(task, emit, closed.signal);
    } catch (e) {
      if (!(e instanceof RequestError)) throw e;
      reply = failLine("invalid_input", e.message);
    }
    answered = true;
    await writeLine(withId(reply)).catch((e: unknown) => {
      console.error(`redrive: could not write the reply of request ${String(id)}:`, e);
    });
  };

  const inflight = new Set<Promise<void>>();
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim().length === 0) continue;
    while (inflight.size >= concurrency) await Promise.race(inflight);
    const p: Promise<void> = handleLine(line)
      .catch((e: unknown) => {
        console.error("redrive: a request failed in the stdio transport:", e);
      })
      .finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await Promise.all(inflight);
  if (exitOnEnd) process.exit(0);
}
