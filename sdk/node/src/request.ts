/**
 * The request an agent receives for one attempt (PROTOCOL.md, "The request") and its parser.
 */

/** A completed step of an earlier attempt (a checkpoint), as the request carries it. */
export interface Step {
  /** The step's name (1–128 characters, no control characters), unique within the task. */
  name: string;
  /** What the step returned. */
  output: unknown;
  /** Whether the step acts on the world. */
  side_effect: boolean;
  /** The attempt that completed it. */
  attempt: number;
  /** When it completed, ms since the Unix epoch. */
  at_ms: number;
}

/** An earlier failed attempt. */
export interface AttemptRecord {
  /** The attempt's number. */
  attempt: number;
  /** Its failure class. */
  class: string;
  /** Its error text (bounded by the fleet). */
  error: string;
  /** When it ended, ms since the Unix epoch. */
  at_ms: number;
  /** How long it ran, ms. */
  duration_ms: number;
  /** The fleet member that ran it. */
  member: string;
}

/**
 * One attempt of a task, as the fleet sends it: every key of the protocol's request. Names are
 * the wire names. `P` is the payload's type (the SDK does not check it).
 */
export interface Task<P = unknown> {
  /** The protocol version (1). */
  protocol: number;
  /** The task's idempotency key, stable across retries and replays. */
  task_id: string;
  /** The tenant. */
  tenant: string;
  /** The kind (the handler was chosen by it). */
  kind: string;
  /** This attempt's number, from 1. */
  attempt: number;
  /** The attempt after which a transient failure is dead-lettered. */
  max_attempts: number;
  /** The producer's payload (parsed with the agent's JSON codec). */
  payload: P;
  /** Completed steps of earlier attempts, in completion order. */
  steps: Step[];
  /** Earlier failed attempts. */
  history: AttemptRecord[];
  /** Past it (ms since the Unix epoch) the task is not worth running. */
  deadline: number | null;
  /** The producer's correlation id. */
  trace_id: string | null;
  /** The payload's schema version. */
  schema_version: number | null;
  /** The prompt version. */
  prompt_version: string | null;
  /** When this attempt was enqueued, ms. */
  enqueued_at: number;
  /** When the first attempt was enqueued, ms. */
  first_enqueued_at: number;
  /** The dead-letter id this task was replayed from. */
  replay_of: string | null;
  /** The producer's own fields. */
  extra: Record<string, string>;
}

/** A request that does not have the protocol's shape (the transport answers 400 / `invalid_input`). */
export class RequestError extends Error {
  /** A malformed request, explained. */
  constructor(message: string) {
    super(message);
    this.name = "RequestError";
  }
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(o: Obj, key: string, where = "request"): string {
  const v = o[key];
  if (typeof v !== "string" || v.length === 0) {
    throw new RequestError(`${where}: '${key}' must be a non-empty string`);
  }
  return v;
}

function int(o: Obj, key: string, min: number, where = "request"): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new RequestError(`${where}: '${key}' must be an integer ≥ ${min}`);
  }
  return v;
}

function optInt(o: Obj, key: string, fallback: number | null, where = "request"): number | null {
  const v = o[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new RequestError(`${where}: '${key}' must be an integer ≥ 0 or null`);
  }
  return v;
}

function optStr(o: Obj, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") throw new RequestError(`request: '${key}' must be a string or null`);
  return v;
}

function list(o: Obj, key: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new RequestError(`request: '${key}' must be an array`);
  return v;
}

/**
 * Checks that `value` (a parsed request body) has the protocol's shape and returns it as a
 * {@link Task}. Keys the protocol marks as always present but that are missing are read as
 * their empty value (`null`, `[]`, `{}`), so a newer or older fleet still works; a key of the
 * wrong type is a {@link RequestError}.
 */
export function parseRequest<P = unknown>(value: unknown): Task<P> {
  if (!isObject(value)) throw new RequestError("the request is not a JSON object");
  const attempt = int(value, "attempt", 1);
  const steps = list(value, "steps").map((s, i): Step => {
    const where = `request: steps[${i}]`;
    if (!isObject(s)) throw new RequestError(`${where} is not an object`);
    if (s.side_effect !== undefined && typeof s.side_effect !== "boolean") {
      throw new RequestError(`${where}: 'side_effect' must be a boolean`);
    }
    return {
      name: str(s, "name", where),
      output: s.output === undefined ? null : s.output,
      side_effect: s.side_effect === true,
      attempt: optInt(s, "attempt", 0, where) ?? 0,
      at_ms: optInt(s, "at_ms", 0, where) ?? 0,
    };
  });
  const history = list(value, "history").map((h, i): AttemptRecord => {
    if (!isObject(h)) throw new RequestError(`request: history[${i}] is not an object`);
    return h as unknown as AttemptRecord;
  });
  const extraValue = value.extra ?? {};
  if (!isObject(extraValue) || !Object.values(extraValue).every((v) => typeof v === "string")) {
    throw new RequestError("request: 'extra' must be an object of strings");
  }
  const enqueuedAt = optInt(value, "enqueued_at", 0) ?? 0;
  const protocol = value.protocol === undefined ? 1 : int(value, "protocol", 1);
  return {
    protocol,
    task_id: str(value, "task_id"),
    tenant: str(value, "tenant"),
    kind: str(value, "kind"),
    attempt,
    max_attempts: optInt(value, "max_attempts", attempt) ?? attempt,
    payload: (value.payload === undefined ? null : value.payload) as P,
    steps,
    history,
    deadline: optInt(value, "deadline", null),
    trace_id: optStr(value, "trace_id"),
    schema_version: optInt(value, "schema_version", null),
    prompt_version: optStr(value, "prompt_version"),
    enqueued_at: enqueuedAt,
    first_enqueued_at: optInt(value, "first_enqueued_at", enqueuedAt) ?? enqueuedAt,
    replay_of: optStr(value, "replay_of"),
    extra: extraValue as Record<string, string>,
  };
}
