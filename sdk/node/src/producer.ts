/**
 * The producer: validate tasks, then append them to their tenants' lanes (CONTRACT.md), with
 * the same keys, fields and field order as the Rust producer (src/producer.rs), through the
 * fleet's own enqueue script (the task's record and duplicate refusal in one atomic step); and
 * read a task's record back, or wait for it to finish. A round trip registers its tenants
 * (`SADD <prefix>:tenants`) unless this producer registered them less than a second ago, as the
 * Rust producer does. When a round trip's registration added a tenant, its tenants are published
 * on `<prefix>:tenants:new` afterwards so members serve it at once (a failed publish is a
 * warning, not a failed enqueue).
 */

import { once } from "node:events";

import { Redis, type ChainableCommander } from "ioredis";

import { InvalidTaskError } from "./errors.js";
import { Keys } from "./keys.js";
import { DEFAULT_GROUP, readTask, validateGroup, waitTask, type GetTaskOptions, type WaitOptions } from "./lookup.js";
import type { TaskRecord, TaskState } from "./records.js";
import { RegisteredTenants } from "./registered.js";
import { enqueueScript } from "./scripts.js";
import { DEFAULT_MAX_PAYLOAD_BYTES, prepareTask, type NewTask, type PreparedTask } from "./task.js";

/** How many tasks one pipelined round trip carries (as the Rust producer). */
export const PIPELINE_CHUNK = 1000;

/** Options of a {@link Producer}. */
export interface ProducerOptions extends EnqueueOptions {
  /** The fleet's `redis.key_prefix`; default `redrive`. */
  keyPrefix?: string;
  /** The fleet's `limits.max_payload_bytes`; default 262144 (256 KiB of JSON). */
  maxPayloadBytes?: number;
  /**
   * The fleet's consumer group (`fleet.group`); default `redrive`. `getTask` and `wait` pass it
   * to the record reader: a queued task whose entry is pending there is shown running.
   */
  group?: string;
}

/** How tasks are enqueued (a {@link Producer}'s defaults, or one call's). */
export interface EnqueueOptions {
  /**
   * Refuse a task_id whose record is live (queued, running, retry_scheduled, deferred, done
   * within retention, dead_lettered, expired, replayed): it is reported as a duplicate, not
   * written. Default true; false for producers that reuse ids on purpose (the fleet's
   * `tasks.dedup = false`): a task_id whose task finished (done, dead_lettered, expired,
   * resolved, discarded) is enqueued again and the new task's record replaces the old one, but
   * one still in flight (queued, running, retry_scheduled, deferred, replayed) is reported as a
   * duplicate all the same — one task_id has one record.
   */
  dedup?: boolean;
  /**
   * Write the task's record with it (enqueue.lua). Default true; false writes a plain XADD and
   * no record, for fleets with `tasks.enabled = false` (then nothing is deduplicated).
   */
  records?: boolean;
  /**
   * The retention of the task's finished record, ms: should match the fleet's
   * `tasks.retention_ms` for the task's tenant and kind (with its `[tasks.tenants.<t>]` /
   * `[tasks.kinds.<k>]` overrides). Default 86400000 (24 h, the fleet's default); a whole number
   * from 1000 to 365 days (a RangeError otherwise). The record written at enqueue expires that
   * long plus an eighth later and the lane entry says when (its `recorded` field), so the member
   * that finishes the task in time only appends it to the tenant's done log instead of writing
   * the record again. A mismatch never loses a record early: a member whose own retention that
   * expiry does not cover writes the record itself.
   */
  retentionMs?: number;
}

/** The default retention of a finished task's record, ms (the fleet's `tasks.retention_ms` default: 24 h). */
export const DEFAULT_RETENTION_MS = 86_400_000;

/** The shortest retention accepted, ms (as the fleet's `tasks.retention_ms`). */
export const MIN_RETENTION_MS = 1_000;

/** The longest retention accepted, ms: 365 days (as the fleet's `tasks.retention_ms`). */
export const MAX_RETENTION_MS = 365 * 86_400_000;

/**
 * `value` when it is a whole number of ms in the fleet's range for `tasks.retention_ms` (1000 ms
 * to 365 days); throws a RangeError otherwise.
 */
export function validateRetention(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new RangeError(
      `retentionMs must be a whole number of ms, not ${typeof value === "number" ? String(value) : typeof value} (the fleet's tasks.retention_ms)`,
    );
  }
  if (value < MIN_RETENTION_MS || value > MAX_RETENTION_MS) {
    throw new RangeError(
      `retentionMs ${value} is out of range ${MIN_RETENTION_MS} … ${MAX_RETENTION_MS} (1 s … 365 days, as the fleet's tasks.retention_ms)`,
    );
  }
  return value;
}

/** Where an enqueued task landed, or the live task it duplicates. */
export interface Enqueued {
  /** The task's idempotency key (given or generated). */
  taskId: string;
  /**
   * The entry id in the tenant's lane; for a duplicate, the entry the live record names (the
   * same as `duplicate.entry`).
   */
  entryId: string;
  /**
   * Set when nothing was written because the task_id has a live record: its state and entry.
   * A duplicate is a normal outcome, not an error.
   */
  duplicate?: { state: TaskState; entry: string };
}

/** How long the tenant's per-minute stats buckets are kept, ms (src/broker/stats.rs `STATS_KEEP`: 2 days). */
export const STATS_KEEP_MS = 2 * 86_400_000;

/** One round trip's outcome: its tasks' results, and how many tenants its SADD added. */
interface Written {
  landed: Enqueued[];
  newTenants: number;
}

/** How many times a round trip is re-sent after Redis forgot the enqueue script (SCRIPT FLUSH, a restart). */
const NOSCRIPT_RETRIES = 3;

/**
 * A Redis failure part-way through {@link Producer.enqueueMany}: the round trips before the
 * failing one are written; within the failing one, Redis may have taken some tasks.
 */
export class EnqueueError extends Error {
  /**
   * How many tasks of the batch Redis took (counted from its replies): written, or reported as
   * duplicates.
   */
  readonly written: number;

  /** A failure after `written` tasks were written. */
  constructor(message: string, written: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EnqueueError";
    this.written = written;
  }
}

/** Publishes tasks to redrive's lanes, and looks them up. */
export class Producer {
  /** The Redis client written through. */
  readonly redis: Redis;
  /** The key names used. */
  readonly keys: Keys;
  /** The payload limit enforced, in bytes of JSON. */
  readonly maxPayloadBytes: number;
  /** Whether duplicates are refused by default ({@link EnqueueOptions.dedup}). */
  readonly dedup: boolean;
  /** Whether records are written by default ({@link EnqueueOptions.records}). */
  readonly records: boolean;
  /** The retention passed to the enqueue script by default, ms ({@link EnqueueOptions.retentionMs}). */
  readonly retentionMs: number;
  /** The fleet's consumer group that `getTask` and `wait` ask about pending entries ({@link ProducerOptions.group}). */
  readonly group: string;
  private readonly owned: boolean;
  /** The tenants this producer registered lately, left out of its SADDs for a second. */
  private readonly registered = new RegisteredTenants();

  /**
   * A producer writing through `redis`: an ioredis client (yours; {@link Producer.close} leaves
   * it open) or a URL such as `redis://127.0.0.1:6379/0` (a client the producer owns).
   */
  constructor(redis: Redis | string, options: ProducerOptions = {}) {
    if (typeof redis === "string") {
      this.redis = new Redis(redis, { lazyConnect: false });
      this.owned = true;
    } else {
      if (redis.options.keyPrefix) {
        throw new TypeError(
          "the ioredis client has a keyPrefix option, which would move every key; pass keyPrefix to the Producer instead",
        );
      }
      this.redis = redis;
      this.owned = false;
    }
    this.keys = new Keys(options.keyPrefix ?? "redrive");
    const max = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (!Number.isSafeInteger(max) || max <= 0) {
      throw new RangeError(`maxPayloadBytes must be a positive integer, not ${String(max)}`);
    }
    this.maxPayloadBytes = max;
    this.dedup = flag("dedup", options.dedup, true);
    this.records = flag("records", options.records, true);
    this.retentionMs = options.retentionMs === undefined ? DEFAULT_RETENTION_MS : validateRetention(options.retentionMs);
    this.group = validateGroup(options.group ?? DEFAULT_GROUP);
  }

  /**
   * Validates and enqueues one task. Throws {@link InvalidTaskError} (nothing written) when
   * invalid. A task_id with a live record comes back with `duplicate` set (nothing written).
   */
  async enqueue(task: NewTask, options: EnqueueOptions = {}): Promise<Enqueued> {
    const [one] = await this.enqueueMany([task], options);
    if (one === undefined) throw new Error("the enqueue returned no entry id");
    return one;
  }

  /**
   * Validates every task, then enqueues them in pipelined round trips of up to 1000 tasks (each
   * registering its tenants — those this producer has not registered within the last second: an
   * `SADD` of them that answered; none, no `SADD` — then one enqueue script per task: EVALSHA,
   * the script loaded again when Redis has forgotten it). An invalid task throws
   * {@link InvalidTaskError} naming its position and field, and nothing is written. A Redis failure part-way throws
   * {@link EnqueueError} saying how many tasks were written before. Results are in order; a
   * duplicate (also of an earlier task of the same batch) has `duplicate` set.
   *
   * When a round trip's `SADD` added a tenant, its tenants (distinct, sorted, comma-separated)
   * are then published on `<prefix>:tenants:new` ({@link Keys.tenantSignals}), as the Rust
   * producer does, so members serve the tenant at once. A failed publish does not fail the
   * enqueue (the tasks are written; members find the tenant by their periodic look): it is
   * reported with `console.warn`.
   */
  async enqueueMany(tasks: readonly NewTask[], options: EnqueueOptions = {}): Promise<Enqueued[]> {
    const dedup = flag("dedup", options.dedup, this.dedup);
    const records = flag("records", options.records, this.records);
    const retentionMs = options.retentionMs === undefined ? this.retentionMs : validateRetention(options.retentionMs);
    const now = Date.now();
    const prepared: PreparedTask[] = tasks.map((t, i) => {
      try {
        return prepareTask(t, now, this.maxPayloadBytes);
      } catch (e) {
        if (e instanceof InvalidTaskError && tasks.length > 1) {
          throw new InvalidTaskError(e.field, e.message, i);
        }
        throw e;
      }
    });
    const out: Enqueued[] = [];
    for (let start = 0; start < prepared.length; start += PIPELINE_CHUNK) {
      const chunk = prepared.slice(start, start + PIPELINE_CHUNK);
      const done = records ? await this.writeScripted(chunk, out.length, dedup, retentionMs) : await this.writePlain(chunk, out.length);
      out.push(...done.landed);
      if (done.newTenants > 0) await this.announce(tenantsOf(chunk));
    }
    return out;
  }

  /**
   * The record of `taskId` in `tenant` (the fleet's `redrive task show`), or null when it has
   * none (never enqueued with records, expired after the retention, or published with a raw
   * XADD and not started yet). Throws {@link InvalidTaskError} for a malformed tenant or id.
   *
   * One round trip: the fleet's record reader (lua/task_read.lua). A record that says `queued`
   * or `replayed` is shown `running` on the consumer holding its entry while that entry is
   * pending in the consumer group (`options.group`, default the producer's), and `done` (with
   * member, times and output from the tenant's done log) once its entry has left the lane: a
   * task enqueued with its record starts, and mostly finishes, without a record write.
   */
  async getTask(tenant: string, taskId: string, options: GetTaskOptions = {}): Promise<TaskRecord | null> {
    return readTask(this.redis, this.keys, tenant, taskId, options.group ?? this.group);
  }

  /**
   * Waits until the task finishes and resolves with its record when it is `done`. It rejects
   * with {@link TaskFailedError} when it ends dead-lettered, expired, resolved or discarded
   * (unless `raiseOnFailure` is false: then it resolves with that record), and with
   * {@link WaitTimeoutError} (carrying the current state — `running` while a queued task's
   * entry is pending in the group, as `getTask` shows it) after `timeoutMs`.
   *
   * It registers in the tenant's waiters ZSET (the fleet publishes finish events only while
   * someone waits; the registration expires 15 s past the server's clock, is refreshed before
   * every slice and removed when the wait ends), then blocks on the tenant's events stream on
   * a connection of its own (so the producer's other commands are not held up), in slices of
   * at most 5 s, never polling; a lost connection is reconnected, registered again, and the
   * wait goes on within the deadline.
   */
  async wait(tenant: string, taskId: string, options: WaitOptions): Promise<TaskRecord> {
    return waitTask(this.redis, this.keys, tenant, taskId, { ...options, group: options.group ?? this.group });
  }

  /** Closes the connection if the producer opened it (a URL was given); resolves once it is closed. */
  async close(): Promise<void> {
    const ended = (): boolean => this.redis.status === "end";
    if (!this.owned || ended()) return;
    const end = once(this.redis, "end");
    await this.redis.quit();
    if (!ended()) await end;
  }

  /**
   * Publishes newly registered `tenants` on the tenants channel, after their tasks landed; a
   * failure is a warning (the enqueue stands).
   */
  private async announce(tenants: string[]): Promise<void> {
    const channel = this.keys.tenantSignals();
    const message = tenants.join(",");
    try {
      await this.redis.publish(channel, message);
    } catch (e) {
      console.warn(
        `redrive: new tenants ${message} enqueued but not announced on ${channel} (${errorText(e)}); members find them by their periodic look`,
      );
    }
  }

  /** The tasks as plain XADDs (no record, no duplicate refusal), after the tenant registry. */
  private async writePlain(chunk: PreparedTask[], before: number): Promise<Written> {
    const register = this.registered.due(tenantsOf(chunk));
    const pipe = this.redis.pipeline();
    if (register.length > 0) pipe.sadd(this.keys.tenants(), ...register);
    for (const t of chunk) {
      pipe.xadd(this.keys.lane(t.tenant), "*", ...t.fields.flat());
    }
    const replies = await this.exec(pipe, before);
    const offset = register.length > 0 ? 1 : 0;
    const newTenants = offset > 0 ? this.absorbSadd(register, replies[0]) : 0;
    const failed = replies.findIndex(([err]) => err !== null);
    if (failed >= 0) {
      const ok = replies.slice(offset).filter(([e]) => e === null).length;
      throw refusedPart(replies[failed]?.[0], ok, chunk.length, before);
    }
    return {
      landed: replies.slice(offset).map(([, id], i) => ({ taskId: chunk[i]?.taskId ?? "", entryId: String(id) })),
      newTenants,
    };
  }

  /**
   * How many tenants the registry `SADD` of `register` added (0 when it failed), remembering them
   * as registered when it answered.
   */
  private absorbSadd(register: string[], reply: [Error | null, unknown] | undefined): number {
    if (reply === undefined || reply[0] !== null) return 0;
    this.registered.mark(register);
    return added(reply[1]);
  }

  /**
   * The tasks through enqueue.lua (record + duplicate refusal, one atomic step each), after the
   * tenant registry. Tasks Redis answered NOSCRIPT for did not run: the script is loaded and
   * they are sent again.
   */
  private async writeScripted(
    chunk: PreparedTask[],
    before: number,
    dedup: boolean,
    retentionMs: number,
  ): Promise<Written> {
    const script = enqueueScript();
    const results: (Enqueued | undefined)[] = chunk.map(() => undefined);
    const taken = (): number => results.filter((r) => r !== undefined).length;
    let todo = chunk.map((_, i) => i);
    let newTenants = 0;
    const register = this.registered.due(tenantsOf(chunk));
    for (let round = 0; todo.length > 0; round++) {
      if (round > NOSCRIPT_RETRIES) {
        throw new EnqueueError(
          `Redis keeps forgetting the enqueue script (NOSCRIPT after ${NOSCRIPT_RETRIES} loads); ${taken()} of this round trip's ${chunk.length} tasks were written (${before} before it)`,
          before + taken(),
        );
      }
      if (round > 0) await this.loadScript(script.text, script.sha, before + taken());
      const pipe = this.redis.pipeline();
      const sadd = round === 0 && register.length > 0;
      if (sadd) pipe.sadd(this.keys.tenants(), ...register);
      for (const i of todo) {
        const t = chunk[i];
        if (t === undefined) continue;
        pipe.evalsha(
          script.sha,
          4,
          this.keys.lane(t.tenant),
          this.keys.task(t.tenant, t.taskId),
          this.keys.tasks(t.tenant),
          this.keys.statsPrefix(t.tenant),
          dedup ? "1" : "0",
          t.taskId,
          t.kind,
          "1",
          String(STATS_KEEP_MS),
          String(retentionMs),
          ...t.fields.flat(),
        );
      }
      const replies = await this.exec(pipe, before + taken());
      let offset = 0;
      let refusal: unknown = null;
      if (sadd) {
        offset = 1;
        const saddErr = replies[0]?.[0] ?? null;
        if (saddErr !== null) refusal = saddErr;
        else newTenants = this.absorbSadd(register, replies[0]);
      }
      const again: number[] = [];
      todo.forEach((i, k) => {
        const [err, value] = replies[offset + k] ?? [new Error("no reply"), null];
        const t = chunk[i];
        if (t === undefined) return;
        if (err !== null) {
          if (isNoScript(err)) again.push(i);
          else refusal ??= err;
          return;
        }
        const parsed = parseEnqueueReply(t.taskId, value);
        if (parsed === null) refusal ??= new Error(`unexpected reply from the enqueue script: ${short(value)}`);
        else results[i] = parsed;
      });
      if (refusal !== null) throw refusedPart(refusal, taken(), chunk.length, before);
      todo = again;
    }
    return { landed: results.map((r, i) => r ?? { taskId: chunk[i]?.taskId ?? "", entryId: "" }), newTenants };
  }

  private async loadScript(text: string, sha: string, written: number): Promise<void> {
    let loaded: unknown;
    try {
      loaded = await this.redis.script("LOAD", text);
    } catch (e) {
      throw new EnqueueError(`loading the enqueue script failed: ${errorText(e)}`, written, { cause: e });
    }
    if (loaded !== sha) {
      throw new EnqueueError(`Redis named the enqueue script ${short(loaded)}, not ${sha}`, written);
    }
  }

  private async exec(pipe: ChainableCommander, before: number): Promise<[Error | null, unknown][]> {
    const written =
      before === 0 ? "nothing was written" : `the first ${before} tasks of the batch were written before`;
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await pipe.exec();
    } catch (e) {
      throw new EnqueueError(`enqueue failed: ${errorText(e)}; ${written}`, before, { cause: e });
    }
    if (replies === null) throw new EnqueueError(`enqueue got no reply; ${written}`, before);
    return replies;
  }
}

function flag(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new TypeError(`${name} must be a boolean, not ${typeof value}`);
  return value;
}

/** The count an `SADD` answered (tenants it added); 0 for anything else. */
function added(reply: unknown): number {
  return typeof reply === "number" && reply > 0 ? reply : 0;
}

function tenantsOf(chunk: PreparedTask[]): string[] {
  return [...new Set(chunk.map((t) => t.tenant))].sort();
}

function refusedPart(err: unknown, ok: number, size: number, before: number): EnqueueError {
  return new EnqueueError(
    `enqueue refused by Redis: ${errorText(err)}; ${ok} of this round trip's ${size} tasks were written (${before} before it)`,
    before + ok,
    { cause: err },
  );
}

function isNoScript(err: Error): boolean {
  return err.message.startsWith("NOSCRIPT");
}

/** `{1, entry}` (appended) or `{0, state, entry}` (a duplicate), as enqueue.lua answers. */
function parseEnqueueReply(taskId: string, value: unknown): Enqueued | null {
  if (!Array.isArray(value)) return null;
  const [flagValue, a, b] = value as unknown[];
  if (flagValue === 1 && typeof a === "string") return { taskId, entryId: a };
  if (flagValue === 0 && typeof a === "string" && typeof b === "string") {
    return { taskId, entryId: b, duplicate: { state: a as TaskState, entry: b } };
  }
  return null;
}

function short(v: unknown): string {
  const text = typeof v === "string" ? v : ((JSON.stringify(v) as string | undefined) ?? String(v));
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
