/**
 * The task contract (CONTRACT.md) on the producer side: what a new task looks like, how it is
 * validated, and the lane entry fields it becomes — exactly as the Rust producer writes them.
 */

import { randomBytes } from "node:crypto";

import { InvalidTaskError } from "./errors.js";

/** Longest tenant name. */
export const MAX_TENANT_LEN = 64;
/** Longest kind. */
export const MAX_KIND_LEN = 64;
/** Longest task id. */
export const MAX_TASK_ID_LEN = 128;
/** Longest `prompt_version` or `trace_id`, in characters (Unicode code points). */
export const MAX_META_CHARS = 128;
/** Most own (extra) fields per task. */
export const MAX_EXTRA_FIELDS = 16;
/** Longest own field name, in bytes. */
export const MAX_EXTRA_NAME_LEN = 64;
/** Most bytes of own field names plus values per task (UTF-8). */
export const MAX_EXTRA_BYTES = 4096;
/** Default payload limit (`limits.max_payload_bytes`), in bytes of compact JSON. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 262144;
/** Largest `schema_version`: 2^32 − 1. */
export const MAX_SCHEMA_VERSION = 4294967295;

/**
 * Every field name with a meaning to redrive: the contract's and the reserved ones. An own
 * (extra) field must use another name.
 */
export const KNOWN_FIELDS: readonly string[] = [
  "task_id",
  "tenant",
  "kind",
  "payload",
  "attempt",
  "enqueued_at",
  "schema_version",
  "prompt_version",
  "trace_id",
  "deadline",
  "first_enqueued_at",
  "steps",
  "history",
  "replay_of",
  "replayed_by",
  "extra_dropped",
  "from_entry",
  "extra",
  "unreadable_retry",
];

/** What a producer submits (the `redrive enqueue --file` line shape). */
export interface NewTask {
  /** The tenant: 1–64 of `A-Z a-z 0-9 _ - .`. */
  tenant: string;
  /** The agent or workflow name: 1–64 of `A-Z a-z 0-9 _ - . : /`. */
  kind: string;
  /**
   * The input: any JSON value (`null` included), written as compact JSON. Numbers are JS
   * numbers: an integer past 2^53 has already lost precision before it gets here (encode such
   * values as strings, or as you need them).
   */
  payload: unknown;
  /** Idempotency key: 1–128 of `A-Z a-z 0-9 _ - . : / @ + =`; 32 hex digits generated when absent. */
  task_id?: string | null;
  /** Payload schema version: an integer 0 … 2^32 − 1. */
  schema_version?: number | null;
  /** The prompt the agent should use: 0–128 characters, no control characters. */
  prompt_version?: string | null;
  /** Correlation id: 0–128 characters, no control characters. */
  trace_id?: string | null;
  /** Past this time (ms since the Unix epoch, a safe integer ≥ 0) the task is not worth running. */
  deadline?: number | null;
  /** The producer's own fields (at most 16, 4096 bytes of names plus values), carried flat. */
  extra?: Record<string, string> | null;
}

const PRODUCER_KEYS = new Set([
  "tenant",
  "kind",
  "payload",
  "task_id",
  "schema_version",
  "prompt_version",
  "trace_id",
  "deadline",
  "extra",
]);

/** A validated task, ready to be written: its id, tenant and lane fields in order. */
export interface PreparedTask {
  /** The task id (given or generated). */
  taskId: string;
  /** The tenant (selects the lane). */
  tenant: string;
  /** The kind (the record's `kind`). */
  kind: string;
  /** The lane entry's field/value pairs, in the Rust producer's order. */
  fields: [string, string][];
}

const NAME_BASE = "A-Za-z0-9_\\-";
const TENANT_RE = new RegExp(`^[${NAME_BASE}.]+$`);
const KIND_RE = new RegExp(`^[${NAME_BASE}.:/]+$`);
const TASK_ID_RE = new RegExp(`^[${NAME_BASE}.:/@+=]+$`);
// Unicode general category Cc (what Rust's char::is_control means).
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
// A lone surrogate: a JS string that is not Unicode text (cannot be written as UTF-8).
const LONE_SURROGATE_RE = /\p{Cs}/u;

/** Whether `s` is well-formed Unicode text (no lone surrogates), i.e. encodable as UTF-8. */
export function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE_RE.test(s);
}

/** The number of characters (Unicode code points) in `s`. */
export function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Whether `s` contains a control character (Unicode category Cc). */
export function hasControl(s: string): boolean {
  return CONTROL_RE.test(s);
}

function checkName(field: string, value: unknown, max: number, re: RegExp, allowed: string): string {
  if (typeof value !== "string") {
    throw new InvalidTaskError(field, `${field} must be a string, not ${typeName(value)}`);
  }
  if (value.length === 0) throw new InvalidTaskError(field, `${field} must not be empty`);
  if (value.length > max) {
    throw new InvalidTaskError(
      field,
      `${field} '${value.slice(0, 16)}…' is ${Buffer.byteLength(value)} bytes long; the limit is ${max}`,
    );
  }
  if (!re.test(value)) {
    const bad = [...value].find((c) => !re.test(c)) ?? "?";
    throw new InvalidTaskError(
      field,
      `${field} '${value}' contains ${JSON.stringify(bad)}; allowed are ASCII letters, digits, '_', '-'${allowed}`,
    );
  }
  return value;
}

/** Checks a tenant name (1–64 of `A-Z a-z 0-9 _ - .`); throws {@link InvalidTaskError}. */
export function validateTenant(tenant: unknown): string {
  return checkName("tenant", tenant, MAX_TENANT_LEN, TENANT_RE, ", '.'");
}

/** Checks a kind (1–64 of `A-Z a-z 0-9 _ - . : /`); throws {@link InvalidTaskError}. */
export function validateKind(kind: unknown): string {
  return checkName("kind", kind, MAX_KIND_LEN, KIND_RE, ", '.', ':', '/'");
}

/** Checks a task id (1–128 of `A-Z a-z 0-9 _ - . : / @ + =`); throws {@link InvalidTaskError}. */
export function validateTaskId(taskId: unknown): string {
  return checkName("task_id", taskId, MAX_TASK_ID_LEN, TASK_ID_RE, ", '.', ':', '/', '@', '+', '='");
}

function validateMeta(field: string, value: unknown): string {
  if (typeof value !== "string") {
    throw new InvalidTaskError(field, `${field} must be a string, not ${typeName(value)}`);
  }
  if (!isWellFormed(value)) {
    throw new InvalidTaskError(field, `${field} is not Unicode text (a lone surrogate)`);
  }
  if (value.length > MAX_META_CHARS) {
    const chars = charCount(value);
    if (chars > MAX_META_CHARS) {
      throw new InvalidTaskError(field, `${field} is ${chars} characters; the limit is ${MAX_META_CHARS}`);
    }
  }
  if (hasControl(value)) throw new InvalidTaskError(field, `${field} contains a control character`);
  return value;
}

function validateInteger(field: string, value: unknown, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InvalidTaskError(field, `${field} must be an integer, not ${describe(value)}`);
  }
  if (value < 0) throw new InvalidTaskError(field, `${field} must not be negative: ${value}`);
  if (!Number.isSafeInteger(value) || value > max) {
    throw new InvalidTaskError(field, `${field} is out of range: ${value} (0 to ${max})`);
  }
  return value;
}

/**
 * Checks a producer's own fields: names 1–64 of `A-Z a-z 0-9 _ - . : /` and not a known field,
 * values Unicode text, at most 16 of them and 4096 bytes of names plus values. Returns them
 * ordered by name (as the Rust producer writes them).
 */
export function validateExtra(extra: unknown): [string, string][] {
  if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
    throw new InvalidTaskError("extra", `extra must be an object of strings, not ${typeName(extra)}`);
  }
  const entries = Object.entries(extra as Record<string, unknown>).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0,
  );
  let bytes = 0;
  const out: [string, string][] = [];
  for (const [name, value] of entries) {
    checkName("extra", name, MAX_EXTRA_NAME_LEN, KIND_RE, ", '.', ':', '/'");
    if (KNOWN_FIELDS.includes(name)) {
      throw new InvalidTaskError(
        "extra",
        `extra field name '${name}' is reserved: it is a contract field or written by redrive`,
      );
    }
    if (typeof value !== "string") {
      throw new InvalidTaskError("extra", `extra field '${name}' must be a string, not ${typeName(value)}`);
    }
    if (!isWellFormed(value)) {
      throw new InvalidTaskError("extra", `extra field '${name}' is not Unicode text (a lone surrogate)`);
    }
    bytes += Buffer.byteLength(name) + Buffer.byteLength(value);
    out.push([name, value]);
  }
  if (out.length > MAX_EXTRA_FIELDS) {
    throw new InvalidTaskError("extra", `${out.length} extra fields; the limit is ${MAX_EXTRA_FIELDS}`);
  }
  if (bytes > MAX_EXTRA_BYTES) {
    throw new InvalidTaskError(
      "extra",
      `extra fields are ${bytes} bytes (names and values); the limit is ${MAX_EXTRA_BYTES}`,
    );
  }
  return out;
}

/**
 * The payload's compact JSON. Refuses what JSON cannot carry exactly or what the fleet could
 * not read: `undefined`, a BigInt, a non-finite number, a string that is not Unicode text.
 */
export function encodePayload(payload: unknown, maxPayloadBytes: number): string {
  // JSON.stringify returns undefined for a value without a JSON form (undefined, a function).
  let text: unknown;
  try {
    text = JSON.stringify(payload, function (this: unknown, key: string, value: unknown) {
      if (!isWellFormed(key)) throw new PayloadProblem(`a key is not Unicode text (a lone surrogate)`);
      switch (typeof value) {
        case "number":
          if (!Number.isFinite(value)) throw new PayloadProblem(`it contains ${String(value)}, which JSON cannot carry`);
          break;
        case "bigint":
          throw new PayloadProblem("it contains a BigInt; encode big integers yourself (as strings, say)");
        case "string":
          if (!isWellFormed(value)) throw new PayloadProblem("a string in it is not Unicode text (a lone surrogate)");
          break;
        default:
          break;
      }
      return value;
    });
  } catch (e) {
    const why = e instanceof PayloadProblem ? e.message : e instanceof Error ? e.message : String(e);
    throw new InvalidTaskError("payload", `payload cannot be encoded: ${why}`);
  }
  if (typeof text !== "string") {
    throw new InvalidTaskError("payload", `payload is ${typeName(payload)}, not a JSON value`);
  }
  const size = Buffer.byteLength(text);
  if (size > maxPayloadBytes) {
    throw new InvalidTaskError(
      "payload",
      `payload is ${size} bytes; the limit is ${maxPayloadBytes} (limits.max_payload_bytes)`,
    );
  }
  return text;
}

class PayloadProblem extends Error {}

/** A new 128-bit random task id, as 32 lowercase hex digits. */
export function generateTaskId(): string {
  return randomBytes(16).toString("hex");
}

/**
 * Validates `task` (CONTRACT.md, conformance/tasks.json) and builds its lane entry as the Rust
 * producer does (`Task::to_fields` of a fresh task): `task_id, tenant, kind, payload,
 * attempt=1, enqueued_at`, then `schema_version, prompt_version, trace_id, deadline` when set,
 * then the own fields ordered by name. Throws {@link InvalidTaskError} naming the field.
 */
export function prepareTask(
  task: unknown,
  nowMs: number,
  maxPayloadBytes: number = DEFAULT_MAX_PAYLOAD_BYTES,
): PreparedTask {
  if (typeof task !== "object" || task === null || Array.isArray(task)) {
    throw new InvalidTaskError("task", `a task must be an object, not ${typeName(task)}`);
  }
  const t = task as Record<string, unknown>;
  for (const key of Object.keys(t)) {
    if (!PRODUCER_KEYS.has(key)) {
      throw new InvalidTaskError(
        key,
        `unknown field '${key}'; a task has ${[...PRODUCER_KEYS].join(", ")} (own fields go in 'extra')`,
      );
    }
  }
  const tenant = validateTenant(t.tenant);
  const kind = validateKind(t.kind);
  const taskId = t.task_id === undefined || t.task_id === null ? generateTaskId() : validateTaskId(t.task_id);
  if (!("payload" in t) || t.payload === undefined) {
    throw new InvalidTaskError("payload", "missing field 'payload' (null is a valid payload)");
  }
  const payload = encodePayload(t.payload, maxPayloadBytes);
  const opt = (k: string): unknown => (t[k] === null ? undefined : t[k]);
  const schemaVersion =
    opt("schema_version") === undefined ? undefined : validateInteger("schema_version", t.schema_version, MAX_SCHEMA_VERSION);
  const promptVersion = opt("prompt_version") === undefined ? undefined : validateMeta("prompt_version", t.prompt_version);
  const traceId = opt("trace_id") === undefined ? undefined : validateMeta("trace_id", t.trace_id);
  const deadline =
    opt("deadline") === undefined ? undefined : validateInteger("deadline", t.deadline, Number.MAX_SAFE_INTEGER);
  const extra = opt("extra") === undefined ? [] : validateExtra(t.extra);
  const fields: [string, string][] = [
    ["task_id", taskId],
    ["tenant", tenant],
    ["kind", kind],
    ["payload", payload],
    ["attempt", "1"],
    ["enqueued_at", String(nowMs)],
  ];
  if (schemaVersion !== undefined) fields.push(["schema_version", String(schemaVersion)]);
  if (promptVersion !== undefined) fields.push(["prompt_version", promptVersion]);
  if (traceId !== undefined) fields.push(["trace_id", traceId]);
  if (deadline !== undefined) fields.push(["deadline", String(deadline)]);
  fields.push(...extra);
  return { taskId, tenant, kind, fields };
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : typeof v;
}

function describe(v: unknown): string {
  return typeof v === "number" ? String(v) : typeName(v);
}
