//! The browser console: server-rendered HTML pages from the same binary, at the base path
//! (`/` the overview, `/login`, `/dead-letters`, …), for people holding a token. A login
//! exchanges the token for a browser session ([`super::session`]); every page then acts as
//! that token — its role, its tenants, whether it sees payloads — by calling the same code the
//! API's handlers call (their `*_doc` and `send_*` functions), never the API over HTTP, so a
//! page shows exactly what the API would answer and every change goes through the admin
//! command stream ([`super::submit`]), audited under the token's name.
//!
//! # Layout
//!
//! * [`page`] — what a page is; [`routes`] — every page once (its own list: the API's table
//!   and OpenAPI document stay the API's); [`guard`] — around every page: the session (else
//!   the login page), role, read-only, the request metrics by page template; [`visit`] — what
//!   a page knows of the visit (`Ctx`); [`form`] — form bodies, each change's checked against
//!   the session's CSRF token.
//! * [`html`] — the page shell (navigation, who is logged in, logout) and shared pieces
//!   (badges, tables, pagination, errors), written with maud, which escapes every value it
//!   interpolates; [`assets`] — the stylesheet, script and icon, embedded, served under
//!   content-hashed names with a long cache life.
//! * [`pages`] — one file per page or group of pages.
//!
//! Pages are readable without JavaScript (links, GET forms, POST forms for changes); the one
//! script (`assets/console.js`, type-checked by `tsc` in CI) adds live progress, select-all and
//! keyboard shortcuts. The content security policy allows scripts and styles from the server
//! only: no inline script, no inline style, no framing.

pub mod assets;
pub mod form;
pub mod guard;
pub mod html;
pub mod page;
pub mod pages;
pub mod routes;
pub mod visit;

use std::collections::BTreeMap;

use axum::middleware;
use axum::routing::MethodRouter;
use axum::Router;

use super::state::AppState;
use page::Page;

/// The router of every page of [`routes::PAGES`] under the base path, each behind its
/// [`guard::guard`].
pub fn router(state: &AppState) -> Router<AppState> {
    let base = state.serve.base_path.clone();
    let mut by_path: BTreeMap<&'static str, Vec<&'static Page>> = BTreeMap::new();
    for page in routes::PAGES.iter() {
        by_path.entry(page.path).or_default().push(page);
    }
    let mut router: Router<AppState> = Router::new();
    for (path, pages) in by_path {
        let mut methods: MethodRouter<AppState> = MethodRouter::new();
        for page in pages {
            let guarded = (page.handler)(page.method.filter()).route_layer(
                middleware::from_fn_with_state((state.clone(), page), guard::guard),
            );
            methods = methods.merge(guarded);
        }
        let full = if path == "/" {
            if base.is_empty() {
                "/".to_owned()
            } else {
                base.clone()
            }
        } else {
            format!("{base}{path}")
        };
        router = router.route(&full, methods);
        if path == "/" && !base.is_empty() {
            // `/redrive/` as well as `/redrive`.
            router = router.route(&format!("{base}/"), {
                let mut m: MethodRouter<AppState> = MethodRouter::new();
                for page in routes::PAGES.iter().filter(|p| p.path == "/") {
                    m = m.merge((page.handler)(page.method.filter()).route_layer(
                        middleware::from_fn_with_state((state.clone(), page), guard::guard),
                    ));
                }
                m
            });
        }
    }
    router
}
