//! `redrive admin …`: the admin command trail, read from Redis: the audit log and one
//! command's status.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::common::{connect, print_json, usage};
use crate::admin::time::format_time;
use crate::admin::validate_command_id;
use crate::config::Settings;
use crate::error::{Error, Result};

/// `redrive admin …`
#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// The audit trail: every admin command, who, when, what, why and its outcome.
    Audit(AuditArgs),
    /// One command's state and result.
    Status(StatusArgs),
}

/// `admin audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `admin status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The command id.
    pub command_id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `redrive admin …`.
pub async fn run(action: AdminAction, settings: &Settings) -> Result<()> {
    match action {
        AdminAction::Audit(a) => {
            if a.limit == 0 || a.limit > 10_000 {
                return Err(usage("--limit must be between 1 and 10000"));
            }
            let b = connect(settings).await?;
            let entries = b.admin_audit(None, a.limit).await?;
            let rows: Vec<Value> = entries
                .into_iter()
                .map(|e| {
                    let mut m = serde_json::Map::new();
                    m.insert("audit_id".into(), Value::String(e.id.clone()));
                    for (k, v) in e.fields.unwrap_or_default() {
                        let k = String::from_utf8_lossy(&k).into_owned();
                        let v = String::from_utf8_lossy(&v).into_owned();
                        let typed = if k == "args" || k == "details" {
                            serde_json::from_str(&v).unwrap_or(Value::String(v))
                        } else {
                            Value::String(v)
                        };
                        m.insert(k, typed);
                    }
                    Value::Object(m)
                })
                .collect();
            if a.json {
                print_json(&Value::Array(rows));
                return Ok(());
            }
            for r in rows {
                let g = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                let at = g("finished_at")
                    .parse::<u64>()
                    .map(format_time)
                    .unwrap_or_default();
                println!(
                    "{at}  {:<24} {:<8} {:<9} by {}  on {}\n    why: {}\n    {}",
                    g("command_id"),
                    g("command"),
                    g("outcome"),
                    g("operator"),
                    g("executor"),
                    g("reason"),
                    g("message")
                );
            }
            Ok(())
        }
        AdminAction::Status(a) => {
            validate_command_id(&a.command_id).map_err(usage)?;
            let b = connect(settings).await?;
            let rec = b.admin_record(&a.command_id).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "command {} (never sent, or its record expired after admin.record_ttl_ms)",
                    a.command_id
                ))
            })?;
            let result: Option<Value> =
                rec.get("result").and_then(|r| serde_json::from_str(r).ok());
            let job = b.job_get(&a.command_id).await?;
            if a.json {
                print_json(&json!({"record": rec, "result": result, "job": job}));
                return Ok(());
            }
            let g = |k: &str| rec.get(k).cloned().unwrap_or_else(|| "-".into());
            println!(
                "command {}: {} (executor {})",
                a.command_id,
                g("state"),
                g("member")
            );
            if let Some(r) = result {
                println!(
                    "outcome: {}\n{}",
                    r["outcome"].as_str().unwrap_or("?"),
                    r["message"].as_str().unwrap_or("")
                );
            }
            if let Some(j) = job {
                let mut keys: Vec<_> = j.iter().filter(|(k, _)| *k != "spec").collect();
                keys.sort();
                for (k, v) in keys {
                    println!("  job {k}: {v}");
                }
            }
            Ok(())
        }
    }
}
