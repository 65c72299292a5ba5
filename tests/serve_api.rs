//! The HTTP API (`redrive serve`): a real `redrive serve` process against a private
//! redis-server and real fleet members, called over real HTTP. Every route with every role,
//! tenant scope (a scoped token never sees or changes another tenant's data), read-only, bad
//! input (a JSON error, nothing changed), no live member, a replay's progress and a cancel,
//! TLS, the request metrics, and the OpenAPI document checked against what the routes answered.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, http_get, Member, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

/// The tokens every server here accepts: name, role, tenants (none: every tenant), whether a
/// viewer sees payloads.
const TOKENS: [(&str, &str, &[&str], bool); 7] = [
    ("admin", "admin", &[], false),
    ("ops", "operator", &[], false),
    ("viewer", "viewer", &[], false),
    ("viewer-payloads", "viewer", &[], true),
    ("acme-ops", "operator", &["acme"], false),
    ("acme-viewer", "viewer", &["acme"], false),
    ("globex-viewer", "viewer", &["globex"], false),
];

/// What a request carries as its body.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// A bad request: method, route, path arguments, query, body, the status and a part of the
/// message it must get.
type BadInput = (
    &'static str,
    &'static str,
    Vec<&'static str>,
    &'static str,
    Body,
    u16,
    &'static str,
);

/// One answer.
struct Reply {
    status: u16,
    body: Value,
    text: String,
    headers: reqwest::header::HeaderMap,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// A `redrive serve` process and a client that records every call (method, route template,
/// status) for the OpenAPI check.
struct Api {
    _process: Member,
    base: String,
    metrics: String,
    tokens: HashMap<String, String>,
    http: reqwest::Client,
    calls: Mutex<Vec<(String, String, u16)>>,
}

/// A client for plain HTTP, and for HTTPS trusting `roots`.
fn client(roots: rustls::RootCertStore) -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Makes every token of [`TOKENS`] with `redrive serve token`: (name → token, the config
/// entries it printed).
fn make_tokens(env: &TestEnv) -> (HashMap<String, String>, String) {
    let mut tokens = HashMap::new();
    let mut toml = String::new();
    for (name, role, tenants, see) in TOKENS {
        let mut args = vec!["serve", "token", "--name", name, "--role", role];
        for t in tenants {
            args.extend(["--tenant", t]);
        }
        if see {
            args.push("--see-payloads");
        }
        let (code, out, err) = env.cli(&args, &[]);
        assert_eq!(code, 0, "serve token: {err}");
        let (token, entry) = out.split_once('\n').unwrap();
        assert_eq!(token.len(), 64, "{out}");
        assert!(!entry.contains(token), "only the hash is in the entry");
        assert!(!err.contains(token), "the token is printed once");
        tokens.insert(name.to_owned(), token.to_owned());
        toml.push_str(entry);
    }
    (tokens, toml)
}

impl Api {
    /// Starts `redrive serve` under base path /redrive with `serve_toml` added to `[serve]`.
    fn start(env: &TestEnv, id: &str, serve_toml: &str) -> Api {
        let (tokens, entries) = make_tokens(env);
        let config = format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\nbase_path = \"/redrive/\"\n{serve_toml}\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n{entries}"
        );
        let path = env.config_file(&format!("{id}.toml"), &config);
        let process = env.serve(id, &path, &[]);
        let addr = process.listen_addr("serving the HTTP API");
        let metrics = process.listen_addr("serving /metrics");
        let scheme = if serve_toml.contains("tls_cert") {
            "https"
        } else {
            "http"
        };
        Api {
            _process: process,
            base: format!("{scheme}://{addr}/redrive"),
            metrics,
            tokens,
            http: client(rustls::RootCertStore::empty()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// `template` (as the OpenAPI document writes it) with `args` in its `{…}` in order.
    fn fill(template: &str, args: &[&str]) -> String {
        let mut out = String::new();
        let mut rest = template;
        let mut args = args.iter();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').unwrap() + open;
            out.push_str(&rest[..open]);
            out.push_str(args.next().expect("an argument per segment"));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Sends a request with `auth` as the whole Authorization header.
    async fn send(
        &self,
        auth: Option<String>,
        method: &str,
        template: &str,
        args: &[&str],
        query: &str,
        body: Body,
    ) -> Reply {
        let mut url = format!("{}{}", self.base, Api::fill(template, args));
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(v.to_string()),
            Body::Raw(kind, bytes) => req.header("content-type", kind).body(bytes),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.calls
            .lock()
            .unwrap()
            .push((method.to_owned(), template.to_owned(), status));
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(headers[name], value, "{method} {template}");
        }
        if status >= 400 {
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{method} {template} {status}: not the error shape: {text}"
            );
        }
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    /// A request as the token named `who` (None: without a token).
    async fn call(
        &self,
        who: Option<&str>,
        method: &str,
        template: &str,
        args: &[&str],
        query: &str,
        body: Option<Value>,
    ) -> Reply {
        let auth = who.map(|w| format!("Bearer {}", self.tokens[w]));
        let body = body.map(Body::Json).unwrap_or(Body::None);
        self.send(auth, method, template, args, query, body).await
    }

    async fn get(&self, who: &str, template: &str, args: &[&str], query: &str) -> Reply {
        self.call(Some(who), "GET", template, args, query, None)
            .await
    }

    async fn post(&self, who: &str, template: &str, args: &[&str], body: Value) -> Reply {
        self.call(Some(who), "POST", template, args, "", Some(body))
            .await
    }

    /// Polls a command until its state is `done`; returns its status.
    async fn done(&self, who: &str, id: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            let r = self.get(who, "/api/v1/commands/{id}", &[id], "").await;
            assert_eq!(r.status, 200, "{}", r.text);
            if r.body["state"] == "done" {
                return r.body;
            }
            last = r.body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("command {id} did not finish: {last}");
    }

    /// The ids of every dead letter `who` sees (page by page).
    async fn dead_letter_ids(&self, who: &str, query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("{query}&limit=2&cursor={c}"),
                None => format!("{query}&limit=2"),
            };
            let r = self.get(who, "/api/v1/dead-letters", &[], &q).await;
            assert_eq!(r.status, 200, "{}", r.text);
            for e in r.body["entries"].as_array().unwrap() {
                ids.push(e["id"].as_str().unwrap().to_owned());
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return ids,
            }
        }
    }

    /// Every documented route was called, and every status a call got is documented for its
    /// route (and every call was to a documented route).
    async fn check_against_openapi(&self) {
        let doc = self
            .call(None, "GET", "/api/v1/openapi.json", &[], "", None)
            .await
            .body;
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], "/redrive");
        let calls = self.calls.lock().unwrap().clone();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let method = method.to_uppercase();
                documented.insert((method.clone(), path.clone()));
                let seen: Vec<u16> = calls
                    .iter()
                    .filter(|(m, p, _)| *m == method && p == path)
                    .map(|(_, _, s)| *s)
                    .collect();
                assert!(!seen.is_empty(), "{method} {path} was never called");
                for s in seen {
                    assert!(
                        op["responses"][s.to_string()].is_object(),
                        "{method} {path} answered {s}, which its document does not list"
                    );
                }
            }
        }
        for (m, p, s) in &calls {
            let known = documented.contains(&(m.clone(), p.clone()));
            assert!(
                known || *s == 404 || *s == 405,
                "{m} {p} is not documented ({s})"
            );
        }
    }
}

/// Enqueues `n` tasks of `tenant` that the demo agent fails as `schema_mismatch` (permanent),
/// ids `<tenant>-bad-<i>`.
fn bad_tasks(tenant: &str, n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            NewTask::new(
                tenant,
                "triage",
                json!({"simulate": "malformed_output", "ticket": i}),
            )
            .with_task_id(format!("{tenant}-bad-{i}"))
        })
        .collect()
}

/// Seeds dead letters (`tenant` → how many) through a running member, and waits for them.
async fn seed(env: &TestEnv, counts: &[(&str, usize)]) {
    let mut tasks = Vec::new();
    for (t, n) in counts {
        tasks.extend(bad_tasks(t, *n));
    }
    env.enqueue_tasks(tasks).await;
    for (t, n) in counts {
        eventually(
            Duration::from_secs(60),
            "the dead letters are in",
            || async { env.dead_letters(t).await.len() == *n },
        )
        .await;
    }
}

#[tokio::test]
async fn every_route_answers_every_role_as_documented() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let api = Api::start(&env, "api", "");
    let mut tasks =
        vec![NewTask::new("acme", "triage", json!({"simulate": "ok"})).with_task_id("acme-ok")];
    tasks.extend(bad_tasks("acme", 3));
    tasks.extend(bad_tasks("globex", 2));
    env.enqueue_tasks(tasks).await;
    for (t, n) in [("acme", 3), ("globex", 2)] {
        eventually(
            Duration::from_secs(60),
            "the dead letters are in",
            || async { env.dead_letters(t).await.len() == n },
        )
        .await;
    }

    // Without a token, or with a wrong one: 401, saying how to authenticate.
    let r = api
        .call(None, "GET", "/api/v1/tenants", &[], "", None)
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"redrive\"");
    let wrong = format!("Bearer {}", "0".repeat(64));
    let r = api
        .send(Some(wrong), "GET", "/api/v1/tenants", &[], "", Body::None)
        .await;
    assert_eq!(
        (r.status, r.message()),
        (401, "the bearer token is not valid")
    );

    // Reads, as a viewer.
    let me = api.get("viewer", "/api/v1/me", &[], "").await;
    assert_eq!(me.body["role"], "viewer");
    assert_eq!(me.body["read_only"], false);
    let r = api.get("viewer", "/api/v1/tenants", &[], "").await;
    let tenants = r.body["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2, "{}", r.text);
    assert_eq!(tenants[0]["tenant"], "acme");
    assert_eq!(tenants[0]["dead_letters"], 3);
    assert_eq!(tenants[0]["retries_due"], 0);
    assert_eq!(tenants[1]["breaker"]["state"], "closed");
    let r = api
        .get("viewer", "/api/v1/tenants/{tenant}", &["globex"], "")
        .await;
    assert_eq!(r.body["tenant"]["dead_letters"], 2);
    assert!(r.body["tenant"]["transitions"].is_array());
    let r = api
        .get("viewer", "/api/v1/tenants/{tenant}", &["nosuch"], "")
        .await;
    assert_eq!((r.status, r.message()), (404, "tenant 'nosuch' not found"));
    let r = api.get("viewer", "/api/v1/health", &[], "window=2h").await;
    assert_eq!(r.body["overall"]["dead_letters"], 5, "{}", r.text);
    assert_eq!(r.body["window_ms"], 7_200_000);
    assert_eq!(r.body["live_members"], json!(["m1"]));
    let ids = api.dead_letter_ids("viewer", "").await;
    assert_eq!(ids.len(), 5, "paged two at a time: {ids:?}");
    let acme_ids: Vec<&String> = ids.iter().filter(|i| i.starts_with("acme/")).collect();
    let r = api
        .get(
            "viewer",
            "/api/v1/dead-letters",
            &[],
            "tenant=globex&class=schema_mismatch",
        )
        .await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 2);
    let r = api
        .get("viewer", "/api/v1/dead-letters", &[], "task_id=acme-bad-1")
        .await;
    assert_eq!(r.body["entries"][0]["task_id"], "acme-bad-1");
    let r = api
        .get(
            "viewer",
            "/api/v1/dead-letters/stats",
            &[],
            "top=3&window=1h",
        )
        .await;
    assert_eq!(r.body["total"], 5, "{}", r.text);
    assert_eq!(r.body["by_class"]["schema_mismatch"], 5);
    let top = &r.body["top_fingerprints"][0];
    assert_eq!(top["count"], 5);
    assert!(top["sample_error"]
        .as_str()
        .unwrap()
        .contains("schema validation"));
    // Export: one JSON line per dead letter; a viewer that may not see payloads gets none.
    let r = api
        .get("viewer", "/api/v1/dead-letters/export", &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    // A download, named after the server's time (and its tenant, when it has one).
    let disposition = r.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"dead-letters-2")
            && disposition.ends_with("Z.jsonl\""),
        "{disposition}"
    );
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|l| l["payload"].is_null() && l["hidden"][0] == "payload"));
    let r = api
        .get(
            "viewer-payloads",
            "/api/v1/dead-letters/export",
            &[],
            "tenant=acme",
        )
        .await;
    assert!(r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"dead-letters-acme-2"));
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["payload"]["simulate"] == "malformed_output"));
    // One dead letter: hidden from the viewer, whole for an operator.
    let (tenant, entry) = acme_ids[0].split_once('/').unwrap();
    let show = "/api/v1/tenants/{tenant}/dead-letters/{id}";
    let r = api.get("viewer", show, &[tenant, entry], "").await;
    assert_eq!(r.body["class"], "schema_mismatch");
    assert!(r.body["payload"].is_null(), "{}", r.text);
    let r = api.get("ops", show, &[tenant, entry], "").await;
    assert_eq!(r.body["payload"]["simulate"], "malformed_output");
    assert!(r.body.get("hidden").is_none());
    let r = api.get("ops", show, &[tenant, "1-0"], "").await;
    assert_eq!(r.status, 404);
    // Tasks: the record, its output hidden from the viewer.
    let task = "/api/v1/tenants/{tenant}/tasks/{task_id}";
    eventually(Duration::from_secs(30), "acme-ok is done", || async {
        api.get("ops", task, &["acme", "acme-ok"], "").await.body["state"] == "done"
    })
    .await;
    let r = api.get("ops", task, &["acme", "acme-ok"], "").await;
    assert!(r.body["output"]["summary"].is_string(), "{}", r.text);
    let r = api.get("viewer", task, &["acme", "acme-ok"], "").await;
    assert_eq!(
        (r.body["output"].clone(), r.body["hidden"].clone()),
        (Value::Null, json!(["output"]))
    );
    let r = api
        .get("viewer", task, &["acme", "nobody"], "scan_limit=100")
        .await;
    assert_eq!(r.status, 404);
    assert!(
        r.body["error"]["details"]["searched"].is_array(),
        "{}",
        r.text
    );
    let r = api
        .get(
            "viewer",
            "/api/v1/tenants/{tenant}/tasks",
            &["acme"],
            "state=dead_lettered&limit=10",
        )
        .await;
    assert_eq!(r.body["tasks"].as_array().unwrap().len(), 3, "{}", r.text);
    // Breakers.
    let r = api.get("viewer", "/api/v1/breakers", &[], "").await;
    assert_eq!(r.body["breakers"].as_array().unwrap().len(), 2);
    let r = api
        .get("viewer", "/api/v1/tenants/{tenant}/breaker", &["acme"], "")
        .await;
    assert_eq!(r.body["breaker"]["state"], "closed");

    // Roles: a viewer changes nothing, an operator neither purges nor holds breakers.
    let replay =
        json!({"filter": {"tenants": ["acme"]}, "patch": {"simulate": "ok"}, "reason": "fixed"});
    for (who, method, path, args) in [
        ("viewer", "POST", "/api/v1/dead-letters/replay", vec![]),
        (
            "viewer",
            "POST",
            "/api/v1/dead-letters/replay/dry-run",
            vec![],
        ),
        ("viewer", "POST", "/api/v1/dead-letters/resolve", vec![]),
        (
            "viewer",
            "POST",
            "/api/v1/commands/{id}/cancel",
            vec!["c-1"],
        ),
        (
            "ops",
            "POST",
            "/api/v1/tenants/{tenant}/dead-letters/purge",
            vec!["acme"],
        ),
        (
            "ops",
            "POST",
            "/api/v1/tenants/{tenant}/breaker/open",
            vec!["acme"],
        ),
        ("viewer", "POST", "/api/v1/dead-letters/assign", vec![]),
        ("viewer", "POST", "/api/v1/dead-letters/escalate", vec![]),
        ("viewer", "POST", "/api/v1/dead-letters/note", vec![]),
        (
            "viewer",
            "POST",
            "/api/v1/tenants/{tenant}/dead-letters/fold",
            vec!["acme"],
        ),
        ("viewer", "POST", "/api/v1/archive/restore", vec![]),
    ] {
        let r = api
            .call(Some(who), method, path, &args, "", Some(replay.clone()))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden"),
            "{who} {path}: {}",
            r.text
        );
    }
    assert_eq!(env.dead_letters("acme").await.len(), 3, "nothing changed");

    // The review: assign, note, escalate an acme dead letter, filter by state; fold acme's
    // storm under its oldest and see it once, with its count.
    let first = acme_ids[0].as_str();
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/assign",
            &[],
            json!({"ids": [first], "to": "ana", "reason": "on call"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["command"], "assign");
    let r = api
        .get(
            "viewer",
            "/api/v1/dead-letters",
            &[],
            "state=in_review&assignee=ana",
        )
        .await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.body["entries"][0]["id"], first);
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/note",
            &[],
            json!({"ids": [first], "text": "the v2 schema"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let escalate = "/api/v1/dead-letters/escalate";
    let r = api
        .post(
            "ops",
            escalate,
            &[],
            json!({"ids": [first], "to": "tenant"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "a reason is required"
    );
    let r = api
        .post(
            "ops",
            escalate,
            &[],
            json!({"ids": [first], "to": "tenant", "reason": "their input"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api.get("viewer", show, &[tenant, entry], "").await;
    assert_eq!(r.body["review"]["state"], "escalated", "{}", r.text);
    assert_eq!(r.body["review"]["log"].as_array().unwrap().len(), 3);
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/assign",
            &[],
            json!({"ids": ["acme/1-0"], "to": "bo"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let fp = top["fingerprint"].as_str().unwrap();
    let fold = "/api/v1/tenants/{tenant}/dead-letters/fold";
    let r = api
        .post(
            "ops",
            fold,
            &["acme"],
            json!({"fingerprint": fp, "reason": "one cause"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["details"]["count"], 3, "{}", r.text);
    let r = api
        .get("viewer", "/api/v1/dead-letters", &[], "tenant=acme")
        .await;
    let rows = r.body["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", r.text);
    assert_eq!(rows[0]["review"]["fold"]["count"], 3);
    let r = api
        .get(
            "viewer",
            "/api/v1/dead-letters",
            &[],
            "tenant=acme&folds=expand",
        )
        .await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 3);
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/assign",
            &[],
            json!({"ids": [acme_ids[1]], "to": "bo"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "refused"), "{}", r.text);
    let r = api
        .get("viewer", "/api/v1/dead-letters/stats", &[], "tenant=acme")
        .await;
    assert_eq!(
        r.body["by_state"],
        json!({"new": 0, "in_review": 0, "escalated": 1, "folded": 2}),
        "{}",
        r.text
    );

    // The archive (the members' directory): nothing archived yet — an empty page, a dead
    // letter that is not there, a restore that names one that is not there changes nothing.
    let r = api.get("viewer", "/api/v1/archive", &[], "limit=5").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["entries"], json!([]));
    assert!(r.body["next"].is_null());
    let r = api
        .get(
            "viewer",
            "/api/v1/tenants/{tenant}/archive/{id}",
            &["acme", "1-0"],
            "",
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    let r = api
        .post(
            "ops",
            "/api/v1/archive/restore",
            &[],
            json!({"ids": ["acme/1-0"], "reason": "try"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.message().contains("not in the archive"), "{}", r.text);

    // A dry run, then the replay: 202 at once, its progress on the command route.
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/replay/dry-run",
            &[],
            replay.clone(),
        )
        .await;
    assert_eq!(
        (r.body["selected"].clone(), r.body["would_replay"].clone()),
        (json!(3), json!(3)),
        "{}",
        r.text
    );
    assert_eq!(r.body["sample"][0]["payload"]["simulate"], "ok");
    let mut body = replay.clone();
    body["command_id"] = json!("replay-acme-1");
    let r = api
        .post("ops", "/api/v1/dead-letters/replay", &[], body.clone())
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["command_id"], "replay-acme-1");
    assert_eq!(
        r.headers["location"],
        "/redrive/api/v1/commands/replay-acme-1"
    );
    let status = api.done("viewer", "replay-acme-1").await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    assert_eq!(status["progress"]["replayed"], 3, "{status}");
    assert_eq!(status["progress"]["state"], "done");
    eventually(
        Duration::from_secs(30),
        "the replayed tasks ran",
        || async {
            api.get("viewer", task, &["acme", "acme-bad-2"], "")
                .await
                .body["state"]
                == "done"
        },
    )
    .await;
    assert!(env.dead_letters("acme").await.is_empty());
    // The same command id again: its first result, nothing executed twice.
    let r = api
        .post("ops", "/api/v1/dead-letters/replay", &[], body)
        .await;
    assert_eq!(
        (r.status, r.body["result"]["command_id"].clone()),
        (200, json!("replay-acme-1"))
    );

    // Resolve and discard one globex dead letter each; cancel a job that already finished.
    let globex: Vec<&String> = ids.iter().filter(|i| i.starts_with("globex/")).collect();
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/resolve",
            &[],
            json!({"ids": [globex[0]], "reason": "handled by support"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["command"], "resolve");
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/discard",
            &[],
            json!({"ids": [globex[1]], "reason": "test data"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(env.dead_letters("globex").await.is_empty());
    let r = api
        .post(
            "ops",
            "/api/v1/commands/{id}/cancel",
            &["replay-acme-1"],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["result"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing to cancel"));

    // An admin purges (confirmed) and holds a breaker open, then closes it.
    env.enqueue_tasks(bad_tasks("initech", 2)).await;
    eventually(
        Duration::from_secs(60),
        "initech's dead letters",
        || async { env.dead_letters("initech").await.len() == 2 },
    )
    .await;
    let purge = "/api/v1/tenants/{tenant}/dead-letters/purge";
    let r = api
        .post(
            "admin",
            purge,
            &["initech"],
            json!({"older_than": "0s", "reason": "retention"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "refused"));
    assert!(
        r.message().contains("2 dead letters of tenant initech"),
        "{}",
        r.text
    );
    let r = api
        .post(
            "admin",
            purge,
            &["initech"],
            json!({"older_than": "0s", "reason": "retention", "confirm": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(env.dead_letters("initech").await.is_empty());
    let r = api
        .post(
            "admin",
            "/api/v1/tenants/{tenant}/breaker/open",
            &["acme"],
            json!({"reason": "incident 42"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .get("viewer", "/api/v1/tenants/{tenant}/breaker", &["acme"], "")
        .await;
    assert_eq!(
        (
            r.body["breaker"]["state"].clone(),
            r.body["breaker"]["held"].clone()
        ),
        (json!("open"), json!(true))
    );
    let r = api
        .post(
            "admin",
            "/api/v1/tenants/{tenant}/breaker/close",
            &["acme"],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The audit trail names each token as the operator, newest first, a page at a time.
    let r = api.get("viewer", "/api/v1/audit", &[], "limit=2").await;
    let entries = r.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (
            entries[0]["command"].clone(),
            entries[0]["operator"].clone()
        ),
        (json!("breaker"), json!("admin"))
    );
    let next = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = api
        .get(
            "viewer",
            "/api/v1/audit",
            &[],
            &format!("limit=100&cursor={next}"),
        )
        .await;
    let operators: BTreeSet<&str> = r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operator"].as_str().unwrap())
        .collect();
    assert_eq!(operators, BTreeSet::from(["admin", "ops"]), "{}", r.text);
    assert!(r.body["next_cursor"].is_null());
    let r = api
        .get("viewer", "/api/v1/commands/{id}", &["no-such-command"], "")
        .await;
    assert_eq!(r.status, 404);

    // The metrics count requests by route template, never by raw path.
    let (_, text) = http_get(&api.metrics, "/metrics");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("redrive_api_requests_total{"))
        .collect();
    let has = |route: &str, status: &str| {
        series.iter().any(|l| {
            l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/api/v1/tenants/{tenant}", "200"), "{series:?}");
    assert!(has("/api/v1/tenants/{tenant}", "404"), "{series:?}");
    assert!(has("/api/v1/dead-letters/replay", "202"), "{series:?}");
    assert!(!text.contains("route=\"/api/v1/tenants/acme\""));
    assert!(
        !text.contains("/redrive/api"),
        "the base path is not in the label"
    );
    assert!(text.contains("redrive_api_request_duration_seconds_bucket{route=\"/api/v1/health\""));

    api.check_against_openapi().await;
}

#[tokio::test]
async fn a_tenant_scoped_token_never_sees_or_changes_another_tenants_data() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let api = Api::start(&env, "api", "");
    seed(&env, &[("acme", 2), ("globex", 2)]).await;
    let all = api.dead_letter_ids("viewer", "").await;
    let globex_dl = all
        .iter()
        .find(|i| i.starts_with("globex/"))
        .unwrap()
        .clone();
    let (_, globex_entry) = globex_dl.split_once('/').unwrap();
    let acme = "acme-viewer";

    // Lists and counts hold only its tenant.
    let r = api.get(acme, "/api/v1/tenants", &[], "").await;
    let names: Vec<&str> = r.body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["acme"]);
    let r = api.get(acme, "/api/v1/health", &[], "").await;
    assert_eq!(r.body["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["overall"]["dead_letters"], 2);
    let ids = api.dead_letter_ids(acme, "class=schema_mismatch").await;
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| i.starts_with("acme/")), "{ids:?}");
    let r = api.get(acme, "/api/v1/dead-letters/stats", &[], "").await;
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["by_tenant"], json!({"acme": 2}));
    let r = api.get(acme, "/api/v1/dead-letters/export", &[], "").await;
    assert_eq!(r.text.lines().count(), 2);
    assert!(!r.text.contains("globex"));
    let r = api.get(acme, "/api/v1/breakers", &[], "").await;
    assert_eq!(r.body["breakers"].as_array().unwrap().len(), 1);

    // Another tenant's name or id answers 404, exactly as one that does not exist.
    let missing = api
        .get(acme, "/api/v1/tenants/{tenant}", &["nosuch"], "")
        .await;
    let other = api
        .get(acme, "/api/v1/tenants/{tenant}", &["globex"], "")
        .await;
    assert_eq!(other.status, 404);
    assert_eq!(
        other.message().replace("globex", "X"),
        missing.message().replace("nosuch", "X")
    );
    for (template, args, query) in [
        ("/api/v1/dead-letters", vec![], "tenant=globex"),
        ("/api/v1/dead-letters/stats", vec![], "tenant=globex"),
        (
            "/api/v1/dead-letters/export",
            vec![],
            "tenant=acme&tenant=globex",
        ),
        ("/api/v1/health", vec![], "tenant=globex"),
        (
            "/api/v1/tenants/{tenant}/dead-letters/{id}",
            vec!["globex", globex_entry],
            "",
        ),
        (
            "/api/v1/tenants/{tenant}/tasks/{task_id}",
            vec!["globex", "globex-bad-0"],
            "",
        ),
        ("/api/v1/tenants/{tenant}/tasks", vec!["globex"], ""),
        ("/api/v1/tenants/{tenant}/breaker", vec!["globex"], ""),
    ] {
        let r = api.get(acme, template, &args, query).await;
        assert_eq!(r.status, 404, "{template} {query}: {}", r.text);
        assert!(!r.text.contains("globex-bad"), "{}", r.text);
    }

    // A replay by a filter that would match every tenant's dead letters touches only its own.
    let ops = "acme-ops";
    let r = api
        .post(ops, "/api/v1/dead-letters/replay", &[], json!({"filter": {"classes": ["schema_mismatch"]}, "patch": {"simulate": "ok"}, "reason": "acme's fix"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["command_id"].as_str().unwrap().to_owned();
    let status = api.done(acme, &id).await;
    assert_eq!(status["progress"]["replayed"], 2, "{status}");
    assert!(env.dead_letters("acme").await.is_empty());
    assert_eq!(
        env.dead_letters("globex").await.len(),
        2,
        "globex untouched"
    );
    // Changes naming another tenant's dead letters or tenant are refused as not found.
    for (template, args, body) in [
        (
            "/api/v1/dead-letters/resolve",
            vec![],
            json!({"ids": [globex_dl], "reason": "x"}),
        ),
        (
            "/api/v1/dead-letters/discard",
            vec![],
            json!({"filter": {"tenants": ["globex"]}, "confirm": true, "reason": "x"}),
        ),
        (
            "/api/v1/dead-letters/replay",
            vec![],
            json!({"ids": [globex_dl], "reason": "x"}),
        ),
        (
            "/api/v1/dead-letters/replay/dry-run",
            vec![],
            json!({"filter": {"tenants": ["globex"]}}),
        ),
        (
            "/api/v1/dead-letters/assign",
            vec![],
            json!({"ids": [globex_dl], "to": "ana"}),
        ),
        (
            "/api/v1/dead-letters/escalate",
            vec![],
            json!({"ids": [globex_dl], "to": "tenant", "reason": "x"}),
        ),
        (
            "/api/v1/dead-letters/note",
            vec![],
            json!({"ids": [globex_dl], "text": "x"}),
        ),
        (
            "/api/v1/tenants/{tenant}/dead-letters/fold",
            vec!["globex"],
            json!({"fingerprint": "abc123", "reason": "x"}),
        ),
    ] {
        let r = api.post(ops, template, &args, body).await;
        assert_eq!(r.status, 404, "{template}: {}", r.text);
    }
    assert_eq!(
        env.dead_letters("globex").await.len(),
        2,
        "globex untouched"
    );

    // Another tenant's command and job: not visible, not cancellable; its own: visible.
    let r = api
        .post("ops", "/api/v1/dead-letters/replay", &[], json!({"filter": {"tenants": ["globex"]}, "rate": 1, "patch": {"simulate": "ok"}, "reason": "globex's fix"}))
        .await;
    let globex_job = r.body["command_id"].as_str().unwrap().to_owned();
    let r = api
        .get(acme, "/api/v1/commands/{id}", &[&globex_job], "")
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api
        .post(
            ops,
            "/api/v1/commands/{id}/cancel",
            &[&globex_job],
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    api.done("viewer", &globex_job).await;
    let r = api.get(acme, "/api/v1/audit", &[], "limit=100").await;
    let seen: Vec<&str> = r.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["command_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        seen,
        vec![id.as_str()],
        "only the command on acme: {}",
        r.text
    );
    let r = api.get("viewer", "/api/v1/audit", &[], "limit=100").await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 2);
}

/// Commands sent by the CLI — through a member, and run in the CLI with `--local` — are seen
/// by a tenant-scoped token exactly when they touch only its tenants, in the audit trail and as
/// a command status: the member records what each command touches, whoever sent it. One that
/// touches another tenant too, or every tenant (a filter without tenants), is seen by neither.
/// An audit entry written before members recorded it is judged by its command.
#[tokio::test]
async fn a_scoped_token_sees_the_cli_commands_that_touch_only_its_tenants() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let api = Api::start(&env, "api", "");
    seed(&env, &[("acme", 3), ("globex", 1)]).await;
    let acme = api.dead_letter_ids("viewer", "tenant=acme").await;
    let globex = api.dead_letter_ids("viewer", "tenant=globex").await;
    let cli = |args: &[&str]| {
        let (code, out, err) = env.cli(args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    };
    cli(&[
        "dlq",
        "resolve",
        &acme[0],
        "--reason",
        "done by hand",
        "--command-id",
        "cli-acme",
    ]);
    cli(&[
        "dlq",
        "resolve",
        &acme[1],
        "--reason",
        "done by hand",
        "--command-id",
        "cli-acme-local",
        "--local",
    ]);
    cli(&[
        "breaker",
        "open",
        "globex",
        "--reason",
        "maintenance",
        "--command-id",
        "cli-globex",
    ]);
    cli(&[
        "dlq",
        "resolve",
        &acme[2],
        &globex[0],
        "--reason",
        "both",
        "--command-id",
        "cli-both",
    ]);
    cli(&[
        "dlq",
        "discard",
        "--kind",
        "nosuch",
        "--yes",
        "--reason",
        "every tenant",
        "--command-id",
        "cli-every",
    ]);
    // An audit entry as members wrote them before they recorded the tenants: no `tenants`,
    // judged by its command.
    let mut raw = env.raw().await;
    let args = json!({"type": "breaker", "tenant": "acme", "open": false}).to_string();
    let _: String = redis::cmd("XADD")
        .arg(format!("{}:{{@admin}}:audit", env.prefix))
        .arg("*")
        .arg("command_id")
        .arg("old-acme")
        .arg("command")
        .arg("breaker")
        .arg("outcome")
        .arg("ok")
        .arg("args")
        .arg(&args)
        .query_async(&mut raw)
        .await
        .unwrap();

    let audit = |who: &'static str| {
        let api = &api;
        async move {
            let r = api.get(who, "/api/v1/audit", &[], "limit=100").await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["command_id"].as_str().unwrap().to_owned())
                .collect::<BTreeSet<String>>()
        }
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        audit("acme-viewer").await,
        set(&["cli-acme", "cli-acme-local", "old-acme"])
    );
    assert_eq!(audit("globex-viewer").await, set(&["cli-globex"]));
    assert_eq!(
        audit("viewer").await,
        set(&[
            "cli-acme",
            "cli-acme-local",
            "cli-globex",
            "cli-both",
            "cli-every",
            "old-acme"
        ])
    );
    let r = api
        .get("acme-viewer", "/api/v1/audit", &[], "limit=100")
        .await;
    for e in r.body["entries"].as_array().unwrap() {
        if e["command_id"] != "old-acme" {
            assert_eq!(e["tenants"], json!(["acme"]), "{e}");
        }
    }
    for (id, acme_sees, globex_sees) in [
        ("cli-acme", true, false),
        ("cli-acme-local", true, false),
        ("cli-globex", false, true),
        ("cli-both", false, false),
        ("cli-every", false, false),
    ] {
        for (who, sees) in [("acme-viewer", acme_sees), ("globex-viewer", globex_sees)] {
            let r = api.get(who, "/api/v1/commands/{id}", &[id], "").await;
            if sees {
                assert_eq!(r.status, 200, "{who} {id}: {}", r.text);
                assert_eq!(r.body["state"], "done");
                assert_eq!(r.body["result"]["outcome"], "ok", "{}", r.text);
            } else {
                assert_eq!(r.status, 404, "{who} {id}: {}", r.text);
                assert!(
                    !r.text.contains("acme/") && !r.text.contains("globex/"),
                    "{}",
                    r.text
                );
            }
        }
        let r = api.get("viewer", "/api/v1/commands/{id}", &[id], "").await;
        assert_eq!(r.status, 200, "{id}: {}", r.text);
    }
    let r = api
        .get("viewer", "/api/v1/commands/{id}", &["cli-every"], "")
        .await;
    assert_eq!(r.body["record"]["tenants"], "\"*\"", "{}", r.text);
}

#[tokio::test]
async fn read_only_bad_input_and_no_live_member_change_nothing() {
    let env = TestEnv::new();
    let mut member = env.member("m1", &[]);
    seed(&env, &[("acme", 2)]).await;
    let api = Api::start(&env, "api", "");
    let ro = Api::start(&env, "ro", "read_only = true");
    let ids = api.dead_letter_ids("viewer", "").await;

    // Read-only: every change refused with 403, reads and dry runs answered.
    let resolve = json!({"ids": [ids[0]], "reason": "x"});
    for (who, template, args) in [
        ("ops", "/api/v1/dead-letters/replay", vec![]),
        ("ops", "/api/v1/dead-letters/resolve", vec![]),
        (
            "admin",
            "/api/v1/tenants/{tenant}/breaker/open",
            vec!["acme"],
        ),
        (
            "admin",
            "/api/v1/tenants/{tenant}/dead-letters/purge",
            vec!["acme"],
        ),
    ] {
        let r = ro.post(who, template, &args, resolve.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "read_only"),
            "{template}: {}",
            r.text
        );
    }
    let r = ro
        .post(
            "ops",
            "/api/v1/dead-letters/replay/dry-run",
            &[],
            json!({"ids": ids}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["selected"].clone()),
        (200, json!(2)),
        "{}",
        r.text
    );
    assert_eq!(
        ro.get("viewer", "/api/v1/me", &[], "").await.body["read_only"],
        true
    );

    // Bad input: a 4xx with a message naming what is wrong.
    let big = vec![b' '; 2 * 1024 * 1024];
    let cases: Vec<BadInput> = vec![
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "colour=red",
            Body::None,
            400,
            "unknown query parameter 'colour'; GET /api/v1/dead-letters takes tenant, class, kind",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "cursor=nonsense",
            Body::None,
            400,
            "cursor:",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "tenant=a%20b",
            Body::None,
            400,
            "tenant 'a b'",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "class=nope",
            Body::None,
            400,
            "class 'nope' is not a failure class",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "since=yesterday-ish",
            Body::None,
            400,
            "since:",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "limit=0",
            Body::None,
            400,
            "between 1 and 10000",
        ),
        (
            "GET",
            "/api/v1/dead-letters",
            vec![],
            "limit=1&limit=2",
            Body::None,
            400,
            "2 times",
        ),
        (
            "GET",
            "/api/v1/dead-letters/stats",
            vec![],
            "window=5s",
            Body::None,
            400,
            "between 1m and 24h",
        ),
        (
            "GET",
            "/api/v1/tenants/{tenant}/tasks",
            vec!["acme"],
            "state=lost",
            Body::None,
            400,
            "not a task state",
        ),
        (
            "GET",
            "/api/v1/commands/{id}",
            vec!["bad!id"],
            "",
            Body::None,
            400,
            "command id 'bad!id' is invalid",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Raw("application/json", big),
            413,
            "larger than",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Raw("text/plain", b"ids=1".to_vec()),
            415,
            "must be JSON",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Json(json!({"ids": "acme/1-0", "reason": "x"})),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Json(json!({"ids": [ids[0]], "reason": "x", "colour": 1})),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Raw("application/json", b"{\"ids\": [".to_vec()),
            400,
            "does not read",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Json(json!({"ids": [ids[0]]})),
            400,
            "reason is required",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Json(json!({"filter": {"tenants": ["acme"]}, "reason": "x"})),
            409,
            "\"confirm\": true",
        ),
        (
            "POST",
            "/api/v1/dead-letters/resolve",
            vec![],
            "",
            Body::Json(json!({"ids": ["acme/x"], "reason": "x"})),
            400,
            "not a stream entry id",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "",
            Body::Json(json!({"reason": "x"})),
            400,
            "nothing selected",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "",
            Body::Json(json!({"all": true, "patch": [1], "reason": "x"})),
            400,
            "merge patch",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "dry_run=true",
            Body::Json(json!({"all": true, "patch": {"simulate": "ok"}, "reason": "x"})),
            400,
            "unknown query parameter 'dry_run'; POST /api/v1/dead-letters/replay takes none",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "",
            Body::Json(json!({"resume": "j-1", "force": true, "reason": "x"})),
            400,
            "resume continues a job",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "",
            Body::Json(json!({"all": true, "rate": "fast", "reason": "x"})),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/dead-letters/replay",
            vec![],
            "",
            Body::Json(json!({"all": true, "reason": "x", "command_id": "no spaces"})),
            400,
            "command id",
        ),
        (
            "POST",
            "/api/v1/tenants/{tenant}/dead-letters/purge",
            vec!["acme"],
            "",
            Body::Json(json!({"older_than": "soon", "reason": "x", "confirm": true})),
            400,
            "older_than:",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            vec![],
            "",
            Body::None,
            404,
            "no route GET /redrive/api/v1/nothing-here",
        ),
        (
            "DELETE",
            "/api/v1/tenants",
            vec![],
            "",
            Body::None,
            405,
            "takes GET only",
        ),
    ];
    for (method, template, args, query, body, status, says) in cases {
        let who = if template.contains("purge") {
            "admin"
        } else {
            "ops"
        };
        let auth = Some(format!("Bearer {}", api.tokens[who]));
        let r = api.send(auth, method, template, &args, query, body).await;
        assert_eq!(r.status, status, "{method} {template}?{query}: {}", r.text);
        assert!(
            r.message().contains(says),
            "{method} {template}?{query}: wanted {says:?} in {}",
            r.text
        );
    }

    // No live member: a change answers 503 at once and sends nothing.
    member.stop();
    let r = api
        .post("ops", "/api/v1/dead-letters/resolve", &[], resolve.clone())
        .await;
    assert_eq!((r.status, r.code()), (503, "fleet_down"), "{}", r.text);
    assert!(
        r.message().contains("no fleet member is running"),
        "{}",
        r.text
    );
    assert_eq!(env.dead_letters("acme").await.len(), 2, "nothing changed");
    assert_eq!(api.dead_letter_ids("viewer", "").await, ids);
    let r = api.get("viewer", "/api/v1/audit", &[], "").await;
    assert_eq!(r.body["entries"], json!([]), "nothing ran");
}

#[tokio::test]
async fn a_replay_shows_its_progress_and_a_cancelled_one_resumes() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    seed(&env, &[("acme", 12)]).await;
    let api = Api::start(&env, "api", "");

    // Two dead letters a second: slow enough to watch and to cancel mid-way.
    let r = api
        .post("ops", "/api/v1/dead-letters/replay", &[], json!({"filter": {"tenants": ["acme"]}, "rate": 2, "patch": {"simulate": "ok"}, "reason": "slow fix"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let job = r.body["job"].as_str().unwrap().to_owned();
    let seen = Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(30),
        "the replay makes progress",
        || async {
            let r = api
                .get("acme-viewer", "/api/v1/commands/{id}", &[&job], "")
                .await;
            let n = r.body["progress"]["replayed"].as_u64().unwrap_or(0);
            seen.lock().unwrap().push(n);
            n >= 2 && r.body["state"] == "running"
        },
    )
    .await;
    let r = api
        .post(
            "ops",
            "/api/v1/commands/{id}/cancel",
            &[&job],
            json!({"reason": "wrong patch"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let status = api.done("ops", &job).await;
    assert_eq!(status["result"]["outcome"], "cancelled", "{status}");
    assert_eq!(status["progress"]["state"], "cancelled");
    let replayed = status["progress"]["replayed"].as_u64().unwrap();
    assert!((2..12).contains(&replayed), "{status}");
    assert_eq!(env.dead_letters("acme").await.len() as u64, 12 - replayed);

    // Resumed at full speed, it replays the rest.
    let r = api
        .post(
            "ops",
            "/api/v1/dead-letters/replay",
            &[],
            json!({"resume": job, "rate": 0, "reason": "right patch after all"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["job"], json!(job));
    let resumed = r.body["command_id"].as_str().unwrap().to_owned();
    let status = api.done("acme-viewer", &resumed).await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    // The resume's status shows the job it resumed, run to its end.
    assert_eq!(status["progress"]["job"], json!(job), "{status}");
    assert_eq!(status["progress"]["state"], "done", "{status}");
    assert_eq!(status["progress"]["replayed"], 12, "{status}");
    eventually(
        Duration::from_secs(30),
        "every dead letter replayed",
        || async { env.dead_letters("acme").await.is_empty() },
    )
    .await;
    let progress: Vec<u64> = seen
        .into_inner()
        .unwrap()
        .into_iter()
        .filter(|n| *n > 0)
        .collect();
    assert!(!progress.is_empty(), "progress was visible while it ran");
}

#[tokio::test]
async fn tls_is_terminated_when_a_certificate_is_given() {
    let env = TestEnv::new();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = env.config_file("cert.pem", &cert.cert.pem());
    let key_path = env.config_file("key.pem", &cert.signing_key.serialize_pem());
    let mut api = Api::start(
        &env,
        "tls",
        &format!("tls_cert = \"{cert_path}\"\ntls_key = \"{key_path}\""),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    api.http = client(roots);
    let r = api.get("viewer", "/api/v1/me", &[], "").await;
    assert_eq!((r.status, r.body["name"].clone()), (200, json!("viewer")));
    // Plain HTTP to the TLS port gets no answer.
    let plain = api.base.replacen("https://", "http://", 1);
    let answered = client(rustls::RootCertStore::empty())
        .get(format!("{plain}/api/v1/openapi.json"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(!matches!(answered, Ok(200)), "{answered:?}");
}

#[tokio::test]
async fn the_archive_is_listed_shown_and_restored_within_the_tokens_scope() {
    let env = TestEnv::new();
    // A cap of 2 dead letters per tenant: the oldest go to the archive (the test's directory,
    // shared by the member and the server).
    let _member = env.member(
        "m1",
        &[
            ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
            ("REDRIVE_DEAD_LETTER__MAX_LEN", "2"),
            ("REDRIVE_ARCHIVE__INTERVAL_MS", "100"),
        ],
    );
    let api = Api::start(&env, "api", "");
    env.enqueue_tasks(
        bad_tasks("acme", 5)
            .into_iter()
            .chain(bad_tasks("globex", 4))
            .collect(),
    )
    .await;
    let page_of = |r: &Reply| -> Vec<String> {
        r.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(Duration::from_secs(60), "5 archived", || async {
        let r = api.get("admin", "/api/v1/archive", &[], "limit=100").await;
        r.status == 200 && r.body["entries"].as_array().map_or(0, Vec::len) == 5
    })
    .await;
    // Every token sees the archive of its own tenants only, a page at a time.
    let all = api.get("viewer", "/api/v1/archive", &[], "limit=100").await;
    let all_ids = page_of(&all);
    assert_eq!(all_ids.len(), 5, "{}", all.text);
    assert!(all.body["entries"][0]["task_id"]
        .as_str()
        .unwrap()
        .starts_with("acme-bad-"));
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let q = match &after {
            Some(a) => format!("limit=2&after={}", urlencode(a)),
            None => "limit=2".to_owned(),
        };
        let r = api.get("viewer", "/api/v1/archive", &[], &q).await;
        assert_eq!(r.status, 200, "{}", r.text);
        paged.extend(page_of(&r));
        match r.body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all_ids, "paged two at a time");
    let acme = api.get("acme-viewer", "/api/v1/archive", &[], "").await;
    let acme_ids = page_of(&acme);
    assert_eq!(acme_ids.len(), 3, "{}", acme.text);
    assert!(acme_ids.iter().all(|i| i.starts_with("acme/")));
    let r = api
        .get("acme-viewer", "/api/v1/archive", &[], "tenant=globex")
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.text);
    let globex_id = all_ids.iter().find(|i| i.starts_with("globex/")).unwrap();
    let (gt, gid) = globex_id.split_once('/').unwrap();
    let r = api
        .get(
            "acme-viewer",
            "/api/v1/tenants/{tenant}/archive/{id}",
            &[gt, gid],
            "",
        )
        .await;
    assert_eq!(r.status, 404, "another tenant's: as if it did not exist");
    // One archived dead letter whole: payloads only for a token that may see them.
    let (at, aid) = acme_ids[0].split_once('/').unwrap();
    let shown = |who: &'static str| {
        let api = &api;
        async move {
            api.get(who, "/api/v1/tenants/{tenant}/archive/{id}", &[at, aid], "")
                .await
        }
    };
    let r = shown("viewer-payloads").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["archive"]["class"], "dead_letter");
    assert!(r.body["archive"]["restored_as"].is_null());
    assert_eq!(
        r.body["payload"]["simulate"], "malformed_output",
        "{}",
        r.text
    );
    let r = shown("acme-viewer").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains("malformed_output"),
        "the payload is hidden: {}",
        r.text
    );
    // Restore: an operator of the tenant, once; another tenant's id is refused as unknown.
    let r = api
        .post(
            "acme-viewer",
            "/api/v1/archive/restore",
            &[],
            json!({"ids": [acme_ids[0]]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api
        .post(
            "acme-ops",
            "/api/v1/archive/restore",
            &[],
            json!({"ids": [globex_id], "reason": "not mine"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api
        .post(
            "acme-ops",
            "/api/v1/archive/restore",
            &[],
            json!({"ids": [acme_ids[0]], "reason": "the customer asked again"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["command"], "restore", "{}", r.text);
    let restored = r.body["result"]["details"]["restored"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .post(
            "acme-ops",
            "/api/v1/archive/restore",
            &[],
            json!({"ids": [acme_ids[0]], "reason": "again"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["details"]["already"][0]["id"], restored);
    let r = shown("acme-viewer").await;
    assert_eq!(r.body["archive"]["restored_as"], restored, "{}", r.text);
    let audit = api.get("admin", "/api/v1/audit", &[], "").await;
    assert!(
        audit.text.contains("the customer asked again") && audit.text.contains("acme-ops"),
        "{}",
        audit.text
    );
}

/// `text` as a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
