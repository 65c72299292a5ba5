//! `redrive enqueue`: one task from flags, or many from a JSON Lines file in one transaction.

use std::path::PathBuf;

use clap::Args;

use crate::app::enqueue::parse_jsonl;
use crate::broker::Broker;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::task::NewTask;

/// `redrive enqueue` flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["file", "tenant"]))]
pub struct EnqueueArgs {
    /// JSON Lines file of tasks ("-" for standard input); each line like
    /// {"tenant":"acme","kind":"triage","payload":{...}}; blank lines are skipped. Every line is
    /// checked first, then the whole file is written in one transaction: all tasks or none
    /// (errors name the file's line; a full Redis writes nothing and says so, exit 73).
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
}

/// Runs `redrive enqueue` and prints the task and entry ids (or how many were enqueued).
pub async fn run(args: EnqueueArgs, settings: &Settings) -> Result<()> {
    let tasks = enqueue_input(&args)?;
    let broker = Broker::connect(settings).await?;
    let producer = Producer::new(broker, settings);
    let n = tasks.len();
    let out = producer.enqueue_all(tasks).await?;
    if n == 1 && out.len() == 1 {
        println!("{} {}", out[0].task_id, out[0].entry_id);
    } else {
        println!("enqueued {n} tasks");
    }
    Ok(())
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
