//! No agent process outlives its member (PROTOCOL.md, "Processes"): a real member runs a
//! `pool` handler of two Python SDK processes (tests/agents/sdk_agent.py), each of which
//! starts a grandchild (`sleep 300`) of its own. Found in the process table (/proc): after
//! the member's SIGTERM nothing of the pool's process groups remains; after its SIGKILL the
//! pool processes die by their parent-death signal, and their grandchildren with them: the
//! Python SDK's pool turns its own parent-death signal into a SIGKILL of its process group.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agents::{
    alive, children, group_members, proc_stat, python_pool_command, repo, toml_str, wait_until,
};
use common::{Member, TestEnv};
use redrive::NewTask;
use serde_json::json;

const TENANT: &str = "acme";

/// A member whose `pool` handler (2 processes) runs the SDK agent with `GRANDCHILD_LOG`.
fn pool_member(env: &TestEnv, id: &str, log: &Path) -> Member {
    let command = python_pool_command("sdk_agent:agent");
    let toml = format!(
        "[[handlers]]\nkinds = [\"echo\"]\ntype = \"pool\"\ncommand = {command}\ncwd = {}\n\
         env = {{ GRANDCHILD_LOG = {}, CK_DIR = {}, PYTHONDONTWRITEBYTECODE = \"1\" }}\n\
         processes = 2\ntimeout_ms = 10000\n",
        toml_str(&repo().join("tests/agents").display().to_string()),
        toml_str(&log.display().to_string()),
        toml_str(&env.dir.display().to_string()),
    );
    let cfg = env.config_file(&format!("{id}.toml"), &toml);
    env.member(
        id,
        &[("REDRIVE_FLEET__HANDLER", ""), ("REDRIVE_CONFIG", &cfg)],
    )
}

/// Runs one task through `m` (which starts its pool), then returns the two pool processes and
/// their grandchildren, (agent pid, grandchild pid), checked against the process table.
async fn started(env: &TestEnv, m: &Member, log: &Path, task_id: &str) -> Vec<(u32, u32)> {
    env.enqueue_tasks(vec![
        NewTask::new(TENANT, "echo", json!({})).with_task_id(task_id)
    ])
    .await;
    env.wait_drained(&[TENANT], Duration::from_secs(30)).await;
    let mut pairs = Vec::new();
    wait_until(
        "two pool processes started",
        Duration::from_secs(10),
        || {
            pairs = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (a, g) = l.split_once(' ')?;
                    Some((a.parse().ok()?, g.parse().ok()?))
                })
                .collect();
            pairs.len() == 2
        },
    );
    let kids = children(m.pid());
    for &(agent, grandchild) in &pairs {
        assert!(
            kids.contains(&agent),
            "{agent} is the member's child: {kids:?}"
        );
        let (_, _, pgid) = proc_stat(agent).unwrap();
        assert_eq!(pgid, agent, "a pool process leads its own process group");
        let (_, parent, pgid) = proc_stat(grandchild).unwrap();
        assert_eq!(
            (parent, pgid),
            (agent, agent),
            "the grandchild is the agent's, in its group"
        );
    }
    pairs
}

#[tokio::test]
async fn a_member_stopped_by_sigterm_leaves_nothing_of_its_pool_behind() {
    let env = TestEnv::new();
    let log = env.dir.join("grandchildren");
    let mut m = pool_member(&env, "m1", &log);
    let pairs = started(&env, &m, &log, "o-term").await;
    assert!(m.stop().success(), "{}", m.log_text());
    // The stop closed stdin, sent SIGTERM to each group and SIGKILL after 2 s: the exit
    // waited for all of it.
    wait_until(
        "the pool's process groups gone",
        Duration::from_secs(5),
        || {
            pairs
                .iter()
                .all(|&(a, g)| !alive(a) && !alive(g) && group_members(a).is_empty())
        },
    );
}

#[tokio::test]
async fn a_member_killed_by_sigkill_takes_its_pool_processes_and_their_grandchildren() {
    let env = TestEnv::new();
    let log = env.dir.join("grandchildren");
    let mut m = pool_member(&env, "m1", &log);
    let pairs = started(&env, &m, &log, "o-kill").await;
    m.kill9();
    // The parent-death signal (SIGKILL) reaches the pool processes themselves.
    wait_until(
        "the pool processes killed with their member",
        Duration::from_secs(5),
        || pairs.iter().all(|&(a, _)| !alive(a)),
    );
    // A process the agent started is not reached by the fleet's parent-death signal, but the
    // Python SDK's pool ties its group to its parent (PROTOCOL.md, "Processes"): its own
    // parent-death signal SIGKILLs the group, grandchildren included.
    let grandchildren: Vec<u32> = pairs.iter().map(|&(_, g)| g).collect();
    wait_until(
        "the grandchildren killed with their group",
        Duration::from_secs(5),
        || grandchildren.iter().all(|g| !alive(*g)),
    );
}
