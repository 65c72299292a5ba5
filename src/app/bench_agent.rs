//! The bench's HTTP agent: a minimal keep-alive HTTP/1 server (hyper) in its own process
//! (`redrive bench --serve-agent ADDR`, started by the bench), so the member's figures — time
//! and memory — are its own.
//!
//! * `POST /ok` — `{"status":"ok"}` at once.
//! * `POST /hold` — the same, once `POST /release` was called (or after ten minutes): attempts
//!   held in flight. `GET /held` — how many are held now.

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The longest a `/hold` request waits for `/release`.
const HOLD_LIMIT: Duration = Duration::from_secs(600);

struct State {
    held: AtomicUsize,
    released: tokio::sync::watch::Sender<bool>,
}

fn answer(status: u16, content_type: &str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn respond(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    // The whole request is read, as a real agent does.
    let _ = req.into_body().collect().await;
    match path.as_str() {
        "/ok" => answer(200, "application/json", r#"{"status":"ok"}"#),
        "/hold" => {
            state.held.fetch_add(1, Ordering::SeqCst);
            let mut rx = state.released.subscribe();
            let _ = tokio::time::timeout(HOLD_LIMIT, rx.wait_for(|r| *r)).await;
            state.held.fetch_sub(1, Ordering::SeqCst);
            answer(200, "application/json", r#"{"status":"ok"}"#)
        }
        "/held" => {
            let n = state.held.load(Ordering::SeqCst).to_string();
            let mut r = answer(200, "text/plain", "");
            *r.body_mut() = Full::new(Bytes::from(n));
            r
        }
        "/release" => {
            state.released.send_replace(true);
            answer(200, "text/plain", "released")
        }
        _ => answer(404, "text/plain", "not found"),
    }
}

/// Serves the agent on `addr` until the process is killed; the first line of stdout is
/// `listening <addr>`.
pub async fn serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding the bench agent to {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bench agent's address", e))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {local}");
        let _ = out.flush();
    }
    let state = Arc::new(State {
        held: AtomicUsize::new(0),
        released: tokio::sync::watch::channel(false).0,
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of descriptors or similar: wait a little rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The agent as a child process of the bench; killed when dropped.
pub(crate) struct AgentProcess {
    child: std::process::Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl AgentProcess {
    /// Starts `exe bench --serve-agent 127.0.0.1:0` and reads the address it bound.
    pub(crate) fn start(exe: &std::path::Path) -> Result<AgentProcess> {
        let mut child = std::process::Command::new(exe)
            .args(["bench", "--serve-agent", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("starting the bench agent ({})", exe.display()), e))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let Some(addr) = line.trim().strip_prefix("listening ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Protocol(format!(
                "bench: the agent did not start (said {:?})",
                line.trim()
            )));
        };
        Ok(AgentProcess { child, addr })
    }

    /// The URL of `path` on the agent.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One plain HTTP/1.1 exchange with the agent (its control endpoints): the body.
    async fn call(&self, method: &str, path: &str) -> Result<String> {
        let io = |e| Error::io("talking to the bench agent", e);
        let mut s = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(io)?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
            .await
            .map_err(|_| Error::Protocol("bench: the agent did not answer".into()))?
            .map_err(io)?;
        Ok(reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    }

    /// How many `/hold` requests the agent holds now.
    pub(crate) async fn held(&self) -> Result<usize> {
        Ok(self.call("GET", "/held").await?.trim().parse().unwrap_or(0))
    }

    /// Lets every held request (and every later one) answer.
    pub(crate) async fn release(&self) -> Result<()> {
        self.call("POST", "/release").await.map(|_| ())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
