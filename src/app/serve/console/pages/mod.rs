//! The console's pages, one file per page or group of pages. Each reads through the API's own
//! `*_doc` functions (so scope, redaction and validation are the API's) and sends changes
//! through the API's `send_*` functions (the admin command stream, audited under the token's
//! name).
//!
//! * [`login`] — the login form, login (rate-limited) and logout.
//! * [`overview`] — every visible tenant's figures of the last hour.
//! * [`dead_letters`] — the list (filters, pages, bulk actions, grouping by fingerprint) and
//!   one dead letter.
//! * [`replay`] — the replay wizard: selection, dry run, options, confirm.
//! * [`commands`] — one command's status with live progress, and its cancel.
//! * [`breakers`] — every breaker, open and close.
//! * [`audit`] — the audit trail.
//! * [`tasks`] — task lookup by id.

pub mod audit;
pub mod breakers;
pub mod commands;
pub mod dead_letters;
pub mod login;
pub mod overview;
pub mod replay;
pub mod tasks;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::guard::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::submit::Sent;

/// Where a change's answer goes: its command's status page (303, so a reload never sends it
/// again).
pub fn to_command(ctx: &Ctx, sent: &Sent) -> Response {
    Redirect::to(&ctx.url(&format!("/commands/{}", super::html::seg(sent.id())))).into_response()
}

/// The read-only refusal as an API error (for the pages that check it themselves).
pub fn read_only_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "read_only",
        "this server is read-only (serve.read_only = true): it changes nothing. Make the change \
         through a server that is not read-only, or with the CLI",
    )
}
