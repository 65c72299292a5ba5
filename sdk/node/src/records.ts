/**
 * Task records (src/records.rs): one hash per task_id in its tenant's hash tag, written by the
 * fleet's scripts in the same atomic step that moves the task. This module names the states and
 * reads a record back into a typed {@link TaskRecord}.
 */

/** Every state a record can be in (the wire names of src/records.rs `TaskState`). */
export const TASK_STATES = [
  "queued",
  "running",
  "retry_scheduled",
  "deferred",
  "done",
  "dead_lettered",
  "replayed",
  "resolved",
  "discarded",
  "expired",
] as const;

/** Where a task is, as its record says. */
export type TaskState = (typeof TASK_STATES)[number];

/** The states a task does not leave by itself: what `Producer.wait` returns on. */
export const FINISHED_STATES: readonly TaskState[] = ["done", "dead_lettered", "resolved", "discarded", "expired"];

/** The finished states that are not a success (`wait` rejects with `TaskFailedError` on them). */
export const FAILED_STATES: readonly TaskState[] = ["dead_lettered", "resolved", "discarded", "expired"];

/** Whether `s` is a known state's wire name. */
export function isTaskState(s: unknown): s is TaskState {
  return typeof s === "string" && (TASK_STATES as readonly string[]).includes(s);
}

/** Whether a task in state `s` is finished (done, dead_lettered, resolved, discarded, expired). */
export function isFinished(s: TaskState | undefined): boolean {
  return s !== undefined && FINISHED_STATES.includes(s);
}

/** One start of the task (`r<N>:start|member|end|outcome`; the fleet keeps the last 16). */
export interface TaskRun {
  /** The start's number, 1 for the first start of the task (across retries and replays). */
  run: number;
  /** When it started (ms since the Unix epoch). */
  start?: number;
  /** The fleet member that ran it. */
  member?: string;
  /** When it ended (ms), absent while it runs (or when the member died). */
  end?: number;
  /** How it ended: `ok` or a failure class. */
  outcome?: string;
}

/** A task's record as read back. Fields the record does not hold are absent. */
export interface TaskRecord {
  /** The tenant. */
  tenant: string;
  /** The task id. */
  taskId: string;
  /** The state; absent when the record's `state` is not a known one (see `fields.state`). */
  state?: TaskState;
  /** Whether the state is a finished one. */
  finished: boolean;
  /** The task's kind. */
  kind?: string;
  /** The current attempt. */
  attempt?: number;
  /** The lane entry or schedule item the task is now. */
  entry?: string;
  /** When this life of the task was enqueued (ms; `enq`). */
  enqueuedAt?: number;
  /** When the task was first enqueued (ms; `first`). */
  firstEnqueuedAt?: number;
  /** The member that ran the last attempt. */
  member?: string;
  /** When the last attempt started (ms). */
  startedAt?: number;
  /** When the last attempt ended (ms). */
  endedAt?: number;
  /** When the record last changed (ms). */
  updatedAt?: number;
  /** The last failure's class. */
  class?: string;
  /** The last failure's error (at most 1 KiB). */
  error?: string;
  /** The dead-letter id while the task is dead. */
  dlq?: string;
  /** The dead-letter id this task was replayed from. */
  replayOf?: string;
  /** The lane entry its dead letter was replayed as (the same task_id). */
  replayedAs?: string;
  /** How many times its dead letters were replayed. */
  replays?: number;
  /** How many times the task started (the record's `runs` field). */
  starts?: number;
  /** The starts the record keeps, oldest first. */
  runs: TaskRun[];
  /**
   * The handler's output: the stored JSON parsed; the raw text when it was cut to the fleet's
   * bound (`outputTruncated`) or is not JSON. Absent when none was stored.
   */
  output?: unknown;
  /** Whether the stored output was cut to `tasks.max_output_bytes` (then `output` is raw text). */
  outputTruncated: boolean;
  /** Every field as stored. */
  fields: Record<string, string>;
}

const RUN_FIELD = /^r([1-9][0-9]*):(start|member|end|outcome)$/;

function int(v: string | undefined): number | undefined {
  if (v === undefined || !/^-?[0-9]+$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Reads a record hash (`HGETALL`) tolerantly: unknown fields stay in `fields`, a number that
 * does not parse is left out of its typed property.
 */
export function parseRecord(tenant: string, taskId: string, fields: Record<string, string>): TaskRecord {
  const f = (name: string): string | undefined => (Object.hasOwn(fields, name) ? fields[name] : undefined);
  const state = f("state");
  const rec: TaskRecord = {
    tenant,
    taskId,
    finished: false,
    runs: [],
    outputTruncated: f("output_truncated") === "1",
    fields: { ...fields },
  };
  if (isTaskState(state)) {
    rec.state = state;
    rec.finished = isFinished(state);
  }
  const strings: [keyof TaskRecord, string][] = [
    ["kind", "kind"],
    ["entry", "entry"],
    ["member", "member"],
    ["class", "class"],
    ["error", "error"],
    ["dlq", "dlq"],
    ["replayOf", "replay_of"],
    ["replayedAs", "replayed_as"],
  ];
  const target = rec as unknown as Record<string, unknown>;
  for (const [prop, name] of strings) {
    const v = f(name);
    if (v !== undefined) target[prop] = v;
  }
  const numbers: [keyof TaskRecord, string][] = [
    ["attempt", "attempt"],
    ["enqueuedAt", "enq"],
    ["firstEnqueuedAt", "first"],
    ["startedAt", "started"],
    ["endedAt", "ended"],
    ["updatedAt", "updated"],
    ["replays", "replays"],
    ["starts", "runs"],
  ];
  for (const [prop, name] of numbers) {
    const v = int(f(name));
    if (v !== undefined) target[prop] = v;
  }
  const runs = new Map<number, TaskRun>();
  for (const [name, value] of Object.entries(fields)) {
    const m = RUN_FIELD.exec(name);
    if (m === null) continue;
    const n = Number(m[1]);
    if (!Number.isSafeInteger(n)) continue;
    let run = runs.get(n);
    if (run === undefined) {
      run = { run: n };
      runs.set(n, run);
    }
    switch (m[2]) {
      case "start":
      case "end": {
        const t = int(value);
        if (t !== undefined) run[m[2]] = t;
        break;
      }
      case "member":
        run.member = value;
        break;
      default:
        run.outcome = value;
    }
  }
  rec.runs = [...runs.values()].sort((a, b) => a.run - b.run);
  const output = f("output");
  if (output !== undefined) {
    if (rec.outputTruncated) {
      rec.output = output;
    } else {
      try {
        rec.output = JSON.parse(output);
      } catch {
        rec.output = output;
      }
    }
  }
  // The properties in reading order (JSON output, logs): fields last.
  const order: (keyof TaskRecord)[] = [
    "tenant", "taskId", "state", "finished", "kind", "attempt", "entry", "enqueuedAt", "firstEnqueuedAt",
    "member", "startedAt", "endedAt", "updatedAt", "class", "error", "dlq", "replayOf", "replayedAs",
    "replays", "starts", "runs", "output", "outputTruncated", "fields",
  ];
  const ordered: Record<string, unknown> = {};
  for (const k of order) {
    if (Object.hasOwn(rec, k)) ordered[k] = rec[k];
  }
  return ordered as unknown as TaskRecord;
}

/**
 * A record as the command lines print it, the same shape in every language (`redrive task show
 * --json`, `python -m redrive task`, `redrive-sdk get`): snake_case keys, `null` for what the
 * record does not hold, `run_count` and the kept `runs`.
 */
export function recordToJson(r: TaskRecord): Record<string, unknown> {
  const v = <T>(x: T | undefined): T | null => (x === undefined ? null : x);
  return {
    tenant: r.tenant,
    task_id: r.taskId,
    state: v(r.state),
    finished: r.finished,
    kind: v(r.kind),
    attempt: v(r.attempt),
    entry: v(r.entry),
    enqueued_at: v(r.enqueuedAt),
    first_enqueued_at: v(r.firstEnqueuedAt),
    member: v(r.member),
    started_at: v(r.startedAt),
    ended_at: v(r.endedAt),
    updated_at: v(r.updatedAt),
    class: v(r.class),
    error: v(r.error),
    dlq: v(r.dlq),
    replay_of: v(r.replayOf),
    replayed_as: v(r.replayedAs),
    replays: v(r.replays),
    run_count: v(r.starts),
    runs: r.runs.map((x) => ({
      run: x.run,
      start: v(x.start),
      member: v(x.member),
      end: v(x.end),
      outcome: v(x.outcome),
    })),
    output: v(r.output),
    output_truncated: r.outputTruncated,
    fields: { ...r.fields },
  };
}
