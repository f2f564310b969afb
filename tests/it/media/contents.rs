//! What the media holds, checked with the real tools: GNU cpio reads the
//! initrd, dpkg-deb agrees with bty-lab's reading of the packages.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{debs, find_deb, json, media_a, media_other, sha256, INITRD, IPXE, KERNEL};
use crate::util::{bin, have_tool, on_path, TestDir};

#[test]
fn ipxe_bootfiles_come_from_the_deb_without_a_host_ipxe_dir() {
    let Some(b) = media_other() else { return };
    if !have_tool("dpkg-deb", on_path("dpkg-deb")) {
        return;
    }
    let m = json(&b.out.join("media.json"));
    assert!(m["ipxe"].as_str().unwrap().starts_with("ipxe "), "{m:#}");
    let t = TestDir::new();
    let deb = find_deb(debs().unwrap(), "ipxe_");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(t.path())
        .status()
        .unwrap();
    assert!(st.success());
    for f in IPXE {
        // Debian's usr/lib/ipxe/ipxe.efi is a link to /boot/ipxe.efi.
        let mut p = t.path().join("usr/lib/ipxe").join(f);
        if let Ok(l) = std::fs::read_link(&p) {
            p = t.path().join(l.strip_prefix("/").unwrap_or(&l));
        }
        assert_eq!(sha256(&p), sha256(&b.out.join(f)), "{f}");
    }
}

/// The initrd unpacked by GNU cpio into a fresh directory.
pub fn unpack(initrd: &Path, into: &Path) {
    let gz = std::fs::read(initrd).unwrap();
    let mut raw = Vec::new();
    gunzip(&gz, &mut raw);
    let mut c = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(into)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&raw).unwrap();
    assert!(c.wait().unwrap().success(), "cpio -i failed");
}

/// gunzip with the real tool (the test checks bty-lab's gzip, not ours).
pub fn gunzip(gz: &[u8], out: &mut Vec<u8>) {
    let mut c = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = gz.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    c.stdout.take().unwrap().read_to_end(out).unwrap();
    w.join().unwrap().unwrap();
    assert!(c.wait().unwrap().success(), "gzip -d failed");
}

#[test]
fn the_initrd_is_what_cpio_and_dpkg_deb_say() {
    let Some(a) = media_a() else { return };
    for tool in ["cpio", "gzip", "dpkg-deb"] {
        if !have_tool(tool, on_path(tool)) {
            return;
        }
    }
    let t = TestDir::new();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    unpack(&a.out.join(INITRD), &root);
    // cpio -tv: owners 0:0, one mtime, the console node, busybox links.
    let mut raw = Vec::new();
    gunzip(&std::fs::read(a.out.join(INITRD)).unwrap(), &mut raw);
    let mut c = Command::new("cpio")
        .args(["-tv", "--quiet", "--numeric-uid-gid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let w = std::thread::spawn(move || stdin.write_all(&raw));
    let mut listing = String::new();
    c.stdout
        .take()
        .unwrap()
        .read_to_string(&mut listing)
        .unwrap();
    w.join().unwrap().unwrap();
    assert!(c.wait().unwrap().success());
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines[0].ends_with(" etc") && lines[1].ends_with(" etc/bty-media.json"),
        "{:?}",
        &lines[..3]
    );
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "owner of {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("crw-------") && l.ends_with(" dev/console")),
        "no /dev/console"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("sbin/modprobe -> /bin/busybox")),
        "no /sbin/modprobe link"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("bin/sh -> /bin/busybox")),
        "no /bin/sh link"
    );

    // The agent is this binary; the init has no wget clock hack.
    assert_eq!(sha256(&root.join("bin/bty")), sha256(&bin()));
    let init = std::fs::read_to_string(root.join("init")).unwrap();
    assert!(
        init.contains("/bin/bty --set-clock") && !init.contains("wget"),
        "{init}"
    );
    let info = json(&root.join("etc/bty-media.json"));
    assert_eq!(info, json(&a.out.join("media.json"))["info"]);

    // dpkg-deb agrees with bty-lab's reading of the packages.
    let from = debs().unwrap();
    let field = |deb: &Path, f: &str| {
        let o = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let kdeb = find_deb(from, "linux-image-");
    let bdeb = find_deb(from, "busybox-static_");
    assert_eq!(info["kernel"], field(&kdeb, "Package"));
    assert_eq!(info["kernel_version"], field(&kdeb, "Version"));
    assert_eq!(info["busybox"], field(&bdeb, "Version"));
    let x = t.path().join("bb");
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&bdeb)
        .arg(&x)
        .status()
        .unwrap()
        .success());
    assert_eq!(
        sha256(&x.join("bin/busybox")),
        sha256(&root.join("bin/busybox"))
    );
    let release = info["kernel_release"].as_str().unwrap();
    let fsys = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO ./boot/vmlinuz-{release} | sha256sum",
            kdeb.display()
        ))
        .output()
        .unwrap();
    let vm = String::from_utf8_lossy(&fsys.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(vm, sha256(&a.out.join(KERNEL)));
}
