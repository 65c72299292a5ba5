#!/usr/bin/env node
/**
 * `redrive-sdk`: the SDK's producer side from a shell (and for end-to-end tests).
 *
 *   redrive-sdk enqueue TENANT KIND [--payload JSON] [--task-id ID] [--no-dedup] [--no-records]
 *                       [--retention-ms MS]
 *   redrive-sdk task TENANT TASK_ID [--group G]     (also: get)
 *   redrive-sdk wait TENANT TASK_ID --timeout-ms N [--group G]
 *
 * Common options: `--redis-url URL` (default `$REDRIVE_REDIS_URL`, else
 * `redis://127.0.0.1:6379`) and `--key-prefix P` (default `redrive`); `--group G` is the fleet's
 * consumer group (default `redrive`): a queued task whose entry is pending in it shows as
 * running. `--no-dedup`: ids reused on purpose (only a task still in flight is a duplicate).
 * `--retention-ms MS`: the fleet's `tasks.retention_ms` for the task's tenant and kind (default
 * `$REDRIVE_TASKS__RETENTION_MS`, else 86400000; 1000 to 365 days). Each command prints one
 * JSON line on stdout. Exit codes: 0 success (enqueued or a duplicate; a record found; the task
 * done), 1 the task failed (wait: dead_lettered, expired, resolved or discarded; get: no
 * record), 2 wait timed out, 3 a usage error or Redis refusing.
 */

import { parseArgs } from "node:util";

import type { Redis } from "ioredis";

import { connect, connectOptionsFromEnv } from "./connection.js";
import { InvalidTaskError, TaskFailedError, WaitTimeoutError } from "./errors.js";
import { validateGroup } from "./lookup.js";
import { DEFAULT_RETENTION_MS, Producer, validateRetention } from "./producer.js";
import { recordToJson } from "./records.js";

const USAGE = `usage:
  redrive-sdk enqueue TENANT KIND [--payload JSON] [--task-id ID] [--no-dedup] [--no-records]
                      [--retention-ms MS]
  redrive-sdk task TENANT TASK_ID [--group G]     (also: get)
  redrive-sdk wait TENANT TASK_ID --timeout-ms N [--group G]
options: --redis-url URL (default $REDRIVE_REDIS_URL, else redis://127.0.0.1:6379), --key-prefix P (default redrive),
  --group G (the fleet's consumer group, default redrive: a queued task whose entry is pending in it shows as running),
  --retention-ms MS (the fleet's tasks.retention_ms for the task's tenant and kind, default $REDRIVE_TASKS__RETENTION_MS
  else 86400000, 1000 to 365 days: the record written at enqueue expires that long plus an eighth later)
TLS and credentials: the variables a member reads, REDRIVE_REDIS__TLS_CA_FILE, __TLS_CERT_FILE, __TLS_KEY_FILE,
  __TLS_INSECURE, __USERNAME, __PASSWORD_FILE, __PASSWORD_ENV
exit: 0 ok, 1 task failed / no record, 2 wait timed out, 3 usage or Redis error`;

class Usage extends Error {}

function out(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function positionals(args: string[], names: string[]): string[] {
  if (args.length !== names.length) {
    throw new Usage(`expected ${names.join(" ")}, got ${args.length} argument(s)`);
  }
  return args;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals: args } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      "redis-url": { type: "string" },
      "key-prefix": { type: "string" },
      payload: { type: "string" },
      "task-id": { type: "string" },
      "no-dedup": { type: "boolean" },
      "no-records": { type: "boolean" },
      "timeout-ms": { type: "string" },
      "retention-ms": { type: "string" },
      group: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, ...rest] = args;
  if (values.help === true || command === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && values.help !== true ? 3 : 0;
  }
  if (values.group !== undefined) {
    try {
      validateGroup(values.group);
    } catch (e) {
      throw new Usage(e instanceof Error ? e.message : String(e));
    }
  }
  // Only an enqueue passes it; the other commands leave the variable alone.
  const rawRetention =
    command === "enqueue"
      ? (values["retention-ms"] ?? process.env.REDRIVE_TASKS__RETENTION_MS ?? String(DEFAULT_RETENTION_MS))
      : String(DEFAULT_RETENTION_MS);
  if (!/^[0-9]+$/.test(rawRetention)) {
    throw new Usage(`--retention-ms must be a whole number of ms, not '${rawRetention}'`);
  }
  let retentionMs: number;
  try {
    retentionMs = validateRetention(Number(rawRetention));
  } catch (e) {
    throw new Usage(e instanceof Error ? e.message : String(e));
  }
  const url = values["redis-url"] ?? process.env.REDRIVE_REDIS_URL ?? "redis://127.0.0.1:6379";
  // TLS and credentials from the variables a member reads (REDRIVE_REDIS__TLS_CA_FILE, …).
  let redis: Redis;
  try {
    redis = connect(url, { ...connectOptionsFromEnv(), redis: { lazyConnect: true, maxRetriesPerRequest: 1 } });
  } catch (e) {
    throw new Usage(e instanceof Error ? e.message : String(e));
  }
  // Connection failures surface through the commands (never the URL: it may hold a password).
  redis.on("error", () => undefined);
  const producer = new Producer(redis, {
    ...(values["key-prefix"] === undefined ? {} : { keyPrefix: values["key-prefix"] }),
    ...(values.group === undefined ? {} : { group: values.group }),
    retentionMs,
  });
  try {
    switch (command) {
      case "enqueue": {
        const [tenant = "", kind = ""] = positionals(rest, ["TENANT", "KIND"]);
        let payload: unknown = null;
        if (values.payload !== undefined) {
          try {
            payload = JSON.parse(values.payload);
          } catch (e) {
            throw new Usage(`--payload is not JSON: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
        const result = await producer.enqueue(
          { tenant, kind, payload, task_id: values["task-id"] ?? null },
          { dedup: values["no-dedup"] !== true, records: values["no-records"] !== true },
        );
        // The same shape as `python -m redrive enqueue`.
        out({ task_id: result.taskId, entry_id: result.entryId, duplicate: result.duplicate ?? null });
        return 0;
      }
      case "task":
      case "get": {
        const [tenant = "", taskId = ""] = positionals(rest, ["TENANT", "TASK_ID"]);
        const record = await producer.getTask(tenant, taskId);
        out(record === null ? null : recordToJson(record));
        return record === null ? 1 : 0;
      }
      case "wait": {
        const [tenant = "", taskId = ""] = positionals(rest, ["TENANT", "TASK_ID"]);
        const raw = values["timeout-ms"];
        if (raw === undefined) throw new Usage("wait needs --timeout-ms N");
        if (!/^[0-9]+$/.test(raw)) throw new Usage(`--timeout-ms must be a whole number of ms, not '${raw}'`);
        const timeoutMs = Number(raw);
        try {
          const record = await producer.wait(tenant, taskId, { timeoutMs, raiseOnFailure: false });
          out(recordToJson(record));
          if (record.state === "done") return 0;
          process.stderr.write(`redrive-sdk: ${new TaskFailedError(record).message}\n`);
          return 1;
        } catch (e) {
          if (e instanceof WaitTimeoutError) {
            // As the other languages: the record as last read, or null.
            out(e.record === null ? null : recordToJson(e.record));
            process.stderr.write(`redrive-sdk: ${e.message}\n`);
            return 2;
          }
          throw e;
        }
      }
      default:
        throw new Usage(`unknown command '${command}'`);
    }
  } finally {
    redis.disconnect();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const usage = e instanceof Usage || e instanceof InvalidTaskError || (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS"));
    process.stderr.write(`redrive-sdk: ${e instanceof Error ? e.message : String(e)}\n${usage ? `${USAGE}\n` : ""}`);
    process.exitCode = 3;
  },
);
