//! The initramfs tree: busybox with its applet links, this very binary as
//! `/bin/bty` (the agent under that name), `/init` and the udhcpc hook from
//! `templates/netboot/`, the kernel modules with their index files, and
//! `/etc/bty-media.json` saying what all this is.
//!
//! The info file goes first in the archive (after its `etc` directory),
//! everything else follows sorted by path, so `media status` reads a few
//! KB of the initrd instead of decompressing past the ~100 MB agent.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use minijinja::Environment;

use super::cpio::{Entry, Node};
use super::kernel::Kernel;
use super::{Info, INFO_PATH};

const INIT: &str = include_str!("../../templates/netboot/init.j2");
const UDHCPC: &str = include_str!("../../templates/netboot/udhcpc.script");

/// Render `/init` for `info`, loading `modules` when the alias pass finds
/// no NIC, and running the wizard from the stick under
/// [`bty_proto::stick::MODE_ARG`].
pub fn render_init(info: &Info, modules: &[String]) -> Result<String> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_template("init", INIT)
        .context("parsing the /init template")?;
    let t = env.get_template("init")?;
    t.render(minijinja::context! {
        version => info.version,
        agent_version => info.agent_version,
        modules => modules.join(" "),
        stick_modules => super::modules::STICK.join(" "),
        wizard_arg => bty_proto::stick::MODE_ARG,
        data_label => bty_proto::stick::DATA_LABEL,
        stick_dir => "/stick",
    })
    .context("rendering /init")
}

/// What goes into the image besides the kernel's modules.
pub struct Parts {
    /// This binary (becomes `/bin/bty`).
    pub agent: Vec<u8>,
    /// busybox-static's `bin/busybox`.
    pub busybox: Vec<u8>,
    /// `busybox --list-full` (`bin/sh`, `sbin/modprobe`, ...): each
    /// becomes a link to `/bin/busybox`.
    pub applets: Vec<String>,
}

struct Tree(BTreeMap<String, (u32, Node)>);

impl Tree {
    fn add(&mut self, path: &str, mode: u32, node: Node) -> Result<()> {
        let mut p = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d)
            .unwrap_or(&[])
        {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(part);
            self.0.entry(p.clone()).or_insert((0o755, Node::Dir));
        }
        if self.0.insert(path.to_string(), (mode, node)).is_some() {
            bail!("{path} twice in the initramfs");
        }
        Ok(())
    }
}

/// The archive entries, in archive order.
pub fn entries(parts: Parts, kernel: &Kernel, info: &Info) -> Result<Vec<Entry>> {
    let mut t = Tree(BTreeMap::new());
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "run", "etc", "var/run", "usr/bin", "usr/sbin",
    ] {
        t.add(d, 0o755, Node::Dir)?;
    }
    t.add("tmp", 0o1777, Node::Dir)?;
    t.add("root", 0o700, Node::Dir)?;
    // The kernel opens /dev/console for /init's stdio before /init mounts
    // devtmpfs; without the node early output is lost.
    t.add("dev/console", 0o600, Node::CharDev { major: 5, minor: 1 })?;
    let modules: Vec<String> = kernel
        .closure
        .modules
        .iter()
        .filter(|m| super::modules::WANTED.contains(&m.as_str()))
        .cloned()
        .collect();
    t.add(
        "init",
        0o755,
        Node::File(render_init(info, &modules)?.into_bytes()),
    )?;
    t.add(
        "etc/udhcpc.script",
        0o755,
        Node::File(UDHCPC.as_bytes().to_vec()),
    )?;
    let json = serde_json::to_string_pretty(info)? + "\n";
    t.add(INFO_PATH, 0o644, Node::File(json.into_bytes()))?;
    t.add("bin/busybox", 0o755, Node::File(parts.busybox))?;
    t.add("bin/bty", 0o755, Node::File(parts.agent))?;
    for a in &parts.applets {
        let ok = matches!(a.rsplit_once('/'), Some(("bin" | "sbin" | "usr/bin" | "usr/sbin", n))
            if !n.is_empty() && n != "." && n != "..");
        // `linuxrc` (the old initrd entry point) and anything else outside
        // the four bin dirs are left out.
        if !ok || a == "bin/busybox" || a == "bin/bty" {
            continue;
        }
        t.add(a, 0o777, Node::Symlink("/bin/busybox".into()))?;
    }
    let base = format!("lib/modules/{}", kernel.release);
    t.add(
        &format!("{base}/modules.dep"),
        0o644,
        Node::File(kernel.modules_dep().into_bytes()),
    )?;
    t.add(
        &format!("{base}/modules.alias"),
        0o644,
        Node::File(kernel.modules_alias().into_bytes()),
    )?;
    t.add(
        &format!("{base}/modules.builtin"),
        0o644,
        Node::File(kernel.modules_builtin.clone()),
    )?;
    for (path, bytes) in &kernel.files {
        t.add(&format!("{base}/{path}"), 0o644, Node::File(bytes.clone()))?;
    }
    let mut first = Vec::new();
    for p in ["etc", INFO_PATH] {
        let (mode, node) = t.0.remove(p).expect("added above");
        first.push(Entry {
            path: p.to_string(),
            mode,
            node,
        });
    }
    first.extend(
        t.0.into_iter()
            .map(|(path, (mode, node))| Entry { path, mode, node }),
    );
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            version: "0.1.0-k6.1.0-57-amd64".into(),
            agent_version: "0.1.0".into(),
            agent_sha256: "ab".repeat(32),
            kernel: "linux-image-6.1.0-57-amd64".into(),
            ..Info::default()
        }
    }

    #[test]
    fn init_is_rendered_without_the_wget_clock_hack() {
        let init = render_init(&info(), &["virtio_net".into(), "e1000".into()]).unwrap();
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("init 0.1.0-k6.1.0-57-amd64 (agent 0.1.0)"));
        assert!(init.contains("for m in virtio_net e1000; do"));
        assert!(init.contains("/bin/bty --set-clock"));
        assert!(!init.contains("wget"), "{init}");
        // Wizard mode: its kernel argument, the stick's modules by name,
        // the data partition's label, and the agent's wizard.
        assert!(init.contains("bty.mode=wizard)"), "{init}");
        assert!(
            init.contains("modprobe -qa xhci_pci ehci_pci uhci_hcd"),
            "{init}"
        );
        assert!(init.contains("findfs LABEL=BTY-DATA"), "{init}");
        assert!(init.contains("/bin/bty wizard --stick /stick"), "{init}");
        assert!(!init.contains("{{"), "{init}");
    }

    #[test]
    fn info_first_then_sorted_with_parents_before_children() {
        let k = Kernel {
            release: "9.9".into(),
            vmlinuz: Vec::new(),
            index: Default::default(),
            closure: Default::default(),
            files: [("kernel/drivers/net/e1000.ko".to_string(), b"ko".to_vec())].into(),
            modules_builtin: Vec::new(),
        };
        let parts = Parts {
            agent: b"AGENT".to_vec(),
            busybox: b"BB".to_vec(),
            applets: [
                "bin/sh",
                "bin/ls",
                "sbin/modprobe",
                "usr/bin/awk",
                "linuxrc",
                "bin/busybox",
                "bin/../x",
            ]
            .map(String::from)
            .to_vec(),
        };
        let e = entries(parts, &k, &info()).unwrap();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(&paths[..2], ["etc", "etc/bty-media.json"]);
        let rest = &paths[2..];
        let mut sorted = rest.to_vec();
        sorted.sort();
        assert_eq!(rest, &sorted[..]);
        for p in rest {
            if let Some((parent, _)) = p.rsplit_once('/') {
                let at = |x: &str| paths.iter().position(|q| *q == x).unwrap();
                assert!(at(parent) < at(p), "{parent} after {p}");
            }
        }
        assert!(!paths.contains(&"linuxrc") && !paths.iter().any(|p| p.contains("..")));
        for want in [
            "bin/bty",
            "bin/sh",
            "sbin/modprobe",
            "usr/bin/awk",
            "init",
            "dev/console",
            "lib/modules/9.9/modules.dep",
            "lib/modules/9.9/kernel/drivers/net/e1000.ko",
        ] {
            assert!(paths.contains(&want), "{want} missing: {paths:?}");
        }
        let bb = e.iter().find(|e| e.path == "bin/busybox").unwrap();
        assert_eq!(bb.node, Node::File(b"BB".to_vec()));
        let sh = e.iter().find(|e| e.path == "bin/sh").unwrap();
        assert_eq!(sh.node, Node::Symlink("/bin/busybox".into()));
    }

    /// Whether `tool` is on PATH; missing, the test skips (fails under
    /// BTY_REQUIRE_TOOLS=1, so a green CI run means it ran).
    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            assert!(
                std::env::var("BTY_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "{tool} is required (BTY_REQUIRE_TOOLS=1) but not installed"
            );
            eprintln!("skipping: {tool} not installed");
        }
        found
    }

    /// The udhcpc hook, run by busybox's sh as udhcpc runs it, in network
    /// and mount namespaces of its own (the namespace's loopback as the NIC,
    /// a private /run and /etc/resolv.conf): it configures the NIC and writes the lease file
    /// the stick wizard reads, with hostile values unable to add a line,
    /// and the wizard's parser takes only what is sane.
    #[test]
    fn the_udhcpc_hook_writes_the_lease_for_the_wizard() {
        if !have("unshare") || !have("busybox") || !have("ip") {
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: namespaces need root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("udhcpc.script");
        std::fs::write(&script, UDHCPC).unwrap();
        std::fs::write(t.path().join("resolv.conf"), "").unwrap();
        let inner = r#"set -e
mount -t tmpfs tmpfs /run
mount --bind "$T/resolv.conf" /etc/resolv.conf
ip link set lo up
interface=lo ip=10.9.0.2 mask=24 dns=10.9.0.53 siaddr=10.9.0.1 serverid=10.9.0.254   tftp="$(printf 'boot.lab
siaddr=6.6.6.6')" bootfile='undionly.kpxe;reboot'   busybox sh "$T/udhcpc.script" bound
cat /run/bty-dhcp.env
echo ---
ip -4 -o addr show dev lo
cat /etc/resolv.conf
"#;
        let out = std::process::Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                inner,
            ])
            .env("T", t.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (lease, rest) = text.split_once("---\n").unwrap();
        assert_eq!(
            lease,
            "interface=lo\nip=10.9.0.2\nsiaddr=10.9.0.1\nserverid=10.9.0.254\n\
             tftp=boot.labsiaddr6.6.6.6\nboot_file=undionly.kpxereboot\n",
            "the injected newline and shell characters must be gone"
        );
        assert!(rest.contains("inet 10.9.0.2/24"), "{rest}");
        assert!(rest.contains("nameserver 10.9.0.53"), "{rest}");
        let l = bty_agent::wizard::server::parse_lease(lease);
        assert_eq!(l.siaddr, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(l.serverid, Some("10.9.0.254".parse().unwrap()));
        assert_eq!(l.boot_file.as_deref(), Some("undionly.kpxereboot"));
        assert_eq!(
            bty_agent::wizard::server::candidates(None, Some(&l))[0],
            "http://10.9.0.1:8080"
        );
    }
}
