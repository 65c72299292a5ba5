/**
 * The agent side: handlers registered per kind, the step checkpoints of PROTOCOL.md ("Steps
 * and checkpoints") and the reply every handler result or error stands for. Transports
 * (`serveHttp`, `agent.middleware`, `servePool`) feed requests in and write the lines out.
 */

import {
  AttemptClosedError,
  FailError,
  PartialExecutionError,
  RetryError,
  StepRefusedError,
} from "./errors.js";
import { createMiddleware, type HttpOptions, type Middleware } from "./http.js";
import { bound, failLine } from "./reply.js";
import { RequestError, parseRequest, type Task } from "./request.js";
import { charCount, hasControl } from "./task.js";

/** Longest step name, in characters. */
export const MAX_STEP_NAME_CHARS = 128;
/** Largest output of one step, in bytes of its JSON. */
export const MAX_STEP_OUTPUT_BYTES = 64 * 1024;

/**
 * Whether JSON text from `JSON.stringify` holds a lone surrogate: it writes one as a `\uD800`
 * style escape (a pair is written as the character itself), which the fleet's JSON parser
 * refuses. An escaped backslash before `u` is text, not an escape.
 */
export function hasLoneSurrogate(json: string): boolean {
  return /(?:^|[^\\])(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/.test(json);
}

/** Most steps per task (earlier attempts' included). */
export const MAX_STEPS = 64;
/** Largest sum of a task's step outputs, in bytes of JSON. */
export const MAX_STEPS_OUTPUT_BYTES = 512 * 1024;
/** The fleet's default reply limit (`max_reply_bytes`): one JSON reply or NDJSON line. */
export const DEFAULT_MAX_REPLY_BYTES = 1024 * 1024;

/** How JSON is read and written: swap in a codec that keeps big integers exact if you need one. */
export interface JsonCodec {
  /** Parses JSON text (the request body; step outputs are parsed back with it). */
  parse(text: string): unknown;
  /** Writes a value as compact JSON text; `undefined` when it has no JSON form. */
  stringify(value: unknown): string | undefined;
}

/** Options of a step. */
export interface StepOptions {
  /**
   * The step acts on the world (sends, charges, writes). Its start is recorded before it runs:
   * an attempt that ends while it is started and neither done nor failed becomes
   * `partial_execution` (manual review), never retried blindly.
   */
  sideEffect?: boolean;
}

/** What a handler gets besides its task. */
export interface Context {
  /** The attempt's task (the same object the handler gets). */
  readonly task: Task;
  /** Aborted when the fleet's side of the attempt is gone (client disconnect, stdout closed). */
  readonly signal: AbortSignal;
  /**
   * Runs `fn` as the checkpointed step `name`, or returns the stored output when an earlier
   * attempt (or this one) completed a step of that name. The output is returned as its JSON
   * round trip, so a first run and a memoised one see the same value. Throws
   * {@link StepRefusedError} for a step over the limits (nothing sent), and
   * {@link AttemptClosedError} when the attempt's transport is gone.
   */
  step<T>(name: string, fn: () => T | Promise<T>, options?: StepOptions): Promise<T>;
  /**
   * Reports progress (any JSON fields except `event`, `status` and `id`); the latest report is
   * the attempt's partial output in a dead letter. Best effort: a report that cannot be sent
   * is dropped; it rejects only for fields that cannot be a report (TypeError) or a report over
   * the reply limit (RangeError).
   */
  progress(fields: Record<string, unknown>): Promise<void>;
}

/** A handler: returns the attempt's output (ok) or throws (see the README's error table). */
export type Handler<P = unknown> = (task: Task<P>, ctx: Context) => unknown;

/**
 * Writes one line (a JSON object's text, no newline) to the fleet. Resolves once it is handed
 * to the transport; rejects when the transport is gone.
 */
export type Emit = (line: string) => Promise<void>;

/** Options of an {@link Agent}. */
export interface AgentOptions {
  /** How JSON is read and written (default `JSON`). */
  json?: JsonCodec;
  /** The reply limit to respect (the fleet's `max_reply_bytes`), default 1 MiB. */
  maxReplyBytes?: number;
  /**
   * Called with an unexpected error a handler threw (not one of the SDK's typed errors);
   * default: logged to stderr with its stack. The reply carries `<name>: <message>` only.
   */
  onError?: (error: unknown, task: Task) => void;
}

interface Route {
  patterns: string[];
  test: (kind: string) => boolean;
  handler: Handler<never>;
}

/** Whether `kind` matches `pattern`: an exact name, or a glob (`*` any run, `?` one character). */
export function kindMatches(pattern: string, kind: string): boolean {
  return compileGlob(pattern)(kind);
}

function compileGlob(pattern: string): (kind: string) => boolean {
  if (!pattern.includes("*") && !pattern.includes("?")) return (kind) => kind === pattern;
  const source = [...pattern]
    .map((c) => (c === "*" ? "[\\s\\S]*" : c === "?" ? "[\\s\\S]" : c.replace(/[\\^$.|+()[\]{}/]/g, "\\$&")))
    .join("");
  const re = new RegExp(`^${source}$`, "u");
  return (kind) => re.test(kind);
}

/** Checks a step name against the protocol: 1–128 characters, no control characters. */
export function validateStepName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new StepRefusedError(String(name), "a step name must be a non-empty string");
  }
  if (name.length > MAX_STEP_NAME_CHARS && charCount(name) > MAX_STEP_NAME_CHARS) {
    throw new StepRefusedError(
      name,
      `step name '${[...name].slice(0, 32).join("")}…' is longer than ${MAX_STEP_NAME_CHARS} characters`,
    );
  }
  if (hasControl(name)) {
    throw new StepRefusedError(name, `step name ${JSON.stringify(name)} contains a control character`);
  }
  return name;
}

const DEFAULT_CODEC: JsonCodec = {
  parse: (text) => JSON.parse(text) as unknown,
  stringify: (value) => JSON.stringify(value),
};

/** Registers handlers per kind and runs attempts. */
export class Agent {
  /** The JSON codec in use. */
  readonly json: JsonCodec;
  /** The reply limit respected. */
  readonly maxReplyBytes: number;
  private readonly routes: Route[] = [];
  private readonly onError: (error: unknown, task: Task) => void;

  /** An agent without handlers. */
  constructor(options: AgentOptions = {}) {
    this.json = options.json ?? DEFAULT_CODEC;
    this.maxReplyBytes = options.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
    this.onError =
      options.onError ??
      ((error, task) => {
        console.error(`redrive: task ${task.task_id} (kind ${task.kind}, attempt ${task.attempt}) failed:`, error);
      });
  }

  /**
   * Registers `handler` for `kinds`: exact names and globs (`*` any run of characters, `?` one
   * character). The first registration whose kinds match a task's kind runs it.
   */
  handle<P = unknown>(kinds: string | readonly string[], handler: Handler<P>): this {
    const patterns = typeof kinds === "string" ? [kinds] : [...kinds];
    if (patterns.length === 0) throw new TypeError("handle() needs at least one kind");
    for (const p of patterns) {
      if (typeof p !== "string" || p.length === 0) throw new TypeError("a kind pattern must be a non-empty string");
    }
    if (typeof handler !== "function") throw new TypeError("handle() needs a handler function");
    const tests = patterns.map(compileGlob);
    this.routes.push({ patterns, test: (kind) => tests.some((t) => t(kind)), handler: handler });
    return this;
  }

  /** The handler that would run `kind` (the first match), if any. */
  route(kind: string): Handler | undefined {
    return this.routes.find((r) => r.test(kind))?.handler as Handler | undefined;
  }

  /**
   * An Express-style middleware serving this agent (see {@link createMiddleware}): mount it on
   * the path the fleet POSTs to, before any body parser (or keep the raw body in `req.rawBody`).
   */
  middleware(options: HttpOptions = {}): Middleware {
    return createMiddleware(this, options);
  }

  /** Parses a request body (raw bytes or text) into a {@link Task}; throws {@link RequestError}. */
  parseBody(body: Buffer | string): Task {
    let value: unknown;
    try {
      value = this.json.parse(typeof body === "string" ? body : body.toString("utf8"));
    } catch (e) {
      throw new RequestError(`the request body is not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    return parseRequest(value);
  }

  /**
   * Runs one attempt: routes `task` by kind, runs the handler with a {@link Context} whose
   * events go to `emit`, and returns the final reply line (JSON text, no newline). Never
   * rejects: every outcome is a reply.
   */
  async run(task: Task, emit: Emit, signal: AbortSignal = new AbortController().signal): Promise<string> {
    const route = this.routes.find((r) => r.test(task.kind));
    if (route === undefined) {
      return failLine("no_handler", `no handler for kind '${task.kind}' in this agent`);
    }
    const ctx = new TaskContext(task, emit, signal, this.json, this.maxReplyBytes);
    let result: unknown;
    try {
      result = await (route.handler as Handler)(task, ctx);
    } catch (e) {
      return this.errorLine(e, task);
    }
    let output: string | undefined;
    try {
      output = result === undefined ? "null" : this.json.stringify(result);
    } catch (e) {
      return this.errorLine(e, task);
    }
    if (output === undefined) {
      return failLine("schema_mismatch", `the handler returned ${typeof result}, which has no JSON form`);
    }
    if (hasLoneSurrogate(output)) {
      return failLine("schema_mismatch", "the handler's output is not valid Unicode text (a lone surrogate)");
    }
    const line = `{"status":"ok","output":${output}}`;
    const size = Buffer.byteLength(line);
    if (size > this.maxReplyBytes) {
      return failLine(
        "schema_mismatch",
        `the handler's output is ${size} bytes of JSON; the reply limit is ${this.maxReplyBytes} (max_reply_bytes)`,
      );
    }
    return line;
  }

  private errorLine(e: unknown, task: Task): string {
    if (e instanceof RetryError) return failLine(e.cls, e.message, e.retryAfterMs);
    if (e instanceof FailError) return failLine(e.cls, e.message);
    if (e instanceof PartialExecutionError) return failLine("partial_execution", e.message);
    if (e instanceof StepRefusedError) return failLine("schema_mismatch", `a step was refused: ${e.message}`);
    try {
      this.onError(e, task);
    } catch (hookError) {
      console.error("redrive: the onError hook threw:", hookError);
    }
    const text = e instanceof Error ? `${e.name}: ${e.message}` : `thrown: ${safeString(e)}`;
    return JSON.stringify({ status: "fail", error: bound(text) });
  }
}

function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    return typeof v;
  }
}

class TaskContext implements Context {
  readonly task: Task;
  readonly signal: AbortSignal;
  private readonly emit: Emit;
  private readonly json: JsonCodec;
  /** Completed steps (earlier attempts' and this one's): name → output JSON text. */
  private readonly completed = new Map<string, string>();
  private outputBytes = 0;
  private readonly maxLineBytes: number;

  constructor(task: Task, emit: Emit, signal: AbortSignal, json: JsonCodec, maxLineBytes: number) {
    this.task = task;
    this.maxLineBytes = maxLineBytes;
    this.emit = emit;
    this.signal = signal;
    this.json = json;
    for (const s of task.steps) {
      const text = json.stringify(s.output) ?? "null";
      if (!this.completed.has(s.name)) this.outputBytes += Buffer.byteLength(text);
      this.completed.set(s.name, text);
    }
  }

  async step<T>(name: string, fn: () => T | Promise<T>, options: StepOptions = {}): Promise<T> {
    validateStepName(name);
    const stored = this.completed.get(name);
    if (stored !== undefined) return this.json.parse(stored) as T;
    if (this.completed.size + 1 > MAX_STEPS) {
      throw new StepRefusedError(name, `step '${name}' would be step ${this.completed.size + 1} of the task; the limit is ${MAX_STEPS}`);
    }
    const sideEffect = options.sideEffect === true;
    const quoted = JSON.stringify(name);
    await this.send(`{"event":"step_started","name":${quoted},"side_effect":${sideEffect}}`, name);
    let value: T;
    try {
      value = await fn();
    } catch (e) {
      if (e instanceof RetryError || e instanceof FailError) {
        // The typed error says the step ended without its side effect.
        await this.emit(JSON.stringify({ event: "step_failed", name, error: bound(`${e.name}: ${e.message}`) })).catch(
          () => undefined,
        );
      }
      throw e;
    }
    let text: string | undefined;
    try {
      text = value === undefined ? "null" : this.json.stringify(value);
    } catch (e) {
      throw new StepRefusedError(name, `step '${name}' output cannot be written as JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (text === undefined) {
      throw new StepRefusedError(name, `step '${name}' returned ${typeof value}, which has no JSON form`);
    }
    if (hasLoneSurrogate(text)) {
      throw new StepRefusedError(name, `step '${name}' output is not valid Unicode text (a lone surrogate)`);
    }
    const size = Buffer.byteLength(text);
    if (size > MAX_STEP_OUTPUT_BYTES) {
      throw new StepRefusedError(name, `step '${name}' output is ${size} bytes of JSON; the limit is ${MAX_STEP_OUTPUT_BYTES}`);
    }
    if (this.outputBytes + size > MAX_STEPS_OUTPUT_BYTES) {
      throw new StepRefusedError(
        name,
        `step '${name}' would bring the task's step outputs to ${this.outputBytes + size} bytes; the limit is ${MAX_STEPS_OUTPUT_BYTES}`,
      );
    }
    await this.send(`{"event":"step_done","name":${quoted},"output":${text}}`, name);
    this.completed.set(name, text);
    this.outputBytes += size;
    return this.json.parse(text) as T;
  }

  async progress(fields: Record<string, unknown>): Promise<void> {
    for (const k of ["event", "status", "id"]) {
      if (Object.hasOwn(fields, k)) throw new TypeError(`a progress report cannot carry '${k}'`);
    }
    const body = this.json.stringify(fields);
    if (body === undefined || !body.startsWith("{")) throw new TypeError("progress fields must be a JSON object");
    if (hasLoneSurrogate(body)) throw new TypeError("progress fields are not valid Unicode text (a lone surrogate)");
    const line = body === "{}" ? `{"event":"progress"}` : `{"event":"progress",${body.slice(1)}`;
    const size = Buffer.byteLength(line);
    if (size > this.maxLineBytes) {
      throw new RangeError(`a progress report of ${size} bytes is over the reply limit of ${this.maxLineBytes} bytes`);
    }
    await this.emit(line).catch(() => undefined);
  }

  private async send(line: string, name: string): Promise<void> {
    if (this.signal.aborted) {
      throw new AttemptClosedError(`the attempt is over on the fleet's side; step '${name}' was not recorded`);
    }
    try {
      await this.emit(line);
    } catch (e) {
      throw new AttemptClosedError(
        `the attempt's transport is gone (${e instanceof Error ? e.message : String(e)}); step '${name}' was not recorded`,
      );
    }
  }
}
