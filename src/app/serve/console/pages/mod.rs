//! The console's pages, one file per page or group of pages. Each reads through the API's own
//! `*_doc` functions (so scope, redaction and validation are the API's) and sends changes
//! through the API's `send_*` functions (the admin command stream, audited under the token's
//! name).
//!
//! * [`login`] — the login form, login (rate-limited) and logout.
//! * [`overview`] — every visible tenant's figures of the last hour.
//! * [`dead_letters`] — the list (filters, pages, bulk actions, grouping by fingerprint, review
//!   states) and one dead letter (its review: assign, escalate, note).
//! * [`archive`] — the archive a page at a time, one archived dead letter and its restore.
//! * [`replay`] — the replay wizard: selection, dry run, options, confirm.
//! * [`purge`] — an admin's purge of a tenant's old dead letters: count, typed confirm.
//! * [`commands`] — one command's status with live progress, its cancel and its resume.
//! * [`breakers`] — every breaker, open and close.
//! * [`audit`] — the audit trail.
//! * [`tasks`] — task lookup by id.

pub mod archive;
pub mod audit;
pub mod breakers;
pub mod commands;
pub mod dead_letters;
pub mod login;
pub mod overview;
pub mod purge;
pub mod replay;
pub mod tasks;
