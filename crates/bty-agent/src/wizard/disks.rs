//! The machine's disks the wizard may offer: every real disk
//! ([`crate::inventory::disks`]) but the stick's own, each with what is on
//! it now so the technician can tell them apart.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::inventory::{self, attr};
use crate::target::Host;

/// One disk the wizard can list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`sda`, `nvme0n1`, `loop3`).
    pub name: String,
    /// `/dev/<name>`.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Vendor and model, as sysfs has them.
    pub model: Option<String>,
    /// The serial the technician types to confirm.
    pub serial: Option<String>,
    /// What is on it: partition table, partitions, file systems and labels.
    pub contents: String,
}

impl Disk {
    /// What the technician types to confirm this disk: its serial, or its
    /// kernel name when it has none.
    pub fn confirm_word(&self) -> &str {
        self.serial.as_deref().unwrap_or(&self.name)
    }
}

/// `--disks`: the disks to consider instead of the machine's, for tests.
/// Only loop devices are accepted, so a test can never write to a real
/// disk; loop devices have no serial, so each may carry one
/// (`/dev/loop3=SERIAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDisk {
    /// Kernel name (`loop3`).
    pub name: String,
    /// The serial it pretends to have.
    pub serial: Option<String>,
}

/// Parse `--disks /dev/loop3=S1,loop4`.
pub fn parse_test_disks(spec: &str) -> Result<Vec<TestDisk>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (dev, serial) = match item.split_once('=') {
                Some((d, s)) => (d, Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                None => (item, None),
            };
            let name = dev.trim().trim_start_matches("/dev/").to_string();
            let n = name.strip_prefix("loop").unwrap_or("");
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                bail!("--disks takes loop devices only (it is a test seam), not {dev:?}");
            }
            Ok(TestDisk { name, serial })
        })
        .collect()
}

/// The disks to offer, sorted by name, never `exclude` (the stick's disk).
/// With `test_disks`, only those (read from sysfs like any disk).
pub fn list(host: &Host, test_disks: Option<&[TestDisk]>, exclude: Option<&str>) -> Vec<Disk> {
    let found: Vec<(bty_proto::inventory::Disk, Option<String>)> = match test_disks {
        Some(t) => t
            .iter()
            .map(|d| {
                let mut disk = inventory::read_disk(&host.sys, &d.name);
                disk.model = Some("loop device (test)".into());
                (disk, d.serial.clone())
            })
            .collect(),
        None => inventory::disks(&host.sys)
            .into_iter()
            .map(|d| {
                let s = d.serial.clone();
                (d, s)
            })
            .collect(),
    };
    let mut out: Vec<Disk> = found
        .into_iter()
        .filter(|(d, _)| Some(d.name.as_str()) != exclude)
        .filter_map(|(d, serial)| {
            let size = d.size_bytes.filter(|s| *s > 0)?;
            // virtio's "vendor" is a PCI id (0x1af4), not a name.
            let vendor = d.vendor.as_deref().filter(|v| !v.starts_with("0x"));
            let model = [vendor, d.model.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            Some(Disk {
                contents: contents(host, &d.name),
                path: host.dev.join(&d.name),
                name: d.name,
                size,
                model: (!model.is_empty()).then_some(model),
                serial,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// "GPT, 2 partitions: sda1 vfat \"EFI\", sda2 ext4 \"root\"" and the like.
pub fn contents(host: &Host, name: &str) -> String {
    let dir = host.sys.join("block").join(name);
    let table = read_at(&host.dev.join(name), 0, 8192)
        .map(|head| partition_table(&head))
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let mut parts: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(name) && dir.join(n).join("partition").exists())
                .collect()
        })
        .unwrap_or_default();
    parts.sort_by_key(|p| {
        attr(dir.join(p).join("partition"))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if parts.is_empty() {
        let fs = filesystem(&host.dev.join(name));
        return match (table.as_str(), fs) {
            (_, Some(fs)) => fs,
            ("empty", None) => "empty (no partition table, no file system)".into(),
            (t, None) => t.to_string(),
        };
    }
    let list: Vec<String> = parts
        .iter()
        .map(|p| match filesystem(&host.dev.join(p)) {
            Some(fs) => format!("{p} {fs}"),
            None => p.clone(),
        })
        .collect();
    format!(
        "{table}, {} partition{}: {}",
        parts.len(),
        if parts.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match f.read_at(rest, offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The partition table from the first 8 KiB: GPT (at LBA 1 for 512-byte
/// and 4 KiB sectors), else an MBR (its 0x55AA signature with a partition
/// entry), else nothing at all or unknown bytes.
fn partition_table(head: &[u8]) -> String {
    let at = |o: usize, n: usize| head.get(o..o + n);
    if at(512, 8) == Some(b"EFI PART") || at(4096, 8) == Some(b"EFI PART") {
        return "GPT".into();
    }
    if at(510, 2) == Some(&[0x55, 0xaa]) {
        let any = (0..4).any(|i| at(446 + 16 * i + 4, 1).is_some_and(|t| t != [0]));
        if any {
            return "MBR".into();
        }
    }
    if head.iter().all(|&b| b == 0) {
        "empty".into()
    } else {
        "no partition table".into()
    }
}

/// The file system on `dev` with its label, for the common ones. Hand-read
/// (a few fixed superblock offsets): libblkid is not in the static agent.
fn filesystem(dev: &Path) -> Option<String> {
    let sb = read_at(dev, 0, 70 << 10).ok()?;
    let at = |o: usize, n: usize| sb.get(o..o + n);
    let label = |o: usize, n: usize| -> String {
        let raw = at(o, n).unwrap_or(&[]);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(raw.get(..end).unwrap_or(&[]));
        let text = text.trim();
        if text.is_empty() || text == "NO NAME" {
            String::new()
        } else {
            format!(" {text:?}")
        }
    };
    if at(1024 + 56, 2) == Some(&[0x53, 0xef]) {
        // ext2/3/4: which one by the feature flags (has_journal, extents).
        let compat = at(1024 + 92, 1).map_or(0, |b| b.first().copied().unwrap_or(0));
        let incompat = at(1024 + 96, 1).map_or(0, |b| b.first().copied().unwrap_or(0));
        let kind = if incompat & 0x40 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some(format!("{kind}{}", label(1024 + 120, 16)));
    }
    if at(0, 4) == Some(b"XFSB") {
        return Some(format!("xfs{}", label(108, 12)));
    }
    if at(0x10040, 8) == Some(b"_BHRfS_M") {
        return Some(format!("btrfs{}", label(0x1012b, 256)));
    }
    if at(3, 8) == Some(b"NTFS    ") {
        return Some("ntfs".into());
    }
    if at(82, 5) == Some(b"FAT32") {
        return Some(format!("vfat{}", label(71, 11)));
    }
    if at(54, 3) == Some(b"FAT") {
        return Some(format!("vfat{}", label(43, 11)));
    }
    if at(4096 - 10, 10) == Some(b"SWAPSPACE2") {
        return Some(format!("swap{}", label(1024 + 28, 16)));
    }
    if at(0x8001, 5) == Some(b"CD001") {
        return Some("iso9660".into());
    }
    None
}

/// Human size in binary units, as the menus show it.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        unit = u;
        if v < 1024.0 || u == "TiB" {
            break;
        }
        v /= 1024.0;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Check a typed confirmation against the disk: exact, but surrounding
/// spaces do not count (serial consoles and sysfs pad).
pub fn confirms(disk: &Disk, typed: &str) -> bool {
    typed.trim() == disk.confirm_word().trim()
}

/// The disk whose serial is `serial` among `disks`; refused when none or
/// several carry it.
pub fn by_serial<'a>(disks: &'a [Disk], serial: &str) -> Result<&'a Disk> {
    let m: Vec<&Disk> = disks
        .iter()
        .filter(|d| d.serial.as_deref().map(str::trim) == Some(serial.trim()))
        .collect();
    match m.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no disk with serial {serial:?} on this machine (the stick's own disk is never a \
             target); disks: {}",
            if disks.is_empty() {
                "none".to_string()
            } else {
                disks
                    .iter()
                    .map(|d| format!("{}={}", d.name, d.serial.as_deref().unwrap_or("-")))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        several => bail!(
            "serial {serial:?} matches several disks ({}); refusing to guess",
            several
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Fail when `path` is not a block device (what `--disks` must name).
pub fn check_block(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let m = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !m.file_type().is_block_device() {
        bail!("{} is not a block device", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_disks_are_loop_devices_only() {
        let d = parse_test_disks("/dev/loop3=S1,loop12").unwrap();
        assert_eq!(
            d,
            [
                TestDisk {
                    name: "loop3".into(),
                    serial: Some("S1".into())
                },
                TestDisk {
                    name: "loop12".into(),
                    serial: None
                }
            ]
        );
        for bad in [
            "/dev/sda",
            "loop",
            "loopx",
            "/dev/nvme0n1=S",
            "loop1/../sda",
        ] {
            let e = parse_test_disks(bad).unwrap_err().to_string();
            assert!(e.contains("loop devices only"), "{bad}: {e}");
        }
    }

    #[test]
    fn tables_and_file_systems_are_named() {
        let mut h = vec![0u8; 4096];
        assert_eq!(partition_table(&h), "empty");
        h[510] = 0x55;
        h[511] = 0xaa;
        assert_eq!(partition_table(&h), "no partition table");
        h[446 + 4] = 0x83;
        assert_eq!(partition_table(&h), "MBR");
        h[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&h), "GPT");

        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("fs");
        let mut sb = vec![0u8; 70 << 10];
        sb[1024 + 56] = 0x53;
        sb[1024 + 57] = 0xef;
        sb[1024 + 96] = 0x40;
        sb[1024 + 120..1024 + 128].copy_from_slice(b"BTY-DATA");
        fs::write(&f, &sb).unwrap();
        assert_eq!(filesystem(&f).as_deref(), Some("ext4 \"BTY-DATA\""));
        let mut fat = vec![0u8; 70 << 10];
        fat[82..87].copy_from_slice(b"FAT32");
        fat[71..82].copy_from_slice(b"EFI        ");
        fs::write(&f, &fat).unwrap();
        assert_eq!(filesystem(&f).as_deref(), Some("vfat \"EFI\""));
        fs::write(&f, vec![1u8; 100]).unwrap();
        assert_eq!(filesystem(&f), None);
    }

    #[test]
    fn sizes_read_like_people_say_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(16 << 20), "16.0 MiB");
        assert_eq!(human(500_107_862_016), "465.8 GiB");
    }

    #[test]
    fn by_serial_refuses_none_and_several() {
        let d = |name: &str, serial: Option<&str>| Disk {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            size: 1,
            model: None,
            serial: serial.map(String::from),
            contents: String::new(),
        };
        let disks = [
            d("sda", Some("A")),
            d("sdb", Some("B")),
            d("sdc", Some("B")),
        ];
        assert_eq!(by_serial(&disks, " A ").unwrap().name, "sda");
        assert!(by_serial(&disks, "Z")
            .unwrap_err()
            .to_string()
            .contains("sda=A, sdb=B"));
        assert!(by_serial(&disks, "B")
            .unwrap_err()
            .to_string()
            .contains("sdb, sdc"));
        assert!(confirms(&disks[0], "A\n") && !confirms(&disks[0], "a"));
        assert_eq!(d("loop0", None).confirm_word(), "loop0");
    }
}
