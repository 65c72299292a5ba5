//! The server's own HTTP/1 loop, in place of `axum::serve` (which takes no settings): every
//! connection is served by hyper with a header-read timeout (a client that does not send a
//! request's whole head in `serve.header_read_timeout_ms` is cut off, so slow clients cannot
//! hold connections open), and every request carries its peer address
//! ([`axum::extract::ConnectInfo`]) for the login's per-address limit. The per-request
//! timeout is a layer of the router ([`super::guard::request_timeout`]).
//!
//! Shutdown: the loop stops accepting, each connection finishes the request it is answering
//! and closes, and [`serve`] returns once every connection has.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// Serves `app` on every connection `listener` accepts until `shutdown`, then waits for the
/// open connections to finish their requests.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    header_read_timeout: Duration,
    shutdown: Shutdown,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each connection holds a receiver; the sender's `closed` resolves when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (app, stop, open) = (app.clone(), shutdown.clone(), open_rx.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move {
                    // The router is always ready; its errors are answers already.
                    let resp: Result<axum::response::Response, Infallible> =
                        tower_service::Service::call(&mut app, req.map(axum::body::Body::new))
                            .await;
                    resp
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait() => None,
            };
            let result = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "an API connection ended with an error");
            }
            drop(open);
        });
    }
    drop(open_rx);
    open_tx.closed().await;
}
