//! The dead-letter reads, as `redrive dlq list|stats|export|show --json` give them: a page of
//! a filtered list with a cursor, stats with the top fingerprints, every match as a JSON Lines
//! stream, one dead letter whole. Every filter is narrowed to the token's tenants first.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{query_filter, window};
use crate::admin::review::ReviewState;
use crate::admin::scan::Pages;
use crate::admin::select::DlId;
use crate::app::report::{self, ListQuery};
use crate::app::serve::error::{ApiError, ApiResult};
use crate::app::serve::extract::{Params, PathArgs};
use crate::app::serve::principal::Principal;
use crate::app::serve::redact;
use crate::app::serve::state::AppState;
use crate::app::view::DeadLetterView;
use crate::error::Error;

/// The most entries one page lists.
const MAX_LIMIT: usize = 10_000;

/// A page of dead letters: the filter (`tenant`, `class`, `kind`, `fingerprint`, `since`,
/// `until`, `payload`), `task_id`, `state`, `assignee`, `folds` (`collapse`: a fold's
/// representative stands for its members, the default; `expand`), `order` (`oldest` or `newest` first), `cursor` (the `next_cursor` of the page before), `limit` (1 to 10000, default 50)
/// and `scan_limit` (the most dead letters the page reads; see [`report::list_page`]).
pub async fn list(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    Ok(Json(list_doc(&st, &p, &mut q).await?))
}

/// The document of `GET /api/v1/dead-letters` for the query `q` (the console's list shows it).
pub async fn list_doc(st: &AppState, p: &Principal, q: &mut Params) -> ApiResult<Value> {
    let now = st.broker.server_time_ms().await?;
    let mut filter = query_filter(q, now)?;
    let task_id = q.one("task_id")?;
    let order = q.one("order")?;
    let cursor = q.one("cursor")?;
    let limit = q.number("limit", 50usize, 1, MAX_LIMIT)?;
    let states = q
        .all("state")
        .iter()
        .map(|s| {
            ReviewState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state = '{s}' is not a review state; give new, in_review, escalated or folded"
                ))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let assignees = q.all("assignee");
    for a in &assignees {
        crate::admin::review::validate_assignee(a)
            .map_err(|e| ApiError::bad_request(e.replace("--to", "assignee")))?;
    }
    let folds = q.one("folds")?;
    let scan_limit = q.number(
        "scan_limit",
        report::LIST_SCAN_LIMIT,
        100,
        report::LIST_SCAN_MAX,
    )?;
    q.finish()?;
    if let Some(id) = &task_id {
        crate::task::validate_task_id(id)
            .map_err(|e| ApiError::bad_request(format!("task_id: {e}")))?;
    }
    let expand_folds = match folds.as_deref() {
        None | Some("collapse") => states.contains(&ReviewState::Folded),
        Some("expand") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "folds = '{other}' is not a choice; give `collapse` or `expand`"
            )))
        }
    };
    let newest_first = match order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order = '{other}' is not an order; give `oldest` or `newest`"
            )))
        }
    };
    let cursor = cursor
        .as_deref()
        .map(|c| DlId::parse(c, None).map_err(|e| ApiError::bad_request(format!("cursor: {e}"))))
        .transpose()?;
    if let Some(c) = &cursor {
        // A cursor names a position in one tenant's dead letters: another tenant's answers
        // like a tenant that does not exist.
        p.tenant(&c.tenant)?;
    }
    p.narrow(&mut filter)?;
    let page = report::list_page(
        &st.broker,
        &ListQuery {
            filter,
            task_id,
            cursor,
            limit,
            newest_first,
            scan_limit,
            states,
            assignees,
            expand_folds,
        },
    )
    .await?;
    Ok(json!({
        "entries": page.entries.iter().map(|e| e.summary_json()).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
        "scanned": page.scanned,
        "scan_limit_reached": page.scan_limit_reached,
    }))
}

/// Counts by tenant, class and kind, the `top` (1 to 1000, default 10) fingerprints with a
/// sample error, the oldest entry and the recovery rate over `window` (default 24h).
pub async fn stats(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Json<Value>> {
    Ok(Json(stats_doc(&st, &p, &mut q).await?))
}

/// The document of `GET /api/v1/dead-letters/stats` for the query `q` (the console's grouping
/// by fingerprint shows it).
pub async fn stats_doc(st: &AppState, p: &Principal, q: &mut Params) -> ApiResult<Value> {
    let now = st.broker.server_time_ms().await?;
    let mut filter = query_filter(q, now)?;
    let top = q.number("top", 10usize, 1, 1_000)?;
    let w = window(q, "24h")?;
    q.finish()?;
    if !filter.payload.is_empty() {
        // Stats are counted on the server by class, kind and fingerprint; they cannot look
        // into payloads (the route table does not list `payload`, so the API refuses it first).
        return Err(ApiError::bad_request(
            "payload: stats count by class, kind and fingerprint; a payload filter works on the \
             list, the export and changes",
        ));
    }
    p.narrow(&mut filter)?;
    let s = report::stats(&st.broker, &filter, top, w).await?;
    Ok(serde_json::to_value(s).unwrap_or(Value::Null))
}

/// Every dead letter the filter matches as JSON Lines (`application/x-ndjson`), tenant by
/// tenant, oldest first, streamed a page at a time, as a download (`Content-Disposition:
/// attachment`, so the console's link saves a file). An error once the stream has begun ends
/// it with a last line `{"error": …}` and a broken transfer, so a partial export cannot pass
/// for a whole one.
pub async fn export(
    State(st): State<AppState>,
    p: Principal,
    mut q: Params,
) -> ApiResult<Response> {
    let now = st.broker.server_time_ms().await?;
    let mut filter = query_filter(&mut q, now)?;
    q.finish()?;
    p.narrow(&mut filter)?;
    let disposition = export_disposition(filter.tenants.as_slice(), now);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let broker = st.broker.clone();
    let see = p.sees_payloads();
    tokio::spawn(async move {
        let mut pages = match Pages::new(broker, filter).await {
            Ok(p) => p,
            Err(e) => return export_failed(&tx, e).await,
        };
        loop {
            let (tenant, page) = match pages.next().await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => return export_failed(&tx, e).await,
            };
            let mut chunk = Vec::with_capacity(page.len() * 512);
            for (entry, _) in page {
                let mut v = DeadLetterView::from_entry(&tenant, entry).to_json();
                if !see {
                    redact::dead_letter(&mut v);
                }
                chunk.extend_from_slice(v.to_string().as_bytes());
                chunk.push(b'\n');
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                // The client went away: stop reading.
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = HttpBody::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The export's `Content-Disposition`: a download named after its tenant (when the filter
/// names one) and the server's time, `dead-letters-acme-20250131T080000Z.jsonl`. Tenant names
/// are letters, digits, `-`, `_` and `.`, so the name needs no quoting beyond the quotes.
fn export_disposition(tenants: &[String], now_ms: u64) -> String {
    let stamp: String = crate::admin::time::format_time(now_ms)
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let tenant = match tenants {
        [one] => format!("{one}-"),
        _ => String::new(),
    };
    format!("attachment; filename=\"dead-letters-{tenant}{stamp}Z.jsonl\"")
}

/// Ends an export that failed: a last line saying why, then a broken transfer.
async fn export_failed(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, e: Error) {
    let line = json!({"error": {"code": "export_failed", "message": e.message()}});
    let _ = tx.send(Ok(Bytes::from(format!("{line}\n")))).await;
    let _ = tx
        .send(Err(std::io::Error::other("the export failed")))
        .await;
}

/// One dead letter whole: payload, attempts, error, steps, partial output, recommended action
/// (payloads and outputs hidden from a viewer that may not see them).
pub async fn show(
    State(st): State<AppState>,
    p: Principal,
    PathArgs((tenant, id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(show_doc(&st, &p, &tenant, &id).await?))
}

/// The document of `GET /api/v1/tenants/{tenant}/dead-letters/{id}` (the console's page of
/// one dead letter shows it).
pub async fn show_doc(st: &AppState, p: &Principal, tenant: &str, id: &str) -> ApiResult<Value> {
    let tenant = p.tenant(tenant)?;
    let id = DlId::parse(id, Some(&tenant)).map_err(ApiError::bad_request)?;
    if id.tenant != tenant {
        return Err(ApiError::bad_request(format!(
            "'{id}' is an entry id of tenant {}: give the bare entry id",
            id.tenant
        )));
    }
    let entry = st
        .broker
        .dlq_entries(&id.tenant, &[id.id.as_str()])
        .await?
        .into_iter()
        .next()
        .flatten()
        .filter(|e| e.fields.is_some())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "dead letter {id} not found (it may have been replayed, resolved, discarded or \
                 purged; see the audit trail)"
            ))
        })?;
    let view = DeadLetterView::from_entry(&id.tenant, entry);
    let review = report::review_of(&st.broker, &id.tenant, &id.id, &view.fields).await?;
    let mut v = view.with_review(review).to_json();
    if !p.sees_payloads() {
        redact::dead_letter(&mut v);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_is_a_download_named_after_its_tenant_and_time() {
        // 2025-01-31T08:00:05.123Z
        let now = 1_738_310_405_123;
        assert_eq!(
            export_disposition(&["acme".into()], now),
            "attachment; filename=\"dead-letters-acme-20250131T080005Z.jsonl\""
        );
        assert_eq!(
            export_disposition(&["acme".into(), "globex".into()], now),
            "attachment; filename=\"dead-letters-20250131T080005Z.jsonl\""
        );
        assert_eq!(
            export_disposition(&[], now),
            "attachment; filename=\"dead-letters-20250131T080005Z.jsonl\""
        );
    }
}
