//! Is a host port free, and if not, who holds it?

use std::fs;

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
    let files: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut inodes = Vec::new();
    for f in files {
        let Ok(t) = fs::read_to_string(f) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 0A = LISTEN for TCP; 07 = unconnected for UDP.
            let state_ok = match proto {
                Proto::Tcp => cols[3] == "0A",
                Proto::Udp => cols[3] == "07",
            };
            if local_port == Some(port) && state_ok {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc in fs::read_dir("/proc").ok()?.flatten() {
        let name = proc.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    let comm = fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                    return Some(format!("pid {name} ({})", comm.trim()));
                }
            }
        }
    }
    None
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
