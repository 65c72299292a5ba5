//! A visit to the console: who is logged in (the session's token), the session's CSRF token
//! for the forms, and where the console lives. The console's guard resolves it once per
//! request; pages take it as an extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::serve::principal::Principal;

/// What a page knows about the visit: who is logged in, the session's CSRF token for its
/// forms, and where the console lives.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The session's token: role, tenants, payload visibility.
    pub principal: Principal,
    /// The session's CSRF token (the hidden `csrf` field of every form that changes something).
    pub csrf: String,
    /// `serve.base_path` (`""` for none).
    pub base: String,
    /// `serve.read_only`.
    pub read_only: bool,
}

impl Ctx {
    /// The console URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, Response> {
        // Every page that takes a Ctx is behind the console's guard, which puts it there.
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                "this page needs a session; log in",
            )
                .into_response()
        })
    }
}
