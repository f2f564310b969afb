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
    }
}
