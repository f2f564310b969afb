//! The HTTP client every step shares: connect and stall timeouts, and a
//! name resolver that works in a static binary.
//!
//! A statically linked glibc cannot load NSS modules, so `getaddrinfo` for a
//! host name fails in the netboot environment. The server and withcache are
//! normally addressed by IP (bty-web renders `bty.server=` from the Host
//! header iPXE used), which needs no lookup. For names, [`StaticResolver`]
//! reads `/etc/hosts` and then asks the nameservers in `/etc/resolv.conf`
//! (written by the udhcpc script) with a plain DNS A query over UDP. The
//! query is hand-written (about 60 lines) because the Rust resolvers on
//! crates.io all pull in an async runtime for one lookup per boot.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// Timeouts of the shared client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// No byte received for this long → the read fails (and the download
    /// resumes with a Range request).
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(30),
        }
    }
}

/// Build the agent's HTTP client.
pub fn agent(t: Timeouts) -> ureq::Agent {
    builder(t).build()
}

/// The agent's HTTP client settings, for callers that add middleware
/// (`--set-clock`).
pub fn builder(t: Timeouts) -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .timeout_connect(t.connect)
        .timeout_read(t.stall)
        .timeout_write(t.stall)
        .resolver(StaticResolver)
        .user_agent(concat!("bty-agent/", env!("CARGO_PKG_VERSION")))
}

/// Resolves without NSS; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct StaticResolver;

impl ureq::Resolver for StaticResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        if let Ok(sa) = netloc.parse::<SocketAddr>() {
            return Ok(vec![sa]);
        }
        let (host, port) = netloc
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {netloc}"))
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = std::fs::read_to_string("/etc/hosts")
            .ok()
            .and_then(|t| hosts_lookup(&t, host))
        {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let servers: Vec<IpAddr> = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| nameservers(&t))
            .unwrap_or_default();
        for ns in servers {
            if let Ok(ip) = dns_a_query(ns, host) {
                return Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]);
            }
        }
        // Last resort: the C library (works on a dynamic or NSS-less build
        // host; fails cleanly in the netboot environment).
        Ok(netloc.to_socket_addrs()?.collect())
    }
}

fn hosts_lookup(hosts: &str, name: &str) -> Option<IpAddr> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next()?;
        let mut words = line.split_whitespace();
        let ip: IpAddr = words.next()?.parse().ok()?;
        words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
    })
}

fn nameservers(resolv: &str) -> Vec<IpAddr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// One A query, one answer; enough for "the server's name".
fn dns_a_query(ns: IpAddr, name: &str) -> io::Result<Ipv4Addr> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("bad name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let bind = SocketAddr::new(
        if ns.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        },
        0,
    );
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    sock.send_to(&q, SocketAddr::new(ns, 53))?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf)?;
    let r = buf.get(..n).ok_or_else(|| bad("bad DNS answer"))?;
    // ID (2), flags (2, RCODE in the low 4 bits), QDCOUNT, ANCOUNT, ...
    let &[id0, id1, _, flags, _, _, an0, an1, _, _, _, _, ..] = r else {
        return Err(bad("bad DNS answer"));
    };
    if [id0, id1] != id.to_be_bytes() || flags & 0x0f != 0 {
        return Err(bad("bad DNS answer"));
    }
    let answers = u16::from_be_bytes([an0, an1]);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *r.get(i)? as usize;
            if l == 0 {
                return Some(i + 1);
            }
            if l & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += l + 1;
        }
    };
    let mut i = skip_name(12).ok_or_else(|| bad("short"))? + 4;
    for _ in 0..answers {
        i = skip_name(i).ok_or_else(|| bad("short"))?;
        // TYPE (2), CLASS (2), TTL (4), RDLENGTH (2).
        let Some(&[t0, t1, _, _, _, _, _, _, l0, l1]) = r.get(i..i + 10) else {
            return Err(bad("short"));
        };
        let (ty, len) = (
            u16::from_be_bytes([t0, t1]),
            u16::from_be_bytes([l0, l1]) as usize,
        );
        i += 10;
        if ty == 1 && len == 4 {
            let Some(&[a, b, c, d]) = r.get(i..i + 4) else {
                return Err(bad("short"));
            };
            return Ok(Ipv4Addr::new(a, b, c, d));
        }
        i += len;
    }
    Err(bad("no A record"))
}

/// Sleep for attempt `n` (0-based) of an exponential backoff, capped.
pub fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let d = base.saturating_mul(1u32 << n.min(16));
    d.min(cap)
}

/// Short text of a ureq error for logs and reasons.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => format!("HTTP {code} {}", r.status_text()),
        ureq::Error::Transport(t) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_conf_parse() {
        let hosts = "127.0.0.1 localhost\n# c\n10.0.0.5 bty bty.lab # x\n";
        assert_eq!(
            hosts_lookup(hosts, "bty.lab"),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(hosts_lookup(hosts, "nope"), None);
        assert_eq!(
            nameservers("search x\nnameserver 10.0.2.3\nnameserver bad\n"),
            vec!["10.0.2.3".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(0, s, Duration::from_secs(30)), s);
        assert_eq!(
            backoff(3, s, Duration::from_secs(30)),
            Duration::from_secs(8)
        );
        assert_eq!(
            backoff(40, s, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }
}
