//! Opening and closing a tenant's breaker by hand: what the admin executor runs for a
//! `breaker` command (from a fleet member or the CLI's `--local`).

use serde::Serialize;

use crate::broker::Broker;
use crate::error::{Error, Result};

/// The log target these lines had when they lived in the CLI module; filters name it.
const LOG_TARGET: &str = "redrive::isolation::cli";

/// What `redrive breaker open|close` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerChange {
    /// The tenant.
    pub tenant: String,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// False when the breaker already was in that state (nothing was written).
    pub changed: bool,
    /// The operator's reason.
    pub reason: String,
    /// The operator.
    pub operator: String,
}

/// `Ok` when `tenant` is a valid name and registered; a clear "not found" (with some registered names) otherwise.
pub async fn known_tenant(broker: &Broker, tenant: &str) -> Result<()> {
    crate::task::validate_tenant(tenant).map_err(|e| usage(e.to_string()))?;
    let all = broker.tenants().await?;
    if all.iter().any(|t| t == tenant) {
        return Ok(());
    }
    let known = if all.is_empty() {
        "no tenant is registered yet".to_owned()
    } else {
        let mut list: Vec<&str> = all.iter().take(10).map(String::as_str).collect();
        if all.len() > 10 {
            list.push("…");
        }
        format!("registered: {}", list.join(", "))
    };
    Err(Error::NotFound(format!(
        "tenant '{tenant}' is not registered (it never had a task enqueued); {known}"
    )))
}

/// Opens or closes a tenant's breaker as `operator`, for `reason` (checked by the same rules as
/// every admin command, so what the CLI accepted the member accepts too).
pub async fn breaker(
    broker: &Broker,
    tenant: &str,
    open: bool,
    reason: &str,
    operator: &str,
) -> Result<BreakerChange> {
    crate::admin::validate_reason(reason).map_err(usage)?;
    crate::admin::validate_operator(operator).map_err(usage)?;
    let operator = operator.to_owned();
    known_tenant(broker, tenant).await?;
    let (from, to, changed) = broker.breaker_set(tenant, open, &operator, reason).await?;
    if changed {
        tracing::warn!(
            target: LOG_TARGET,
            tenant, from = %from, to = %to, reason = crate::isolation::reason::OPERATOR,
            detail = reason, by = %operator, "breaker transition"
        );
    }
    Ok(BreakerChange {
        tenant: tenant.to_owned(),
        from,
        to,
        changed,
        reason: reason.to_owned(),
        operator,
    })
}

/// One line saying what a breaker command did.
pub fn describe(change: &BreakerChange, open: bool) -> String {
    match (change.changed, open) {
        (true, true) => format!(
            "breaker of {}: {} → open, held until `redrive breaker close {}`",
            change.tenant, change.from, change.tenant
        ),
        (true, false) => format!(
            "breaker of {}: {} → closed; its tasks run again",
            change.tenant, change.from
        ),
        (false, true) => format!("breaker of {} was already held open", change.tenant),
        (false, false) => format!("breaker of {} was already closed", change.tenant),
    }
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}
