//! Per-address rate limit on logins.
//!
//! An attempt is counted *before* the password is checked
//! ([`LoginLimiter::begin`]), so a burst of parallel guesses cannot all
//! pass the check while the first ones are still being verified; a
//! successful login clears the address's record. IPv6 clients are keyed by
//! their /64 (a host picks any address in its /64 at will). The table is a
//! bounded LRU: past [`MAX_TRACKED`] keys the least recently seen one is
//! forgotten, never the whole table.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts allowed per address within [`WINDOW`] (a success clears them).
pub(crate) const MAX_FAILURES: usize = 5;
/// The sliding window attempts are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Addresses tracked at most; past it the least recently seen is
/// forgotten first.
pub(crate) const MAX_TRACKED: usize = 10_000;

/// The key an address is counted (and connections capped) under: an IPv4
/// address (an IPv4-mapped IPv6 one as IPv4), or an IPv6 address's /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Counts login attempts per client key in a sliding window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    table: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<IpAddr, (VecDeque<Instant>, u64)>,
    /// Last-use stamp → key, oldest first.
    order: BTreeMap<u64, IpAddr>,
    tick: u64,
}

impl Lru {
    /// The attempts of `key`, marked as just used; a new key evicts the
    /// least recently used one when the table is full.
    fn touch(&mut self, key: IpAddr) -> &mut VecDeque<Instant> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, stamp)) = self.entries.get(&key) {
            self.order.remove(stamp);
        } else {
            while self.entries.len() >= MAX_TRACKED {
                match self.order.pop_first() {
                    Some((_, old)) => self.entries.remove(&old),
                    None => break,
                };
            }
        }
        self.order.insert(tick, key);
        let entry = self.entries.entry(key).or_default();
        entry.1 = tick;
        &mut entry.0
    }

    fn remove(&mut self, key: IpAddr) {
        if let Some((_, stamp)) = self.entries.remove(&key) {
            self.order.remove(&stamp);
        }
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count an attempt from `ip` before checking its password; `Err(retry
    /// after)` (and nothing counted) while the address has used up its
    /// attempts.
    pub fn begin(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut t = self.lock();
        let q = t.touch(client_key(ip));
        while q.front().is_some_and(|t| t.elapsed() >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= MAX_FAILURES {
            let oldest = q.front().map_or(Duration::ZERO, Instant::elapsed);
            return Err(WINDOW.saturating_sub(oldest).max(Duration::from_secs(1)));
        }
        q.push_back(Instant::now());
        Ok(())
    }

    /// A successful login clears the address's record.
    pub fn success(&self, ip: IpAddr) {
        self.lock().remove(client_key(ip));
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_attempts_and_success_clears() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(l.begin(ip).is_ok());
        }
        let wait = l.begin(ip).unwrap_err();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        l.success(ip);
        assert!(l.begin(ip).is_ok());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_as_v4() {
        let l = LoginLimiter::default();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            assert!(l.begin(ip).is_ok());
        }
        let other: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert!(l.begin(other).is_err(), "same /64");
        assert!(l.begin("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_full_table_forgets_the_least_recent_not_everyone() {
        let l = LoginLimiter::default();
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            l.begin(victim).unwrap();
        }
        for i in 0..(MAX_TRACKED as u32 * 2) {
            // Keep the locked-out address recently used, as an attacker
            // retrying would.
            if i % 1000 == 0 {
                assert!(l.begin(victim).is_err());
            }
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.begin(ip);
        }
        assert!(l.tracked() <= MAX_TRACKED);
        assert!(l.begin(victim).is_err(), "still locked out");
    }
}
