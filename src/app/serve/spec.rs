//! What one route is: its method and path, who may call it, whether it changes anything, and
//! what it takes and answers. The route table ([`super::table`]) is a list of these; the
//! router, the role and read-only checks, the metrics' route label and the OpenAPI document
//! are all built from it, so none can drift from another.

use axum::routing::{MethodFilter, MethodRouter};

use super::auth::Role;
use super::state::AppState;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// A read.
    Get,
    /// A change (or a dry run).
    Post,
}

impl Method {
    /// The method's name, as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    /// The filter axum routes it by.
    pub fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the OpenAPI document).
    Public,
    /// A token with at least this role.
    Token(Role),
}

/// Where a parameter travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A path segment.
    Path,
    /// A query parameter.
    Query,
}

/// One parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Where it travels.
    pub location: In,
    /// Whether it may be given more than once (the values are alternatives).
    pub repeated: bool,
    /// `string`, `integer` or `boolean`.
    pub kind: &'static str,
    /// What it means.
    pub description: &'static str,
}

/// What a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produces {
    /// One JSON document.
    Json,
    /// JSON Lines (`application/x-ndjson`), streamed.
    NdJson,
}

/// One route of the API.
#[derive(Debug)]
pub struct RouteSpec {
    /// Its method.
    pub method: Method,
    /// Its path template below `serve.base_path` (`{name}` a segment, `{*name}` the rest).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether it changes something (refused when `serve.read_only`).
    pub change: bool,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// The name of its request body's schema, if it takes one.
    pub body: Option<&'static str>,
    /// What it answers with.
    pub produces: Produces,
    /// The statuses it answers beyond those every route of its access may (see
    /// [`RouteSpec::statuses`]), with what each means.
    pub responses: &'static [(u16, &'static str)],
    /// Builds its handler for a method filter.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl RouteSpec {
    /// Every status the route may answer, with what it means: its own, then those of every
    /// route of its kind (a bad request, no or a wrong token, a role too low, read-only, Redis
    /// unavailable).
    pub fn statuses(&self) -> Vec<(u16, &'static str)> {
        let mut out: Vec<(u16, &'static str)> = self.responses.to_vec();
        let mut add = |code: u16, what: &'static str| {
            if !out.iter().any(|(c, _)| *c == code) {
                out.push((code, what));
            }
        };
        if !self.params.is_empty() || self.body.is_some() {
            add(400, "the request is malformed: a bad value, an unknown parameter, a body that does not read");
        }
        if self.body.is_some() {
            add(413, "the request body is larger than 1 MiB");
            add(415, "the request body is not JSON");
        }
        if self.change {
            add(
                202,
                "A command with this id is running already: where its status is.",
            );
            add(
                409,
                "Refused: a guardrail, or a command id another token's command took.",
            );
            add(
                500,
                "The command failed on the member that ran it (the details hold its result).",
            );
            add(504, "No member picked the command up in time (withdrawn, nothing changed), or it expired.");
        }
        if let Access::Token(role) = self.access {
            add(401, "no token, or not a valid one");
            if role > Role::Viewer || self.change {
                add(
                    403,
                    "the token's role does not allow this, or the server is read-only",
                );
            }
            add(
                503,
                "Redis (or, for a change, every fleet member) is unavailable",
            );
        }
        out.sort_by_key(|(c, _)| *c);
        out
    }
}
