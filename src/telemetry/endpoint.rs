//! The member's HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (Redis answers and the member makes progress; 503 with the reason
//! otherwise). A deliberately small HTTP/1.1 server: GET and HEAD, one request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::health::Health;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// The log target this module had before it moved under telemetry; filters name it.
const LOG_TARGET: &str = "redrive::endpoint";

/// The largest request head read; anything longer is refused.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` (so a taken port fails at start-up, clearly) and returns the bound listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding metrics.listen = {addr}"), e))
}

/// The endpoint loop, in the fleet's one loop shape: `run` paces it (and the recorder's
/// upkeep) until shutdown, `step` accepts one connection and hands it to its own task.
pub(crate) struct MetricsEndpoint {
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

impl MetricsEndpoint {
    /// The endpoint on a bound listener (see [`bind`]).
    pub(crate) fn new(
        listener: TcpListener,
        metrics: PrometheusHandle,
        health: Arc<Health>,
    ) -> MetricsEndpoint {
        MetricsEndpoint {
            listener,
            metrics,
            health,
        }
    }

    /// Serves requests until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        // Histograms and idle gauges need periodic upkeep when nothing scrapes for a while.
        let upkeep = {
            let metrics = self.metrics.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => metrics.run_upkeep(),
                    }
                }
            })
        };
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                stepped = self.step() => {
                    if let Err(e) = stepped {
                        tracing::warn!(target: LOG_TARGET, error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        let _ = upkeep.await;
    }

    /// Accepts one connection and answers it in its own task (bounded to 10 s).
    pub(crate) async fn step(&mut self) -> Result<()> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| Error::io("accepting a metrics connection", e))?;
        let metrics = self.metrics.clone();
        let health = self.health.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, &metrics, &health))
                    .await;
        });
        Ok(())
    }
}

async fn answer(mut stream: TcpStream, metrics: &PrometheusHandle, health: &Health) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(
                &mut stream,
                false,
                431,
                "text/plain",
                "request head too large\n",
            )
            .await;
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let _ = respond(
            &mut stream,
            head_only,
            405,
            "text/plain",
            "only GET and HEAD\n",
        )
        .await;
        return;
    }
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = route(path, metrics, health);
    let _ = respond(&mut stream, head_only, status, kind, &body).await;
}

/// Status, content type and body for `path`.
pub fn route(
    path: &str,
    metrics: &PrometheusHandle,
    health: &Health,
) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match health.readiness() {
            Ok(()) => (200, "text/plain", "ready\n".into()),
            Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        _ => (
            404,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

async fn respond(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod step_tests {
    use super::*;

    #[tokio::test]
    async fn one_step_answers_one_connection() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let mut endpoint = MetricsEndpoint::new(
            listener,
            recorder.handle(),
            Arc::new(Health::new(Duration::from_secs(60))),
        );
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        });
        endpoint.step().await.unwrap();
        let reply = client.await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}
