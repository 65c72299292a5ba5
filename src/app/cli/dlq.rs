//! `redrive dlq …`: triage (list, show, stats, export) reads Redis directly; recovery (replay,
//! resolve, discard, purge, cancel) and review (assign, escalate, note, fold) go through the
//! admin command stream
//! ([`crate::app::admin_client`]). Raw flags are turned into validated values first (bad input
//! exits 64 before anything is sent).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::args::{mutation, window, FilterArgs, MutationArgs};
use super::common::{connect, context, print_json, usage};
use super::submit::send;
use crate::admin::review::ReviewState;
use crate::admin::select::{DlId, Selection};
use crate::admin::time::{format_age, parse_duration};
use crate::admin::{
    validate_command_id, AdminCommand, CancelSpec, FoldSpec, PurgeSpec, RemoveSpec, ReplaySpec,
    ReviewSpec,
};
use crate::app::changes::{purge_count, selection};
use crate::app::report;
use crate::app::view::DeadLetterView;
use crate::config::Settings;
use crate::error::{Error, Result};

/// `redrive dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first, filtered, a page at a time.
    List(ListArgs),
    /// Show one dead letter's whole execution context.
    Show(ShowArgs),
    /// Counts by tenant, class and kind, top error fingerprints, oldest entry, recovery rate.
    Stats(StatsArgs),
    /// Stream dead letters as JSON Lines for offline analysis.
    Export(ExportArgs),
    /// Replay dead letters into their lanes: listed ones, or a batch selected by filters.
    Replay(ReplayArgs),
    /// Remove dead letters that were handled elsewhere (archived with the reason).
    Resolve(RemoveArgs),
    /// Remove dead letters not worth running (archived with the reason).
    Discard(RemoveArgs),
    /// Delete a tenant's dead letters older than a duration.
    Purge(PurgeArgs),
    /// Cancel a running batch replay after its current step (resume it with --resume).
    Cancel(CancelArgs),
    /// The archive of dead letters that left Redis: list, show, restore.
    #[command(subcommand)]
    Archive(super::dlq_archive::ArchiveCommand),
    /// Assign dead letters to an operator for review (state in_review).
    Assign(AssignArgs),
    /// Escalate dead letters to their tenant (notified when it has a target for escalations)
    /// or to a named team (state escalated).
    Escalate(EscalateArgs),
    /// Add a note to dead letters (their state stays).
    Note(NoteArgs),
    /// Fold a tenant's dead letters of one fingerprint under one representative: replaying,
    /// resolving or discarding it does the same to all of them (later ones with that
    /// fingerprint join the fold).
    Fold(FoldArgs),
}

/// `dlq assign`
#[derive(Debug, Args)]
pub struct AssignArgs {
    /// Dead letters (TENANT/ENTRY-ID; a fold's representative stands for its members).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Who reviews them.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Who, why, where and how long to wait (--reason defaults to "assigned for review").
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq escalate`
#[derive(Debug, Args)]
pub struct EscalateArgs {
    /// Dead letters (TENANT/ENTRY-ID).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// `tenant` (the dead letter's own tenant) or a team's name.
    #[arg(long, value_name = "tenant|TEAM")]
    pub to: String,
    /// Who, why (required), where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq note`
#[derive(Debug, Args)]
pub struct NoteArgs {
    /// Dead letters (TENANT/ENTRY-ID).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// The note (at most 2048 bytes).
    #[arg(long, value_name = "TEXT")]
    pub text: String,
    /// Who, why, where and how long to wait (--reason defaults to "note").
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq fold`
#[derive(Debug, Args)]
pub struct FoldArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The fingerprint whose dead letters are folded (as `dlq stats` prints it).
    #[arg(long, value_name = "FP")]
    pub fingerprint: String,
    /// Who, why (required), where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the dead letters of this task id (the ones its task records name; without a
    /// record, a scan like the other filters).
    #[arg(long, value_name = "TASK_ID")]
    pub task_id: Option<String>,
    /// Newest first (default: oldest first).
    #[arg(long)]
    pub newest_first: bool,
    /// Continue after this position (the `next cursor` a previous page printed).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Only dead letters in this review state (repeatable): new, in_review, escalated, folded.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Only dead letters assigned to this operator (repeatable).
    #[arg(long = "assignee", value_name = "NAME")]
    pub assignees: Vec<String>,
    /// List the members of folds too (by default each fold's representative stands for them,
    /// with their count).
    #[arg(long)]
    pub expand_folds: bool,
    /// Entries per page (1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Dead letters one page reads at most (100 to 1000000; at least one per tenant): a rare
    /// filter that has not filled the page by then prints what it found and where to go on.
    #[arg(long, default_value_t = report::LIST_SCAN_LIMIT, value_name = "N")]
    pub scan_limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dlq show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter: TENANT/ENTRY-ID (or ENTRY-ID with --tenant).
    pub id: String,
    /// The tenant, when ID is a bare entry id.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dlq stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How many fingerprints to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Window of the completed / recovered / dead-lettered counts (at most 24h).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub window: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// `dlq export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `dlq replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dead letters to replay (TENANT/ENTRY-ID). Without ids, every dead letter the filters
    /// select.
    pub ids: Vec<String>,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replay every dead letter of every tenant (a batch without any filter needs this).
    #[arg(long)]
    pub all: bool,
    /// Print how many would be replayed and a sample of them as they would run; change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep per-entity order: group by this top-level payload field (e.g. customer_id), each
    /// group in the order its tasks were first enqueued. Default: chronological.
    #[arg(long, value_name = "FIELD")]
    pub order_by_key: Option<String>,
    /// Dead letters per second, 0 for unlimited (default: admin.rate).
    #[arg(long)]
    pub rate: Option<u32>,
    /// A JSON merge patch (RFC 7386) applied to each payload: replay with a fix.
    #[arg(long, value_name = "JSON")]
    pub patch: Option<String>,
    /// Route the replayed tasks to this kind (another handler).
    #[arg(long, value_name = "KIND")]
    pub target_kind: Option<String>,
    /// Replay partial_execution dead letters too: their side effects may happen again.
    #[arg(long)]
    pub force: bool,
    /// Resume a cancelled or interrupted replay job (its id is the command id that started it).
    #[arg(long, value_name = "JOB")]
    pub resume: Option<String>,
    /// Who, why, where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq resolve` and `dlq discard`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Dead letters (TENANT/ENTRY-ID). Without ids, every dead letter the filters select
    /// (needs --yes).
    pub ids: Vec<String>,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Confirm a removal selected by filters.
    #[arg(long)]
    pub yes: bool,
    /// Who, why, where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq purge`
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The tenant whose dead letters are deleted.
    #[arg(long)]
    pub tenant: String,
    /// Delete dead letters older than this (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub older_than: String,
    /// Confirm: purged dead letters are deleted, not archived.
    #[arg(long)]
    pub yes: bool,
    /// Who, why, where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// `dlq cancel`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The replay job (the command id that started it).
    pub job: String,
    /// Who, why, where and how long to wait.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// Runs `redrive dlq …`.
pub async fn run(cmd: DlqCommand, settings: &Settings) -> Result<()> {
    match cmd {
        DlqCommand::List(a) => list(a, settings).await,
        DlqCommand::Show(a) => show(a, settings).await,
        DlqCommand::Stats(a) => stats(a, settings).await,
        DlqCommand::Export(a) => export(a, settings).await,
        DlqCommand::Replay(a) => replay(a, settings).await,
        DlqCommand::Resolve(a) => remove(a, settings, true).await,
        DlqCommand::Discard(a) => remove(a, settings, false).await,
        DlqCommand::Purge(a) => purge(a, settings).await,
        DlqCommand::Cancel(a) => cancel(a, settings).await,
        DlqCommand::Archive(a) => super::dlq_archive::run(a, settings).await,
        DlqCommand::Assign(a) => {
            let spec = ReviewSpec {
                ids: review_ids(&a.ids)?,
                to: a.to,
                text: String::new(),
            };
            review(
                settings,
                &a.m,
                "assigned for review",
                AdminCommand::Assign(spec),
            )
            .await
        }
        DlqCommand::Escalate(a) => {
            let spec = ReviewSpec {
                ids: review_ids(&a.ids)?,
                to: a.to,
                text: String::new(),
            };
            let v = mutation(&a.m, settings, None)?;
            let command = AdminCommand::Escalate(spec);
            command.validate().map_err(usage)?;
            send(connect(settings).await?, settings, &a.m, v, command).await
        }
        DlqCommand::Note(a) => {
            let spec = ReviewSpec {
                ids: review_ids(&a.ids)?,
                to: String::new(),
                text: a.text,
            };
            review(settings, &a.m, "note", AdminCommand::Note(spec)).await
        }
        DlqCommand::Fold(a) => {
            let command = AdminCommand::Fold(FoldSpec {
                tenant: a.tenant,
                fingerprint: a.fingerprint,
            });
            command.validate().map_err(usage)?;
            let v = mutation(&a.m, settings, None)?;
            send(connect(settings).await?, settings, &a.m, v, command).await
        }
    }
}

/// The ids of a review move (TENANT/ENTRY-ID each), without repeats.
fn review_ids(ids: &[String]) -> Result<Vec<DlId>> {
    let parsed = ids
        .iter()
        .map(|id| DlId::parse(id, None).map_err(usage))
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::admin::select::dedup(parsed))
}

/// Sends an assign or a note (`default_reason` when --reason is not given).
async fn review(
    settings: &Settings,
    m: &MutationArgs,
    default_reason: &str,
    command: AdminCommand,
) -> Result<()> {
    command.validate().map_err(usage)?;
    let v = mutation(m, settings, Some(default_reason))?;
    send(connect(settings).await?, settings, m, v, command).await
}

async fn list(a: ListArgs, settings: &Settings) -> Result<()> {
    if a.limit == 0 || a.limit > 10_000 {
        return Err(usage("--limit must be between 1 and 10000"));
    }
    if !(100..=report::LIST_SCAN_MAX).contains(&a.scan_limit) {
        return Err(usage(format!(
            "--scan-limit must be between 100 and {}",
            report::LIST_SCAN_MAX
        )));
    }
    let cursor = a
        .cursor
        .as_deref()
        .map(|c| DlId::parse(c, None).map_err(|e| usage(format!("--cursor: {e}"))))
        .transpose()?;
    if let Some(id) = &a.task_id {
        crate::task::validate_task_id(id).map_err(|e| usage(format!("--task-id: {e}")))?;
    }
    let states = a
        .states
        .iter()
        .map(|s| {
            ReviewState::parse(s).ok_or_else(|| {
                usage(format!(
                    "--state '{s}' is not a review state: new, in_review, escalated or folded"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for n in &a.assignees {
        crate::admin::review::validate_assignee(n)
            .map_err(|e| usage(e.replace("--to", "--assignee")))?;
    }
    let b = connect(settings).await?;
    let now = b.server_time_ms().await?;
    let filter = a.filter.to_filter(now)?;
    let page = report::list_page(
        &b,
        &report::ListQuery {
            filter,
            task_id: a.task_id,
            cursor,
            limit: a.limit,
            newest_first: a.newest_first,
            scan_limit: a.scan_limit,
            // A folded member shows only when asked for (or expanded).
            expand_folds: a.expand_folds || states.contains(&ReviewState::Folded),
            states,
            assignees: a.assignees,
        },
    )
    .await?;
    if a.json {
        print_json(&json!({
            "entries": page.entries.iter().map(|e| e.summary_json()).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "scanned": page.scanned,
            "scan_limit_reached": page.scan_limit_reached,
        }));
        return Ok(());
    }
    if page.entries.is_empty() && !page.scan_limit_reached {
        println!("no dead letters match");
        return Ok(());
    }
    if !page.entries.is_empty() {
        println!(
            "{:<34} {:>5} {:<20} {:<18} {:<24} {:<12} {:<22} ERROR",
            "ID", "AGE", "CLASS", "KIND", "TASK_ID", "FINGERPRINT", "REVIEW"
        );
        for e in &page.entries {
            println!("{}", e.list_line(now));
        }
    }
    match (page.next_cursor, page.scan_limit_reached) {
        (Some(c), true) => println!(
            "\n{} read ({} listed) without filling the page; more may match after it: --cursor {c}",
            page.scanned,
            page.entries.len()
        ),
        (Some(c), false) => println!("\nmore: --cursor {c}"),
        (None, _) => {}
    }
    Ok(())
}

async fn show(a: ShowArgs, settings: &Settings) -> Result<()> {
    if let Some(t) = &a.tenant {
        crate::task::validate_tenant(t).map_err(usage)?;
    }
    let id = DlId::parse(&a.id, a.tenant.as_deref()).map_err(usage)?;
    let b = connect(settings).await?;
    let entry = b
        .dlq_entries(&id.tenant, &[id.id.as_str()])
        .await?
        .into_iter()
        .next()
        .flatten()
        .filter(|e| e.fields.is_some())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "dead letter {id} (it may have been replayed, resolved, discarded or purged; see `redrive admin audit`)"
            ))
        })?;
    let view = DeadLetterView::from_entry(&id.tenant, entry);
    let review = report::review_of(&b, &id.tenant, &id.id, &view.fields).await?;
    let view = view.with_review(review);
    if a.json {
        print_json(&view.to_json());
    } else {
        print!("{}", view.show_text(b.server_time_ms().await?));
    }
    Ok(())
}

async fn stats(a: StatsArgs, settings: &Settings) -> Result<()> {
    let w = window(&a.window)?;
    if a.top == 0 || a.top > 1_000 {
        return Err(usage("--top must be between 1 and 1000"));
    }
    if !a.filter.payload.is_empty() {
        return Err(usage(
            "--payload: stats count by class, kind and fingerprint and cannot look into \
             payloads; use `dlq list --payload` to see the matching dead letters",
        ));
    }
    let b = connect(settings).await?;
    let filter = a.filter.to_filter(b.server_time_ms().await?)?;
    let s = report::stats(&b, &filter, a.top, w).await?;
    if a.json {
        print_json(&serde_json::to_value(&s).unwrap_or(Value::Null));
    } else {
        print!("{}", report::stats_text(&s));
    }
    Ok(())
}

async fn export(a: ExportArgs, settings: &Settings) -> Result<()> {
    let ExportFormat::Jsonl = a.format;
    let b = connect(settings).await?;
    let filter = a.filter.to_filter(b.server_time_ms().await?)?;
    let n = match &a.output {
        Some(path) => {
            // Written to a temporary file first, so an error never leaves half an export.
            let tmp = path.with_extension("partial");
            let file = std::fs::File::create(&tmp)
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            let mut w = std::io::BufWriter::new(file);
            let n = report::export(&b, &filter, &mut w).await;
            let n = match n.and_then(|n| {
                w.flush()
                    .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
                Ok(n)
            }) {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            std::fs::rename(&tmp, path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", tmp.display(), path.display()),
                    e,
                )
            })?;
            n
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let n = report::export(&b, &filter, &mut w).await?;
            w.flush().map_err(|e| Error::io("writing the export", e))?;
            n
        }
    };
    eprintln!("exported {n} dead letters");
    Ok(())
}

async fn replay(a: ReplayArgs, settings: &Settings) -> Result<()> {
    let rate = a.rate.unwrap_or(settings.admin.rate);
    let spec = if let Some(job) = &a.resume {
        let conflicting = !a.ids.is_empty()
            || a.all
            || a.dry_run
            || a.order_by_key.is_some()
            || a.patch.is_some()
            || a.target_kind.is_some()
            || a.force
            || a.filter.tenants.len()
                + a.filter.classes.len()
                + a.filter.kinds.len()
                + a.filter.fingerprints.len()
                > 0
            || a.filter.since.is_some()
            || a.filter.until.is_some();
        if conflicting {
            return Err(usage(
                "--resume continues a job with the ids, filters, patch and options it started with; \
                 give only --resume, --rate and the command flags",
            ));
        }
        validate_command_id(job).map_err(usage)?;
        ReplaySpec {
            resume: Some(job.clone()),
            rate,
            ..ReplaySpec::default()
        }
    } else {
        let patch = a
            .patch
            .as_deref()
            .map(|p| {
                serde_json::from_str::<Value>(p)
                    .map_err(|e| usage(format!("--patch is not valid JSON: {e}")))
            })
            .transpose()?;
        // Validated before connecting where possible, so bad input fails fast.
        ReplaySpec {
            select: None,
            resume: None,
            order_by_key: a.order_by_key.clone(),
            rate,
            patch,
            target_kind: a.target_kind.clone(),
            force: a.force,
        }
    };
    let v = if a.dry_run {
        None
    } else {
        Some(mutation(&a.m, settings, None)?)
    };
    let b = connect(settings).await?;
    let mut spec = spec;
    if spec.resume.is_none() {
        let filter = a.filter.to_filter(b.server_time_ms().await?)?;
        spec.select = Some(selection(&a.ids, filter, a.all, "replay")?);
    }
    spec.validate().map_err(usage)?;
    if a.dry_run {
        let ctx = context(b, settings);
        let operator =
            a.m.operator
                .clone()
                .unwrap_or_else(crate::admin::default_operator);
        let d = crate::admin::replay::dry_run::dry_run(&ctx, &spec, &operator).await?;
        if a.m.json {
            print_json(&serde_json::to_value(&d).unwrap_or(Value::Null));
        } else {
            print_dry_run(&d);
        }
        if !d.missing.is_empty() {
            return Err(Error::NotFound(format!(
                "dead letters {} do not exist",
                d.missing.join(", ")
            )));
        }
        return Ok(());
    }
    let Some(v) = v else {
        return Err(usage("--reason is required"));
    };
    send(b, settings, &a.m, v, AdminCommand::Replay(spec)).await
}

fn print_dry_run(d: &crate::admin::replay::dry_run::DryRun) {
    println!(
        "dry run: {} dead letters selected; {} would be replayed, {} refused (partial_execution \
         without --force), {} not replayable as they are. Nothing was changed.",
        d.selected, d.would_replay, d.refused, d.invalid
    );
    if !d.missing.is_empty() {
        println!("missing: {}", d.missing.join(", "));
    }
    if !d.sample.is_empty() {
        println!("\nsample, in replay order:");
    }
    for s in &d.sample {
        match s.verdict.as_str() {
            "replay" => println!(
                "  {}  task {}  {} -> replay as kind {}{}\n      payload {}",
                s.id,
                s.task_id,
                s.class,
                s.kind.as_deref().unwrap_or("?"),
                if s.migrations.is_empty() {
                    String::new()
                } else {
                    format!(" (migrations {})", s.migrations.join(", "))
                },
                s.payload
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            ),
            other => println!(
                "  {}  task {}  {} -> {other}: {}",
                s.id,
                s.task_id,
                s.class,
                s.why.as_deref().unwrap_or("")
            ),
        }
    }
}

async fn remove(a: RemoveArgs, settings: &Settings, resolve: bool) -> Result<()> {
    let what = if resolve { "resolve" } else { "discard" };
    let v = mutation(&a.m, settings, None)?;
    let b = connect(settings).await?;
    let filter = a.filter.to_filter(b.server_time_ms().await?)?;
    let select = selection(&a.ids, filter, false, what)?;
    if matches!(select, Selection::Filter(_)) && !a.yes {
        return Err(Error::Refused(format!(
            "{what} by filter removes every matching dead letter; check them with `redrive dlq list` \
             and the same filters, then add --yes"
        )));
    }
    let spec = RemoveSpec { select };
    let command = if resolve {
        AdminCommand::Resolve(spec)
    } else {
        AdminCommand::Discard(spec)
    };
    send(b, settings, &a.m, v, command).await
}

async fn purge(a: PurgeArgs, settings: &Settings) -> Result<()> {
    crate::task::validate_tenant(&a.tenant).map_err(|e| usage(format!("--tenant: {e}")))?;
    let older = parse_duration(&a.older_than).map_err(|e| usage(format!("--older-than: {e}")))?;
    let v = mutation(&a.m, settings, None)?;
    let b = connect(settings).await?;
    let now = b.server_time_ms().await?;
    let before_ms = now.saturating_sub(older.as_millis() as u64);
    if !a.yes {
        let n = purge_count(&b, &a.tenant, before_ms).await?;
        return Err(Error::Refused(format!(
            "purge deletes dead letters for good (they are not archived): {n} dead letters of tenant {} \
             are older than {}. Add --yes to delete them",
            a.tenant,
            format_age(older.as_millis() as u64)
        )));
    }
    send(
        b,
        settings,
        &a.m,
        v,
        AdminCommand::Purge(PurgeSpec {
            tenant: a.tenant,
            before_ms,
        }),
    )
    .await
}

async fn cancel(a: CancelArgs, settings: &Settings) -> Result<()> {
    validate_command_id(&a.job).map_err(usage)?;
    let v = mutation(&a.m, settings, Some("cancel requested by operator"))?;
    let b = connect(settings).await?;
    send(
        b,
        settings,
        &a.m,
        v,
        AdminCommand::Cancel(CancelSpec { job: a.job }),
    )
    .await
}
