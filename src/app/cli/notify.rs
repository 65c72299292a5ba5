//! `redrive notify …`: tenant notifications as Redis has them — the delivery log (every
//! attempt's outcome: sent, retry, failed) and where each tenant's outbox and targets stand.
//! Reads only.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::common::{connect, print_json, usage};
use crate::admin::time::{format_age, format_time};
use crate::config::Settings;
use crate::error::Result;

/// `redrive notify …`
#[derive(Debug, Subcommand)]
pub enum NotifyAction {
    /// The delivery log, newest first: each attempt's event, target, outcome and detail.
    Log(LogArgs),
    /// Each tenant's outbox (events waiting, the oldest's age, the open digest), who delivers
    /// it, and where each target stands (its cursor, retries, events given up).
    Status(StatusArgs),
}

/// `notify log`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this tenant (repeatable; default: every tenant).
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
    /// Entries per tenant, newest first (1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only attempts with this outcome: sent, retry or failed.
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `notify status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this tenant (repeatable; default: every tenant with targets or an outbox).
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The tenants asked for, or every registered tenant and every tenant with targets.
async fn tenants(
    b: &crate::broker::Broker,
    settings: &Settings,
    asked: &[String],
) -> Result<Vec<String>> {
    for t in asked {
        crate::task::validate_tenant(t).map_err(|e| usage(format!("--tenant: {e}")))?;
    }
    let mut out = if asked.is_empty() {
        let mut all = b.tenants().await?;
        all.extend(settings.notify.targets.iter().map(|t| t.tenant.clone()));
        all
    } else {
        asked.to_vec()
    };
    out.sort();
    out.dedup();
    Ok(out)
}

/// Runs `redrive notify …`.
pub async fn run(action: NotifyAction, settings: &Settings) -> Result<()> {
    match action {
        NotifyAction::Log(a) => log(a, settings).await,
        NotifyAction::Status(a) => status(a, settings).await,
    }
}

async fn log(a: LogArgs, settings: &Settings) -> Result<()> {
    if a.limit == 0 || a.limit > 10_000 {
        return Err(usage("--limit must be between 1 and 10000"));
    }
    if let Some(o) = &a.outcome {
        if !matches!(o.as_str(), "sent" | "retry" | "failed") {
            return Err(usage(format!(
                "--outcome '{o}' is not an outcome: sent, retry or failed"
            )));
        }
    }
    let b = connect(settings).await?;
    let tenants = tenants(&b, settings, &a.tenants).await?;
    let mut entries = b.notify_log(&tenants, a.limit).await?;
    if let Some(o) = &a.outcome {
        entries.retain(|e| e.outcome == *o);
    }
    entries.sort_by(|x, y| {
        crate::admin::select::compare_ids(&y.id, &x.id).then(x.tenant.cmp(&y.tenant))
    });
    if a.json {
        print_json(&Value::Array(
            entries
                .iter()
                .map(|e| {
                    json!({
                        "at": crate::admin::select::id_ms(&e.id),
                        "tenant": e.tenant,
                        "event": format!("{}/{}", e.tenant, e.event),
                        "target": e.target,
                        "type": e.kind,
                        "outcome": e.outcome,
                        "attempt": e.attempt,
                        "detail": e.detail,
                    })
                })
                .collect(),
        ));
        return Ok(());
    }
    if entries.is_empty() {
        println!("no delivery attempts logged");
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:<16} {:<15} {:<7} {:>3} {:<34} DETAIL",
        "AT", "TENANT", "TARGET", "TYPE", "OUTCOME", "TRY", "EVENT"
    );
    for e in &entries {
        println!(
            "{:<24} {:<16} {:<16} {:<15} {:<7} {:>3} {:<34} {}",
            format_time(crate::admin::select::id_ms(&e.id)),
            e.tenant,
            e.target,
            e.kind,
            e.outcome,
            e.attempt,
            e.event,
            e.detail
        );
    }
    Ok(())
}

async fn status(a: StatusArgs, settings: &Settings) -> Result<()> {
    let b = connect(settings).await?;
    let tenants = tenants(&b, settings, &a.tenants).await?;
    let (statuses, now) = tokio::try_join!(b.notify_status(&tenants), b.server_time_ms())?;
    let mut rows = Vec::new();
    for (t, s) in tenants.iter().zip(statuses) {
        let configured: Vec<&str> = settings
            .notify
            .targets
            .iter()
            .filter(|x| x.tenant == *t)
            .map(|x| x.name.as_str())
            .collect();
        if configured.is_empty() && s.depth == 0 && s.state.is_empty() && a.tenants.is_empty() {
            continue;
        }
        let mut names: Vec<String> = configured.iter().map(|n| (*n).to_owned()).collect();
        for k in s.state.keys() {
            if let Some(n) = k.strip_prefix("c:") {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_owned());
                }
            }
        }
        let targets: Vec<Value> = names
            .iter()
            .map(|n| {
                let get = |p: &str| s.state.get(&format!("{p}{n}")).cloned();
                json!({
                    "name": n,
                    "configured": configured.contains(&n.as_str()),
                    "cursor": get("c:").unwrap_or_else(|| "0-0".into()),
                    "attempts": get("a:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                    "next_try_at": get("w:").and_then(|v| v.parse::<u64>().ok()),
                    "failed": get("failed:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                })
            })
            .collect();
        rows.push(json!({
            "tenant": t,
            "outbox": s.depth,
            "oldest_age_ms": s.oldest.as_deref().map(|o| now.saturating_sub(crate::admin::select::id_ms(o))),
            "digest_pending": s.digest_pending,
            "delivered_by": s.holder,
            "targets": targets,
        }));
    }
    if a.json {
        print_json(&Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no tenant has notification targets or an outbox");
        return Ok(());
    }
    for r in &rows {
        let age = r["oldest_age_ms"]
            .as_u64()
            .map(|ms| format!(", oldest {} old", format_age(ms)))
            .unwrap_or_default();
        println!(
            "{}: {} waiting{age}; digest open with {} dead letters; delivered by {}",
            r["tenant"].as_str().unwrap_or(""),
            r["outbox"],
            r["digest_pending"],
            r["delivered_by"].as_str().unwrap_or("nobody now")
        );
        for t in r["targets"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} at {}  attempts {}  given up {}{}",
                t["name"].as_str().unwrap_or(""),
                t["cursor"].as_str().unwrap_or(""),
                t["attempts"],
                t["failed"],
                if t["configured"] == true {
                    ""
                } else {
                    "  (not configured here)"
                }
            );
        }
    }
    Ok(())
}
