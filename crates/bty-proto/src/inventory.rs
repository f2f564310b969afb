//! What the agent reports about the machine it runs on
//! (`POST /pxe/{mac}/inventory`).
//!
//! Every field but a disk's `name` is optional so that a partial inventory
//! (a VM with no DMI, a disk without a serial) is still accepted, and the
//! Python live environment's body (`path`, `size` as text) still parses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`sda`, `nvme0n1`, `vda`), or the device path the Python
    /// agent sends in `path`.
    #[serde(alias = "path")]
    pub name: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Logical sector size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_sector_size: Option<u32>,
    /// Physical sector size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_sector_size: Option<u32>,
    /// Serial number, as matched against a plan's target serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Model string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vendor string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Transport (`nvme`, `sata`, `usb`, `virtio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tran: Option<String>,
    /// Removable media.
    #[serde(default)]
    pub removable: bool,
    /// Spinning disk.
    #[serde(default)]
    pub rotational: bool,
    /// Size as free text, as the Python agent sends it (`"20G"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Kernel name (`eth0`, `enp1s0`).
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Driver name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Link speed in Mbit/s, when up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    /// Whether the link is up.
    #[serde(default)]
    pub link_up: bool,
}

/// `POST /pxe/{mac}/inventory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Block devices.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// DMI identity from `/sys/class/dmi/id` (`sys_vendor`, `product_name`,
    /// `product_serial`, `board_name`, `bios_version`, ...).
    #[serde(default)]
    pub dmi: BTreeMap<String, String>,
    /// How the machine booted the netboot environment, when the agent
    /// could tell (absent from older agents and the Python one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
}

/// The firmware that booted the netboot kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// `uefi` or `bios`.
    pub kind: FirmwareKind,
    /// UEFI Secure Boot as the kernel found it at boot (absent on BIOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBoot>,
}

/// [`Firmware::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    /// UEFI (`/sys/firmware/efi` exists).
    Uefi,
    /// Legacy BIOS (or a UEFI CSM).
    Bios,
    /// A value newer than this build.
    #[serde(other)]
    Other,
}

/// [`Firmware::secure_boot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureBoot {
    /// Enforced: the firmware verified the boot chain, and the kernel is
    /// locked down.
    Enabled,
    /// Off (or in setup mode).
    Disabled,
    /// The kernel could not tell.
    Unknown,
    /// A value newer than this build.
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_body_parses() {
        let inv: Inventory = serde_json::from_str(
            r#"{"disks":[{"path":"/dev/sda","size":"20G","serial":"S1","removable":false,"readonly":false}],"lshw":null}"#,
        )
        .unwrap();
        assert_eq!(inv.disks[0].name, "/dev/sda");
        assert_eq!(inv.disks[0].serial.as_deref(), Some("S1"));
        assert_eq!(inv.firmware, None);
    }

    #[test]
    fn firmware_round_trips_and_tolerates_newer_values() {
        let inv: Inventory =
            serde_json::from_str(r#"{"firmware":{"kind":"uefi","secure_boot":"enabled"}}"#)
                .unwrap();
        let fw = inv.firmware.clone().unwrap();
        assert_eq!(fw.kind, FirmwareKind::Uefi);
        assert_eq!(fw.secure_boot, Some(SecureBoot::Enabled));
        let again: Inventory = serde_json::from_str(&serde_json::to_string(&inv).unwrap()).unwrap();
        assert_eq!(again, inv);
        let newer: Firmware =
            serde_json::from_str(r#"{"kind":"coreboot","secure_boot":"audit"}"#).unwrap();
        assert_eq!(newer.kind, FirmwareKind::Other);
        assert_eq!(newer.secure_boot, Some(SecureBoot::Other));
    }
}
