//! The login's rate limits, pure (time is passed in): a token bucket per client address and
//! one for every client together, each holding a minute's attempts and refilling evenly over
//! the minute. An attempt (good or bad) takes a token from both; when either is empty it is
//! refused with the time until both have one. The map of addresses holds only buckets not yet
//! refilled, so its size is bounded by the global rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Full buckets are dropped from the map once it holds this many addresses.
const PRUNE_AT: usize = 1_024;

/// A token bucket: `tokens` at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    /// Its tokens at `now`, refilled at `per_minute` a minute up to `per_minute`.
    fn refill(&mut self, per_minute: u32, now: Instant) {
        let cap = f64::from(per_minute);
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * cap / 60.0;
        self.tokens = (self.tokens + gained).min(cap);
        self.at = now;
    }

    /// How long until it holds a whole token (zero when it does).
    fn wait(&self, per_minute: u32) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) * 60.0 / f64::from(per_minute))
    }
}

/// The login limits of one server.
#[derive(Debug)]
pub struct LoginLimiter {
    per_ip: u32,
    global: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    clients: HashMap<IpAddr, Bucket>,
    all: Bucket,
}

impl LoginLimiter {
    /// Limits of `per_ip` attempts a minute per address and `global` for everyone.
    pub fn new(per_ip: u32, global: u32, now: Instant) -> LoginLimiter {
        LoginLimiter {
            per_ip: per_ip.max(1),
            global: global.max(1),
            state: Mutex::new(State {
                clients: HashMap::new(),
                all: Bucket::full(global.max(1), now),
            }),
        }
    }

    /// An attempt from `ip` at `now`: allowed (a token taken from both buckets), or refused
    /// with how long to wait (whole seconds, at least one).
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (per_ip, global) = (self.per_ip, self.global);
        s.all.refill(global, now);
        let mut mine = s
            .clients
            .get(&ip)
            .copied()
            .unwrap_or_else(|| Bucket::full(per_ip, now));
        mine.refill(per_ip, now);
        let wait = mine.wait(per_ip).max(s.all.wait(global));
        if !wait.is_zero() {
            return Err(Duration::from_secs(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        mine.tokens -= 1.0;
        s.all.tokens -= 1.0;
        if s.clients.len() >= PRUNE_AT && !s.clients.contains_key(&ip) {
            s.clients.retain(|_, b| {
                b.refill(per_ip, now);
                b.tokens < f64::from(per_ip)
            });
        }
        s.clients.insert(ip, mine);
        Ok(())
    }

    /// How many addresses it tracks (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().map(|s| s.clients.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn one_address_gets_its_minute_then_waits_for_a_token() {
        let t0 = Instant::now();
        let l = LoginLimiter::new(3, 100, t0);
        for _ in 0..3 {
            assert_eq!(l.attempt(ip(1), t0), Ok(()));
        }
        // Empty: one token comes back every 20 s.
        assert_eq!(l.attempt(ip(1), t0), Err(Duration::from_secs(20)));
        assert_eq!(
            l.attempt(ip(1), t0 + Duration::from_secs(15)),
            Err(Duration::from_secs(5))
        );
        assert_eq!(l.attempt(ip(1), t0 + Duration::from_secs(20)), Ok(()));
        // Another address is not held back by it.
        assert_eq!(l.attempt(ip(2), t0), Ok(()));
    }

    #[test]
    fn every_client_together_is_limited_too() {
        let t0 = Instant::now();
        let l = LoginLimiter::new(10, 4, t0);
        for n in 0..4 {
            assert_eq!(l.attempt(ip(n), t0), Ok(()));
        }
        assert_eq!(l.attempt(ip(99), t0), Err(Duration::from_secs(15)));
        assert_eq!(l.attempt(ip(99), t0 + Duration::from_secs(15)), Ok(()));
    }

    #[test]
    fn refilled_addresses_are_forgotten() {
        let t0 = Instant::now();
        let l = LoginLimiter::new(2, 100_000, t0);
        for n in 0..PRUNE_AT as u32 {
            l.attempt(ip(n), t0).unwrap();
        }
        assert_eq!(l.tracked(), PRUNE_AT);
        // A minute on, every bucket is full again: the next new address prunes them all.
        l.attempt(ip(1_000_000), t0 + Duration::from_secs(60))
            .unwrap();
        assert_eq!(l.tracked(), 1);
    }
}
