//! Which clients have a transfer running: at most one per client address
//! and port (a retransmitted RRQ must not start a second transfer), and at
//! most a few per client IP, so that one host opening a session from every
//! source port cannot take the whole pool from the other machines.
//!
//! Pure bookkeeping; the global limit is the server's semaphore.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// What [`Sessions::begin`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Recorded; call [`Sessions::end`] when the transfer is over.
    Started,
    /// This address and port already has a transfer (a retransmitted RRQ).
    Duplicate,
    /// This client IP has `per_client` transfers running.
    OverCap,
}

/// Running transfers by peer and by client IP.
#[derive(Debug)]
pub struct Sessions {
    per_client: usize,
    peers: HashSet<SocketAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Sessions {
    /// At most `per_client` (at least 1) transfers per client IP.
    pub fn new(per_client: usize) -> Sessions {
        Sessions {
            per_client: per_client.max(1),
            peers: HashSet::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Record a transfer for `peer` if it has none and its IP is under
    /// the cap.
    pub fn begin(&mut self, peer: SocketAddr) -> Admit {
        if self.peers.contains(&peer) {
            return Admit::Duplicate;
        }
        let count = self.per_ip.entry(canonical_ip(peer.ip())).or_insert(0);
        if *count >= self.per_client {
            return Admit::OverCap;
        }
        *count += 1;
        self.peers.insert(peer);
        Admit::Started
    }

    /// Forget the transfer [`Sessions::begin`] started for `peer`.
    pub fn end(&mut self, peer: SocketAddr) {
        if !self.peers.remove(&peer) {
            return;
        }
        let ip = canonical_ip(peer.ip());
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Transfers running for `ip`.
    pub fn running(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&canonical_ip(ip)).copied().unwrap_or(0)
    }
}

/// IPv4 clients reaching a dual-stack socket appear as `::ffff:a.b.c.d`;
/// key per-client state by the plain address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_client_cap_refuses_the_fifth_port_of_one_ip_only() {
        let mut s = Sessions::new(4);
        for port in 1000..1004 {
            assert_eq!(s.begin(peer(&format!("10.0.0.1:{port}"))), Admit::Started);
        }
        assert_eq!(s.begin(peer("10.0.0.1:1004")), Admit::OverCap);
        // The same IP over a dual-stack socket counts as the same client.
        assert_eq!(s.begin(peer("[::ffff:10.0.0.1]:1005")), Admit::OverCap);
        // Another host is not affected.
        assert_eq!(s.begin(peer("10.0.0.2:1000")), Admit::Started);
        assert_eq!(s.running("10.0.0.1".parse().unwrap()), 4);
        // A transfer that ends frees a place for that IP.
        s.end(peer("10.0.0.1:1002"));
        assert_eq!(s.begin(peer("10.0.0.1:1004")), Admit::Started);
    }

    #[test]
    fn retransmitted_rrq_is_a_duplicate_and_end_is_idempotent() {
        let mut s = Sessions::new(1);
        assert_eq!(s.begin(peer("10.0.0.1:7")), Admit::Started);
        assert_eq!(s.begin(peer("10.0.0.1:7")), Admit::Duplicate);
        s.end(peer("10.0.0.1:7"));
        s.end(peer("10.0.0.1:7"));
        // An over-cap request was never recorded; ending it changes nothing.
        assert_eq!(s.begin(peer("10.0.0.1:8")), Admit::Started);
        assert_eq!(s.begin(peer("10.0.0.1:9")), Admit::OverCap);
        s.end(peer("10.0.0.1:9"));
        assert_eq!(s.running("10.0.0.1".parse().unwrap()), 1);
        assert_eq!(s.begin(peer("10.0.0.1:9")), Admit::OverCap);
    }

    #[test]
    fn a_cap_of_zero_means_one() {
        let mut s = Sessions::new(0);
        assert_eq!(s.begin(peer("10.0.0.1:7")), Admit::Started);
        assert_eq!(s.begin(peer("10.0.0.1:8")), Admit::OverCap);
    }
}
