//! Which disk to write: the one whose serial the plan names, and only if it
//! is safe. Everything is read from sysfs and procfs under roots that the
//! tests point at trees of their own.

use std::fs;
use std::path::{Path, PathBuf};

use crate::inventory::{attr, disks, read_disk};
use crate::{Error, Result};

/// Where the system's views live (`/sys`, `/proc`, `/dev` in production).
#[derive(Debug, Clone)]
pub struct Host {
    /// sysfs root.
    pub sys: PathBuf,
    /// procfs root.
    pub proc: PathBuf,
    /// devtmpfs root.
    pub dev: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            sys: "/sys".into(),
            proc: "/proc".into(),
            dev: "/dev".into(),
        }
    }
}

/// A block device chosen for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `/dev/<name>`.
    pub path: PathBuf,
    /// Kernel name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size: the alignment of direct I/O.
    pub logical_sector: u32,
    /// The device offloads write-zeroes (BLKZEROOUT is cheap), so runs of
    /// zeroes can be zeroed rather than written.
    pub write_zeroes: bool,
}

/// The disk whose serial is `serial`, checked with [`check_free`].
pub fn select(host: &Host, serial: &str) -> Result<Target> {
    let all = disks(&host.sys);
    let matching: Vec<_> = all
        .iter()
        .filter(|d| d.serial.as_deref().map(str::trim) == Some(serial.trim()))
        .collect();
    match matching.as_slice() {
        [] => Err(Error::NoTarget {
            serial: serial.to_string(),
            seen: all
                .iter()
                .map(|d| format!("{}={}", d.name, d.serial.as_deref().unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        [one] => for_name(host, &one.name),
        several => Err(Error::AmbiguousTarget {
            serial: serial.to_string(),
            devices: several
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The disk called `name` (as in `/sys/block/<name>`), checked with
/// [`check_free`]. Used directly by `--target-device`.
pub fn for_name(host: &Host, name: &str) -> Result<Target> {
    if root_disks(host).iter().any(|d| d == name) {
        return Err(Error::TargetBusy {
            device: format!("/dev/{name}"),
            holders: "it is the disk the running system's / is on".into(),
        });
    }
    let d = read_disk(&host.sys, name);
    let size = d.size_bytes.ok_or_else(|| {
        Error::BadPlan(format!(
            "{name} has no size in sysfs; is it a block device?"
        ))
    })?;
    check_free(host, name)?;
    let q = host.sys.join("block").join(name).join("queue");
    Ok(Target {
        path: host.dev.join(name),
        name: name.to_string(),
        size,
        logical_sector: d.logical_sector_size.unwrap_or(512).max(512),
        write_zeroes: attr(q.join("write_zeroes_max_bytes"))
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
    })
}

/// The disk and its partitions: `(name, "major:minor")`.
fn family(host: &Host, name: &str) -> Vec<(String, String)> {
    let dir = host.sys.join("block").join(name);
    let mut out = vec![(name.to_string(), attr(dir.join("dev")).unwrap_or_default())];
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(name) && e.path().join("partition").exists() {
                out.push((n, attr(e.path().join("dev")).unwrap_or_default()));
            }
        }
    }
    out
}

/// Refuse a disk that anything uses: a mount (including the running
/// system's root), swap, or a holder (device mapper, md, bcache).
pub fn check_free(host: &Host, name: &str) -> Result<()> {
    let fam = family(host, name);
    let mut uses = Vec::new();
    let mountinfo = fs::read_to_string(host.proc.join("self/mountinfo")).unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(majmin), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let source = line
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').nth(1))
            .unwrap_or("");
        for (n, dev) in &fam {
            let by_dev = !dev.is_empty() && dev == majmin;
            let by_src = source == format!("/dev/{n}");
            if by_dev || by_src {
                let what = if *point == "/" {
                    "holds the running system's /"
                } else {
                    "mounted at"
                };
                uses.push(format!("{n} {what} {point}"));
            }
        }
    }
    let swaps = fs::read_to_string(host.proc.join("swaps")).unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let src = line.split_whitespace().next().unwrap_or("");
        if let Some((n, _)) = fam.iter().find(|(n, _)| src == format!("/dev/{n}")) {
            uses.push(format!("{n} is swap"));
        }
    }
    for (n, _) in &fam {
        let dir = if n == name {
            host.sys.join("block").join(name)
        } else {
            host.sys.join("block").join(name).join(n)
        };
        if let Ok(rd) = fs::read_dir(dir.join("holders")) {
            for h in rd.flatten() {
                uses.push(format!("{n} held by {}", h.file_name().to_string_lossy()));
            }
        }
    }
    if uses.is_empty() {
        Ok(())
    } else {
        Err(Error::TargetBusy {
            device: format!("/dev/{name}"),
            holders: uses.join("; "),
        })
    }
}

/// The whole disks the running system's `/` lives on: the device of the
/// topmost `/` mount (its `major:minor` in mountinfo, else its source when
/// that is a `/dev` path, as for btrfs whose device numbers are anonymous),
/// up through partitions to their disk and down through device mapper and
/// md to the disks under them. Empty when `/` is on no block device
/// (tmpfs, overlay, the netboot initramfs).
pub fn root_disks(host: &Host) -> Vec<String> {
    let mountinfo = fs::read_to_string(host.proc.join("self/mountinfo")).unwrap_or_default();
    let Some(line) = mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
    else {
        return Vec::new();
    };
    let majmin = line.split(' ').nth(2).unwrap_or("");
    let source = line
        .split(" - ")
        .nth(1)
        .and_then(|r| r.split(' ').nth(1))
        .unwrap_or("");
    let by_dev = host.sys.join("dev/block").join(majmin);
    let start = if !majmin.starts_with("0:") && by_dev.exists() {
        fs::canonicalize(by_dev).ok()
    } else if let Some(name) = source.strip_prefix("/dev/") {
        let name = fs::canonicalize(host.dev.join(name))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| name.to_string());
        fs::canonicalize(host.sys.join("class/block").join(name)).ok()
    } else {
        None
    };
    let mut out = Vec::new();
    if let Some(dir) = start {
        disks_under(&dir, &mut out, 0);
    }
    out
}

/// The whole disks `dir` (a sysfs block device directory) is on.
fn disks_under(dir: &Path, out: &mut Vec<String>, depth: u32) {
    // Stacks of dm on md on partitions are a few deep; a loop is a bug.
    if depth > 8 {
        return;
    }
    let disk = if dir.join("partition").exists() {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    };
    let Some(disk) = disk else { return };
    let slaves: Vec<PathBuf> = fs::read_dir(dir.join("slaves"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::canonicalize(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if slaves.is_empty() {
        if let Some(n) = disk.file_name() {
            let n = n.to_string_lossy().into_owned();
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    for s in slaves {
        disks_under(&s, out, depth + 1);
    }
}

/// Refuse an image that is (at least) bigger than the target.
pub fn check_fits(device: &Path, have: u64, need: u64) -> Result<()> {
    if need > have {
        return Err(Error::TargetTooSmall {
            device: device.display().to_string(),
            need,
            have,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::fake;

    fn host(root: &Path) -> Host {
        fs::create_dir_all(root.join("proc/self")).unwrap();
        fs::write(
            root.join("proc/self/mountinfo"),
            "22 1 0:21 / / rw - rootfs rootfs rw\n",
        )
        .unwrap();
        fs::write(
            root.join("proc/swaps"),
            "Filename Type Size Used Priority\n",
        )
        .unwrap();
        Host {
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
        }
    }

    #[test]
    fn picks_the_one_disk_with_the_serial() {
        let t = tempfile::tempdir().unwrap();
        let h = host(t.path());
        fake::disk(&h.sys, "vda", 4 << 30, Some("BTYTEST"));
        fake::disk(&h.sys, "vdb", 4 << 30, Some("DECOY"));
        fs::write(
            h.sys.join("block/vda/queue/write_zeroes_max_bytes"),
            "33554432\n",
        )
        .unwrap();
        let tg = select(&h, "BTYTEST").unwrap();
        assert_eq!(tg.name, "vda");
        assert_eq!(tg.path, h.dev.join("vda"));
        assert_eq!(tg.size, 4 << 30);
        assert!(tg.write_zeroes);
        assert!(!select(&h, "DECOY").unwrap().write_zeroes);
    }

    #[test]
    fn refuses_none_and_several() {
        let t = tempfile::tempdir().unwrap();
        let h = host(t.path());
        fake::disk(&h.sys, "vda", 1 << 30, Some("SAME"));
        fake::disk(&h.sys, "vdb", 1 << 30, Some("SAME"));
        fake::disk(&h.sys, "vdc", 1 << 30, None);
        let e = select(&h, "NOPE").unwrap_err();
        assert!(matches!(e, Error::NoTarget { .. }), "{e}");
        assert!(
            e.to_string().contains("vda=SAME") && e.to_string().contains("vdc=-"),
            "{e}"
        );
        let e = select(&h, "SAME").unwrap_err();
        assert!(
            matches!(e, Error::AmbiguousTarget { ref devices, .. } if devices == "vda, vdb"),
            "{e}"
        );
    }

    #[test]
    fn refuses_mounted_partition_swap_holder_and_root() {
        let t = tempfile::tempdir().unwrap();
        let h = host(t.path());
        fake::disk(&h.sys, "sda", 1 << 30, Some("S"));
        fs::write(h.sys.join("block/sda/dev"), "8:0\n").unwrap();
        let p = h.sys.join("block/sda/sda1");
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("partition"), "1\n").unwrap();
        fs::write(p.join("dev"), "8:1\n").unwrap();
        select(&h, "S").unwrap();

        fs::write(
            h.proc.join("self/mountinfo"),
            "22 1 0:21 / / rw - rootfs rootfs rw\n30 22 8:1 / /mnt rw - ext4 /dev/sda1 rw\n",
        )
        .unwrap();
        let e = select(&h, "S").unwrap_err();
        assert!(matches!(e, Error::TargetBusy { .. }), "{e}");
        assert!(e.to_string().contains("sda1 mounted at /mnt"), "{e}");

        fs::write(
            h.proc.join("self/mountinfo"),
            "22 1 8:0 / / rw - ext4 /dev/sda rw\n",
        )
        .unwrap();
        assert!(select(&h, "S")
            .unwrap_err()
            .to_string()
            .contains("running system's /"));

        fs::write(h.proc.join("self/mountinfo"), "").unwrap();
        fs::write(
            h.proc.join("swaps"),
            "Filename Type\n/dev/sda1 partition 1 0 -2\n",
        )
        .unwrap();
        assert!(select(&h, "S")
            .unwrap_err()
            .to_string()
            .contains("sda1 is swap"));

        fs::write(h.proc.join("swaps"), "").unwrap();
        fs::create_dir_all(h.sys.join("block/sda/holders/dm-0")).unwrap();
        assert!(select(&h, "S")
            .unwrap_err()
            .to_string()
            .contains("held by dm-0"));
    }

    #[test]
    fn the_disk_under_root_is_found_through_partitions_and_device_mapper() {
        let t = tempfile::tempdir().unwrap();
        let h = host(t.path());
        fake::disk(&h.sys, "sda", 1 << 30, Some("ROOT"));
        fake::disk(&h.sys, "sdb", 1 << 30, Some("OTHER"));
        fake::disk(&h.sys, "dm-0", 1 << 30, None);
        let part = h.sys.join("block/sda/sda2");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("partition"), "2\n").unwrap();
        fs::create_dir_all(h.sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&part, h.sys.join("dev/block/8:2")).unwrap();
        std::os::unix::fs::symlink(h.sys.join("block/dm-0"), h.sys.join("dev/block/254:0"))
            .unwrap();
        fs::create_dir_all(h.sys.join("block/dm-0/slaves")).unwrap();
        std::os::unix::fs::symlink(&part, h.sys.join("block/dm-0/slaves/sda2")).unwrap();
        assert!(root_disks(&h).is_empty(), "rootfs is on no disk");

        let on = |majmin: &str| {
            fs::write(
                h.proc.join("self/mountinfo"),
                format!(
                    "22 1 0:21 / / rw - rootfs rootfs rw\n30 22 {majmin} / / rw - ext4 /dev/x rw\n"
                ),
            )
            .unwrap();
        };
        on("8:2");
        assert_eq!(root_disks(&h), ["sda"]);
        on("254:0");
        assert_eq!(root_disks(&h), ["sda"]);
        let e = for_name(&h, "sda").unwrap_err();
        assert!(e.to_string().contains("running system's / is on"), "{e}");
        for_name(&h, "sdb").unwrap();
    }

    #[test]
    fn too_small_is_refused() {
        let e = check_fits(Path::new("/dev/vda"), 100, 101).unwrap_err();
        assert!(matches!(
            e,
            Error::TargetTooSmall {
                need: 101,
                have: 100,
                ..
            }
        ));
        check_fits(Path::new("/dev/vda"), 100, 100).unwrap();
    }
}
