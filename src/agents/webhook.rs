//! The sender of tenant notifications: one signed `POST` per event and target, over the same
//! kind of client as the `http` handler (rustls, compiled-in roots, no redirects, no proxy, no
//! client retries: the notifier decides retries) and signed exactly like the handler's requests
//! (`Redrive-Signature`, [`super::protocol::signature`]), so a receiver verifies both with the
//! SDKs' one helper. Never reaches Redis: the fleet's notifier hands it the event.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::http::{client, reply};
use super::protocol;
use crate::error::Result;

const EVENT: HeaderName = HeaderName::from_static("redrive-event");
const EVENT_ID: HeaderName = HeaderName::from_static("redrive-event-id");
const TENANT: HeaderName = HeaderName::from_static("redrive-tenant");
const SIGNATURE: HeaderName = HeaderName::from_static("redrive-signature");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The most bytes of a receiver's reply body read (and dropped): enough to keep a connection
/// reusable, never a reason to wait long.
const REPLY_BYTES: usize = 64 * 1024;

/// One notification to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notification<'a> {
    /// The event's id (`<tenant>/<outbox id>`): the same on every retry, so receivers drop
    /// duplicates by it (delivery is at least once).
    pub id: &'a str,
    /// Its type (`dead_lettered`, `escalated`, `breaker_opened`, `breaker_closed`).
    pub kind: &'a str,
    /// The tenant.
    pub tenant: &'a str,
    /// The JSON body, signed byte for byte.
    pub body: &'a [u8],
}

/// The notification sender: one pooled client for every target.
#[derive(Clone)]
pub(crate) struct Webhook {
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Webhook {
    /// A sender whose requests (connect, send, reply) take at most `timeout` each.
    pub(crate) fn new(timeout: Duration) -> Result<Webhook> {
        let client = client::client("notify", &[], timeout, 4)?;
        Ok(Webhook { client, timeout })
    }

    /// POSTs `n` to `url`, signed with `secret`. `Ok(status)` when the receiver answered (2xx
    /// means delivered), `Err(why)` when it did not (never the URL, which may carry a token,
    /// nor the secret).
    pub(crate) async fn send(
        &self,
        url: &reqwest::Url,
        secret: &str,
        n: &Notification<'_>,
    ) -> std::result::Result<u16, String> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, JSON);
        let value = |what: &str, text: &str| {
            HeaderValue::from_str(text).map_err(|_| format!("the {what} is not a header value"))
        };
        h.insert(EVENT, value("event type", n.kind)?);
        h.insert(EVENT_ID, value("event id", n.id)?);
        h.insert(TENANT, value("tenant", n.tenant)?);
        let mut sig = value(
            "signature",
            &protocol::signature(&[secret.to_owned()], unix_seconds(), n.body),
        )?;
        sig.set_sensitive(true);
        h.insert(SIGNATURE, sig);
        let exchange = async {
            let resp = self
                .client
                .post(url.clone())
                .headers(h)
                .body(n.body.to_vec())
                .send()
                .await
                .map_err(reply::error_text)?;
            let status = resp.status().as_u16();
            // Read (a bounded part of) the reply so the connection can be kept.
            let mut resp = resp;
            let mut read = 0usize;
            while let Ok(Some(chunk)) = resp.chunk().await {
                read += chunk.len();
                if read > REPLY_BYTES {
                    break;
                }
            }
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no reply within {} ms", self.timeout.as_millis())),
        }
    }
}
