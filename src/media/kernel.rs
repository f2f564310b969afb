//! The kernel package: its `vmlinuz`, its release (`uname -r`), and the
//! module closure with the index files busybox needs (see [`modules`]).
//!
//! `data.tar` of Debian's kernel package is ~400 MB unpacked (4,000
//! modules), so it is streamed, never unpacked to disk. The closure is only
//! known once every module's `.modinfo` has been read, so one pass keeps
//! the bytes of modules that may end up in it (compressed in memory): those
//! already needed, those that export symbols (only they can be a later
//! module's dependency) and those with a plain-word alias (what a softdep
//! may name). A softdep
//! target named by its module name and met before its user is the one case
//! that needs a second pass, which then reads only those files.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};
use indicatif::ProgressBar;

use super::deb::{Control, Deb, Flow, Kind};
use super::modules::{self, Closure, Index};

/// What the initramfs and the boot dir need from the kernel package.
pub struct Kernel {
    /// `uname -r`: the directory name under `lib/modules/`.
    pub release: String,
    pub vmlinuz: Vec<u8>,
    pub index: Index,
    pub closure: Closure,
    /// Module files of the closure: path under `lib/modules/<release>/`
    /// (always `.ko`) → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    pub modules_builtin: Vec<u8>,
}

impl Kernel {
    /// `modules.dep` for the image.
    pub fn modules_dep(&self) -> String {
        self.index.modules_dep(&self.closure)
    }

    /// `modules.alias` for the image.
    pub fn modules_alias(&self) -> String {
        self.index.modules_alias(&self.closure)
    }
}

/// The part of a path under `lib/modules/<release>/`, with the release.
fn module_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("lib/modules/")
        .or_else(|| path.strip_prefix("usr/lib/modules/"))?;
    rest.split_once('/')
}

/// Read `deb` (whose control is `control`) and take the closure of `wanted`.
pub fn read(
    deb: &Deb,
    control: &Control,
    wanted: &[&str],
    pb: Option<&ProgressBar>,
) -> Result<Kernel> {
    let mut vmlinuz: Option<(String, Vec<u8>)> = None;
    let mut index = Index::default();
    let mut builtin = Vec::new();
    // Candidates are kept zstd-compressed (level 1, ~4:1 on modules): a
    // third of the package's modules are candidates, 180 MB for Debian 12's
    // kernel, of which the closure needs 14 MB.
    let mut kept: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
    // Names something in the image may need: the wanted list, grown by the
    // dependencies of every module kept.
    let mut needed: BTreeSet<String> = wanted.iter().map(|w| w.replace('-', "_")).collect();
    let mut release: Option<String> = None;
    // One buffer for every module read: 4,000 allocations of up to a few MB
    // each would leave the heap fragmented (and the RSS high) for nothing.
    let mut buf = Vec::new();
    deb.each_data(pb, |e| {
        if e.kind != Kind::File {
            return Ok(Flow::Continue);
        }
        if let Some(rel) = e.path.strip_prefix("boot/vmlinuz-") {
            let mut b = Vec::with_capacity(e.size as usize);
            e.data.read_to_end(&mut b)?;
            vmlinuz = Some((rel.to_string(), b));
            return Ok(Flow::Continue);
        }
        let Some((rel, sub)) = module_path(&e.path) else {
            return Ok(Flow::Continue);
        };
        if release.as_deref().is_some_and(|r| r != rel) {
            bail!(
                "modules of two kernel releases ({} and {rel})",
                release.as_deref().unwrap_or("")
            );
        }
        release = Some(rel.to_string());
        if sub == "modules.builtin" {
            e.data.read_to_end(&mut builtin)?;
        } else if modules::is_module(sub) {
            buf.clear();
            e.data.read_to_end(&mut buf)?;
            let (path, unpacked) = if sub.ends_with(".ko") {
                (sub.to_string(), None)
            } else {
                let (p, b) = modules::decompress(sub, buf.clone())?;
                (p, Some(b))
            };
            let bytes = unpacked.as_deref().unwrap_or(&buf);
            let m = modules::parse(&path, bytes)?;
            // Exporters can become a later module's dependency; modules with
            // a plain-word alias (crypto-crct10dif, crct10dif) a softdep's.
            let plain_alias = m.aliases.iter().any(|a| !a.contains([':', '*', '?', '[']));
            if needed.contains(&m.name) || m.exports || plain_alias {
                if needed.contains(&m.name) {
                    needed.extend(
                        m.depends
                            .iter()
                            .chain(&m.softdep_pre)
                            .chain(&m.softdep_post)
                            .cloned(),
                    );
                }
                let mut packed =
                    zstd::bulk::compress(bytes, 1).context("compressing a module in memory")?;
                // zstd hands back a buffer of the worst-case size.
                packed.shrink_to_fit();
                kept.insert(path, (bytes.len(), packed));
            }
            index.modules.insert(m.name.clone(), m);
        }
        Ok(Flow::Continue)
    })?;
    let (vm_release, vmlinuz) = vmlinuz.with_context(|| {
        format!(
            "{}: no boot/vmlinuz-* in {} (is it a kernel image package?)",
            deb.path.display(),
            control.package
        )
    })?;
    let release = release.unwrap_or_else(|| vm_release.clone());
    if release != vm_release {
        bail!(
            "{}: vmlinuz-{vm_release} but modules for {release}",
            deb.path.display()
        );
    }
    index.set_builtin(&String::from_utf8_lossy(&builtin));
    let closure = index.closure(wanted);
    let paths: BTreeSet<&str> = closure
        .modules
        .iter()
        .map(|n| index.modules[n].path.as_str())
        .collect();
    kept.retain(|p, _| paths.contains(p.as_str()));
    let mut files = BTreeMap::new();
    for (p, (len, packed)) in kept {
        files.insert(
            p,
            zstd::bulk::decompress(&packed, len).context("unpacking a module kept in memory")?,
        );
    }
    let absent: BTreeSet<String> = paths
        .iter()
        .filter(|p| !files.contains_key(**p))
        .map(|p| p.to_string())
        .collect();
    if !absent.is_empty() {
        // Softdep targets that came before their users in the tar.
        deb.each_data(None, |e| {
            let Some((_, sub)) = module_path(&e.path) else {
                return Ok(Flow::Continue);
            };
            if !modules::is_module(sub) {
                return Ok(Flow::Continue);
            }
            let plain = sub.trim_end_matches(".xz").trim_end_matches(".zst");
            if absent.contains(plain) {
                let mut raw = Vec::new();
                e.data.read_to_end(&mut raw)?;
                let (path, bytes) = modules::decompress(sub, raw)?;
                files.insert(path, bytes);
            }
            Ok(Flow::Continue)
        })?;
    }
    if files.len() != paths.len() {
        bail!(
            "{}: module files vanished between two reads",
            deb.path.display()
        );
    }
    Ok(Kernel {
        release,
        vmlinuz,
        index,
        closure,
        files,
        modules_builtin: builtin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::deb::tests::make_deb;
    use crate::media::modules::tests::fake_ko;

    #[test]
    fn reads_vmlinuz_and_the_closure_with_a_late_softdep_user() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("linux-image-9.9.9-1-amd64_9.9.9-1_amd64.deb");
        let m = "lib/modules/9.9.9-1-amd64/kernel";
        // realtek (a softdep, exporting nothing) comes before r8169 in the
        // tar: the second pass must fetch it.
        let realtek = fake_ko(&["name=realtek", "depends="], false);
        let r8169 = fake_ko(
            &["name=r8169", "depends=libphy", "softdep=pre: realtek"],
            false,
        );
        let libphy = fake_ko(&["name=libphy", "depends="], true);
        let other = fake_ko(&["name=other", "depends="], false);
        make_deb(
            &p,
            "linux-image-9.9.9-1-amd64",
            "9.9.9-1",
            "xz",
            &[
                ("boot/vmlinuz-9.9.9-1-amd64", b"KERNEL"),
                (&format!("{m}/a/realtek.ko"), &realtek),
                (&format!("{m}/b/libphy.ko"), &libphy),
                (&format!("{m}/c/other.ko"), &other),
                (&format!("{m}/d/r8169.ko"), &r8169),
                (
                    "lib/modules/9.9.9-1-amd64/modules.builtin",
                    b"kernel/net/packet/af_packet.ko\n",
                ),
            ],
        );
        let deb = Deb::open(&p).unwrap();
        let k = read(&deb, &deb.control().unwrap(), &["r8169", "af_packet"], None).unwrap();
        assert_eq!(k.release, "9.9.9-1-amd64");
        assert_eq!(k.vmlinuz, b"KERNEL");
        assert_eq!(k.closure.modules, ["libphy", "r8169", "realtek"]);
        assert_eq!(k.closure.builtin, ["af_packet"]);
        let names: Vec<&str> = k.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "kernel/a/realtek.ko",
                "kernel/b/libphy.ko",
                "kernel/d/r8169.ko"
            ]
        );
        assert_eq!(k.files["kernel/a/realtek.ko"], realtek);
        assert!(k
            .modules_dep()
            .contains("kernel/d/r8169.ko: kernel/b/libphy.ko\n"));
    }

    #[test]
    fn a_package_without_a_kernel_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("linux-image-x.deb");
        make_deb(&p, "linux-image-x", "1", "xz", &[("usr/share/doc/x", b"x")]);
        let deb = Deb::open(&p).unwrap();
        let err = read(&deb, &deb.control().unwrap(), &["e1000"], None)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no boot/vmlinuz-*"), "{err:#}");
    }
}
