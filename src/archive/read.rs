//! Finding archived dead letters again (`redrive dlq archive list|show|restore`): the manifests
//! of a tenant (or of all) within a range of days, and one dead letter by its id.
//!
//! A dead letter archived from the dead-letter stream is in the `dead_letter` object whose name
//! covers its id (the names hold the first and last id), so finding it costs a listing and one
//! read. A resolved or discarded one is named by its id in the stream of removed ones, which an
//! operator does not know: the manifests of those classes are read until one lists it.

use super::crypt::ArchiveKey;
use super::format::{self, ArchiveClass, ArchivedEntry, Manifest, PathInfo};
use super::store::ArchiveStore;
use crate::error::{Error, Result};

/// The manifests of `tenant` (every tenant when `None`) whose day (`yyyy-mm-dd`, when their
/// batch was begun) is within `since..=until` (either open), oldest day first.
pub async fn manifests(
    store: &ArchiveStore,
    tenant: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<Vec<(PathInfo, Manifest)>> {
    let listed = store.list(tenant.unwrap_or("")).await?;
    let mut out = Vec::new();
    for l in listed {
        let Some(info) = PathInfo::parse(&l.path) else {
            continue;
        };
        if !info.manifest
            || tenant.is_some_and(|t| t != info.tenant)
            || since.is_some_and(|s| info.day.as_str() < s)
            || until.is_some_and(|u| info.day.as_str() > u)
        {
            continue;
        }
        let Some(bytes) = store.get(&l.path).await? else {
            continue;
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Archive(format!(
                "the manifest {} in {} is unreadable: {e}",
                l.path,
                store.describe()
            ))
        })?;
        out.push((info, m));
    }
    out.sort_by(|a, b| {
        (&a.0.day, &a.1.begun_at_ms, &a.0.first).cmp(&(&b.0.day, &b.1.begun_at_ms, &b.0.first))
    });
    Ok(out)
}

/// The entries of the data object at `object`, opened with `key`.
pub async fn object_entries(
    store: &ArchiveStore,
    object: &str,
    key: Option<&ArchiveKey>,
) -> Result<Vec<ArchivedEntry>> {
    let bytes = store.get(object).await?.ok_or_else(|| {
        Error::Archive(format!(
            "the object {object} is missing from {} (its manifest names it)",
            store.describe()
        ))
    })?;
    format::decode_object(&bytes, key)
        .map_err(|e| Error::Archive(format!("{object} in {}: {e}", store.describe())))
}

/// Archived dead letter `id` of `tenant` and the object holding it; `None` when the archive
/// has no such dead letter. When a dead letter is in more than one object (archived, restored,
/// archived again keeps its new id, so only a copy left by a replay racing its archiving can
/// do that) the first found is returned.
pub async fn find(
    store: &ArchiveStore,
    key: Option<&ArchiveKey>,
    tenant: &str,
    id: &str,
) -> Result<Option<(String, ArchivedEntry)>> {
    if format::parse_id(id).is_none() {
        return Err(Error::Usage(format!(
            "'{id}' is not a dead-letter id (ms-seq, as `dlq list` and task records show it)"
        )));
    }
    let listed = store.list(tenant).await?;
    let infos: Vec<(String, PathInfo)> = listed
        .into_iter()
        .filter_map(|l| PathInfo::parse(&l.path).map(|i| (l.path, i)))
        .filter(|(_, i)| i.tenant == tenant)
        .collect();
    // Dead letters archived from the stream: the object whose name covers the id.
    for (path, info) in &infos {
        if info.manifest || info.class != ArchiveClass::DeadLetter || !info.covers(id) {
            continue;
        }
        let found = object_entries(store, path, key)
            .await?
            .into_iter()
            .find(|e| e.id == id);
        if let Some(e) = found {
            return Ok(Some((path.clone(), e)));
        }
    }
    // Resolved and discarded ones: their manifests list them by dead-letter id.
    for (path, info) in &infos {
        if !info.manifest || info.class == ArchiveClass::DeadLetter {
            continue;
        }
        let Some(bytes) = store.get(path).await? else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        if !m.entries.iter().any(|e| e.id == id) {
            continue;
        }
        let found = object_entries(store, &m.object, key)
            .await?
            .into_iter()
            .find(|e| e.id == id);
        if let Some(e) = found {
            return Ok(Some((m.object.clone(), e)));
        }
    }
    Ok(None)
}
