//! What runs around every handler: the token, role and read-only checks of a route (from its
//! [`RouteSpec`]), the request metrics labelled by the route's template, the security headers
//! of every answer, and the JSON answers for a path or a method no route has.

use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::Tokens;
use super::console;
use super::error::{ApiError, ApiResult};
use super::principal::Principal;
use super::session;
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
    let resp = match check(&state, spec, &mut req).await {
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

/// Who makes a request: the bearer token of its `Authorization` header when it has one, else
/// the browser session its cookie names (401 when neither holds). A session's request other
/// than a read must carry the session's CSRF token in `X-CSRF-Token` (403 `csrf` otherwise):
/// a cookie is sent by the browser on its own, a bearer token never is.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> ApiResult<Principal> {
    if Tokens::presented(headers) {
        return Ok(Principal::from_token(state.tokens.authenticate(headers)?));
    }
    let Some(session) = session::resolve(state, headers).await? else {
        // Neither: the bearer token's answer says how to authenticate.
        return Err(state
            .tokens
            .authenticate(headers)
            .err()
            .unwrap_or_else(|| ApiError::unauthorized("this route needs a token or a session")));
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    if !read {
        let presented = headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if !session.csrf_ok(presented) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "this request comes with a browser session but without its CSRF token: send it \
                 in the X-CSRF-Token header (the console's pages carry it), or call the API with \
                 a bearer token",
            ));
        }
    }
    Ok(session.principal)
}

/// The token or session (401, 403 without the CSRF token), its role (403), the read-only
/// switch (403), then the query: a parameter the route table does not list for the route is
/// refused (400), so what a route accepts is what its OpenAPI entry says, and a change never
/// ignores a stray `?dry_run=true`.
async fn check(state: &AppState, spec: &RouteSpec, req: &mut Request) -> ApiResult<()> {
    let Access::Token(needed) = spec.access else {
        return known_query(spec, req);
    };
    let principal = authenticate(state, req.headers(), req.method()).await?;
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

/// Sets the security headers on every answer: no sniffing, no framing, and — unless the answer
/// set its own (the console's pages and assets do) — no referrer, no caching and a content
/// security policy that allows nothing (the API serves data only).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in [
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// Answers 408 for a request whose answer has not begun within `serve.request_timeout_ms` (a
/// body sent slowly, a client holding a request open); the handler is dropped, so whatever it
/// waited for stops being waited for (a change already sent still runs: its status is on its
/// command's page).
pub async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.serve.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not answered within serve.request_timeout_ms = {} ms; send it \
                 again (a change already sent goes on: see the audit trail)",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// The answer for a path no route has: 404 — under the API's path, JSON pointing at the OpenAPI
/// document; elsewhere (a browser's mistyped console address), a page.
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
    let base = state.serve.base_path.as_str();
    let api = req.uri().path().starts_with(&format!("{base}/api/"));
    let resp = if api {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "no route {} {}; the routes are listed in {base}/api/v1/openapi.json",
                req.method(),
                req.uri().path(),
            ),
        )
        .into_response()
    } else {
        console::html::error_page(
            None,
            base,
            &ApiError::new(
                StatusCode::NOT_FOUND,
                "no_page",
                format!("there is no page at {}", req.uri().path()),
            ),
        )
    };
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
