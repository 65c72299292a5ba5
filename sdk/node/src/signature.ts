/**
 * `Redrive-Signature` (PROTOCOL.md, "Signature"): `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, one
 * `v1` per secret, each `hex(HMAC-SHA256(secret, "<t>.<raw body bytes>"))`.
 */

import { createHmac, timingSafeEqual } from "node:crypto";

/** How far (seconds) a signature's `t` may be from the verifier's clock. */
export const SIGNATURE_TOLERANCE_SECS = 300;

/** The header name the fleet sends. */
export const SIGNATURE_HEADER = "redrive-signature";

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** The verifier's clock, unix seconds; default now. */
  now?: number;
  /** Accepted distance between `t` and `now`, seconds; default 300. */
  toleranceSecs?: number;
}

function secretList(secrets: string | readonly string[]): readonly string[] {
  return typeof secrets === "string" ? [secrets] : secrets;
}

function hmacHex(secret: string, t: number, body: Buffer | string): string {
  return createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
}

/** The current time in unix seconds. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * The `Redrive-Signature` header for `body` (the raw bytes; a string is signed as UTF-8) at
 * unix second `t` (default now), one `v1` per secret in order.
 */
export function sign(secrets: string | readonly string[], body: Buffer | string, t: number = unixNow()): string {
  if (!Number.isSafeInteger(t) || t < 0) throw new RangeError(`t must be unix seconds, not ${String(t)}`);
  return [`t=${t}`, ...secretList(secrets).map((s) => `v1=${hmacHex(s, t, body)}`)].join(",");
}

/**
 * Whether `header` signs `body` (the raw bytes as received) under any of `secrets`, with
 * `|now − t| ≤ toleranceSecs`. Comparisons are constant-time. A missing or malformed header is
 * simply invalid.
 */
export function verify(
  secrets: string | readonly string[],
  header: string | null | undefined,
  body: Buffer | string,
  options: VerifyOptions = {},
): boolean {
  return checkSignature(secrets, header, body, options) === null;
}

/**
 * Like {@link verify}, but says why a signature is refused (`null` when it is valid): missing,
 * malformed, stale (or from the future) or matching none of the secrets. The reason never
 * contains a secret or an expected signature.
 */
export function checkSignature(
  secrets: string | readonly string[],
  header: string | null | undefined,
  body: Buffer | string,
  options: VerifyOptions = {},
): string | null {
  if (typeof header !== "string" || header.length === 0) return "missing Redrive-Signature header";
  const now = options.now ?? unixNow();
  const tolerance = options.toleranceSecs ?? SIGNATURE_TOLERANCE_SECS;
  let t: number | undefined;
  const sigs: Buffer[] = [];
  for (const part of header.split(",")) {
    const p = part.trim();
    const eq = p.indexOf("=");
    if (eq < 0) continue;
    const key = p.slice(0, eq);
    const value = p.slice(eq + 1);
    if (key === "t" && /^[0-9]+$/.test(value)) t = Number(value);
    else if (key === "v1") sigs.push(Buffer.from(value, "latin1"));
  }
  if (t === undefined || !Number.isSafeInteger(t)) return "Redrive-Signature has no valid t=<unix seconds>";
  if (sigs.length === 0) return "Redrive-Signature has no v1 signature";
  if (Math.abs(now - t) > tolerance) {
    return `Redrive-Signature is stale: t is ${now - t} s from this agent's clock (tolerance ${tolerance} s)`;
  }
  let ok = false;
  for (const secret of secretList(secrets)) {
    const want = Buffer.from(hmacHex(secret, t, body), "latin1");
    for (const got of sigs) {
      // Every pair is compared (no early exit), each in constant time.
      if (got.length === want.length && timingSafeEqual(got, want)) ok = true;
    }
  }
  return ok ? null : "Redrive-Signature matches none of this agent's secrets";
}
