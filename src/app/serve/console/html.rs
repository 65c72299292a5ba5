//! The page shell and the pieces every page shares, as maud templates: maud escapes every
//! value it interpolates (names, errors, payloads are data, never markup), and the console
//! never asks it not to. Answers carry the console's content security policy: scripts,
//! styles and images from this server only, no inline script or style, no framing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::assets;
use super::visit::Ctx;
use crate::admin::time::{format_age, format_time};
use crate::app::serve::error::ApiError;
use crate::app::serve::session::CSRF_FIELD;
use crate::app::serve::submit::Sent;

/// The console's content security policy.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; \
                       base-uri 'none'";

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The overview.
    Overview,
    /// Dead letters (and one dead letter, the replay wizard).
    DeadLetters,
    /// The archive (and one archived dead letter).
    Archive,
    /// Breakers.
    Breakers,
    /// The audit trail (and a command's status).
    Audit,
    /// Task lookup.
    Tasks,
}

/// An HTML answer with the console's headers.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    let mut resp = (status, page.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Same-origin requests (the forms, the script's polls) say where they come from; nothing
    // is told to other sites.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The `<head>` of every page.
fn head(base: &str, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · redrive" }
            link rel="stylesheet" href=(assets::url(base, assets::CSS));
            link rel="icon" type="image/svg+xml" href=(assets::url(base, assets::ICON));
            script src=(assets::url(base, assets::JS)) defer {}
        }
    }
}

/// A whole page: the navigation with `active` marked, who is logged in, the body.
pub fn shell(ctx: &Ctx, active: Nav, title: &str, body: Markup) -> Markup {
    let p = &ctx.principal;
    let scope = if p.is_unscoped() {
        "all tenants".to_owned()
    } else {
        let json = p.to_json();
        json["tenants"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let nav = [
        (Nav::Overview, "/", "Overview"),
        (Nav::DeadLetters, "/dead-letters", "Dead letters"),
        (Nav::Archive, "/archive", "Archive"),
        (Nav::Breakers, "/breakers", "Breakers"),
        (Nav::Audit, "/audit", "Audit"),
        (Nav::Tasks, "/tasks", "Task lookup"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&ctx.base, title))
            body data-base=(ctx.base) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(ctx.url("/")) { span.logo aria-hidden="true" { "↻" } "redrive" }
                    nav aria-label="Sections" {
                        @for (section, path, label) in nav {
                            @if section == active {
                                a href=(ctx.url(path)) aria-current="page" { (label) }
                            } @else {
                                a href=(ctx.url(path)) { (label) }
                            }
                        }
                    }
                    div.who {
                        @if ctx.read_only { span.badge.warn title="serve.read_only = true: changes are refused" { "read-only" } }
                        span.who-name { (p.name()) }
                        span class={ "badge role-" (p.role().as_str()) } { (p.role().as_str()) }
                        span.scope title="The tenants this login may see" { (scope) }
                        form.inline method="post" action=(ctx.url("/logout")) {
                            (csrf(ctx))
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
                footer.keys {
                    "Keys: " kbd { "/" } " filter · " kbd { "j" } " " kbd { "k" } " move · "
                    kbd { "Enter" } " open · " kbd { "x" } " select · " kbd { "g" } " then "
                    kbd { "d" } " dead letters"
                }
            }
        }
    }
}

/// A page without the navigation (login, errors before a session).
pub fn bare(base: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(base, title))
            body.bare {
                main #main {
                    div.brand-lg { span.logo aria-hidden="true" { "↻" } "redrive" }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form that changes something.
pub fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(ctx.csrf); }
}

/// A page's title line with optional trailing content.
pub fn title(text: &str, extra: Markup) -> Markup {
    html! { div.title { h1 { (text) } div.title-extra { (extra) } } }
}

/// A breaker state as a badge.
pub fn breaker_badge(state: &str) -> Markup {
    let kind = match state {
        "closed" => "ok",
        "open" => "bad",
        _ => "warn",
    };
    html! { span class={ "badge " (kind) } { (state.replace('_', " ")) } }
}

/// A failure class as a chip.
pub fn class_chip(class: &str) -> Markup {
    html! { span.chip { (class) } }
}

/// `ms` as an age before `now_ms` (`5m ago`), the time in full on hover.
pub fn age(now_ms: u64, ms: u64) -> Markup {
    if ms == 0 {
        return html! { span.muted { "—" } };
    }
    html! {
        time datetime=(format_time(ms)) title=(format_time(ms)) {
            (format_age(now_ms.saturating_sub(ms))) " ago"
        }
    }
}

/// A JSON document, indented, in a `<pre>`.
pub fn json_block(v: &Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { code { (text) } } }
}

/// A value of a JSON document as text (`—` when absent).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A count as text with thousands separated.
pub fn count(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0);
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A share in 0..=1 as a percentage (`—` when none).
pub fn percent(v: &Value) -> String {
    v.as_f64()
        .map(|f| format!("{:.1}%", f * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// A query string of `pairs` (percent-encoded), with its `?`, or nothing.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// A path segment, percent-encoded.
pub fn seg(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error as a page: its status, what went wrong, where to go.
pub fn error_page(ctx: Option<&Ctx>, base: &str, e: &ApiError) -> Response {
    let heading = match e.status.as_u16() {
        400 => "That request does not read",
        401 => "Log in first",
        403 => "Not allowed",
        404 => "Not found",
        408 => "Too slow",
        409 => "Refused",
        413 => "Too large",
        429 => "Too many attempts",
        503 => "Unavailable",
        504 => "No answer in time",
        _ => "Something went wrong",
    };
    let body = html! {
        section.error-page role="alert" {
            p.status { (e.status.as_u16()) " · " (e.code) }
            h1 { (heading) }
            p.message { (e.message) }
            @if let Some(d) = &e.details {
                details { summary { "Details" } (json_block(d)) }
            }
            p { a href={ (base) "/" } { "Back to the overview" } }
        }
    };
    let page = match ctx {
        Some(c) => shell(c, Nav::Overview, heading, body),
        None => bare(base, heading, body),
    };
    respond(e.status, page)
}

/// Where a change's answer goes: its command's status page (303, so a reload never sends it
/// again).
pub fn to_command(ctx: &Ctx, sent: &Sent) -> Response {
    Redirect::to(&ctx.url(&format!("/commands/{}", seg(sent.id())))).into_response()
}

/// The read-only refusal (for the pages that check the switch themselves).
pub fn read_only_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "read_only",
        "this server is read-only (serve.read_only = true): it changes nothing. Make the change \
         through a server that is not read-only, or with the CLI",
    )
}

/// An error met while building a page, shown as a page (boxed: results stay small).
#[derive(Debug)]
pub struct PageError(Box<Failed>);

/// What [`PageError`] holds.
#[derive(Debug)]
struct Failed {
    ctx: Option<Ctx>,
    error: ApiError,
}

impl PageError {
    fn new(ctx: Option<Ctx>, error: ApiError) -> PageError {
        PageError(Box::new(Failed { ctx, error }))
    }

    /// The page a read-only server shows for a change.
    pub fn read_only() -> PageError {
        PageError::new(None, read_only_error())
    }

    /// This error as a page for `ctx`.
    pub fn into_page(self, ctx: &Ctx) -> Response {
        error_page(Some(ctx), &ctx.base, &self.0.error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let f = self.0;
        let base = f.ctx.as_ref().map(|c| c.base.clone()).unwrap_or_default();
        error_page(f.ctx.as_ref(), &base, &f.error)
    }
}

/// Turns the API's errors into pages.
pub trait InPage<T> {
    /// The value, or the error as a page for `ctx`.
    fn in_page(self, ctx: &Ctx) -> Result<T, PageError>;
}

impl<T> InPage<T> for Result<T, ApiError> {
    fn in_page(self, ctx: &Ctx) -> Result<T, PageError> {
        self.map_err(|error| PageError::new(Some(ctx.clone()), error))
    }
}

impl<T> InPage<T> for crate::error::Result<T> {
    fn in_page(self, ctx: &Ctx) -> Result<T, PageError> {
        self.map_err(|e| PageError::new(Some(ctx.clone()), e.into()))
    }
}

/// What a page handler returns.
pub type PageResult = Result<Response, PageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_queries_encoded() {
        let m = html! { p { ("<script>alert(1)</script>") } };
        assert_eq!(
            m.into_string(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
        assert_eq!(
            query(&[("tenant", "a b"), ("x", "&=")]),
            "?tenant=a+b&x=%26%3D"
        );
        assert_eq!(query(&[]), "");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(count(&Value::from(1234567u64)), "1\u{202f}234\u{202f}567");
    }
}
