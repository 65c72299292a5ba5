//! Finding archived dead letters again (`redrive dlq archive list|show|restore`, the HTTP API's
//! archive routes): a page of archived entries, the manifests of a tenant within a range of
//! days, and one dead letter by its id.
//!
//! A page walks the layout in order — tenant, year, month, day (one delimited listing per
//! level, pruned by the range of days), then the manifests of one day at a time — and reads
//! manifests only until the page is full: its cost is set by the page, not by the size of the
//! archive. Its cursor names the last manifest read and how many of its entries were shown.
//!
//! A dead letter archived from the dead-letter stream is in the `dead_letter` object whose name
//! covers its id (the names hold the first and last id), so finding it costs a listing and one
//! read. A resolved or discarded one is named by its id in the stream of removed ones, which an
//! operator does not know: the manifests of those classes are read until one lists it.

use super::crypt::ArchiveKey;
use super::format::{self, ArchiveClass, ArchivedEntry, EntrySummary, Manifest, PathInfo};
use super::store::ArchiveStore;
use crate::error::{Error, Result};

/// The manifests of `tenant` (every tenant when `None`) whose day (`yyyy-mm-dd`, when their
/// batch was begun) is within `since..=until` (either open), oldest day first. Reads every
/// manifest: the lib tests' view of a small archive ([`page`] is the bounded listing).
#[cfg(test)]
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

/// One archived dead letter as a page lists it (from its batch's manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageEntry {
    /// The tenant.
    pub tenant: String,
    /// The day its batch was begun, `yyyy-mm-dd`.
    pub day: String,
    /// Why it left Redis.
    pub class: ArchiveClass,
    /// The data object holding it.
    pub object: String,
    /// Whether its fields are encrypted.
    pub encrypted: bool,
    /// What the manifest says of it.
    pub entry: EntrySummary,
}

/// A page of archived dead letters ([`page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The entries, in the archive's order (tenant, day, batch).
    pub entries: Vec<PageEntry>,
    /// Where the next page starts; `None` when the walk reached the end.
    pub next: Option<String>,
    /// Manifests read for this page (what it cost, besides the listings).
    pub manifests_read: usize,
}

/// Where a page resumes: after `skip` entries of the manifest at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    path: String,
    info: PathInfo,
    skip: usize,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor> {
        let bad = || {
            Error::Usage(format!(
                "'{text}' is not an archive cursor (pass the `next` a previous page returned)"
            ))
        };
        let (path, skip) = text.rsplit_once('#').ok_or_else(bad)?;
        let info = PathInfo::parse(path)
            .filter(|i| i.manifest)
            .ok_or_else(bad)?;
        let skip = skip.parse().map_err(|_| bad())?;
        Ok(Cursor {
            path: path.to_owned(),
            info,
            skip,
        })
    }

    fn text(path: &str, skip: usize) -> String {
        format!("{path}#{skip}")
    }
}

/// The path a day's objects of `tenant` sort after (`tenant/yyyy/mm/dd`, no slash): a listing
/// from there starts at that day.
fn day_start(tenant: &str, day: &str) -> String {
    format!("{tenant}/{}", day.replace('-', "/"))
}

/// Keys listed per request while a page is filled.
const LIST_CHUNK: usize = 1000;

/// Up to `limit` archived dead letters of `tenants` (every tenant in the archive when `None`),
/// in the archive's order — the objects' paths: tenant, day, class, batch —, of batches begun
/// within `since..=until` (`yyyy-mm-dd`, either open), from `after` (a previous page's `next`)
/// on. The listing starts at the cursor (or at `since`'s day, per tenant) and stops once the
/// page is full; manifests are read only for the entries it shows. Without `tenants`, days
/// outside the range are skipped by their names (listed, not read).
pub async fn page(
    store: &ArchiveStore,
    tenants: Option<&[String]>,
    since: Option<&str>,
    until: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page> {
    let after = after.map(Cursor::parse).transpose()?;
    let limit = limit.max(1);
    let prefixes: Vec<Option<String>> = match tenants {
        Some(t) => {
            let mut t = t.to_vec();
            t.sort();
            t.dedup();
            t.into_iter().map(Some).collect()
        }
        None => vec![None],
    };
    let mut out = Page::default();
    for tenant in prefixes {
        if let (Some(c), Some(t)) = (&after, &tenant) {
            if c.info.tenant.as_str() > t.as_str() {
                continue;
            }
        }
        // Where this tenant's (or the archive's) listing starts: the cursor's manifest, else
        // the first day of the range.
        let mut from = tenant.as_deref().zip(since).map(|(t, s)| day_start(t, s));
        if let Some(c) = &after {
            if tenant.as_deref().is_none_or(|t| t == c.info.tenant) {
                if c.skip > 0 {
                    // The rest of the manifest the last page stopped inside.
                    if fill(store, &c.path, &c.info, c.skip, limit, &mut out).await? {
                        return Ok(out);
                    }
                }
                if from.as_deref().is_none_or(|f| f < c.path.as_str()) {
                    from = Some(c.path.clone());
                }
            }
        }
        let prefix = tenant
            .as_deref()
            .map(|t| format!("{t}/"))
            .unwrap_or_default();
        'listing: loop {
            let listed = store
                .list_after(&prefix, from.as_deref(), LIST_CHUNK)
                .await?;
            let full_chunk = listed.len() == LIST_CHUNK;
            for l in &listed {
                let Some(info) = PathInfo::parse(&l.path) else {
                    continue;
                };
                if until.is_some_and(|u| info.day.as_str() > u) {
                    if tenant.is_some() {
                        // This tenant's days from here on are all past the range.
                        break 'listing;
                    }
                    continue;
                }
                if !info.manifest || since.is_some_and(|s| info.day.as_str() < s) {
                    continue;
                }
                if fill(store, &l.path, &info, 0, limit, &mut out).await? {
                    return Ok(out);
                }
            }
            match listed.last() {
                Some(last) if full_chunk => from = Some(last.path.clone()),
                _ => break,
            }
        }
    }
    Ok(out)
}

/// Adds the entries of the manifest at `path` after its first `skip` to `out`; true when the
/// page is full (its `next` set).
async fn fill(
    store: &ArchiveStore,
    path: &str,
    info: &PathInfo,
    skip: usize,
    limit: usize,
    out: &mut Page,
) -> Result<bool> {
    if out.entries.len() >= limit {
        out.next = Some(Cursor::text(path, skip));
        return Ok(true);
    }
    let Some(bytes) = store.get(path).await? else {
        return Ok(false);
    };
    out.manifests_read += 1;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Archive(format!(
            "the manifest {path} in {} is unreadable: {e}",
            store.describe()
        ))
    })?;
    let mut shown = skip;
    for e in m.entries.iter().skip(skip) {
        if out.entries.len() >= limit {
            out.next = Some(Cursor::text(path, shown));
            return Ok(true);
        }
        out.entries.push(PageEntry {
            tenant: m.tenant.clone(),
            day: info.day.clone(),
            class: m.class,
            object: m.object.clone(),
            encrypted: m.key.is_some(),
            entry: e.clone(),
        });
        shown += 1;
    }
    if out.entries.len() >= limit {
        out.next = Some(Cursor::text(path, shown));
        return Ok(true);
    }
    Ok(false)
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
    // A dead letter is archived on or after the day it was dead-lettered (its id's time, by
    // Redis' clock; the batch's day is the archiver's clock, so a day earlier is looked at too,
    // for a member's clock behind Redis' at midnight): the days before are not listed.
    let from = format::parse_id(id)
        .map(|(ms, _)| day_start(tenant, &format::day_text(ms.saturating_sub(86_400_000))));
    let mut infos: Vec<(String, PathInfo)> = Vec::new();
    let mut from = from;
    loop {
        let listed = store
            .list_after(&format!("{tenant}/"), from.as_deref(), LIST_CHUNK)
            .await?;
        let full_chunk = listed.len() == LIST_CHUNK;
        from = listed.last().map(|l| l.path.clone());
        infos.extend(
            listed
                .into_iter()
                .filter_map(|l| PathInfo::parse(&l.path).map(|i| (l.path, i)))
                .filter(|(_, i)| i.tenant == tenant),
        );
        if !full_chunk {
            break;
        }
    }
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
