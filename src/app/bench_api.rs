//! The `api-load` scenario of `redrive bench`: the HTTP API's reads over 100,000 dead letters
//! across 100 tenants, each page type's latency next to the raw Redis round trip of the same
//! run, with what each request cost Redis (commands and server time).
//!
//! The dead letters are made the way production makes them: tasks enqueued through the
//! producer (with task records), drained by a member whose handler fails every one for good,
//! so every dead letter went through `dead_letter.lua`. Their causes are spread over a few
//! hundred fingerprints; ten of them are rare (their own kind, class and fingerprint) and
//! spread over ten tenants, and every task's payload names one of 5,000 customers (twenty
//! dead letters each). The API runs in this process on a loopback port with a token, and is
//! called over real HTTP, one request at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::serve::auth::{new_token, Role, Scope, TokenEntry};
use crate::app::serve::config::ServeSettings;
use crate::broker::{Broker, ServerWork};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::handler::{FailureClass, Handler, HandlerFuture, Outcome, TaskContext};
use crate::producer::Producer;
use crate::shutdown::Shutdown;
use crate::task::{NewTask, Task};

/// How many tenants the dead letters are spread over.
pub const TENANTS: usize = 100;
/// Dead letters of the rare cause: one task in this many.
const RARE_EVERY: usize = 10_007;
/// Customers named in payloads (each in `n / CUSTOMERS` dead letters).
const CUSTOMERS: usize = 5_000;
/// Samples per page type, at most.
const SAMPLES: usize = 40;
/// Time spent sampling one page type, at most (at least three samples are taken).
const SAMPLE_TIME: Duration = Duration::from_secs(15);
/// How long loading may take.
const LOAD_LIMIT: Duration = Duration::from_secs(600);

/// The common causes' error messages (numbers in them are masked by the error pattern, so
/// each template is one fingerprint per kind and class).
const CAUSES: [&str; 10] = [
    "upstream answered 503 after 1200 ms",
    "the model returned an empty completion",
    "tool call search_tickets failed with code 42",
    "payload field ticket is missing",
    "output did not match schema v3",
    "connection reset by peer while streaming",
    "rate of 90 requests per minute exceeded",
    "embedding service timed out after 30 s",
    "the answer cited a document that does not exist",
    "vector index shard 7 unavailable",
];
const CLASSES: [FailureClass; 4] = [
    FailureClass::UpstreamUnavailable,
    FailureClass::Timeout,
    FailureClass::InvalidInput,
    FailureClass::SchemaMismatch,
];

/// Whether task `i` has the rare cause.
fn rare(i: usize) -> bool {
    i % RARE_EVERY == RARE_EVERY / 2
}

/// The handler that fails every task for good, its class and error chosen by the task's
/// number (`"n"` in the payload).
struct FailAll;

impl Handler for FailAll {
    fn handle(&self, task: Arc<Task>, _ctx: TaskContext) -> HandlerFuture {
        let n = serde_json::from_str::<Value>(&task.payload)
            .ok()
            .and_then(|v| v.get("n").and_then(Value::as_u64))
            .unwrap_or(0) as usize;
        let outcome = if rare(n) {
            Outcome::fail(
                FailureClass::ContextOverflow,
                "the audit summary did not fit the context window",
            )
        } else {
            Outcome::fail(CLASSES[n % CLASSES.len()], CAUSES[(n / 4) % CAUSES.len()])
        };
        Box::pin(async move { outcome })
    }
}

/// The tasks of the load: `n` over [`TENANTS`] tenants, task ids `lt-<i>`.
fn tasks(n: usize) -> Vec<NewTask> {
    let pad = "x".repeat(120);
    (0..n)
        .map(|i| {
            let kind = if rare(i) {
                "audit".to_owned()
            } else {
                format!("k{}", (i / TENANTS) % 8)
            };
            let payload = serde_json::json!({
                "n": i,
                "customer": format!("c{}", i % CUSTOMERS),
                "text": pad,
            });
            NewTask::new(format!("t{:03}", i % TENANTS), kind, payload)
                .with_task_id(format!("lt-{i}"))
        })
        .collect()
}

/// Loads `n` dead letters through a member in this process; returns how long it took.
async fn load(settings: &Settings, broker: &Broker, n: usize) -> Result<Duration> {
    let started = Instant::now();
    let producer = Producer::new(broker.clone(), settings);
    let all = tasks(n);
    for chunk in all.chunks(10_000) {
        producer.enqueue_batch(chunk.to_vec()).await?;
    }
    let fleet = Fleet::new(broker.clone(), settings, Arc::new(FailAll));
    let stats = fleet.stats();
    let stop = Shutdown::new();
    let task = tokio::spawn(fleet.run(stop.clone()));
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:03}")).collect();
    let waited = Instant::now();
    loop {
        if broker.raw_dlq_lens(&tenants).await? >= n as u64 {
            break;
        }
        if waited.elapsed() > LOAD_LIMIT || task.is_finished() {
            stop.trigger();
            return Err(Error::Protocol(format!(
                "bench api-load: only {} of {n} tasks dead-lettered within {LOAD_LIMIT:?}",
                stats.settled()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.trigger();
    match task.await {
        Ok(r) => r?,
        Err(e) => return Err(Error::Protocol(format!("bench fleet task failed: {e}"))),
    }
    broker.drop_admin_stream().await?;
    Ok(started.elapsed())
}

/// A page type's samples and what they cost Redis.
struct Sampled {
    latencies_us: Vec<u64>,
    work: ServerWork,
    /// What the last answer said, for the note.
    last: Value,
}

/// An HTTP client for loopback (no TLS is used; reqwest still wants a TLS backend).
fn client() -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Protocol(format!("bench api-load: TLS configuration: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Protocol(format!("bench api-load: HTTP client: {e}")))
}

/// Calls the API.
struct Caller {
    http: reqwest::Client,
    base: String,
    token: String,
    broker: Broker,
}

impl Caller {
    /// GET `path_and_query`; the answer's JSON, or an error naming the status.
    async fn get(&self, path_and_query: &str) -> Result<Value> {
        let url = format!("{}{path_and_query}", self.base);
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Protocol(format!("bench api-load: GET {path_and_query}: {e}")))?;
        let status = r.status();
        let body = r
            .text()
            .await
            .map_err(|e| Error::Protocol(format!("bench api-load: GET {path_and_query}: {e}")))?;
        if !status.is_success() {
            return Err(Error::Protocol(format!(
                "bench api-load: GET {path_and_query} answered {status}: {body}"
            )));
        }
        serde_json::from_str(&body).map_err(|e| {
            Error::Protocol(format!(
                "bench api-load: GET {path_and_query}: not JSON: {e}"
            ))
        })
    }

    /// Samples one page type: `next(i, previous answer)` gives the i-th request's path (None
    /// ends the sampling early). One unmeasured request first warms the path up.
    async fn sample(
        &self,
        mut next: impl FnMut(usize, &Value) -> Option<String>,
    ) -> Result<Sampled> {
        let mut last = Value::Null;
        if let Some(p) = next(0, &last) {
            last = self.get(&p).await?;
        }
        let before = self.broker.server_work().await?;
        let started = Instant::now();
        let mut latencies_us = Vec::new();
        for i in 1..=SAMPLES {
            if latencies_us.len() >= 3 && started.elapsed() > SAMPLE_TIME {
                break;
            }
            let Some(p) = next(i, &last) else { break };
            let t = Instant::now();
            last = self.get(&p).await?;
            latencies_us.push(t.elapsed().as_micros() as u64);
        }
        let after = self.broker.server_work().await?;
        let n = latencies_us.len().max(1) as u64;
        // Each server_work call is two commands (INFO stats, INFO commandstats).
        let work = ServerWork {
            commands: after.commands.saturating_sub(before.commands + 2) / n,
            usec: after.usec.saturating_sub(before.usec) / n,
        };
        Ok(Sampled {
            latencies_us,
            work,
            last,
        })
    }
}

/// One row of the scenario: a page type's latencies (µs; none when it was not measured) and
/// what else was seen. `redrive bench` turns it into a report row.
#[derive(Debug, Clone)]
pub struct PageRow {
    /// The page type.
    pub name: String,
    /// One latency per request, µs.
    pub samples_us: Vec<u64>,
    /// What each request cost Redis, and what the answers held.
    pub note: String,
}

/// The median of `samples` (µs), in ms.
fn median_ms(samples: &[u64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).map_or(0.0, |us| *us as f64 / 1000.0)
}

/// The row of one page type.
fn row(name: &str, s: &Sampled, raw_p50: f64, what: String) -> PageRow {
    let times = if s.latencies_us.is_empty() {
        String::new()
    } else {
        format!(
            "p50 {:.0}× the raw page; ",
            median_ms(&s.latencies_us) / raw_p50.max(1e-6)
        )
    };
    PageRow {
        name: format!("api: {name}"),
        samples_us: s.latencies_us.clone(),
        note: format!(
            "{} requests; {times}Redis per request: {} commands (scripts' own included), {:.2} ms CPU; {what}",
            s.latencies_us.len(),
            s.work.commands,
            s.work.usec as f64 / 1000.0
        ),
    }
}

/// How many entries an answer lists, and whether it ended at its scan bound.
fn listed(v: &Value) -> String {
    let entries = v["entries"].as_array().map(Vec::len).unwrap_or(0);
    let mut s = format!("{entries} listed");
    if let Some(n) = v.get("scanned").and_then(Value::as_u64) {
        s.push_str(&format!(", {n} scanned"));
    }
    if v["next_cursor"].is_string() {
        s.push_str(", with a cursor");
    }
    s
}

/// Runs the scenario with `settings` (its own key prefix) and `n` dead letters.
pub async fn run(settings: &Settings, broker: &Broker, n: usize) -> Result<Vec<PageRow>> {
    let mut rows = Vec::new();
    let took = load(settings, broker, n).await?;
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:03}")).collect();
    let rare_count = (0..n).filter(|&i| rare(i)).count();

    // The API, in this process, on a loopback port, with one admin token over every tenant.
    let token = new_token()?;
    let digest: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(token.as_bytes()).into()
    };
    // The server's other settings are the defaults of config/app.toml.
    let defaults: crate::app::serve::config::RawServe = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(
            crate::app::settings::APP_TOML,
        ),
    )
    .extract_inner("serve")
    .map_err(|e| Error::Config(format!("config/app.toml [serve]: {e}")))?;
    let serve = ServeSettings {
        enabled: false,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        read_only: true,
        tokens: vec![TokenEntry {
            name: "bench".into(),
            role: Role::Admin,
            scope: Scope::All,
            see_payloads: true,
            hash: digest,
        }],
        ..crate::app::serve::config::validate(&defaults)?
    };
    let shutdown = Shutdown::new();
    let server =
        crate::app::serve::start(settings, &serve, broker.clone(), shutdown.clone()).await?;
    let api = Caller {
        http: client()?,
        base: format!("http://{}", server.addr),
        token,
        broker: broker.clone(),
    };

    // The raw ceiling of a page: one XREVRANGE COUNT 50 round trip, and one pipelined round
    // trip of XLEN over every tenant.
    let mut raw_page = Vec::new();
    let mut raw_lens = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        broker.raw_dlq_page(&tenants[i % TENANTS], 50).await?;
        raw_page.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        broker.raw_dlq_lens(&tenants).await?;
        raw_lens.push(t.elapsed().as_micros() as u64);
    }
    let raw_p50 = median_ms(&raw_page);
    rows.push(PageRow {
        name: "api: raw XREVRANGE COUNT 50".into(),
        samples_us: raw_page,
        note: format!(
            "the raw ceiling of a page: one round trip, one tenant; {n} dead letters loaded over \
             {TENANTS} tenants in {:.1} s through a member",
            took.as_secs_f64()
        ),
    });
    rows.push(PageRow {
        name: "api: raw XLEN × 100 pipelined".into(),
        samples_us: raw_lens,
        note: "the raw ceiling of an overview: one pipelined round trip over every tenant".into(),
    });

    // The pages, one request at a time.
    let fixed = |path: String| move |_: usize, _: &Value| Some(path.clone());
    let s = api.sample(fixed("/api/v1/tenants".into())).await?;
    let what = format!(
        "{} tenants",
        s.last["tenants"].as_array().map_or(0, Vec::len)
    );
    rows.push(row("overview: tenants", &s, raw_p50, what));
    let s = api.sample(fixed("/api/v1/health?window=1h".into())).await?;
    let what = format!(
        "{} dead letters counted by class, last hour's settle counts",
        s.last["overall"]["dead_letters"]
    );
    rows.push(row("overview: health (1h)", &s, raw_p50, what));

    let first = "/api/v1/dead-letters?limit=50".to_owned();
    let s = api.sample(fixed(first.clone())).await?;
    let what = listed(&s.last);
    rows.push(row("list: first page (50)", &s, raw_p50, what));

    // Later pages: each request follows the cursor of the one before.
    let s = api
        .sample(|i, prev| {
            if i == 0 {
                return Some(first.clone());
            }
            prev["next_cursor"]
                .as_str()
                .map(|c| format!("{first}&cursor={c}"))
        })
        .await?;
    let what = format!(
        "pages 2 to {} by cursor; {}",
        s.latencies_us.len() + 1,
        listed(&s.last)
    );
    rows.push(row("list: later page via cursor", &s, raw_p50, what));

    // Rare filters: every page until the answer has no cursor, so the row says how many
    // requests the whole answer took.
    let rare_fp = {
        let v = api
            .get("/api/v1/dead-letters/stats?kind=audit&top=1")
            .await?;
        v["top_fingerprints"][0]["fingerprint"]
            .as_str()
            .unwrap_or("0")
            .to_owned()
    };
    for (name, query) in [
        ("rare fingerprint", format!("fingerprint={rare_fp}")),
        ("rare class", "class=context_overflow".to_owned()),
        ("rare kind", "kind=audit".to_owned()),
    ] {
        let s = api
            .sample(fixed(format!("/api/v1/dead-letters?limit=50&{query}")))
            .await?;
        let what = format!(
            "{rare_count} match of {n}; first request: {}",
            listed(&s.last)
        );
        rows.push(row(&format!("list: {name}"), &s, raw_p50, what));
    }

    // A narrow time range: 20 ms around the middle task's dead letter.
    let mid = api
        .get(&format!(
            "/api/v1/tenants/t{:03}/tasks/lt-{}",
            (n / 2) % TENANTS,
            n / 2
        ))
        .await?;
    let dlq_ms = mid["dlq"]
        .as_str()
        .and_then(|id| id.split('-').next())
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let s = api
        .sample(fixed(format!(
            "/api/v1/dead-letters?limit=50&since={}&until={}",
            dlq_ms.saturating_sub(10),
            dlq_ms + 10
        )))
        .await?;
    let what = format!("a 20 ms window in the middle; {}", listed(&s.last));
    rows.push(row("list: time range", &s, raw_p50, what));

    let s = api
        .sample(fixed(format!(
            "/api/v1/dead-letters?limit=50&task_id=lt-{}",
            n / 3
        )))
        .await?;
    let what = format!("1 match; {}", listed(&s.last));
    rows.push(row("list: task id", &s, raw_p50, what));

    match api
        .get("/api/v1/dead-letters?limit=50&payload=customer%3Dc123")
        .await
    {
        Ok(_) => {
            let s = api
                .sample(fixed(
                    "/api/v1/dead-letters?limit=50&payload=customer%3Dc123".into(),
                ))
                .await?;
            let what = format!("{} match; {}", n / CUSTOMERS, listed(&s.last));
            rows.push(row("list: payload field", &s, raw_p50, what));
        }
        Err(e) => rows.push(PageRow {
            name: "api: list: payload field".into(),
            samples_us: Vec::new(),
            note: format!("not measured: {e}"),
        }),
    }

    let s = api
        .sample(fixed("/api/v1/dead-letters/stats?top=10".into()))
        .await?;
    let what = format!(
        "{} dead letters, {} fingerprints shown",
        s.last["total"],
        s.last["top_fingerprints"].as_array().map_or(0, Vec::len)
    );
    rows.push(row("stats: top 10, 24h window", &s, raw_p50, what));
    let s = api
        .sample(fixed("/api/v1/dead-letters/stats?top=10&window=1h".into()))
        .await?;
    let what = "the same with the settle counts of the last hour".to_owned();
    rows.push(row("stats: top 10, 1h window", &s, raw_p50, what));

    let one = api.get("/api/v1/dead-letters?limit=1").await?;
    let id = one["entries"][0]["id"]
        .as_str()
        .unwrap_or("t000/0-0")
        .to_owned();
    let (tenant, entry) = id.split_once('/').unwrap_or(("t000", "0-0"));
    let s = api
        .sample(fixed(format!(
            "/api/v1/tenants/{tenant}/dead-letters/{entry}"
        )))
        .await?;
    rows.push(row("show one", &s, raw_p50, "one dead letter whole".into()));

    shutdown.trigger();
    server.stopped(Duration::from_secs(5)).await;
    for t in &tenants {
        broker.drop_tenant(t).await?;
    }
    Ok(rows)
}
