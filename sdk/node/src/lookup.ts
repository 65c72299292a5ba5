/**
 * Reading a task's record back, and waiting for a task to finish: register as a waiter (the
 * fleet publishes finish events only while one is registered), then block on the tenant's
 * events stream (one entry per finish: `task`, `state`, `entry`), never poll.
 *
 * Every read is one run of the fleet's record reader, `lua/task_read.lua` (byte for byte
 * `src/broker/scripts/task_read.lua`, what the fleet's CLI and HTTP API read with): EVALSHA, or
 * EVAL when Redis has forgotten it. A record that says `queued` or `replayed` on a lane entry is
 * shown as the entry's place tells: `running` on the consumer holding it while it is pending in
 * the fleet's consumer group, as stored while it waits in the lane, and `done` (member, start,
 * end and output from the tenant's done log, `<prefix>:{<tenant>}:done:<second>`) once it has
 * left the lane — a member that finishes a task in time appends it to that log instead of
 * writing its record.
 */

import { randomUUID } from "node:crypto";

import type { Redis } from "ioredis";

import { TaskFailedError, WaitTimeoutError } from "./errors.js";
import type { Keys } from "./keys.js";
import { FAILED_STATES, parseRecord, type TaskRecord } from "./records.js";
import { taskReadScript } from "./scripts.js";
import { validateTaskId, validateTenant } from "./task.js";

/** The longest single blocking read of a wait, ms: the wait re-reads the record at least this often. */
export const WAIT_SLICE_MS = 5000;

/** How long past its BLOCK time a read may stay unanswered before its connection is deemed lost, ms. */
const HUNG_READ_GRACE_MS = 3000;

/**
 * How long the wait's own connection may take to open at first, ms, even past a shorter
 * timeout: a wait reads the record at least once (timeout 0 is "read it now").
 */
export const WAIT_CONNECT_MS = 1000;

/** How many events one blocking read takes at most. */
const EVENTS_PER_READ = 1000;

/**
 * How long a waiter's registration lives, ms by the Redis server's clock: it is refreshed
 * before every blocking slice, so it lapses only when its waiter is gone.
 */
export const WAITER_TTL_MS = 15_000;

/** How long the ZREM that ends a registration may take, ms (best effort: it lapses anyway). */
const UNREGISTER_MS = 1000;

/** The fleet's default consumer group (`fleet.group`). */
export const DEFAULT_GROUP = "redrive";

/** `group` when it is a valid consumer group name (the fleet's `fleet.group`); throws a TypeError otherwise. */
export function validateGroup(group: unknown): string {
  if (typeof group !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(group)) {
    throw new TypeError(
      `group ${typeof group === "string" ? `'${group}'` : typeof group} is invalid: use 1 to 64 ASCII letters, digits, '_', '-', '.' (the fleet's fleet.group)`,
    );
  }
  return group;
}

/** Options of `Producer.getTask`. */
export interface GetTaskOptions {
  /**
   * The fleet's consumer group (`fleet.group`), passed to the record reader: a queued task
   * whose entry is pending there is shown running; default the producer's (`redrive` unless set).
   */
  group?: string;
}

/** Options of `Producer.wait`. */
export interface WaitOptions {
  /**
   * How long to wait at most, in ms (a finite number ≥ 0; 0 reads the record once). Opening
   * the wait's connection counts in it, except that the first may take up to 1 s
   * (`WAIT_CONNECT_MS`).
   */
  timeoutMs: number;
  /**
   * Reject with `TaskFailedError` when the task ends without success (dead_lettered, expired,
   * resolved, discarded); default true. False resolves with that record instead.
   */
  raiseOnFailure?: boolean;
  /**
   * The fleet's consumer group: every read shows a queued task whose entry is pending there as
   * running (as `getTask` does), so a wait that times out reports it so; default the producer's.
   */
  group?: string;
}

/**
 * Reads the record of `taskId` in `tenant` through `redis`, or null when there is none, as the
 * fleet's task_read.lua shows it (running while its entry is pending in `group`, done from the
 * done log once its entry has left the lane): one round trip.
 */
export async function readTask(
  redis: Redis,
  keys: Keys,
  tenant: string,
  taskId: string,
  group: string = DEFAULT_GROUP,
): Promise<TaskRecord | null> {
  validateTenant(tenant);
  validateTaskId(taskId);
  validateGroup(group);
  return read(redis, keys, tenant, taskId, group);
}

/**
 * The record through task_read.lua: EVALSHA, or EVAL when Redis has forgotten the script (a
 * restart, SCRIPT FLUSH; EVAL caches it again).
 */
async function read(conn: Redis, keys: Keys, tenant: string, taskId: string, group: string): Promise<TaskRecord | null> {
  const script = taskReadScript();
  const args = [keys.task(tenant, taskId), keys.lane(tenant), keys.doneLogPrefix(tenant), group];
  let reply: unknown;
  try {
    reply = await conn.evalsha(script.sha, 3, ...args);
  } catch (e) {
    if (!(isReplyError(e) && (e as Error).message.startsWith("NOSCRIPT"))) throw e;
    reply = await conn.eval(script.text, 3, ...args);
  }
  return shown(tenant, taskId, reply);
}

/** The record task_read.lua answered (`{fields, pttl}`; no fields: no record). */
function shown(tenant: string, taskId: string, reply: unknown): TaskRecord | null {
  if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[0])) {
    throw new Error(`task_read.lua answered ${JSON.stringify(reply)}, not {fields, ttl}`);
  }
  const flat = reply[0] as unknown[];
  if (flat.length === 0) return null;
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
  return parseRecord(tenant, taskId, fields);
}

/** A connection lost under a blocking read (ours: the reply did not come in time). */
class ConnectionLost extends Error {}

/**
 * One wait's registration in the tenant's waiters ZSET (`<prefix>:{<tenant>}:waiters`): member
 * a unique id, score when it expires in ms by the server's clock. The fleet's scripts publish a
 * finish event only while a member's score is at least the server's now.
 */
class Registration {
  /** The server's clock minus the local one, ms (read with TIME at each registration). */
  private offset = 0;
  private registered = false;

  constructor(
    private readonly key: string,
    private readonly id: string,
  ) {}

  /**
   * Reads the server's clock, registers until 15 s past it, and drops registrations that have
   * lapsed. Runs before the last event id and the record are read, at the start and after
   * every reconnect: a finish before it shows in the record, one after it publishes an event.
   */
  async register(conn: Redis): Promise<void> {
    const sent = Date.now();
    const [sec, usec] = await conn.time();
    const serverNow = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    this.offset = serverNow - (sent + Date.now()) / 2;
    this.registered = true;
    await Promise.all([
      conn.zadd(this.key, serverNow + WAITER_TTL_MS, this.id),
      conn.zremrangebyscore(this.key, "-inf", `(${serverNow}`),
    ]);
  }

  /**
   * Sends the ZADD that moves the expiry to 15 s past the server's now (estimated from the
   * offset). The caller sends its blocking read right after, without awaiting this: Redis runs
   * one connection's commands in order, so the refresh lands before the slice starts.
   */
  refresh(conn: Redis): Promise<number> {
    return conn.zadd(this.key, Math.floor(Date.now() + this.offset) + WAITER_TTL_MS, this.id);
  }

  /** ZREM of the registration, best effort: errors are ignored and the wait is bounded. */
  async unregister(conn: Redis): Promise<void> {
    if (!this.registered) return;
    let timer: NodeJS.Timeout | undefined;
    const removed = conn.zrem(this.key, this.id).then(
      () => undefined,
      () => undefined,
    );
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, UNREGISTER_MS);
    });
    try {
      await Promise.race([removed, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Waits for the task to finish (see `Producer.wait`). The wait runs on a connection of its
 * own, a duplicate of `redis` that never queues or re-sends commands across a reconnect: each
 * reconnect starts the cycle again (registration, last event id, then the record), so no
 * finish is missed. However the wait ends, its registration is removed (best effort).
 */
export async function waitTask(
  redis: Redis,
  keys: Keys,
  tenant: string,
  taskId: string,
  options: WaitOptions,
): Promise<TaskRecord> {
  validateTenant(tenant);
  validateTaskId(taskId);
  const timeoutMs: unknown = options.timeoutMs;
  if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new RangeError(`timeoutMs must be a finite number ≥ 0, not ${String(timeoutMs)}`);
  }
  const raiseOnFailure: unknown = options.raiseOnFailure ?? true;
  if (typeof raiseOnFailure !== "boolean") {
    throw new TypeError(`raiseOnFailure must be a boolean, not ${typeof raiseOnFailure}`);
  }
  const group = validateGroup(options.group ?? DEFAULT_GROUP);
  const deadline = Date.now() + timeoutMs;
  const events = keys.events(tenant);
  const registration = new Registration(keys.waiters(tenant), randomUUID());
  const conn = redis.duplicate({
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    // Every command in flight is failed at once when the connection drops: the loop below
    // decides what to send again.
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(50 * times, 500),
  });
  // The connection's errors are seen through its commands; without a listener ioredis would
  // print each reconnect failure.
  conn.on("error", () => undefined);
  let record: TaskRecord | null = null;
  let reads = 0;
  let finished: TaskRecord | null = null;
  try {
    while (await ready(conn, reads === 0 ? Math.max(deadline, Date.now() + WAIT_CONNECT_MS) : deadline)) {
      try {
        // Registered first: from here on a finish publishes an event (one before shows in the
        // record). Then the last event before the record is read: a finish after the read
        // lands after it.
        await registration.register(conn);
        const last = await conn.xrevrange(events, "+", "-", "COUNT", 1);
        let from = last[0]?.[0] ?? "0-0";
        record = await read(conn, keys, tenant, taskId, group);
        reads++;
        for (;;) {
          if (record?.finished) break;
          const left = deadline - Date.now();
          if (left <= 0) break;
          const slice = Math.max(1, Math.min(Math.ceil(left), WAIT_SLICE_MS));
          // The registration is refreshed in the same round trip, ahead of the read.
          const refreshed = registration.refresh(conn);
          refreshed.catch(() => undefined);
          const got = await blockingRead(conn, events, from, slice);
          await refreshed;
          if (got.length > 0) {
            from = got[got.length - 1]?.[0] ?? from;
            if (!got.some(([, flat]) => fieldOf(flat, "task") === taskId)) continue;
          }
          // An event of this task, or a quiet slice: read the record again (a quiet slice's
          // read covers a finish whose event was trimmed away or never written).
          record = await read(conn, keys, tenant, taskId, group);
        }
        if (record?.finished) finished = record;
        break;
      } catch (e) {
        // Redis refusing a command (WRONGTYPE, say) is the caller's; anything else is a lost
        // connection (ours, or ioredis failing the commands in flight as it drops): wait for
        // it to come back within the deadline and start the cycle again.
        if (isReplyError(e)) throw e;
        await closed(conn, deadline);
      }
    }
  } finally {
    await registration.unregister(conn);
    conn.disconnect();
  }
  if (finished !== null) {
    if (raiseOnFailure && finished.state !== undefined && FAILED_STATES.includes(finished.state)) {
      throw new TaskFailedError(finished);
    }
    return finished;
  }
  throw new WaitTimeoutError(tenant, taskId, timeoutMs, record, reads > 0);
}

/** Whether `e` is Redis's reply refusing a command (not a connection failing). */
function isReplyError(e: unknown): boolean {
  return e instanceof Error && e.name === "ReplyError";
}

/**
 * After a command failed on a lost connection: until ioredis has seen the connection close
 * (a connection dropped on purpose still says `ready` for a moment), wait for that — bounded —
 * so the next attempt does not run on the dead one.
 */
async function closed(conn: Redis, deadline: number): Promise<void> {
  if (conn.status !== "ready") return;
  const left = Math.min(deadline - Date.now(), 1000);
  if (left > 0) {
    await new Promise<void>((resolve) => {
      const onClose = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        conn.off("close", onClose);
        resolve();
      }, left);
      conn.once("close", onClose);
    });
  }
  // Still "ready" on a connection whose command failed: drop it; ioredis opens a new one.
  if (statusOf(conn) === "ready") conn.disconnect(true);
}

/** The connection's status, read afresh (it changes under an await). */
function statusOf(conn: Redis): string {
  return conn.status;
}

/** Whether `conn` is (or becomes, before `deadline`) ready for commands. */
async function ready(conn: Redis, deadline: number): Promise<boolean> {
  if (conn.status === "ready") return true;
  if (conn.status === "wait" || conn.status === "end") {
    conn.connect().catch(() => undefined);
  }
  const left = deadline - Date.now();
  if (left <= 0) return false;
  return new Promise<boolean>((resolve) => {
    const onReady = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      conn.off("ready", onReady);
      resolve(false);
    }, left);
    conn.once("ready", onReady);
  });
}

type StreamEntry = [id: string, fields: string[]];

/**
 * XREAD BLOCK `slice` ms on `stream` after `from`. A reply overdue by more than a grace period
 * (a connection gone silent) drops the connection (ioredis reconnects it) and throws.
 */
async function blockingRead(conn: Redis, stream: string, from: string, slice: number): Promise<StreamEntry[]> {
  const reply = conn.xread("COUNT", EVENTS_PER_READ, "BLOCK", slice, "STREAMS", stream, from);
  let timer: NodeJS.Timeout | undefined;
  const overdue = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      conn.disconnect(true);
      reject(new ConnectionLost(`no reply to a ${slice} ms blocking read after ${slice + HUNG_READ_GRACE_MS} ms`));
    }, slice + HUNG_READ_GRACE_MS);
  });
  reply.catch(() => undefined);
  try {
    const got = await Promise.race([reply, overdue]);
    if (got === null) return [];
    return got.flatMap(([, entries]) => entries);
  } finally {
    clearTimeout(timer);
  }
}

function fieldOf(flat: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < flat.length; i += 2) {
    if (flat[i] === name) return flat[i + 1];
  }
  return undefined;
}
