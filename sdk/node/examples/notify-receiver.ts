/**
 * A tiny receiver of redrive's tenant notifications (`[[notify.targets]]`).
 *
 * Built with the SDK's tests (`npm test`), or run it with a TypeScript runner, with the target's
 * secret in `REDRIVE_NOTIFY_SECRET` and a port in `PORT`; point a target at
 * `http://<host>:<port>/`. It checks each request with {@link verifyNotification} (401 when it is
 * not valid), drops the duplicates an at-least-once delivery may bring (by the event's id),
 * prints each new notification as one JSON line and answers 204 — after which the fleet
 * considers it delivered. In your own code, import from `@redrive/sdk`.
 */

import { createServer, type Server } from "node:http";
import { pathToFileURL } from "node:url";

import { NotificationError, verifyNotification, type Notification } from "../src/index.js";

/** The largest body accepted (a notification is a few KiB). */
export const MAX_BODY = 1024 * 1024;

/** A server (not yet listening) that calls `onNotification` once per new, valid event. */
export function makeReceiver(secrets: readonly string[], onNotification: (n: Notification) => void): Server {
  const seen = new Set<string>();
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on("end", () => {
      if (req.method !== "POST") {
        res.writeHead(405).end();
        return;
      }
      if (size > MAX_BODY) {
        res.writeHead(413).end();
        return;
      }
      let n: Notification;
      try {
        n = verifyNotification(secrets, req.headers, Buffer.concat(chunks));
      } catch (e) {
        const why = e instanceof NotificationError ? e.message : "invalid";
        res.writeHead(401, { "content-type": "text/plain" }).end(why);
        return;
      }
      if (!seen.has(n.id)) {
        seen.add(n.id);
        onNotification(n);
      }
      res.writeHead(204).end();
    });
  });
}

/** Serves on `PORT` (default 8088) until stopped. */
function main(): void {
  const secret = process.env.REDRIVE_NOTIFY_SECRET ?? "";
  if (secret === "") {
    process.stderr.write("set REDRIVE_NOTIFY_SECRET to the target's secret\n");
    process.exitCode = 2;
    return;
  }
  const port = Number(process.env.PORT ?? "8088");
  const server = makeReceiver([secret], (n) => {
    process.stdout.write(`${JSON.stringify(n)}\n`);
  });
  server.listen(port, "127.0.0.1", () => {
    process.stderr.write(`receiving notifications on http://127.0.0.1:${port}/\n`);
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
