/**
 * Tenant notifications: what a receiver of redrive's webhooks (`[[notify.targets]]`) gets, and
 * how it checks them.
 *
 * Each notification is a JSON POST `{id, type, tenant, at, data}` signed with the target's secret
 * in `Redrive-Signature` exactly like the fleet's requests to agents ({@link verify}), with the
 * headers `Redrive-Event` (the type), `Redrive-Event-Id` (the id: the same on every retry) and
 * `Redrive-Tenant`. Types: `dead_lettered` (a digest per interval: `count`, `since`, `until`,
 * `first_id`, `last_id`, `by_class`, up to five `samples`, never a payload), `escalated`
 * (`dead_letters`, `count`, `by`, `reason`), `breaker_opened` and `breaker_closed` (`from`,
 * `to`, `reason`, `detail`, `by`, `at`).
 *
 * Delivery is at least once: drop duplicates by the id. Answer 2xx once stored; anything else
 * is retried with backoff, then given up (the fleet's delivery log says `failed`).
 */

import { checkSignature, type VerifyOptions } from "./signature.js";

/** The event types a notification may have. */
export const NOTIFICATION_TYPES = ["dead_lettered", "escalated", "breaker_opened", "breaker_closed"] as const;

/** One verified notification. */
export interface Notification {
  /** `<tenant>/<outbox id>`: the same on every retry. */
  id: string;
  /** One of {@link NOTIFICATION_TYPES} (or a newer type this SDK does not know yet). */
  type: string;
  /** The tenant it is about. */
  tenant: string;
  /** When the event was recorded, ms since the epoch (the Redis server's clock). */
  at: number;
  /** The event's details. */
  data: Record<string, unknown>;
}

/** A request that is not a valid, signed notification; the message says why (never a secret). */
export class NotificationError extends Error {
  override name = "NotificationError";
}

/** Request headers as Node gives them (`IncomingMessage.headers`) or as a plain map. */
export type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === wanted) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

/**
 * Checks a request's `Redrive-Signature` over the raw `body` against `secrets` (one, or several
 * during a rotation) and reads the notification it carries. Throws {@link NotificationError}
 * when the signature is missing, stale or wrong, the body is not a notification, or the
 * `Redrive-Event`/`Redrive-Event-Id`/`Redrive-Tenant` headers disagree with it.
 */
export function verifyNotification(
  secrets: string | readonly string[],
  headers: Headers,
  body: Buffer | string,
  options: VerifyOptions = {},
): Notification {
  const why = checkSignature(secrets, header(headers, "redrive-signature"), body, options);
  if (why !== null) throw new NotificationError(why);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof body === "string" ? body : body.toString("utf8"));
  } catch (e) {
    throw new NotificationError(`the body is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new NotificationError("the body is not a JSON object");
  }
  const d = doc as Record<string, unknown>;
  const { id, type, tenant, at } = d;
  const data = d.data === undefined ? {} : d.data;
  if (typeof id !== "string") throw new NotificationError("the body has no valid 'id'");
  if (typeof type !== "string") throw new NotificationError("the body has no valid 'type'");
  if (typeof tenant !== "string") throw new NotificationError("the body has no valid 'tenant'");
  if (typeof at !== "number" || !Number.isSafeInteger(at)) throw new NotificationError("the body has no valid 'at'");
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new NotificationError("the body's 'data' is not an object");
  }
  for (const [name, value] of [
    ["Redrive-Event", type],
    ["Redrive-Event-Id", id],
    ["Redrive-Tenant", tenant],
  ] as const) {
    const h = header(headers, name);
    if (h !== undefined && h !== value) throw new NotificationError(`${name} disagrees with the body`);
  }
  return { id, type, tenant, at, data: data as Record<string, unknown> };
}
