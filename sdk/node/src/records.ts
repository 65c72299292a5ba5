/**
 * Task records (src/records.rs): one hash per task_id in its tenant's hash tag, written by the
 * fleet's scripts in the same atomic step that moves the task. This module names the states and
 * reads a record back into a typed {@link TaskRecord}.
 *
 * A task enqueued with its record (everything this SDK enqueues) starts, and mostly finishes,
 * without a record write: its record keeps saying `queued` (or `replayed`) with `entry` = its
 * lane entry. The readers (`Producer.getTask`, `Producer.wait`) read records through the fleet's
 * task_read.lua, which shows such a record as the entry's place tells: `running` on the consumer
 * holding it while it is pending in the fleet's consumer group, `done` (from the tenant's done
 * log) once it has left the lane. {@link waitingEntry} and {@link runningOn} are the pending
 * half of that for a record read otherwise (a raw HGETALL).
 *
 * Runs: the record's history (`runs`, `r<N>:start|member|end|outcome`, the last 16 kept) holds
 * only the runs that did not end the task well — failed runs (outcome the class) and runs whose
 * member died (outcome, and possibly start and member, `''`: unknown). A done task's last run is
 * its `member`, `started` and `ended` (outcome `ok`); a running task's current one its `member`
 * and `started`. See lib/record.lua and src/app/view.rs `runs_of`.
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

/**
 * One run of the task: one of the history's (`r<N>:start|member|end|outcome`: a run that failed,
 * or whose member died; the fleet keeps the last 16), or the last run of a done or running task
 * (the record's `member`, `started`, `ended`).
 */
export interface TaskRun {
  /** The run's number, 1 for the first run of the task (across retries and replays). */
  run: number;
  /** When it started (ms since the Unix epoch); absent when unknown. */
  start?: number;
  /** The fleet member that ran it; absent when unknown (a run whose member died unseen). */
  member?: string;
  /** When it ended (ms), absent while it runs (or when its member died). */
  end?: number;
  /** How it ended: `ok` (a done task's last run) or a failure class; absent while it runs or when its member died. */
  outcome?: string;
}

/** How many runs of its history a record keeps (lib/record.lua `REC_RUNS_KEPT`). */
export const RUNS_KEPT = 16;

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
  /** The member that runs (running) or ran the last attempt. */
  member?: string;
  /** When the last attempt started (ms); absent for a running task whose start only the PEL knows. */
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
  /**
   * How many runs the record knows of (`run_count` in JSON): its history (the `runs` field) plus,
   * for a done or running task, the last run.
   */
  starts: number;
  /** The runs kept, oldest first: the history's last 16, then a done or running task's last run. */
  runs: TaskRun[];
  /**
   * The handler's output: the stored JSON parsed; the raw text when it was cut to the fleet's
   * bound (`outputTruncated`) or is not JSON. Absent when none was stored.
   */
  output?: unknown;
  /** Whether the stored output was cut to `tasks.max_output_bytes` (then `output` is raw text). */
  outputTruncated: boolean;
  /**
   * Every field as the readers show it (task_read.lua): as stored, or for a task shown running
   * because its entry is pending, `state` running, `member` the consumer, no `started`/`ended`
   * ({@link runningOn}); for one shown done from the done log, `state` done and its `member`,
   * `started`, `ended`, `updated` and output from there.
   */
  fields: Record<string, string>;
}

function int(v: string | undefined): number | undefined {
  if (v === undefined || !/^-?[0-9]+$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Reads a record's fields (as task_read.lua shows them, or a raw `HGETALL`) tolerantly: unknown
 * fields stay in `fields`, a number that does not parse is left out of its typed property.
 */
export function parseRecord(tenant: string, taskId: string, fields: Record<string, string>): TaskRecord {
  const f = (name: string): string | undefined => (Object.hasOwn(fields, name) ? fields[name] : undefined);
  const state = f("state");
  const rec: TaskRecord = {
    tenant,
    taskId,
    finished: false,
    starts: 0,
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
  ];
  for (const [prop, name] of numbers) {
    const v = int(f(name));
    if (v !== undefined) target[prop] = v;
  }
  // The history: a run exists when its r<N>:member field does; '' is unknown.
  const history = Math.max(int(f("runs")) ?? 0, 0);
  const run = (n: number, start: string | undefined, member: string | undefined, end: string | undefined, outcome: string | undefined): TaskRun => {
    const r: TaskRun = { run: n };
    const s = int(start);
    if (s !== undefined) r.start = s;
    if (member !== undefined && member !== "") r.member = member;
    const e = int(end);
    if (e !== undefined) r.end = e;
    if (outcome !== undefined && outcome !== "") r.outcome = outcome;
    return r;
  };
  for (let n = Math.max(history - RUNS_KEPT + 1, 1); n <= history; n++) {
    const member = f(`r${String(n)}:member`);
    if (member === undefined) continue;
    rec.runs.push(run(n, f(`r${String(n)}:start`), member, f(`r${String(n)}:end`), f(`r${String(n)}:outcome`)));
  }
  rec.starts = history;
  // A done task's last run, or a running task's current one: the record's own fields.
  if (rec.state === "done") {
    rec.runs.push(run(history + 1, f("started"), f("member"), f("ended"), "ok"));
    rec.starts = history + 1;
  } else if (rec.state === "running") {
    rec.runs.push(run(history + 1, f("started"), f("member"), undefined, undefined));
    rec.starts = history + 1;
  }
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
 * The lane entry the record says the task waits as, when it says `queued` or `replayed`: whether
 * it runs is the PEL's to say (pending in the fleet's group: running). Undefined otherwise.
 */
export function waitingEntry(r: TaskRecord): string | undefined {
  if (r.state !== "queued" && r.state !== "replayed") return undefined;
  const entry = r.fields.entry;
  return entry === undefined || entry === "" ? undefined : entry;
}

/**
 * The record as shown while its {@link waitingEntry} is pending for `consumer`: `running` there,
 * without the `started` and `ended` of an earlier run (src/records.rs `running_on`).
 */
export function runningOn(r: TaskRecord, consumer: string): TaskRecord {
  const fields: Record<string, string> = { ...r.fields, state: "running", member: consumer };
  delete fields.started;
  delete fields.ended;
  return parseRecord(r.tenant, r.taskId, fields);
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
    run_count: r.starts,
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
