//! Browser sessions of `redrive serve`, over real HTTP against a real `redrive serve` process,
//! a fleet member and a private redis-server: the login's cookie and its flags, CSRF on every
//! change made with a session (console forms and API calls), logout, sessions that end (idle,
//! past their maximum age, their token removed or replaced), the login's rate limits per address
//! and overall, secrets kept out of logs and Redis, and slow clients cut off.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{eventually, http_get, Member, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};
use sha2::Digest;

/// A client that follows no redirect (the test reads them), bound to `from` (a loopback
/// address: the login's per-address limit tells them apart).
fn client(from: [u8; 4]) -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Makes tokens with `redrive serve token`: (name → token, the config entries).
fn make_tokens(env: &TestEnv, specs: &[(&str, &str)]) -> (HashMap<String, String>, String) {
    let mut tokens = HashMap::new();
    let mut toml = String::new();
    for (name, role) in specs {
        let (code, out, err) = env.cli(&["serve", "token", "--name", name, "--role", role], &[]);
        assert_eq!(code, 0, "{err}");
        let (token, entry) = out.split_once('\n').unwrap();
        tokens.insert((*name).to_owned(), token.to_owned());
        toml.push_str(entry);
    }
    (tokens, toml)
}

/// A `redrive serve` process under /redrive.
struct Server {
    process: Member,
    base: String,
    metrics: String,
}

fn serve(env: &TestEnv, id: &str, extra: &str, entries: &str) -> Server {
    let config = format!(
        "[serve]\nlisten = \"127.0.0.1:0\"\nbase_path = \"/redrive\"\n{extra}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n{entries}"
    );
    let path = env.config_file(&format!("{id}.toml"), &config);
    let process = env.serve(id, &path, &[]);
    let base = format!(
        "http://{}/redrive",
        process.listen_addr("serving the HTTP API")
    );
    let metrics = process.listen_addr("serving /metrics");
    Server {
        process,
        base,
        metrics,
    }
}

/// A logged-in browser, as far as the server can tell: its cookie.
struct Login {
    cookie: String,
    id: String,
}

/// POSTs the login form; the answer.
async fn login_form(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    http.post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=%2Fredrive%2Faudit"))
        .send()
        .await
        .unwrap()
}

/// Logs in with `token` and returns the session's cookie (checking the answer's flags).
async fn login(http: &reqwest::Client, base: &str, token: &str) -> (Login, String) {
    let r = login_form(http, base, token).await;
    assert_eq!(r.status().as_u16(), 303, "login");
    assert_eq!(r.headers()["location"], "/redrive/audit", "back to `next`");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let id = set
        .strip_prefix("redrive_session=")
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    (
        Login {
            cookie: format!("redrive_session={id}"),
            id,
        },
        set,
    )
}

/// The CSRF token a console page carries in its forms.
async fn csrf_of(http: &reqwest::Client, base: &str, s: &Login) -> String {
    let r = http
        .get(format!("{base}/dead-letters"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a csrf field")
        .to_owned()
}

/// GET `path` with the session: (status, body).
async fn get(http: &reqwest::Client, base: &str, s: &Login, path: &str) -> (u16, String) {
    let r = http
        .get(format!("{base}{path}"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Seeds `n` dead letters of `tenant` through the running member.
async fn seed(env: &TestEnv, tenant: &str, n: usize) {
    let tasks = (0..n)
        .map(|i| {
            NewTask::new(
                tenant,
                "triage",
                json!({"simulate": "malformed_output", "ticket": i}),
            )
            .with_task_id(format!("{tenant}-bad-{i}"))
        })
        .collect();
    env.enqueue_tasks(tasks).await;
    eventually(Duration::from_secs(60), "dead letters", || async {
        env.dead_letters(tenant).await.len() == n
    })
    .await;
}

#[tokio::test]
async fn a_session_cookie_changes_nothing_without_its_csrf_token() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator"), ("viewer", "viewer")]);
    let srv = serve(&env, "api", "", &entries);
    let secure = serve(&env, "secure", "cookie_secure = true", &entries);
    seed(&env, "acme", 3).await;
    let http = client([127, 0, 0, 1]);
    let base = &srv.base;

    // A bad token: 401, no cookie. A good one: the cookie, with its flags.
    let r = login_form(&http, base, "not-a-token").await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let (s, set) = login(&http, base, &tokens["ops"]).await;
    assert_eq!(s.id.len(), 43, "32 random bytes, base64url: {set}");
    assert!(s
        .id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/redrive"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let (_, set) = login(&http, &secure.base, &tokens["ops"]).await;
    assert!(set.contains("; Secure"), "cookie_secure: {set}");

    // The cookie authenticates the API; reads need nothing more.
    let (status, body) = get(&http, base, &s, "/api/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["name"], "ops");
    let (status, body) = get(&http, base, &s, "/api/v1/dead-letters").await;
    assert_eq!(status, 200);
    let ids: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    // A change with the cookie: refused without the CSRF token, or with another's.
    let csrf = csrf_of(&http, base, &s).await;
    assert_eq!(csrf.len(), 43);
    let resolve = |header: Option<&str>| {
        let mut req = http
            .post(format!("{base}/api/v1/dead-letters/resolve"))
            .header("cookie", &s.cookie)
            .header("content-type", "application/json")
            .body(json!({"ids": [ids[0]], "reason": "handled"}).to_string());
        if let Some(h) = header {
            req = req.header("x-csrf-token", h);
        }
        req.send()
    };
    for bad in [None, Some("x".repeat(43)), Some(String::new())] {
        let r = resolve(bad.as_deref()).await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{bad:?}");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "csrf");
    }
    let form = |body: String| {
        http.post(format!("{base}/dead-letters/bulk"))
            .header("cookie", &s.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let id_q = ids[1].replace('/', "%2F");
    let r = form(format!("action=discard&id={id_q}&reason=x"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a console form without csrf");
    assert!(r.text().await.unwrap().contains("CSRF token"));
    let r = form(format!("action=discard&id={id_q}&reason=x&csrf=wrong"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(env.dead_letters("acme").await.len(), 3, "nothing changed");
    let audit = get(&http, base, &s, "/api/v1/audit").await.1;
    assert_eq!(
        serde_json::from_str::<Value>(&audit).unwrap()["entries"],
        json!([])
    );

    // With it: done, audited under the token's name.
    let r = resolve(Some(csrf.as_str())).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = form(format!(
        "action=discard&id={id_q}&reason=test+data&csrf={csrf}"
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/redrive/commands/"), "{to}");
    assert_eq!(env.dead_letters("acme").await.len(), 1);
    let audit: Value =
        serde_json::from_str(&get(&http, base, &s, "/api/v1/audit").await.1).unwrap();
    let who: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operator"].as_str().unwrap())
        .collect();
    assert_eq!(who, vec!["ops", "ops"]);
    // A bearer token needs no CSRF token (a browser never sends it by itself).
    let r = http
        .post(format!("{base}/api/v1/dead-letters/replay/dry-run"))
        .bearer_auth(&tokens["ops"])
        .header("content-type", "application/json")
        .body(json!({"all": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A viewer's session gets the role's 403 for a change, CSRF token or not.
    let (v, _) = login(&http, base, &tokens["viewer"]).await;
    let v_csrf = csrf_of(&http, base, &v).await;
    let r = http
        .post(format!("{base}/dead-letters/bulk"))
        .header("cookie", &v.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("action=resolve&id={id_q}&reason=x&csrf={v_csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap().contains("needs the operator role"));

    // Redis holds the session under its id's SHA-256 only: the id is nowhere in it.
    let key_hex: String = sha2::Sha256::digest(s.id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut raw = env.raw().await;
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:{{@admin}}:session:{key_hex}", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(fields["token"], "ops");
    assert_eq!(fields["csrf"], csrf);
    assert!(fields.values().all(|v| !v.contains(&s.id)));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{@admin}}:session:{key_hex}", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        ttl > 7 * 3600 * 1000 && ttl <= 8 * 3600 * 1000,
        "idle timeout 8 h: {ttl}"
    );

    // Logout: refused without the CSRF token; with it, the session is gone.
    let logout = |body: String| {
        http.post(format!("{base}/logout"))
            .header("cookie", &s.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(logout(String::new()).await.unwrap().status().as_u16(), 403);
    let r = logout(format!("csrf={csrf}")).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/redrive/login");
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, body) = get(&http, base, &s, "/api/v1/me").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("session has ended"), "{body}");
    let r = http
        .get(format!("{base}/dead-letters"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        303,
        "the console sends it to the login page"
    );
    assert_eq!(
        r.headers()["location"],
        "/redrive/login?next=%2Fredrive%2Fdead-letters&ended=1"
    );

    // Console pages are counted with the API's requests, under their template.
    let (_, text) = http_get(&srv.metrics, "/metrics");
    let has = |route: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("redrive_api_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/login", "303") && has("/login", "401"), "{text}");
    assert!(has("/dead-letters", "200") && has("/dead-letters/bulk", "303"));
    assert!(has("/dead-letters/bulk", "403"));
    assert!(
        !text.contains("/redrive/"),
        "no raw path, no base path in a label"
    );

    // Secrets never reach the logs.
    let log = format!("{}{}", srv.process.log_text(), secure.process.log_text());
    assert!(log.contains("console login refused"), "{log}");
    for secret in [
        tokens["ops"].as_str(),
        tokens["viewer"].as_str(),
        s.id.as_str(),
        csrf.as_str(),
        "not-a-token",
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}

#[tokio::test]
async fn sessions_end_idle_past_their_maximum_age_or_with_their_token() {
    let env = TestEnv::new();
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator"), ("other", "viewer")]);
    let srv = serve(
        &env,
        "short",
        "session_ttl_ms = 1000\nsession_max_age_ms = 2500",
        &entries,
    );
    let http = client([127, 0, 0, 1]);
    let base = &srv.base;

    // Used every 300 ms, a session outlives its idle timeout — until its maximum age.
    let (s, _) = login(&http, base, &tokens["ops"]).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_800) {
        assert_eq!(get(&http, base, &s, "/api/v1/me").await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(5), "past its maximum age", || async {
        get(&http, base, &s, "/api/v1/me").await.0 == 401
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2_000));
    // Idle longer than the idle timeout: ended.
    let (s, _) = login(&http, base, &tokens["ops"]).await;
    assert_eq!(get(&http, base, &s, "/api/v1/me").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(get(&http, base, &s, "/api/v1/me").await.0, 401);

    // A token removed from the config, or replaced under the same name, ends its sessions.
    let long = serve(&env, "long", "", &entries);
    let (removed, _) = login(&http, &long.base, &tokens["other"]).await;
    let (replaced, _) = login(&http, &long.base, &tokens["ops"]).await;
    assert_eq!(get(&http, &long.base, &removed, "/api/v1/me").await.0, 200);
    let (new_tokens, new_entries) = make_tokens(&env, &[("ops", "operator")]);
    let next = serve(&env, "next", "", &new_entries);
    for s in [&removed, &replaced] {
        let (status, body) = get(&http, &next.base, s, "/api/v1/me").await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("no longer configured"), "{body}");
    }
    let (fresh, _) = login(&http, &next.base, &new_tokens["ops"]).await;
    assert_eq!(get(&http, &next.base, &fresh, "/api/v1/me").await.0, 200);
    // The ended sessions are deleted, not merely refused.
    assert_eq!(get(&http, &long.base, &removed, "/api/v1/me").await.0, 401);
}

/// `redrive_api_logins_total{result=…}` as the server's /metrics shows it.
fn logins(metrics: &str, result: &str) -> u64 {
    let (_, text) = http_get(metrics, "/metrics");
    text.lines()
        .find(|l| {
            l.starts_with("redrive_api_logins_total{")
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn logins_are_rate_limited_per_address_and_overall() {
    let env = TestEnv::new();
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator")]);
    let per_ip = serve(
        &env,
        "per-ip",
        "login_per_ip_per_minute = 3\nlogin_global_per_minute = 100",
        &entries,
    );
    let one = client([127, 0, 0, 1]);
    let two = client([127, 0, 0, 2]);
    for _ in 0..3 {
        let r = login_form(&one, &per_ip.base, "wrong").await;
        assert_eq!(r.status().as_u16(), 401);
    }
    // The fourth attempt from that address is refused before the token is looked at.
    let r = login_form(&one, &per_ip.base, &tokens["ops"]).await;
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&wait),
        "one attempt comes back every 20 s: {wait}"
    );
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Too many login attempts"));
    // Another address is not held back by it.
    let (_, set) = login(&two, &per_ip.base, &tokens["ops"]).await;
    assert!(set.starts_with("redrive_session="));
    assert_eq!(logins(&per_ip.metrics, "bad_token"), 3);
    assert_eq!(logins(&per_ip.metrics, "rate_limited"), 1);
    assert_eq!(logins(&per_ip.metrics, "ok"), 1);

    // Every client together: two a minute here, whatever the address.
    let global = serve(
        &env,
        "global",
        "login_per_ip_per_minute = 100\nlogin_global_per_minute = 2",
        &entries,
    );
    assert_eq!(
        login_form(&one, &global.base, "wrong")
            .await
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        login_form(&two, &global.base, "wrong")
            .await
            .status()
            .as_u16(),
        401
    );
    let three = client([127, 0, 0, 3]);
    let r = login_form(&three, &global.base, &tokens["ops"]).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    let log = per_ip.process.log_text();
    assert!(log.contains("result=\"rate_limited\""), "{log}");
    assert!(!log.contains(&tokens["ops"]) && !log.contains("wrong"));
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let env = TestEnv::new();
    let (_, entries) = make_tokens(&env, &[("ops", "operator")]);
    let srv = serve(
        &env,
        "slow",
        "header_read_timeout_ms = 300\nrequest_timeout_ms = 600\n\n[admin]\nreply_timeout_ms = 500",
        &entries,
    );
    let addr = srv
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/redrive")
        .to_owned();

    // A request head that never ends: the connection is closed.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    write!(s, "GET /redrive/login HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // A body sent too slowly: 408 once the request has taken too long.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    write!(
        s,
        "POST /redrive/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=abc"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let took = started.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Everyone else is still served.
    let (status, _) = http_get(&addr, "/redrive/login");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_read_only_server_refuses_console_changes_with_a_page_saying_so() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let (tokens, entries) = make_tokens(&env, &[("admin", "admin")]);
    let srv = serve(&env, "ro", "read_only = true", &entries);
    seed(&env, "acme", 1).await;
    let http = client([127, 0, 0, 1]);
    let base = &srv.base;
    let (s, _) = login(&http, base, &tokens["admin"]).await;
    let csrf = csrf_of(&http, base, &s).await;
    let page = get(&http, base, &s, "/dead-letters").await.1;
    assert!(page.contains("read-only"), "the header says so");
    let id = env.dead_letters("acme").await.len();
    assert_eq!(id, 1);
    let (_, list) = get(&http, base, &s, "/api/v1/dead-letters").await;
    let dl = serde_json::from_str::<Value>(&list).unwrap()["entries"][0]["id"]
        .as_str()
        .unwrap()
        .replace('/', "%2F");
    for (path, body) in [
        (
            "/dead-letters/bulk",
            format!("action=discard&id={dl}&reason=x&csrf={csrf}"),
        ),
        ("/replay", format!("id={dl}&reason=x&csrf={csrf}")),
        ("/breakers/acme/open", format!("reason=x&csrf={csrf}")),
        ("/commands/c-1/cancel", format!("csrf={csrf}")),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .header("cookie", &s.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("this server is read-only"), "{path}: {html}");
    }
    // Reads and the replay wizard's dry run still work; logging out is not a change.
    let (status, html) = get(&http, base, &s, &format!("/replay?id={dl}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("will be refused"), "{html}");
    assert_eq!(env.dead_letters("acme").await.len(), 1, "nothing changed");
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &s.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
}

/// POSTs a login with `token` carrying `X-Forwarded-For: forwarded`.
async fn login_forwarded(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    forwarded: &str,
) -> reqwest::Response {
    http.post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", forwarded)
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_login_limit() {
    let env = TestEnv::new();
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator")]);
    let srv = serve(
        &env,
        "proxied",
        "login_per_ip_per_minute = 2\nlogin_global_per_minute = 100\n\
         trusted_proxies = [\"127.0.0.2\", \"192.0.2.0/24\"]",
        &entries,
    );
    let base = &srv.base;
    let status = |r: reqwest::Response| r.status().as_u16();

    // 127.0.0.1 is not a proxy: whatever it forwards, it is counted as itself.
    let direct = client([127, 0, 0, 1]);
    assert_eq!(
        status(login_forwarded(&direct, base, "wrong", "10.0.0.1").await),
        401
    );
    assert_eq!(
        status(login_forwarded(&direct, base, "wrong", "10.0.0.2").await),
        401
    );
    let r = login_forwarded(&direct, base, &tokens["ops"], "10.0.0.3").await;
    assert_eq!(
        r.status().as_u16(),
        429,
        "a made-up X-Forwarded-For escapes nothing"
    );

    // 127.0.0.2 is the proxy: the clients it forwards are counted apart.
    let proxy = client([127, 0, 0, 2]);
    assert_eq!(
        status(login_forwarded(&proxy, base, "wrong", "10.0.0.1").await),
        401
    );
    assert_eq!(
        status(login_forwarded(&proxy, base, "wrong", "10.0.0.1").await),
        401
    );
    // The client wrote the left part itself; the rightmost untrusted entry is still 10.0.0.1
    // (192.0.2.9 is a trusted proxy in front of this one).
    let r = login_forwarded(
        &proxy,
        base,
        &tokens["ops"],
        "203.0.113.5, 10.0.0.1, 192.0.2.9",
    )
    .await;
    assert_eq!(r.status().as_u16(), 429, "10.0.0.1 used its two attempts");
    // Another forwarded client is not held back by 10.0.0.1, nor by what 127.0.0.1 claimed.
    assert_eq!(
        status(login_forwarded(&proxy, base, "wrong", "10.0.0.2").await),
        401
    );
    let r = login_forwarded(&proxy, base, &tokens["ops"], "10.0.0.2").await;
    assert_eq!(
        r.status().as_u16(),
        303,
        "10.0.0.2's second attempt logs in"
    );
    // A header that does not read as addresses, or none: the proxy's own address counts.
    assert_eq!(
        status(login_forwarded(&proxy, base, "wrong", "10.0.0.7, bogus").await),
        401
    );
    assert_eq!(status(login_form(&proxy, base, "wrong").await), 401);
    assert_eq!(
        status(login_forwarded(&proxy, base, "wrong", "bogus").await),
        429
    );
    assert_eq!(logins(&srv.metrics, "rate_limited"), 3);
    assert_eq!(logins(&srv.metrics, "ok"), 1);

    // The refused logins are logged with the client's address and the proxy it came through;
    // a claim of an untrusted peer is never taken for an address.
    let log = srv.process.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("console login refused"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("client=\"10.0.0.1\"") && l.contains("via=\"127.0.0.2\"")),
        "{log}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("client=\"127.0.0.1\"") && !l.contains("via=")),
        "{log}"
    );
    assert!(
        !log.contains("10.0.0.3"),
        "a spoofed address is never logged: {log}"
    );
}

#[test]
fn a_bad_trusted_proxies_entry_stops_the_server_with_what_to_write() {
    let env = TestEnv::new();
    let (_, entries) = make_tokens(&env, &[("ops", "operator")]);
    let path = env.config_file(
        "bad-proxies.toml",
        &format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/16\"]\n\n{entries}"
        ),
    );
    let (code, _, err) = env.cli(&["serve", "--config", &path], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("serve.trusted_proxies[1] = '10.1.2.3/16' has bits set past its /16 prefix; write the network's address, 10.1.0.0/16"),
        "{err}"
    );
}

/// A client that trusts the PEM authority at `ca` (for a server that terminates TLS).
fn tls_client(ca: &std::path::Path) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_server_terminating_tls_marks_the_session_cookie_secure() {
    let env = TestEnv::new();
    let files = common::tls::generate(&env.dir.join("serve-tls"));
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator")]);
    // cookie_secure is left false: the certificate alone makes the cookie Secure.
    let config = format!(
        "[serve]\nlisten = \"127.0.0.1:0\"\nbase_path = \"/redrive\"\ntls_cert = \"{}\"\n\
         tls_key = \"{}\"\n\n{entries}",
        files.server_cert.display(),
        files.server_key.display()
    );
    let path = env.config_file("tls.toml", &config);
    let process = env.serve("tls", &path, &[]);
    let base = format!(
        "https://{}/redrive",
        process.listen_addr("serving the HTTP API")
    );
    let http = tls_client(&files.ca);
    let r = login_form(&http, &base, &tokens["ops"]).await;
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["; Secure", "HttpOnly", "SameSite=Strict", "Path=/redrive"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    // The session works over TLS, and logging out clears the cookie with the same flags.
    let id = set
        .strip_prefix("redrive_session=")
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    let s = Login {
        cookie: format!("redrive_session={id}"),
        id,
    };
    let (status, body) = get(&http, &base, &s, "/api/v1/me").await;
    assert_eq!(status, 200, "{body}");
    let csrf = csrf_of(&http, &base, &s).await;
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &s.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.contains("; Secure") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(
        !process.log_text().contains(&s.id),
        "the session id is never logged"
    );
}

/// POSTs a console form with the session `s`; the answer.
async fn post_form(
    http: &reqwest::Client,
    base: &str,
    s: &Login,
    path: &str,
    body: &str,
) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .header("cookie", &s.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// `GET /api/v1/commands/{id}` with the session.
async fn command(http: &reqwest::Client, base: &str, s: &Login, id: &str) -> Value {
    let (status, body) = get(http, base, s, &format!("/api/v1/commands/{id}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn purge_and_resume_forms_are_refused_below_their_roles_and_work_at_them() {
    let env = TestEnv::new();
    let _member = env.member("m1", &[]);
    let (tokens, entries) = make_tokens(
        &env,
        &[
            ("viewer", "viewer"),
            ("ops", "operator"),
            ("admin", "admin"),
        ],
    );
    let srv = serve(&env, "roles", "", &entries);
    seed(&env, "acme", 6).await;
    seed(&env, "globex", 2).await;
    let http = client([127, 0, 0, 1]);
    let base = &srv.base;
    let (viewer, _) = login(&http, base, &tokens["viewer"]).await;
    let (ops, _) = login(&http, base, &tokens["ops"]).await;
    let (admin, _) = login(&http, base, &tokens["admin"]).await;
    let (v_csrf, o_csrf, a_csrf) = (
        csrf_of(&http, base, &viewer).await,
        csrf_of(&http, base, &ops).await,
        csrf_of(&http, base, &admin).await,
    );

    // A slow replay of acme's dead letters (one a second), cancelled after its first.
    let r = http
        .post(format!("{base}/api/v1/dead-letters/replay"))
        .bearer_auth(&tokens["ops"])
        .header("content-type", "application/json")
        .body(
            json!({"filter": {"tenants": ["acme"]}, "rate": 1, "patch": {"simulate": "ok"}, "reason": "slow"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let job = serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(30), "the replay runs", || async {
        command(&http, base, &ops, &job).await["progress"]["replayed"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let r = post_form(
        &http,
        base,
        &ops,
        &format!("/commands/{job}/cancel"),
        &format!("reason=stop&csrf={o_csrf}"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    eventually(
        Duration::from_secs(30),
        "the replay is cancelled",
        || async { command(&http, base, &ops, &job).await["progress"]["state"] == "cancelled" },
    )
    .await;
    let left = env.dead_letters("acme").await.len();
    assert!((1..6).contains(&left), "{left}");
    // Its page offers the resume to an operator, not to a viewer.
    let (_, page) = get(&http, base, &ops, &format!("/commands/{job}")).await;
    assert!(page.contains("id=\"resume-button\""), "{page}");
    assert!(
        page.contains("name=\"rate\" value=\"1\""),
        "the job's own rate: {page}"
    );
    let (_, page) = get(&http, base, &viewer, &format!("/commands/{job}")).await;
    assert!(!page.contains("resume-button"));
    // The purge is offered to the admin only.
    for (s, offered) in [(&viewer, false), (&ops, false), (&admin, true)] {
        let (_, page) = get(&http, base, s, "/dead-letters").await;
        assert_eq!(page.contains("id=\"purge-link\""), offered);
        assert!(page.contains("id=\"export\""), "everyone may export");
    }

    // Forged: the role's 403, CSRF token or not, and nothing changes.
    let resume = format!("/commands/{job}/resume");
    let r = post_form(
        &http,
        base,
        &viewer,
        &resume,
        &format!("reason=x&rate=0&csrf={v_csrf}"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.unwrap().contains("needs the operator role"));
    let purge = "tenant=acme&older_than=0s&confirm=acme&reason=x";
    for (s, csrf) in [(&viewer, &v_csrf), (&ops, &o_csrf)] {
        let r = post_form(&http, base, s, "/purge", &format!("{purge}&csrf={csrf}")).await;
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap().contains("needs the admin role"));
        assert_eq!(get(&http, base, s, "/purge?tenant=acme").await.0, 403);
    }
    // The right role without the CSRF token: 403 too.
    let r = post_form(&http, base, &ops, &resume, "reason=x&rate=0").await;
    assert_eq!(r.status().as_u16(), 403);
    let r = post_form(&http, base, &admin, "/purge", purge).await;
    assert_eq!(r.status().as_u16(), 403);
    // The admin with a confirmation that is not the tenant's name: refused, nothing purged.
    let r = post_form(
        &http,
        base,
        &admin,
        "/purge",
        &format!("tenant=acme&older_than=0s&confirm=acm&reason=x&csrf={a_csrf}"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("Nothing was purged"));
    assert_eq!(env.dead_letters("acme").await.len(), left);
    assert_eq!(
        command(&http, base, &ops, &job).await["progress"]["state"],
        "cancelled"
    );
    let audit: Value =
        serde_json::from_str(&get(&http, base, &admin, "/api/v1/audit").await.1).unwrap();
    let mut commands: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    commands.sort();
    assert_eq!(commands, vec!["cancel", "replay"], "nothing forged ran");

    // The operator resumes it: the new command's status is the job's progress, to its end.
    let r = post_form(
        &http,
        base,
        &ops,
        &resume,
        &format!("reason=go+on&rate=0&csrf={o_csrf}"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let resumed = to.strip_prefix("/redrive/commands/").unwrap().to_owned();
    assert_ne!(resumed, job);
    eventually(
        Duration::from_secs(30),
        "the resumed replay finishes",
        || async { command(&http, base, &viewer, &resumed).await["state"] == "done" },
    )
    .await;
    let status = command(&http, base, &viewer, &resumed).await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    assert_eq!(status["progress"]["job"], json!(job), "{status}");
    assert_eq!(status["progress"]["state"], "done", "{status}");
    assert_eq!(status["progress"]["replayed"], 6, "{status}");
    assert!(env.dead_letters("acme").await.is_empty());
    let (_, page) = get(&http, base, &viewer, &format!("/commands/{resumed}")).await;
    assert!(page.contains("id=\"resumed-job\""), "{page}");

    // The admin's purge: the count first, then the typed confirmation.
    let (status, page) = get(&http, base, &admin, "/purge?tenant=globex&older_than=0s").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"purge-would\">2<"), "{page}");
    let (status, _) = get(&http, base, &admin, "/purge?tenant=nope&older_than=0s").await;
    assert_eq!(status, 404);
    let r = post_form(
        &http,
        base,
        &admin,
        "/purge",
        &format!("tenant=globex&older_than=0s&confirm=globex&reason=test+data&csrf={a_csrf}"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let purge_id = to.strip_prefix("/redrive/commands/").unwrap();
    let status = command(&http, base, &admin, purge_id).await;
    assert_eq!(status["result"]["outcome"], "ok", "{status}");
    assert_eq!(status["result"]["details"]["purged"], 2, "{status}");
    assert!(env.dead_letters("globex").await.is_empty());
    let audit: Value =
        serde_json::from_str(&get(&http, base, &admin, "/api/v1/audit").await.1).unwrap();
    let latest = &audit["entries"][0];
    assert_eq!(
        (&latest["command"], &latest["operator"], &latest["reason"]),
        (&json!("purge"), &json!("admin"), &json!("test data"))
    );
}

#[tokio::test]
async fn the_console_browses_the_archive_and_restores_with_its_csrf_token() {
    let env = TestEnv::new();
    // A cap of 2: acme's 3 oldest dead letters go to the archive (the test's directory, the
    // server's too).
    let _member = env.member(
        "m1",
        &[
            ("REDRIVE_ISOLATION__BREAKER__ENABLED", "false"),
            ("REDRIVE_DEAD_LETTER__MAX_LEN", "2"),
            ("REDRIVE_ARCHIVE__INTERVAL_MS", "100"),
        ],
    );
    let (tokens, entries) = make_tokens(&env, &[("ops", "operator"), ("viewer", "viewer")]);
    let server = serve(&env, "api", "", &entries);
    let base = server.base.as_str();
    let http = client([127, 0, 0, 1]);
    let tasks = (0..5)
        .map(|i| {
            NewTask::new(
                "acme",
                "triage",
                json!({"simulate": "malformed_output", "ticket": i}),
            )
            .with_task_id(format!("acme-bad-{i}"))
        })
        .collect();
    env.enqueue_tasks(tasks).await;
    let (ops, _) = login(&http, base, &tokens["ops"]).await;
    let rows = |html: &str| -> Vec<String> {
        html.split("data-id=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    eventually(
        Duration::from_secs(60),
        "3 archived, on the page",
        || async {
            let (status, html) = get(&http, base, &ops, "/archive").await;
            status == 200 && rows(&html).len() == 3
        },
    )
    .await;
    let (_, html) = get(&http, base, &ops, "/archive?limit=2").await;
    assert_eq!(rows(&html).len(), 2, "a page of two");
    assert!(html.contains("id=\"next-page\""), "and a next page");
    let (_, html) = get(&http, base, &ops, "/archive").await;
    let archived = rows(&html);
    let (tenant, id) = archived[0].split_once('/').unwrap();
    let page = format!("/archive/{tenant}/{id}");
    // A viewer reads it without its payload and cannot restore it.
    let (viewer, _) = login(&http, base, &tokens["viewer"]).await;
    let (status, html) = get(&http, base, &viewer, &page).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("payload is hidden") && !html.contains("malformed_output"));
    assert!(!html.contains("restore-form"));
    assert!(html.contains("Restoring needs an operator"));
    // An operator restores it: not without the CSRF token, then once with it.
    let (status, html) = get(&http, base, &ops, &page).await;
    assert_eq!(status, 200);
    assert!(html.contains("restore-form") && html.contains("not restored"));
    let post = |body: String| {
        http.post(format!("{base}/archive/restore"))
            .header("cookie", &ops.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let id_q = format!("{tenant}%2F{id}");
    let r = post(format!("id={id_q}&reason=again")).await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "no csrf");
    let csrf = csrf_of(&http, base, &ops).await;
    let r = post(format!("id={id_q}&reason=customer+asked&csrf={csrf}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/redrive/commands/"), "{to}");
    let (status, html) = get(&http, base, &ops, to.trim_start_matches("/redrive")).await;
    assert_eq!(status, 200);
    assert!(html.contains("restored 1 archived dead letters"), "{html}");
    let (_, html) = get(&http, base, &ops, &page).await;
    assert!(!html.contains("not restored"), "{html}");
    assert!(
        html.contains("/redrive/dead-letters/acme/"),
        "a link to the restored one"
    );
}
