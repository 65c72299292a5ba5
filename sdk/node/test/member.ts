/**
 * The fleet member's side of a task, done from the tests (no fleet member runs in them).
 *
 * These functions do what a member does to a task this SDK enqueued (its lane entry carries
 * `recorded`: its record was written with it), with the fleet's own record writer,
 * `src/broker/scripts/lib/record.lua` read from the repository:
 *
 * - {@link start}: the member's lane reader delivers the entry (`XREADGROUP`) and the start
 *   claims it (`XCLAIM … RETRYCOUNT 2 JUSTID`), **without any record write** — the record keeps
 *   saying `queued`; readers show the task running from the PEL (lib/record.lua, Running);
 * - {@link done}: fast_ack.lua: `XACK` + `XDEL`; an entry enqueue.lua appended whose record's
 *   expiry (the entry's `recorded` field) still covers the retention goes to the done log (the
 *   record untouched: readers take the done from the log, task_read.lua), any other gets its
 *   done record written (`rec_done`: state done, member, started, ended, output; expiry); the
 *   finish event while someone waits, either way;
 * - {@link retry}: retry.lua then promote.lua: the failed run goes into the history (`rec_end`
 *   with the member that ran it) and the next attempt is a new lane entry, its record `queued`;
 * - {@link end}: dead_letter.lua (`dead_lettered`, `expired`: the run that failed, when a member
 *   held the entry, into the history; kept while dead) and an operator's `resolved` /
 *   `discarded`: `rec_end`, the expiry, the finish event;
 * - {@link takeOver}: begin.lua: another member claims an entry whose member died and starts it
 *   (`rec_start` with `died`: the run the record never knew of goes into the history as a dead
 *   run, member and start unknown).
 *
 * The Rust end-to-end test (tests/e2e_wait.rs) runs the real member.
 */

import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { Redis } from "ioredis";

import { repoRoot } from "./helpers.js";

/** The fleet's record writer. */
const RECORD_LUA = readFileSync(join(repoRoot(), "src", "broker", "scripts", "lib", "record.lua"), "utf8");

/** The fleet's default consumer group. */
export const GROUP = "redrive";

/** A member passes when the run started (server clock, ms); these helpers take how long ago. */
const STARTED_AGO = `
local function started_ago(ago)
  if ago == nil or ago == '' then
    return ''
  end
  return string.format('%d', rec_now() - tonumber(ago))
end`;

/**
 * fast_ack.lua for one entry. KEYS: the lane, the record prefix, the index, the events stream.
 * ARGV: group, member, entry, task_id, retention ms, output flag ('' none, '0' whole, '1' cut),
 * output, how long ago the run started (ms). As fast_ack.lua: an entry appended by enqueue.lua
 * whose record's expiry (its `recorded` field) still covers the retention goes to the done log
 * (one XADD to `<prefix>:{t}:done:<second of the entry id>`: `_m` member, `_e` ended, then the
 * entry id -> started and `<entry id>o` or `t` -> output), the record untouched; any other is
 * written by rec_done (blind when appended with its record). Returns {acked, published, logged}.
 */
const DONE = `${RECORD_LUA}
${STARTED_AGO}
local R = rec_ctx(KEYS[2], KEYS[3], KEYS[4])
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local mark = '0'
if #e > 0 then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'recorded' then
      mark = f[i + 1]
    end
  end
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local logged = 0
if acked > 0 then
  local now = rec_now()
  local till, ttl = tonumber(mark) or 0, tonumber(ARGV[5]) or 0
  if ARGV[4] ~= '' and till > 1 and ttl > 0 and till >= now + ttl then
    local ms = string.sub(ARGV[3], 1, (string.find(ARGV[3], '-', 1, true) or (#ARGV[3] + 1)) - 1)
    local key = rec_log_key(R, #ms > 5 and string.sub(ms, 1, #ms - 5) or '0')
    local a = {'XADD', key, '*', '_m', ARGV[2], '_e', rec_ts(now), ARGV[3],
      rec_started_at(started_ago(ARGV[8]), now)}
    if ARGV[6] == '1' then
      a[#a + 1] = ARGV[3] .. 't'
      a[#a + 1] = ARGV[7]
    elseif ARGV[6] ~= '' then
      a[#a + 1] = ARGV[3] .. 'o'
      a[#a + 1] = ARGV[7]
    end
    redis.call(unpack(a))
    if redis.call('PTTL', key) < tonumber(mark) - now then
      redis.call('PEXPIREAT', key, mark)
    end
    rec_event(R, ARGV[4], 'done', ARGV[3])
    logged = 1
  else
    rec_done(R, now, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[2], started_ago(ARGV[8]),
      mark ~= '0' and mark ~= '')
  end
end
return {acked, R.listened and 1 or 0, logged}
`;

/**
 * retry.lua + promote.lua for one entry. KEYS: the lane, the record prefix, the index. ARGV:
 * group, member, entry, task_id, class, error, next attempt, how long ago the run started (ms),
 * then field, value, … of the next attempt's entry. Returns {acked, new entry id}.
 */
const RETRY = `${RECORD_LUA}
${STARTED_AGO}
local R = rec_ctx(KEYS[2], KEYS[3], nil)
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if acked == 0 then
  return {0, ''}
end
redis.call('XDEL', KEYS[1], ARGV[3])
local now = rec_now()
rec_end(R, ARGV[4], now, 'retry_scheduled', ARGV[5], {
  'class', ARGV[5], 'error', rec_error(ARGV[6]), 'attempt', ARGV[7], 'due', string.format('%d', now),
}, ARGV[2], started_ago(ARGV[8]))
local fields = {}
for i = 9, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
fields[#fields + 1] = 'recorded'
fields[#fields + 1] = '1'
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
rec_write(R, ARGV[4], now, 'queued', {'entry', id, 'enq', string.format('%d', now), 'attempt', ARGV[7]})
return {1, id}
`;

/**
 * dead_letter.lua's (or an operator's) end of a task. KEYS: the lane, the record prefix, the
 * index, the events stream. ARGV: group, entry ('' none), task_id, state, outcome, the member
 * that ran the failed run ('' none), how long ago it started (ms), retention ms (0: kept), the
 * events entry's `entry`, then field, value, … Returns whether it published the event.
 */
const END = `${RECORD_LUA}
${STARTED_AGO}
local R = rec_ctx(KEYS[2], KEYS[3], KEYS[4])
if ARGV[2] ~= '' then
  redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local pairs = {}
for i = 10, #ARGV do
  pairs[#pairs + 1] = ARGV[i]
end
rec_end(R, ARGV[3], rec_now(), ARGV[4], ARGV[5], pairs, ARGV[6], started_ago(ARGV[7]))
rec_expire(R, ARGV[3], ARGV[8])
rec_event(R, ARGV[3], ARGV[4], ARGV[9])
return R.listened and 1 or 0
`;

/** begin.lua's record part. KEYS: the record prefix, the index. ARGV: task_id, entry, attempt, member, kind. */
const TAKE_OVER = `${RECORD_LUA}
local R = rec_ctx(KEYS[1], KEYS[2], nil)
return rec_start(R, ARGV[1], rec_now(), ARGV[2], ARGV[3], ARGV[4], ARGV[5], true, '')
`;

/** The tenant's lane. */
export function lane(tenant: string, prefix = "redrive"): string {
  return `${prefix}:{${tenant}}:lane`;
}

function recordKeys(tenant: string, prefix: string): [string, string, string] {
  return [`${prefix}:{${tenant}}:task:`, `${prefix}:{${tenant}}:tasks`, `${prefix}:{${tenant}}:events`];
}

/** The entry the task's record names. */
export async function recordEntry(redis: Redis, tenant: string, taskId: string, prefix = "redrive"): Promise<string> {
  const entry = await redis.hget(`${prefix}:{${tenant}}:task:${taskId}`, "entry");
  assert.ok(entry !== null && entry !== "", `the record of ${taskId} names no entry`);
  return entry;
}

/** The consumer `entry` is pending for, or undefined (also when there is no group yet). */
export async function pendingOn(redis: Redis, tenant: string, entry: string, prefix = "redrive", group = GROUP): Promise<string | undefined> {
  let rows: unknown[];
  try {
    rows = await redis.xpending(lane(tenant, prefix), group, entry, entry, 1);
  } catch (e) {
    if (e instanceof Error && e.message.startsWith("NOGROUP")) return undefined;
    throw e;
  }
  const first = rows[0];
  return Array.isArray(first) && typeof first[1] === "string" ? first[1] : undefined;
}

/** Options of the member's moves. */
export interface MemberOptions {
  /** The member (consumer) doing it; default `m-1`. */
  member?: string;
  /** The consumer group; default `redrive`. */
  group?: string;
  /** The key prefix; default `redrive`. */
  prefix?: string;
}

/**
 * The member starts the lane entry `entry` as it starts an entry appended with its record: its
 * reader delivers it (`XREADGROUP … >`; entries before it nobody read yet are delivered along the
 * way, as in a member's read batch, and stay pending), then the start claims it (`XCLAIM <lane>
 * <group> <member> 0 <entry> RETRYCOUNT 2 JUSTID`). Nothing is written to the record. An entry
 * pending already (at any consumer) is only claimed.
 */
export async function start(redis: Redis, tenant: string, entry: string, options: MemberOptions = {}): Promise<void> {
  const { member = "m-1", group = GROUP, prefix = "redrive" } = options;
  const key = lane(tenant, prefix);
  try {
    await redis.xgroup("CREATE", key, group, "0", "MKSTREAM");
  } catch (e) {
    if (!(e instanceof Error && e.message.startsWith("BUSYGROUP"))) throw e;
  }
  if ((await pendingOn(redis, tenant, entry, prefix, group)) === undefined) {
    for (;;) {
      const got = (await redis.xreadgroup("GROUP", group, member, "COUNT", 1, "STREAMS", key, ">")) as
        | [string, [string, string[]][]][]
        | null;
      const read = got?.[0]?.[1][0]?.[0];
      assert.ok(read !== undefined, `entry ${entry} was not delivered: it is not in the lane, unread`);
      if (read === entry) break;
    }
  }
  const claimed = await redis.xclaim(key, group, member, 0, entry, "RETRYCOUNT", 2, "JUSTID");
  assert.deepEqual(claimed, [entry]);
}

/**
 * The done log the done of lane entry `entry` goes to (lib/record.lua `rec_log_key`):
 * `<prefix>:{<tenant>}:done:` + the entry id's ms without its last 5 digits (its 100-s
 * window; `0` for fewer than six).
 */
export function doneLog(tenant: string, entry: string, prefix = "redrive"): string {
  const ms = entry.split("-")[0] ?? "";
  return `${prefix}:{${tenant}}:done:${ms.length > 5 ? ms.slice(0, -5) : "0"}`;
}

/**
 * fast_ack.lua: the member finished the task's entry (the record's unless `entry` is given) with
 * `output` (JSON text; undefined: none kept; `truncated`: cut to the fleet's bound); started
 * first ({@link start}) when it is not pending yet. `XACK` + `XDEL`, then the done log entry
 * when the record's expiry set at enqueue covers `retentionMs` from now (the SDK's default
 * retention does), else the done record (blind for an entry appended with its record) and its
 * expiry; while someone waits, the finish event. Resolves with whether it published it.
 */

export async function done(
  redis: Redis,
  tenant: string,
  taskId: string,
  output?: string,
  options: MemberOptions & { entry?: string; agoMs?: number; retentionMs?: number; truncated?: boolean } = {},
): Promise<boolean> {
  const { member = "m-1", group = GROUP, prefix = "redrive", agoMs = 40, retentionMs = 86_400_000 } = options;
  const flag = output === undefined ? "" : options.truncated === true ? "1" : "0";
  const entry = options.entry ?? (await recordEntry(redis, tenant, taskId, prefix));
  if ((await pendingOn(redis, tenant, entry, prefix, group)) === undefined) {
    await start(redis, tenant, entry, { member, group, prefix });
  }
  const got = (await redis.eval(
    DONE,
    4,
    lane(tenant, prefix),
    ...recordKeys(tenant, prefix),
    group,
    member,
    entry,
    taskId,
    retentionMs,
    flag,
    output ?? "",
    agoMs,
  )) as [number, number, number];
  assert.equal(got[0], 1, `entry ${entry} was not pending`);
  return got[1] === 1;
}

/**
 * retry.lua then promote.lua: the member, which started `entry`, failed it with `cls` (the run
 * goes into the history); the retry is due at once and promoted: a new lane entry (attempt
 * `attempt`, `recorded`), the record `queued` on it. Resolves with the new entry id.
 */
export async function retry(
  redis: Redis,
  tenant: string,
  taskId: string,
  entry: string,
  cls: string,
  options: MemberOptions & { error?: string; attempt?: number; agoMs?: number } = {},
): Promise<string> {
  const { member = "m-1", group = GROUP, prefix = "redrive", error = "", attempt = 2, agoMs = 40 } = options;
  const [recPrefix, index] = recordKeys(tenant, prefix);
  const got = (await redis.eval(
    RETRY,
    3,
    lane(tenant, prefix),
    recPrefix,
    index,
    group,
    member,
    entry,
    taskId,
    cls,
    error,
    attempt,
    agoMs,
    ...["task_id", taskId, "tenant", tenant, "kind", "k", "payload", "null", "attempt", String(attempt)],
  )) as [number, string];
  assert.equal(got[0], 1, `entry ${entry} was not pending`);
  return got[1];
}

/**
 * A task ends as `state` without success: `dead_lettered` / `expired` as dead_letter.lua writes it
 * (the record's entry leaves the lane; when it was pending, the member holding it ran the run
 * that failed, in the history; kept while dead; `fields.dlq` names the events entry), or
 * `resolved` / `discarded` as an operator's decision (no run; expires after the retention).
 * Resolves with whether it published the finish event.
 */
export async function end(
  redis: Redis,
  tenant: string,
  taskId: string,
  state: "dead_lettered" | "expired" | "resolved" | "discarded",
  fields: Record<string, string> = {},
  options: MemberOptions = {},
): Promise<boolean> {
  const { group = GROUP, prefix = "redrive" } = options;
  const dead = state === "dead_lettered" || state === "expired";
  const stored = await redis.hget(`${prefix}:{${tenant}}:task:${taskId}`, "entry");
  const entry = dead && stored !== null ? stored : "";
  const ran = entry === "" ? "" : ((await pendingOn(redis, tenant, entry, prefix, group)) ?? "");
  const published = await redis.eval(
    END,
    4,
    lane(tenant, prefix),
    ...recordKeys(tenant, prefix),
    group,
    entry,
    taskId,
    state,
    fields.class ?? "",
    ran,
    ran === "" ? "" : "40",
    dead ? 0 : 86_400_000,
    fields.dlq ?? entry,
    ...Object.entries(fields).flat(),
  );
  return published === 1;
}

/**
 * begin.lua: `member` takes over `entry`, started by a member that died (`XCLAIM`), and starts
 * it: `rec_start` with `died`, so the earlier run — which the record never knew of: it says
 * queued on this very entry — goes into the history as a dead run (member, start and outcome
 * `''`), and the record says `running` on `member`. Resolves with the previous state.
 */
export async function takeOver(redis: Redis, tenant: string, taskId: string, entry: string, options: MemberOptions = {}): Promise<unknown> {
  const { member = "m-2", group = GROUP, prefix = "redrive" } = options;
  const claimed = await redis.xclaim(lane(tenant, prefix), group, member, 0, entry, "JUSTID");
  assert.deepEqual(claimed, [entry]);
  const [recPrefix, index] = recordKeys(tenant, prefix);
  return redis.eval(TAKE_OVER, 2, recPrefix, index, taskId, entry, "1", member, "k");
}
