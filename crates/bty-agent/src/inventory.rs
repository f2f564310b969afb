//! What the agent reports about the machine: disks, NICs and DMI identity,
//! read from sysfs (under a root that tests point at a tree of their own).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bty_proto::inventory::{Disk, Firmware, FirmwareKind, Inventory, Nic, SecureBoot};

/// Read a sysfs attribute as trimmed text; `None` when absent or empty.
pub(crate) fn attr(path: impl AsRef<Path>) -> Option<String> {
    let raw = fs::read(path).ok()?;
    let text: String = String::from_utf8_lossy(&raw)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn attr_u64(path: impl AsRef<Path>) -> Option<u64> {
    attr(path)?.parse().ok()
}

/// Kernel names that are never a flash target nor worth reporting.
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The serial as lsblk would show it: virtio and NVMe expose it as an
/// attribute, SCSI/SATA through VPD page 0x80 (4-byte header, then text).
pub fn disk_serial(dev_dir: &Path) -> Option<String> {
    attr(dev_dir.join("serial"))
        .or_else(|| attr(dev_dir.join("device/serial")))
        .or_else(|| {
            let raw = fs::read(dev_dir.join("device/vpd_pg80")).ok()?;
            attr_bytes(raw.get(4..)?)
        })
}

fn attr_bytes(b: &[u8]) -> Option<String> {
    let t: String = String::from_utf8_lossy(b)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn transport(dev_dir: &Path) -> Option<String> {
    let real = fs::canonicalize(dev_dir).ok()?;
    let p = real.to_string_lossy();
    [
        ("/nvme", "nvme"),
        ("/usb", "usb"),
        ("/virtio", "virtio"),
        ("/ata", "sata"),
    ]
    .iter()
    .find(|(needle, _)| p.contains(needle))
    .map(|(_, t)| t.to_string())
}

/// One disk from `<sys>/block/<name>`.
pub fn read_disk(sys: &Path, name: &str) -> Disk {
    let d = sys.join("block").join(name);
    Disk {
        name: name.to_string(),
        size_bytes: attr_u64(d.join("size")).map(|s| s * 512),
        logical_sector_size: attr_u64(d.join("queue/logical_block_size")).map(|v| v as u32),
        physical_sector_size: attr_u64(d.join("queue/physical_block_size")).map(|v| v as u32),
        serial: disk_serial(&d),
        model: attr(d.join("device/model")),
        vendor: attr(d.join("device/vendor")),
        tran: transport(&d),
        removable: attr(d.join("removable")).as_deref() == Some("1"),
        rotational: attr(d.join("queue/rotational")).as_deref() == Some("1"),
        size: None,
    }
}

/// Every real whole disk under `<sys>/block`, sorted by name.
pub fn disks(sys: &Path) -> Vec<Disk> {
    let mut names: Vec<String> = fs::read_dir(sys.join("block"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !is_virtual(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|n| read_disk(sys, n))
        .filter(|d| d.size_bytes.unwrap_or(0) > 0)
        .collect()
}

/// Every network interface but loopback.
pub fn nics(sys: &Path) -> Vec<Nic> {
    let mut out: Vec<Nic> = fs::read_dir(sys.join("class/net"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .map(|name| {
                    let d = sys.join("class/net").join(&name);
                    Nic {
                        mac: attr(d.join("address")),
                        driver: fs::read_link(d.join("device/driver"))
                            .ok()
                            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned())),
                        speed_mbps: attr(d.join("speed"))
                            .and_then(|s| s.parse::<i64>().ok())
                            .filter(|s| *s > 0)
                            .map(|s| s as u32),
                        link_up: attr(d.join("carrier")).as_deref() == Some("1"),
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// DMI identity fields that exist on this machine.
pub fn dmi(sys: &Path) -> BTreeMap<String, String> {
    const FIELDS: [&str; 10] = [
        "sys_vendor",
        "product_name",
        "product_version",
        "product_serial",
        "product_uuid",
        "board_vendor",
        "board_name",
        "bios_vendor",
        "bios_version",
        "chassis_type",
    ];
    FIELDS
        .iter()
        .filter_map(|f| Some((f.to_string(), attr(sys.join("class/dmi/id").join(f))?)))
        .collect()
}

/// Offset of `secure_boot` in the x86 `struct boot_params` (the zero page
/// the kernel exports at `/sys/kernel/boot_params/data`): the EFI stub
/// stores there what it found (0 unset, 1 unknown, 2 disabled, 3 enabled).
/// Read from here because it needs nothing mounted or loaded: efivarfs is
/// a module the netboot media leaves out, and securityfs is not mounted.
const BOOT_PARAMS_SECURE_BOOT: usize = 0x1ec;

/// How this machine booted: UEFI when the kernel has EFI runtime
/// (`/sys/firmware/efi`), and then Secure Boot as the EFI stub found it.
pub fn firmware(sys: &Path) -> Firmware {
    if !sys.join("firmware/efi").is_dir() {
        return Firmware {
            kind: FirmwareKind::Bios,
            secure_boot: None,
        };
    }
    let mode = std::fs::read(sys.join("kernel/boot_params/data"))
        .ok()
        .and_then(|b| b.get(BOOT_PARAMS_SECURE_BOOT).copied());
    Firmware {
        kind: FirmwareKind::Uefi,
        secure_boot: Some(match mode {
            Some(3) => SecureBoot::Enabled,
            Some(2) => SecureBoot::Disabled,
            _ => SecureBoot::Unknown,
        }),
    }
}

/// The whole inventory.
pub fn collect(sys: &Path) -> Inventory {
    Inventory {
        disks: disks(sys),
        nics: nics(sys),
        dmi: dmi(sys),
        firmware: Some(firmware(sys)),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A sysfs tree in a tempdir: real files the code reads, laid out like
    //! the kernel's.
    use std::fs;
    use std::path::Path;

    /// Add `<root>/block/<name>` with a size in bytes and a serial.
    pub fn disk(root: &Path, name: &str, bytes: u64, serial: Option<&str>) {
        let d = root.join("block").join(name);
        fs::create_dir_all(d.join("queue")).unwrap();
        fs::create_dir_all(d.join("device")).unwrap();
        fs::write(d.join("size"), format!("{}\n", bytes / 512)).unwrap();
        fs::write(d.join("queue/logical_block_size"), "512\n").unwrap();
        fs::write(d.join("queue/physical_block_size"), "4096\n").unwrap();
        fs::write(d.join("queue/rotational"), "0\n").unwrap();
        fs::write(d.join("removable"), "0\n").unwrap();
        fs::write(d.join("device/model"), "QEMU HARDDISK   \n").unwrap();
        if let Some(s) = serial {
            fs::write(d.join("serial"), format!("{s}\n")).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_disks_nics_and_dmi_from_a_sysfs_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fake::disk(root, "vda", 8 << 30, Some("BTYTEST"));
        fake::disk(root, "loop0", 1 << 20, None);
        fake::disk(root, "sda", 1 << 30, None);
        // SATA serial through VPD page 0x80.
        fs::write(
            root.join("block/sda/device/vpd_pg80"),
            b"\x00\x80\x00\x0a  S5SUNX0  ",
        )
        .unwrap();
        fs::create_dir_all(root.join("class/net/eth0")).unwrap();
        fs::create_dir_all(root.join("class/net/lo")).unwrap();
        fs::write(root.join("class/net/eth0/address"), "52:54:00:12:34:56\n").unwrap();
        fs::write(root.join("class/net/eth0/carrier"), "1\n").unwrap();
        fs::write(root.join("class/net/eth0/speed"), "-1\n").unwrap();
        fs::create_dir_all(root.join("class/dmi/id")).unwrap();
        fs::write(root.join("class/dmi/id/sys_vendor"), "QEMU\n").unwrap();

        let inv = collect(root);
        let names: Vec<_> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "vda"]);
        let vda = &inv.disks[1];
        assert_eq!(vda.size_bytes, Some(8 << 30));
        assert_eq!(vda.serial.as_deref(), Some("BTYTEST"));
        assert_eq!(vda.logical_sector_size, Some(512));
        assert_eq!(vda.physical_sector_size, Some(4096));
        assert_eq!(vda.model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(inv.disks[0].serial.as_deref(), Some("S5SUNX0"));
        assert_eq!(inv.nics.len(), 1);
        assert_eq!(inv.nics[0].mac.as_deref(), Some("52:54:00:12:34:56"));
        assert!(inv.nics[0].link_up);
        assert_eq!(inv.nics[0].speed_mbps, None);
        assert_eq!(inv.dmi.get("sys_vendor").map(String::as_str), Some("QEMU"));
        // No /sys/firmware/efi: BIOS, and no Secure Boot to speak of.
        let fw = inv.firmware.unwrap();
        assert_eq!((fw.kind, fw.secure_boot), (FirmwareKind::Bios, None));
    }

    #[test]
    fn uefi_and_secure_boot_come_from_sysfs_and_the_zero_page() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("firmware/efi")).unwrap();
        // No zero page exported: UEFI, Secure Boot unknown.
        assert_eq!(firmware(root).secure_boot, Some(SecureBoot::Unknown));
        fs::create_dir_all(root.join("kernel/boot_params")).unwrap();
        for (byte, want) in [
            (3u8, SecureBoot::Enabled),
            (2, SecureBoot::Disabled),
            (1, SecureBoot::Unknown),
            (0, SecureBoot::Unknown),
        ] {
            let mut page = vec![0u8; 4096];
            page[BOOT_PARAMS_SECURE_BOOT] = byte;
            fs::write(root.join("kernel/boot_params/data"), &page).unwrap();
            let fw = firmware(root);
            assert_eq!(fw.kind, FirmwareKind::Uefi);
            assert_eq!(fw.secure_boot, Some(want), "byte {byte}");
        }
        // A short page (not the kernel's): unknown, not a panic.
        fs::write(root.join("kernel/boot_params/data"), [3u8; 16]).unwrap();
        assert_eq!(firmware(root).secure_boot, Some(SecureBoot::Unknown));
    }
}
