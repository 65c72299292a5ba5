//! `redrive breaker open|close TENANT`: sent through the admin command stream (or run in the
//! CLI with `--local`) and executed by [`crate::admin::breaker::breaker`].

use clap::{Args, Subcommand};

use super::args::{mutation, MutationArgs};
use super::common::{connect, usage};
use super::submit::send;
use crate::admin::AdminCommand;
use crate::config::Settings;
use crate::error::Result;

/// `redrive breaker …`
#[derive(Debug, Subcommand)]
pub enum BreakerAction {
    /// Open a tenant's breaker and hold it open (no cool-down, no probe) until closed by hand:
    /// its tasks stay in its lane, unattempted.
    Open(BreakerArgs),
    /// Close a tenant's breaker (clearing its failure window): its tasks run again.
    Close(BreakerArgs),
}

/// The flags of `redrive breaker open|close`: the tenant, and the flags of every change made
/// through the admin command stream (`--reason` defaults to "by hand" here; it goes into the
/// tenant's breaker log and the audit trail).
#[derive(Debug, Args)]
pub struct BreakerArgs {
    /// The tenant.
    pub tenant: String,
    /// Reason, operator, command id, `--local`, timeout, `--json`.
    #[command(flatten)]
    pub m: MutationArgs,
}

/// Runs `redrive breaker open|close`.
pub async fn run(action: BreakerAction, settings: &Settings) -> Result<()> {
    let (open, args) = match action {
        BreakerAction::Open(a) => (true, a),
        BreakerAction::Close(a) => (false, a),
    };
    send_breaker(&args.tenant, open, &args.m, settings).await
}

/// `redrive breaker open|close TENANT` through the admin command stream (or `--local`).
pub async fn send_breaker(
    tenant: &str,
    open: bool,
    m: &MutationArgs,
    settings: &Settings,
) -> Result<()> {
    crate::task::validate_tenant(tenant).map_err(|e| usage(e.to_string()))?;
    let v = mutation(m, settings, Some("by hand"))?;
    let b = connect(settings).await?;
    // An unknown tenant is refused here, before anything is sent.
    crate::admin::breaker::known_tenant(&b, tenant).await?;
    send(
        b,
        settings,
        m,
        v,
        AdminCommand::Breaker(crate::admin::BreakerSpec {
            tenant: tenant.to_owned(),
            open,
        }),
    )
    .await
}
