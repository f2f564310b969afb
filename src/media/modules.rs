//! Kernel modules: which ones go into the initramfs, and the two index
//! files busybox's `modprobe` reads there.
//!
//! Debian's kernel package ships no `modules.dep` (its postinst runs
//! depmod), so dependencies come from each module's own `.modinfo` ELF
//! section: `depends=` (the modules whose symbols it uses, written by
//! modpost), `softdep=` and `alias=`. We take the closure of [`WANTED`] and
//! write, under `lib/modules/<release>/`:
//!
//! - `modules.dep`: `path.ko: dep.ko ...` for every module in the image.
//!   busybox 1.35's full modprobe (modutils/modprobe.c, what busybox-static
//!   ships: it has `-D`/`-b`, unlike modprobe-small) "expects the full
//!   dependency list to be specified in modules.dep", reads it relative to
//!   `/lib/modules/$(uname -r)` and loads the list *from the end*, so each
//!   line lists the module's whole closure with every module before its own
//!   dependencies (kmod's depmod writes the same order). A missing
//!   modules.dep makes it die, even for a plain module name.
//! - `modules.alias`: `alias <pattern> <module>` lines; the /init loads
//!   drivers by the modaliases the hardware reports (`modprobe -qa
//!   pci:v...`), which busybox matches with fnmatch(3) against these.
//! - `modules.builtin` (copied from the package): busybox reads it to say
//!   "module X is builtin" instead of "not found" (af_packet is builtin in
//!   Debian's kernel).
//!
//! busybox ignores softdeps (kmod's `modules.softdep`), so their targets
//! (resolved through aliases, as kmod does) are only put into the image:
//! the kernel asks for them itself when they matter, through
//! `request_module()` → `/sbin/modprobe` (a busybox link): crc-t10dif's
//! `pre: crct10dif` through the crypto API (`crypto-crct10dif`), r8169's
//! `pre: realtek` through the PHY's `mdio:` alias. Folding them into
//! modules.dep would be wrong: busybox stops a dependency list at the first
//! module that fails, and crct10dif_pclmul fails (ENODEV) on every CPU
//! without PCLMULQDQ, which would take sd_mod and nvme down with it.
//! `modules.symbols` is not written: it serves `modprobe symbol:NAME`,
//! which nothing here runs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};

/// The drivers the netboot environment carries, each with its closure:
/// NICs and disks common in labs, plus what qemu emulates, plus
/// [`STICK`].
pub const WANTED: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "r8169",
    "tg3",
    "bnxt_en",
    "mlx5_core",
    "virtio_blk",
    "virtio_scsi",
    "ahci",
    "nvme",
    "sd_mod",
    "af_packet",
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "ohci_pci",
    "usb_storage",
    "uas",
    "ext4",
    "usbhid",
    "hid_generic",
];

/// What the wizard mode of /init loads by name, in this order, to read the
/// USB stick and let a USB keyboard type: the USB host controllers (EHCI
/// before its UHCI/OHCI companions, as the kernel asks), USB mass storage
/// (both protocols) with the SCSI disk driver, ext4 for the data partition,
/// and the HID drivers. All are modules in Debian 12's kernel (its config
/// has `CONFIG_USB_XHCI_PCI=m`, `CONFIG_USB_STORAGE=m`, `CONFIG_EXT4_FS=m`,
/// `CONFIG_USB_HID=m`, `CONFIG_HID_GENERIC=m`, ...); one that a kernel
/// builds in is simply reported as builtin. By name rather than by alias:
/// nothing runs udev here, so the HID devices that usbhid creates would
/// find no driver, and the controllers must be up before a USB alias exists.
/// Taking over the controller ends the firmware's USB keyboard emulation,
/// so usbhid must come with it.
pub const STICK: &[&str] = &[
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "ohci_pci",
    "usb_storage",
    "uas",
    "sd_mod",
    "ext4",
    "usbhid",
    "hid_generic",
];

/// One module, as its `.modinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The kernel's name for it (`-` as `_`).
    pub name: String,
    /// Path under `lib/modules/<release>/`, always ending in `.ko` (a
    /// compressed module is stored decompressed).
    pub path: String,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    pub aliases: Vec<String>,
    /// Does it export symbols (so that others can depend on it)?
    pub exports: bool,
}

/// The module name of a file: its base name up to the first `.`, with `-`
/// as `_` (what the kernel and both modprobes do).
pub fn modname(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.split('.').next().unwrap_or(base).replace('-', "_")
}

/// A module file's bytes as the kernel loads them: `.ko.xz` and `.ko.zst`
/// are decompressed (busybox's insmod hands the file to finit_module as it
/// is). Returns the `.ko` path and the bytes.
pub fn decompress(path: &str, bytes: Vec<u8>) -> Result<(String, Vec<u8>)> {
    let unpack = |r: &mut dyn std::io::Read| -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(bytes.len() * 3);
        r.read_to_end(&mut out)?;
        Ok(out)
    };
    if let Some(stem) = path.strip_suffix(".xz") {
        let out = unpack(&mut xz2::read::XzDecoder::new(&bytes[..]))
            .with_context(|| format!("decompressing {path}"))?;
        Ok((stem.to_string(), out))
    } else if let Some(stem) = path.strip_suffix(".zst") {
        let out = unpack(&mut zstd::stream::read::Decoder::new(&bytes[..])?)
            .with_context(|| format!("decompressing {path}"))?;
        Ok((stem.to_string(), out))
    } else {
        Ok((path.to_string(), bytes))
    }
}

/// Is `path` (under `lib/modules/<release>/`) a module file?
pub fn is_module(path: &str) -> bool {
    path.ends_with(".ko") || path.ends_with(".ko.xz") || path.ends_with(".ko.zst")
}

/// The named sections of a little-endian ELF64 file: (name, offset, size).
///
/// Hand-parsed (as `crate::elf::is_dynamic` is): the section table
/// is all we need from a module, and it is a few fixed-offset fields.
fn sections(elf: &[u8]) -> Result<Vec<(&str, usize, usize)>> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?) as usize)
    };
    let shoff = u64_at(0x28).context("short ELF header")?;
    let (shentsize, shnum, shstrndx) = (u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    if shentsize < 64 || shstrndx >= shnum {
        bail!("bad ELF section table");
    }
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let o = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(o)?, u64_at(o + 0x18)?, u64_at(o + 0x20)?))
    };
    let (_, stroff, strsize) = header(shstrndx).context("ELF section table out of range")?;
    let strtab = elf
        .get(stroff..stroff.saturating_add(strsize))
        .context("ELF section names out of range")?;
    let mut out = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let (name, off, size) = header(i).context("ELF section table out of range")?;
        let name = strtab
            .get(name..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("");
        out.push((name, off, size));
    }
    Ok(out)
}

/// Read a module's `.modinfo` (NUL-separated `key=value` strings).
pub fn parse(path: &str, elf: &[u8]) -> Result<Module> {
    let secs = sections(elf).with_context(|| format!("reading {path}"))?;
    let (_, off, size) = *secs
        .iter()
        .find(|s| s.0 == ".modinfo")
        .with_context(|| format!("{path} has no .modinfo section"))?;
    let info = elf
        .get(off..off.saturating_add(size))
        .with_context(|| format!("{path}: .modinfo out of range"))?;
    let exports = secs
        .iter()
        .any(|&(n, _, size)| (n == "__ksymtab" || n == "__ksymtab_gpl") && size > 0);
    let mut m = Module {
        name: modname(path),
        path: path.to_string(),
        depends: Vec::new(),
        softdep_pre: Vec::new(),
        softdep_post: Vec::new(),
        aliases: Vec::new(),
        exports,
    };
    for kv in info.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let kv = String::from_utf8_lossy(kv);
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "name" if !v.is_empty() => m.name = v.replace('-', "_"),
            "depends" => m.depends.extend(
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.replace('-', "_")),
            ),
            "alias" => m.aliases.push(v.to_string()),
            "softdep" => {
                // "pre: a b post: c" (modinfo(8)); either part may be absent.
                let mut into = None;
                for w in v.split_whitespace() {
                    match w {
                        "pre:" => into = Some(&mut m.softdep_pre),
                        "post:" => into = Some(&mut m.softdep_post),
                        _ => {
                            if let Some(list) = into.as_mut() {
                                list.push(w.replace('-', "_"));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// fnmatch(3) without flags, as busybox matches aliases: `*`, `?` and
/// `[...]` classes (with `!`/`^` negation and ranges).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, bytes consumed incl. ']').
        let mut i = 0;
        let neg = matches!(p.first(), Some(b'!' | b'^'));
        if neg {
            i += 1;
        }
        let mut hit = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == b']' && !first {
                return Some((hit != neg, i + 1));
            }
            first = false;
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                hit |= (p[i]..=p[i + 2]).contains(&c);
                i += 3;
            } else {
                hit |= p[i] == c;
                i += 1;
            }
        }
        None
    }
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some(b'?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(b'[') if !n.is_empty() => match class(&p[1..], n[0]) {
                Some((true, used)) => go(&p[1 + used..], &n[1..]),
                Some((false, _)) => false,
                None => n[0] == b'[' && go(&p[1..], &n[1..]),
            },
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// An alias with `-` as `_` outside `[...]` (kmod's alias_normalize), as
/// module names and softdep names are compared.
fn normalize_alias(alias: &str) -> String {
    let mut in_brackets = false;
    alias
        .chars()
        .map(|c| match c {
            '[' => {
                in_brackets = true;
                c
            }
            ']' => {
                in_brackets = false;
                c
            }
            '-' if !in_brackets => '_',
            c => c,
        })
        .collect()
}

/// Every module of a kernel package, plus the names built into the kernel.
#[derive(Debug, Default)]
pub struct Index {
    pub modules: BTreeMap<String, Module>,
    pub builtin: BTreeSet<String>,
}

/// What [`Index::closure`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closure {
    /// Module names to put into the image, sorted.
    pub modules: Vec<String>,
    /// Wanted names that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Wanted (or depended-on) names the package lacks entirely.
    pub missing: Vec<String>,
}

impl Index {
    /// Record `modules.builtin` (lines like `kernel/net/packet/af_packet.ko`).
    pub fn set_builtin(&mut self, text: &str) {
        self.builtin = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(modname)
            .collect();
    }

    /// The modules a softdep names: the module of that name, else (as
    /// kmod does) every module with an alias matching it (crc-t10dif's
    /// `pre: crct10dif` is crct10dif_pclmul and crct10dif_generic).
    /// Softdep names are stored with `-` as `_`, so aliases are compared
    /// the same way (kmod's alias_normalize: ext4's `pre: crypto-crc32c`
    /// is crc32c_generic's alias `crypto-crc32c`).
    fn resolve<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        if self.modules.contains_key(name) {
            return vec![name];
        }
        self.modules
            .values()
            .filter(|m| m.aliases.iter().any(|a| glob(&normalize_alias(a), name)))
            .map(|m| m.name.as_str())
            .collect()
    }

    /// What loading `name` needs first: its dependencies that exist as
    /// modules (not softdeps: see the module docs), sorted.
    fn needs<'a>(&'a self, name: &str) -> Vec<&'a str> {
        let Some(m) = self.modules.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<&str> = m
            .depends
            .iter()
            .map(String::as_str)
            .filter(|d| self.modules.contains_key(*d) && *d != name)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The closure of `wanted` over dependencies and both kinds of softdep.
    pub fn closure(&self, wanted: &[&str]) -> Closure {
        let mut c = Closure::default();
        let mut have = BTreeSet::new();
        let mut todo: Vec<String> = wanted.iter().map(|w| w.replace('-', "_")).collect();
        while let Some(n) = todo.pop() {
            if let Some(m) = self.modules.get(&n) {
                if have.insert(n.clone()) {
                    todo.extend(m.depends.iter().cloned());
                    for s in m.softdep_pre.iter().chain(&m.softdep_post) {
                        if self.builtin.contains(s) {
                            continue;
                        }
                        let r = self.resolve(s);
                        if r.is_empty() {
                            todo.push(s.clone());
                        }
                        todo.extend(r.into_iter().map(str::to_string));
                    }
                }
            } else if self.builtin.contains(&n) {
                if wanted.iter().any(|w| w.replace('-', "_") == n) && !c.builtin.contains(&n) {
                    c.builtin.push(n);
                }
            } else if !c.missing.contains(&n) {
                c.missing.push(n);
            }
        }
        c.modules = have.into_iter().collect();
        c.builtin.sort();
        c.missing.sort();
        c
    }

    /// The modules `name` needs, each before its own dependencies (the order
    /// of a modules.dep line; busybox loads it back to front).
    pub fn load_list<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        fn visit<'a>(
            ix: &'a Index,
            n: &'a str,
            seen: &mut BTreeSet<&'a str>,
            out: &mut Vec<&'a str>,
        ) {
            if !seen.insert(n) {
                return;
            }
            for d in ix.needs(n) {
                visit(ix, d, seen, out);
            }
            out.push(n);
        }
        let (mut seen, mut out) = (BTreeSet::from([name]), Vec::new());
        for d in self.needs(name) {
            visit(self, d, &mut seen, &mut out);
        }
        out.reverse();
        out
    }

    /// `modules.dep` for the modules of `closure`.
    pub fn modules_dep(&self, closure: &Closure) -> String {
        let mut s = String::new();
        for n in &closure.modules {
            let m = &self.modules[n];
            s.push_str(&m.path);
            s.push(':');
            for d in self.load_list(n) {
                s.push(' ');
                s.push_str(&self.modules[d].path);
            }
            s.push('\n');
        }
        s
    }

    /// `modules.alias` for the modules of `closure`.
    pub fn modules_alias(&self, closure: &Closure) -> String {
        let mut s = String::from("# Aliases extracted from modules themselves.\n");
        for n in &closure.modules {
            for a in &self.modules[n].aliases {
                s.push_str(&format!("alias {a} {n}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal relocatable ELF64 with `.modinfo` = `info` (and an
    /// `__ksymtab_gpl` section when `exports`).
    pub fn fake_ko(info: &[&str], exports: bool) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for kv in info {
            modinfo.extend_from_slice(kv.as_bytes());
            modinfo.push(0);
        }
        let names = b"\0.modinfo\0.shstrtab\0__ksymtab_gpl\0".to_vec();
        let data_off = 64;
        let names_off = data_off + modinfo.len();
        let sh_off = (names_off + names.len() + 7) & !7;
        let shnum = 4u16;
        let mut elf = vec![0u8; sh_off + 64 * shnum as usize];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x28..0x30].copy_from_slice(&(sh_off as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf[data_off..names_off].copy_from_slice(&modinfo);
        elf[names_off..names_off + names.len()].copy_from_slice(&names);
        let mut sh = |i: usize, name: u32, off: usize, size: usize| {
            let o = sh_off + 64 * i;
            elf[o..o + 4].copy_from_slice(&name.to_le_bytes());
            elf[o + 0x18..o + 0x20].copy_from_slice(&(off as u64).to_le_bytes());
            elf[o + 0x20..o + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        sh(1, 1, data_off, modinfo.len());
        sh(2, 10, names_off, names.len());
        sh(3, 20, data_off, if exports { 8 } else { 0 });
        elf
    }

    fn index(mods: &[(&str, &[&str])]) -> Index {
        let mut ix = Index::default();
        for (path, info) in mods {
            let m = parse(path, &fake_ko(info, false)).unwrap();
            ix.modules.insert(m.name.clone(), m);
        }
        ix
    }

    #[test]
    fn modinfo_fields() {
        let ko = fake_ko(
            &[
                "license=GPL",
                "softdep=pre: realtek post: foo-bar",
                "alias=pci:v000010ECd00008168sv*sd*bc*sc*i*",
                "depends=libphy,mdio_devres",
                "name=r8169",
            ],
            true,
        );
        let m = parse("kernel/drivers/net/ethernet/realtek/r8169.ko", &ko).unwrap();
        assert_eq!(m.name, "r8169");
        assert_eq!(m.depends, ["libphy", "mdio_devres"]);
        assert_eq!(m.softdep_pre, ["realtek"]);
        assert_eq!(m.softdep_post, ["foo_bar"]);
        assert_eq!(m.aliases, ["pci:v000010ECd00008168sv*sd*bc*sc*i*"]);
        assert!(m.exports);
        assert!(
            !parse("x.ko", &fake_ko(&["depends="], false))
                .unwrap()
                .exports
        );
        assert!(parse("x.ko", b"\x7fELF garbage").is_err());
        assert!(parse("x.ko", &[0u8; 200]).is_err());
    }

    #[test]
    fn glob_is_fnmatch() {
        assert!(glob(
            "pci:v00008086d0000100Esv*sd*bc*sc*i*",
            "pci:v00008086d0000100Esv00008086sd00001100bc02sc00i00"
        ));
        assert!(!glob(
            "pci:v00008086d0000100Esv*sd*bc*sc*i*",
            "pci:v00008086d0000100Fsv00008086sd00001100bc02sc00i00"
        ));
        assert!(glob("crct10dif", "crct10dif") && !glob("crct10dif", "crct10dif2"));
        assert!(glob("virtio:d00000001v*", "virtio:d00000001v00001AF4"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("x[0-9]y", "x5y") && !glob("x[!0-9]y", "x5y") && glob("x[!0-9]y", "xay"));
        assert!(glob(
            "cpu:type:x86,ven*fam*mod*:feature:*0081*",
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0081,0100"
        ));
    }

    #[test]
    fn softdeps_resolve_through_aliases() {
        let ix = index(&[
            (
                "k/crc-t10dif.ko",
                &["depends=crct10dif_common", "softdep=pre: crct10dif"],
            ),
            ("k/crct10dif_common.ko", &["depends="]),
            (
                "k/crct10dif-pclmul.ko",
                &[
                    "depends=crct10dif_common",
                    "alias=crypto-crct10dif",
                    "alias=crct10dif",
                ],
            ),
            (
                "k/crct10dif_generic.ko",
                &["depends=crct10dif_common", "alias=crct10dif"],
            ),
        ]);
        let c = ix.closure(&["crc_t10dif"]);
        assert_eq!(
            c.modules,
            [
                "crc_t10dif",
                "crct10dif_common",
                "crct10dif_generic",
                "crct10dif_pclmul"
            ]
        );
        assert!(c.missing.is_empty(), "{:?}", c.missing);
        assert_eq!(ix.load_list("crc_t10dif"), ["crct10dif_common"]);
    }

    #[test]
    fn names_from_files() {
        assert_eq!(
            modname("kernel/drivers/net/net-failover.ko.xz"),
            "net_failover"
        );
        assert_eq!(modname("af_packet.ko"), "af_packet");
    }

    #[test]
    fn hyphenated_softdeps_resolve_through_aliases() {
        assert_eq!(normalize_alias("a-b[x-z]-c"), "a_b[x-z]_c");
        // ext4 (and jbd2) in Debian 12: `softdep=pre: crypto-crc32c`.
        let ix = index(&[
            ("k/ext4.ko", &["depends=", "softdep=pre: crypto-crc32c"]),
            (
                "k/crc32c_generic.ko",
                &["depends=", "alias=crypto-crc32c", "alias=crc32c"],
            ),
            ("k/crc32c-intel.ko", &["depends=", "alias=crypto-crc32c"]),
        ]);
        let c = ix.closure(&["ext4"]);
        assert_eq!(c.modules, ["crc32c_generic", "crc32c_intel", "ext4"]);
        assert!(c.missing.is_empty(), "{:?}", c.missing);
    }

    #[test]
    fn the_stick_modules_are_all_in_the_image() {
        for m in STICK {
            assert!(
                WANTED.contains(m),
                "{m} is loaded in wizard mode but not in WANTED"
            );
        }
        let ehci = STICK.iter().position(|m| *m == "ehci_pci").unwrap();
        for companion in ["uhci_hcd", "ohci_pci"] {
            assert!(STICK.iter().position(|m| *m == companion).unwrap() > ehci);
        }
    }

    #[test]
    fn closure_order_and_files() {
        let mut ix = index(&[
            (
                "k/virtio_net.ko",
                &["depends=virtio_ring,virtio,net_failover"],
            ),
            ("k/virtio_ring.ko", &["depends=virtio"]),
            ("k/virtio.ko", &["depends="]),
            ("k/net_failover.ko", &["depends=failover"]),
            ("k/failover.ko", &["depends="]),
            ("k/r8169.ko", &["depends=libphy", "softdep=pre: realtek"]),
            ("k/libphy.ko", &["depends="]),
            ("k/realtek.ko", &["depends=libphy"]),
            ("k/unrelated.ko", &["depends=virtio"]),
        ]);
        ix.set_builtin("kernel/net/packet/af_packet.ko\n");
        let c = ix.closure(&["virtio_net", "r8169", "af_packet", "nope"]);
        assert_eq!(
            c.modules,
            [
                "failover",
                "libphy",
                "net_failover",
                "r8169",
                "realtek",
                "virtio",
                "virtio_net",
                "virtio_ring"
            ]
        );
        assert_eq!(c.builtin, ["af_packet"]);
        assert_eq!(c.missing, ["nope"]);
        // Each module before what it needs: loading back to front works.
        assert_eq!(
            ix.load_list("virtio_net"),
            ["virtio_ring", "virtio", "net_failover", "failover"]
        );
        // Softdeps are in the image but not in the list (busybox would
        // give up on the whole list when an optional one fails).
        assert_eq!(ix.load_list("r8169"), ["libphy"]);
        let dep = ix.modules_dep(&c);
        assert!(
            dep.contains(
                "k/virtio_net.ko: k/virtio_ring.ko k/virtio.ko k/net_failover.ko k/failover.ko\n"
            ),
            "{dep}"
        );
        assert!(dep.contains("k/virtio.ko:\n"), "{dep}");
        assert!(!dep.contains("unrelated"), "{dep}");
    }

    #[test]
    fn aliases_for_the_closure_only() {
        let ix = index(&[
            (
                "k/e1000.ko",
                &["alias=pci:v00008086d0000100Esv*sd*bc*sc*i*"],
            ),
            ("k/other.ko", &["alias=pci:v0000DEADd*sv*sd*bc*sc*i*"]),
        ]);
        let a = ix.modules_alias(&ix.closure(&["e1000"]));
        assert!(a.contains("alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n"));
        assert!(!a.contains("other"));
    }

    #[test]
    fn compressed_modules_are_stored_plain() {
        let raw = fake_ko(&["name=x"], false);
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        std::io::Write::write_all(&mut e, &raw).unwrap();
        let (p, b) = decompress("k/x.ko.xz", e.finish().unwrap()).unwrap();
        assert_eq!((p.as_str(), b), ("k/x.ko", raw.clone()));
        let z = zstd::encode_all(&raw[..], 3).unwrap();
        assert_eq!(decompress("k/x.ko.zst", z).unwrap().1, raw);
        assert!(decompress("k/x.ko.xz", b"junk".to_vec()).is_err());
    }
}
