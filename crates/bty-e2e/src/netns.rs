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

/// The bty host's address on the test LAN.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Name of the tap device qemu attaches to.
pub const TAP: &str = "tap0";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace deleted on drop (with everything running in it
/// expected to be stopped first by the owners' own guards).
pub struct Netns {
    name: String,
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
        let ns = Netns { name };
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

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command run inside the namespace via `ip netns exec`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Move the calling thread into the namespace. Threads it spawns
    /// afterwards (tokio workers, blocking pool) inherit it.
    pub fn enter_current_thread(&self) -> anyhow::Result<()> {
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
        std::thread::spawn(move || -> anyhow::Result<tokio::runtime::Runtime> {
            let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            nix::sched::setns(f, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into {name}"))?;
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
