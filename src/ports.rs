//! Is a host port free, and if not, who holds it?

use std::fs;
use std::path::Path;

/// Protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if *self == Proto::Tcp { "tcp" } else { "udp" })
    }
}

/// Try to bind the port on every address, as the engine will.
pub fn is_free(port: u16, proto: Proto) -> bool {
    match proto {
        Proto::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    }
}

/// The process holding `port`, from /proc/net and /proc/*/fd ("pid 12 (nginx)").
/// Best effort: None when /proc does not tell (other namespaces, no rights).
pub fn owner(port: u16, proto: Proto) -> Option<String> {
    let inodes = socket_inodes(port, proto);
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|p| holder(&p.path(), &inodes))
}

/// `socket:[INODE]` of every socket listening on `port` (TCP) or bound to
/// it unconnected (UDP).
fn socket_inodes(port: u16, proto: Proto) -> Vec<String> {
    let files: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    // 0A = LISTEN for TCP; 07 = unconnected for UDP.
    let state = if proto == Proto::Tcp { "0A" } else { "07" };
    let mut inodes = Vec::new();
    for text in files.iter().filter_map(|f| fs::read_to_string(f).ok()) {
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, st, _, _, _, _, _, inode, ..] = cols[..] else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && st == state {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// "pid N (comm)" when the process at `/proc/N` holds one of `inodes`.
fn holder(proc: &Path, inodes: &[String]) -> Option<String> {
    let name = proc.file_name()?.to_str()?;
    if !name.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let holds = fs::read_dir(proc.join("fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()));
    let comm = fs::read_to_string(proc.join("comm")).unwrap_or_default();
    holds.then(|| format!("pid {name} ({})", comm.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_is_not_free_and_its_owner_is_us() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!is_free(port, Proto::Tcp));
        let who = owner(port, Proto::Tcp).expect("owner found");
        assert!(who.contains(&std::process::id().to_string()), "{who}");
        drop(l);
        assert!(is_free(port, Proto::Tcp));
    }
}
