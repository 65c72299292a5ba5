//! The review lifecycle of a dead letter, pure: `new` → `in_review` (assigned to an operator) →
//! `escalated` (to the tenant or a named team) → ended by replay, resolve or discard (the
//! record goes with the dead letter). A fold's members are `folded`: their representative's
//! review stands for them. The records are JSON kept by scripts/lib/review.lua; this module
//! reads them and checks what operators ask.

use serde::{Deserialize, Serialize};

/// Where a dead letter stands in its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Nobody owns it yet (no record, or a record with notes only).
    New,
    /// Assigned to an operator.
    InReview,
    /// Escalated to its tenant or a named team.
    Escalated,
    /// A member of a fold: its representative's review stands for it.
    Folded,
}

impl ReviewState {
    /// Every state, in order.
    pub const ALL: [ReviewState; 4] = [
        ReviewState::New,
        ReviewState::InReview,
        ReviewState::Escalated,
        ReviewState::Folded,
    ];

    /// The wire name (`new`, `in_review`, `escalated`, `folded`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ReviewState::New => "new",
            ReviewState::InReview => "in_review",
            ReviewState::Escalated => "escalated",
            ReviewState::Folded => "folded",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<ReviewState> {
        ReviewState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether someone owns a dead letter in this state (everything but `new`).
    pub fn owned(&self) -> bool {
        *self != ReviewState::New
    }
}

/// One move or note in a record's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogItem {
    /// When (server clock, ms, as text).
    #[serde(default)]
    pub at: String,
    /// Who (the operator).
    #[serde(default)]
    pub by: String,
    /// `assign`, `escalate`, `note` or `fold`.
    #[serde(default)]
    pub act: String,
    /// The assignee, the escalation's target, or the folded fingerprint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// A note's text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// The reason given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
    /// The admin command.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmd: String,
    /// For an item merged by a fold: the member it came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
}

impl LogItem {
    /// When, ms (0 when unreadable).
    pub fn at_ms(&self) -> u64 {
        self.at.parse().unwrap_or(0)
    }
}

/// A review record as stored (scripts/lib/review.lua).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// `new`, `in_review` or `escalated`.
    #[serde(default)]
    pub state: String,
    /// Who it is assigned to (`""`: nobody).
    #[serde(default)]
    pub assignee: String,
    /// Where it was escalated (`tenant` or a team; `""`: not escalated).
    #[serde(default)]
    pub escalated_to: String,
    /// The dead letter's fingerprint.
    #[serde(default)]
    pub fp: String,
    /// Since when it is in its state (server clock, ms, as text).
    #[serde(default)]
    pub since: String,
    /// The fingerprint it represents, when it is a fold's representative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<String>,
    /// The last moves and notes, oldest first.
    #[serde(default)]
    pub log: Vec<LogItem>,
    /// How many older log items were let go.
    #[serde(default)]
    pub dropped: u64,
}

impl ReviewRecord {
    /// Reads a record's JSON; `None` when it does not read.
    pub fn parse(json: &str) -> Option<ReviewRecord> {
        if json.is_empty() {
            return None;
        }
        serde_json::from_str(json).ok()
    }

    /// The record's state (`new` when unreadable).
    pub fn state(&self) -> ReviewState {
        match ReviewState::parse(&self.state) {
            Some(ReviewState::Folded) | None => ReviewState::New,
            Some(s) => s,
        }
    }

    /// Since when it is in its state, ms.
    pub fn since_ms(&self) -> u64 {
        self.since.parse().unwrap_or(0)
    }
}

/// A dead letter's review as operators see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    /// Its own record, or (for a fold's member) its representative's.
    pub record: Option<ReviewRecord>,
    /// Its fold's representative (an entry id of the same tenant): itself when it represents
    /// one, another dead letter when it is a member.
    pub representative: Option<String>,
    /// How many dead letters the fold holds (its representative included), when known.
    pub fold_count: Option<u64>,
}

impl Review {
    /// The review of dead letter `id` from what a scan returns: the record's JSON (`""`
    /// without one) and the fold's representative (`""` when none).
    pub fn from_scan(record: &str, representative: &str) -> Review {
        Review {
            record: ReviewRecord::parse(record),
            representative: Some(representative.to_owned()).filter(|r| !r.is_empty()),
            fold_count: None,
        }
    }

    /// Whether the dead letter `id` is a member of a fold (not its representative).
    pub fn is_member(&self, id: &str) -> bool {
        self.representative.as_deref().is_some_and(|r| r != id)
    }

    /// Whether the dead letter `id` represents a fold.
    pub fn represents(&self, id: &str) -> bool {
        self.representative.as_deref() == Some(id)
    }

    /// The dead letter `id`'s state.
    pub fn state(&self, id: &str) -> ReviewState {
        if self.is_member(id) {
            return ReviewState::Folded;
        }
        self.record
            .as_ref()
            .map(ReviewRecord::state)
            .unwrap_or(ReviewState::New)
    }

    /// Its assignee (a member's is its representative's), `""` for none.
    pub fn assignee(&self) -> &str {
        self.record.as_ref().map_or("", |r| r.assignee.as_str())
    }

    /// Where it was escalated (a member: its representative), `""` for nowhere.
    pub fn escalated_to(&self) -> &str {
        self.record.as_ref().map_or("", |r| r.escalated_to.as_str())
    }

    /// The short form a list row shows: `new`, `in_review:ana`, `escalated:tenant`,
    /// `folded`, with `fold×N` for a representative.
    pub fn label(&self, id: &str) -> String {
        let state = self.state(id);
        let mut s = match state {
            ReviewState::InReview => format!("in_review:{}", self.assignee()),
            ReviewState::Escalated => format!("escalated:{}", self.escalated_to()),
            other => other.as_str().to_owned(),
        };
        if self.represents(id) {
            match self.fold_count {
                Some(n) => s.push_str(&format!(" fold×{n}")),
                None => s.push_str(" fold"),
            }
        }
        s
    }

    /// The review of dead letter `dl` as JSON for `dlq show --json`, the API and the list rows
    /// (`log`: the record's log too; its items' `from` are entry ids of the same tenant).
    pub fn to_json(&self, dl: &super::select::DlId, log: bool) -> serde_json::Value {
        let id = dl.id.as_str();
        let mut m = serde_json::Map::new();
        m.insert("state".into(), self.state(id).as_str().into());
        m.insert("assignee".into(), self.assignee().into());
        m.insert("escalated_to".into(), self.escalated_to().into());
        if let Some(r) = &self.record {
            m.insert("since".into(), r.since_ms().into());
        }
        if let Some(rep) = &self.representative {
            let mut f = serde_json::Map::new();
            f.insert(
                "representative".into(),
                format!("{}/{rep}", dl.tenant).into(),
            );
            f.insert("represents".into(), self.represents(id).into());
            if let Some(n) = self.fold_count {
                f.insert("count".into(), n.into());
            }
            if let Some(fp) = self.record.as_ref().and_then(|r| r.fold.clone()) {
                f.insert("fingerprint".into(), fp.into());
            }
            m.insert("fold".into(), f.into());
        }
        if log {
            let items = self
                .record
                .as_ref()
                .map(|r| r.log.clone())
                .unwrap_or_default();
            m.insert(
                "log".into(),
                serde_json::to_value(items).unwrap_or(serde_json::Value::Null),
            );
            if let Some(r) = self.record.as_ref().filter(|r| r.dropped > 0) {
                m.insert("log_dropped".into(), r.dropped.into());
            }
        }
        serde_json::Value::Object(m)
    }
}

/// The word `escalate --to` takes for the dead letter's own tenant.
pub const TO_TENANT: &str = "tenant";

/// Checks an assignee: 1 to 128 printable characters.
pub fn validate_assignee(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(format!(
            "--to '{name}' is not an assignee: use 1 to 128 printable characters (an operator's name)"
        ));
    }
    Ok(())
}

/// Checks an escalation's target: `tenant`, or a team's name (1 to 64 of `A-Z a-z 0-9 _ - . @`).
pub fn validate_escalation(to: &str) -> Result<(), String> {
    if to == TO_TENANT {
        return Ok(());
    }
    if to.is_empty()
        || to.len() > 64
        || !to
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Err(format!(
            "--to '{to}' is not an escalation target: `tenant` (the dead letter's own tenant, \
             notified when it has a target for escalations) or a team's name (1 to 64 ASCII \
             letters, digits, '_', '-', '.', '@')"
        ));
    }
    Ok(())
}

/// The longest note, bytes.
pub const MAX_NOTE_BYTES: usize = 2048;

/// Checks a note: 1 to 2048 bytes of text (line breaks and tabs allowed, no other control
/// characters).
pub fn validate_note(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("--text must say something".into());
    }
    if text.len() > MAX_NOTE_BYTES
        || text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!(
            "--text must be at most {MAX_NOTE_BYTES} bytes of text (line breaks and tabs \
             allowed, no other control characters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_and_members_take_their_representatives_review() {
        let json = r#"{"state":"in_review","assignee":"ana","escalated_to":"","fp":"ab12",
            "since":"1763800000000","fold":"ab12","log":[{"at":"1","by":"ana@ops","act":"assign",
            "to":"ana","why":"mine","cmd":"c1"},{"at":"2","by":"bo","act":"note","text":"seen"}]}"#;
        let r = ReviewRecord::parse(json).unwrap();
        assert_eq!(r.state(), ReviewState::InReview);
        assert_eq!(r.log.iter().filter(|i| i.act == "note").count(), 1);
        let rep = Review::from_scan(json, "1-0");
        assert!(rep.represents("1-0") && !rep.is_member("1-0"));
        assert_eq!(rep.state("1-0"), ReviewState::InReview);
        assert_eq!(rep.label("1-0"), "in_review:ana fold");
        let member = Review::from_scan(json, "1-0");
        assert_eq!(member.state("2-0"), ReviewState::Folded);
        assert_eq!(member.assignee(), "ana");
        let dl = super::super::select::DlId {
            tenant: "acme".into(),
            id: "2-0".into(),
        };
        let v = member.to_json(&dl, true);
        assert_eq!(v["state"], "folded");
        assert_eq!(v["fold"]["representative"], "acme/1-0");
        assert_eq!(v["log"][1]["text"], "seen");
        let none = Review::from_scan("", "");
        assert_eq!(none.state("3-0"), ReviewState::New);
        assert!(!none.state("3-0").owned());
        assert_eq!(ReviewRecord::parse("not json"), None);
    }

    #[test]
    fn names_targets_and_notes_are_checked() {
        assert!(validate_assignee("ana").is_ok());
        assert!(validate_assignee(" ").is_err());
        assert!(validate_assignee("a\u{7}").is_err());
        assert!(validate_escalation("tenant").is_ok());
        assert!(validate_escalation("payments-team").is_ok());
        assert!(validate_escalation("two words").is_err());
        assert!(validate_note("line one\nline two").is_ok());
        assert!(validate_note("").is_err());
        assert!(validate_note(&"x".repeat(MAX_NOTE_BYTES + 1)).is_err());
        assert_eq!(ReviewState::parse("in_review"), Some(ReviewState::InReview));
        assert_eq!(ReviewState::parse("closed"), None);
    }
}
