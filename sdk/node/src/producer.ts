/**
 * The producer: validate tasks, then append them to their tenants' lanes (CONTRACT.md), with
 * the same keys, fields and field order as the Rust producer (src/producer.rs).
 */

import { once } from "node:events";

import { Redis } from "ioredis";

import { InvalidTaskError } from "./errors.js";
import { Keys } from "./keys.js";
import { DEFAULT_MAX_PAYLOAD_BYTES, prepareTask, type NewTask, type PreparedTask } from "./task.js";

/** How many tasks one pipelined round trip carries (as the Rust producer). */
export const PIPELINE_CHUNK = 1000;

/** Options of a {@link Producer}. */
export interface ProducerOptions {
  /** The fleet's `redis.key_prefix`; default `redrive`. */
  keyPrefix?: string;
  /** The fleet's `limits.max_payload_bytes`; default 262144 (256 KiB of JSON). */
  maxPayloadBytes?: number;
}

/** Where an enqueued task landed. */
export interface Enqueued {
  /** The task's idempotency key (given or generated). */
  taskId: string;
  /** The entry id in the tenant's lane. */
  entryId: string;
}

/**
 * A Redis failure part-way through {@link Producer.enqueueMany}: the round trips before the
 * failing one are written; within the failing one, Redis may have taken some XADDs.
 */
export class EnqueueError extends Error {
  /** How many tasks of the batch were written (counted from Redis's replies). */
  readonly written: number;

  /** A failure after `written` tasks were written. */
  constructor(message: string, written: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EnqueueError";
    this.written = written;
  }
}

/** Publishes tasks to redrive's lanes. */
export class Producer {
  /** The Redis client written through. */
  readonly redis: Redis;
  /** The key names used. */
  readonly keys: Keys;
  /** The payload limit enforced, in bytes of JSON. */
  readonly maxPayloadBytes: number;
  private readonly owned: boolean;

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
  }

  /** Validates and enqueues one task. Throws {@link InvalidTaskError} (nothing written) when invalid. */
  async enqueue(task: NewTask): Promise<Enqueued> {
    const [one] = await this.enqueueMany([task]);
    if (one === undefined) throw new Error("XADD returned no entry id");
    return one;
  }

  /**
   * Validates every task, then enqueues them in pipelined round trips of up to 1000 tasks (each
   * registering its tenants, then one XADD per task). An invalid task throws
   * {@link InvalidTaskError} naming its position and field, and nothing is written. A Redis
   * failure part-way throws {@link EnqueueError} saying how many tasks were written before.
   */
  async enqueueMany(tasks: readonly NewTask[]): Promise<Enqueued[]> {
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
      const ids = await this.writeChunk(chunk, out.length);
      chunk.forEach((t, i) => out.push({ taskId: t.taskId, entryId: ids[i] ?? "" }));
    }
    return out;
  }

  /** Closes the connection if the producer opened it (a URL was given); resolves once it is closed. */
  async close(): Promise<void> {
    const ended = (): boolean => this.redis.status === "end";
    if (!this.owned || ended()) return;
    const end = once(this.redis, "end");
    await this.redis.quit();
    if (!ended()) await end;
  }

  private async writeChunk(chunk: PreparedTask[], before: number): Promise<string[]> {
    const tenants = [...new Set(chunk.map((t) => t.tenant))].sort();
    const pipe = this.redis.pipeline();
    pipe.sadd(this.keys.tenants(), ...tenants);
    for (const t of chunk) {
      pipe.xadd(this.keys.lane(t.tenant), "*", ...t.fields.flat());
    }
    const written = (): string =>
      before === 0 ? "nothing was written" : `the first ${before} tasks of the batch were written before`;
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await pipe.exec();
    } catch (e) {
      throw new EnqueueError(`enqueue failed: ${errorText(e)}; ${written()}`, before, { cause: e });
    }
    if (replies === null) throw new EnqueueError(`enqueue got no reply; ${written()}`, before);
    const failed = replies.findIndex(([err]) => err !== null);
    if (failed >= 0) {
      const err = replies[failed]?.[0];
      const ok = replies.slice(1).filter(([e]) => e === null).length;
      throw new EnqueueError(
        `enqueue refused by Redis: ${errorText(err)}; ${ok} of this round trip's ${chunk.length} tasks were written (${before} before it)`,
        before + ok,
        { cause: err },
      );
    }
    return replies.slice(1).map(([, id]) => String(id));
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
