//! `redrive task …`: one task by id (`show`: its record, or where it is when it has none) and
//! a tenant's tasks by their records (`list`: newest first (by when the record was created: its enqueue), filtered, a page at a
//! time). Reads only. Bad input exits 64 before anything is read.

use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{connect, print_json, usage};
use crate::admin::lookup::{self, Lookup};
use crate::admin::time::parse_time;
use crate::app::view;
use crate::broker::{TaskCursor, TaskFilter};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::records::TaskState;

/// `redrive task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// What happened to one task: its state, attempts, times, member, last failure, dead
    /// letter, replay links, output and every run. Without a record (a raw XADD), where it is.
    Show(ShowArgs),
    /// A tenant's tasks by their records, newest first (by when the record was created: its enqueue), a page at a time.
    List(ListArgs),
    /// Waits for one task to finish and prints its record: exit 0 when it is done, 1 when it
    /// finished otherwise (dead-lettered, expired, resolved, discarded), 75 on timeout.
    Wait(WaitArgs),
}

/// `task wait`
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The task: TENANT/TASK_ID.
    pub id: String,
    /// How long to wait, seconds (0 to 86400; 0 reads the record once).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `task show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The task: TENANT/TASK_ID.
    pub id: String,
    /// For a task without a record: how many entries of each place (lane, retry schedule,
    /// deferred set, dead letters) to read looking for it.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub scan_limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `task list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// Only tasks in this state (queued, running, retry_scheduled, deferred, done,
    /// dead_lettered, replayed, resolved, discarded, expired).
    #[arg(long)]
    pub state: Option<String>,
    /// Only tasks of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only tasks whose record was created (enqueued) at or after: a duration ago (2h), an RFC 3339 time, or
    /// epoch ms.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Continue after this task (the `next cursor` a previous page printed).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Tasks per page (1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The most index entries one `task list` page reads (a selective filter may fill a page
/// slowly; the page then ends early with a cursor to go on).
const LIST_SCAN_MAX: usize = 100_000;

/// Runs `redrive task …`.
pub async fn run(cmd: TaskCommand, settings: &Settings) -> Result<()> {
    match cmd {
        TaskCommand::Show(a) => show(a, settings).await,
        TaskCommand::List(a) => list(a, settings).await,
        TaskCommand::Wait(a) => wait(a, settings).await,
    }
}

/// Splits `TENANT/TASK_ID` (a tenant has no `/`; a task id may).
fn parse_task_address(text: &str) -> Result<(String, String)> {
    let (tenant, id) = text
        .split_once('/')
        .ok_or_else(|| usage(format!("'{text}' is not TENANT/TASK_ID (e.g. acme/t-123)")))?;
    crate::task::validate_tenant(tenant).map_err(|e| usage(format!("tenant: {e}")))?;
    crate::task::validate_task_id(id).map_err(|e| usage(format!("task id: {e}")))?;
    Ok((tenant.to_owned(), id.to_owned()))
}

async fn show(a: ShowArgs, settings: &Settings) -> Result<()> {
    let (tenant, id) = parse_task_address(&a.id)?;
    if a.scan_limit == 0 || a.scan_limit > 10_000_000 {
        return Err(usage("--scan-limit must be between 1 and 10000000"));
    }
    let b = connect(settings).await?;
    let found = lookup::find(&b, &tenant, &id, a.scan_limit).await?;
    let now = b.server_time_ms().await?;
    match &found {
        Lookup::Record(r) if a.json => print_json(&view::task_json(&tenant, &id, r)),
        Lookup::Record(r) => print!("{}", view::task_text(&tenant, &id, r, now)),
        Lookup::Located(l) | Lookup::NotFound(l) if a.json => {
            print_json(&view::located_json(&tenant, &id, l))
        }
        Lookup::Located(l) | Lookup::NotFound(l) => {
            print!("{}", view::located_text(&tenant, &id, l, now))
        }
    }
    if let Lookup::NotFound(l) = found {
        return Err(Error::NotFound(format!(
            "task {tenant}/{id}: no record, and not found in {} (a finished task's record \
             expires after tasks.retention)",
            view::searched_text(&l.searched)
        )));
    }
    Ok(())
}

async fn wait(a: WaitArgs, settings: &Settings) -> Result<()> {
    let (tenant, id) = parse_task_address(&a.id)?;
    if !(0.0..=86_400.0).contains(&a.timeout) {
        return Err(usage("--timeout must be between 0 and 86400 seconds"));
    }
    let b = connect(settings).await?;
    let producer = crate::producer::Producer::new(b.clone(), settings);
    let waited = producer
        .wait(&tenant, &id, std::time::Duration::from_secs_f64(a.timeout))
        .await?;
    let (record, finished) = match waited {
        crate::producer::Waited::Finished(r) => (Some(r), true),
        crate::producer::Waited::TimedOut(r) => (r, false),
    };
    let read = record.map(|record| crate::broker::RecordRead {
        record,
        expires_in: None,
    });
    match &read {
        Some(r) if a.json => print_json(&view::task_json(&tenant, &id, r)),
        Some(r) => print!(
            "{}",
            view::task_text(&tenant, &id, r, b.server_time_ms().await.unwrap_or(0))
        ),
        None if a.json => print_json(&serde_json::Value::Null),
        None => println!("task {tenant}/{id}: no record"),
    }
    let state = read.as_ref().and_then(|r| r.record.state);
    if !finished {
        return Err(Error::Timeout(format!(
            "task {tenant}/{id} did not finish within {}s (state: {})",
            a.timeout,
            state.map(TaskState::as_str).unwrap_or("no record")
        )));
    }
    if state != Some(TaskState::Done) {
        return Err(Error::TaskFailed(format!(
            "task {tenant}/{id} finished {}",
            state.map(TaskState::as_str).unwrap_or("?")
        )));
    }
    Ok(())
}

async fn list(a: ListArgs, settings: &Settings) -> Result<()> {
    crate::task::validate_tenant(&a.tenant).map_err(|e| usage(format!("--tenant: {e}")))?;
    if a.limit == 0 || a.limit > 10_000 {
        return Err(usage("--limit must be between 1 and 10000"));
    }
    let state = a
        .state
        .as_deref()
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                usage(format!(
                    "--state '{s}' is not a task state; the states are {}",
                    TaskState::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
        })
        .transpose()?;
    if let Some(k) = &a.kind {
        crate::task::validate_kind(k).map_err(|e| usage(format!("--kind: {e}")))?;
    }
    let cursor = a
        .cursor
        .as_deref()
        .map(|c| TaskCursor::parse(c).map_err(|e| usage(format!("--cursor: {e}"))))
        .transpose()?;
    let b = connect(settings).await?;
    let now = b.server_time_ms().await?;
    let since_ms = a
        .since
        .as_deref()
        .map(|t| parse_time(t, now).map_err(|e| usage(format!("--since: {e}"))))
        .transpose()?;
    let filter = TaskFilter {
        state,
        kind: a.kind.clone(),
        since_ms,
    };
    let page = b
        .task_list(&a.tenant, &filter, cursor.as_ref(), a.limit, LIST_SCAN_MAX)
        .await?;
    let next = page.next.as_ref().map(|c| c.to_string());
    if a.json {
        print_json(&json!({
            "tenant": a.tenant,
            "tasks": page.tasks.iter().map(view::task_list_json).collect::<Vec<_>>(),
            "next_cursor": next,
            "scanned": page.scanned,
        }));
        return Ok(());
    }
    if page.tasks.is_empty() {
        println!("no tasks match");
    } else {
        println!(
            "{:<32} {:<16} {:<18} {:>3} {:>7} {:<20} ERROR",
            "TASK_ID", "STATE", "KIND", "ATT", "CREATED", "CLASS"
        );
        for t in &page.tasks {
            println!("{}", view::task_list_line(t, now));
        }
    }
    match next {
        Some(c) if page.scan_bound_hit => println!(
            "\nread {} records without filling the page; next cursor: {c}",
            page.scanned
        ),
        Some(c) => println!("\nnext cursor: {c}"),
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_addresses_split_at_the_first_slash() {
        assert_eq!(
            parse_task_address("acme/t-1/a").unwrap(),
            ("acme".to_owned(), "t-1/a".to_owned())
        );
        for bad in ["acme", "/t-1", "ac me/t-1", "acme/", "acme/t 1"] {
            let e = parse_task_address(bad).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}: {e}");
        }
    }
}
