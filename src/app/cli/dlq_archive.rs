//! `redrive dlq archive …`: the dead-letter archive (`[archive]`: a directory or an
//! S3-compatible bucket). `list` and `show` read the archive from this process (and `show`
//! asks Redis whether the dead letter was restored); `restore` goes through the admin command
//! stream like every other change: executed once by a fleet member, audited.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::args::{mutation, MutationArgs};
use super::common::{connect, print_json, usage};
use super::submit::send;
use crate::admin::select::DlId;
use crate::admin::time::{format_time, parse_time};
use crate::admin::{AdminCommand, RestoreSpec};
use crate::app::view::{archived_row, DeadLetterView};
use crate::archive::format::day_text;
use crate::archive::{read, ArchiveStore};
use crate::broker::Entry;
use crate::config::Settings;
use crate::error::{Error, Result};

/// `redrive dlq archive …`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// List archived dead letters (from the manifests) a page at a time, by tenant, then
    /// oldest day first.
    List(ListArgs),
    /// Show one archived dead letter's whole execution context.
    Show(ShowArgs),
    /// Put archived dead letters back as dead letters (through a fleet member, audited).
    Restore(RestoreArgs),
}

/// `dlq archive list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's (default: every tenant's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only batches archived on or after this day: a duration ago (7d), an RFC 3339 time or
    /// epoch ms.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only batches archived on or before this day (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print at most this many entries (1 to 100000): a page, which reads only the manifests
    /// it needs.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Start after this cursor (the `next` a previous page printed).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dlq archive show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The archived dead letter: TENANT/ID (its dead-letter id, as `dlq list` and task records
    /// showed it).
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dlq archive restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Archived dead letters (TENANT/ID), 1 to 1000.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Who, why (default: "restored from the archive"), where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// Runs `redrive dlq archive …`.
pub async fn run(cmd: ArchiveCommand, settings: &Settings) -> Result<()> {
    match cmd {
        ArchiveCommand::List(a) => list(a, settings).await,
        ArchiveCommand::Show(a) => show(a, settings).await,
        ArchiveCommand::Restore(a) => restore(a, settings).await,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn day_arg(flag: &str, text: Option<&str>) -> Result<Option<String>> {
    text.map(|t| {
        parse_time(t, now_ms())
            .map(day_text)
            .map_err(|e| usage(format!("{flag}: {e}")))
    })
    .transpose()
}

async fn list(a: ListArgs, settings: &Settings) -> Result<()> {
    if let Some(t) = &a.tenant {
        crate::task::validate_tenant(t).map_err(|e| usage(format!("--tenant: {e}")))?;
    }
    if a.limit == 0 || a.limit > 100_000 {
        return Err(usage("--limit must be between 1 and 100000"));
    }
    let since = day_arg("--since", a.since.as_deref())?;
    let until = day_arg("--until", a.until.as_deref())?;
    let store = ArchiveStore::open(&settings.archive)?;
    let tenants = a.tenant.clone().map(|t| vec![t]);
    let page = read::page(
        &store,
        tenants.as_deref(),
        since.as_deref(),
        until.as_deref(),
        a.after.as_deref(),
        a.limit,
    )
    .await?;
    let rows: Vec<Value> = page.entries.iter().map(archived_row).collect();
    if a.json {
        print_json(&json!({
            "archive": store.describe(),
            "entries": rows,
            "next": page.next,
            "manifests_read": page.manifests_read,
        }));
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no archived dead letters match (archive: {})",
            store.describe()
        );
        return Ok(());
    }
    println!(
        "{:<40} {:<10} {:<11} {:<20} {:<18} {:<24} OBJECT",
        "ID", "ARCHIVED", "WHY", "CLASS", "KIND", "TASK_ID"
    );
    let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_owned();
    for r in &rows {
        println!(
            "{:<40} {:<10} {:<11} {:<20} {:<18} {:<24} {}",
            text(r, "id"),
            text(r, "day"),
            text(r, "archive_class"),
            text(r, "class"),
            text(r, "kind"),
            text(r, "task_id"),
            text(r, "object")
        );
    }
    if let Some(next) = &page.next {
        println!(
            "\n{} shown (--limit); the next page: --after '{next}'",
            rows.len()
        );
    }
    Ok(())
}

async fn show(a: ShowArgs, settings: &Settings) -> Result<()> {
    let id = DlId::parse(&a.id, None).map_err(usage)?;
    crate::task::validate_tenant(&id.tenant).map_err(usage)?;
    let store = ArchiveStore::open(&settings.archive)?;
    let (object, e) = read::find(&store, settings.archive.key.as_ref(), &id.tenant, &id.id)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "archived dead letter {id} is not in the archive ({})",
                store.describe()
            ))
        })?;
    let b = connect(settings).await?;
    let restored_as = b
        .dlq_restored_as(&id.tenant, &[id.id.as_str()])
        .await?
        .into_iter()
        .next()
        .flatten();
    let class = e.class;
    let view = DeadLetterView::from_entry(
        &id.tenant,
        Entry {
            id: e.id.clone(),
            fields: Some(e.fields),
        },
    );
    if a.json {
        let mut v = view.to_json();
        v["archive"] = json!({
            "object": object,
            "class": class.as_str(),
            "restored_as": restored_as.as_ref().map(|r| format!("{}/{r}", id.tenant)),
        });
        print_json(&v);
        return Ok(());
    }
    println!("archived in:   {object} ({})", store.describe());
    println!("archived as:   {}", class.as_str());
    match &restored_as {
        Some(r) => println!("restored as:   {}/{r}", id.tenant),
        None => println!("restore with:  redrive dlq archive restore {id} --reason \"…\""),
    }
    println!("dead-lettered: {}", format_time(view.dead_lettered_at_ms()));
    print!("{}", view.show_text(b.server_time_ms().await?));
    Ok(())
}

async fn restore(a: RestoreArgs, settings: &Settings) -> Result<()> {
    let ids = a
        .ids
        .iter()
        .map(|t| DlId::parse(t, None).map_err(usage))
        .collect::<Result<Vec<_>>>()?;
    let spec = RestoreSpec { ids };
    spec.validate().map_err(usage)?;
    let v = mutation(&a.m, settings, Some("restored from the archive"))?;
    let b = connect(settings).await?;
    send(b, settings, &a.m, v, AdminCommand::Restore(spec)).await
}
