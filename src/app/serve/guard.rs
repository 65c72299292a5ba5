//! What runs around every handler: the token, role and read-only checks of a route (from its
//! [`RouteSpec`]), the request metrics labelled by the route's template, the security headers
//! of every answer, and the JSON answers for a path or a method no route has.

use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::principal::Principal;
use super::spec::{Access, In, RouteSpec};
use super::state::AppState;
use crate::telemetry::events;

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Checks the request against its route (token, role, read-only), runs the handler with the
/// [`Principal`] in the request, and counts the answer under the route's template.
pub async fn guard(
    State((state, spec)): State<(AppState, &'static RouteSpec)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let resp = match check(&state, spec, &mut req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    events::api::request(
        spec.path,
        spec.method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// The token (401), its role (403), the read-only switch (403), then the query: a parameter
/// the route table does not list for the route is refused (400), so what a route accepts is
/// what its OpenAPI entry says, and a change never ignores a stray `?dry_run=true`.
fn check(state: &AppState, spec: &RouteSpec, req: &mut Request) -> ApiResult<()> {
    let Access::Token(needed) = spec.access else {
        return known_query(spec, req);
    };
    let principal = Principal::from_token(state.tokens.authenticate(req.headers())?);
    if spec.change && state.serve.read_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this server is read-only (serve.read_only = true): it changes nothing; make the \
             change through a server that is not, or with the CLI",
        ));
    }
    if principal.role() < needed {
        return Err(ApiError::forbidden(format!(
            "{} {} needs the {} role; token '{}' is a {}",
            spec.method.as_str(),
            spec.path,
            needed.as_str(),
            principal.name(),
            principal.role().as_str()
        )));
    }
    req.extensions_mut().insert(principal);
    known_query(spec, req)
}

/// 400 when the query holds a parameter the route does not take.
fn known_query(spec: &RouteSpec, req: &Request) -> ApiResult<()> {
    let query = req.uri().query().unwrap_or("");
    let taken = || {
        spec.params
            .iter()
            .filter(|p| p.location == In::Query)
            .map(|p| p.name)
    };
    for (k, _) in form_urlencoded::parse(query.as_bytes()) {
        if !taken().any(|name| name == k) {
            let known: Vec<&str> = taken().collect();
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{k}'; {} {} takes {}",
                spec.method.as_str(),
                spec.path,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Principal, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("this route needs a token"))
    }
}

/// Sets the security headers on every answer: no sniffing, no referrer, no framing, no
/// caching, and a content security policy that allows nothing (the API serves data only).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// The answer for a path no route has: 404, pointing at the OpenAPI document.
pub async fn no_route(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let method = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let resp = ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {} {}; the routes are listed in {}/api/v1/openapi.json",
            req.method(),
            req.uri().path(),
            state.serve.base_path
        ),
    )
    .into_response();
    events::api::request(UNMATCHED, method, 404, started.elapsed());
    resp
}

/// The answer for a method a path does not take: 405 with the methods it does.
pub fn wrong_method(path: &'static str, allow: &str) -> Response {
    let started = Instant::now();
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} takes {allow} only"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    events::api::request(path, "other", 405, started.elapsed());
    resp
}
