//! Classification of untyped errors: configurable rules map error text to a failure class.
//! A handler's typed outcome always wins; these rules only see errors that carry no class.
//!
//! Two kinds of rule:
//! - `{ status = 429, class = "rate_limited" }` matches an HTTP status code only as a status
//!   code: a whole token in a status position — after `HTTP`, `HTTP/1.1`, `status`,
//!   `status code`, `code` or `error` (separated by spaces, `:` or `=`, quotes allowed, as in
//!   `"status": 503`), or followed by its reason phrase (`401 Unauthorized`). Digits inside an
//!   id or a longer number (`probe-panic-401`, `15029`, `ticket 74012`) never match.
//! - `{ contains = "rate limit", class = "rate_limited" }` matches whole words, case-insensitive:
//!   the text's words (runs of letters and digits) must contain the rule's words in a row, so
//!   `timeout` matches "request timeout" and "timeout-corp" but not "timeouts".
//!
//! The task's own id and tenant are masked out of the text first (a whole-token occurrence is
//! blanked), so they never decide the class. The first matching rule wins; `unknown` when none
//! does.

use serde::{Deserialize, Serialize};

use crate::handler::FailureClass;

/// One rule: exactly one of `contains` (words) or `status` (an HTTP status code), and the class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Words to look for, in a row, case-insensitive, as whole words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// An HTTP status code (100 to 599), matched only in a status position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The class's wire name.
    pub class: String,
}

impl Rule {
    /// A rule matching whole words.
    pub fn words(contains: &str, class: &str) -> Rule {
        Rule {
            contains: Some(contains.to_owned()),
            status: None,
            class: class.to_owned(),
        }
    }

    /// A rule matching a status code in a status position.
    pub fn status(code: u16, class: &str) -> Rule {
        Rule {
            contains: None,
            status: Some(code),
            class: class.to_owned(),
        }
    }
}

/// What one lowered rule matches.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    /// These lower-case words in a row.
    Words(Vec<String>),
    /// This status code in a status position.
    Status(u16),
}

/// Rules in order; the first match wins, `unknown` when none does.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<(Matcher, FailureClass)>,
}

/// Words that put a following number in a status position (lower case, longest first where
/// one ends another).
const STATUS_WORDS: &[&str] = &[
    "status code",
    "status_code",
    "statuscode",
    "status",
    "http error",
    "http/1.0",
    "http/1.1",
    "http/2.0",
    "http/2",
    "http/3",
    "http",
    "code",
    "error",
];

/// Reason phrases: `<code> <phrase>` puts the code in a status position.
const REASONS: &[(u16, &str)] = &[
    (400, "bad request"),
    (401, "unauthorized"),
    (402, "payment required"),
    (403, "forbidden"),
    (404, "not found"),
    (405, "method not allowed"),
    (408, "request timeout"),
    (409, "conflict"),
    (410, "gone"),
    (413, "payload too large"),
    (413, "content too large"),
    (422, "unprocessable"),
    (425, "too early"),
    (429, "too many requests"),
    (500, "internal server error"),
    (501, "not implemented"),
    (502, "bad gateway"),
    (503, "service unavailable"),
    (504, "gateway timeout"),
    (529, "overloaded"),
];

/// Characters that join the parts of an id (`probe-panic-401`, `acme/7`, `a.b`): a number
/// touching one is part of the id, not a status code.
fn joins_id(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@' | '+' | '=' | ':' | '#')
}

impl Classifier {
    /// Validates and lowers the rules.
    pub fn new(rules: &[Rule]) -> Result<Classifier, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let class = FailureClass::parse(&r.class).ok_or_else(|| {
                format!(
                    "classify.rules[{i}].class = '{}' is unknown; classes are {}",
                    r.class,
                    FailureClass::ALL.map(|c| c.as_str()).join(", ")
                )
            })?;
            let matcher = match (&r.contains, r.status) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(format!(
                        "classify.rules[{i}] must have exactly one of `contains` (words) or \
                         `status` (an HTTP status code)"
                    ))
                }
                (None, Some(code)) => {
                    if !(100..=599).contains(&code) {
                        return Err(format!(
                            "classify.rules[{i}].status = {code} is not an HTTP status code \
                             (100 to 599)"
                        ));
                    }
                    Matcher::Status(code)
                }
                (Some(text), None) => {
                    let words = words(&text.to_lowercase())
                        .into_iter()
                        .map(|(_, w)| w.to_owned())
                        .collect::<Vec<_>>();
                    if words.is_empty() {
                        return Err(format!(
                            "classify.rules[{i}].contains = '{text}' has no words: give letters \
                             or digits to look for"
                        ));
                    }
                    if words.iter().all(|w| w.chars().all(|c| c.is_ascii_digit())) {
                        return Err(format!(
                            "classify.rules[{i}].contains = '{text}' is only a number, which \
                             would match inside ids and other numbers: to match an HTTP status \
                             write {{ status = {text}, class = \"{}\" }}",
                            r.class
                        ));
                    }
                    Matcher::Words(words)
                }
            };
            out.push((matcher, class));
        }
        Ok(Classifier { rules: out })
    }

    /// The class of an error message. `mask` holds the task's own id and tenant: their
    /// whole-token occurrences are blanked first, so they never decide the class.
    pub fn classify(&self, message: &str, mask: &[&str]) -> FailureClass {
        let text = masked(&message.to_lowercase(), mask);
        let tokens = words(&text);
        self.rules
            .iter()
            .find(|(m, _)| match m {
                Matcher::Words(want) => tokens
                    .windows(want.len())
                    .any(|w| w.iter().zip(want).all(|((_, a), b)| *a == b)),
                Matcher::Status(code) => {
                    tokens.iter().any(|(at, t)| is_status(&text, *at, t, *code))
                }
            })
            .map(|(_, c)| *c)
            .unwrap_or(FailureClass::Unknown)
    }
}

/// The words of `text` (runs of letters and digits) with their byte offsets.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// `text` (lower case) with every whole-token occurrence of each of `mask` (an id: not touching
/// another id character) replaced by spaces.
fn masked(text: &str, mask: &[&str]) -> String {
    let mut out = text.to_owned();
    for m in mask {
        let m = m.to_lowercase();
        if m.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = out[from..].find(&m).map(|p| p + from) {
            let end = pos + m.len();
            let before = out[..pos].chars().next_back();
            let after = out[end..].chars().next();
            // `:` and `#` may follow a name as punctuation ("tenant acme: …"); the rest join.
            let part = |c: char| joins_id(c) && c != ':' && c != '#';
            if !before.is_some_and(part) && !after.is_some_and(part) {
                out.replace_range(pos..end, &" ".repeat(m.len()));
            }
            from = end;
        }
    }
    out
}

/// Whether the word `token` at byte `at` of `text` is the status `code` in a status position.
fn is_status(text: &str, at: usize, token: &str, code: u16) -> bool {
    if token.len() != 3 || token.parse::<u16>().ok() != Some(code) {
        return false;
    }
    let before = &text[..at];
    let after = &text[at + token.len()..];
    // Not part of an id or a longer number: `-401`, `401-x`, `1.401`, `401/7`.
    if before.chars().next_back().is_some_and(joins_id) {
        // `http/1.1 503` and `status:503` are fine: the joiner belongs to the status word.
        let lead = before.trim_end_matches([':', '=']);
        if lead.len() == before.len() {
            return false;
        }
    }
    if after
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '/' | '@' | '+' | '='))
        || (after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        return false;
    }
    // A status word right before: `HTTP 401`, `status code: 429`, `"status": 503`, `error 503`.
    let lead = before.trim_end_matches([' ', '\t', ':', '=', '"', '\'']);
    let preceded = lead.len() < before.len() || before.is_empty();
    if preceded
        && STATUS_WORDS.iter().any(|w| {
            lead.strip_suffix(w).is_some_and(|rest| {
                !rest
                    .chars()
                    .next_back()
                    .is_some_and(|c| joins_id(c) && c != ':' && c != '=')
            })
        })
    {
        return true;
    }
    // Its reason phrase right after: `401 Unauthorized`, `503 Service Unavailable`.
    let rest = after.trim_start_matches([' ', '\t']);
    rest.len() < after.len()
        && REASONS.iter().any(|(c, phrase)| {
            *c == code
                && rest
                    .strip_prefix(phrase)
                    .is_some_and(|tail| !tail.chars().next().is_some_and(|c| c.is_alphanumeric()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Classifier {
        let raw = crate::config::RawConfig::defaults().unwrap();
        Classifier::new(&raw.classify.rules).unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            Rule::status(429, "rate_limited"),
            Rule::words("Timed Out", "timeout"),
            Rule::words("HTTP", "upstream_unavailable"),
        ];
        let c = Classifier::new(&rules).unwrap();
        assert_eq!(
            c.classify("HTTP 429 from provider", &[]),
            FailureClass::RateLimited
        );
        assert_eq!(c.classify("request timed out", &[]), FailureClass::Timeout);
        assert_eq!(
            c.classify("HTTP 503", &[]),
            FailureClass::UpstreamUnavailable
        );
        assert_eq!(c.classify("segfault", &[]), FailureClass::Unknown);
    }

    /// Issue 11 #1, with the shipped rules: digits inside ids and numbers decide nothing.
    #[test]
    fn numbers_in_ids_never_decide_the_class() {
        let c = defaults();
        for text in [
            "could not load ticket 74012",
            "handler panicked: demo agent crashed on task probe-panic-401",
            "15029",
            "order 401 has no lines",
            "ticket 503 not in cache",
            "record acme/401 is locked",
            "value 4012 out of range",
            "version 1.401 is unsupported",
            "the agent lost its train of thought",
        ] {
            assert_eq!(c.classify(text, &[]), FailureClass::Unknown, "{text}");
        }
    }

    #[test]
    fn status_codes_match_in_status_positions() {
        let c = defaults();
        for (text, want) in [
            ("HTTP 401", FailureClass::Unauthorized),
            (
                "upstream returned HTTP/1.1 503",
                FailureClass::UpstreamUnavailable,
            ),
            ("status 503", FailureClass::UpstreamUnavailable),
            ("status code: 429", FailureClass::RateLimited),
            ("401 Unauthorized", FailureClass::Unauthorized),
            ("provider said: 403 Forbidden.", FailureClass::Unauthorized),
            ("error 503", FailureClass::UpstreamUnavailable),
            ("Error code 429 from the API", FailureClass::RateLimited),
            (
                r#"{"status": 502, "body": "x"}"#,
                FailureClass::UpstreamUnavailable,
            ),
            ("status=429", FailureClass::RateLimited),
            (
                "got 503 Service Unavailable",
                FailureClass::UpstreamUnavailable,
            ),
            ("rate limit exceeded", FailureClass::RateLimited),
            ("Rate-Limited by provider", FailureClass::RateLimited),
            ("request timed out after 30s", FailureClass::Timeout),
            ("context window exceeded", FailureClass::ContextOverflow),
            (
                "Connection refused (os error 111)",
                FailureClass::UpstreamUnavailable,
            ),
        ] {
            assert_eq!(c.classify(text, &[]), want, "{text}");
        }
        // Words match whole: a longer word is another word.
        assert_eq!(
            c.classify("timeouts were raised", &[]),
            FailureClass::Unknown
        );
    }

    #[test]
    fn the_tasks_own_id_and_tenant_are_masked() {
        let c = defaults();
        // Unmasked these would be a status (`error:503`) and a word (`timeout`).
        assert_eq!(
            c.classify("job error:503 gave up", &[]),
            FailureClass::UpstreamUnavailable
        );
        assert_eq!(
            c.classify("job error:503 gave up", &["error:503", "acme"]),
            FailureClass::Unknown
        );
        assert_eq!(
            c.classify("tenant timeout-corp: bad answer", &["t-1", "timeout-corp"]),
            FailureClass::Unknown
        );
        // Only whole tokens are masked: the real status beside the id still counts.
        assert_eq!(
            c.classify("task 401 failed: HTTP 429", &["401", "acme"]),
            FailureClass::RateLimited
        );
        assert_eq!(
            c.classify("task x401 failed: HTTP 401", &["x401"]),
            FailureClass::Unauthorized
        );
    }

    #[test]
    fn rules_are_validated_with_a_clear_message() {
        let err = |rules: &[Rule]| Classifier::new(rules).unwrap_err();
        assert!(err(&[Rule::words("x", "flaky")]).contains("classify.rules[0].class = 'flaky'"));
        let e = err(&[
            Rule::words("ok", "timeout"),
            Rule::words("429", "rate_limited"),
        ]);
        assert!(
            e.contains("classify.rules[1].contains = '429' is only a number")
                && e.contains("{ status = 429, class = \"rate_limited\" }"),
            "{e}"
        );
        assert!(err(&[Rule::status(42, "timeout")]).contains("status = 42 is not an HTTP status"));
        assert!(err(&[Rule::words(" - ", "timeout")]).contains("has no words"));
        let both = Rule {
            contains: Some("x".into()),
            status: Some(500),
            class: "timeout".into(),
        };
        assert!(err(&[both]).contains("exactly one of"));
    }
}
