//! [`HandlerSpec`]: one `[[handlers]]` entry of the configuration, as a handler factory
//! receives it, and the glob matching of its `kinds`.

use std::time::Duration;

/// One `[[handlers]]` entry: which kinds it serves, its type, its limits, and the type's own
/// keys (`url`, `command`, …) as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    /// The entry's position in `[[handlers]]`, from 0; messages name it `handlers[<index>]`.
    pub index: usize,
    /// The handler type: `http`, `pool`, `exec`, or a name registered in
    /// [`Handlers`](super::Handlers) (`demo`, `noop`, an embedder's own).
    pub type_name: String,
    /// Exact kind names and globs (`*` any run of characters, `?` one character).
    pub kinds: Vec<String>,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// How many attempts of this handler may run at once.
    pub max_concurrent: usize,
    /// The entry's other keys, for the type to read and validate.
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl HandlerSpec {
    /// A spec of `type_name` for every kind, with the given limits and no options (what
    /// `fleet.handler = "<name>"` means).
    pub fn catch_all(type_name: &str, timeout: Duration, max_concurrent: usize) -> HandlerSpec {
        HandlerSpec {
            index: 0,
            type_name: type_name.to_owned(),
            kinds: vec!["*".to_owned()],
            timeout,
            max_concurrent,
            options: serde_json::Map::new(),
        }
    }

    /// How messages name this entry: `handlers[2] (type http)`.
    pub fn label(&self) -> String {
        format!("handlers[{}] (type {})", self.index, self.type_name)
    }

    /// The bounded label of this entry in metrics: `<index>:<type>` (`0:http`).
    pub fn metric_label(&self) -> String {
        format!("{}:{}", self.index, self.type_name)
    }

    /// Whether one of the entry's `kinds` matches `kind`.
    pub fn matches(&self, kind: &str) -> bool {
        self.kinds.iter().any(|p| glob_match(p, kind))
    }

    /// Whether the entry matches every kind (one of its patterns is only `*`s).
    pub fn matches_everything(&self) -> bool {
        self.kinds
            .iter()
            .any(|p| !p.is_empty() && p.bytes().all(|b| b == b'*'))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (the empty one
/// included) and `?` for exactly one; every other character stands for itself. Linear in the
/// lengths for patterns with one `*`, at worst their product.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more character and try again after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        let cases = [
            ("triage_ticket", "triage_ticket", true),
            ("triage_ticket", "triage_tickets", false),
            ("triage_*", "triage_ticket", true),
            ("triage_*", "triage_", true),
            ("triage_*", "triage", false),
            ("*", "", true),
            ("*", "anything/at:all", true),
            ("*_lead", "score_lead", true),
            ("*_lead", "score_leads", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b*c", "abcbc", true),
            ("run_?", "run_1", true),
            ("run_?", "run_12", false),
            ("run_??", "run_12", true),
            ("?", "", false),
            ("**", "x", true),
            ("a*", "ba", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} against {t}");
        }
    }

    #[test]
    fn a_spec_matches_when_any_pattern_does() {
        let mut s = HandlerSpec::catch_all("http", Duration::from_secs(1), 4);
        assert!(s.matches("x") && s.matches_everything());
        s.kinds = vec!["score_lead".into(), "triage_*".into()];
        assert!(s.matches("score_lead") && s.matches("triage_x") && !s.matches("other"));
        assert!(!s.matches_everything());
        s.index = 3;
        assert_eq!(s.label(), "handlers[3] (type http)");
        assert_eq!(s.metric_label(), "3:http");
    }
}
