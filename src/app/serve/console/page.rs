//! What one page of the console is: its method, its path template below the base path (the
//! metrics' route label), who may open it, whether it changes anything (refused by a
//! read-only server), and its handler. The list is [`super::routes::PAGES`].

use axum::routing::{MethodFilter, MethodRouter};

use crate::app::serve::spec::{Access, Method};
use crate::app::serve::state::AppState;

/// One page (or form target) of the console.
#[derive(Debug)]
pub struct Page {
    /// Its method.
    pub method: Method,
    /// Its path below `serve.base_path` (`{name}` a segment, `{*name}` the rest).
    pub path: &'static str,
    /// Who may open it: anyone (the login page, the assets), or a session whose token has at
    /// least this role.
    pub access: Access,
    /// Whether it changes something (refused when `serve.read_only`).
    pub change: bool,
    /// Builds its handler for a method filter.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}
