//! Classification of untyped errors: configurable rules map error text to a failure class.
//! A handler's typed outcome always wins; these rules only see errors that carry no class.

use serde::{Deserialize, Serialize};

use crate::handler::FailureClass;

/// One rule: if the error text contains `contains` (ignoring case), the class is `class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Text to look for, case-insensitive.
    pub contains: String,
    /// The class's wire name.
    pub class: String,
}

/// Rules in order; the first match wins, `unknown` when none does.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<(String, FailureClass)>,
}

impl Classifier {
    /// Validates and lowers the rules.
    pub fn new(rules: &[Rule]) -> Result<Classifier, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            if r.contains.trim().is_empty() {
                return Err(format!("classify.rules[{i}].contains must not be empty"));
            }
            let class = FailureClass::parse(&r.class).ok_or_else(|| {
                format!(
                    "classify.rules[{i}].class = '{}' is unknown; classes are {}",
                    r.class,
                    FailureClass::ALL.map(|c| c.as_str()).join(", ")
                )
            })?;
            out.push((r.contains.to_lowercase(), class));
        }
        Ok(Classifier { rules: out })
    }

    /// The class of an error message.
    pub fn classify(&self, message: &str) -> FailureClass {
        let lower = message.to_lowercase();
        self.rules
            .iter()
            .find(|(needle, _)| lower.contains(needle.as_str()))
            .map(|(_, c)| *c)
            .unwrap_or(FailureClass::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            Rule {
                contains: "429".into(),
                class: "rate_limited".into(),
            },
            Rule {
                contains: "Timed Out".into(),
                class: "timeout".into(),
            },
            Rule {
                contains: "HTTP".into(),
                class: "upstream_unavailable".into(),
            },
        ];
        let c = Classifier::new(&rules).unwrap();
        assert_eq!(
            c.classify("HTTP 429 from provider"),
            FailureClass::RateLimited
        );
        assert_eq!(c.classify("request timed out"), FailureClass::Timeout);
        assert_eq!(c.classify("HTTP 503"), FailureClass::UpstreamUnavailable);
        assert_eq!(c.classify("segfault"), FailureClass::Unknown);
        let bad = [Rule {
            contains: "x".into(),
            class: "flaky".into(),
        }];
        assert!(Classifier::new(&bad)
            .unwrap_err()
            .contains("classify.rules[0].class = 'flaky'"));
    }
}
