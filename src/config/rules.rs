//! Rules across sections, each a named function with its reason.

use super::fleet::FleetSettings;
use crate::error::{Error, Result};

/// Without heartbeats a running task's entry ages from its delivery, so the idle time must
/// outlast the longest attempt. With heartbeats a live attempt keeps its entry fresh and the
/// idle time only has to notice dead or frozen members.
pub(crate) fn reclaim_outlasts_attempts(fleet: &FleetSettings) -> Result<()> {
    let rc = &fleet.reclaim;
    if !rc.heartbeat && rc.min_idle <= fleet.task_timeout {
        return Err(Error::Config(format!(
            "reclaim.min_idle_ms = {} must exceed fleet.task_timeout_ms = {} when reclaim.heartbeat = false: \
             a task still running would be reclaimed and run twice",
            rc.min_idle.as_millis(),
            fleet.task_timeout.as_millis()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, Settings};

    fn fleet(edit: impl FnOnce(&mut RawConfig)) -> FleetSettings {
        let mut raw = RawConfig::defaults().unwrap();
        edit(&mut raw);
        // Settings::from_raw applies the rule; build the section without it to test it alone.
        let retry = crate::config::retry::validate(&raw.retry).unwrap();
        let reclaim = crate::config::reclaim::validate(&raw.reclaim).unwrap();
        crate::config::fleet::validate(&raw.fleet, reclaim, &retry).unwrap()
    }

    #[test]
    fn reclaim_must_outlast_attempts_only_without_heartbeats() {
        let with_beats = fleet(|c| c.reclaim.min_idle_ms = 1_000);
        assert!(reclaim_outlasts_attempts(&with_beats).is_ok());
        let without = fleet(|c| {
            c.reclaim.heartbeat = false;
            c.reclaim.min_idle_ms = 30_000
        });
        let err = reclaim_outlasts_attempts(&without).unwrap_err().to_string();
        assert!(
            err.contains("reclaim.min_idle_ms = 30000 must exceed fleet.task_timeout_ms = 30000"),
            "{err}"
        );
        let longer = fleet(|c| {
            c.reclaim.heartbeat = false;
            c.reclaim.min_idle_ms = 30_001
        });
        assert!(reclaim_outlasts_attempts(&longer).is_ok());
        assert!(Settings::from_raw(RawConfig::defaults().unwrap()).is_ok());
    }
}
