//! The task contract's loose ends, end to end (CONTRACT.md): bytes that are not UTF-8 come back
//! exactly from a dead letter, a producer's own fields travel with its task through retries,
//! dead letters and replays (bounded), entries with a repeated `task_id` stay separate tasks,
//! and bare JSON scalars are payloads. Real redis-server, real member processes, foreign
//! producers writing raw XADDs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{eventually, TestEnv};
use redrive::testkit::BrokerExt;
use redrive::testkit::{DeferItem, Deferred};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

/// Long tiered delays (nothing is due until the test says so), two attempts.
const RETRY_TOML: &str = r#"
[retry]
max_attempts = 2
backoff = "tiered"
delays_ms = [3600000]
max_delay_ms = 3600000
jitter = "none"
poll_interval_ms = 50
"#;

/// Standard base64, decoded here so the test does not trust the code it checks.
fn b64(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = alphabet
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{text:?} is not base64"));
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// A foreign producer's raw XADD (registering the tenant), bytes as given.
async fn xadd(env: &TestEnv, tenant: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut raw = env.raw().await;
    let _: () = redis::cmd("SADD")
        .arg(format!("{}:tenants", env.prefix))
        .arg(tenant)
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("{}:{{{tenant}}}:lane", env.prefix))
        .arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut raw).await.unwrap()
}

async fn wait_dead_letters(env: &TestEnv, tenant: &str, n: usize) -> Vec<HashMap<String, String>> {
    eventually(LONG, &format!("{n} dead letters of {tenant}"), || async {
        env.dead_letters(tenant).await.len() >= n
    })
    .await;
    env.dead_letters(tenant).await
}

/// The dead letter of task `id`.
fn by_task<'a>(dls: &'a [HashMap<String, String>], id: &str) -> &'a HashMap<String, String> {
    dls.iter()
        .find(|d| d.get("task_id").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no dead letter for {id}: {dls:?}"))
}

#[tokio::test]
async fn bytes_that_are_not_utf8_come_back_exactly_from_the_dead_letter() {
    let env = TestEnv::new();
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"task_id", b"bin-1"),
        (b"kind", b"triage"),
        (b"payload", b"{\"ticket\":1}"),
        (b"prompt_version", b"v\xff\xfe2"),
        (b"blob", b"\x00\x80\xc3\x28"),
        (b"n\xe9me", b"latin-1 name"),
    ];
    let entry = xadd(&env, "acme", &fields).await;
    let mut m = env.member("m1", &[]);
    let dls = wait_dead_letters(&env, "acme", 1).await;
    m.stop();
    let dl = by_task(&dls, "bin-1");
    assert_eq!(dl["class"], "malformed_entry");
    assert_eq!(dl["orig_id"], entry);
    assert!(dl["error"].contains("prompt_version"), "{dl:?}");
    let raw: serde_json::Map<String, Value> = serde_json::from_str(&dl["raw"]).unwrap();
    assert_eq!(raw.len(), fields.len(), "{raw:?}");
    // Every field's exact bytes: text as it is, anything else marked and base64-encoded.
    let mut back: Vec<(Vec<u8>, Vec<u8>)> = raw
        .iter()
        .map(|(k, v)| {
            let name = match k.strip_prefix("base64:") {
                Some(b) => b64(b),
                None => k.as_bytes().to_vec(),
            };
            let value = match v {
                Value::String(s) => s.as_bytes().to_vec(),
                other => b64(other["base64"].as_str().unwrap()),
            };
            (name, value)
        })
        .collect();
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    back.sort();
    want.sort();
    assert_eq!(back, want, "raw = {}", dl["raw"]);
    // Operators see the same through the CLI.
    let list = env.cli(&["dlq", "list", "--json"], &[]);
    assert_eq!(list.0, 0, "{}", list.2);
    let listed: Value = serde_json::from_str(&list.1).unwrap();
    let id = listed["entries"][0]["id"].as_str().unwrap().to_owned();
    let (code, out, err) = env.cli(&["dlq", "show", &id, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        b64(shown["raw"]["prompt_version"]["base64"].as_str().unwrap()),
        b"v\xff\xfe2"
    );
}

#[tokio::test]
async fn own_fields_travel_through_retries_dead_letters_and_replays() {
    let env = TestEnv::new();
    let cfg = env.config_file("retry.toml", RETRY_TOML);
    let fail = br#"{"simulate":"rate_limited","work_ms":0}"#;
    let own: [(&str, &str); 5] = [
        ("tool_version", "1.4.2"),
        ("environment", "staging"),
        ("severity", "high"),
        ("log_url", "https://logs.example/run/7?x=1&y=2"),
        // Named like a dead-letter field: it must not overwrite the dead letter's class.
        ("class", "billing"),
    ];
    let mut meta: Vec<(&[u8], &[u8])> = vec![
        (b"task_id", b"meta-1"),
        (b"kind", b"triage"),
        (b"payload", fail),
    ];
    meta.extend(own.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    xadd(&env, "acme", &meta).await;
    // Over the limits: 20 own fields, of which 16 fit; one is not UTF-8 text.
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    let mut over: Vec<(&[u8], &[u8])> = vec![
        (b"task_id", b"meta-over"),
        (b"kind", b"triage"),
        (b"payload", fail),
        (b"bin", b"\xff"),
    ];
    over.extend(names.iter().map(|n| (n.as_bytes(), b"v".as_slice())));
    xadd(&env, "acme", &over).await;

    let mut m = env.member("m1", &[("REDRIVE_CONFIG", &cfg)]);
    // The first attempt failed: the retry scheduled for attempt 2 carries the own fields.
    eventually(LONG, "both retries scheduled", || async {
        env.scheduled_retries("acme").await.len() == 2
    })
    .await;
    let retries = env.scheduled_retries("acme").await;
    let retry = |id: &str| {
        retries
            .iter()
            .map(|(f, _)| f)
            .find(|f| f["task_id"] == id)
            .unwrap()
            .clone()
    };
    let r = retry("meta-1");
    assert_eq!(r["attempt"], "2");
    for (k, v) in own {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k} in {r:?}");
    }
    let r = retry("meta-over");
    assert_eq!((0..16).filter(|i| r.contains_key(&names[*i])).count(), 16);
    assert!(!r.contains_key("f16") && !r.contains_key("bin"), "{r:?}");
    let dropped = &r["extra_dropped"];
    assert!(
        dropped.contains("\"bin\" (value is not UTF-8 text)")
            && dropped.contains("\"f16\" (over 16 fields)")
            && dropped.contains("\"f19\" (over 16 fields)"),
        "{dropped}"
    );

    // The retry runs (the lane entry written from the item) and fails again: dead-lettered
    // with the own fields, apart from the dead letter's own.
    env.make_retries_due("acme").await;
    let dls = wait_dead_letters(&env, "acme", 2).await;
    m.stop();
    let dl = by_task(&dls, "meta-1");
    assert_eq!(dl["class"], "rate_limited");
    assert_eq!(dl["attempt"], "2");
    let extra: Value = serde_json::from_str(&dl["extra"]).unwrap();
    for (k, v) in own {
        assert_eq!(extra[k], v, "{k} in {extra}");
    }
    let dl_over = by_task(&dls, "meta-over");
    let extra_over: serde_json::Map<String, Value> =
        serde_json::from_str(&dl_over["extra"]).unwrap();
    assert_eq!(extra_over.len(), 16);
    assert_eq!(&dl_over["extra_dropped"], dropped);

    // Operators see them in `dlq show`, text and JSON.
    let list = env.cli(&["dlq", "list", "--json"], &[]);
    assert_eq!(list.0, 0, "{}", list.2);
    let listed: Value = serde_json::from_str(&list.1).unwrap();
    let id = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["task_id"] == "meta-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, err) = env.cli(&["dlq", "show", &id, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["extra"]["tool_version"], "1.4.2");
    assert_eq!(
        shown["extra"]["log_url"],
        "https://logs.example/run/7?x=1&y=2"
    );
    assert_eq!(shown["class"], "rate_limited");
    let (code, out, err) = env.cli(&["dlq", "show", &id], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"tool_version\": \"1.4.2\"") && out.contains("\"severity\": \"high\""),
        "{out}"
    );

    // A replay puts them back on the lane entry, as flat fields again.
    let (code, _, err) = env.cli(
        &[
            "dlq",
            "replay",
            &id,
            "--local",
            "--reason",
            "retry it",
            "--operator",
            "ana",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let lane = env.lane_entries("acme").await;
    assert_eq!(lane.len(), 1);
    let replayed = &lane[0];
    assert_eq!(replayed["task_id"], "meta-1");
    assert_eq!(replayed["replayed_by"], "ana");
    for (k, v) in own {
        assert_eq!(
            replayed.get(k).map(String::as_str),
            Some(v),
            "{k} in {replayed:?}"
        );
    }
    assert!(!replayed.contains_key("extra"), "{replayed:?}");
}

#[tokio::test]
async fn entries_with_a_repeated_task_id_are_separate_tasks() {
    let env = TestEnv::new();
    let broker = env.broker().await;
    // Two identical entries (same task_id, same fields, same enqueued_at): when both are held
    // back by an open breaker, both wait in the retry schedule.
    let same: Vec<(&[u8], &[u8])> = vec![
        (b"task_id", b"dup"),
        (b"kind", b"k"),
        (b"payload", b"{}"),
        (b"enqueued_at", b"1000"),
    ];
    xadd(&env, "held", &same).await;
    xadd(&env, "held", &same).await;
    broker.ensure_group("held").await.unwrap();
    let mut raw = env.raw().await;
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("redrive")
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(format!("{}:{{held}}:lane", env.prefix))
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let entries: Vec<_> = redrive::testkit::streams(v)
        .unwrap()
        .into_iter()
        .flat_map(|(_, e)| e)
        .collect();
    assert_eq!(entries.len(), 2);
    let items: Vec<DeferItem> = entries
        .iter()
        .map(|e| DeferItem {
            entry_id: e.id.clone(),
            delay: Duration::from_secs(3600),
        })
        .collect();
    let out = broker.defer("held", "ghost", &items).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, Deferred::Due(_))), "{out:?}");
    assert_eq!(
        broker.retry_len("held").await.unwrap(),
        2,
        "two entries, two schedule items: neither overwrote the other"
    );
    assert_eq!(broker.lane_len("held").await.unwrap(), 0);
    env.make_retries_due("held").await;

    // Each entry runs, whoever else has its task_id; so do bare JSON scalars.
    for payload in [&b"42"[..], b"\"x\"", b"null", b"{}"] {
        xadd(
            &env,
            "acme",
            &[
                (b"task_id", b"same"),
                (b"kind", b"k"),
                (b"payload", payload),
            ],
        )
        .await;
    }
    let mut m = env.member("m1", &[]);
    eventually(LONG, "six attempts ran", || async {
        env.side_effects().len() >= 6
    })
    .await;
    env.wait_drained(&["acme", "held"], LONG).await;
    m.stop();
    assert_eq!(broker.retry_len("held").await.unwrap(), 0);
    let effects = env.side_effects();
    let ran = |tenant: &str, id: &str| {
        effects
            .iter()
            .filter(|(t, i, _, _)| t == tenant && i == id)
            .count()
    };
    assert_eq!(ran("acme", "same"), 4, "{effects:?}");
    assert_eq!(ran("held", "dup"), 2, "{effects:?}");
    assert!(env.dead_letters("acme").await.is_empty());
    assert!(env.dead_letters("held").await.is_empty());
}

#[tokio::test]
async fn enqueue_file_carries_own_fields_and_refuses_what_it_would_drop() {
    let env = TestEnv::new();
    let file = env.dir.join("ok.jsonl");
    std::fs::write(
        &file,
        "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":42,\"task_id\":\"t-1\",\"extra\":{\"tool_version\":\"1.4.2\",\"env\":\"prod\"}}\n",
    )
    .unwrap();
    let (code, _, err) = env.cli(&["enqueue", "--file", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let broker = env.broker().await;
    let f = &env.lane_entries("acme").await[0];
    assert_eq!(f["tool_version"], "1.4.2");
    assert_eq!(f["env"], "prod");
    assert_eq!(f["payload"], "42");

    let many: String = (0..17)
        .map(|i| format!("\"f{i}\":\"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let cases = [
        (
            format!("{{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{{}},\"extra\":{{{many}}}}}"),
            "17 extra fields; the limit is 16",
        ),
        (
            format!(
                "{{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{{}},\"extra\":{{\"a\":\"{}\"}}}}",
                "x".repeat(4096)
            ),
            "the limit is 4096",
        ),
        (
            "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{},\"extra\":{\"history\":\"[]\"}}"
                .to_owned(),
            "'history' is reserved",
        ),
        (
            "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{},\"extra\":{\"a b\":\"x\"}}"
                .to_owned(),
            "extra field name 'a b'",
        ),
        (
            "{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{},\"prompt_version\":\"PLACEHOLDER\"}"
                .replace("PLACEHOLDER", &"é".repeat(129)),
            "129 characters; the limit is 128",
        ),
    ];
    for (line, want) in cases {
        let bad = env.dir.join("bad.jsonl");
        std::fs::write(&bad, format!("{line}\n")).unwrap();
        let (code, _, err) = env.cli(&["enqueue", "--file", bad.to_str().unwrap()], &[]);
        assert_eq!(code, 65, "{want}: {err}");
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
    // 128 two-byte characters are within the limit.
    let fine = env.dir.join("fine.jsonl");
    std::fs::write(
        &fine,
        format!(
            "{{\"tenant\":\"acme\",\"kind\":\"k\",\"payload\":{{}},\"prompt_version\":\"{}\"}}\n",
            "é".repeat(128)
        ),
    )
    .unwrap();
    let (code, _, err) = env.cli(&["enqueue", "--file", fine.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(broker.lane_len("acme").await.unwrap(), 2);
}

/// `n` minimal tasks appended to `tenant`'s lane in one pipeline, then read by `consumer` (so
/// they are pending for it, as after a member's read). Returns the entry ids.
async fn read_many(env: &TestEnv, tenant: &str, consumer: &str, n: usize) -> Vec<String> {
    let broker = env.broker().await;
    broker.ensure_group(tenant).await.unwrap();
    let lane = format!("{}:{{{tenant}}}:lane", env.prefix);
    let mut raw = env.raw().await;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(&lane)
            .arg("*")
            .arg("task_id")
            .arg(format!("t{i}"))
            .arg("kind")
            .arg("k")
            .arg("payload")
            .arg("{}")
            .ignore();
    }
    let () = pipe.query_async(&mut raw).await.unwrap();
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("redrive")
        .arg(consumer)
        .arg("COUNT")
        .arg(n)
        .arg("STREAMS")
        .arg(&lane)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    let ids: Vec<String> = redrive::testkit::streams(v)
        .unwrap()
        .into_iter()
        .flat_map(|(_, e)| e)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), n);
    ids
}

/// One flush may carry up to `fleet.ack_batch` (5,000) entries of one tenant into one script
/// call: every batched script takes that many in one call (Lua's `unpack` stops at a few
/// thousand values, so the scripts write in chunks).
#[tokio::test]
async fn one_script_call_settles_a_full_batch_of_5000_entries() {
    const N: usize = 5_000;
    let env = TestEnv::new();
    let broker = env.broker().await;

    // Starts (start.lua), then retries (retry.lua: 2 × 5,000 ZADD arguments).
    let ids = read_many(&env, "retries", "ghost", N).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let starts = broker.start("retries", "ghost", &refs).await.unwrap();
    assert_eq!(starts.started.len(), N, "every entry's start recorded");
    let items: Vec<redrive::testkit::RetryItem> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            redrive::testkit::RetryItem::new(
                id,
                Duration::from_secs(3600),
                &[
                    ("task_id", format!("t{i}")),
                    ("kind", "k".to_owned()),
                    ("payload", "{}".to_owned()),
                    ("attempt", "2".to_owned()),
                    ("from_entry", id.clone()),
                ],
            )
            .unwrap()
        })
        .collect();
    let due = broker
        .schedule_retries("retries", "ghost", &items)
        .await
        .expect("one retry script call for 5,000 entries");
    assert_eq!(due.len(), N);
    assert!(due.iter().all(Option::is_some), "every entry was owned");
    assert_eq!(broker.retry_len("retries").await.unwrap(), N as u64);
    assert_eq!(broker.lane_len("retries").await.unwrap(), 0);
    assert_eq!(broker.pending_count("retries").await.unwrap(), 0);

    // Owner-checked acks (ack.lua), half of them counted as recovered.
    let ids = read_many(&env, "acks", "ghost", N).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        broker.ack("acks", "ghost", &refs, N / 2).await.unwrap(),
        N as u64
    );
    assert_eq!(broker.lane_len("acks").await.unwrap(), 0);
    assert_eq!(broker.pending_count("acks").await.unwrap(), 0);

    // Fast acks (fast_ack.lua), recovered ones first.
    let ids = read_many(&env, "fast", "ghost", N).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        broker.ack_unclaimable("fast", &refs, N / 2).await.unwrap(),
        N as u64
    );
    assert_eq!(broker.lane_len("fast").await.unwrap(), 0);
    assert_eq!(broker.pending_count("fast").await.unwrap(), 0);

    // A drain of the member's own pending entries (claim.lua) takes them all in one step.
    let ids = read_many(&env, "drain", "ghost", N).await;
    let step = broker
        .claim_own("drain", "ghost", "-", N, 10, &[])
        .await
        .expect("one claim script call for 5,000 entries");
    assert_eq!(step.claimed.len(), ids.len());
}
