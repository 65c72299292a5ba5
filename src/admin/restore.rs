//! `restore`: archived dead letters back into their tenants' dead-letter streams, as dead
//! letters again (byte for byte the fields they were archived with, plus `restored_from`), each
//! at most once whoever asks again, with their tasks' records (scripts/dlq_restore.lua).
//!
//! Every named dead letter is looked up in the archive first; one missing changes nothing. A
//! resolved or discarded one comes back without the stamps of its removal (who, why, which
//! command: they stay in the audit trail and in the archive).

use serde_json::{json, Value};

use super::context::AdminContext;
use super::select::DlId;
use super::RestoreSpec;
use crate::archive::read;
use crate::archive::ArchiveStore;
use crate::broker::{RestoreItem, RestoreOutcome};
use crate::error::{Error, Result};
use crate::telemetry::events;

/// Fields a removal stamped on a dead letter (scripts/dlq_remove.lua); a restore leaves them
/// out, and the earlier restore's mark, which the script writes anew.
const STAMPS: [&str; 7] = [
    "dead_letter_id",
    "removed_action",
    "removed_by",
    "removed_reason",
    "removed_command",
    "removed_at",
    "restored_from",
];

/// Restores the archived dead letters `spec` names (see the module doc).
pub async fn restore(ctx: &AdminContext, spec: &RestoreSpec) -> Result<(String, Value)> {
    spec.validate().map_err(Error::Usage)?;
    let store = ArchiveStore::open(&ctx.archive)?;
    let key = ctx.archive.key.as_ref();
    let ids = super::select::dedup(spec.ids.clone());
    let mut found: Vec<(DlId, String, RestoreItem)> = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for d in ids {
        match read::find(&store, key, &d.tenant, &d.id).await? {
            Some((object, e)) => {
                let task_id = e
                    .field("task_id")
                    .filter(|t| crate::task::validate_task_id(t).is_ok())
                    .map(str::to_owned);
                let kind = e
                    .field("kind")
                    .filter(|k| crate::task::validate_kind(k).is_ok())
                    .unwrap_or("")
                    .to_owned();
                let fields = e
                    .fields
                    .into_iter()
                    .filter(|(k, _)| !STAMPS.iter().any(|s| k.as_slice() == s.as_bytes()))
                    .collect();
                found.push((
                    d.clone(),
                    object,
                    RestoreItem {
                        archived_id: d.id.clone(),
                        task_id,
                        kind,
                        fields,
                    },
                ));
            }
            None => missing.push(d.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "archived dead letters {} are not in the archive ({}); nothing was restored",
            missing.join(", "),
            store.describe()
        )));
    }
    let records = ctx.tasks.enabled;
    let mut restored = Vec::new();
    let mut already = Vec::new();
    let mut full = Vec::new();
    let mut tenants: Vec<String> = found.iter().map(|(d, _, _)| d.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    for tenant in &tenants {
        let mine: Vec<&(DlId, String, RestoreItem)> = found
            .iter()
            .filter(|(d, _, _)| &d.tenant == tenant)
            .collect();
        let (mut new, mut again) = (0u64, 0u64);
        for chunk in mine.chunks(ctx.settings.batch.max(1)) {
            let items: Vec<RestoreItem> = chunk.iter().map(|(_, _, i)| i.clone()).collect();
            let out = ctx
                .broker
                .dlq_restore(tenant, ctx.dlq_ceiling, records, &items)
                .await?;
            for ((d, object, _), r) in chunk.iter().zip(out) {
                let row = |id: &str| json!({"archived": d.to_string(), "object": object, "id": format!("{tenant}/{id}")});
                match r {
                    RestoreOutcome::Restored(id) => {
                        new += 1;
                        restored.push(row(&id));
                    }
                    RestoreOutcome::Already(id) => {
                        again += 1;
                        already.push(row(&id));
                    }
                    RestoreOutcome::Full => full.push(d.to_string()),
                }
            }
        }
        events::archive::restored(tenant, new, again);
    }
    let mut message = format!(
        "restored {} archived dead letters as dead letters again",
        restored.len()
    );
    if !already.is_empty() {
        message.push_str(&format!(
            ", {} restored before (left as they are)",
            already.len()
        ));
    }
    let details = json!({"restored": restored, "already": already, "refused": full});
    if !full.is_empty() {
        return Err(Error::Refused(format!(
            "{message}; {} not: their tenant's dead-letter stream is at its hard ceiling \
             (dead_letter.hard_max_len): {}",
            full.len(),
            full.join(", ")
        )));
    }
    Ok((message, details))
}
