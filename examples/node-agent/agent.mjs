// An example agent service for redrive: two kinds, wired to the fleet by config (redrive.toml).
//
// * summarize_ticket calls a (fake) LLM that sometimes rate-limits. The call is a step, so once
//   it has answered, a later attempt gets the stored summary instead of paying for it again.
// * send_followup drafts an email with the LLM, then sends it in a side-effecting step: if the
//   attempt dies between starting and finishing the send, redrive dead-letters the task as
//   partial_execution for a person to check, instead of sending twice.
//
//   node agent.mjs            # HTTP on 127.0.0.1:${PORT:-8001}, secrets from REDRIVE_SECRETS
//   node agent.mjs --pool     # a stdio worker-pool process (type = "pool")
//
// FAKE_LLM_RATE_LIMIT (probability of a 429, default 0.2), FAKE_LLM_LATENCY_MS (default 20) and
// OUTBOX (the JSON Lines file the "email" goes to, default outbox.jsonl) shape the demo.
import { appendFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Agent, FailError, RetryError, serveHttp, servePool } from "@redrive/sdk";

export const agent = new Agent();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A stand-in for a model call: slow, sometimes rate-limited, otherwise deterministic. */
async function fakeLlm(prompt) {
  await sleep(Number(process.env.FAKE_LLM_LATENCY_MS ?? "20"));
  if (Math.random() < Number(process.env.FAKE_LLM_RATE_LIMIT ?? "0.2")) {
    // What a model client reports on HTTP 429: transient, retried after the pause.
    throw new RetryError("model said: rate limit exceeded", { cls: "rate_limited", retryAfterMs: 200 });
  }
  const words = prompt.split(/\s+/);
  return words.slice(0, 12).join(" ") + (words.length > 12 ? "…" : "");
}

agent.handle("summarize_ticket", async (task, ctx) => {
  const p = task.payload;
  if (typeof p !== "object" || p === null || typeof p.text !== "string") {
    // Permanent: no retry makes this input valid. Dead-lettered for a fix and a replay.
    throw new FailError("invalid_input", "payload needs a string 'text'");
  }
  const summary = await ctx.step("summarize", () => fakeLlm(p.text));
  await ctx.progress({ message: "summarised", chars: summary.length });
  return { ticket: p.ticket ?? null, summary };
});

agent.handle("send_followup", async (task, ctx) => {
  const p = task.payload;
  if (typeof p !== "object" || p === null || typeof p.to !== "string") {
    throw new FailError("invalid_input", "payload needs a string 'to'");
  }
  const draft = await ctx.step("draft", () => fakeLlm(`Dear ${p.to}, ${p.about ?? ""}`));
  const sent = await ctx.step(
    "send_email",
    () => {
      appendFileSync(process.env.OUTBOX ?? "outbox.jsonl", JSON.stringify({ task_id: task.task_id, to: p.to, body: draft }) + "\n");
      return { message_id: `m-${task.task_id}` };
    },
    { sideEffect: true },
  );
  return { sent: sent.message_id };
});

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.includes("--pool")) {
    await servePool(agent, { concurrency: Number(process.env.POOL_CONCURRENCY ?? "8") });
  } else {
    const secrets = (process.env.REDRIVE_SECRETS ?? "").split(",").filter(Boolean);
    const port = Number(process.env.PORT ?? "8001");
    await serveHttp(agent, { host: process.env.HOST ?? "127.0.0.1", port, secrets: secrets.length ? secrets : undefined });
    console.error(`example agent serving on port ${port}`);
  }
}
