//! The handler's HTTP client: one pooled keep-alive client per `[[handlers]]` entry, HTTP/1.1,
//! rustls with the ring provider.
//!
//! Trust: the Mozilla roots compiled in (`webpki-roots`) plus the entry's `ca_file`. Compiled-in
//! roots behave the same on every host, the slim container image (no `ca-certificates`)
//! included, and never depend on files read at start-up; a private or self-signed agent
//! certificate is trusted through `ca_file`.
//!
//! Not followed: redirects (a 3xx is a failed attempt, PROTOCOL.md). Not used: proxies from the
//! environment (`HTTP_PROXY` set for other tools in a container would send every payload
//! through a proxy nobody configured for the fleet), retries by the client (the fleet decides
//! retries; the pool only re-sends a request it never wrote because a kept-alive connection
//! had closed), and response decompression.

use std::sync::Arc;
use std::time::Duration;

use super::options::HttpOptions;
use crate::error::{Error, Result};
use crate::handler::HandlerSpec;

/// How long an idle kept-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the client of one entry.
pub(crate) fn build(spec: &HandlerSpec, opts: &HttpOptions) -> Result<reqwest::Client> {
    client(
        &spec.label(),
        &opts.ca_certs,
        opts.connect_timeout,
        opts.max_idle_per_host,
    )
}

/// A client as every entry's (and the notification sender's, src/agents/webhook.rs): the
/// built-in roots plus `ca_certs`, HTTP/1.1, no redirects, no proxy, no client retries;
/// `label` names its owner in an error.
pub(crate) fn client(
    label: &str,
    ca_certs: &[rustls::pki_types::CertificateDer<'static>],
    connect_timeout: Duration,
    max_idle_per_host: usize,
) -> Result<reqwest::Client> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("{label}: cannot build the {what}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in ca_certs {
        roots
            .add(cert.clone())
            .map_err(|e| fail("trust store (ca_file)", &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("TLS configuration", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .retry(reqwest::retry::never())
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .user_agent(concat!("redrive/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail("HTTP client", &e))
}
