//! Form bodies (`application/x-www-form-urlencoded`, at most 1 MiB). [`Form`] is every change's
//! body: it carries the session's CSRF token in the hidden `csrf` field, or it is refused with
//! 403 before the page sees a single field — nothing changed. [`LoginForm`] is the login's,
//! which has no session yet (its cross-site protection is the `Origin` check of the login).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;

use super::html::error_page;
use super::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::extract::MAX_BODY;
use crate::app::serve::proxy::Client;
use crate::app::serve::session::{Session, CSRF_FIELD};
use crate::app::serve::state::AppState;

/// A form's fields in order (a repeated name gives several values).
#[derive(Debug, Default, Clone)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses a form body or a query string.
    pub fn parse(text: &str) -> Fields {
        Fields(
            form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Every value of `name`, in order, empty ones left out.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first non-empty value of `name`, trimmed.
    pub fn one(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
    }

    /// Whether a checkbox `name` is checked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !v.is_empty())
    }

    /// Every pair (for carrying a selection on).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Reads a form body: 413 past [`MAX_BODY`], 400 when it does not read as text.
async fn read(req: Request) -> Result<Fields, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the form is larger than {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the form is not UTF-8 text"))?;
    Ok(Fields::parse(text))
}

/// The body of a console form that changes something, its CSRF token checked.
#[derive(Debug)]
pub struct Form(pub Fields);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Form, Response> {
        let ctx = req.extensions().get::<Ctx>().cloned();
        let session = req.extensions().get::<Session>().cloned();
        let (Some(ctx), Some(session)) = (ctx, session) else {
            return Err(error_page(
                None,
                "",
                &ApiError::unauthorized("this form needs a session; log in"),
            ));
        };
        let fields = read(req)
            .await
            .map_err(|e| error_page(Some(&ctx), &ctx.base, &e))?;
        if !session.csrf_ok(fields.one(CSRF_FIELD).as_deref()) {
            return Err(error_page(
                Some(&ctx),
                &ctx.base,
                &ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "this form did not carry this session's CSRF token, so nothing was \
                     changed: it was sent from another page or an old tab. Open the page again \
                     and send it from there",
                ),
            ));
        }
        Ok(Form(fields))
    }
}

/// The login form's body (no session yet, so no CSRF token), with what the login needs to
/// know about where it came from.
#[derive(Debug)]
pub struct LoginForm {
    /// The fields.
    pub fields: Fields,
    /// The client: the TCP peer, or behind a trusted proxy (`serve.trusted_proxies`) the
    /// address it forwarded.
    pub client: Option<Client>,
    /// Whether the browser says the form was sent from another site: an `Origin` other than
    /// this server's host, or `Sec-Fetch-Site` other than same-origin (a login CSRF attempt).
    pub cross_site: bool,
}

impl FromRequest<AppState> for LoginForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<LoginForm, Response> {
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| state.serve.trusted_proxies.client(c.0.ip(), req.headers()));
        let cross_site = cross_site(req.headers());
        let fields = read(req).await.map_err(|e| error_page(None, "", &e))?;
        Ok(LoginForm {
            fields,
            client,
            cross_site,
        })
    }
}

/// Whether a request's headers show it was sent by another site's page: the browser's
/// `Sec-Fetch-Site` when it sends one, else an `Origin` (sent with same-origin forms, since
/// console pages set `Referrer-Policy: same-origin`) other than this host.
fn cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = h.get(header::ORIGIN) else {
        return false;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    !matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_login_from_another_site_is_told_apart() {
        let mut h = HeaderMap::new();
        assert!(!cross_site(&h), "no Origin: a plain client");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8089"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8089"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&h), "the browser's word first");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
        let f = Fields::parse("id=a%2F1&id=&reason=+why+&x=1");
        assert_eq!(f.all("id"), vec!["a/1"]);
        assert_eq!(f.one("reason").as_deref(), Some("why"));
        assert!(f.checked("x") && !f.checked("y"));
    }
}
