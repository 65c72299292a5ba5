//! `redrive enqueue`: one task from flags, or many from a JSON Lines file in one transaction;
//! duplicates (a task_id with a live record) are reported, not enqueued, and are no failure.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::print_json;
use crate::app::enqueue::parse_jsonl;
use crate::broker::Broker;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::records::TaskState;
use crate::task::NewTask;

/// `redrive enqueue` flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["file", "tenant"]))]
pub struct EnqueueArgs {
    /// JSON Lines file of tasks ("-" for standard input); each line like
    /// {"tenant":"acme","kind":"triage","payload":{...}}; blank lines are skipped. Every line is
    /// checked first, then the whole file is written in one transaction: all tasks or none
    /// (errors name the file's line; a full Redis writes nothing and says so, exit 73). A line
    /// whose task_id has a live record is reported as a duplicate and not enqueued; the
    /// others are (exit 0).
    #[arg(long, conflicts_with_all = ["tenant", "kind", "payload", "task_id"])]
    pub file: Option<PathBuf>,
    /// The task's tenant.
    #[arg(long, requires_all = ["kind", "payload"])]
    pub tenant: Option<String>,
    /// The task's kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// The task's payload, a JSON document.
    #[arg(long)]
    pub payload: Option<String>,
    /// Idempotency key (generated when absent).
    #[arg(long)]
    pub task_id: Option<String>,
    /// Payload schema version.
    #[arg(long)]
    pub schema_version: Option<u32>,
    /// Prompt version.
    #[arg(long)]
    pub prompt_version: Option<String>,
    /// Trace id.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Deadline, ms since the Unix epoch.
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Print the outcome as JSON: counts of enqueued tasks and duplicates, and each task
    /// (line, tenant, task_id, entry_id, and for a duplicate the live record's state).
    #[arg(long)]
    pub json: bool,
}

/// Runs `redrive enqueue` and prints the task and entry ids (or how many were enqueued), and
/// each duplicate: a task_id with a live record is not enqueued again (see CONTRACT.md, "Task
/// records and duplicates"). Duplicates are not failures: the exit code is 0 when every task
/// was either enqueued or a duplicate.
pub async fn run(args: EnqueueArgs, settings: &Settings) -> Result<()> {
    let tasks = enqueue_input(&args)?;
    let lines: Vec<usize> = tasks.iter().map(|(line, _)| *line).collect();
    let from_file = args.file.is_some();
    let broker = Broker::connect(settings).await?;
    let producer = Producer::new(broker, settings);
    let out = producer.enqueue_all(tasks).await?;
    let duplicates = out.iter().filter(|e| e.is_duplicate()).count();
    let enqueued = out.len() - duplicates;
    if args.json {
        print_json(&json!({
            "enqueued": enqueued,
            "duplicates": duplicates,
            "tasks": out.iter().zip(&lines).map(|(e, line)| {
                let mut v = json!({
                    "line": line,
                    "tenant": e.tenant,
                    "task_id": e.task_id,
                    "entry_id": e.entry_id,
                    "duplicate": e.is_duplicate(),
                });
                if let Some(d) = &e.duplicate {
                    v["state"] = json!(d.state.as_str());
                }
                v
            }).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for (e, line) in out.iter().zip(&lines) {
        if let Some(d) = &e.duplicate {
            let at = if from_file {
                format!("line {line}: ")
            } else {
                String::new()
            };
            println!("{at}{}", duplicate_line(&e.task_id, d.state, &e.entry_id));
        }
    }
    match (from_file, out.first()) {
        (false, Some(e)) if !e.is_duplicate() => println!("{} {}", e.task_id, e.entry_id),
        (false, _) => {}
        (true, _) if duplicates == 0 => println!("enqueued {enqueued} tasks"),
        (true, _) => println!(
            "enqueued {enqueued} tasks; {duplicates} {} not enqueued",
            if duplicates == 1 {
                "duplicate"
            } else {
                "duplicates"
            }
        ),
    }
    Ok(())
}

/// How a duplicate is shown: `t-123: duplicate — already done (entry 1700…-0), not enqueued`.
fn duplicate_line(task_id: &str, state: TaskState, entry: &str) -> String {
    let already = match state {
        TaskState::Queued => "queued",
        TaskState::Running => "running",
        TaskState::RetryScheduled => "scheduled for a retry",
        TaskState::Deferred => "deferred (its tenant's breaker is open)",
        TaskState::Done => "done",
        TaskState::DeadLettered => "dead-lettered",
        TaskState::Expired => "dead-lettered (its deadline passed)",
        TaskState::Replayed => "replayed (back in its lane)",
        TaskState::Resolved => "resolved",
        TaskState::Discarded => "discarded",
    };
    let entry = if entry.is_empty() {
        String::new()
    } else {
        format!(" (entry {entry})")
    };
    format!("{task_id}: duplicate — already {already}{entry}, not enqueued")
}

/// The tasks to enqueue, each with its 1-based line number in `--file` (1 for flags).
fn enqueue_input(args: &EnqueueArgs) -> Result<Vec<(usize, NewTask)>> {
    if let Some(path) = &args.file {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::io("reading tasks from standard input", e))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        };
        let tasks = parse_jsonl(&text)?;
        if tasks.is_empty() {
            return Err(Error::InvalidTask(format!(
                "{} holds no tasks",
                path.display()
            )));
        }
        return Ok(tasks);
    }
    let (Some(tenant), Some(kind), Some(payload)) = (&args.tenant, &args.kind, &args.payload)
    else {
        return Err(Error::Usage(
            "give --file, or --tenant, --kind and --payload".into(),
        ));
    };
    let payload: serde_json::Value = serde_json::from_str(payload)
        .map_err(|e| Error::InvalidTask(format!("--payload is not valid JSON: {e}")))?;
    let mut t = NewTask::new(tenant.clone(), kind.clone(), payload);
    t.task_id = args.task_id.clone();
    t.schema_version = args.schema_version;
    t.prompt_version = args.prompt_version.clone();
    t.trace_id = args.trace_id.clone();
    t.deadline = args.deadline;
    Ok(vec![(1, t)])
}
