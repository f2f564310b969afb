//! The wizard's bty-web: found from the manifest's `server` or from the
//! DHCP lease, asked for its catalog and told about each flash, all with
//! the stick key (`Authorization: Bearer KEY`).
//!
//! The LAN is not trusted: the lease file's values are checked before a
//! URL is made of them, the catalog's entries before they are offered,
//! and a server image is checked against the catalog's sha256 and size
//! like a plan's download. Nothing here ever stops a stick image from
//! being flashed: an unreachable or refusing server is one line on the
//! menu.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use bty_proto::stick::{
    FlashStart, FlashStarted, ServerCatalog, ServerImage, CATALOG_PATH, FLASH_PATH,
};
use bty_proto::{ErrorBody, Mac};

use crate::net::{self, describe};

/// Where the udhcpc hook writes the lease (`templates/netboot/udhcpc.script`).
pub const DHCP_ENV: &str = "/run/bty-dhcp.env";

/// bty-web's port when the manifest names no server to take one from.
pub const DEFAULT_PORT: u16 = 8080;

/// What the wizard uses of a DHCP lease, each value checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// The BOOTP next-server (`siaddr`).
    pub siaddr: Option<Ipv4Addr>,
    /// The DHCP server's identifier (option 54).
    pub serverid: Option<Ipv4Addr>,
    /// The TFTP server (option 66): an address or a host name.
    pub tftp: Option<String>,
    /// The boot file name (BOOTP `file` or option 67), for the log.
    pub boot_file: Option<String>,
}

/// The lease file's `key=value` lines. Every value comes from whoever
/// answered DHCP: an address must be a unicast IPv4 address, a host name
/// plain DNS characters; anything else (and any unknown key) is ignored.
pub fn parse_lease(text: &str) -> Lease {
    let mut l = Lease::default();
    for line in text.lines().take(64) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "siaddr" => l.siaddr = unicast(v),
            "serverid" => l.serverid = unicast(v),
            "tftp" => l.tftp = host_name(v),
            "boot_file" => {
                l.boot_file = (!v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)))
                .then(|| v.to_string())
            }
            _ => {}
        }
    }
    l
}

/// `v` as an address a server can have (not 0.0.0.0, broadcast,
/// multicast or loopback).
fn unicast(v: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = v.parse().ok()?;
    (!ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast() && !ip.is_loopback())
        .then_some(ip)
}

/// `v` as a host for a URL: a unicast IPv4 address or a DNS name.
fn host_name(v: &str) -> Option<String> {
    if v.parse::<IpAddr>().is_ok() {
        return unicast(v).map(|ip| ip.to_string());
    }
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // All digits and dots but not an address: refuse rather than guess.
        && !v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then(|| v.to_ascii_lowercase())
}

/// The lease at `path`, `None` while there is none (no DHCP answer yet).
pub fn read_lease(path: &Path) -> Option<Lease> {
    let text = std::fs::read(path).ok()?;
    // A lease file is a few hundred bytes; more is not one.
    let text = text.get(..text.len().min(4096))?;
    Some(parse_lease(&String::from_utf8_lossy(text)))
}

/// The port of a `scheme://host[:port]/...` URL, when it names one.
fn port_of(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.1,
        None => host_port,
    };
    after_host.rsplit_once(':')?.1.parse().ok()
}

/// The servers to try, in order: the manifest's, then the lease's
/// next-server and TFTP server on the manifest server's port (else
/// [`DEFAULT_PORT`]); no duplicates.
pub fn candidates(manifest_server: Option<&str>, lease: Option<&Lease>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let manifest = manifest_server.map(crate::cmdline::normalise_server);
    let port = manifest
        .as_deref()
        .and_then(port_of)
        .unwrap_or(DEFAULT_PORT);
    out.extend(manifest);
    if let Some(l) = lease {
        let hosts = l
            .siaddr
            .map(|ip| ip.to_string())
            .into_iter()
            .chain(l.tftp.clone());
        for h in hosts {
            let url = format!("http://{h}:{port}");
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

/// Every NIC's MAC from `<sys>/class/net` but the loopback's (and any
/// all-zero one), sorted.
pub fn macs(sys: &Path) -> Vec<Mac> {
    let Ok(dir) = std::fs::read_dir(sys.join("class/net")) else {
        return Vec::new();
    };
    let mut out: Vec<Mac> = dir
        .flatten()
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .filter_map(|a| a.trim().parse::<Mac>().ok())
        .filter(|m| m.octets() != [0; 6])
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A bty-web and the stick key for it.
#[derive(Clone)]
pub struct Server {
    /// Its base URL (`http://host:port`).
    pub url: String,
    key: String,
    /// The client: short connect timeout, the stall timeout of a download.
    pub http: ureq::Agent,
}

/// Why a server's catalog is not on the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// It answered, and refused the key (or the request): its message.
    Refused(String),
    /// No answer, or not one a bty-web gives.
    Unreachable(String),
}

/// What `POST /stick/flash` came to.
#[derive(Debug)]
pub enum Started {
    /// A registered machine: report to this cycle.
    Recorded(FlashStarted),
    /// None of the MACs is registered: the flash is not recorded.
    NotRegistered,
    /// Anything else, in one line.
    Failed(String),
}

/// The error a bty-web put in its JSON body, else the status line.
fn server_says(code: u16, r: ureq::Response) -> String {
    let status = format!("HTTP {code} {}", r.status_text());
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(r.into_reader(), 8192), &mut body);
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => format!(
            "{status}: {}",
            e.error.chars().take(300).collect::<String>()
        ),
        Err(_) => status,
    }
}

impl Server {
    /// A server at `url` with `key`.
    pub fn new(url: &str, key: &str) -> Server {
        Server {
            url: url.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http: net::agent(net::Timeouts {
                connect: Duration::from_secs(3),
                stall: Duration::from_secs(30),
            }),
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// `GET /stick/catalog`: the images worth offering. An entry whose
    /// name, sha256 or URL is not sane is left out (the LAN may lie).
    pub fn catalog(&self) -> Result<Vec<ServerImage>, Unavailable> {
        let url = format!("{}{CATALOG_PATH}", self.url);
        let r = self
            .http
            .get(&url)
            .set("Authorization", &self.bearer())
            .timeout(Duration::from_secs(10))
            .call();
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(code @ (401 | 403), r)) => {
                return Err(Unavailable::Refused(server_says(code, r)))
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(Unavailable::Unreachable(server_says(code, r)))
            }
            Err(e) => return Err(Unavailable::Unreachable(describe(&e))),
        };
        let cat: ServerCatalog = r.into_json().map_err(|e| {
            Unavailable::Unreachable(format!("{url} did not answer a catalog: {e}"))
        })?;
        Ok(cat.images.into_iter().filter(sane).collect())
    }

    /// `POST /stick/flash` before the first write.
    pub fn start(&self, body: &FlashStart) -> Started {
        let url = format!("{}{FLASH_PATH}", self.url);
        let r = self
            .http
            .post(&url)
            .set("Authorization", &self.bearer())
            .timeout(Duration::from_secs(10))
            .send_json(body);
        match r {
            Ok(r) => match r.into_json::<FlashStarted>() {
                Ok(s) => Started::Recorded(s),
                Err(e) => Started::Failed(format!("{url} answered something else: {e}")),
            },
            Err(ureq::Error::Status(404, _)) => Started::NotRegistered,
            Err(ureq::Error::Status(code, r)) => Started::Failed(server_says(code, r)),
            Err(e) => Started::Failed(describe(&e)),
        }
    }
}

/// A catalog entry the wizard can offer: a printable name, a sha256, and
/// an http(s) URL.
fn sane(i: &ServerImage) -> bool {
    !i.name.is_empty()
        && i.name.len() <= 128
        && !i.name.chars().any(char::is_control)
        && i.sha256.len() == 64
        && i.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        && (i.url.starts_with("http://") || i.url.starts_with("https://"))
        && !i.url.chars().any(|c| c.is_control() || c == ' ')
}

/// The first of `urls` whose catalog answers, with its images; else why
/// none did (a refusal before "unreachable": it is the one to act on).
pub fn discover(urls: &[String], key: &str) -> Result<(Server, Vec<ServerImage>), Unavailable> {
    let mut refused = None;
    let mut unreachable = Vec::new();
    for u in urls {
        let s = Server::new(u, key);
        match s.catalog() {
            Ok(images) => return Ok((s, images)),
            Err(Unavailable::Refused(m)) => {
                refused.get_or_insert(format!("{u} refused this stick's key: {m}"));
            }
            Err(Unavailable::Unreachable(m)) if m.contains(u.as_str()) => unreachable.push(m),
            Err(Unavailable::Unreachable(m)) => unreachable.push(format!("{u}: {m}")),
        }
    }
    match refused {
        Some(r) => Err(Unavailable::Refused(r)),
        None if unreachable.is_empty() => Err(Unavailable::Unreachable(
            "no server named on the stick and no DHCP next-server or TFTP server".into(),
        )),
        None => Err(Unavailable::Unreachable(unreachable.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_are_checked_and_hostile_ones_ignored() {
        let l = parse_lease(
            "siaddr=10.0.0.5\nserverid=10.0.0.1\ntftp=boot.lab\nboot_file=undionly.kpxe\n",
        );
        assert_eq!(l.siaddr, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(l.serverid, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.tftp.as_deref(), Some("boot.lab"));
        assert_eq!(l.boot_file.as_deref(), Some("undionly.kpxe"));
        for hostile in [
            "siaddr=0.0.0.0\ntftp=evil.lab/x?y\nboot_file=a b",
            "siaddr=255.255.255.255\ntftp=http://evil\nboot_file=$(reboot)",
            "siaddr=127.0.0.1\ntftp=a..b\nserverid=224.0.0.1",
            "siaddr=10.0.0.5:99\ntftp=999.1.1.1\nboot_file=",
            "siaddr=10.0.0.5 10.0.0.6\ntftp=-x.lab\n",
            "tftp=127.0.0.1\nsiaddr=::1\n",
        ] {
            let l = parse_lease(hostile);
            assert_eq!(l, Lease::default(), "{hostile}");
        }
        assert_eq!(
            parse_lease("tftp=10.1.2.3\nnoise\n=x\nother=1")
                .tftp
                .as_deref(),
            Some("10.1.2.3")
        );
    }

    #[test]
    fn candidates_follow_the_manifest_then_the_lease_on_its_port() {
        let l = Lease {
            siaddr: Some(Ipv4Addr::new(10, 0, 0, 5)),
            tftp: Some("10.0.0.5".into()),
            ..Lease::default()
        };
        assert_eq!(
            candidates(Some("http://bty.lab:9000/"), Some(&l)),
            ["http://bty.lab:9000", "http://10.0.0.5:9000"]
        );
        assert_eq!(candidates(None, Some(&l)), ["http://10.0.0.5:8080"]);
        let both = Lease {
            tftp: Some("tftp.lab".into()),
            ..l
        };
        assert_eq!(
            candidates(Some("10.0.0.5:8080"), Some(&both)),
            ["http://10.0.0.5:8080", "http://tftp.lab:8080"]
        );
        assert!(candidates(None, None).is_empty());
        assert_eq!(port_of("http://[fe80::1]:81/x"), Some(81));
        assert_eq!(port_of("http://u@h/x:9"), None);
    }

    #[test]
    fn macs_skip_the_loopback_and_garbage() {
        let t = tempfile::tempdir().unwrap();
        for (n, a) in [
            ("lo", "00:00:00:00:00:00"),
            ("eth1", "52:54:00:00:00:02"),
            ("eth0", "52:54:00:00:00:01"),
            ("dummy", "not a mac"),
            ("zero", "00:00:00:00:00:00"),
        ] {
            let d = t.path().join("class/net").join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), format!("{a}\n")).unwrap();
        }
        let got: Vec<String> = macs(t.path()).iter().map(|m| m.to_string()).collect();
        assert_eq!(got, ["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    }

    #[test]
    fn insane_catalog_entries_are_left_out() {
        let good = ServerImage {
            name: "debian-12".into(),
            url: "http://10.0.0.5:3000/b/k/debian.img".into(),
            format: bty_proto::ImageFormat::Raw,
            sha256: "a".repeat(64),
            size: 1,
        };
        assert!(sane(&good));
        for bad in [
            ServerImage {
                sha256: "x".repeat(64),
                ..good.clone()
            },
            ServerImage {
                url: "file:///etc/shadow".into(),
                ..good.clone()
            },
            ServerImage {
                name: "a\x1b[2Jb".into(),
                ..good.clone()
            },
        ] {
            assert!(!sane(&bad), "{bad:?}");
        }
    }
}
