//! What runs around every console page: the browser session (none or ended: to the login
//! page), the token's role and the read-only switch (a page saying why), and the request
//! metrics — the same families as the API's, labelled by the page's template.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::html::{error_page, PageError};
use super::page::Page;
use super::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::session::{self, Session};
use crate::app::serve::spec::Access;
use crate::app::serve::state::AppState;
use crate::telemetry::events;

/// Checks the visit against the page (session, role, read-only), runs the page, and counts
/// the answer under the page's template.
pub async fn guard(
    State((state, page)): State<(AppState, &'static Page)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let resp = match check(&state, page, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(resp) => resp,
    };
    events::api::request(
        page.path,
        page.method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

async fn check(state: &AppState, page: &Page, req: &mut Request) -> Result<(), Response> {
    let Access::Token(needed) = page.access else {
        return Ok(());
    };
    let base = state.serve.base_path.as_str();
    let session: Session = match session::resolve(state, req.headers()).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(to_login(state, req, false)),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(to_login(state, req, true)),
        Err(e) => return Err(error_page(None, base, &e)),
    };
    let ctx = Ctx {
        principal: session.principal.clone(),
        csrf: session.csrf.clone(),
        base: base.to_owned(),
        read_only: state.serve.read_only,
    };
    if page.change && state.serve.read_only {
        return Err(PageError::read_only().into_page(&ctx));
    }
    if ctx.principal.role() < needed {
        let e = ApiError::forbidden(format!(
            "this needs the {} role; you are logged in as '{}', a {}",
            needed.as_str(),
            ctx.principal.name(),
            ctx.principal.role().as_str()
        ));
        return Err(error_page(Some(&ctx), base, &e));
    }
    req.extensions_mut().insert(session);
    req.extensions_mut().insert(ctx);
    Ok(())
}

/// The login page, coming back to this page afterwards (a read); `ended` says the session had
/// ended (its cookie is cleared).
fn to_login(state: &AppState, req: &Request, ended: bool) -> Response {
    let base = state.serve.base_path.as_str();
    let mut target = format!("{base}/login");
    let mut q = form_urlencoded::Serializer::new(String::new());
    if req.method() == axum::http::Method::GET {
        let here = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        q.append_pair("next", here);
    }
    if ended {
        q.append_pair("ended", "1");
    }
    let q = q.finish();
    if !q.is_empty() {
        target = format!("{target}?{q}");
    }
    let mut resp = Redirect::to(&target).into_response();
    if ended {
        if let Some(v) = session::clear_cookie(&state.serve) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Where a login may send the browser afterwards: a path of this console (never another
/// site: no scheme, no `//`, no backslash), else the overview.
pub fn safe_next(base: &str, next: Option<&str>) -> String {
    let home = if base.is_empty() {
        "/".to_owned()
    } else {
        format!("{base}/")
    };
    let Some(n) = next else { return home };
    let inside = n == base || n.starts_with(&format!("{base}/"));
    let clean = !n.starts_with("//")
        && !n.contains('\\')
        && !n.contains("://")
        && n.starts_with('/')
        && !n.bytes().any(|b| b.is_ascii_control());
    if inside && clean && !n.starts_with(&format!("{base}/login")) {
        n.to_owned()
    } else {
        home
    }
}

/// A header value, or none when it would not be one.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_only_goes_back_into_the_console() {
        assert_eq!(safe_next("/redrive", None), "/redrive/");
        assert_eq!(
            safe_next("/redrive", Some("/redrive/dead-letters?class=timeout")),
            "/redrive/dead-letters?class=timeout"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/redrive/..\\evil",
            "/other/path",
            "/redrive/login?next=/x",
            "/redrivex",
        ] {
            assert_eq!(safe_next("/redrive", Some(bad)), "/redrive/", "{bad}");
        }
        assert_eq!(safe_next("", Some("/audit")), "/audit");
        assert_eq!(safe_next("", Some("//x")), "/");
    }
}
