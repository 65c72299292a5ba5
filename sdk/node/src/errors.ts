import type { TaskRecord, TaskState } from "./records.js";

/**
 * Failure classes (PROTOCOL.md, "Failure classes") and the typed errors a handler throws to
 * choose how its attempt ends.
 */

/** Classes retried under the fleet's retry policy. */
export const TRANSIENT_CLASSES = [
  "rate_limited",
  "timeout",
  "upstream_unavailable",
  "llm_error",
  "agent_crashed",
  "unknown",
] as const;

/** Classes dead-lettered at once. */
export const PERMANENT_CLASSES = [
  "invalid_input",
  "context_overflow",
  "schema_mismatch",
  "unauthorized",
  "partial_execution",
  "malformed_entry",
  "crash_loop",
  "silent_failure",
  "expired",
  "no_handler",
] as const;

/** A transient failure class. */
export type TransientClass = (typeof TRANSIENT_CLASSES)[number];
/** A permanent failure class. */
export type PermanentClass = (typeof PERMANENT_CLASSES)[number];
/** Any failure class the fleet knows. */
export type FailureClass = TransientClass | PermanentClass;

/** Whether `cls` is a transient failure class. */
export function isTransientClass(cls: string): cls is TransientClass {
  return (TRANSIENT_CLASSES as readonly string[]).includes(cls);
}

/** Whether `cls` is a permanent failure class. */
export function isPermanentClass(cls: string): cls is PermanentClass {
  return (PERMANENT_CLASSES as readonly string[]).includes(cls);
}

/** A task the producer refuses: `field` names the offending field (`extra` for own fields). */
export class InvalidTaskError extends Error {
  /** The field that breaks the contract (CONTRACT.md), e.g. `tenant`, `payload`, `extra`. */
  readonly field: string;
  /** In a batch, the 0-based position of the refused task. */
  readonly index: number | undefined;

  /** A refusal of `field` with a message saying why. */
  constructor(field: string, message: string, index?: number) {
    super(index === undefined ? message : `task #${index}: ${message}`);
    this.name = "InvalidTaskError";
    this.field = field;
    this.index = index;
  }
}

/** Options of a {@link RetryError}. */
export interface RetryOptions {
  /** Wait at least this long before the next attempt (capped by the fleet's `retry.max_delay_ms`). */
  retryAfterMs?: number;
  /** The transient class reported; default `upstream_unavailable`. */
  cls?: TransientClass;
}

/**
 * Ends the attempt as a transient failure: the fleet retries it under its retry policy.
 * Thrown from a side-effecting step, it says the side effect did **not** happen (the SDK sends
 * `step_failed`, so the retry is not a `partial_execution`).
 */
export class RetryError extends Error {
  /** The transient class reported. */
  readonly cls: TransientClass;
  /** The requested delay before the next attempt, in ms, if any. */
  readonly retryAfterMs: number | undefined;

  /** A retryable failure; `cls` must be a transient class, `retryAfterMs` ≥ 0. */
  constructor(message: string, options: RetryOptions = {}) {
    super(message);
    this.name = "RetryError";
    const cls = options.cls ?? "upstream_unavailable";
    if (!isTransientClass(cls)) {
      throw new TypeError(
        `RetryError class '${String(cls)}' is not transient; use one of ${TRANSIENT_CLASSES.join(", ")} (or FailError for a permanent failure)`,
      );
    }
    this.cls = cls;
    const after = options.retryAfterMs;
    if (after !== undefined) {
      if (typeof after !== "number" || !Number.isFinite(after) || after < 0) {
        throw new RangeError(`retryAfterMs must be a finite number ≥ 0, not ${String(after)}`);
      }
      this.retryAfterMs = Math.ceil(after);
    } else {
      this.retryAfterMs = undefined;
    }
  }
}

/**
 * Ends the attempt as a permanent failure of class `cls`: the task is dead-lettered at once.
 * Thrown from a side-effecting step, it says the side effect did **not** happen (`step_failed`).
 */
export class FailError extends Error {
  /** The permanent class reported. */
  readonly cls: PermanentClass;

  /** A permanent failure; `cls` must be a permanent class. */
  constructor(cls: PermanentClass, message: string) {
    super(message);
    this.name = "FailError";
    if (!isPermanentClass(cls)) {
      throw new TypeError(
        `FailError class '${String(cls)}' is not permanent; use one of ${PERMANENT_CLASSES.join(", ")} (or RetryError for a transient failure)`,
      );
    }
    this.cls = cls;
  }
}

/**
 * Ends the attempt as `partial_execution`: part of the work may have acted on the world and a
 * person must look before the task runs again (recommended action: manual review). No
 * `step_failed` is sent for it: it says a side effect may have happened.
 */
export class PartialExecutionError extends Error {
  /** A partial execution explained by `message`. */
  constructor(message: string) {
    super(message);
    this.name = "PartialExecutionError";
  }
}

/**
 * A step over the protocol's limits (name, output size, step count, total output): refused by
 * the SDK before anything is sent. Uncaught, the attempt fails as `schema_mismatch`.
 */
export class StepRefusedError extends Error {
  /** The refused step's name. */
  readonly step: string;

  /** A refusal of step `step`. */
  constructor(step: string, message: string) {
    super(message);
    this.name = "StepRefusedError";
    this.step = step;
  }
}

/**
 * The attempt is over on the fleet's side (the HTTP client went away, or the pool's stdout is
 * gone): `ctx.step` refuses to start another step, since the fleet could no longer record it.
 */
export class AttemptClosedError extends Error {
  /** The attempt closed while `message` was being attempted. */
  constructor(message: string) {
    super(message);
    this.name = "AttemptClosedError";
  }
}

/**
 * `Producer.wait` saw the task finish without success: dead-lettered, expired (its deadline
 * passed), or its dead letter resolved or discarded by an operator. `record` says how (class,
 * error, dlq id).
 */
export class TaskFailedError extends Error {
  /** The finished record. */
  readonly record: TaskRecord;
  /** Its state. */
  readonly state: TaskState | undefined;

  /** A failure told by `record`. */
  constructor(record: TaskRecord) {
    const how = [
      record.class === undefined ? undefined : `class ${record.class}`,
      record.error === undefined || record.error === "" ? undefined : `error: ${record.error}`,
      record.dlq === undefined ? undefined : `dead letter ${record.dlq}`,
    ].filter((s) => s !== undefined);
    super(
      `task ${record.tenant}/${record.taskId} ended ${record.fields.state ?? "without a state"}${how.length > 0 ? ` (${how.join("; ")})` : ""}`,
    );
    this.name = "TaskFailedError";
    this.record = record;
    this.state = record.state;
  }
}

/**
 * `Producer.wait` reached its timeout before the task finished. `state` is the task's state
 * when the wait gave up; `"no record"` when it had none (not enqueued through the script,
 * records off, expired, or a Redis that lost its data); `"not read"` when Redis could not be
 * reached at all within the timeout.
 */
export class WaitTimeoutError extends Error {
  /** The last state read (a {@link TaskState} wire name), `"no record"` or `"not read"`. */
  readonly state: string;
  /** The last record read, if any. */
  readonly record: TaskRecord | null;
  /** The timeout waited, in ms. */
  readonly timeoutMs: number;

  /** A timeout after `timeoutMs` with `record` the last read (`read`: whether there was one). */
  constructor(tenant: string, taskId: string, timeoutMs: number, record: TaskRecord | null, read = true) {
    const state = !read ? "not read" : record === null ? "no record" : (record.fields.state ?? "no state");
    super(`task ${tenant}/${taskId} did not finish within ${timeoutMs} ms (state: ${state})`);
    this.name = "WaitTimeoutError";
    this.state = state;
    this.record = record;
    this.timeoutMs = timeoutMs;
  }
}
