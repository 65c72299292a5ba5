//! Every page of the console, once (what a page is: [`super::page::Page`]). The API's route
//! table is separate: the OpenAPI document describes the API only.

use axum::routing::on;

use super::assets;
use super::page::Page;
use super::pages::{
    archive, audit, breakers, commands, dead_letters, login, overview, purge, replay, tasks,
};
use crate::app::serve::auth::Role;
use crate::app::serve::spec::{Access, Method};

const VIEWER: Access = Access::Token(Role::Viewer);
const OPERATOR: Access = Access::Token(Role::Operator);
const ADMIN: Access = Access::Token(Role::Admin);

/// Every page of the console.
pub static PAGES: [Page; 24] = [
    Page {
        method: Method::Get,
        path: "/login",
        access: Access::Public,
        change: false,
        handler: |m| on(m, login::form),
    },
    Page {
        method: Method::Post,
        path: "/login",
        access: Access::Public,
        change: false,
        handler: |m| on(m, login::login),
    },
    Page {
        method: Method::Post,
        path: "/logout",
        access: VIEWER,
        change: false,
        handler: |m| on(m, login::logout),
    },
    Page {
        method: Method::Get,
        path: "/assets/{name}",
        access: Access::Public,
        change: false,
        handler: |m| on(m, assets::serve),
    },
    Page {
        method: Method::Get,
        path: "/",
        access: VIEWER,
        change: false,
        handler: |m| on(m, overview::page),
    },
    Page {
        method: Method::Get,
        path: "/dead-letters",
        access: VIEWER,
        change: false,
        handler: |m| on(m, dead_letters::list),
    },
    Page {
        method: Method::Get,
        path: "/dead-letters/{tenant}/{id}",
        access: VIEWER,
        change: false,
        handler: |m| on(m, dead_letters::show),
    },
    Page {
        // Replay goes to the wizard (no change yet); resolve and discard are changes, checked
        // against the read-only switch by the page.
        method: Method::Post,
        path: "/dead-letters/bulk",
        access: OPERATOR,
        change: false,
        handler: |m| on(m, dead_letters::bulk),
    },
    Page {
        method: Method::Post,
        path: "/dead-letters/{tenant}/{id}/review",
        access: OPERATOR,
        change: true,
        handler: |m| on(m, dead_letters::review),
    },
    Page {
        method: Method::Get,
        path: "/archive",
        access: VIEWER,
        change: false,
        handler: |m| on(m, archive::list),
    },
    Page {
        method: Method::Get,
        path: "/archive/{tenant}/{id}",
        access: VIEWER,
        change: false,
        handler: |m| on(m, archive::show),
    },
    Page {
        method: Method::Post,
        path: "/archive/restore",
        access: OPERATOR,
        change: true,
        handler: |m| on(m, archive::restore),
    },
    Page {
        method: Method::Get,
        path: "/replay",
        access: OPERATOR,
        change: false,
        handler: |m| on(m, replay::wizard),
    },
    Page {
        method: Method::Post,
        path: "/replay",
        access: OPERATOR,
        change: true,
        handler: |m| on(m, replay::confirm),
    },
    Page {
        method: Method::Get,
        path: "/purge",
        access: ADMIN,
        change: false,
        handler: |m| on(m, purge::page),
    },
    Page {
        method: Method::Post,
        path: "/purge",
        access: ADMIN,
        change: true,
        handler: |m| on(m, purge::confirm),
    },
    Page {
        method: Method::Get,
        path: "/commands/{id}",
        access: VIEWER,
        change: false,
        handler: |m| on(m, commands::status),
    },
    Page {
        method: Method::Post,
        path: "/commands/{id}/cancel",
        access: OPERATOR,
        change: true,
        handler: |m| on(m, commands::cancel),
    },
    Page {
        method: Method::Post,
        path: "/commands/{id}/resume",
        access: OPERATOR,
        change: true,
        handler: |m| on(m, commands::resume),
    },
    Page {
        method: Method::Get,
        path: "/breakers",
        access: VIEWER,
        change: false,
        handler: |m| on(m, breakers::list),
    },
    Page {
        method: Method::Post,
        path: "/breakers/{tenant}/open",
        access: ADMIN,
        change: true,
        handler: |m| on(m, breakers::open),
    },
    Page {
        method: Method::Post,
        path: "/breakers/{tenant}/close",
        access: ADMIN,
        change: true,
        handler: |m| on(m, breakers::close),
    },
    Page {
        method: Method::Get,
        path: "/audit",
        access: VIEWER,
        change: false,
        handler: |m| on(m, audit::page),
    },
    Page {
        method: Method::Get,
        path: "/tasks",
        access: VIEWER,
        change: false,
        handler: |m| on(m, tasks::page),
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::serve::table::ROUTES;

    /// Pages and API routes never share a path, so neither can shadow the other, and every
    /// change is a POST.
    #[test]
    fn pages_and_api_routes_are_apart() {
        for p in PAGES.iter() {
            assert!(!p.path.starts_with("/api/"), "{}", p.path);
            assert!(!ROUTES.iter().any(|r| r.path == p.path), "{}", p.path);
            if p.change {
                assert_eq!(p.method, Method::Post, "{}", p.path);
            }
        }
    }
}
