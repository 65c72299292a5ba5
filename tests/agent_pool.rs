//! The `pool` and `exec` handlers against real child processes: small agents written by hand
//! against PROTOCOL.md's stdio framing (tests/agents/: Python for the pool, sh for exec, and a
//! player of conformance/stdio.json), driven directly through `Handler::handle` with a real
//! `TaskContext`. Orphans are looked for in the process table (/proc). Every wait is bounded.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redrive::testkit::{build_exec_handler, build_pool_handler, now_ms, Limits};
use redrive::{Handler, HandlerSpec, NewTask, Outcome, StepEvent, Task, TaskContext};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------ helpers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Python interpreter (not a version manager's shim script).
fn python() -> String {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by these tests (scripts/setup.sh)");
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(!path.is_empty(), "python3 did not name its executable");
        path
    })
    .clone()
}

fn pool_agent() -> Vec<String> {
    vec![
        python(),
        repo()
            .join("tests/agents/pool_agent.py")
            .display()
            .to_string(),
    ]
}

fn exec_agent(args: &[&str]) -> Vec<String> {
    let mut argv = vec![repo()
        .join("tests/agents/exec_agent.sh")
        .display()
        .to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

fn spec(type_name: &str, options: Value, timeout_ms: u64) -> HandlerSpec {
    HandlerSpec {
        index: 0,
        type_name: type_name.into(),
        kinds: vec!["*".into()],
        timeout: Duration::from_millis(timeout_ms),
        max_concurrent: 16,
        options: options.as_object().cloned().unwrap(),
    }
}

fn pool(options: Value, timeout_ms: u64) -> Arc<dyn Handler> {
    build_pool_handler(&spec("pool", options, timeout_ms)).unwrap()
}

fn exec(args: &[&str], timeout_ms: u64) -> Arc<dyn Handler> {
    build_exec_handler(&spec(
        "exec",
        json!({ "command": exec_agent(args) }),
        timeout_ms,
    ))
    .unwrap()
}

fn task(id: &str, payload: Value) -> Arc<Task> {
    Arc::new(
        NewTask::new("acme", "triage", payload)
            .with_task_id(id)
            .into_task(&Limits::default(), now_ms())
            .unwrap(),
    )
}

fn scripted(id: &str, actions: Value) -> Arc<Task> {
    task(id, json!({ "actions": actions }))
}

fn context(task: &Task) -> TaskContext {
    TaskContext::for_attempt("m1".into(), task.attempt, 3, &task.steps, None)
}

async fn run(handler: &Arc<dyn Handler>, task: Arc<Task>) -> (Outcome, TaskContext) {
    let ctx = context(&task);
    let outcome = tokio::time::timeout(Duration::from_secs(30), handler.handle(task, ctx.clone()))
        .await
        .expect("the attempt ended within 30 s");
    (outcome, ctx)
}

fn class(o: &Outcome) -> &str {
    match o {
        Outcome::Done => "ok",
        Outcome::Fail { class, .. } => class.as_str(),
        Outcome::Poison { .. } => "poison",
        Outcome::Error { .. } => "error",
    }
}

fn reason(o: &Outcome) -> String {
    match o {
        Outcome::Fail { reason, .. } => reason.clone(),
        Outcome::Error { message } => message.clone(),
        other => format!("{other:?}"),
    }
}

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "redrive-agent-pool-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pids written in a file (one or more, whitespace separated), once it has any.
async fn pids_in(path: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    eventually(&format!("pids in {path}"), Duration::from_secs(10), || {
        pids = std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        !pids.is_empty()
    })
    .await;
    pids
}

/// One process's (state, process group) from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let pgrp = f.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Live (not zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Waits (bounded) until no process of group `pgid` and none of `pids` is alive.
async fn gone(pgid: u32, pids: &[u32]) {
    eventually(
        &format!("process group {pgid} and {pids:?} gone"),
        Duration::from_secs(10),
        || group_members(pgid).is_empty() && pids.iter().all(|p| !alive(*p)),
    )
    .await;
}

/// The pid an `echo` reply reports.
fn echoed_pid(ctx: &TaskContext) -> u32 {
    ctx.final_output().unwrap()["pid"].as_u64().unwrap() as u32
}

// ------------------------------------------------------------------------------------ pool

#[tokio::test]
async fn a_pool_attempt_gets_the_request_and_its_reply() {
    let dir = Scratch::new();
    let starts = dir.path("starts");
    let h = pool(
        json!({ "command": pool_agent(), "env": { "AGENT_STARTS": starts } }),
        10_000,
    );
    // Building starts nothing (`config check` builds handlers too): the first attempt does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!Path::new(&starts).exists(), "a process started at build");
    let t = scripted("t-ok", json!([{ "op": "echo" }]));
    let (outcome, ctx) = run(&h, t.clone()).await;
    assert_eq!(outcome, Outcome::Done);
    let out = ctx.final_output().unwrap();
    let req = &out["request"];
    assert!(req["id"].as_str().unwrap().starts_with('r'), "{req}");
    assert_eq!(req["task"]["protocol"], 1);
    assert_eq!(req["task"]["task_id"], "t-ok");
    assert_eq!(req["task"]["tenant"], "acme");
    assert_eq!(req["task"]["kind"], "triage");
    assert_eq!(req["task"]["max_attempts"], 3);
    assert_eq!(req["task"]["payload"]["actions"][0]["op"], "echo");
    // The same warm process serves the next attempt.
    let pid = echoed_pid(&ctx);
    let (outcome, ctx) = run(&h, scripted("t-ok2", json!([{ "op": "echo" }]))).await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(echoed_pid(&ctx), pid);
    assert_eq!(pids_in(&starts).await, [pid]);
    h.shutdown().await;
    gone(pid, &[]).await;
}

#[tokio::test]
async fn attempts_are_multiplexed_on_one_process_and_answered_out_of_order() {
    let h = pool(json!({ "command": pool_agent(), "concurrency": 3 }), 10_000);
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut runs = Vec::new();
    for (i, secs) in [0.9, 0.5, 0.0].into_iter().enumerate() {
        let h = h.clone();
        let finished = finished.clone();
        let t = scripted(
            &format!("t-{i}"),
            json!([{ "op": "sleep", "seconds": secs }, { "op": "echo" }]),
        );
        runs.push(tokio::spawn(async move {
            let (o, ctx) = run(&h, t).await;
            finished.lock().unwrap().push(i);
            (i, o, ctx)
        }));
        // Sent in this order.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut pids = HashSet::new();
    for r in runs {
        let (i, o, ctx) = r.await.unwrap();
        assert_eq!(o, Outcome::Done, "attempt {i}");
        // Each attempt got its own reply.
        assert_eq!(ctx.final_output().unwrap()["task_id"], format!("t-{i}"));
        pids.insert(echoed_pid(&ctx));
    }
    assert_eq!(pids.len(), 1, "one process served all three: {pids:?}");
    assert_eq!(
        *finished.lock().unwrap(),
        [2, 1, 0],
        "answered out of order"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn events_are_applied_to_the_context_as_they_arrive() {
    let dir = Scratch::new();
    let go = dir.path("go");
    let h = pool(json!({ "command": pool_agent() }), 10_000);
    let t = scripted(
        "t-steps",
        json!([
            { "op": "step_started", "name": "draft", "side_effect": false },
            { "op": "step_done", "name": "draft", "output": "Dear u1" },
            { "op": "step_started", "name": "send", "side_effect": true },
            { "op": "progress", "fields": { "message": "sending", "percent": 50 } },
            { "op": "wait_file", "path": go },
            { "op": "step_done", "name": "send", "output": { "message_id": "m-1" } },
            { "op": "reply", "fields": { "status": "ok", "output": { "sent": true } } }
        ]),
    );
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let ctx = TaskContext::for_attempt("m1".into(), 1, 3, &[], Some(sink));
    let running = tokio::spawn({
        let h = h.clone();
        let ctx = ctx.clone();
        async move { h.handle(t, ctx).await }
    });
    // The step is in the context (and went to the sink) while the agent still waits.
    eventually("step 'draft' recorded", Duration::from_secs(10), || {
        ctx.progress()
            .steps
            .iter()
            .any(|s| s.name == "draft" && s.done)
    })
    .await;
    eventually("the open side effect", Duration::from_secs(10), || {
        ctx.open_side_effect().as_deref() == Some("send") && ctx.progress().partial_output.is_some()
    })
    .await;
    assert!(!running.is_finished());
    match events.try_recv().map(|e| *e) {
        Ok(StepEvent::Done(s)) => {
            assert_eq!((s.name.as_str(), &s.output), ("draft", &json!("Dear u1")))
        }
        other => panic!("first sink event: {other:?}"),
    }
    assert!(matches!(events.try_recv().map(|e| *e), Ok(StepEvent::Started(s)) if s.name == "send"));
    std::fs::write(&go, "").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(ctx.final_output(), Some(json!({ "sent": true })));
    assert_eq!(ctx.open_side_effect(), None);
    assert_eq!(
        ctx.progress().partial_output,
        Some(json!({ "message": "sending", "percent": 50 }))
    );
    assert!(matches!(events.try_recv().map(|e| *e), Ok(StepEvent::Done(s)) if s.name == "send"));
    h.shutdown().await;
}

#[tokio::test]
async fn garbage_on_stdout_fails_the_attempt_and_replaces_the_process() {
    let h = pool(json!({ "command": pool_agent() }), 10_000);
    let (o, ctx) = run(&h, scripted("t-1", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done);
    let first = echoed_pid(&ctx);
    let (o, _) = run(
        &h,
        scripted(
            "t-garbage",
            json!([{ "op": "raw", "line": "Traceback (most recent call last):" }]),
        ),
    )
    .await;
    assert_eq!(class(&o), "agent_crashed", "{o:?}");
    assert!(reason(&o).contains("broke the stdio protocol"), "{o:?}");
    assert!(reason(&o).contains("Traceback"), "{o:?}");
    gone(first, &[]).await;
    // A new process takes the next attempt.
    let (o, ctx) = run(&h, scripted("t-2", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    assert_ne!(echoed_pid(&ctx), first);
    h.shutdown().await;
}

#[tokio::test]
async fn a_process_that_dies_mid_task_fails_its_attempt_and_is_restarted() {
    let dir = Scratch::new();
    let starts = dir.path("starts");
    let h = pool(
        json!({ "command": pool_agent(), "env": { "AGENT_STARTS": starts } }),
        10_000,
    );
    let (o, _) = run(
        &h,
        scripted(
            "t-dies",
            json!([
                { "op": "step_done", "name": "fetch", "output": 1 },
                { "op": "stderr", "text": "about to die" },
                { "op": "sleep", "seconds": 0.1 },
                { "op": "exit", "code": 3 }
            ]),
        ),
    )
    .await;
    assert_eq!(class(&o), "agent_crashed", "{o:?}");
    let why = reason(&o);
    assert!(why.contains("exited with code 3"), "{why}");
    assert!(why.contains("about to die"), "the stderr tail: {why}");
    // Restarted (backoff 100 ms): the next attempt succeeds in a new process.
    let (o, ctx) = run(&h, scripted("t-next", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    let pids = pids_in(&starts).await;
    assert_eq!(pids.len(), 2, "started twice: {pids:?}");
    assert_eq!(echoed_pid(&ctx), pids[1]);
    h.shutdown().await;
}

#[tokio::test]
async fn an_attempt_is_not_sent_to_a_process_that_has_just_exited() {
    // An agent that recycles itself after a task (exits 0 once it answered): the next
    // attempt, arriving while the exited process's slot is being torn down, waits for the
    // restart instead of being written into a process that will never answer.
    let dir = Scratch::new();
    let starts = dir.path("starts");
    let h = pool(
        json!({ "command": pool_agent(), "env": { "AGENT_STARTS": starts } }),
        10_000,
    );
    let (o, _) = run(
        &h,
        scripted(
            "t-recycles",
            json!([
                { "op": "echo" },
                // Holds stdout open after the exit, as a tool the agent started may: the
                // member sees the exit before the end of stdout and tears the slot down slowly.
                { "op": "grandchild", "path": dir.path("grandchild"), "keep_stdout": true },
                { "op": "sleep", "seconds": 0.05 },
                { "op": "exit", "code": 0 }
            ]),
        ),
    )
    .await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (o, ctx) = run(&h, scripted("t-after", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "not charged to the exited process: {o:?}");
    let pids = pids_in(&starts).await;
    assert_eq!(pids.len(), 2, "started twice: {pids:?}");
    assert_eq!(echoed_pid(&ctx), pids[1], "ran on the restarted process");
    h.shutdown().await;
}

#[tokio::test]
async fn a_hang_is_killed_at_the_timeout_with_its_whole_group() {
    let dir = Scratch::new();
    let (me, grandchild) = (dir.path("me"), dir.path("grandchild"));
    let h = pool(json!({ "command": pool_agent() }), 800);
    let (o, _) = run(
        &h,
        scripted(
            "t-hang",
            json!([
                { "op": "touch", "path": me },
                { "op": "grandchild", "path": grandchild },
                { "op": "hang" }
            ]),
        ),
    )
    .await;
    assert_eq!(class(&o), "timeout", "{o:?}");
    assert!(reason(&o).contains("timeout_ms = 800"), "{o:?}");
    let agent = pids_in(&me).await[0];
    let grand = pids_in(&grandchild).await[0];
    // No orphan: neither the agent nor what it started is left in the process table.
    gone(agent, &[agent, grand]).await;
    // The process was replaced.
    let (o, ctx) = run(&h, scripted("t-after", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    assert_ne!(echoed_pid(&ctx), agent);
    h.shutdown().await;
}

#[tokio::test]
async fn attempts_in_flight_beside_a_timed_out_one_fail_as_collateral() {
    let h = pool(json!({ "command": pool_agent(), "concurrency": 2 }), 1_000);
    let hung = tokio::spawn({
        let h = h.clone();
        async move {
            run(&h, scripted("t-hang", json!([{ "op": "hang" }])))
                .await
                .0
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (bystander, _) = run(
        &h,
        scripted(
            "t-slow",
            json!([{ "op": "sleep", "seconds": 5 }, { "op": "echo" }]),
        ),
    )
    .await;
    let hung = hung.await.unwrap();
    assert_eq!(class(&hung), "timeout", "{hung:?}");
    assert_eq!(class(&bystander), "upstream_unavailable", "{bystander:?}");
    assert!(
        reason(&bystander).contains("another attempt"),
        "{bystander:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_line_over_the_limit_breaks_the_protocol() {
    let h = pool(
        json!({ "command": pool_agent(), "max_reply_bytes": 1024 }),
        10_000,
    );
    let big = "x".repeat(4096);
    let (o, _) = run(
        &h,
        scripted(
            "t-big",
            json!([{ "op": "reply", "fields": { "status": "ok", "output": big } }]),
        ),
    )
    .await;
    assert_eq!(class(&o), "agent_crashed", "{o:?}");
    assert!(reason(&o).contains("max_reply_bytes = 1024"), "{o:?}");
    let (o, _) = run(&h, scripted("t-small", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn blank_lines_are_ignored_and_lines_for_unknown_ids_break_the_protocol() {
    let h = pool(json!({ "command": pool_agent() }), 10_000);
    let (o, _) = run(
        &h,
        scripted(
            "t-blank",
            json!([{ "op": "raw", "line": "   " }, { "op": "echo" }]),
        ),
    )
    .await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    let (o, _) = run(
        &h,
        scripted(
            "t-other",
            json!([{ "op": "raw", "line": "{\"id\":\"r999\",\"status\":\"ok\"}" }]),
        ),
    )
    .await;
    assert_eq!(class(&o), "agent_crashed", "{o:?}");
    assert!(reason(&o).contains("unknown request id \"r999\""), "{o:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_attempts_as_upstream_unavailable() {
    let dir = Scratch::new();
    // The file exists and is executable, but its interpreter does not: every start fails.
    let script = dir.path("agent");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let h = pool(json!({ "command": [script] }), 30_000);
    let started = Instant::now();
    let (o, _) = run(&h, scripted("t-1", json!([{ "op": "echo" }]))).await;
    assert_eq!(class(&o), "upstream_unavailable", "{o:?}");
    assert!(reason(&o).contains("cannot start"), "{o:?}");
    assert!(reason(&o).contains("handlers[0] (type pool)"), "{o:?}");
    // It waited for the first quick restarts only, not for the attempt's timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    h.shutdown().await;
}

#[test]
fn bad_options_are_config_errors_naming_the_key() {
    let cases = [
        ("pool", json!({}), "handlers[0].command"),
        ("pool", json!({ "command": [] }), "handlers[0].command"),
        (
            "pool",
            json!({ "command": "python3 agent.py" }),
            "handlers[0].command",
        ),
        (
            "pool",
            json!({ "command": ["no-such-agent-binary-xyz"] }),
            "handlers[0].command",
        ),
        (
            "pool",
            json!({ "command": ["/no/such/agent"] }),
            "handlers[0].command",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "processes": 0 }),
            "handlers[0].processes",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "concurrency": "2" }),
            "handlers[0].concurrency",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "max_reply_bytes": 1 }),
            "handlers[0].max_reply_bytes",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "env": { "A": 1 } }),
            "handlers[0].env",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "env": ["A=1"] }),
            "handlers[0].env",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "cwd": "/no/such/dir" }),
            "handlers[0].cwd",
        ),
        (
            "pool",
            json!({ "command": ["sh"], "procs": 2 }),
            "handlers[0].procs",
        ),
        (
            "exec",
            json!({ "command": ["sh"], "processes": 2 }),
            "handlers[0].processes",
        ),
        ("exec", json!({ "command": [""] }), "handlers[0].command"),
    ];
    for (type_name, options, key) in cases {
        let s = spec(type_name, options.clone(), 1_000);
        let built = if type_name == "pool" {
            build_pool_handler(&s)
        } else {
            build_exec_handler(&s)
        };
        match built {
            Err(redrive::Error::Config(msg)) => {
                assert!(msg.contains(key), "{options}: {msg}");
                assert!(msg.contains(&format!("(type {type_name})")), "{msg}");
            }
            Err(other) => panic!("{options}: not a config error: {other}"),
            Ok(_) => panic!("{options}: accepted"),
        }
    }
    // A program on PATH (through the entry's own PATH too) and a working directory.
    let ok = spec(
        "pool",
        json!({ "command": ["sh", "-c", "cat"], "env": { "PATH": "/bin:/usr/bin" }, "cwd": "/" }),
        1_000,
    );
    assert!(build_pool_handler(&ok).is_ok());
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let dir = Scratch::new();
    let starts = dir.path("starts");
    let h = pool(
        json!({ "command": pool_agent(), "processes": 2, "env": { "AGENT_STARTS": starts } }),
        10_000,
    );
    // Each process starts a grandchild that ignores SIGTERM.
    let mut grandchildren = Vec::new();
    let mut agents = HashSet::new();
    for i in 0..2 {
        let g = dir.path(&format!("g{i}"));
        let attempts: Vec<_> = (0..2)
            .map(|j| {
                let h = h.clone();
                let t = scripted(
                    &format!("t-{i}-{j}"),
                    if j == 0 {
                        json!([{ "op": "grandchild", "path": g, "ignore_term": true }, { "op": "sleep", "seconds": 0.3 }, { "op": "echo" }])
                    } else {
                        json!([{ "op": "sleep", "seconds": 0.3 }, { "op": "echo" }])
                    },
                );
                tokio::spawn(async move { run(&h, t).await })
            })
            .collect();
        for a in attempts {
            let (o, ctx) = a.await.unwrap();
            assert_eq!(o, Outcome::Done);
            agents.insert(echoed_pid(&ctx));
        }
        grandchildren.push(pids_in(&g).await[0]);
    }
    assert_eq!(agents.len(), 2, "both processes served: {agents:?}");
    for g in &grandchildren {
        assert!(alive(*g));
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), h.shutdown())
        .await
        .expect("shutdown ends");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    for a in &agents {
        gone(*a, &grandchildren).await;
    }
    // Closed: no new attempt is taken.
    let (o, _) = run(&h, scripted("t-late", json!([{ "op": "echo" }]))).await;
    assert_eq!(class(&o), "upstream_unavailable", "{o:?}");
}

#[tokio::test]
async fn dropping_the_handler_kills_its_processes() {
    let h = pool(json!({ "command": pool_agent() }), 10_000);
    let (o, ctx) = run(&h, scripted("t-1", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done);
    let pid = echoed_pid(&ctx);
    drop(h);
    gone(pid, &[]).await;
}

#[tokio::test]
async fn an_abandoned_attempt_kills_its_process() {
    let dir = Scratch::new();
    let me = dir.path("me");
    let h = pool(json!({ "command": pool_agent() }), 60_000);
    let t = scripted(
        "t-abandoned",
        json!([{ "op": "touch", "path": me }, { "op": "hang" }]),
    );
    // The fleet stops waiting (its own timeout, the entry taken over): the future is dropped.
    let dropped =
        tokio::time::timeout(Duration::from_millis(800), h.handle(t.clone(), context(&t))).await;
    assert!(dropped.is_err());
    let agent = pids_in(&me).await[0];
    gone(agent, &[agent]).await;
    let (o, _) = run(&h, scripted("t-next", json!([{ "op": "echo" }]))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    h.shutdown().await;
}

/// Log events of the agent handlers: their fields as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("redrive::agents") {
            return;
        }
        let mut fields = BTreeMap::new();
        fields.insert("target".into(), event.metadata().target().to_owned());
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

/// The value of series `name{labels…}` in a Prometheus text rendering.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Stderr lines reach the member's log bounded to 4 KiB, tagged with the process and, with one
/// attempt in flight, the task; the telemetry counts lines, processes, restarts and outcomes.
#[tokio::test]
async fn stderr_is_forwarded_bounded_and_tagged_and_processes_are_counted() {
    use tracing_subscriber::layer::SubscriberExt;
    let metrics = redrive::testkit::prometheus().unwrap();
    let captured = Captured::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let h = build_pool_handler(&HandlerSpec {
        index: 3,
        ..spec(
            "pool",
            json!({ "command": pool_agent(), "processes": 2 }),
            10_000,
        )
    })
    .unwrap();
    let long = "y".repeat(10_000);
    let (o, ctx) = run(
        &h,
        scripted(
            "t-log",
            json!([
                { "op": "stderr", "text": long },
                { "op": "stderr", "text": "a short line" },
                { "op": "sleep", "seconds": 0.2 },
                { "op": "echo" }
            ]),
        ),
    )
    .await;
    assert_eq!(o, Outcome::Done);
    let pid = echoed_pid(&ctx).to_string();
    let lines = || -> Vec<BTreeMap<String, String>> {
        captured
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.contains_key("line"))
            .cloned()
            .collect()
    };
    eventually("both stderr lines logged", Duration::from_secs(10), || {
        lines().len() >= 2
    })
    .await;
    let lines = lines();
    assert_eq!(lines[0]["line"].len(), 4096, "bounded to 4 KiB");
    assert!(lines[0]["line"].bytes().all(|b| b == b'y'));
    assert_eq!(lines[1]["line"], "a short line");
    for l in &lines {
        assert_eq!(l["target"], "redrive::agents::pool");
        assert_eq!(l["task_id"], "t-log", "tagged with the task: {l:?}");
        assert_eq!(l["tenant"], "acme");
        assert_eq!(l["attempt"], "1");
        assert_eq!(l["handler"], "3:pool");
        assert_eq!(l["pid"], pid);
        assert!(l.contains_key("process"));
    }
    // A crash is a restart (reason exit).
    let (o, _) = run(
        &h,
        scripted("t-crash", json!([{ "op": "exit", "code": 1 }])),
    )
    .await;
    assert_eq!(class(&o), "agent_crashed");
    let h3 = [("handler", "3:pool")];
    let text = || metrics.render();
    eventually("two processes again", Duration::from_secs(10), || {
        series(&text(), "redrive_agent_processes", &h3) == Some(2.0)
            && series(
                &text(),
                "redrive_agent_restarts_total",
                &[("handler", "3:pool"), ("reason", "exit")],
            ) == Some(1.0)
    })
    .await;
    let t = text();
    assert_eq!(
        series(&t, "redrive_agent_stderr_lines_total", &h3),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "redrive_agent_attempts_total",
            &[("handler", "3:pool"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &t,
            "redrive_agent_attempts_total",
            &[("handler", "3:pool"), ("outcome", "agent_crashed")]
        ),
        Some(1.0)
    );
    // Registered at 0 before the first event.
    assert_eq!(
        series(
            &t,
            "redrive_agent_restarts_total",
            &[("handler", "3:pool"), ("reason", "timeout")]
        ),
        Some(0.0)
    );
    let ended = captured.0.lock().unwrap().iter().any(|f| {
        f.get("reason").map(String::as_str) == Some("exit") && f.contains_key("restart_in_ms")
    });
    assert!(
        ended,
        "the end of the crashed process is logged with its restart delay"
    );
    h.shutdown().await;
    assert_eq!(
        series(&metrics.render(), "redrive_agent_processes", &h3),
        Some(0.0)
    );
}

// ------------------------------------------------------------------------------------ exec

#[tokio::test]
async fn exec_exit_codes_decide_without_a_reply() {
    let cases: [(&[&str], &str, &str); 5] = [
        (&["exit", "0"], "ok", ""),
        (&["exit", "75"], "upstream_unavailable", "EX_TEMPFAIL"),
        (&["exit", "1"], "invalid_input", "exited with code 1"),
        (&["exit", "2"], "invalid_input", "exited with code 2"),
        (&["kill"], "agent_crashed", "signal 9 (SIGKILL)"),
    ];
    for (args, want, says) in cases {
        let h = exec(args, 10_000);
        let (o, ctx) = run(&h, task("t-exec", json!({}))).await;
        assert_eq!(class(&o), want, "{args:?}: {o:?}");
        if want == "ok" {
            assert_eq!(ctx.final_output(), Some(Value::Null));
        } else {
            assert!(reason(&o).contains(says), "{args:?}: {o:?}");
        }
        if args[0] == "exit" && args[1] != "0" {
            assert!(
                reason(&o).contains(&format!("failing on purpose with {}", args[1])),
                "the stderr tail is in the reason: {o:?}"
            );
        }
    }
}

#[tokio::test]
async fn exec_a_reply_wins_over_the_exit_code() {
    let h = exec(
        &[
            "reply",
            r#""status":"fail","class":"rate_limited","error":"slow","retry_after_ms":250"#,
            "1",
        ],
        10_000,
    );
    let (o, _) = run(&h, task("t-1", json!({}))).await;
    assert_eq!(
        o,
        Outcome::retry_after(
            redrive::FailureClass::RateLimited,
            "slow",
            Duration::from_millis(250)
        )
    );
    let h = exec(&["reply", r#""status":"ok","output":{"n":3}"#, "3"], 10_000);
    let (o, ctx) = run(&h, task("t-2", json!({}))).await;
    assert_eq!(o, Outcome::Done);
    assert_eq!(ctx.final_output(), Some(json!({ "n": 3 })));
}

#[tokio::test]
async fn exec_reads_the_request_until_stdin_closes_and_applies_events() {
    let h = exec(&["echo"], 10_000);
    let (o, ctx) = run(&h, task("t-echo", json!({ "text": "line one\nline two" }))).await;
    assert_eq!(o, Outcome::Done, "{o:?}");
    let req = ctx.final_output().unwrap();
    assert_eq!(req["task"]["task_id"], "t-echo");
    assert_eq!(req["task"]["payload"]["text"], "line one\nline two");

    let dir = Scratch::new();
    let go = dir.path("go");
    let h = exec(&["steps", &go], 10_000);
    let t = task("t-steps", json!({}));
    let ctx = context(&t);
    let running = tokio::spawn({
        let (h, ctx) = (h.clone(), ctx.clone());
        async move { h.handle(t, ctx).await }
    });
    eventually(
        "the step recorded before the reply",
        Duration::from_secs(10),
        || {
            ctx.progress()
                .steps
                .iter()
                .any(|s| s.name == "draft" && s.done)
        },
    )
    .await;
    assert!(!running.is_finished());
    std::fs::write(&go, "").unwrap();
    let o = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o, Outcome::Done);
    assert_eq!(ctx.final_output(), Some(json!({ "sent": true })));
}

#[tokio::test]
async fn exec_garbage_on_stdout_is_a_protocol_break() {
    let h = exec(&["garbage"], 10_000);
    let (o, _) = run(&h, task("t-1", json!({}))).await;
    assert_eq!(class(&o), "agent_crashed", "{o:?}");
    assert!(reason(&o).contains("hello from a script"), "{o:?}");
}

#[tokio::test]
async fn exec_timeout_kills_the_group() {
    let dir = Scratch::new();
    let pids = dir.path("pids");
    let h = exec(&["hang", &pids], 800);
    let (o, _) = run(&h, task("t-hang", json!({}))).await;
    assert_eq!(class(&o), "timeout", "{o:?}");
    let found = pids_in(&pids).await;
    let (grand, agent) = (found[0], found[1]);
    gone(agent, &[agent, grand]).await;
}

#[tokio::test]
async fn exec_shutdown_stops_running_attempts() {
    let dir = Scratch::new();
    let pids = dir.path("pids");
    let h = exec(&["hang", &pids], 60_000);
    let running = tokio::spawn({
        let h = h.clone();
        async move { run(&h, task("t-hang", json!({}))).await.0 }
    });
    let found = pids_in(&pids).await;
    tokio::time::timeout(Duration::from_secs(10), h.shutdown())
        .await
        .unwrap();
    gone(found[1], &found).await;
    let o = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        class(&o),
        "upstream_unavailable",
        "stopped by the shutdown: {o:?}"
    );
    assert!(reason(&o).contains("shut down"), "{o:?}");
    let (o, _) = run(&h, task("t-late", json!({}))).await;
    assert_eq!(class(&o), "upstream_unavailable", "{o:?}");
}

// ------------------------------------------------------------------------------------ vectors

fn stdio_vectors(transport: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("conformance/stdio.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[transport].as_array().unwrap().clone()
}

/// Checks a concluded outcome (as the executor concludes it) against a vector's `expect`.
fn check_vector(case: &Value, outcome: &Outcome, ctx: &TaskContext) {
    let name = case["name"].as_str().unwrap();
    let expect = &case["expect"];
    let concluded = ctx.conclude(outcome.clone());
    match expect["outcome"].as_str().unwrap() {
        "ok" => {
            assert_eq!(concluded, Outcome::Done, "{name}");
            assert_eq!(
                ctx.final_output().unwrap_or(Value::Null),
                expect["output"],
                "{name}"
            );
        }
        _ => assert_eq!(
            class(&concluded),
            expect["class"].as_str().unwrap(),
            "{name}: {concluded:?}"
        ),
    }
    if let Some(ms) = expect["retry_after_ms"].as_u64() {
        assert!(
            matches!(&concluded, Outcome::Fail { retry_after: Some(d), .. } if d.as_millis() as u64 == ms),
            "{name}: {concluded:?}"
        );
    }
    if let Some(steps) = expect["steps"].as_array() {
        let got: Vec<Value> = ctx
            .progress()
            .steps
            .iter()
            .filter(|s| s.done)
            .map(|s| json!({ "name": s.name, "output": s.output, "side_effect": s.side_effect }))
            .collect();
        assert_eq!(&got, steps, "{name}");
    }
    if let Some(step) = expect["open_step"].as_str() {
        assert_eq!(ctx.open_side_effect().as_deref(), Some(step), "{name}");
    }
}

fn vector_agent(transport: &str, name: &str) -> Vec<String> {
    vec![
        python(),
        repo()
            .join("tests/agents/vector_agent.py")
            .display()
            .to_string(),
        transport.into(),
        name.into(),
    ]
}

#[tokio::test]
async fn pool_conformance_vectors() {
    let cases = stdio_vectors("pool");
    assert!(cases.len() >= 7);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let h = pool(json!({ "command": vector_agent("pool", name) }), 10_000);
        let (o, ctx) = run(&h, task("t-vec", json!({ "n": 1 }))).await;
        check_vector(case, &o, &ctx);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn exec_conformance_vectors() {
    let cases = stdio_vectors("exec");
    assert!(cases.len() >= 8);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let h = build_exec_handler(&spec(
            "exec",
            json!({ "command": vector_agent("exec", name) }),
            10_000,
        ))
        .unwrap();
        let (o, ctx) = run(&h, task("t-vec", json!({ "n": 1 }))).await;
        check_vector(case, &o, &ctx);
    }
}

/// An agent gets the member's environment without the member's Redis URL, its other
/// `REDRIVE_*` settings and the variable its Redis password came from (`redis.password_env`);
/// what the route's `env` sets explicitly, it gets.
#[tokio::test]
async fn agents_do_not_inherit_the_members_redis_credentials() {
    // nextest runs each test in its own process: these variables stay in this one.
    std::env::set_var("REDRIVE_REDIS_URL", "redis://:hunter2@127.0.0.1:9/");
    std::env::set_var("AGENT_TEST_REDIS_PASSWORD", "hunter2");
    std::env::set_var("AGENT_TEST_PLAIN", "kept");
    let mut raw = redrive::RawConfig::defaults().unwrap();
    // A server to use the password with (nothing connects to it here).
    raw.redis.url = "redis://127.0.0.1:9/".into();
    raw.redis.password_env = "AGENT_TEST_REDIS_PASSWORD".into();
    redrive::Settings::from_raw(raw).unwrap();
    let names = [
        "env",
        "REDRIVE_REDIS_URL",
        "AGENT_TEST_REDIS_PASSWORD",
        "AGENT_TEST_PLAIN",
        "REDRIVE_GIVEN",
    ];
    let h = build_exec_handler(&spec(
        "exec",
        json!({ "command": exec_agent(&names), "env": { "REDRIVE_GIVEN": "by-route" } }),
        10_000,
    ))
    .unwrap();
    let (outcome, ctx) = run(&h, task("t-env", json!({}))).await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        ctx.final_output().unwrap(),
        json!({
            "REDRIVE_REDIS_URL": null,
            "AGENT_TEST_REDIS_PASSWORD": null,
            "AGENT_TEST_PLAIN": "kept",
            "REDRIVE_GIVEN": "by-route",
        })
    );
}
