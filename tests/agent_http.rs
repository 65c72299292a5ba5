//! The `http` handler type against real agent servers on loopback (a hyper HTTP/1 server
//! started by each test; TLS with a certificate made here): every reply of the issue and of
//! conformance/replies.json ends in its class, every request of conformance/requests.json
//! reaches the agent exactly, streamed steps reach the attempt's context as they arrive.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redrive::testkit::{self, Limits};
use redrive::{FailureClass, Handler, HandlerSpec, NewTask, Outcome, StepEvent, Task, TaskContext};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

// ------------------------------------------------------------------------- the agent server

type Body = BoxBody<Bytes, std::io::Error>;

/// A request the agent received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

type Answer = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
type Respond = Arc<dyn Fn(Seen) -> Answer + Send + Sync>;

/// A real agent server on a free loopback port: answers each request with `respond`, keeps
/// what it received and counts connections.
struct Agent {
    addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Agent {
    async fn start<F, Fut>(respond: F) -> Agent
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Agent::start_with(None, respond).await
    }

    async fn start_with<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, respond: F) -> Agent
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let respond: Respond = Arc::new(move |s| Box::pin(respond(s)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let is_tls = tls.is_some();
        let accept = tokio::spawn({
            let seen = seen.clone();
            let connections = connections.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let respond = respond.clone();
                    let seen = seen.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: Request<hyper::body::Incoming>| {
                                let respond = respond.clone();
                                let seen = seen.clone();
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let s = Seen {
                                        path: parts.uri.path().to_owned(),
                                        headers: parts.headers,
                                        body,
                                    };
                                    seen.lock().unwrap().push(s.clone());
                                    Ok::<_, Infallible>(respond(s).await)
                                }
                            },
                        );
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(stream).await {
                                    let _ = http.serve_connection(TokioIo::new(s), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
            }
        });
        Agent {
            addr,
            tls: is_tls,
            seen,
            connections,
            accept,
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A whole reply.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

fn json_reply(status: u16, body: &str) -> Response<Body> {
    reply(
        status,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
}

/// A streamed NDJSON reply whose chunks the test sends (an `Err` breaks the connection;
/// dropping the sender ends the body cleanly).
fn streamed(rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>) -> Response<Body> {
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .unwrap()
}

fn line(v: Value) -> Result<Bytes, std::io::Error> {
    Ok(Bytes::from(format!("{v}\n")))
}

// ------------------------------------------------------------------------- the handler side

fn spec(url: &str, options: Value) -> HandlerSpec {
    let mut s = HandlerSpec::catch_all("http", Duration::from_secs(10), 64);
    let mut o = options.as_object().cloned().unwrap_or_default();
    o.insert("url".into(), json!(url));
    s.options = o;
    s
}

fn handler(url: &str, options: Value) -> Arc<dyn Handler> {
    testkit::http_handler(&spec(url, options)).unwrap()
}

fn task(kind: &str) -> Arc<Task> {
    Arc::new(
        NewTask::new("acme", kind, json!({"ticket": 42}))
            .with_task_id(format!("t-{kind}"))
            .into_task(&Limits::default(), testkit::now_ms())
            .unwrap(),
    )
}

/// One attempt through the handler, concluded as the executor does; bounded in time.
async fn attempt(h: &Arc<dyn Handler>, task: Arc<Task>) -> (Outcome, TaskContext) {
    let ctx = TaskContext::for_attempt("m1".into(), task.attempt, 3, &task.steps, None);
    let o = tokio::time::timeout(Duration::from_secs(30), h.handle(task, ctx.clone()))
        .await
        .expect("the attempt ends in bounded time");
    (ctx.conclude(o), ctx)
}

fn class_of(o: &Outcome) -> &'static str {
    match o {
        Outcome::Done => "ok",
        Outcome::Fail { class, .. } => class.as_str(),
        Outcome::Error { .. } => "error",
        Outcome::Poison { .. } => "poison",
    }
}

fn reason_of(o: &Outcome) -> &str {
    match o {
        Outcome::Fail { reason, .. } => reason,
        Outcome::Error { message } => message,
        Outcome::Poison { reason } => reason,
        Outcome::Done => "",
    }
}

fn retry_after_of(o: &Outcome) -> Option<Duration> {
    match o {
        Outcome::Fail { retry_after, .. } => *retry_after,
        _ => None,
    }
}

fn vectors(name: &str) -> Value {
    let path = format!("{}/conformance/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The next step event of a sink, within 10 s.
async fn next(events: &mut mpsc::UnboundedReceiver<Box<StepEvent>>) -> StepEvent {
    *tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a step event in time")
        .expect("the sink is open")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ------------------------------------------------------------------------------------ tests

#[tokio::test]
async fn the_issue_cases_end_in_their_class_and_schedule() {
    let agent = Agent::start(|s: Seen| async move {
        match s.path.as_str() {
            "/ok" => json_reply(200, r#"{"status":"ok","output":{"summary":"done"}}"#),
            "/html" => reply(
                200,
                &[("content-type", "text/html")],
                format!("<html>{}</html>", "oops ".repeat(3000)),
            ),
            "/429s" => reply(429, &[("retry-after", "7")], ""),
            "/429date" => {
                let at = SystemTime::now() + Duration::from_secs(30);
                reply(429, &[("retry-after", &httpdate::fmt_http_date(at))], "")
            }
            "/500" => reply(500, &[("content-type", "text/plain")], "model exploded"),
            "/400" => reply(400, &[("content-type", "text/plain")], "bad ticket id"),
            "/401" => reply(401, &[], ""),
            "/malformed" => json_reply(200, r#"{"status":"ok","#),
            _ => reply(404, &[], ""),
        }
    })
    .await;
    let run = |path: &str| {
        let h = handler(&agent.url(path), json!({}));
        async move { attempt(&h, task("triage")).await }
    };

    let (o, ctx) = run("/ok").await;
    assert_eq!(o, Outcome::Done);
    assert_eq!(ctx.final_output(), Some(json!({"summary": "done"})));

    // A 2xx that breaks the contract: silent_failure with the body's first 4 KiB, bounded.
    let (o, _) = run("/html").await;
    assert_eq!(class_of(&o), "silent_failure", "{o:?}");
    let r = reason_of(&o);
    assert!(
        r.contains("<html>oops oops") && r.contains("bytes in all"),
        "{r}"
    );
    assert!(r.len() < 4096 + 400, "{}", r.len());

    let (o, _) = run("/429s").await;
    assert_eq!(class_of(&o), "rate_limited");
    assert_eq!(retry_after_of(&o), Some(Duration::from_secs(7)));

    let (o, _) = run("/429date").await;
    assert_eq!(class_of(&o), "rate_limited");
    let after = retry_after_of(&o).expect("a delay from the HTTP date");
    assert!(
        after > Duration::from_secs(28) && after <= Duration::from_secs(30),
        "{after:?}"
    );

    let (o, _) = run("/500").await;
    assert_eq!(class_of(&o), "llm_error");
    assert!(reason_of(&o).contains("500 Internal Server Error: model exploded"));
    assert!(FailureClass::LlmError.is_transient());

    let (o, _) = run("/400").await;
    assert_eq!(class_of(&o), "invalid_input");
    assert!(reason_of(&o).contains("bad ticket id"));

    let (o, _) = run("/401").await;
    assert_eq!(class_of(&o), "unauthorized");

    let (o, _) = run("/malformed").await;
    assert_eq!(class_of(&o), "silent_failure");
    assert!(reason_of(&o).contains(r#"{"status":"ok","#), "{o:?}");
}

#[tokio::test]
async fn every_reply_vector_ends_as_expected_through_a_real_server() {
    let v = vectors("replies.json");
    let cases: Arc<Vec<Value>> = Arc::new(v["cases"].as_array().unwrap().clone());
    assert!(cases.len() >= 50, "{}", cases.len());
    let served = cases.clone();
    let agent = Agent::start(move |s: Seen| {
        let served = served.clone();
        async move {
            let i: usize = s.path.trim_start_matches("/case/").parse().unwrap();
            let c = &served[i];
            let mut headers: Vec<(String, String)> = Vec::new();
            if let Some(ct) = c["content_type"].as_str() {
                headers.push(("content-type".into(), ct.into()));
            }
            for (k, hv) in c["headers"].as_object().cloned().unwrap_or_default() {
                let mut value = hv.as_str().unwrap().to_owned();
                // An HTTP date is sent as the same distance from this clock as from the
                // vector's `now`.
                if let (Some(now), Ok(at)) = (c["now"].as_u64(), httpdate::parse_http_date(&value))
                {
                    let ahead = at
                        .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(now))
                        .unwrap();
                    value = httpdate::fmt_http_date(SystemTime::now() + ahead);
                }
                headers.push((k, value));
            }
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            reply(
                c["http_status"].as_u64().unwrap() as u16,
                &refs,
                c["body"].as_str().unwrap().to_owned(),
            )
        }
    })
    .await;

    for (i, c) in cases.iter().enumerate() {
        let name = c["name"].as_str().unwrap();
        let h = handler(&agent.url(&format!("/case/{i}")), json!({}));
        let (o, ctx) = attempt(&h, task("vector")).await;
        let expect = &c["expect"];
        match expect["outcome"].as_str().unwrap() {
            "ok" => {
                assert_eq!(o, Outcome::Done, "{name}");
                assert_eq!(
                    ctx.final_output().unwrap_or(Value::Null),
                    expect["output"],
                    "{name}"
                );
            }
            "error" => {
                assert_eq!(
                    o,
                    Outcome::Error {
                        message: expect["error"].as_str().unwrap().into()
                    },
                    "{name}"
                );
            }
            "fail" => {
                assert_eq!(
                    class_of(&o),
                    expect["class"].as_str().unwrap(),
                    "{name}: {o:?}"
                );
                if let Some(e) = expect["error"].as_str() {
                    assert_eq!(reason_of(&o), e, "{name}");
                }
                if let Some(e) = expect["error_contains"].as_str() {
                    assert!(reason_of(&o).contains(e), "{name}: {o:?}");
                }
                match expect["retry_after_ms"].as_u64() {
                    Some(ms) if c["now"].is_u64() => {
                        // Whole seconds on the wire, and the clock moved on since.
                        let got = retry_after_of(&o).expect(name).as_millis() as u64;
                        assert!(got <= ms && got + 1500 > ms, "{name}: {got} vs {ms}");
                    }
                    Some(ms) => assert_eq!(
                        retry_after_of(&o),
                        Some(Duration::from_millis(ms)),
                        "{name}"
                    ),
                    None => {}
                }
                if let Some(step) = expect["open_step"].as_str() {
                    assert!(
                        reason_of(&o).contains(&format!("'{step}'")),
                        "{name}: {o:?}"
                    );
                }
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
        if let Some(steps) = expect["steps"].as_array() {
            let got: Vec<Value> = ctx
                .progress()
                .steps
                .iter()
                .filter(|s| s.done)
                .map(|s| json!({"name": s.name, "output": s.output, "side_effect": s.side_effect}))
                .collect();
            assert_eq!(&got, steps, "{name}");
        }
        if let Some(p) = expect.get("progress") {
            assert_eq!(ctx.progress().partial_output.as_ref(), Some(p), "{name}");
        }
    }
    assert_eq!(agent.seen().len(), cases.len());
}

#[tokio::test]
async fn every_request_vector_reaches_the_agent_exactly_and_signed() {
    let agent = Agent::start(|_s: Seen| async { json_reply(200, r#"{"status":"ok"}"#) }).await;
    let secrets = vec!["whsec-new".to_owned(), "whsec-old".to_owned()];
    let h = handler(
        &agent.url("/redrive"),
        json!({
            "secrets": secrets,
            "headers": {"Authorization": "Bearer t0ken", "X-Team": "ops"},
        }),
    );
    let v = vectors("requests.json");
    let cases = v["requests"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for (i, c) in cases.iter().enumerate() {
        let name = c["name"].as_str().unwrap();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = c["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone().into_bytes(),
                    v.as_str().unwrap().as_bytes().to_vec(),
                )
            })
            .collect();
        let task = testkit::task_from_fields(
            c["tenant"].as_str().unwrap(),
            c["entry_id"].as_str().unwrap(),
            &fields,
        )
        .unwrap();
        let max_attempts = c["max_attempts"].as_u64().unwrap() as u32;
        let ctx =
            TaskContext::for_attempt("m1".into(), task.attempt, max_attempts, &task.steps, None);
        let o = h.handle(Arc::new(task), ctx).await;
        assert_eq!(o, Outcome::Done, "{name}");

        let seen = agent.seen();
        assert_eq!(seen.len(), i + 1);
        let got = &seen[i];
        assert_eq!(got.path, "/redrive");
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body, c["body"], "{name}");
        let header = |n: &str| got.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        for (k, want) in c["headers"].as_object().unwrap() {
            assert_eq!(header(k).as_deref(), want.as_str(), "{name}: {k}");
        }
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(
            header("accept").as_deref(),
            Some("application/json, application/x-ndjson")
        );
        assert_eq!(
            header("user-agent"),
            Some(format!("redrive/{}", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(header("authorization").as_deref(), Some("Bearer t0ken"));
        assert_eq!(header("x-team").as_deref(), Some("ops"));
        // Signed once per secret: either verifies alone; a wrong one does not; nor a stale one.
        let sig = header("redrive-signature").expect("signed");
        assert_eq!(sig.matches("v1=").count(), 2, "{sig}");
        let now = unix_now();
        for s in &secrets {
            assert!(
                testkit::verify_signature(std::slice::from_ref(s), &sig, &got.body, now),
                "{name}"
            );
        }
        assert!(!testkit::verify_signature(
            &["nope".into()],
            &sig,
            &got.body,
            now
        ));
        assert!(!testkit::verify_signature(
            &secrets,
            &sig,
            &got.body,
            now + 3600
        ));
        let mut tampered = got.body.to_vec();
        tampered.push(b' ');
        assert!(!testkit::verify_signature(&secrets, &sig, &tampered, now));
    }

    // Unsigned without secrets.
    let plain = handler(&agent.url("/plain"), json!({}));
    assert_eq!(attempt(&plain, task("x")).await.0, Outcome::Done);
    let last = agent.seen().pop().unwrap();
    assert!(last.headers.get("redrive-signature").is_none());
}

#[tokio::test]
async fn streamed_steps_reach_the_context_while_the_agent_still_works() {
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate_rx)));
    let agent = Agent::start(move |_s: Seen| {
        let gate = gate.lock().unwrap().take();
        async move {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let _ = tx.send(line(
                    json!({"event": "step_started", "name": "draft", "side_effect": false}),
                ));
                let _ = tx.send(line(
                    json!({"event": "step_done", "name": "draft", "output": "Dear u1"}),
                ));
                let _ = tx.send(line(
                    json!({"event": "step_started", "name": "send", "side_effect": true}),
                ));
                // The agent pauses mid-stream until the test has seen the steps so far.
                if let Some(gate) = gate {
                    let _ = tokio::time::timeout(Duration::from_secs(20), gate).await;
                }
                let _ = tx.send(line(
                    json!({"event": "step_done", "name": "send", "output": {"id": "m-1"}}),
                ));
                let _ = tx.send(line(json!({"event": "progress", "percent": 100})));
                let _ = tx.send(line(json!({"status": "ok", "output": {"id": "m-1"}})));
            });
            streamed(rx)
        }
    })
    .await;
    let h = handler(&agent.url("/stream"), json!({}));
    let (sink, mut events) = mpsc::unbounded_channel();
    let ctx = TaskContext::for_attempt("m1".into(), 1, 3, &[], Some(sink));
    let running = tokio::spawn({
        let ctx = ctx.clone();
        let h = h.clone();
        async move { h.handle(task("send_digest"), ctx).await }
    });

    match next(&mut events).await {
        StepEvent::Done(s) => {
            assert_eq!((s.name.as_str(), &s.output), ("draft", &json!("Dear u1")))
        }
        other => panic!("{other:?}"),
    }
    match next(&mut events).await {
        StepEvent::Started(s) => assert!(s.name == "send" && s.side_effect),
        other => panic!("{other:?}"),
    }
    // Recorded while the final line has not been sent: the attempt is still running.
    assert!(!running.is_finished());
    assert_eq!(ctx.open_side_effect().as_deref(), Some("send"));
    gate_tx.send(()).unwrap();

    let o = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.conclude(o), Outcome::Done);
    match next(&mut events).await {
        StepEvent::Done(s) => assert_eq!((s.name.as_str(), s.side_effect), ("send", true)),
        other => panic!("{other:?}"),
    }
    assert_eq!(ctx.final_output(), Some(json!({"id": "m-1"})));
    assert_eq!(ctx.progress().partial_output, Some(json!({"percent": 100})));
    assert_eq!(ctx.open_side_effect(), None);
}

#[tokio::test]
async fn replies_over_the_size_limit_are_schema_mismatch() {
    let agent = Agent::start(|s: Seen| async move {
        match s.path.as_str() {
            "/big" => {
                let body = format!(
                    r#"{{"status":"ok","output":"{}"}}"#,
                    "x".repeat(1024 * 1024)
                );
                json_reply(200, &body)
            }
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(line(
                    json!({"event": "step_done", "name": "a", "output": 1}),
                ));
                let _ = tx.send(line(json!({"event": "progress", "blob": "y".repeat(2000)})));
                let _ = tx.send(line(json!({"status": "ok"})));
                streamed(rx)
            }
        }
    })
    .await;
    // The default limit (1 MiB) for a JSON body.
    let (o, _) = attempt(&handler(&agent.url("/big"), json!({})), task("big")).await;
    assert_eq!(class_of(&o), "schema_mismatch", "{o:?}");
    assert!(reason_of(&o).contains("max_reply_bytes = 1048576"), "{o:?}");
    assert!(!FailureClass::SchemaMismatch.is_transient());
    // One line of a stream over a configured limit; the line before it was applied.
    let h = handler(&agent.url("/lines"), json!({"max_reply_bytes": 1024}));
    let (o, ctx) = attempt(&h, task("lines")).await;
    assert_eq!(class_of(&o), "schema_mismatch", "{o:?}");
    assert!(
        reason_of(&o).contains("line 2 of the streamed reply"),
        "{o:?}"
    );
    assert_eq!(ctx.progress().steps.len(), 1);
}

#[tokio::test]
async fn a_reply_past_the_timeout_is_a_timeout_and_an_open_side_effect_a_partial_execution() {
    let agent = Agent::start(|s: Seen| async move {
        if s.path == "/slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return json_reply(200, r#"{"status":"ok"}"#);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _ = tx.send(line(
                json!({"event": "step_started", "name": "pay", "side_effect": true}),
            ));
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = tx.send(line(json!({"status": "ok"})));
        });
        streamed(rx)
    })
    .await;
    let mut s = spec(&agent.url("/slow"), json!({}));
    s.timeout = Duration::from_millis(300);
    let h = testkit::http_handler(&s).unwrap();
    let started = Instant::now();
    let (o, _) = attempt(&h, task("slow")).await;
    assert_eq!(class_of(&o), "timeout", "{o:?}");
    assert!(reason_of(&o).contains("300 ms"), "{o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    s.options.insert("url".into(), json!(agent.url("/pay")));
    let h = testkit::http_handler(&s).unwrap();
    let (o, ctx) = attempt(&h, task("pay")).await;
    assert_eq!(class_of(&o), "partial_execution", "{o:?}");
    assert!(reason_of(&o).contains("'pay'") && reason_of(&o).contains("timeout"));
    assert_eq!(ctx.open_side_effect().as_deref(), Some("pay"));
}

#[tokio::test]
async fn refused_reset_and_broken_streams_are_upstream_unavailable() {
    // Nothing listens: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = handler(&format!("http://127.0.0.1:{port}/x"), json!({}));
    let (o, _) = attempt(&h, task("refused")).await;
    assert_eq!(class_of(&o), "upstream_unavailable", "{o:?}");
    assert!(reason_of(&o).contains(&format!("cannot connect to http://127.0.0.1:{port}")));

    // A server that reads the request and closes the connection without a reply.
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_port = raw.local_addr().unwrap().port();
    let closer = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = raw.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            drop(s);
        }
    });
    let h = handler(&format!("http://127.0.0.1:{raw_port}/x"), json!({}));
    let (o, _) = attempt(&h, task("reset")).await;
    assert_eq!(class_of(&o), "upstream_unavailable", "{o:?}");
    closer.abort();

    let agent = Agent::start(|s: Seen| async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(line(
            json!({"event": "step_done", "name": "a", "output": 1}),
        ));
        if s.path == "/break" {
            // After the head and the first line went out, the agent dies mid-body.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Err(std::io::Error::other("agent died")));
            });
        }
        streamed(rx)
    })
    .await;
    let (o, ctx) = attempt(&handler(&agent.url("/break"), json!({})), task("break")).await;
    assert_eq!(class_of(&o), "upstream_unavailable", "{o:?}");
    assert!(
        reason_of(&o).contains("broke off before its final line"),
        "{o:?}"
    );
    assert_eq!(
        ctx.progress().steps.len(),
        1,
        "the step before the break is kept"
    );
    let (o, _) = attempt(&handler(&agent.url("/end"), json!({})), task("end")).await;
    assert_eq!(class_of(&o), "upstream_unavailable", "{o:?}");
    assert!(
        reason_of(&o).contains("ended before its final line"),
        "{o:?}"
    );
}

/// A self-signed certificate for 127.0.0.1 and a TLS acceptor serving it; the PEM file of
/// the certificate.
fn self_signed(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let pem = dir.join("agent-ca.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem)
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate_trusted_by_ca_file() {
    let dir = std::env::temp_dir().join(format!("redrive-http-tls-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let (acceptor, pem) = self_signed(&dir);
    let agent = Agent::start_with(Some(acceptor), |_s: Seen| async {
        json_reply(200, r#"{"status":"ok","output":"over tls"}"#)
    })
    .await;
    let url = agent.url("/secure");
    assert!(url.starts_with("https://"));

    let trusted = handler(&url, json!({"ca_file": pem.to_str().unwrap()}));
    let (o, ctx) = attempt(&trusted, task("tls")).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    assert_eq!(ctx.final_output(), Some(json!("over tls")));

    // The same server without the certificate trusted: the handshake fails.
    let untrusted = handler(&url, json!({}));
    let (o, _) = attempt(&untrusted, task("tls")).await;
    assert_eq!(class_of(&o), "upstream_unavailable", "{o:?}");
    assert!(
        reason_of(&o).to_lowercase().contains("certificate"),
        "{o:?}"
    );
    assert_eq!(
        agent.seen().len(),
        1,
        "nothing reached the agent without trust"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let agent = Agent::start(|s: Seen| async move {
        if s.path == "/stream" {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(line(json!({"event": "progress", "p": 1})));
            let _ = tx.send(line(json!({"status": "ok"})));
            return streamed(rx);
        }
        json_reply(200, r#"{"status":"ok"}"#)
    })
    .await;
    let h = handler(&agent.url("/json"), json!({}));
    for _ in 0..20 {
        assert_eq!(attempt(&h, task("k")).await.0, Outcome::Done);
    }
    let after_json = agent.connections.load(Ordering::SeqCst);
    assert!(after_json <= 2, "20 attempts over {after_json} connections");
    let h = handler(&agent.url("/stream"), json!({}));
    for _ in 0..10 {
        assert_eq!(attempt(&h, task("k")).await.0, Outcome::Done);
    }
    let streams = agent.connections.load(Ordering::SeqCst) - after_json;
    assert!(
        streams <= 2,
        "10 streamed attempts over {streams} connections"
    );
    // Concurrent attempts open connections of their own, bounded by the attempts.
    let h = handler(&agent.url("/json"), json!({}));
    let before = agent.connections.load(Ordering::SeqCst);
    let all: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { attempt(&h, task("k")).await.0 })
        })
        .collect();
    for a in all {
        assert_eq!(a.await.unwrap(), Outcome::Done);
    }
    assert!(agent.connections.load(Ordering::SeqCst) - before <= 8);
}

#[tokio::test]
async fn a_bad_entry_is_a_configuration_error() {
    let e = testkit::http_handler(&spec("http://127.0.0.1:1/", json!({"urll": "x"})))
        .err()
        .expect("refused");
    assert!(matches!(e, redrive::Error::Config(_)), "{e:?}");
    assert_eq!(e.exit_code(), 78);
    assert!(
        e.to_string()
            .contains("handlers[0].urll (type http): unknown key"),
        "{e}"
    );
}

#[tokio::test]
async fn attempts_are_counted_by_handler_and_outcome() {
    let metrics = testkit::install_prometheus(Duration::from_secs(60)).unwrap();
    let agent = Agent::start(|s: Seen| async move {
        match s.path.as_str() {
            "/ok" => json_reply(200, r#"{"status":"ok"}"#),
            _ => reply(503, &[], ""),
        }
    })
    .await;
    let ok = handler(&agent.url("/ok"), json!({}));
    let mut s = spec(&agent.url("/busy"), json!({}));
    s.index = 3;
    let busy = testkit::http_handler(&s).unwrap();
    attempt(&ok, task("a")).await;
    attempt(&ok, task("a")).await;
    attempt(&busy, task("b")).await;
    let text = metrics.render();
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let attempts = "redrive_http_attempts_total";
    assert_eq!(
        value(attempts, &[r#"handler="0:http""#, r#"outcome="ok""#]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            attempts,
            &[r#"handler="3:http""#, r#"outcome="upstream_unavailable""#]
        ),
        Some(1.0)
    );
    // Every outcome is registered at 0 from the start.
    assert_eq!(
        value(attempts, &[r#"handler="3:http""#, r#"outcome="timeout""#]),
        Some(0.0)
    );
    let duration = "redrive_http_attempt_duration_seconds";
    assert_eq!(
        value(
            &format!("{duration}_count"),
            &[r#"handler="0:http""#, r#"outcome="ok""#]
        ),
        Some(2.0)
    );
    assert!(value(
        &format!("{duration}_bucket"),
        &[r#"handler="0:http""#, r#"le="0.005""#]
    )
    .is_some());

    // Every redrive_http_* name the dashboards use is emitted by a real http handler (the
    // observability test's member fleet runs no http handler: it leaves these names to this
    // check).
    let mut used = std::collections::BTreeSet::new();
    for d in
        std::fs::read_dir(format!("{}/grafana/dashboards", env!("CARGO_MANIFEST_DIR"))).unwrap()
    {
        let text = std::fs::read_to_string(d.unwrap().path()).unwrap();
        for (i, _) in text.match_indices("redrive_http_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    assert!(!used.is_empty(), "the dashboards show the http handler");
    for name in used {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
            "{name} is used by a dashboard and not emitted"
        );
    }
}
