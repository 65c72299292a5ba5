//! Operators triage and replay dead letters.
//!
//! Reads (`dlq list|show|stats|export`, `health`, `admin audit|status`) go straight to Redis and
//! change nothing. Changes go through the **admin command stream**: the CLI appends an
//! [`Envelope`] (a unique command id, the operator, a reason, a deadline and the
//! [`AdminCommand`]); a live fleet member reads it through the fleet's consumer group, claims
//! its execution on the command's record (the idempotency key: one command id runs at most
//! once), executes it, and records the result, the audit entry and the stream ack in one atomic
//! script. The CLI polls the record and prints the result. `--local` runs the same executor in
//! the CLI process.
//!
//! # Layout
//!
//! * this file — the command model: [`AdminCommand`], its specs, the [`Envelope`] it travels
//!   in, and the [`CommandResult`] recorded for it.
//! * [`select`] — dead-letter addresses and filters; [`time`] — durations and times as typed.
//! * [`scan`] — the dead-letter scan shared by replay, `resolve`/`discard` and the reports.
//! * [`replay`] — building a replayed task (pure), the selection, the dry run, the typed job
//!   record and the job runner.
//! * [`lookup`] — a task by id: its record, or where it is when it has none.
//! * [`scope`] — the tenants a command touches, recorded by the member that runs it.
//! * [`mutate`] — the short commands: resolve, discard, purge, cancel, breaker.
//! * [`restore`] — archived dead letters back into their streams.
//! * [`review`] — the review lifecycle (states, records, checks), pure; [`triage`] — its
//!   commands (assign, escalate, note, fold) and the fold expansion replays and removals use.
//! * [`breaker`] — opening and closing a tenant's breaker by hand.
//! * [`context`] — what executing a command needs, and how it ended.
//! * [`exec`] — executing one command exactly once: the code a fleet member and `--local`
//!   share.

pub mod breaker;
pub mod context;
#[cfg(test)]
mod counts_steps;
pub mod exec;
pub mod lookup;
pub mod mutate;
pub mod replay;
pub mod restore;
pub mod review;
pub mod scan;
pub mod scope;
pub mod select;
pub mod time;
pub mod triage;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::Fields;
use crate::error::Error;
use select::{field_str, Selection};

/// An admin command: a change an operator asks the fleet to make.
///
/// Adding a command takes a variant here, an arm in [`exec::execute`] and a CLI subcommand; the
/// stream, exactly-once records, audit, metrics and reply wait need no change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminCommand {
    /// Replay dead letters into their lanes, or resume a replay job.
    Replay(ReplaySpec),
    /// Remove dead letters that were handled elsewhere, into the tenant's archive.
    Resolve(RemoveSpec),
    /// Remove dead letters not worth running, into the tenant's archive.
    Discard(RemoveSpec),
    /// Delete a tenant's dead letters older than a cutoff.
    Purge(PurgeSpec),
    /// Ask a running replay job to stop after its current step.
    Cancel(CancelSpec),
    /// Hold a tenant back (open its breaker until closed by hand) or let it run (close it).
    Breaker(BreakerSpec),
    /// Put archived dead letters back into their tenants' dead-letter streams.
    Restore(RestoreSpec),
    /// Assign dead letters to an operator for review (→ `in_review`).
    Assign(ReviewSpec),
    /// Escalate dead letters to their tenant or a named team (→ `escalated`).
    Escalate(ReviewSpec),
    /// Add a note to dead letters (their state stays).
    Note(ReviewSpec),
    /// Fold a tenant's dead letters of one fingerprint under one representative.
    Fold(FoldSpec),
}

/// `redrive dlq archive restore TENANT/ID…`: archived dead letters, by their dead-letter ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The archived dead letters (1 to 1,000).
    pub ids: Vec<select::DlId>,
}

impl RestoreSpec {
    /// The most dead letters one restore names.
    pub const MAX_IDS: usize = 1_000;

    /// Checks the spec's values.
    pub fn validate(&self) -> Result<(), String> {
        if self.ids.is_empty() || self.ids.len() > Self::MAX_IDS {
            return Err(format!(
                "a restore names 1 to {} archived dead letters (TENANT/ID)",
                Self::MAX_IDS
            ));
        }
        for d in &self.ids {
            crate::task::validate_tenant(&d.tenant)?;
            if crate::archive::format::parse_id(&d.id).is_none() {
                return Err(format!("'{d}' is not a dead-letter id (TENANT/ms-seq)"));
            }
        }
        Ok(())
    }
}

/// `redrive dlq assign|escalate|note TENANT/ID…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewSpec {
    /// The dead letters (a fold's members are refused: act on its representative).
    pub ids: Vec<select::DlId>,
    /// assign: the assignee; escalate: `tenant` or a team's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// note: the note's text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

/// `redrive dlq fold --tenant T --fingerprint F`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldSpec {
    /// The tenant.
    pub tenant: String,
    /// The fingerprint whose dead letters are folded.
    pub fingerprint: String,
}

/// `redrive breaker open|close TENANT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSpec {
    /// The tenant.
    pub tenant: String,
    /// Open (hold) or close.
    pub open: bool,
}

impl AdminCommand {
    /// The command's name in metrics, logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Replay(_) => "replay",
            AdminCommand::Resolve(_) => "resolve",
            AdminCommand::Discard(_) => "discard",
            AdminCommand::Purge(_) => "purge",
            AdminCommand::Cancel(_) => "cancel",
            AdminCommand::Breaker(_) => "breaker",
            AdminCommand::Restore(_) => "restore",
            AdminCommand::Assign(_) => "assign",
            AdminCommand::Escalate(_) => "escalate",
            AdminCommand::Note(_) => "note",
            AdminCommand::Fold(_) => "fold",
        }
    }

    /// Checks the command's values (the executor checks them again: stream input is input).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            AdminCommand::Replay(r) => r.validate(),
            AdminCommand::Resolve(r) | AdminCommand::Discard(r) => r.select.validate(),
            AdminCommand::Purge(p) => crate::task::validate_tenant(&p.tenant),
            AdminCommand::Cancel(c) => validate_command_id(&c.job),
            AdminCommand::Breaker(b) => crate::task::validate_tenant(&b.tenant),
            AdminCommand::Restore(r) => r.validate(),
            AdminCommand::Assign(r) => {
                r.validate_ids()?;
                review::validate_assignee(&r.to)
            }
            AdminCommand::Escalate(r) => {
                r.validate_ids()?;
                review::validate_escalation(&r.to)
            }
            AdminCommand::Note(r) => {
                r.validate_ids()?;
                review::validate_note(&r.text)
            }
            AdminCommand::Fold(f) => f.validate(),
        }
    }
}

impl ReviewSpec {
    /// At least one id, at most 10,000.
    fn validate_ids(&self) -> Result<(), String> {
        match self.ids.len() {
            0 => Err("no dead-letter id given".into()),
            n if n > 10_000 => Err(format!(
                "{n} dead letters in one command; give at most 10000 (fold a storm by its \
                 fingerprint and act on its representative)"
            )),
            _ => Ok(()),
        }
    }
}

impl FoldSpec {
    /// Checks the tenant and the fingerprint.
    pub fn validate(&self) -> Result<(), String> {
        crate::task::validate_tenant(&self.tenant).map_err(|e| format!("--tenant: {e}"))?;
        select::Filter {
            fingerprints: vec![self.fingerprint.clone()],
            ..select::Filter::default()
        }
        .validate()
    }
}

/// What to replay and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReplaySpec {
    /// The dead letters; `None` only when resuming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Selection>,
    /// Resume this job (its id is the command id that started it) instead of starting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Keep per-entity order: group by this top-level payload field, each group in the order
    /// its tasks were first enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by_key: Option<String>,
    /// Dead letters per second; 0 means unlimited.
    #[serde(default)]
    pub rate: u32,
    /// A JSON merge patch applied to each payload (after any schema migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// Route the replayed tasks to this kind instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<String>,
    /// Replay partial_execution dead letters too (side effects may repeat).
    #[serde(default)]
    pub force: bool,
}

impl ReplaySpec {
    /// Checks the spec's values.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.select, &self.resume) {
            (Some(s), None) => s.validate()?,
            (None, Some(job)) => validate_command_id(job)?,
            _ => return Err("a replay selects dead letters or resumes a job, not both".into()),
        }
        if let Some(k) = &self.order_by_key {
            if k.is_empty() || k.len() > 128 {
                return Err("--order-by-key must name a payload field (1 to 128 bytes)".into());
            }
        }
        if let Some(p) = &self.patch {
            if !p.is_object() {
                return Err(
                    "--patch must be a JSON object (a merge patch, RFC 7386), like {\"lang\":\"en\"}"
                        .into(),
                );
            }
        }
        if let Some(k) = &self.target_kind {
            crate::task::validate_kind(k).map_err(|e| format!("--target-kind: {e}"))?;
        }
        Ok(())
    }
}

/// Which dead letters `resolve` or `discard` removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveSpec {
    /// The dead letters.
    pub select: Selection,
}

/// Which dead letters `purge` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeSpec {
    /// The tenant.
    pub tenant: String,
    /// Dead letters before this time (server clock, ms since the epoch) are deleted.
    pub before_ms: u64,
}

/// Which job `cancel` stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelSpec {
    /// The replay job's id.
    pub job: String,
}

/// An admin command as it travels on the admin stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The command id: unique per command; re-sending it returns the first result.
    pub id: String,
    /// Who asked.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// When the CLI sent it (server clock, ms).
    pub issued_at_ms: u64,
    /// Not started after this (server clock, ms) means never started; 0 for none.
    pub deadline_ms: u64,
    /// What to do.
    pub command: AdminCommand,
}

/// Names of the admin stream's entry fields.
pub mod wire {
    /// The command id.
    pub const ID: &str = "id";
    /// The operator.
    pub const OPERATOR: &str = "operator";
    /// The reason.
    pub const REASON: &str = "reason";
    /// When it was issued.
    pub const ISSUED_AT: &str = "issued_at";
    /// The deadline.
    pub const DEADLINE: &str = "deadline";
    /// The command itself, JSON.
    pub const COMMAND: &str = "command";
}

impl Envelope {
    /// The stream entry's fields.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (wire::ID, self.id.clone()),
            (wire::OPERATOR, self.operator.clone()),
            (wire::REASON, self.reason.clone()),
            (wire::ISSUED_AT, self.issued_at_ms.to_string()),
            (wire::DEADLINE, self.deadline_ms.to_string()),
            (
                wire::COMMAND,
                serde_json::to_string(&self.command).unwrap_or_default(),
            ),
        ]
    }

    /// Reads an envelope from a stream entry. The error carries the command id when it was
    /// readable, so that its record can still get a result.
    pub fn from_fields(fields: &Fields) -> Result<Envelope, (Option<String>, String)> {
        let id = field_str(fields, wire::ID)
            .filter(|id| validate_command_id(id).is_ok())
            .map(str::to_owned);
        let fail = |m: String| (id.clone(), m);
        let Some(cid) = id.clone() else {
            return Err(fail("the entry has no valid command id".into()));
        };
        let text = |name: &str| {
            field_str(fields, name)
                .map(str::to_owned)
                .ok_or_else(|| fail(format!("the entry has no '{name}'")))
        };
        let num = |name: &str| -> Result<u64, (Option<String>, String)> {
            text(name)?
                .parse()
                .map_err(|_| fail(format!("'{name}' is not a number")))
        };
        let operator = text(wire::OPERATOR)?;
        validate_operator(&operator).map_err(fail)?;
        let reason = text(wire::REASON)?;
        validate_reason(&reason).map_err(fail)?;
        let command: AdminCommand = serde_json::from_str(&text(wire::COMMAND)?)
            .map_err(|e| fail(format!("the command cannot be read: {e}")))?;
        command.validate().map_err(fail)?;
        Ok(Envelope {
            id: cid,
            operator,
            reason,
            issued_at_ms: num(wire::ISSUED_AT)?,
            deadline_ms: num(wire::DEADLINE)?,
            command,
        })
    }
}

/// How a command ended, as metrics, logs, the audit trail and results name it.
pub fn outcome_of(error: Option<&Error>) -> &'static str {
    match error {
        None => "ok",
        Some(Error::NotFound(_)) => "not_found",
        Some(Error::Refused(_)) => "refused",
        Some(Error::Usage(_)) | Some(Error::InvalidTask(_)) => "invalid",
        Some(Error::Interrupted(_)) => "cancelled",
        Some(Error::Timeout(_)) => "expired",
        Some(_) => "failed",
    }
}

/// The result of one admin command, stored in its record and returned to the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command id.
    pub command_id: String,
    /// The command's name.
    pub command: String,
    /// `ok`, `not_found`, `refused`, `invalid`, `cancelled`, `expired` or `failed`.
    pub outcome: String,
    /// A one-line summary for people.
    pub message: String,
    /// The error kind when it failed ([`Error::kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The exit code the CLI ends with.
    pub exit_code: i32,
    /// Who executed it (a member id, or `local@host`).
    pub member: String,
    /// When it started (server clock, ms).
    pub started_at_ms: u64,
    /// When it finished (executor's clock, ms).
    pub finished_at_ms: u64,
    /// Command-specific details (counts, ids, job progress).
    #[serde(default)]
    pub details: Value,
}

impl CommandResult {
    /// A result from an execution's outcome (a message, or the error) and its details.
    pub fn new(
        env: &Envelope,
        member: &str,
        started_at_ms: u64,
        outcome: crate::Result<String>,
        details: Value,
    ) -> CommandResult {
        let (outcome_name, message, error_kind, exit_code) = match &outcome {
            Ok(m) => ("ok", m.clone(), None, 0),
            Err(e) => (
                outcome_of(Some(e)),
                e.message(),
                Some(e.kind().to_owned()),
                e.exit_code(),
            ),
        };
        CommandResult {
            command_id: env.id.clone(),
            command: env.command.name().into(),
            outcome: outcome_name.into(),
            message,
            error_kind,
            exit_code,
            member: member.into(),
            started_at_ms,
            finished_at_ms: crate::task::now_ms(),
            details,
        }
    }

    /// The result as the CLI's outcome: `Ok` for success, the rebuilt error otherwise.
    pub fn into_result(self) -> crate::Result<CommandResult> {
        match &self.error_kind {
            None if self.exit_code == 0 => Ok(self),
            kind => Err(Error::from_remote(
                kind.as_deref().unwrap_or("remote"),
                self.message.clone(),
                self.exit_code,
            )),
        }
    }
}

/// Checks a command id: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub fn validate_command_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(format!(
            "command id '{id}' is invalid: use 1 to 64 ASCII letters, digits, '_', '-', '.'"
        ));
    }
    Ok(())
}

/// Checks an operator identity: 1 to 128 printable characters.
pub fn validate_operator(op: &str) -> Result<(), String> {
    if op.trim().is_empty() || op.len() > 128 || op.chars().any(|c| c.is_control()) {
        return Err(format!(
            "operator '{op}' is invalid: use 1 to 128 printable characters (--operator or REDRIVE_OPERATOR)"
        ));
    }
    Ok(())
}

/// Checks a reason: 1 to 1024 bytes without control characters.
pub fn validate_reason(reason: &str) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("--reason must say why (it goes into the audit trail)".into());
    }
    if reason.len() > 1024 || reason.chars().any(|c| c.is_control()) {
        return Err(
            "--reason must be at most 1024 bytes of text without control characters".into(),
        );
    }
    Ok(())
}

/// A fresh command id: `c` + the time in hex + 32 random bits.
pub fn new_command_id() -> String {
    format!("c{:x}-{:08x}", crate::task::now_ms(), fastrand::u32(..))
}

/// The operator's identity when none is given: `$USER@host`.
pub fn default_operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{}@{}", user.trim(), crate::config::default_member_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use select::{DlId, Filter};

    fn env(command: AdminCommand) -> Envelope {
        Envelope {
            id: "c1".into(),
            operator: "ana@ops".into(),
            reason: "poison storm fixed".into(),
            issued_at_ms: 5,
            deadline_ms: 9,
            command,
        }
    }

    #[test]
    fn envelopes_round_trip_through_stream_fields() {
        let commands = [
            AdminCommand::Replay(ReplaySpec {
                select: Some(Selection::Filter(Filter {
                    fingerprints: vec!["abc123".into()],
                    ..Filter::default()
                })),
                rate: 50,
                patch: Some(serde_json::json!({"lang": "en"})),
                ..ReplaySpec::default()
            }),
            AdminCommand::Discard(RemoveSpec {
                select: Selection::Ids(vec![DlId::parse("acme/1-0", None).unwrap()]),
            }),
            AdminCommand::Purge(PurgeSpec {
                tenant: "acme".into(),
                before_ms: 7,
            }),
            AdminCommand::Cancel(CancelSpec { job: "c0".into() }),
        ];
        for c in commands {
            let e = env(c);
            let fields: Fields = e
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
                .collect();
            assert_eq!(Envelope::from_fields(&fields).unwrap(), e);
        }
    }

    #[test]
    fn unreadable_envelopes_keep_their_id_when_they_can() {
        let f = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        let (id, why) = Envelope::from_fields(&f(&[("id", "c9"), ("command", "{}")])).unwrap_err();
        assert_eq!(id.as_deref(), Some("c9"));
        assert!(why.contains("operator"), "{why}");
        let (id, _) = Envelope::from_fields(&f(&[("id", "bad id")])).unwrap_err();
        assert_eq!(id, None);
        let bad = ReplaySpec {
            select: Some(Selection::Ids(vec![])),
            resume: Some("c1".into()),
            ..ReplaySpec::default()
        };
        assert!(bad.validate().is_err());
        let patch = ReplaySpec {
            select: Some(Selection::Filter(Filter::default())),
            patch: Some(serde_json::json!([1])),
            ..ReplaySpec::default()
        };
        assert!(patch.validate().unwrap_err().contains("merge patch"));
    }

    #[test]
    fn results_carry_errors_back() {
        let e = env(AdminCommand::Cancel(CancelSpec { job: "c0".into() }));
        let r = CommandResult::new(
            &e,
            "m1",
            1,
            Err(Error::NotFound("no job c0".into())),
            Value::Null,
        );
        assert_eq!(r.outcome, "not_found");
        assert_eq!(r.exit_code, 66);
        let back = r.into_result().unwrap_err();
        assert!(matches!(back, Error::NotFound(m) if m == "no job c0"));
        let ok = CommandResult::new(&e, "m1", 1, Ok("done".into()), Value::Null);
        assert!(ok.into_result().is_ok());
        assert!(validate_command_id("c19a-0f").is_ok());
        assert!(validate_command_id("c 1").is_err());
        assert!(validate_reason(" ").is_err());
        assert!(validate_operator("ana@ops").is_ok());
        assert!(new_command_id().starts_with('c'));
    }
}
