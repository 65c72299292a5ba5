//! What every request handler shares: Redis, the settings, the tokens, the admin context
//! changes are sent with, the OpenAPI document built from the route table, and the login's
//! rate limits.

use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;

use super::auth::Tokens;
use super::config::ServeSettings;
use super::limit::LoginLimiter;
use crate::admin::exec::AdminContext;
use crate::broker::Broker;
use crate::config::Settings;

/// The server's shared state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// Redis.
    pub broker: Broker,
    /// The library's settings (`[admin]` time-outs, isolation caps and weights, …).
    pub settings: Settings,
    /// `[serve]`.
    pub serve: ServeSettings,
    /// The tokens requests are checked against.
    pub tokens: Tokens,
    /// What a change is sent (or a dry run evaluated) with.
    pub ctx: AdminContext,
    /// The OpenAPI document, built once from the route table.
    pub openapi: Value,
    /// The console login's rate limits.
    pub logins: LoginLimiter,
}

impl AppState {
    /// The state of a server.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
