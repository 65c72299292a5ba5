//! `redrive serve`: the reads and changes of the CLI as a versioned JSON API over HTTP/1
//! (`/api/v1/…`), for tokens with a role and a tenant scope, and a browser console (HTML from
//! the same binary, at the base path) that calls the same handlers' code through the same auth
//! and scope layer. The same server runs inside a fleet member with `[serve] enabled = true`.
//!
//! # Layout
//!
//! * [`config`] — `[serve]`, validated; [`auth`] — tokens (made, hashed, checked) and roles;
//!   [`principal`] — a checked token, and the one place tenant scope is enforced;
//!   [`session`] — browser sessions (cookie, Redis, CSRF); [`limit`] — the login's rate limits;
//!   [`proxy`] — the client's address behind trusted reverse proxies.
//! * [`console`] — the browser console: its own route list, pages, embedded assets.
//! * [`conn`] — the HTTP/1 loop (header-read timeout, peer addresses).
//! * [`spec`] — what a route is; [`table`] — every route, once: the router, the checks, the
//!   metrics' route label and the OpenAPI document ([`openapi`]) are built from it.
//! * [`guard`] — around every handler: token, role, read-only, metrics, security headers, the
//!   answers for no route and a wrong method.
//! * [`routes`] — the handlers, one file per resource; [`submit`] — sending a change through
//!   the admin command stream; [`redact`] — what a viewer that may not see payloads gets.
//! * [`extract`] — query, body and path input with JSON errors; [`error`] — the one error
//!   shape; [`state`] — what handlers share; [`tls`] — TLS terminated here.
//!
//! This file composes: [`router`] builds the router from the API's table and the console's
//! list, [`start`] binds and serves until the shutdown signal.

pub mod auth;
pub mod config;
pub mod conn;
pub mod console;
pub mod error;
pub mod extract;
pub mod guard;
pub mod limit;
pub mod openapi;
pub mod principal;
pub mod proxy;
pub mod redact;
pub mod routes;
pub mod session;
pub mod spec;
pub mod state;
pub mod submit;
pub mod table;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::middleware;
use axum::routing::MethodRouter;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::auth::Tokens;
use self::config::ServeSettings;
use self::limit::LoginLimiter;
use self::spec::RouteSpec;
use self::state::{AppState, Shared};
use crate::app::admin_client::context;
use crate::broker::Broker;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// The router of every route in [`table::ROUTES`] and every console page in
/// [`console::routes::PAGES`], under `serve.base_path`: each API route behind its
/// [`guard::guard`], each page behind the console's, a JSON 405 for a method an API path does
/// not take, a 404 for a path nothing has (JSON under the API, a page elsewhere), a 408 for a
/// request not answered within `serve.request_timeout_ms`, and the security headers on every
/// answer.
pub fn router(state: AppState) -> Router {
    let base = state.serve.base_path.clone();
    let mut by_path: BTreeMap<&'static str, Vec<&'static RouteSpec>> = BTreeMap::new();
    for spec in table::ROUTES.iter() {
        by_path.entry(spec.path).or_default().push(spec);
    }
    let mut router: Router<AppState> = Router::new();
    for (path, specs) in by_path {
        let mut methods: MethodRouter<AppState> = MethodRouter::new();
        for spec in &specs {
            let guarded = (spec.handler)(spec.method.filter()).route_layer(
                middleware::from_fn_with_state((state.clone(), *spec), guard::guard),
            );
            methods = methods.merge(guarded);
        }
        let allow = specs
            .iter()
            .map(|s| s.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        methods = methods.fallback(move || {
            let allow = allow.clone();
            async move { guard::wrong_method(path, &allow) }
        });
        router = router.route(&format!("{base}{path}"), methods);
    }
    router
        .merge(console::router(&state))
        .fallback(guard::no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::request_timeout,
        ))
        .layer(middleware::from_fn(guard::security_headers))
        .with_state(state)
}

/// A running API server.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on (the bound port when `serve.listen` asked for port 0).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Waits (at most `grace`) for the server to finish the requests it was answering when
    /// the shutdown signal fired.
    pub async fn stopped(self, grace: Duration) {
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "the HTTP API did not finish its requests within the grace; stopping anyway"
            );
        }
    }
}

/// Binds `serve.listen` and serves the API (TLS when a certificate is configured) until
/// `shutdown`. Refuses to start without a token: an API nobody may call serves nobody.
pub async fn start(
    settings: &Settings,
    serve: &ServeSettings,
    broker: Broker,
    shutdown: Shutdown,
) -> Result<Server> {
    if serve.tokens.is_empty() {
        return Err(Error::Config(
            "the HTTP API needs at least one [[serve.tokens]] entry; create a token with \
             `redrive serve token --name NAME` and add the snippet it prints to the config file"
                .into(),
        ));
    }
    let tls = serve
        .tls
        .as_ref()
        .map(|(cert, key)| tls::config(cert, key))
        .transpose()?;
    let state = AppState::new(Shared {
        broker: broker.clone(),
        settings: settings.clone(),
        serve: serve.clone(),
        tokens: Tokens::new(serve.tokens.clone()),
        ctx: context(broker, settings),
        openapi: openapi::document(&table::ROUTES, &serve.base_path),
        logins: LoginLimiter::new(
            serve.login_per_ip_per_minute,
            serve.login_global_per_minute,
            std::time::Instant::now(),
        ),
    });
    let app = router(state);
    let tcp = TcpListener::bind(serve.listen)
        .await
        .map_err(|e| Error::io(format!("binding serve.listen = {}", serve.listen), e))?;
    let addr = tcp
        .local_addr()
        .map_err(|e| Error::io("reading the API listener's address", e))?;
    let header_timeout = serve.header_read_timeout;
    let task = match tls {
        None => tokio::spawn(conn::serve(tcp, app, header_timeout, shutdown)),
        Some(cfg) => {
            let listener = tls::TlsListener::new(tcp, cfg, shutdown.clone())?;
            tokio::spawn(conn::serve(listener, app, header_timeout, shutdown))
        }
    };
    let server = Server { addr, task };
    tracing::info!(
        listen = %server.addr,
        base_path = %if serve.base_path.is_empty() { "/" } else { serve.base_path.as_str() },
        tls = serve.tls.is_some(),
        read_only = serve.read_only,
        trusted_proxies = !serve.trusted_proxies.is_empty(),
        tokens = serve.tokens.len(),
        "serving the HTTP API"
    );
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::serve::auth::{token_hash, Role, Scope, TokenEntry};
    use crate::config::RawConfig;
    use crate::embedded::RedisServer;
    use serde_json::Value;

    fn client() -> reqwest::Client {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// The router answers every route of the table (without a token: 401, never "no route"),
    /// only them (another path: 404 `no_route`; another method: 405), with the security
    /// headers on every answer, under the base path.
    #[tokio::test]
    async fn the_router_serves_exactly_the_route_table_under_the_base_path() {
        let redis = RedisServer::start().unwrap();
        let mut raw = RawConfig::defaults().unwrap();
        raw.redis.url = redis.url();
        let settings = Settings::from_raw(raw).unwrap();
        let broker = Broker::connect(&settings).await.unwrap();
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&token_hash("secret")[2 * i..2 * i + 2], 16).unwrap();
        }
        let serve = ServeSettings {
            enabled: false,
            listen: "127.0.0.1:0".parse().unwrap(),
            base_path: "/redrive".into(),
            read_only: false,
            tls: None,
            cookie_secure: false,
            sessions: config::SessionLimits::default(),
            login_per_ip_per_minute: 10,
            login_global_per_minute: 100,
            trusted_proxies: proxy::TrustedProxies::default(),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            tokens: vec![TokenEntry {
                name: "ops".into(),
                role: Role::Viewer,
                scope: Scope::All,
                see_payloads: false,
                hash,
            }],
        };
        let shutdown = Shutdown::new();
        let server = start(&settings, &serve, broker, shutdown.clone())
            .await
            .unwrap();
        let base = format!("http://{}/redrive", server.addr);
        let http = client();
        let headers_ok = |r: &reqwest::Response| {
            let h = r.headers();
            h["x-content-type-options"] == "nosniff"
                && h["referrer-policy"] == "no-referrer"
                && h["x-frame-options"] == "DENY"
                && h["cache-control"] == "no-store"
                && h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("frame-ancestors 'none'")
        };
        for spec in table::ROUTES.iter() {
            let path = spec
                .path
                .replace("{*task_id}", "t-1")
                .replace("{tenant}", "acme")
                .replace("{id}", "1-0");
            let req = match spec.method {
                spec::Method::Get => http.get(format!("{base}{path}")),
                spec::Method::Post => http.post(format!("{base}{path}")),
            };
            let r = req.send().await.unwrap();
            let want = if spec.access == spec::Access::Public {
                200
            } else {
                401
            };
            assert_eq!(
                r.status().as_u16(),
                want,
                "{} {}",
                spec.method.as_str(),
                spec.path
            );
            assert!(headers_ok(&r), "{}", spec.path);
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            if want == 401 {
                assert_eq!(body["error"]["code"], "unauthorized");
            }
        }
        let r = http
            .get(format!("{base}/api/v1/nothing"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert!(headers_ok(&r));
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "no_route");
        let r = http
            .get(format!("http://{}/api/v1/me", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "nothing outside the base path");
        let r = http
            .delete(format!("{base}/api/v1/tenants"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405);
        assert_eq!(r.headers()["allow"], "GET");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        let r = http
            .get(format!("{base}/api/v1/me"))
            .bearer_auth("secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let me: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(me["name"], "ops");
        assert_eq!(me["tenants"], serde_json::json!(["*"]));
        shutdown.trigger();
        server.stopped(Duration::from_secs(5)).await;
    }
}
