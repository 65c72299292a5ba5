//! [`HttpHandler`]: one POST per attempt (PROTOCOL.md, "The request" and "HTTP headers"), its
//! reply read into the attempt's outcome within the entry's timeout.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};

use super::options::HttpOptions;
use super::reply;
use crate::agents::protocol;
use crate::handler::{FailureClass, Handler, HandlerFuture, HandlerSpec, Outcome, TaskContext};
use crate::task::Task;
use crate::telemetry::events::agent_http::HttpMeters;

const TASK_ID: HeaderName = HeaderName::from_static("redrive-task-id");
const TENANT: HeaderName = HeaderName::from_static("redrive-tenant");
const KIND: HeaderName = HeaderName::from_static("redrive-kind");
const ATTEMPT: HeaderName = HeaderName::from_static("redrive-attempt");
const SIGNATURE: HeaderName = HeaderName::from_static("redrive-signature");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const ACCEPTED: HeaderValue = HeaderValue::from_static("application/json, application/x-ndjson");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The `http` handler of one `[[handlers]]` entry.
pub(crate) struct HttpHandler {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: reqwest::Url,
    endpoint: String,
    headers: HeaderMap,
    secrets: Vec<String>,
    max_reply_bytes: usize,
    timeout: Duration,
    meters: HttpMeters,
}

impl HttpHandler {
    /// The handler of `spec`, POSTing through `client`.
    pub(crate) fn new(spec: &HandlerSpec, opts: HttpOptions, client: reqwest::Client) -> Self {
        HttpHandler {
            inner: Arc::new(Inner {
                client,
                url: opts.url,
                endpoint: opts.endpoint,
                headers: opts.headers,
                secrets: opts.secrets,
                max_reply_bytes: opts.max_reply_bytes,
                timeout: spec.timeout,
                meters: HttpMeters::new(&format!("{}:{}", spec.index, spec.type_name)),
            }),
        }
    }
}

impl Handler for HttpHandler {
    fn handle(&self, task: Arc<Task>, ctx: TaskContext) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.attempt(&task, &ctx).await })
    }
}

/// A header value from a task's field (the contract allows only characters that are valid
/// in headers; anything else is refused rather than sent mangled).
fn value(what: &str, text: &str) -> Result<HeaderValue, Outcome> {
    HeaderValue::from_str(text).map_err(|_| {
        Outcome::fail(
            FailureClass::InvalidInput,
            format!("the task's {what} cannot be sent as an HTTP header value"),
        )
    })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    /// One attempt: the exchange within the timeout, its outcome bounded and counted.
    async fn attempt(&self, task: &Task, ctx: &TaskContext) -> Outcome {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.exchange(task, ctx)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::fail(
                FailureClass::Timeout,
                format!(
                    "no complete reply from {} within the handler's timeout of {} ms",
                    self.endpoint,
                    self.timeout.as_millis()
                ),
            ),
        };
        let outcome = reply::bound_outcome(outcome);
        self.meters.attempt_finished(&outcome, started.elapsed());
        outcome
    }

    fn headers(&self, task: &Task, body: &[u8]) -> Result<HeaderMap, Outcome> {
        let mut h = self.headers.clone();
        h.insert(CONTENT_TYPE, JSON);
        h.insert(ACCEPT, ACCEPTED);
        h.insert(TASK_ID, value("task_id", &task.task_id)?);
        h.insert(TENANT, value("tenant", &task.tenant)?);
        h.insert(KIND, value("kind", &task.kind)?);
        h.insert(ATTEMPT, HeaderValue::from(task.attempt));
        let tp = protocol::traceparent(&task.task_id, task.attempt, task.trace_id.as_deref());
        h.insert(TRACEPARENT, value("traceparent", &tp)?);
        if !self.secrets.is_empty() {
            let sig = protocol::signature(&self.secrets, unix_seconds(), body);
            let mut v = value("signature", &sig)?;
            v.set_sensitive(true);
            h.insert(SIGNATURE, v);
        }
        Ok(h)
    }

    async fn exchange(&self, task: &Task, ctx: &TaskContext) -> Outcome {
        let body = match protocol::request_body(task, ctx.max_attempts()) {
            Ok(b) => b,
            Err(why) => return Outcome::fail(FailureClass::InvalidInput, why),
        };
        let headers = match self.headers(task, &body) {
            Ok(h) => h,
            Err(outcome) => return outcome,
        };
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => reply::read(resp, ctx, self.max_reply_bytes, SystemTime::now()).await,
            Err(e) => reply::transport_failure(&self.endpoint, e),
        }
    }
}
