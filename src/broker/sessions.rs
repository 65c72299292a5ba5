//! Browser sessions of the HTTP API's console: opened at login, presented by every request that
//! carries the session cookie, closed at logout. One hash per session under the admin tag,
//! named by the SHA-256 of the session id (the id itself never reaches Redis), with an idle
//! timeout renewed on use and a maximum age, both by the server's clock.

use std::time::Duration;

use redis::Value;

use super::connect::Broker;
use super::reply::text_or_empty;
use super::scripts::scripts;
use crate::error::Result;

/// A live session as [`Broker::session_touch`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// The name of the token it was opened with.
    pub token: String,
    /// The check of that token written at login (a digest of its configured hash).
    pub token_check: String,
    /// Its CSRF token.
    pub csrf: String,
    /// When it was opened, server ms.
    pub created_ms: u64,
    /// Now, server ms (it was just marked seen).
    pub now_ms: u64,
}

impl Broker {
    /// Opens a session named by `id_sha256` for the token `token` (see
    /// scripts/session_open.lua); returns the server's time of the start, ms.
    pub(crate) async fn session_open(
        &self,
        id_sha256: &str,
        token: &str,
        token_check: &str,
        csrf: &str,
        idle: Duration,
    ) -> Result<u64> {
        let mut inv = scripts()
            .session_open
            .key(self.keys.admin_session(id_sha256));
        inv.arg(token)
            .arg(token_check)
            .arg(csrf)
            .arg(idle.as_millis() as u64);
        Ok(inv.invoke_async(&mut self.con()).await?)
    }

    /// The session named by `id_sha256`, marked seen with its idle timeout renewed (never past
    /// `max_age` from its start); `None` when there is none or it is past its maximum age (then
    /// deleted).
    pub(crate) async fn session_touch(
        &self,
        id_sha256: &str,
        idle: Duration,
        max_age: Duration,
    ) -> Result<Option<SessionRecord>> {
        let mut inv = scripts()
            .session_touch
            .key(self.keys.admin_session(id_sha256));
        inv.arg(idle.as_millis() as u64)
            .arg(max_age.as_millis() as u64);
        let v: Value = inv.invoke_async(&mut self.con()).await?;
        let Value::Array(items) = v else {
            return Ok(None);
        };
        let mut it = items.into_iter().map(text_or_empty);
        let mut next = || it.next().unwrap_or_default();
        let (token, token_check, csrf) = (next(), next(), next());
        let (created, now) = (next(), next());
        Ok(Some(SessionRecord {
            token,
            token_check,
            csrf,
            created_ms: created.parse().unwrap_or(0),
            now_ms: now.parse().unwrap_or(0),
        }))
    }

    /// Ends the session named by `id_sha256`; whether there was one.
    pub(crate) async fn session_close(&self, id_sha256: &str) -> Result<bool> {
        let n: u64 = redis::cmd("DEL")
            .arg(self.keys.admin_session(id_sha256))
            .query_async(&mut self.con())
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, Settings};
    use crate::embedded::RedisServer;

    async fn broker(redis: &RedisServer) -> Broker {
        let mut raw = RawConfig::defaults().unwrap();
        raw.redis.url = redis.url();
        Broker::connect(&Settings::from_raw(raw).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_session_lives_while_used_and_never_past_its_maximum_age() {
        let redis = RedisServer::start().unwrap();
        let b = broker(&redis).await;
        let idle = Duration::from_secs(60);
        let created = b
            .session_open("aa", "ops", "check", "csrf-1", idle)
            .await
            .unwrap();
        let s = b
            .session_touch("aa", idle, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.token.as_str(), s.token_check.as_str(), s.csrf.as_str()),
            ("ops", "check", "csrf-1")
        );
        assert_eq!(s.created_ms, created);
        assert!(s.now_ms >= created);
        assert_eq!(b.session_touch("bb", idle, idle).await.unwrap(), None);
        // Past the maximum age: refused and deleted.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            b.session_touch("aa", idle, Duration::from_millis(20))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            b.session_touch("aa", idle, Duration::from_secs(3600))
                .await
                .unwrap(),
            None,
            "deleted"
        );
        // Closed: gone.
        b.session_open("cc", "ops", "check", "csrf-2", idle)
            .await
            .unwrap();
        assert!(b.session_close("cc").await.unwrap());
        assert!(!b.session_close("cc").await.unwrap());
        assert_eq!(b.session_touch("cc", idle, idle).await.unwrap(), None);
    }
}
