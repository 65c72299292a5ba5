//! An agent's HTTP reply read into an [`Outcome`] (PROTOCOL.md, "The reply"): a JSON reply
//! decides whatever the status; a streamed NDJSON reply is applied line by line as it arrives
//! (each event reaches the [`TaskContext`] at once, so its sink records a step while the agent
//! still works); without a reply body the status decides; broken replies have their own
//! classes. Every excerpt of a body or an error is bounded before it goes into an outcome.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};

use crate::agents::protocol::{self, Line};
use crate::handler::{FailureClass, Outcome, TaskContext};

/// The most of a body kept as error text or shown in a `silent_failure` (PROTOCOL.md).
pub(crate) const EXCERPT_BYTES: usize = 4096;
/// The most of a transport error's text kept.
const ERROR_TEXT_BYTES: usize = 1024;
/// After the final line of a stream, how much more is read (and how long) so that the body
/// ends and its connection goes back to the pool; past either the connection is dropped.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(100);

/// At most `max` bytes of `bytes` as text (lossy UTF-8, cut on a character boundary), with
/// the full length noted when cut.
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // A character cut in two shows as a replacement character at the end: dropped.
    let text = String::from_utf8_lossy(&bytes[..max]);
    format!(
        "{}… ({} bytes in all)",
        text.trim_end_matches('\u{FFFD}'),
        bytes.len()
    )
}

/// Bounds a text to `max` bytes on a character boundary, noting the cut.
pub(crate) fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// The reply's media type, lowercased, without parameters (`application/json`).
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = v.split(';').next()?.trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

const NDJSON: &str = "application/x-ndjson";

/// A `Retry-After` value: delay seconds, or an HTTP date (relative to `now`). Garbage and
/// dates already past give `None` (the retry policy decides); `0` asks for an immediate retry.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Beyond u64 seconds: as long as can be said (the policy caps it anyway).
        return Some(Duration::from_secs(
            value.parse().unwrap_or(u64::MAX / 1000),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(now).ok()
}

fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, now)
}

/// The outcome a status stands for when the reply has no contract body (PROTOCOL.md,
/// "Without a reply body"). `text` is the body's bounded excerpt (may be empty). A transient
/// class takes `retry_after`.
pub(crate) fn status_outcome(status: u16, retry_after: Option<Duration>, text: &str) -> Outcome {
    let class = match status {
        200..=299 => return Outcome::Done,
        429 => FailureClass::RateLimited,
        408 | 425 | 502 | 503 | 504 => FailureClass::UpstreamUnavailable,
        401 | 403 => FailureClass::Unauthorized,
        500..=599 => FailureClass::LlmError,
        // 400, 404, 405, 409, 410, 413, 415, 422, every other 4xx, 3xx (redirects are not
        // followed) and anything stranger.
        _ => FailureClass::InvalidInput,
    };
    let name = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let reason = if text.trim().is_empty() {
        format!("the agent answered HTTP {status}{name}")
    } else {
        format!("the agent answered HTTP {status}{name}: {}", text.trim())
    };
    Outcome::Fail {
        class,
        reason,
        retry_after: retry_after.filter(|_| class.is_transient()),
    }
}

/// A final reply line's outcome; a transient fail without `retry_after_ms` takes the
/// `Retry-After` header when there is one.
fn final_outcome(ctx: &TaskContext, reply: protocol::Reply, header: Option<Duration>) -> Outcome {
    match protocol::reply_outcome(ctx, reply) {
        Outcome::Fail {
            class,
            reason,
            retry_after: None,
        } if class.is_transient() && header.is_some() => Outcome::Fail {
            class,
            reason,
            retry_after: header,
        },
        other => other,
    }
}

fn silent_failure(why: String) -> Outcome {
    Outcome::fail(FailureClass::SilentFailure, why)
}

fn too_large(what: &str, max: usize) -> Outcome {
    Outcome::fail(
        FailureClass::SchemaMismatch,
        format!(
            "{what} is over the handler's max_reply_bytes = {max}: the agent's output does not \
             fit the contract"
        ),
    )
}

/// The text of a transport error and its causes, without the URL (it may carry a token),
/// bounded.
pub(crate) fn error_text(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    bound(&text, ERROR_TEXT_BYTES)
}

/// A request that failed before any reply: connection refused, DNS, TLS, a reset.
pub(crate) fn transport_failure(endpoint: &str, e: reqwest::Error) -> Outcome {
    let what = if e.is_connect() {
        "cannot connect to"
    } else {
        "no reply from"
    };
    Outcome::fail(
        FailureClass::UpstreamUnavailable,
        format!("{what} {endpoint}: {}", error_text(e)),
    )
}

/// The complete lines of a byte stream, one at a time, each at most `max` bytes.
pub(crate) struct Lines {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    /// Lines taken so far (blank ones included): the number of the last one.
    pub number: usize,
}

/// A line longer than the limit.
#[derive(Debug, PartialEq)]
pub(crate) struct TooLong;

impl Lines {
    /// Lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            start: 0,
            max,
            number: 0,
        }
    }

    /// Appends a chunk of the stream.
    pub(crate) fn extend(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line (without its `\n` or `\r\n`), `None` until one is complete;
    /// `Err` once the line being read is over the limit.
    pub(crate) fn next_line(&mut self) -> Option<Result<&[u8], TooLong>> {
        let rest = &self.buf[self.start..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.number += 1;
                let mut line = &rest[..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if line.len() > self.max {
                    return Some(Err(TooLong));
                }
                self.start += i + 1;
                Some(Ok(line))
            }
            None if rest.len() > self.max => {
                self.number += 1;
                Some(Err(TooLong))
            }
            None => None,
        }
    }

    /// What is left once the stream ended: a last line without its newline, if any.
    pub(crate) fn rest(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        self.start = self.buf.len();
        if rest.is_empty() {
            return None;
        }
        self.number += 1;
        Some(rest)
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Reads the reply of one attempt into its outcome. Events of a streamed reply are applied
/// to `ctx` as they arrive; the caller bounds the whole in time.
pub(crate) async fn read(
    mut resp: reqwest::Response,
    ctx: &TaskContext,
    max_reply_bytes: usize,
    now: SystemTime,
) -> Outcome {
    let status = resp.status().as_u16();
    let media = media_type(resp.headers());
    let retry_after = retry_after(resp.headers(), now);
    match media.as_deref() {
        Some(NDJSON) => stream(resp, ctx, status, retry_after, max_reply_bytes).await,
        Some(m) if is_json(m) => {
            let body = match read_up_to(&mut resp, max_reply_bytes).await {
                Ok(b) => b,
                Err(e) => return broke_off(e),
            };
            if body.len() > max_reply_bytes {
                return too_large("the JSON reply", max_reply_bytes);
            }
            json_body(ctx, status, retry_after, &body)
        }
        other => {
            // Not a contract reply whatever it holds: only an excerpt is needed.
            let body = match read_up_to(&mut resp, EXCERPT_BYTES).await {
                Ok(b) => b,
                Err(e) => return broke_off(e),
            };
            if is_blank(&body) {
                return status_outcome(status, retry_after, "");
            }
            let text = excerpt(&body, EXCERPT_BYTES);
            if (200..300).contains(&status) {
                let ct = other.unwrap_or("none");
                silent_failure(format!(
                    "a {status} reply that is not a contract reply (Content-Type {ct}; a reply \
                     is application/json or application/x-ndjson); its first {EXCERPT_BYTES} \
                     bytes: {text}"
                ))
            } else {
                status_outcome(status, retry_after, &text)
            }
        }
    }
}

/// Reads the body until its end or until more than `limit` bytes came (then stops).
async fn read_up_to(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            break;
        }
    }
    Ok(body)
}

fn broke_off(e: reqwest::Error) -> Outcome {
    Outcome::fail(
        FailureClass::UpstreamUnavailable,
        format!("the reply broke off: {}", error_text(e)),
    )
}

/// A whole JSON body: a contract reply decides; anything else is a silent failure on a 2xx
/// and the status's outcome (with the body as its text) otherwise.
fn json_body(
    ctx: &TaskContext,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Outcome {
    if is_blank(body) {
        return status_outcome(status, retry_after, "");
    }
    let why = match protocol::parse_line(body) {
        Ok(protocol::Framed {
            line: Line::Reply(reply),
            ..
        }) => return final_outcome(ctx, reply, retry_after),
        Ok(_) => "an event, not a reply: events are sent as application/x-ndjson".to_owned(),
        Err(why) => why,
    };
    let text = excerpt(body, EXCERPT_BYTES);
    if (200..300).contains(&status) {
        silent_failure(format!(
            "a {status} reply that breaks the contract ({}); its first {EXCERPT_BYTES} bytes: \
             {text}",
            bound(&why, 512)
        ))
    } else {
        status_outcome(status, retry_after, &text)
    }
}

/// What one line of a stream came to.
enum Step {
    /// Go on reading.
    More,
    /// The attempt's outcome is known.
    Done(Outcome),
}

/// A streamed reply: events applied as they arrive, the final line decides.
async fn stream(
    mut resp: reqwest::Response,
    ctx: &TaskContext,
    status: u16,
    retry_after: Option<Duration>,
    max: usize,
) -> Outcome {
    let mut lines = Lines::new(max);
    // The body's first bytes, for a silent failure's excerpt.
    let mut head: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    let on_line = |line: &[u8], number: usize, seen: &mut usize, head: &[u8]| -> Step {
        if is_blank(line) {
            return Step::More;
        }
        *seen += 1;
        match protocol::parse_line(line) {
            Ok(framed) => match framed.line {
                Line::Event(event) => {
                    // A refused step is remembered by the context: the attempt concludes as
                    // schema_mismatch. The rest is still read, so the record shows what the
                    // agent did.
                    let _ = protocol::apply_event(ctx, event);
                    Step::More
                }
                Line::Reply(reply) => Step::Done(final_outcome(ctx, reply, retry_after)),
            },
            Err(why) => {
                if !(200..300).contains(&status) {
                    let body = excerpt(head, EXCERPT_BYTES);
                    return Step::Done(status_outcome(status, retry_after, &body));
                }
                let mut text = format!(
                    "line {number} of the streamed reply is not an event or a reply ({})",
                    bound(&why, 512)
                );
                text.push_str(&format!(
                    "; the reply's first {EXCERPT_BYTES} bytes: {}",
                    excerpt(head, EXCERPT_BYTES)
                ));
                if !contains(head, line) {
                    text.push_str(&format!("; line {number}: {}", excerpt(line, 512)));
                }
                Step::Done(silent_failure(text))
            }
        }
    };
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return Outcome::fail(
                    FailureClass::UpstreamUnavailable,
                    format!(
                        "the streamed reply broke off before its final line (after {seen} \
                         lines): {}",
                        error_text(e)
                    ),
                )
            }
        };
        if head.len() < EXCERPT_BYTES {
            let take = (EXCERPT_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        lines.extend(&chunk);
        loop {
            let number = lines.number + 1;
            match lines.next_line() {
                None => break,
                Some(Err(TooLong)) => {
                    return too_large(&format!("line {number} of the streamed reply"), max)
                }
                Some(Ok(line)) => {
                    if let Step::Done(outcome) = on_line(line, number, &mut seen, &head) {
                        drain(&mut resp).await;
                        return outcome;
                    }
                }
            }
        }
    }
    let number = lines.number + 1;
    if let Some(line) = lines.rest() {
        if let Step::Done(outcome) = on_line(line, number, &mut seen, &head) {
            return outcome;
        }
    }
    if seen == 0 {
        // No reply body at all: the status decides.
        return status_outcome(status, retry_after, "");
    }
    Outcome::fail(
        FailureClass::UpstreamUnavailable,
        format!("the streamed reply ended before its final line (after {seen} lines)"),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads what follows a stream's final line for a moment, so a body that ends right after
/// it returns its connection to the pool; lines after the final one are ignored.
async fn drain(resp: &mut reqwest::Response) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut extra = 0usize;
        while let Ok(Some(chunk)) = resp.chunk().await {
            extra += chunk.len();
            if extra > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Bounds the texts an outcome carries.
pub(crate) fn bound_outcome(outcome: Outcome) -> Outcome {
    const MAX: usize = 2 * EXCERPT_BYTES;
    match outcome {
        Outcome::Fail {
            class,
            reason,
            retry_after,
        } => Outcome::Fail {
            class,
            reason: bound(&reason, MAX),
            retry_after,
        },
        Outcome::Error { message } => Outcome::Error {
            message: bound(&message, MAX),
        },
        Outcome::Poison { reason } => Outcome::Poison {
            reason: bound(&reason, MAX),
        },
        Outcome::Done => Outcome::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn value(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn vectors() -> Value {
        let path = format!("{}/conformance/replies.json", env!("CARGO_MANIFEST_DIR"));
        value(&std::fs::read_to_string(path).unwrap_or_default())
    }

    #[test]
    fn statuses_map_to_their_classes() {
        let class = |s: u16| match status_outcome(s, None, "") {
            Outcome::Fail { class, .. } => class.as_str(),
            Outcome::Done => "ok",
            other => panic!("{other:?}"),
        };
        for (s, want) in [
            (200, "ok"),
            (204, "ok"),
            (429, "rate_limited"),
            (408, "upstream_unavailable"),
            (425, "upstream_unavailable"),
            (502, "upstream_unavailable"),
            (503, "upstream_unavailable"),
            (504, "upstream_unavailable"),
            (401, "unauthorized"),
            (403, "unauthorized"),
            (500, "llm_error"),
            (501, "llm_error"),
            (599, "llm_error"),
            (400, "invalid_input"),
            (418, "invalid_input"),
            (302, "invalid_input"),
            (101, "invalid_input"),
        ] {
            assert_eq!(class(s), want, "{s}");
        }
        // Retry-After applies to transient classes only.
        let after = Some(Duration::from_secs(2));
        assert!(matches!(
            status_outcome(503, after, "busy"),
            Outcome::Fail { retry_after: Some(d), ref reason, .. }
                if d == Duration::from_secs(2) && reason.contains("503 Service Unavailable: busy")
        ));
        assert!(matches!(
            status_outcome(400, after, ""),
            Outcome::Fail {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let v = vectors();
        let mut checked = 0;
        for c in v["cases"].as_array().cloned().unwrap_or_default() {
            let Some(h) = c["headers"]["Retry-After"].as_str() else {
                continue;
            };
            let now = SystemTime::UNIX_EPOCH
                + Duration::from_secs(c["now"].as_u64().unwrap_or(1_764_499_000));
            let got = parse_retry_after(h, now).map(|d| d.as_millis() as u64);
            assert_eq!(got, c["expect"]["retry_after_ms"].as_u64(), "{}", c["name"]);
            checked += 1;
        }
        assert!(checked >= 4);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_499_000);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 30 Nov 2025 10:00:00 GMT", now),
            None,
            "a date already past leaves the delay to the policy"
        );
        assert!(parse_retry_after("99999999999999999999999", now).is_some());
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn lines_split_bound_and_keep_the_rest() {
        let mut l = Lines::new(8);
        l.extend(b"ab\r\ncd\n\nlong");
        assert_eq!(l.next_line(), Some(Ok(&b"ab"[..])));
        assert_eq!(l.next_line(), Some(Ok(&b"cd"[..])));
        assert_eq!(l.next_line(), Some(Ok(&b""[..])));
        assert_eq!(l.next_line(), None);
        l.extend(b"er\n");
        assert_eq!(l.next_line(), Some(Ok(&b"longer"[..])));
        assert_eq!(l.number, 4);
        l.extend(b"tail");
        assert_eq!(l.next_line(), None);
        assert_eq!(l.rest(), Some(&b"tail"[..]));
        assert_eq!(l.rest(), None);
        let mut l = Lines::new(4);
        l.extend(b"12345");
        assert_eq!(l.next_line(), Some(Err(TooLong)));
        let mut l = Lines::new(4);
        l.extend(b"12345\n");
        assert_eq!(l.next_line(), Some(Err(TooLong)));
    }

    #[test]
    fn excerpts_and_texts_are_bounded_on_character_boundaries() {
        let body = "é".repeat(5000);
        let e = excerpt(body.as_bytes(), 4096);
        assert!(e.len() < 4096 + 40, "{}", e.len());
        assert!(e.ends_with("(10000 bytes in all)"), "{e}");
        assert_eq!(excerpt(b"short", 4096), "short");
        let b = bound(&body, 101);
        assert!(b.starts_with(&"é".repeat(50)) && b.contains("10000 bytes"));
        let o = bound_outcome(Outcome::fail(FailureClass::LlmError, "x".repeat(100_000)));
        assert!(matches!(o, Outcome::Fail { reason, .. } if reason.len() < 9000));
    }

    #[test]
    fn json_bodies_decide_or_break_the_contract() {
        let ctx = TaskContext::new("m".into());
        let o = json_body(&ctx, 200, None, br#"{"status":"ok","output":{"a":1}}"#);
        assert_eq!(o, Outcome::Done);
        assert_eq!(ctx.final_output(), Some(serde_json::json!({"a": 1})));
        // A transient fail without retry_after_ms takes the header's.
        let header = Some(Duration::from_secs(3));
        let o = json_body(
            &ctx,
            429,
            header,
            br#"{"status":"fail","class":"rate_limited","error":"slow"}"#,
        );
        assert!(matches!(o, Outcome::Fail { retry_after, .. } if retry_after == header));
        let o = json_body(&ctx, 200, None, br#"{"event":"progress"}"#);
        assert!(
            matches!(&o, Outcome::Fail { class: FailureClass::SilentFailure, reason, .. } if reason.contains("an event, not a reply")),
            "{o:?}"
        );
        let o = json_body(&ctx, 200, None, b"  \n");
        assert_eq!(o, Outcome::Done);
    }
}
