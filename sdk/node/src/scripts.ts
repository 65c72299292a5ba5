/**
 * The Lua scripts the SDK runs, shipped in the package's `lua/` directory: `lua/enqueue.lua` is
 * the exact text the fleet runs for an enqueue (`src/broker/scripts/lib/record.lua` followed by
 * `src/broker/scripts/enqueue.lua`, byte for byte; a test compares them).
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

let enqueue: LuaScript | undefined;

/** The enqueue script (read once from {@link enqueueScriptPath}). */
export function enqueueScript(): LuaScript {
  if (enqueue === undefined) {
    const path = enqueueScriptPath();
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      throw new Error(
        `the enqueue script is missing from the package (${path}): ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
    enqueue = { text: bytes.toString("utf8"), sha: createHash("sha1").update(bytes).digest("hex") };
  }
  return enqueue;
}
