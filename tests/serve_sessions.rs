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
