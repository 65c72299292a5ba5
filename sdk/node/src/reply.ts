/** Reply lines and bounded error texts (PROTOCOL.md, "The reply"). */

/** How long an error text in a reply may be, in bytes of UTF-8. */
export const MAX_ERROR_BYTES = 4096;

/** Cuts `text` to at most `max` bytes of UTF-8 on a character boundary, marking a cut with "...". */
export function bound(text: string, max: number = MAX_ERROR_BYTES): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = "";
  let bytes = 0;
  for (const c of text) {
    const n = Buffer.byteLength(c);
    if (bytes + n > max - 3) break;
    out += c;
    bytes += n;
  }
  return `${out}...`;
}

/** A fail reply line (JSON text): class, bounded error, optional `retry_after_ms`. */
export function failLine(cls: string, error: string, retryAfterMs?: number): string {
  const reply: Record<string, unknown> = { status: "fail", class: cls, error: bound(error) };
  if (retryAfterMs !== undefined) reply.retry_after_ms = retryAfterMs;
  return JSON.stringify(reply);
}
