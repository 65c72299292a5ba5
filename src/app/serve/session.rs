//! Browser sessions: the console's login exchanges a valid token for a random session id held
//! in the cookie [`COOKIE`] (HttpOnly, SameSite=Strict, the base path, Secure behind TLS); Redis
//! keeps the session under the SHA-256 of that id (token name, CSRF token, times) with an idle
//! timeout renewed on use and a maximum age ([`crate::broker::SessionRecord`]).
//!
//! A session names its token: every request resolves the name against the configured tokens,
//! so role, scope and payload visibility always come from the config (never from the cookie or
//! Redis), and a token removed from the config — or replaced under the same name — ends its
//! sessions. Changes made with a session need its CSRF token (the synchronizer pattern: a
//! hidden form field in the console, the `X-CSRF-Token` header for the API); bearer tokens
//! need none, since a browser never sends them by itself.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::auth::{constant_time_eq_bytes, hex, random32, TokenEntry};
use super::config::ServeSettings;
use super::error::{ApiError, ApiResult};
use super::principal::Principal;
use super::state::AppState;
use crate::error::Result;

/// The session cookie's name.
pub const COOKIE: &str = "redrive_session";
/// The header a session's API change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a console change carries it in.
pub const CSRF_FIELD: &str = "csrf";
/// The length of an id or CSRF token: 32 random bytes in base64url without padding.
const ID_LEN: usize = 43;

/// A live session, resolved for one request.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who it is: the configured token it was opened with.
    pub principal: Principal,
    /// Its CSRF token.
    pub csrf: String,
    /// The SHA-256 of its id (what Redis names it by).
    id_sha256: String,
}

/// A session just opened: what goes into the cookie, and its CSRF token.
#[derive(Debug)]
pub struct Opened {
    /// The session id (the cookie's value).
    pub id: String,
}

/// 32 random bytes in base64url.
fn random_id() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random32()?))
}

/// What Redis names a session by.
fn id_sha256(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
}

/// The session id a request's cookies carry, if one well-formed is there.
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| {
            v.len() == ID_LEN
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Opens a session for `entry` (a token the login just checked).
pub async fn open(state: &AppState, entry: &TokenEntry) -> Result<Opened> {
    let id = random_id()?;
    let csrf = random_id()?;
    state
        .broker
        .session_open(
            &id_sha256(&id),
            &entry.name,
            &entry.session_check(),
            &csrf,
            state.serve.sessions.idle,
        )
        .await?;
    Ok(Opened { id })
}

/// The session a request's cookie names: `Ok(None)` without a session cookie, 401 when the
/// session has ended (logged out, idle too long, past its maximum age, or its token is no
/// longer configured as it was).
pub async fn resolve(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Session>> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let key = id_sha256(&id);
    let limits = state.serve.sessions;
    let Some(rec) = state
        .broker
        .session_touch(&key, limits.idle, limits.max_age)
        .await?
    else {
        return Err(ApiError::unauthorized(
            "your session has ended (logged out, idle too long, or past its maximum age); log \
             in again",
        ));
    };
    let entry = state.tokens.by_name(&rec.token).filter(|e| {
        constant_time_eq_bytes(e.session_check().as_bytes(), rec.token_check.as_bytes())
    });
    let Some(entry) = entry else {
        state.broker.session_close(&key).await?;
        return Err(ApiError::unauthorized(
            "the token this session was opened with is no longer configured; log in again",
        ));
    };
    Ok(Some(Session {
        principal: Principal::from_token(entry),
        csrf: rec.csrf,
        id_sha256: key,
    }))
}

impl Session {
    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| constant_time_eq_bytes(p.as_bytes(), self.csrf.as_bytes()))
    }

    /// Ends it (logout).
    pub async fn close(&self, state: &AppState) -> Result<()> {
        state.broker.session_close(&self.id_sha256).await?;
        Ok(())
    }
}

/// The cookie's path: the base path, or `/`.
fn cookie_path(serve: &ServeSettings) -> &str {
    if serve.base_path.is_empty() {
        "/"
    } else {
        serve.base_path.as_str()
    }
}

/// The `Set-Cookie` value that hands a browser its session id: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it), the base path, Secure behind TLS. No
/// Max-Age: the browser forgets it when it closes; the server ends it sooner.
pub fn set_cookie(serve: &ServeSettings, opened: &Opened) -> Option<HeaderValue> {
    let secure = if serve.cookie_secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path={}; HttpOnly; SameSite=Strict{secure}",
        opened.id,
        cookie_path(serve)
    ))
    .ok()
}

/// The `Set-Cookie` value that makes a browser forget its session id.
pub fn clear_cookie(serve: &ServeSettings) -> Option<HeaderValue> {
    let secure = if serve.cookie_secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path={}; HttpOnly; SameSite=Strict{secure}; Max-Age=0",
        cookie_path(serve)
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_base64url_and_only_well_formed_cookies_count() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert_eq!(a.len(), ID_LEN);
        assert_ne!(a, b);
        assert_eq!(id_sha256(&a).len(), 64);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={a}")).unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(a.clone()));
        for bad in [
            format!("{COOKIE}={}", &a[1..]),
            format!("{COOKIE}={}!", &a[1..]),
            format!("x{COOKIE}={a}"),
            String::new(),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(&bad).unwrap());
            assert_eq!(cookie_id(&h), None, "{bad}");
        }
    }
}
