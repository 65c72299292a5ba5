//! `GET /purge`: an admin's purge of one tenant's dead letters older than a duration, as `redrive
//! dlq purge` and `POST /api/v1/tenants/{tenant}/dead-letters/purge` make it — the tenant and
//! the age first, then how many would go (counted now, nothing changed), then the confirm:
//! the tenant's name typed again and a reason. `POST /purge` checks the typed name and sends
//! the purge (the API's own `send_purge`, confirmed), then shows its command.
//!
//! Purged dead letters are deleted, not archived: the typed name makes a slip of the tenant
//! picker cost a retype, not a tenant's evidence.

use axum::extract::State;
use axum::http::StatusCode;
use maud::html;

use crate::app::serve::console::form::{Fields, Form};
use crate::app::serve::console::html::{
    csrf, respond, shell, title, to_command, InPage, Nav, PageResult,
};
use crate::app::serve::console::visit::Ctx;
use crate::app::serve::error::ApiError;
use crate::app::serve::routes::recovery::{purge_preview, send_purge, PurgeBody};
use crate::app::serve::state::AppState;

/// The age the form starts with: the CLI has no default, the page suggests a month.
const DEFAULT_AGE: &str = "30d";

/// The purge page: the tenant and age, the count of what would go, the confirm.
pub async fn page(State(st): State<AppState>, ctx: Ctx, req: axum::extract::Request) -> PageResult {
    let f = Fields::parse(req.uri().query().unwrap_or(""));
    let tenants = ctx
        .principal
        .visible(st.broker.tenants().await.in_page(&ctx)?);
    let tenant = f.one("tenant");
    let older_than = f.one("older_than").unwrap_or_else(|| DEFAULT_AGE.into());
    let preview = match &tenant {
        Some(t) => Some(purge_preview(&st, &ctx.principal, t, &older_than).await),
        None => None,
    };
    let status = match &preview {
        Some(Err(e)) if e.status == StatusCode::NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    let choose = html! {
        section.panel aria-labelledby="h-what" {
            h2 #h-what { "1 · Which dead letters" }
            form.filters method="get" action=(ctx.url("/purge")) #purge-select {
                div.field {
                    label for="p-tenant" { "Tenant" }
                    select #p-tenant name="tenant" required {
                        @if tenant.is_none() { option value="" { "Choose a tenant" } }
                        @for t in &tenants { option value=(t) selected[tenant.as_deref() == Some(t.as_str())] { (t) } }
                    }
                }
                div.field {
                    label for="p-older" { "Older than" }
                    input #p-older type="text" name="older_than" required value=(older_than) placeholder="30d, 12h, 0s for all";
                }
                div.actions { button type="submit" #purge-count { "Count them" } }
            }
            p.hint { "Every dead letter of the tenant dead-lettered longer ago than this (" code { "0s" } ": all of them). Purged dead letters are deleted, not archived: to keep a record, resolve or discard them instead, or export them first." }
        }
    };
    let counted = match &preview {
        None => html! {},
        Some(Err(e)) => html! {
            section.panel aria-labelledby="h-count" {
                h2 #h-count { "2 · What would go" }
                div.notice.bad role="alert" #purge-error { b { (e.status.as_u16()) " · " } (e.message) }
            }
        },
        Some(Ok(p)) => html! {
            section.panel aria-labelledby="h-count" #purge-preview {
                h2 #h-count { "2 · What would go" }
                div.cards {
                    div class={ "card" @if p.count > 0 { " bad" } } {
                        div.label { "Would be deleted" }
                        div.value #purge-would { (p.count) }
                        div.sub { "of " (p.tenant) ", older than " (p.age()) }
                    }
                }
                @if p.count == 0 {
                    p.muted #purge-nothing { "Nothing to purge: no dead letter of " (p.tenant) " is older than " (p.age()) "." }
                }
            }
            @if p.count > 0 {
                section.panel aria-labelledby="h-confirm" {
                    h2 #h-confirm { "3 · Confirm" }
                    form method="post" action=(ctx.url("/purge")) #purge-confirm {
                        (csrf(&ctx))
                        input type="hidden" name="tenant" value=(p.tenant);
                        input type="hidden" name="older_than" value=(older_than);
                        div.form-grid {
                            div.field {
                                label for="p-confirm" { "Type " b { (p.tenant) } " to confirm" }
                                input #p-confirm type="text" name="confirm" required autocomplete="off" spellcheck="false" aria-describedby="p-confirm-hint";
                                div.hint #p-confirm-hint { "The tenant's name, exactly." }
                            }
                            div.field.wide {
                                label for="p-reason" { "Reason (kept in the audit trail)" }
                                input #p-reason type="text" name="reason" required maxlength="500" placeholder="retention: older than a month";
                            }
                        }
                        p { button.danger type="submit" #purge-submit { "Delete " (p.count) " dead letter" @if p.count != 1 { "s" } " of " (p.tenant) " for good" } }
                        p.hint { "The count is taken again when the purge runs: dead letters that reach the age meanwhile go too." }
                        @if ctx.read_only { p.notice.warn { "This server is read-only: the purge will be refused." } }
                    }
                }
            }
        },
    };
    let body = html! {
        div.crumbs { a href=(ctx.url("/dead-letters")) { "Dead letters" } " / purge" }
        (title("Purge dead letters", html! { span.badge.bad { "admin" } }))
        (choose)
        (counted)
    };
    Ok(respond(
        status,
        shell(&ctx, Nav::DeadLetters, "Purge dead letters", body),
    ))
}

/// Sends the confirmed purge: the typed name must be the tenant's (else nothing is sent), then
/// the command's page with its result.
pub async fn confirm(State(st): State<AppState>, ctx: Ctx, Form(f): Form) -> PageResult {
    let tenant = f.one("tenant").unwrap_or_default();
    let older_than = f.one("older_than").unwrap_or_default();
    // The tenant first: one the login may not see answers 404 whatever was typed.
    ctx.principal.tenant(&tenant).in_page(&ctx)?;
    if f.one("confirm").as_deref() != Some(tenant.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the confirmation does not match: type the tenant's name, {tenant}, exactly to purge \
             its dead letters. Nothing was purged"
        )))
        .in_page(&ctx);
    }
    let body = PurgeBody {
        older_than,
        confirm: true,
        reason: f.one("reason"),
        command_id: None,
    };
    let sent = send_purge(&st, &ctx.principal, &tenant, body)
        .await
        .in_page(&ctx)?;
    Ok(to_command(&ctx, &sent))
}
