//! The module closure against kmod (depmod, modprobe --show-depends) and
//! busybox's modprobe reading the image's modules.dep and modules.alias.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::contents::unpack;
use super::{debs, find_deb, json, media_a, INITRD, WANTED};
use crate::util::{have_tool, on_path, TestDir};

/// `lib/modules/<release>/modules.dep` as module name → dependency names.
fn deps_of(text: &str) -> BTreeMap<String, Vec<String>> {
    let name = |p: &str| {
        let b = p.rsplit('/').next().unwrap();
        b.split('.').next().unwrap().replace('-', "_")
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (name(m), d.split_whitespace().map(name).collect()))
        .collect()
}

#[test]
fn module_closure_agrees_with_kmod_and_busybox_modprobe_reads_it() {
    let Some(a) = media_a() else { return };
    for tool in ["cpio", "gzip", "dpkg-deb", "depmod", "modprobe"] {
        let present = on_path(tool) || Path::new("/sbin").join(tool).is_file();
        if !have_tool(tool, present) {
            return;
        }
    }
    let sbin = |t: &str| {
        if on_path(t) {
            PathBuf::from(t)
        } else {
            Path::new("/sbin").join(t)
        }
    };
    let info = json(&a.out.join("media.json"))["info"].clone();
    let release = info["kernel_release"].as_str().unwrap().to_string();
    let t = TestDir::new();
    let (root, kroot) = (t.path().join("root"), t.path().join("kernel"));
    std::fs::create_dir_all(&root).unwrap();
    unpack(&a.out.join(INITRD), &root);
    let ours =
        std::fs::read_to_string(root.join(format!("lib/modules/{release}/modules.dep"))).unwrap();
    let ours = deps_of(&ours);

    // TESTING.md's example: virtio_net and virtio_pci with their closures.
    for m in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_pci_legacy_dev",
        "virtio_pci_modern_dev",
        "failover",
        "net_failover",
        "virtio_net",
    ] {
        assert!(ours.contains_key(m), "{m} not in the image");
    }
    let vn: BTreeSet<&str> = ours["virtio_net"].iter().map(String::as_str).collect();
    assert_eq!(
        vn,
        BTreeSet::from(["virtio", "virtio_ring", "net_failover", "failover"])
    );

    // kmod over the whole kernel package: the same set of modules.
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(find_deb(debs().unwrap(), "linux-image-"))
        .arg(&kroot)
        .status()
        .unwrap()
        .success());
    assert!(Command::new(sbin("depmod"))
        .arg("-b")
        .arg(&kroot)
        .arg(&release)
        .status()
        .unwrap()
        .success());
    let mut kmod_set = BTreeSet::new();
    for m in WANTED {
        let o = Command::new(sbin("modprobe"))
            .arg("-d")
            .arg(&kroot)
            .args(["-S", &release, "--show-depends", m])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kmod modprobe --show-depends {m}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(p) = l.strip_prefix("insmod ") {
                let p = p.split_whitespace().next().unwrap();
                kmod_set.insert(deps_of(&format!("{p}:")).into_keys().next().unwrap());
            }
        }
    }
    let our_set: BTreeSet<String> = ours.keys().cloned().collect();
    assert_eq!(
        our_set, kmod_set,
        "module closure differs from kmod's --show-depends"
    );
    let listed: BTreeSet<String> = info["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, our_set);

    // kmod's depmod over the image's own files: the same dependencies per
    // module, and ours lists each module before what it needs (busybox
    // loads a line back to front).
    let o = Command::new(sbin("depmod"))
        .arg("-n")
        .arg("-b")
        .arg(&root)
        .arg(&release)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let dep_part: String = text
        .lines()
        .take_while(|l| !l.starts_with("# Soft"))
        .map(|l| format!("{l}\n"))
        .collect();
    let theirs = deps_of(&dep_part);
    for (m, d) in &ours {
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (d.iter().collect(), theirs[m].iter().collect());
        assert_eq!(a, b, "dependencies of {m}");
        for (i, x) in d.iter().enumerate() {
            for y in &d[i + 1..] {
                assert!(
                    !ours[y].contains(x),
                    "{m}: {x} listed before {y}, which needs it"
                );
            }
        }
    }

    // busybox's modprobe reads our modules.dep and modules.alias: dry runs
    // (-D) in a chroot of the image (it looks under /lib/modules/`uname -r`).
    if !have_tool("root (chroot for busybox modprobe)", is_root()) {
        return;
    }
    let host_release =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let host_release = host_release.trim();
    if host_release != release {
        std::os::unix::fs::symlink(&release, root.join("lib/modules").join(host_release)).unwrap();
    }
    let bb = |arg: &str| -> Vec<String> {
        let o = Command::new("chroot")
            .arg(&root)
            .args(["/bin/busybox", "modprobe", "-D", arg])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "busybox modprobe -D {arg}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|p| {
                deps_of(&format!("{}:", p.trim()))
                    .into_keys()
                    .next()
                    .unwrap()
            })
            .collect()
    };
    let order = bb("virtio_net");
    assert_eq!(
        order.last().map(String::as_str),
        Some("virtio_net"),
        "{order:?}"
    );
    let at = |m: &str| {
        order
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{m} not loaded: {order:?}"))
    };
    assert!(
        at("failover") < at("net_failover")
            && at("virtio_ring") < at("virtio")
            && at("virtio") < at("virtio_net"),
        "{order:?}"
    );
    // By modalias, as the /init asks: a virtio NIC and an Intel 82540EM.
    assert_eq!(
        bb("virtio:d00000001v00001AF4").last().map(String::as_str),
        Some("virtio_net")
    );
    assert_eq!(
        bb("pci:v00008086d0000100Esv00008086sd00001100bc02sc00i00")
            .last()
            .map(String::as_str),
        Some("e1000")
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
