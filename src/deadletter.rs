//! The dead-letter record: everything an operator needs to understand a failed task and replay
//! it, written as the fields of one entry in the tenant's dead-letter stream.

use std::collections::BTreeMap;

use crate::handler::FailureClass;
use crate::task::{AttemptRecord, Task};

/// Longest error message kept, in bytes.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Longest detail kept, in bytes.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024;

/// What an operator should most likely do with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replay as it is: the cause was transient and may be gone.
    Retry,
    /// Fix the payload or the agent, then replay with the fix.
    ReplayWithFix,
    /// Side effects may exist or the cause is unclear: a person must look first.
    ManualReview,
    /// Not worth running any more.
    Discard,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::ReplayWithFix => "replay_with_fix",
            Action::ManualReview => "manual_review",
            Action::Discard => "discard",
        }
    }

    /// The usual action for a failure class.
    pub fn for_class(class: FailureClass) -> Action {
        match class {
            FailureClass::RateLimited
            | FailureClass::Timeout
            | FailureClass::UpstreamUnavailable
            | FailureClass::LlmError => Action::Retry,
            FailureClass::InvalidInput
            | FailureClass::ContextOverflow
            | FailureClass::SchemaMismatch
            | FailureClass::MalformedEntry
            | FailureClass::NoHandler => Action::ReplayWithFix,
            FailureClass::Unauthorized
            | FailureClass::PartialExecution
            | FailureClass::CrashLoop
            | FailureClass::AgentCrashed
            | FailureClass::SilentFailure
            | FailureClass::Unknown => Action::ManualReview,
            FailureClass::Expired => Action::Discard,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn bounded(s: &str, max: usize) -> String {
    match cut(s, max) {
        (whole, false) => whole.to_owned(),
        (head, true) => format!("{head}..."),
    }
}

/// What [`bounded`] keeps of `s`, and whether it cut (then it appends `...`).
fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The error message with its variable parts replaced: quoted values by `<str>`, long hex and
/// UUID-like ids by `<id>`, numbers by `<n>`. Identical root causes give identical patterns.
pub fn error_pattern(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    pattern_pieces(message, |piece| out.push_str(piece));
    out
}

/// Hands the pieces of `message`'s [`error_pattern`] to `emit`, in order, without allocating
/// (a fingerprint is hashed from them directly).
fn pattern_pieces(message: &str, mut emit: impl FnMut(&str)) {
    let bytes = message.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            if let Some(close) = message[i + 1..].find(c as char) {
                emit("<str>");
                i += close + 2;
                continue;
            }
        }
        if c.is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-' || bytes[i] == b'_')
            {
                i += 1;
            }
            emit(word_pattern(&message[start..i]));
            continue;
        }
        let len = message[i..].chars().next().map_or(1, char::len_utf8);
        emit(&message[i..i + len]);
        i += len;
    }
}

/// One word of an error message (ASCII letters, digits, `-` and `_`) as its pattern shows it.
fn word_pattern(word: &str) -> &str {
    let digits = word.bytes().filter(u8::is_ascii_digit).count();
    let hexish = word.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    if digits > 0
        && word
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'_')
    {
        "<n>"
    } else if (hexish && word.len() >= 8 && digits > 0) || (digits >= 4 && digits * 2 >= word.len())
    {
        "<id>"
    } else if word.starts_with(|c: char| c.is_ascii_digit()) {
        "<n>"
    } else {
        word
    }
}

/// A short stable hash of kind, class and error pattern: the key dead letters group by.
pub fn fingerprint(kind: &str, class: FailureClass, pattern: &str) -> String {
    Fingerprint::of_pattern(kind, class, pattern).to_string()
}

/// The fingerprint of a failure as a number (shown as 12 hex digits, the dead letters'
/// `fingerprint` field): what log lines about one cause are grouped by, computed without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of kind, class and an error pattern ([`fingerprint`] as a number).
    pub fn of_pattern(kind: &str, class: FailureClass, pattern: &str) -> Fingerprint {
        let mut h = Fnv::of(kind, class);
        h.write(pattern);
        Fingerprint(h.0 >> 16)
    }

    /// The fingerprint a dead letter with this kind, class and error gets: the error bounded
    /// to [`MAX_ERROR_BYTES`], then normalised by [`error_pattern`].
    pub fn of_error(kind: &str, class: FailureClass, error: &str) -> Fingerprint {
        let mut h = Fnv::of(kind, class);
        let (kept, cut) = cut(error, MAX_ERROR_BYTES);
        pattern_pieces(kept, |piece| h.write(piece));
        if cut {
            h.write("...");
        }
        Fingerprint(h.0 >> 16)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// FNV-1a, 64 bit: stable across processes and versions, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    /// The hash of kind and class, each followed by a 0 byte, ready for the pattern.
    fn of(kind: &str, class: FailureClass) -> Fnv {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.write(kind);
        h.write("\0");
        h.write(class.as_str());
        h.write("\0");
        h
    }

    fn write(&mut self, text: &str) {
        for b in text.bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Names of the dead-letter fields.
pub mod field {
    /// The lane stream the entry came from.
    pub const ORIG_LANE: &str = "orig_lane";
    /// The entry id in that lane.
    pub const ORIG_ID: &str = "orig_id";
    /// The failure class.
    pub const CLASS: &str = "class";
    /// The last error message (bounded).
    pub const ERROR: &str = "error";
    /// More detail (bounded).
    pub const DETAIL: &str = "detail";
    /// The error message with variable parts normalised.
    pub const ERROR_PATTERN: &str = "error_pattern";
    /// Hash of kind, class and error pattern.
    pub const FINGERPRINT: &str = "fingerprint";
    /// How many times the entry started on a member: its delivery count minus the read
    /// (written by the dead-letter script from the PEL).
    pub const DELIVERIES: &str = "deliveries";
    /// Partial output reported by the handler (JSON).
    pub const PARTIAL_OUTPUT: &str = "partial_output";
    /// The member that ran the last attempt.
    pub const MEMBER: &str = "member";
    /// When the first attempt failed, ms.
    pub const FIRST_FAILED_AT: &str = "first_failed_at";
    /// When the task was dead-lettered, ms.
    pub const DEAD_LETTERED_AT: &str = "dead_lettered_at";
    /// The recommended action.
    pub const ACTION: &str = "recommended_action";
    /// For entries that could not be read as a task: the raw fields as read, a JSON object
    /// encoded by [`super::encode_raw`] (exact bytes recoverable with [`super::decode_raw`]).
    pub const RAW: &str = "raw";
    /// The producer's own fields of the task, a JSON object of strings.
    pub const EXTRA: &str = crate::task::field::EXTRA;
    /// The step the task failed in, when known: the side-effecting step left open, else the
    /// last step started and not completed.
    pub const FAILED_STEP: &str = "failed_step";
}

/// The prefix marking a base64-encoded name in a `raw` object.
pub const RAW_BASE64_NAME: &str = "base64:";
/// The member naming a base64-encoded value in a `raw` object: `{"base64": "…"}`.
pub const RAW_BASE64_VALUE: &str = "base64";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (RFC 4648, padding optional); `None` when it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.trim_end_matches('=').bytes().collect();
    if digits.len() % 4 == 1 || text.len() - digits.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            let v = B64.iter().position(|&c| c == d)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// The raw fields of an entry as the JSON object kept in a dead letter's `raw`: a name or value
/// that is UTF-8 text is kept as it is; a value that is not is `{"base64": "…"}`, and a name
/// that is not (or that starts with `base64:`) is `base64:` followed by its base64. Every byte
/// is recoverable with [`decode_raw`]. A name repeated in the entry keeps its last value.
pub fn encode_raw(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let map: BTreeMap<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| {
            let name = match std::str::from_utf8(k) {
                Ok(n) if !n.starts_with(RAW_BASE64_NAME) => n.to_owned(),
                _ => format!("{RAW_BASE64_NAME}{}", base64_encode(k)),
            };
            let value = match std::str::from_utf8(v) {
                Ok(v) => serde_json::Value::String(v.to_owned()),
                Err(_) => serde_json::json!({ RAW_BASE64_VALUE: base64_encode(v) }),
            };
            (name, value)
        })
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// The exact fields (bytes) of a `raw` object written by [`encode_raw`], sorted by name.
pub fn decode_raw(raw: &str) -> Result<crate::task::Fields, String> {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| format!("raw is not a JSON object: {e}"))?;
    map.into_iter()
        .map(|(k, v)| {
            let name = match k.strip_prefix(RAW_BASE64_NAME) {
                Some(b) => {
                    base64_decode(b).ok_or_else(|| format!("raw name {k:?} is not base64"))?
                }
                None => k.clone().into_bytes(),
            };
            let value = match v {
                serde_json::Value::String(s) => s.into_bytes(),
                serde_json::Value::Object(o) => o
                    .get(RAW_BASE64_VALUE)
                    .and_then(|b| b.as_str())
                    .and_then(base64_decode)
                    .ok_or_else(|| format!("raw value of {k:?} is not {{\"base64\": …}}"))?,
                other => return Err(format!("raw value of {k:?} is {other}, not text")),
            };
            Ok((name, value))
        })
        .collect()
}

/// Everything known about a task at the moment it is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Lane stream key of the entry.
    pub orig_lane: String,
    /// Entry id in the lane.
    pub orig_id: String,
    /// The task, when the entry could be read as one.
    pub task: Option<Task>,
    /// For unreadable entries: the raw fields, bytes as read.
    pub raw: Option<crate::task::Fields>,
    /// Failure class.
    pub class: FailureClass,
    /// Error message.
    pub error: String,
    /// Further detail.
    pub detail: Option<String>,
    /// Steps recorded across attempts (completed ones with their outputs, and side-effecting
    /// ones left open). The dead-letter script adds the steps recorded in Redis for the entry
    /// (`recorded_steps`), so a step recorded after this record was built is not lost.
    pub steps: Vec<crate::task::Step>,
    /// The step the task failed in, when known.
    pub failed_step: Option<String>,
    /// Partial output of the last attempt.
    pub partial_output: Option<serde_json::Value>,
    /// The member that ran the last attempt.
    pub member: String,
    /// When the first attempt failed.
    pub first_failed_at_ms: u64,
    /// When the task was dead-lettered.
    pub dead_lettered_at_ms: u64,
}

impl DeadLetter {
    /// The recommended action.
    pub fn action(&self) -> Action {
        Action::for_class(self.class)
    }

    /// The task id the dead letter shows: the task's, or for an entry that could not be read
    /// as a task its raw `task_id` when valid, else `x-<entry id>` (the name the contract gives
    /// an entry without one, and the id a replay of it gets).
    pub fn task_id(&self) -> String {
        if let Some(task) = &self.task {
            return task.task_id.clone();
        }
        self.raw_text(crate::task::field::TASK_ID)
            .filter(|id| crate::task::validate_task_id(id).is_ok())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("x-{}", self.orig_id))
    }

    /// The task_id whose record the dead letter changes: the task's, or for an entry that
    /// could not be read as a task the one its record was named by
    /// ([`entry_task_id`](crate::records::entry_task_id)); `None` when its raw `task_id` is
    /// invalid (no record).
    pub fn record_task_id(&self) -> Option<String> {
        match (&self.task, &self.raw) {
            (Some(task), _) => Some(task.task_id.clone()),
            (None, Some(raw)) => crate::records::entry_task_id(raw, &self.orig_id),
            (None, None) => None,
        }
    }

    /// The last value of the raw field `name` of an unreadable entry, when it is UTF-8 text
    /// (unchecked: validate it before use).
    pub fn raw_text(&self, name: &str) -> Option<&str> {
        self.raw
            .as_ref()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The fingerprint its `fingerprint` field holds (kind, class, error pattern).
    pub fn fingerprint(&self) -> Fingerprint {
        let kind = self.task.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        Fingerprint::of_error(kind, self.class, &self.error)
    }

    /// The fields of the dead-letter stream entry.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let error = bounded(&self.error, MAX_ERROR_BYTES);
        let pattern = error_pattern(&error);
        let kind = self.task.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        let mut f = Vec::with_capacity(28);
        if let Some(task) = &self.task {
            let mut task = task.clone();
            task.steps = self.steps.clone();
            f.extend(task.contract_fields());
            // The producer's own fields, as one JSON object: their names cannot collide with
            // the dead letter's own fields.
            if let Some(extra) = task.extra_json() {
                f.push((field::EXTRA, extra));
            }
        } else if let Some(raw) = &self.raw {
            f.push((crate::task::field::TASK_ID, self.task_id()));
            f.push((field::RAW, encode_raw(raw)));
        }
        f.push((field::ORIG_LANE, self.orig_lane.clone()));
        f.push((field::ORIG_ID, self.orig_id.clone()));
        f.push((field::CLASS, self.class.as_str().to_owned()));
        f.push((field::ERROR, error));
        if let Some(step) = &self.failed_step {
            f.push((field::FAILED_STEP, step.clone()));
        }
        if let Some(d) = &self.detail {
            f.push((field::DETAIL, bounded(d, MAX_DETAIL_BYTES)));
        }
        f.push((field::FINGERPRINT, fingerprint(kind, self.class, &pattern)));
        f.push((field::ERROR_PATTERN, pattern));
        if let Some(p) = &self.partial_output {
            f.push((
                field::PARTIAL_OUTPUT,
                bounded(&p.to_string(), MAX_DETAIL_BYTES),
            ));
        }
        f.push((field::MEMBER, self.member.clone()));
        f.push((field::FIRST_FAILED_AT, self.first_failed_at_ms.to_string()));
        f.push((
            field::DEAD_LETTERED_AT,
            self.dead_lettered_at_ms.to_string(),
        ));
        f.push((field::ACTION, self.action().as_str().to_owned()));
        f
    }
}

/// The first failure time recorded in a task's history, or `now` for a first failure.
pub fn first_failed_at(history: &[AttemptRecord], now_ms: u64) -> u64 {
    history.first().map(|r| r.at_ms).unwrap_or(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_group_identical_causes() {
        let a = error_pattern(
            "rate limited by 'gpt-4o' for ticket 123456, retry in 30s (req 9f8e7d6c5b4a)",
        );
        let b =
            error_pattern("rate limited by 'claude' for ticket 99, retry in 5s (req 0123abcd4567)");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "rate limited by <str> for ticket <n>, retry in <n> (req <id>)"
        );
        assert_eq!(
            fingerprint("k", FailureClass::RateLimited, &a),
            fingerprint("k", FailureClass::RateLimited, &b)
        );
        assert_ne!(
            fingerprint("k", FailureClass::RateLimited, &a),
            fingerprint("k", FailureClass::Timeout, &a)
        );
        assert_eq!(error_pattern("tool failed"), "tool failed");
    }

    /// The pattern as it was built before it was streamed (over chars, a String per word): the
    /// reference the streamed one must equal.
    fn char_pattern(message: &str) -> String {
        let mut out = String::new();
        let chars: Vec<char> = message.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '"' || c == '\'' || c == '`' {
                if let Some(close) = chars[i + 1..].iter().position(|&d| d == c) {
                    out.push_str("<str>");
                    i += close + 2;
                    continue;
                }
            }
            if c.is_ascii_alphanumeric() {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '_')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let digits = word.chars().filter(|c| c.is_ascii_digit()).count();
                let hexish = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
                if word
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '_')
                    && digits > 0
                {
                    out.push_str("<n>");
                } else if (hexish && word.len() >= 8 && digits > 0)
                    || (digits >= 4 && digits * 2 >= word.len())
                {
                    out.push_str("<id>");
                } else if word.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push_str("<n>");
                } else {
                    out.push_str(&word);
                }
                continue;
            }
            out.push(c);
            i += 1;
        }
        out
    }

    /// A fingerprint hashed from the pattern's pieces is the dead letter's, for short, long
    /// (cut) and non-ASCII errors, and the streamed pattern is the one the old code built.
    #[test]
    fn fingerprints_of_errors_match_the_dead_letters() {
        let long = format!("{} and 'x'", "é tool 42 failed ".repeat(90));
        for error in [
            "",
            "tool failed",
            "rate limited by 'gpt-4o' for ticket 123456, retry in 30s (req 9f8e7d6c5b4a)",
            "unclosed 'quote and `ticks` and \"dq\" 3.14 v2 0x1f 2024-01-02 a_b-c 12ab",
            "ünïcödé 'ß' 9000 ms — ok",
            long.as_str(),
            &"x".repeat(2000),
        ] {
            for (kind, class) in [
                ("k", FailureClass::RateLimited),
                ("", FailureClass::MalformedEntry),
            ] {
                let via_text = fingerprint(
                    kind,
                    class,
                    &error_pattern(&bounded(error, MAX_ERROR_BYTES)),
                );
                assert_eq!(
                    Fingerprint::of_error(kind, class, error).to_string(),
                    via_text,
                    "{error}"
                );
            }
            assert_eq!(error_pattern(error), char_pattern(error), "{error}");
        }
        assert_eq!(
            error_pattern("unclosed 'quote 12ab 3.14 0x1f a_b ß"),
            "unclosed 'quote <n> <n>.<n> <n> a_b ß"
        );
        assert_eq!(
            error_pattern("id 550e8400-e29b-41d4-a716-446655440000 v2 ab12cd34"),
            "id <id> v2 <id>"
        );
    }

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        let s = "é".repeat(600);
        let b = bounded(&s, 1024);
        assert!(b.len() <= 1024 && b.ends_with("..."));
        assert_eq!(bounded("short", 10), "short");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Z").is_none());
    }

    /// Every byte of an unreadable entry comes back from its dead letter's `raw`.
    #[test]
    fn raw_keeps_exact_bytes() {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"kind".to_vec(), b"k".to_vec()),
            (b"prompt_version".to_vec(), b"v\xff\xfe1".to_vec()),
            (b"\xc3\x28name".to_vec(), b"\x00\x80".to_vec()),
            (b"base64:looks-coded".to_vec(), b"plain".to_vec()),
            (b"task_id".to_vec(), b"t-1".to_vec()),
        ];
        let dl = DeadLetter {
            orig_lane: "lane".into(),
            orig_id: "1-0".into(),
            task: None,
            raw: Some(fields.clone()),
            class: FailureClass::MalformedEntry,
            error: "field 'prompt_version' is not valid UTF-8".into(),
            detail: None,
            steps: Vec::new(),
            failed_step: None,
            partial_output: None,
            member: "m".into(),
            first_failed_at_ms: 1,
            dead_lettered_at_ms: 1,
        };
        let out = dl.to_fields();
        let raw = &out.iter().find(|(k, _)| *k == field::RAW).unwrap().1;
        assert!(!raw.contains('\u{fffd}'), "{raw}");
        let mut back = decode_raw(raw).unwrap();
        let mut want = fields;
        back.sort();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(out[0], ("task_id", "t-1".to_owned()));
    }

    /// The producer's own fields are one JSON field of the dead letter, so a producer field
    /// named like a dead-letter field (`class`) cannot overwrite it.
    #[test]
    fn own_fields_go_into_extra() {
        let task = Task::from_fields(
            "acme",
            "1-0",
            &[
                ("kind", "k"),
                ("payload", "{}"),
                ("class", "billing"),
                ("tool_version", "1.4.2"),
            ]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>(),
            &crate::task::Limits::default(),
        )
        .unwrap();
        let dl = DeadLetter {
            orig_lane: "lane".into(),
            orig_id: "1-0".into(),
            task: Some(task),
            raw: None,
            class: FailureClass::Timeout,
            error: "timed out".into(),
            detail: None,
            steps: Vec::new(),
            failed_step: None,
            partial_output: None,
            member: "m".into(),
            first_failed_at_ms: 1,
            dead_lettered_at_ms: 1,
        };
        let out = dl.to_fields();
        let get = |n: &str| {
            out.iter()
                .filter(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(field::CLASS), ["timeout"]);
        let extra: serde_json::Value = serde_json::from_str(get(field::EXTRA)[0]).unwrap();
        assert_eq!(
            extra,
            serde_json::json!({"class": "billing", "tool_version": "1.4.2"})
        );
    }
}
