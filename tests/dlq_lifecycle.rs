//! The review lifecycle of dead letters end to end: assign, escalate and note through the admin
//! command stream (exactly once, audited), the state and assignee filters, `show` and `stats`,
//! records ending with their dead letter, the oldest unowned dead letter's age as a metric, and
//! folding by fingerprint: the group shown once with its count, acted on once. Real
//! redis-server, a real member process, the real binary as the operator's CLI.

mod common;

use std::time::Duration;

use common::{eventually, http_get, TestEnv};
use redrive::NewTask;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

/// `n` tasks of `tenant` and `kind` the demo agent fails as `schema_mismatch` (permanent): the
/// same fingerprint per kind.
fn bad(tenant: &str, kind: &str, n: usize, tag: &str) -> Vec<NewTask> {
    (0..n)
        .map(|i| {
            NewTask::new(
                tenant,
                kind,
                json!({"simulate": "malformed_output", "ticket": i}),
            )
            .with_task_id(format!("{tenant}-{tag}-{i}"))
        })
        .collect()
}

/// Runs the CLI expecting success; its stdout as JSON.
fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let (code, out, err) = env.cli(args, &[("REDRIVE_OPERATOR", "ana@ops")]);
    assert_eq!(code, 0, "{args:?} exited {code}: {out} {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs the CLI; (exit code, stdout + stderr).
fn run(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let (code, out, err) = env.cli(args, &[("REDRIVE_OPERATOR", "ana@ops")]);
    (code, format!("{out}{err}"))
}

/// The ids `dlq list` prints for `args` (JSON), in order.
fn listed(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let mut all = vec!["dlq", "list", "--json", "--limit", "1000"];
    all.extend_from_slice(args);
    json_of(env, &all)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `tenant` has `n` dead letters.
async fn dead_letters(env: &TestEnv, tenant: &str, n: usize) {
    eventually(LONG, &format!("{n} dead letters of {tenant}"), || async {
        env.dead_letters(tenant).await.len() == n
    })
    .await;
}

/// The value of `name{tenant="…"}` on a member's /metrics, if present.
fn gauge(addr: &str, name: &str, tenant: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics");
    let prefix = format!("{name}{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Fields of the tenant's review hash (the records and their counts), as stored.
async fn review_hash(env: &TestEnv, tenant: &str) -> std::collections::HashMap<String, String> {
    let mut raw = env.raw().await;
    redis::cmd("HGETALL")
        .arg(format!("{}:{{{tenant}}}:dlq:review", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap()
}

#[tokio::test]
async fn review_moves_are_audited_filtered_counted_and_end_with_the_dead_letter() {
    let env = TestEnv::new();
    let member = env.member(
        "m1",
        &[
            ("REDRIVE_METRICS__LISTEN", "127.0.0.1:0"),
            ("REDRIVE_METRICS__REFRESH_INTERVAL_MS", "200"),
        ],
    );
    let metrics = member.metrics_addr();
    let mut tasks = bad("acme", "triage", 4, "t");
    tasks.extend(bad("acme", "score", 1, "s"));
    env.enqueue_tasks(tasks).await;
    dead_letters(&env, "acme", 5).await;
    let ids = listed(&env, &[]);
    assert_eq!(ids.len(), 5);
    let list = json_of(&env, &["dlq", "list", "--json"]);
    assert!(
        list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["review"]["state"] == "new"),
        "{list}"
    );
    let (d1, d2) = (ids[0].as_str(), ids[1].as_str());

    // The oldest dead letter nobody owns: its age is a metric, growing while nobody takes it.
    eventually(LONG, "the unowned age reaches 1s", || async {
        gauge(&metrics, "redrive_dlq_oldest_unowned_age", "acme").is_some_and(|v| v >= 1.0)
    })
    .await;

    // Assign, then the filters find it; assigning again changes nothing.
    let r = json_of(
        &env,
        &[
            "dlq", "assign", d1, "--to", "ana", "--reason", "on call", "--json",
        ],
    );
    assert_eq!(r["details"]["moved"], 1, "{r}");
    assert_eq!(listed(&env, &["--state", "in_review"]), [d1]);
    assert_eq!(listed(&env, &["--assignee", "ana"]), [d1]);
    assert_eq!(listed(&env, &["--state", "new"]).len(), 4);
    let (code, out) = run(&env, &["dlq", "assign", d1, "--to", "ana"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("assigned 0 dead letters to ana (1 already were)"),
        "{out}"
    );

    // A note keeps the state; an escalation moves it on, and show has it all.
    let (code, out) = run(&env, &["dlq", "note", d1, "--text", "the v2 schema again"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "escalate",
            d1,
            "--to",
            "payments-team",
            "--reason",
            "their schema",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let show = json_of(&env, &["dlq", "show", d1, "--json"]);
    let review = &show["review"];
    assert_eq!(review["state"], "escalated", "{show}");
    assert_eq!(review["assignee"], "ana");
    assert_eq!(review["escalated_to"], "payments-team");
    let log = review["log"].as_array().unwrap();
    let acts: Vec<&str> = log.iter().map(|i| i["act"].as_str().unwrap()).collect();
    assert_eq!(acts, ["assign", "note", "escalate"], "{review}");
    assert!(log
        .iter()
        .all(|i| i["by"] == "ana@ops" && i["cmd"].is_string()));
    assert_eq!(log[1]["text"], "the v2 schema again");
    assert_eq!(log[2]["why"], "their schema");
    let (_, text) = run(&env, &["dlq", "show", d1]);
    assert!(
        text.contains("review: escalated, assigned to ana, escalated to payments-team"),
        "{text}"
    );
    // To the tenant, which has no notification target: said so, nothing queued.
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "escalate",
            d2,
            "--to",
            "tenant",
            "--reason",
            "bad input",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no notification target for escalations"),
        "{out}"
    );

    // Counted by state.
    let stats = json_of(&env, &["dlq", "stats", "--json"]);
    assert_eq!(
        stats["by_state"],
        json!({"new": 3, "in_review": 0, "escalated": 2, "folded": 0}),
        "{stats}"
    );

    // Bad input changes nothing, with the reason.
    for (args, want_code, want) in [
        (vec!["dlq", "assign", d2], 2, "--to"),
        (
            vec!["dlq", "escalate", d2, "--to", "two words", "--reason", "x"],
            64,
            "not an escalation target",
        ),
        (
            vec!["dlq", "note", d2, "--text", " "],
            64,
            "--text must say something",
        ),
        (
            vec!["dlq", "assign", "acme/1-0", "--to", "bo"],
            66,
            "do not exist",
        ),
        (
            vec!["dlq", "escalate", d2, "--to", "tenant"],
            64,
            "--reason is required",
        ),
    ] {
        let (code, out) = run(&env, &args);
        assert_eq!(code, want_code, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
    }
    assert_eq!(listed(&env, &["--state", "in_review"]).len(), 0);

    // The audit trail has every move, with its operator, reason and arguments.
    let audit = json_of(&env, &["admin", "audit", "--json", "--limit", "20"]);
    let entries = audit.as_array().unwrap();
    for (command, why) in [
        ("assign", "on call"),
        ("note", "note"),
        ("escalate", "their schema"),
        ("escalate", "bad input"),
    ] {
        assert!(
            entries.iter().any(|e| e["command"] == command
                && e["reason"] == why
                && e["operator"] == "ana@ops"
                && e["outcome"] == "ok"),
            "{command} ({why}) not audited: {audit}"
        );
    }
    assert!(entries
        .iter()
        .any(|e| e["command"] == "assign" && e["outcome"] == "not_found"));

    // The record ends with its dead letter (the archived copy keeps it); the counts follow.
    let (code, out) = run(&env, &["dlq", "resolve", d1, "--reason", "fixed upstream"]);
    assert_eq!(code, 0, "{out}");
    let removed = env.stream_entries("{acme}:dlq:removed").await;
    let review: Value = serde_json::from_str(&removed[0]["review"]).unwrap();
    assert_eq!(review["state"], "escalated");
    let (code, out) = run(&env, &["dlq", "replay", d2, "--reason", "retry it"]);
    assert_eq!(code, 0, "{out}");
    let h = review_hash(&env, "acme").await;
    assert!(
        !h.keys()
            .any(|k| k.starts_with(|c: char| c.is_ascii_digit()) || k.starts_with('#')),
        "no record or count left: {h:?}"
    );
    dead_letters(&env, "acme", 4).await;

    // Once every dead letter is owned, the unowned age is 0.
    let left = listed(&env, &[]);
    let mut args = vec!["dlq", "assign"];
    args.extend(left.iter().map(String::as_str));
    args.extend(["--to", "bo"]);
    let (code, out) = run(&env, &args);
    assert_eq!(code, 0, "{out}");
    eventually(LONG, "no unowned dead letter", || async {
        gauge(&metrics, "redrive_dlq_oldest_unowned_age", "acme") == Some(0.0)
    })
    .await;
    let stats = json_of(&env, &["dlq", "stats", "--json"]);
    assert_eq!(stats["by_state"]["in_review"], 4, "{stats}");
    assert_eq!(stats["by_state"]["new"], 0, "{stats}");
}

#[tokio::test]
async fn a_fold_is_listed_once_with_its_count_and_acted_on_once() {
    let env = TestEnv::new();
    // A storm of one cause: the breaker would hold the tenant back, which is not what this
    // test is about.
    let _member = env.member("m1", &[("REDRIVE_ISOLATION__BREAKER__ENABLED", "false")]);
    let mut tasks = bad("acme", "triage", 30, "t");
    tasks.extend(bad("acme", "score", 2, "s"));
    env.enqueue_tasks(tasks).await;
    dead_letters(&env, "acme", 32).await;
    let stats = json_of(&env, &["dlq", "stats", "--json", "--tenant", "acme"]);
    let top = &stats["top_fingerprints"][0];
    assert_eq!(top["count"], 30, "{stats}");
    let fp = top["fingerprint"].as_str().unwrap().to_owned();
    let storm = listed(&env, &["--fingerprint", &fp]);
    assert_eq!(storm.len(), 30);

    // A member reviewed before the fold: its record is merged into the representative's.
    let early = storm[5].as_str();
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "assign",
            early,
            "--to",
            "cy",
            "--reason",
            "looked first",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "fold",
            "--tenant",
            "acme",
            "--fingerprint",
            &fp,
            "--reason",
            "one cause",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let rep = storm[0].as_str();
    assert!(
        out.contains(&format!(
            "folded 30 dead letters of fingerprint {fp} under {rep}"
        )),
        "{out}"
    );
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "fold",
            "--tenant",
            "acme",
            "--fingerprint",
            &fp,
            "--reason",
            "again",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("folded already"), "{out}");

    // Listed once with its count; the members on request.
    let list = json_of(&env, &["dlq", "list", "--json"]);
    let rows = list["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{list}");
    let row = rows.iter().find(|r| r["id"] == rep).unwrap();
    assert_eq!(row["review"]["fold"]["count"], 30, "{list}");
    assert_eq!(
        row["review"]["state"], "in_review",
        "the member's state, merged"
    );
    assert_eq!(listed(&env, &["--expand-folds"]).len(), 32);
    assert_eq!(listed(&env, &["--state", "folded"]).len(), 29);
    let show = json_of(&env, &["dlq", "show", rep, "--json"]);
    let log = show["review"]["log"].as_array().unwrap();
    assert!(
        log.iter().any(|i| i["act"] == "assign"
            && Some(i["from"].as_str().unwrap_or("")) == early.split('/').nth(1)),
        "{show}"
    );
    assert_eq!(log.last().unwrap()["act"], "fold");
    let member_show = json_of(&env, &["dlq", "show", &storm[7], "--json"]);
    assert_eq!(member_show["review"]["state"], "folded");
    assert_eq!(member_show["review"]["fold"]["representative"], rep);

    // A member's review is its representative's: moves on it are refused.
    let (code, out) = run(&env, &["dlq", "assign", &storm[7], "--to", "bo"]);
    assert_eq!(code, 77, "{out}");
    assert!(out.contains(&format!("folded under {rep}")), "{out}");
    let (code, out) = run(&env, &["dlq", "assign", rep, "--to", "bo"]);
    assert_eq!(code, 0, "{out}");
    let stats = json_of(&env, &["dlq", "stats", "--json"]);
    assert_eq!(
        stats["by_state"],
        json!({"new": 2, "in_review": 1, "escalated": 0, "folded": 29}),
        "{stats}"
    );

    // A later dead letter of the fingerprint joins the fold.
    env.enqueue_tasks(bad("acme", "triage", 1, "late")).await;
    dead_letters(&env, "acme", 33).await;
    let list = json_of(&env, &["dlq", "list", "--json", "--fingerprint", &fp]);
    assert_eq!(list["entries"][0]["review"]["fold"]["count"], 31, "{list}");

    // Resolving the representative resolves the group, once.
    let r = json_of(
        &env,
        &["dlq", "resolve", rep, "--reason", "fixed in v2.3", "--json"],
    );
    assert_eq!(r["details"]["resolved"], 31, "{r}");
    dead_letters(&env, "acme", 2).await;
    let h = review_hash(&env, "acme").await;
    assert!(
        h.is_empty(),
        "records, counts and cursor gone with the fold: {h:?}"
    );
    let mut raw = env.raw().await;
    let folds: i64 = redis::cmd("HLEN")
        .arg(format!("{}:{{acme}}:dlq:folds", env.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(folds, 0);

    // A replay of a fold's representative replays its members, representative last.
    env.enqueue_tasks(bad("acme", "triage", 5, "again")).await;
    dead_letters(&env, "acme", 7).await;
    let (code, out) = run(
        &env,
        &[
            "dlq",
            "fold",
            "--tenant",
            "acme",
            "--fingerprint",
            &fp,
            "--reason",
            "again",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let rep2 = listed(&env, &["--fingerprint", &fp])[0].clone();
    let r = json_of(
        &env,
        &[
            "dlq",
            "replay",
            &rep2,
            "--patch",
            r#"{"simulate":"ok"}"#,
            "--reason",
            "fixed",
            "--json",
        ],
    );
    assert_eq!(r["details"]["replayed"], 5, "{r}");
    dead_letters(&env, "acme", 2).await;
    for i in 0..5 {
        let id = format!("acme-again-{i}");
        eventually(LONG, &format!("{id} done"), || async {
            let t = json_of(&env, &["task", "show", &format!("acme/{id}"), "--json"]);
            t["state"] == "done"
        })
        .await;
    }
}
