/**
 * The Lua scripts the SDK runs, shipped in the package's `lua/` directory, each the exact text
 * the fleet runs (byte for byte; tests compare them):
 *
 * - `lua/enqueue.lua`, an enqueue: `src/broker/scripts/lib/record.lua` followed by
 *   `src/broker/scripts/enqueue.lua`;
 * - `lua/task_read.lua`, a task's record as readers show it (`src/broker/scripts/task_read.lua`:
 *   running while its entry is pending in the group, done from the done log once its entry has
 *   left the lane), what `Producer.getTask` and `Producer.wait` read records with.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** A script's text and its SHA1 (what EVALSHA names it by). */
export interface LuaScript {
  /** The script's source text. */
  text: string;
  /** The lowercase hex SHA1 of its UTF-8 bytes, as Redis computes it. */
  sha: string;
}

/** Where the enqueue script lies: `lua/enqueue.lua`, next to the compiled `dist/`. */
export function enqueueScriptPath(): string {
  return fileURLToPath(new URL("../lua/enqueue.lua", import.meta.url));
}

/** Where the record reader lies: `lua/task_read.lua`, next to the compiled `dist/`. */
export function taskReadScriptPath(): string {
  return fileURLToPath(new URL("../lua/task_read.lua", import.meta.url));
}

let enqueue: LuaScript | undefined;
let taskRead: LuaScript | undefined;

function load(what: string, path: string): LuaScript {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new Error(
      `the ${what} script is missing from the package (${path}): ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  return { text: bytes.toString("utf8"), sha: createHash("sha1").update(bytes).digest("hex") };
}

/** The enqueue script (read once from {@link enqueueScriptPath}). */
export function enqueueScript(): LuaScript {
  enqueue ??= load("enqueue", enqueueScriptPath());
  return enqueue;
}

/** The record reader, task_read.lua (read once from {@link taskReadScriptPath}). */
export function taskReadScript(): LuaScript {
  taskRead ??= load("record reader", taskReadScriptPath());
  return taskRead;
}
