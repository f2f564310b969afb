//! Which origins withcache connects to (issue 12, "The LAN is hostile").
//!
//! Whoever may add a catalog entry (an operator, bty-web for a lab user)
//! names a URL, and withcache then serves the bytes it fetched there to
//! anyone, without a login. Left open that is a server-side request
//! forgery: an entry (or a redirect) pointing at `http://127.0.0.1:8080/`
//! or the cloud metadata service reads them through the cache. So by
//! default withcache does not connect to:
//!
//! - loopback: 127.0.0.0/8, ::1;
//! - link-local: 169.254.0.0/16 (with the metadata address
//!   169.254.169.254), fe80::/10, and AWS's IPv6 metadata address
//!   fd00:ec2::254;
//! - unspecified: 0.0.0.0/8 (Linux connects 0.0.0.0 to this host), ::;
//! - multicast (224.0.0.0/4, ff00::/8) and broadcast (255.255.255.255);
//! - any of those written as IPv6: IPv4-mapped (::ffff:127.0.0.1),
//!   IPv4-compatible (::127.0.0.1) and NAT64 (64:ff9b::127.0.0.1).
//!
//! Private networks stay allowed: RFC 1918 (10/8, 172.16/12,
//! 192.168/16), CGNAT (100.64/10), ULA (fc00::/7) and public addresses. A
//! lab's own mirror lives on one of those, and must work with no flag.
//! `allow_private_origins` (`--allow-private-origins`,
//! `WITHCACHE_ALLOW_PRIVATE_ORIGINS=1`) lifts the rule, for an origin on
//! this host (tests, a mirror on the same machine).
//!
//! The rule holds on the address connected to, not on the URL's text:
//! names go through [`GuardedResolver`], which drops refused addresses at
//! connect time (a name that resolves, or rebinds, to 127.0.0.1 gets
//! nowhere), and IP literals, which reqwest connects to without
//! resolving, are checked by [`Policy::check_url`] when an entry is
//! registered, before every download and on every redirect hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where the refusal message points the operator.
const HOW_TO_ALLOW: &str = "withcache does not fetch from loopback, link-local (incl. the \
     cloud metadata address 169.254.169.254), unspecified, multicast or broadcast addresses \
     unless it runs with --allow-private-origins (WITHCACHE_ALLOW_PRIVATE_ORIGINS=1); \
     private networks such as 10.0.0.0/8 or 192.168.0.0/16 need no flag";

/// A destination withcache will not connect to. Its text says what was
/// refused, why, and how to allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    what: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused origin: {}; {HOW_TO_ALLOW}", self.what)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    fn address(ip: IpAddr, kind: &str) -> Refused {
        Refused {
            what: format!("{ip} is {kind}"),
        }
    }

    fn resolved(host: &str, ip: IpAddr, kind: &str) -> Refused {
        Refused {
            what: format!("{host} resolves to {ip}, {kind}"),
        }
    }

    /// The refusal somewhere in `e`'s chain of causes (reqwest wraps the
    /// resolver's and the redirect policy's errors).
    pub(crate) fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(r) = err.downcast_ref::<Refused>() {
                return Some(r);
            }
            cur = err.source();
        }
        None
    }
}

/// Why withcache does not connect to `ip` by default (`a loopback
/// address`, …); `None` when it does.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => refusal_v4(a),
        IpAddr::V6(a) => refusal_v6(a),
    }
}

fn refusal_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [first, ..] = a.octets();
    if a.is_loopback() {
        Some("a loopback address")
    } else if a == Ipv4Addr::new(169, 254, 169, 254) {
        Some("the cloud metadata address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if first == 0 {
        Some("an unspecified (this-host) address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// AWS's IPv6 instance metadata address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn refusal_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_unspecified() {
        Some("an unspecified address")
    } else if a == METADATA_V6 {
        Some("the cloud metadata address")
    } else if s.first().is_some_and(|s0| s0 & 0xffc0 == 0xfe80) {
        Some("a link-local address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if let Some(v4) = embedded_v4(a) {
        refusal_v4(v4)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) or the NAT64 well-known prefix
/// (`64:ff9b::a.b.c.d`).
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = a.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        _ => None,
    }
}

/// Whether private (loopback, link-local, …) origins are allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// `allow_private_origins`: the rule is off.
    pub(crate) allow_private: bool,
}

impl Policy {
    /// Refuse a URL whose host is a refused IP literal (reqwest connects
    /// to those without asking the resolver). Names pass: the resolver
    /// checks them at connect time. A URL that does not parse passes too;
    /// the request fails on it anyway.
    pub(crate) fn check_url(self, url: &reqwest::Url) -> Result<(), Refused> {
        if self.allow_private {
            return Ok(());
        }
        // The url crate has normalised the host: an IPv4 literal in any
        // form (2130706433, 0x7f.1) is dotted, an IPv6 one bracketed.
        let host = url.host_str().unwrap_or("");
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        match refusal(ip) {
            Some(kind) => Err(Refused::address(ip, kind)),
            None => Ok(()),
        }
    }

    /// [`Policy::check_url`] on a URL as text.
    pub(crate) fn check_src(self, src: &str) -> Result<(), Refused> {
        match reqwest::Url::parse(src) {
            Ok(url) => self.check_url(&url),
            Err(_) => Ok(()),
        }
    }

    /// What a new catalog entry (or catalog URL) must pass:
    /// [`Policy::check_src`], and no `localhost` name (RFC 6761: it is
    /// always loopback), so the obvious mistake is refused at once rather
    /// than when the download starts. Other names are checked when they
    /// are resolved.
    pub(crate) fn check_new(self, src: &str) -> Result<(), Refused> {
        self.check_src(src)?;
        let Ok(url) = reqwest::Url::parse(src) else {
            return Ok(());
        };
        match url.host_str() {
            Some(h) if !self.allow_private && is_localhost(h) => Err(Refused {
                what: format!("{h} is a loopback name"),
            }),
            _ => Ok(()),
        }
    }
}

fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// The resolver of the origin client: the system's (getaddrinfo, through
/// tokio), minus every refused address. A name with no address left
/// fails with a [`Refused`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(resolve_guarded(name.as_str().to_string()))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn resolve_guarded(host: String) -> Result<reqwest::dns::Addrs, BoxError> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let addrs = allowed(&host, found)?;
    Ok(Box::new(addrs.into_iter()))
}

/// The addresses `host` resolved to that may be connected to; a
/// [`Refused`] naming the first refused one when none may.
fn allowed(host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
    let (ok, refused): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|a| refusal(a.ip()).is_none());
    if let (true, Some(first)) = (ok.is_empty(), refused.first()) {
        let kind = refusal(first.ip()).unwrap_or("refused");
        return Err(Refused::resolved(host, first.ip(), kind));
    }
    if !refused.is_empty() {
        tracing::debug!(host, ?refused, "dropped refused addresses of an origin");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classifier, address by address.
    #[test]
    fn addresses_are_refused_or_allowed_by_kind() {
        let refused = [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for a in refused {
            let ip: IpAddr = a.parse().unwrap();
            assert!(refusal(ip).is_some(), "{a} should be refused");
        }
        let allowed = [
            "10.0.0.5",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "100.64.0.1",
            "100.100.100.200",
            "192.0.2.1",
            "8.8.8.8",
            "1.1.1.1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::253",
            "fec0::1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:10.0.0.5",
            "::ffff:192.168.1.1",
            "64:ff9b::808:808",
        ];
        for a in allowed {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(refusal(ip), None, "{a} should be allowed");
        }
    }

    #[test]
    fn the_metadata_address_is_named() {
        let ip: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(refusal(ip), Some("the cloud metadata address"));
        let ip: IpAddr = "fd00:ec2::254".parse().unwrap();
        assert_eq!(refusal(ip), Some("the cloud metadata address"));
    }

    const ON: Policy = Policy {
        allow_private: false,
    };
    const OFF: Policy = Policy {
        allow_private: true,
    };

    /// URL literals as the url crate reads them: decimal, hex and short
    /// forms of 127.0.0.1 are 127.0.0.1.
    #[test]
    fn url_literals_are_checked_after_normalising() {
        for src in [
            "http://127.0.0.1:8080/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://127.1/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:3000/",
            "http://[fe80::1]/x",
        ] {
            let e = ON.check_src(src).expect_err(src);
            let msg = e.to_string();
            assert!(msg.contains("--allow-private-origins"), "{msg}");
            assert!(msg.contains("WITHCACHE_ALLOW_PRIVATE_ORIGINS=1"), "{msg}");
            assert!(OFF.check_src(src).is_ok(), "{src}");
        }
        for src in [
            "http://10.0.0.5/x.img",
            "http://192.168.1.2:8000/x",
            "http://mirror.lab/x",
            "http://localhost/x",
            "https://[fd12::1]/x",
        ] {
            assert!(ON.check_src(src).is_ok(), "{src}");
        }
    }

    #[test]
    fn a_new_entry_may_not_name_localhost() {
        for src in [
            "http://localhost:8080/x",
            "http://LOCALHOST./x",
            "http://a.localhost/",
        ] {
            let e = ON.check_new(src).expect_err(src);
            assert!(e.to_string().contains("loopback name"), "{e}");
            assert!(OFF.check_new(src).is_ok());
        }
        assert!(ON.check_new("http://localhost.example.com/x").is_ok());
        assert!(ON.check_new("http://mirror.lab/x").is_ok());
    }

    #[test]
    fn a_name_keeps_its_allowed_addresses_only() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mixed = vec![a("127.0.0.1:0"), a("10.0.0.5:0"), a("[::1]:0")];
        assert_eq!(allowed("h", mixed).unwrap(), vec![a("10.0.0.5:0")]);
        let e = allowed("evil.example", vec![a("127.0.0.1:0"), a("[::1]:0")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("evil.example resolves to 127.0.0.1, a loopback address"),
            "{msg}"
        );
        assert!(allowed("none", vec![]).unwrap().is_empty());
    }

    /// The resolver itself, on a name the system resolves to loopback.
    #[tokio::test]
    async fn localhost_resolves_to_nothing_allowed() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let Err(e) = GuardedResolver.resolve(name).await else {
            panic!("localhost resolved to an allowed address");
        };
        assert!(Refused::find(&*e).is_some(), "{e}");
    }
}
