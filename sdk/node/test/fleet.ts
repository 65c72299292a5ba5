/**
 * What the fleet makes of an NDJSON reply, per PROTOCOL.md ("A streamed reply", "Steps and
 * checkpoints", "Broken replies"). The tests check this reading against every NDJSON case of
 * conformance/replies.json first, then use it on the streams the SDK writes: the SDK's replies
 * are judged by the same rules the fleet's own tests run.
 */

import { isPermanentClass, isTransientClass } from "../src/index.js";

/** The outcome of an attempt as the fleet concludes it. */
export interface Outcome {
  outcome: "ok" | "fail" | "error";
  class?: string;
  output?: unknown;
  error?: string;
  retry_after_ms?: number;
  open_step?: string;
  steps: { name: string; output: unknown; side_effect: boolean }[];
  progress?: unknown;
}

const MAX_REPLY_BYTES = 1024 * 1024;

function nameProblem(name: string): boolean {
  return name.length === 0 || [...name].length > 128 || /[\u0000-\u001f\u007f-\u009f]/.test(name);
}

/** Reads an NDJSON reply body as the fleet does. */
export function interpret(body: string): Outcome {
  const steps: Outcome["steps"] = [];
  const started = new Map<string, boolean>(); // name → side_effect, for open steps
  let refused = false;
  let progress: unknown;
  let outputBytes = 0;
  const fail = (cls: string): Outcome => ({ outcome: "fail", class: cls, steps, progress });
  const openSideEffect = (): string | undefined => [...started].find(([, se]) => se)?.[0];
  for (const line of body.split("\n")) {
    if (line.trim().length === 0) continue;
    if (Buffer.byteLength(line) > MAX_REPLY_BYTES) return fail("schema_mismatch");
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      return fail("silent_failure");
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) return fail("silent_failure");
    const o = v as Record<string, unknown>;
    if ("status" in o) {
      if (o.status !== "ok" && o.status !== "fail") return fail("silent_failure");
      if (refused) return fail("schema_mismatch");
      if (o.status === "ok") return { outcome: "ok", output: o.output ?? null, steps, progress };
      const open = openSideEffect();
      if (open !== undefined) return { ...fail("partial_execution"), open_step: open };
      const cls = typeof o.class === "string" ? o.class : "";
      const error = typeof o.error === "string" ? o.error : "";
      const after = typeof o.retry_after_ms === "number" ? { retry_after_ms: o.retry_after_ms } : {};
      if (!isTransientClass(cls) && !isPermanentClass(cls)) return { outcome: "error", error, steps, progress };
      return { outcome: "fail", class: cls, error, steps, progress, ...after };
    }
    const name = typeof o.name === "string" ? o.name : undefined;
    switch (o.event) {
      case "step_started":
        if (name === undefined) return fail("silent_failure");
        if (nameProblem(name)) refused = true;
        else started.set(name, o.side_effect === true);
        break;
      case "step_done": {
        if (name === undefined) return fail("silent_failure");
        const size = Buffer.byteLength(JSON.stringify(o.output ?? null));
        if (nameProblem(name) || size > 65536 || steps.length >= 64 || outputBytes + size > 524288) {
          refused = true;
          break;
        }
        outputBytes += size;
        steps.push({ name, output: o.output ?? null, side_effect: started.get(name) ?? false });
        started.delete(name);
        break;
      }
      case "step_failed":
        if (name === undefined) return fail("silent_failure");
        started.delete(name);
        break;
      case "progress": {
        const rest: Record<string, unknown> = { ...o };
        delete rest.event;
        progress = rest;
        break;
      }
      default:
        return fail("silent_failure");
    }
  }
  const open = openSideEffect();
  if (refused) return fail("schema_mismatch");
  return open !== undefined ? { ...fail("partial_execution"), open_step: open } : fail("upstream_unavailable");
}
