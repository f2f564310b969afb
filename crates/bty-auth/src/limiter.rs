//! Per-address rate limit on failed logins.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per address within [`WINDOW`].
pub(crate) const MAX_FAILURES: usize = 5;
/// The sliding window failures are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Addresses tracked at most; the oldest are forgotten first so a flood of
/// spoofed sources cannot grow memory without bound.
const MAX_TRACKED: usize = 10_000;

/// Counts failed logins per client address in a sliding window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(retry_after)` while `ip` has used up its failures.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = map.get_mut(&ip) else {
            return Ok(());
        };
        while q.front().is_some_and(|t| t.elapsed() >= WINDOW) {
            q.pop_front();
        }
        if q.len() < MAX_FAILURES {
            return Ok(());
        }
        match q.front() {
            Some(oldest) => Err(WINDOW.saturating_sub(oldest.elapsed())),
            None => Ok(()),
        }
    }

    /// Record a failed attempt from `ip`.
    pub fn failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, q| q.back().is_some_and(|t| t.elapsed() < WINDOW));
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let q = map.entry(ip).or_default();
        q.push_back(Instant::now());
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }

    /// A successful login clears the address's record.
    pub fn success(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_success_clears() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(l.check(ip).is_ok());
            l.failure(ip);
        }
        let wait = l.check(ip).unwrap_err();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        l.success(ip);
        assert!(l.check(ip).is_ok());
    }
}
