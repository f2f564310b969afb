//! The "operator's LAN": a network namespace with a bridge and a tap.
//!
//! Each test gets its own namespace `bty-e2e-<pid>-<n>` holding a bridge
//! `br0` with [`HOST_IP`] (TEST-NET-1, which never leaves the namespace)
//! and a tap `tap0` on that bridge for qemu. The services bind their
//! sockets from threads that `setns()` into the namespace: a socket stays in
//! the namespace it was created in, whichever thread uses it later.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};
use nix::sched::CloneFlags;

/// The bty host's address on the test LAN (inside a namespace).
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The bty host's address on the LAN built in the root namespace
/// ([`Netns::host_lan`]): TEST-NET-2, because a machine's real network may
/// well be TEST-NET-1 (this one's is: its gateway is 192.0.2.1).
pub const HOST_LAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Name of the tap device qemu attaches to.
pub const TAP: &str = "tap0";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace deleted on drop (with everything running in it
/// expected to be stopped first by the owners' own guards), or, for the
/// container test, the same LAN built in the root namespace
/// ([`Netns::host_lan`]).
pub struct Netns {
    name: String,
    /// `Some((bridge, tap))`: a LAN in the root namespace, no namespace.
    host: Option<(String, String)>,
    /// The bty host's address on this LAN.
    ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Create the namespace with `lo`, `br0` (192.0.2.1/24) and `tap0`, all up.
    pub fn create() -> anyhow::Result<Netns> {
        let name = format!(
            "bty-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        // From here on Drop cleans up, even if the rest fails.
        let ns = Netns {
            name,
            host: None,
            ip: HOST_IP,
        };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"])?;
        // No STP forwarding delay: the firmware's first DHCP must get out.
        ip(&[
            "-n",
            n,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", n, "link", "set", "br0", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ip(&["-n", n, "link", "set", TAP, "master", "br0"])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        Ok(ns)
    }

    /// The LAN in the root namespace, for services that can only be
    /// reached there (ports published by a container engine): a bridge
    /// with [`HOST_LAN_IP`]/24 and a tap on it, both named after this process,
    /// no uplink. Nothing leaves the machine: nothing else is on the
    /// bridge, and the test's DHCP hands out no router.
    pub fn host_lan() -> anyhow::Result<Netns> {
        // The root namespace is the machine's: refuse to shadow anything.
        let net = format!(
            "{}.",
            HOST_LAN_IP.octets()[..3]
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(".")
        );
        let cmds: [&[&str]; 2] = [
            &["-4", "-o", "addr", "show"],
            &["-4", "route", "show", "table", "all"],
        ];
        for args in cmds {
            let out = Command::new("ip")
                .args(args)
                .output()
                .with_context(|| format!("running ip {}", args.join(" ")))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.contains(&net)) {
                bail!(
                    "{net}0/24 is in use on this machine ({line}); the container test needs it free for its LAN"
                );
            }
        }
        // Interface names are at most 15 bytes.
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed) % 10
        );
        let (bridge, tap) = (format!("btye2e{id}b"), format!("btye2e{id}t"));
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let ns = Netns {
            name: String::new(),
            host: Some((bridge.clone(), tap.clone())),
            ip: HOST_LAN_IP,
        };
        ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["addr", "add", &format!("{HOST_LAN_IP}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["link", "set", &tap, "master", &bridge])?;
        ip(&["link", "set", &tap, "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`; empty for the host LAN).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bty host's address on this LAN.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The LAN's bridge, which holds [`Netns::host_ip`].
    pub fn bridge(&self) -> &str {
        self.host.as_ref().map(|h| h.0.as_str()).unwrap_or("br0")
    }

    /// The tap qemu attaches to.
    pub fn tap(&self) -> &str {
        self.host.as_ref().map(|h| h.1.as_str()).unwrap_or(TAP)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command run inside the namespace via `ip netns exec`.
    pub fn command(&self, program: &str) -> Command {
        if self.host.is_some() {
            return Command::new(program);
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Move the calling thread into the namespace. Threads it spawns
    /// afterwards (tokio workers, blocking pool) inherit it.
    pub fn enter_current_thread(&self) -> anyhow::Result<()> {
        if self.host.is_some() {
            return Ok(());
        }
        let f = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        nix::sched::setns(f, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns into {}", self.name))?;
        Ok(())
    }

    /// A multi-threaded tokio runtime whose worker threads live in the
    /// namespace. Spawn work on it (`rt.spawn`); do not `block_on` a future
    /// that opens sockets, because `block_on` runs on the caller's thread.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let path = self.path();
        let name = self.name.clone();
        let host = self.host.is_some();
        std::thread::spawn(move || -> anyhow::Result<tokio::runtime::Runtime> {
            if !host {
                let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(f, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {name}"))?;
            }
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("building the namespace's tokio runtime")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("runtime builder thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some((bridge, tap)) = &self.host {
            let _ = ip(&["link", "del", tap]);
            if let Err(e) = ip(&["link", "del", bridge]) {
                eprintln!("bty-e2e: could not delete bridge {bridge}: {e}");
            }
            return;
        }
        // Kill whatever is still running in the namespace (a guard that
        // failed to stop its process) so the namespace can go away.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            let me = std::process::id() as i32;
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    if pid == me {
                        continue;
                    }
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = ip(&["-n", &self.name, "link", "del", TAP]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "bty-e2e: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}
