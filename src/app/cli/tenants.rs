//! `redrive tenants [TENANT]`: every tenant (lane depth, pending, retries, dead letters,
//! in-flight, breaker), read from Redis directly through the broker's verbs; the report
//! itself is [`crate::app::tenants`], which the HTTP API serves too.

use clap::Args;
use serde::Serialize;

use super::common::{connect, print_report};
pub use crate::app::tenants::{tenants, BreakerReport, TenantReport};
use crate::config::Settings;
use crate::error::Result;

/// The flags of `redrive tenants`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// Show only this tenant, with its recent breaker transitions.
    pub tenant: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn breaker_text(b: &BreakerReport) -> String {
    match b.state.as_str() {
        "open" if b.held => format!("open, held ({})", b.detail),
        "open" => format!(
            "open ({}, {:.1} s left)",
            b.reason,
            b.cooldown_left_ms.unwrap_or(0) as f64 / 1000.0
        ),
        "half_open" => match &b.probe {
            Some(_) => "half_open (probe running)".to_owned(),
            None => "half_open (waiting for a probe)".to_owned(),
        },
        other => other.to_owned(),
    }
}

/// Renders the report as a table.
pub fn render(reports: &[TenantReport]) -> String {
    let mut out = format!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>9} {:>5} {:>6}  {}\n",
        "TENANT", "LANE", "PENDING", "RETRIES", "DEAD", "IN-FLIGHT", "CAP", "WEIGHT", "BREAKER"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>9} {:>5} {:>6}  {}\n",
            r.tenant,
            r.lane_depth,
            r.pending,
            r.retries_scheduled,
            r.dead_letters,
            r.in_flight,
            r.max_in_flight
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            r.weight,
            breaker_text(&r.breaker)
        ));
        if let Some(ts) = &r.transitions {
            if ts.is_empty() {
                out.push_str("  no breaker transitions yet\n");
            }
            for t in ts {
                out.push_str(&format!(
                    "  {} {} → {} ({}) by {}: {}\n",
                    t.at_ms, t.from, t.to, t.reason, t.by, t.detail
                ));
            }
        }
    }
    if reports.is_empty() {
        out.push_str("(no tenant is registered yet)\n");
    }
    out
}

/// Runs `redrive tenants`.
pub async fn run(args: TenantsArgs, settings: &Settings) -> Result<()> {
    let broker = connect(settings).await?;
    let reports = tenants(&broker, settings, args.tenant.as_deref()).await?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            tenants: &'a [TenantReport],
        }
        return print_report(&Out { tenants: &reports });
    }
    print!("{}", render(&reports));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BreakerInfo;

    #[test]
    fn a_held_breaker_reads_as_held() {
        let b = BreakerInfo {
            state: "open".into(),
            until_ms: 0,
            detail: "incident 42".into(),
            ..Default::default()
        };
        let r = BreakerReport::new(b, 10);
        assert!(r.held);
        assert_eq!(r.cooldown_left_ms, None);
        assert_eq!(breaker_text(&r), "open, held (incident 42)");
        let b = BreakerInfo {
            state: "open".into(),
            until_ms: 2_500,
            reason: "failure_threshold".into(),
            ..Default::default()
        };
        let r = BreakerReport::new(b, 1_000);
        assert_eq!(r.cooldown_left_ms, Some(1_500));
        assert_eq!(breaker_text(&r), "open (failure_threshold, 1.5 s left)");
    }
}
