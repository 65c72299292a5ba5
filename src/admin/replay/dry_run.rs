//! The dry run (`--dry-run`): what a replay would do, without writing anything.

use serde::Serialize;
use serde_json::Value;

use super::build::{build, build_options, Built};
use super::selection::{by_tenant, select};
use crate::admin::context::AdminContext;
use crate::admin::scan::pin;
use crate::admin::select::field_str;
use crate::admin::ReplaySpec;
use crate::deadletter::field as dl;
use crate::error::Result;
use crate::task::field;

#[derive(Debug, Clone, Serialize)]
pub struct SampleItem {
    /// The dead letter.
    pub id: String,
    /// Its task id.
    pub task_id: String,
    /// Its class.
    pub class: String,
    /// `replay`, `refused` or `invalid`.
    pub verdict: String,
    /// Why not, for refused and invalid ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The kind it would run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The payload it would run with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Migrations it would go through, as "from->to".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Dead letters selected.
    pub selected: u64,
    /// Of those, how many would be replayed.
    pub would_replay: u64,
    /// Refused by a guardrail.
    pub refused: u64,
    /// Not replayable as they are.
    pub invalid: u64,
    /// Listed ids that do not exist.
    pub missing: Vec<String>,
    /// The first few, in replay order, as they would be replayed.
    pub sample: Vec<SampleItem>,
}

/// Evaluates a replay without writing anything (`--dry-run`).
pub async fn dry_run(ctx: &AdminContext, spec: &ReplaySpec, operator: &str) -> Result<DryRun> {
    let now = ctx.broker.server_time_ms().await?;
    let mut spec = spec.clone();
    spec.select = spec.select.as_ref().map(|s| pin(s, now));
    let (items, missing) = select(ctx, &spec).await?;
    let mut out = DryRun {
        selected: items.len() as u64,
        would_replay: 0,
        refused: 0,
        invalid: 0,
        missing: missing.iter().map(|d| d.to_string()).collect(),
        sample: Vec::new(),
    };
    let opts = build_options(ctx, &spec, operator, now);
    for chunk in items.chunks(ctx.settings.batch) {
        for (tenant, group) in by_tenant(&chunk.iter().map(|s| s.id.clone()).collect::<Vec<_>>()) {
            let refs: Vec<&str> = group.iter().map(|d| d.id.as_str()).collect();
            let entries = ctx.broker.dlq_entries(&tenant, &refs).await?;
            for (d, e) in group.into_iter().zip(entries) {
                let Some(fields) = e.and_then(|e| e.fields) else {
                    continue;
                };
                let built = build(&d, &fields, &opts);
                let mut item = SampleItem {
                    id: d.to_string(),
                    task_id: field_str(&fields, field::TASK_ID).unwrap_or("").into(),
                    class: field_str(&fields, dl::CLASS).unwrap_or("").into(),
                    verdict: String::new(),
                    why: None,
                    kind: None,
                    payload: None,
                    migrations: Vec::new(),
                };
                match built {
                    Built::Ready(task, steps) => {
                        out.would_replay += 1;
                        item.verdict = "replay".into();
                        item.kind = Some(task.kind.clone());
                        item.payload = serde_json::from_str(&task.payload).ok();
                        item.migrations = steps.iter().map(|(a, b)| format!("{a}->{b}")).collect();
                    }
                    Built::Refused(why) => {
                        out.refused += 1;
                        item.verdict = "refused".into();
                        item.why = Some(why);
                    }
                    Built::Invalid(why) => {
                        out.invalid += 1;
                        item.verdict = "invalid".into();
                        item.why = Some(why);
                    }
                }
                if out.sample.len() < ctx.settings.sample {
                    out.sample.push(item);
                }
            }
        }
    }
    Ok(out)
}
