//! The host's LAN address: detected from the outbound route or given by the
//! operator, always validated (it ends up in URLs and TOML).

use std::net::{IpAddr, UdpSocket};

use anyhow::{bail, Result};

/// Parse and check an operator-given address. Only IP literals are
/// accepted: machines in PXE have no reliable DNS, and a literal cannot
/// smuggle quotes into TOML or URLs.
pub fn validate(s: &str) -> Result<IpAddr> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match t.parse() {
        Ok(ip) => ip,
        Err(_) => bail!(
            "--host-addr {s:?} is not an IP address; give the LAN address \
             machines reach this host on, e.g. --host-addr 192.168.1.10"
        ),
    };
    if ip.is_unspecified() || ip.is_multicast() {
        bail!("--host-addr {ip} cannot be reached by machines; give this host's LAN address");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            bail!("--host-addr {ip} is a broadcast address; give this host's LAN address");
        }
    }
    Ok(ip)
}

/// The source address of the default route, found by "connecting" a UDP
/// socket (no packet is sent). Falls back to IPv6, then None.
pub fn detect() -> Option<IpAddr> {
    // TEST-NET addresses: never contacted, only used to pick a route.
    for (bind, target) in [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")] {
        if let Ok(sock) = UdpSocket::bind(bind) {
            if sock.connect(target).is_ok() {
                if let Ok(local) = sock.local_addr() {
                    let ip = local.ip();
                    if !ip.is_unspecified() && !ip.is_loopback() {
                        return Some(ip);
                    }
                }
            }
        }
    }
    None
}

/// `host` for a URL: IPv6 in brackets.
pub fn url_host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ip_literals_and_brackets() {
        assert_eq!(validate("10.0.0.5").unwrap().to_string(), "10.0.0.5");
        assert_eq!(validate("[fd00::5]").unwrap().to_string(), "fd00::5");
        assert_eq!(url_host(&validate("fd00::5").unwrap()), "[fd00::5]");
    }

    #[test]
    fn refuses_names_quotes_and_unusable_addresses() {
        for bad in [
            "bty.lan",
            "10.0.0.5\"",
            "a\"b",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad} accepted");
        }
    }
}
