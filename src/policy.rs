//! Retry policy: pure decisions about what follows a failed attempt. No I/O; randomness comes
//! in as an argument so tests pin it.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handler::FailureClass;

/// How delays grow between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Fixed tiers: the delay before attempt n+1 is `delays[n-1]`, the last tier repeating.
    Tiered,
    /// `base × factor^(n-1)`, capped.
    Exponential,
}

/// How randomness spreads retries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniform in `[0, delay]` (AWS "full jitter"): a retry may come almost at once. Opt-in.
    Full,
    /// Uniform in `[delay/2, delay]`: never sooner than half the tier. The default.
    Equal,
    /// Exactly the delay.
    None,
}

/// Partial policy settings: the defaults, a kind's override, or a tenant's override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// Attempts in all, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Tiered or exponential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Tier delays, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delays_ms: Option<Vec<u64>>,
    /// Exponential base, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    /// Exponential factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Cap of any computed delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Jitter mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// A complete policy for one (tenant, kind).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_attempts: u32,
    /// Growth mode.
    pub backoff: Backoff,
    /// Tier delays.
    pub delays: Vec<Duration>,
    /// Exponential base.
    pub base: Duration,
    /// Exponential factor.
    pub factor: f64,
    /// Cap of any delay (a handler's retry-after included).
    pub max_delay: Duration,
    /// Jitter mode.
    pub jitter: Jitter,
}

impl RetryPolicy {
    fn apply(&mut self, o: &PolicyOverride) {
        if let Some(v) = o.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = &o.backoff {
            self.backoff = v.clone();
        }
        if let Some(v) = &o.delays_ms {
            self.delays = v.iter().map(|ms| Duration::from_millis(*ms)).collect();
        }
        if let Some(v) = o.base_ms {
            self.base = Duration::from_millis(v);
        }
        if let Some(v) = o.factor {
            self.factor = v;
        }
        if let Some(v) = o.max_delay_ms {
            self.max_delay = Duration::from_millis(v);
        }
        if let Some(v) = o.jitter {
            self.jitter = v;
        }
    }

    /// Checks a policy for contradictions; `origin` names where it came from.
    pub fn validate(&self, origin: &str) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > 1000 {
            return Err(format!(
                "{origin}.max_attempts = {} must be between 1 and 1000",
                self.max_attempts
            ));
        }
        if self.backoff == Backoff::Tiered && self.delays.is_empty() {
            return Err(format!(
                "{origin}.delays_ms must list at least one delay when backoff = \"tiered\""
            ));
        }
        if !(1.0..=100.0).contains(&self.factor) {
            return Err(format!(
                "{origin}.factor = {} must be between 1 and 100",
                self.factor
            ));
        }
        if self.delays.iter().any(|d| *d > self.max_delay) {
            return Err(format!(
                "{origin}.delays_ms has a delay above {origin}.max_delay_ms = {}",
                self.max_delay.as_millis()
            ));
        }
        Ok(())
    }

    /// The delay before the attempt after `attempt` (1-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1) as usize;
        let d = match self.backoff {
            Backoff::Tiered => self
                .delays
                .get(n - 1)
                .or(self.delays.last())
                .copied()
                .unwrap_or_default(),
            Backoff::Exponential => {
                let ms = self.base.as_millis() as f64 * self.factor.powi((n - 1).min(1000) as i32);
                Duration::from_millis(ms.min(self.max_delay.as_millis() as f64) as u64)
            }
        };
        d.min(self.max_delay)
    }

    /// What follows a failed `attempt` of class `class`. `unit` is a uniform random number in
    /// [0, 1) used for jitter.
    pub fn decide(
        &self,
        class: FailureClass,
        attempt: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Decision {
        if class == FailureClass::PartialExecution {
            return Decision::DeadLetter {
                why:
                    "side effects may already have happened: never retried blindly; manual review \
                      before any replay"
                        .into(),
            };
        }
        if !class.is_transient() {
            return Decision::DeadLetter {
                why: format!("class {class} is permanent: another attempt would fail the same way"),
            };
        }
        if attempt >= self.max_attempts {
            return Decision::DeadLetter {
                why: format!(
                    "attempt {attempt} of {} failed; retries exhausted",
                    self.max_attempts
                ),
            };
        }
        if let Some(after) = retry_after {
            return Decision::Retry {
                delay: after.min(self.max_delay),
            };
        }
        let d = self.base_delay(attempt).as_millis() as f64;
        let unit = unit.clamp(0.0, 1.0);
        let ms = match self.jitter {
            Jitter::Full => d * unit,
            Jitter::Equal => d / 2.0 + d / 2.0 * unit,
            Jitter::None => d,
        };
        Decision::Retry {
            delay: Duration::from_millis(ms.round() as u64),
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Schedule the next attempt after `delay`.
    Retry {
        /// How long to wait.
        delay: Duration,
    },
    /// Move to the dead letters; `why` explains the decision.
    DeadLetter {
        /// The reason, recorded as the dead letter's detail.
        why: String,
    },
}

/// The policy table: defaults, per-kind overrides, per-tenant overrides (tenant wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Policies {
    default: RetryPolicy,
    kinds: HashMap<String, PolicyOverride>,
    tenants: HashMap<String, PolicyOverride>,
}

impl Policies {
    /// Builds and validates the table. Every combination of kind and tenant override is checked.
    pub fn new(
        default: RetryPolicy,
        kinds: HashMap<String, PolicyOverride>,
        tenants: HashMap<String, PolicyOverride>,
    ) -> Result<Policies, String> {
        default.validate("retry")?;
        let p = Policies {
            default,
            kinds,
            tenants,
        };
        for k in p.kinds.keys() {
            p.for_task("", k).validate(&format!("retry.kinds.{k}"))?;
        }
        for t in p.tenants.keys() {
            p.for_task(t, "").validate(&format!("retry.tenants.{t}"))?;
            for k in p.kinds.keys() {
                p.for_task(t, k)
                    .validate(&format!("retry.tenants.{t} with retry.kinds.{k}"))?;
            }
        }
        Ok(p)
    }

    /// The attempts a task of `kind` for `tenant` gets in all (what [`Policies::for_task`]
    /// says, without building the whole policy: asked once per attempt).
    pub fn max_attempts(&self, tenant: &str, kind: &str) -> u32 {
        self.tenants
            .get(tenant)
            .and_then(|o| o.max_attempts)
            .or_else(|| self.kinds.get(kind).and_then(|o| o.max_attempts))
            .unwrap_or(self.default.max_attempts)
    }

    /// The policy that applies to a task of `kind` for `tenant`.
    pub fn for_task(&self, tenant: &str, kind: &str) -> RetryPolicy {
        let mut p = self.default.clone();
        if let Some(o) = self.kinds.get(kind) {
            p.apply(o);
        }
        if let Some(o) = self.tenants.get(tenant) {
            p.apply(o);
        }
        p
    }
}

/// Whether a task with `deadline_ms` may start at `now_ms`: `Err(why)` when it is past its
/// deadline (it is dead-lettered as `expired` without running). Pure: `now_ms` is the fleet's
/// clock, the Redis server's as the member last read it (the clock retries are scheduled by).
/// A task exactly at its deadline may still start.
pub fn may_start(deadline_ms: Option<u64>, now_ms: u64) -> Result<(), String> {
    match deadline_ms {
        Some(d) if now_ms > d => Err(format!(
            "the task's deadline {d} passed {} ms before it would start; not run",
            now_ms - d
        )),
        _ => Ok(()),
    }
}

/// Whether a retry `delay` from `now_ms` comes in time for `deadline_ms`: `Err(why)` when the
/// next attempt would be due after the deadline (the task is dead-lettered as `expired`, the
/// failed attempt's error kept). Pure; same clock as [`may_start`].
pub fn retry_in_time(deadline_ms: Option<u64>, now_ms: u64, delay: Duration) -> Result<(), String> {
    let due = now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    match deadline_ms {
        Some(d) if due > d => Err(format!(
            "the next attempt would be due at {due}, after the task's deadline {d}: not retried"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiered() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff::Tiered,
            delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300),
            ],
            base: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: Jitter::None,
        }
    }

    #[test]
    fn tiers_then_exhaustion() {
        let p = tiered();
        let rl = FailureClass::RateLimited;
        assert_eq!(
            p.decide(rl, 1, None, 0.5),
            Decision::Retry {
                delay: Duration::from_secs(5)
            }
        );
        assert_eq!(
            p.decide(rl, 2, None, 0.5),
            Decision::Retry {
                delay: Duration::from_secs(30)
            }
        );
        assert_eq!(
            p.decide(rl, 3, None, 0.5),
            Decision::Retry {
                delay: Duration::from_secs(300)
            }
        );
        assert!(
            matches!(p.decide(rl, 4, None, 0.5), Decision::DeadLetter { why } if why.contains("exhausted"))
        );
    }

    #[test]
    fn permanent_classes_and_partial_execution_are_never_retried() {
        let p = tiered();
        for c in [
            FailureClass::ContextOverflow,
            FailureClass::PartialExecution,
            FailureClass::SilentFailure,
            FailureClass::InvalidInput,
        ] {
            assert!(
                matches!(p.decide(c, 1, None, 0.0), Decision::DeadLetter { .. }),
                "{c}"
            );
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_retry_after_wins() {
        let mut p = tiered();
        p.jitter = Jitter::Full;
        assert_eq!(
            p.decide(FailureClass::Timeout, 1, None, 0.0),
            Decision::Retry {
                delay: Duration::ZERO
            }
        );
        assert_eq!(
            p.decide(FailureClass::Timeout, 1, None, 0.999_999),
            Decision::Retry {
                delay: Duration::from_secs(5)
            }
        );
        p.jitter = Jitter::Equal;
        assert_eq!(
            p.decide(FailureClass::Timeout, 1, None, 0.0),
            Decision::Retry {
                delay: Duration::from_millis(2500)
            }
        );
        let after = Some(Duration::from_secs(42));
        assert_eq!(
            p.decide(FailureClass::RateLimited, 1, after, 0.0),
            Decision::Retry {
                delay: Duration::from_secs(42)
            }
        );
        let huge = Some(Duration::from_secs(10_000));
        assert_eq!(
            p.decide(FailureClass::RateLimited, 1, huge, 0.0),
            Decision::Retry {
                delay: Duration::from_secs(300)
            }
        );
    }

    /// Issue 11 #12: with the shipped defaults no retry comes sooner than half its tier,
    /// whatever the draw, and a handler's retry-after still wins (even below that floor).
    #[test]
    fn default_jitter_keeps_half_of_every_tier() {
        let settings =
            crate::config::Settings::from_raw(crate::config::RawConfig::defaults().unwrap())
                .unwrap();
        let p = settings.policies.for_task("acme", "triage");
        assert!(p.max_attempts >= 2);
        let mut rng = fastrand::Rng::with_seed(11);
        for attempt in 1..p.max_attempts {
            let tier = p.base_delay(attempt);
            let draws =
                (0..10_000)
                    .map(|_| rng.f64())
                    .chain([0.0, f64::MIN_POSITIVE, 0.999_999_999]);
            for unit in draws {
                let Decision::Retry { delay } =
                    p.decide(FailureClass::RateLimited, attempt, None, unit)
                else {
                    panic!("attempt {attempt} is retried");
                };
                assert!(
                    delay * 2 >= tier && delay <= tier,
                    "attempt {attempt}: {delay:?} for a {tier:?} tier (draw {unit})"
                );
            }
        }
        let after = Some(Duration::from_millis(200));
        assert_eq!(
            p.decide(FailureClass::RateLimited, 1, after, 0.0),
            Decision::Retry {
                delay: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn exponential_is_capped() {
        let mut p = tiered();
        p.backoff = Backoff::Exponential;
        p.max_attempts = 100;
        assert_eq!(p.base_delay(1), Duration::from_secs(1));
        assert_eq!(p.base_delay(4), Duration::from_secs(8));
        assert_eq!(p.base_delay(60), Duration::from_secs(300));
    }

    #[test]
    fn tenant_overrides_beat_kind_overrides() {
        let kinds = HashMap::from([(
            "summarise".to_string(),
            PolicyOverride {
                max_attempts: Some(6),
                ..Default::default()
            },
        )]);
        let tenants = HashMap::from([(
            "acme".to_string(),
            PolicyOverride {
                max_attempts: Some(2),
                ..Default::default()
            },
        )]);
        let p = Policies::new(tiered(), kinds, tenants).unwrap();
        assert_eq!(p.for_task("globex", "summarise").max_attempts, 6);
        assert_eq!(p.for_task("acme", "summarise").max_attempts, 2);
        assert_eq!(p.for_task("globex", "other").max_attempts, 4);
        for (t, k) in [
            ("globex", "summarise"),
            ("acme", "summarise"),
            ("globex", "other"),
            ("acme", "x"),
        ] {
            assert_eq!(
                p.max_attempts(t, k),
                p.for_task(t, k).max_attempts,
                "{t} {k}"
            );
        }
        let bad = HashMap::from([(
            "x".to_string(),
            PolicyOverride {
                delays_ms: Some(vec![]),
                ..Default::default()
            },
        )]);
        assert!(Policies::new(tiered(), bad, HashMap::new())
            .unwrap_err()
            .contains("retry.kinds.x.delays_ms"));
    }

    #[test]
    fn deadlines_stop_starts_and_late_retries() {
        assert!(may_start(None, u64::MAX).is_ok());
        assert!(may_start(Some(1_000), 999).is_ok());
        assert!(
            may_start(Some(1_000), 1_000).is_ok(),
            "at the deadline it still starts"
        );
        let why = may_start(Some(1_000), 1_250).unwrap_err();
        assert!(why.contains("1000") && why.contains("250 ms"), "{why}");

        let s = Duration::from_secs(1);
        assert!(retry_in_time(None, 5_000, s).is_ok());
        assert!(
            retry_in_time(Some(6_000), 5_000, s).is_ok(),
            "due exactly at the deadline"
        );
        let why = retry_in_time(Some(5_999), 5_000, s).unwrap_err();
        assert!(why.contains("6000") && why.contains("5999"), "{why}");
        assert!(
            retry_in_time(Some(4_000), 5_000, Duration::ZERO).is_err(),
            "already past"
        );
        assert!(retry_in_time(Some(u64::MAX), u64::MAX, Duration::MAX).is_ok());
    }
}
