//! `GET /login` (the form), `POST /login` (a token for a session: rate-limited per client
//! address — behind a trusted proxy, the address it forwarded — and globally, failures logged without what was typed, counted by result) and
//! `POST /logout` (the session ended, the cookie cleared).

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use crate::app::serve::console::form::{Fields, Form, LoginForm};
use crate::app::serve::console::guard::{header_value, safe_next};
use crate::app::serve::console::html::{bare, error_page, respond};
use crate::app::serve::error::ApiError;
use crate::app::serve::session::{self, Session};
use crate::app::serve::state::AppState;
use crate::telemetry::events;

/// The longest token the form takes (a token is 64 hex digits).
const MAX_TOKEN: usize = 512;

/// The login page: a field for the token. With a live session, straight on to the console.
pub async fn form(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let q = Fields::parse(req.uri().query().unwrap_or(""));
    let next = q.one("next");
    if let Ok(Some(_)) = session::resolve(&st, req.headers()).await {
        return Redirect::to(&safe_next(&st.serve.base_path, next.as_deref())).into_response();
    }
    let notice = q
        .checked("ended")
        .then_some("Your session has ended. Log in again to go on.");
    respond(
        StatusCode::OK,
        page(&st.serve.base_path, next.as_deref(), notice, None),
    )
}

fn page(base: &str, next: Option<&str>, notice: Option<&str>, error: Option<&str>) -> Markup {
    bare(
        base,
        "Log in",
        html! {
            div.login {
                @if let Some(n) = notice { div.notice.warn role="status" { (n) } }
                @if let Some(e) = error { div.notice.bad role="alert" #login-error { (e) } }
                form.panel method="post" action={ (base) "/login" } {
                    h1 { "Log in" }
                    p { "Paste the token an operator gave you (" code { "redrive serve token" } "). It is exchanged for a session; the token is not kept by the browser." }
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="off" required autofocus spellcheck="false";
                    @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                    button.primary type="submit" { "Log in" }
                }
            }
        },
    )
}

/// Exchanges a valid token for a session: 429 (with `Retry-After`) past the rate limits, 403
/// for a form sent from another site, 401 for a token no entry has; else the session cookie
/// and on to where the visit was going.
pub async fn login(State(st): State<AppState>, form: LoginForm) -> Response {
    let base = st.serve.base_path.clone();
    let next = form.fields.one("next");
    if form.cross_site {
        return error_page(
            None,
            &base,
            &ApiError::forbidden(
                "this login form was sent from another site; open the login page of this \
                 console and log in there",
            ),
        );
    }
    let client = form.client;
    let ip = client
        .map(|c| c.addr)
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    if let Err(wait) = st.logins.attempt(ip, Instant::now()) {
        events::api::login(
            "rate_limited",
            client.map(|c| c.addr),
            client.and_then(|c| c.via),
            None,
        );
        let secs = wait.as_secs().max(1);
        let mut resp = respond(
            StatusCode::TOO_MANY_REQUESTS,
            page(
                &base,
                next.as_deref(),
                None,
                Some(&format!(
                    "Too many login attempts. Try again in {secs} seconds."
                )),
            ),
        );
        if let Some(v) = header_value(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let token = form.fields.one("token").unwrap_or_default();
    let entry = (!token.is_empty() && token.len() <= MAX_TOKEN)
        .then(|| st.tokens.find(&token))
        .flatten();
    let Some(entry) = entry else {
        events::api::login(
            "bad_token",
            client.map(|c| c.addr),
            client.and_then(|c| c.via),
            None,
        );
        return respond(
            StatusCode::UNAUTHORIZED,
            page(
                &base,
                next.as_deref(),
                None,
                Some("That token is not valid. Check it, or ask an operator for a new one."),
            ),
        );
    };
    let opened = match session::open(&st, entry).await {
        Ok(o) => o,
        Err(e) => return error_page(None, &base, &e.into()),
    };
    events::api::login(
        "ok",
        client.map(|c| c.addr),
        client.and_then(|c| c.via),
        Some(&entry.name),
    );
    let mut resp = Redirect::to(&safe_next(&base, next.as_deref())).into_response();
    if let Some(cookie) = session::set_cookie(&st.serve, &opened) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// Ends the session (its CSRF token checked by [`Form`]) and clears the cookie.
pub async fn logout(
    State(st): State<AppState>,
    session: axum::Extension<Session>,
    _form: Form,
) -> Response {
    let base = st.serve.base_path.clone();
    if let Err(e) = session.close(&st).await {
        return error_page(None, &base, &e.into());
    }
    let mut resp = Redirect::to(&format!("{base}/login")).into_response();
    if let Some(v) = session::clear_cookie(&st.serve) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
